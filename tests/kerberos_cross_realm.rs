//! Cross-realm Kerberos end to end: two real MIT KDCs with a trust (scripts/test-kdc-cross.sh),
//! the real enclave under KVM, the VMM and the proxy as processes, `credguardctl` as the client,
//! and MIT's GSS-API (python-gssapi) with realm B's service keytab as the independent acceptor.
//!
//! alice of realm A asks for services of realm B: by host name alone (A's KDC answers with a
//! referral to B, RFC 6806) and with B's realm named (the enclave asks A for `krbtgt/B` first).
//! The referral or cross-realm TGT stays in the enclave; each KDC is reached through a relay that
//! counts and keeps its replies.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::kdc::{CrossRealmKdcs, tools_missing};
use support::kdc_relay::{KdcRelay, service_session_key, tgt_session_key};
use support::{Stack, json, kvm_or_skip};

fn have_python_gssapi() -> bool {
    matches!(
        Command::new("python3").args(["-c", "import gssapi"]).status(),
        Ok(s) if s.success()
    )
}

/// Realm A's and B's KDCs, a relay in front of each, and a stack whose configuration names both
/// realms' KDCs (the relays); `None` (after a loud skip) when something needed is missing.
fn cross_realm_stack(test: &str) -> Option<(CrossRealmKdcs, KdcRelay, KdcRelay, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    if !have_python_gssapi() {
        tools_missing(
            test,
            "python3 gssapi is missing (pip install gssapi; needs libkrb5-dev)",
        );
        return None;
    }
    let kdcs = CrossRealmKdcs::start(test)?;
    let relay_a = KdcRelay::start(kdcs.get("KDC_A"));
    let relay_b = KdcRelay::start(kdcs.get("KDC_B"));
    let config = format!(
        "[kerberos.realms.\"{}\"]\nkdc = [\"{}\"]\n[kerberos.realms.\"{}\"]\nkdc = [\"{}\"]\n",
        kdcs.get("REALM_A"),
        relay_a.addr,
        kdcs.get("REALM_B"),
        relay_b.addr
    );
    let stack = Stack::start(&test.replace('_', "-"), &config);
    stack.wait_ready();
    Some((kdcs, relay_a, relay_b, stack))
}

/// A logon of alice in realm A (its KDC, through the relay); the session id.
fn logon(stack: &Stack, kdcs: &CrossRealmKdcs, relay_a: &KdcRelay) -> String {
    let (code, out, err) = stack.ctl(
        None,
        &[
            "logon",
            "alice",
            "--realm",
            kdcs.get("REALM_A"),
            "--kdc",
            &relay_a.addr.to_string(),
        ],
        &format!("{}\n", kdcs.get("PASSWORD")),
    );
    assert_eq!(code, 0, "logon: {err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

/// `kerberos-ticket` for `spn`; its JSON.
fn ticket(stack: &Stack, id: &str, spn: &str) -> serde_json::Value {
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", id, spn], "");
    assert_eq!(code, 0, "{spn}: {err}");
    json(&out)
}

/// Hands the GSS token to MIT's acceptor with realm B's `keytab`; asserts it takes it as alice of
/// realm A.
fn accepted_by_b(kdcs: &CrossRealmKdcs, keytab: &str, t: &serde_json::Value) {
    use std::io::Write;
    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new("python3")
        .arg(format!("{root}/tests/python/gss_accept.py"))
        .arg(keytab)
        .env("KRB5_CONFIG", kdcs.get("KRB5_CONFIG"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running gss_accept.py");
    let token = t["gss_token"].as_str().unwrap();
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "realm B's service refused the token: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(verdict["initiator"], format!("alice@{}", kdcs.get("REALM_A")));
    assert_eq!(verdict["complete"], true);
}

#[test]
fn referred_and_explicit_realm_service_tickets_are_accepted_in_realm_b_and_the_cross_realm_tgt_is_reused() {
    let Some((kdcs, relay_a, relay_b, stack)) = cross_realm_stack("kerberos_cross_realm") else {
        return;
    };
    let (realm_b, spn, http_spn) = (kdcs.get("REALM_B"), kdcs.get("SPN"), kdcs.get("HTTP_SPN"));

    // (a) The host name alone: A's KDC refers the request to B (MIT 1.20 does, for a
    // canonicalize request of a host-based name its [domain_realm] maps to B).
    let id = logon(&stack, &kdcs, &relay_a);
    let t = ticket(&stack, &id, spn);
    assert_eq!(t["from_cache"], false);
    accepted_by_b(&kdcs, kdcs.get("KEYTAB"), &t);
    assert_eq!(
        (relay_a.service_tgs_reps("alice"), relay_b.service_tgs_reps("alice")),
        (1, 1),
        "a referral from A, the ticket from B"
    );
    let referral = format!("alice@{} for {}", kdcs.get("REALM_A"), kdcs.get("TRUST"));
    assert!(
        kdcs.tgs_log("a")
            .iter()
            .any(|l| l.contains("ISSUE") && l.contains(&referral)),
        "A's KDC issued the referral TGT: {:?}",
        kdcs.tgs_log("a")
    );
    // Again: the kept service ticket, found by the same SPN and by its realm.
    for again in [spn.to_string(), format!("{spn}@{realm_b}")] {
        assert_eq!(ticket(&stack, &id, &again)["from_cache"], true, "{again}");
    }
    assert_eq!(
        (relay_a.service_tgs_reps("alice"), relay_b.service_tgs_reps("alice")),
        (1, 1)
    );

    // (b) B's realm named, in a new session: A's KDC is asked for krbtgt/B, then B's for the service.
    let id = logon(&stack, &kdcs, &relay_a);
    let t = ticket(&stack, &id, &format!("{spn}@{realm_b}"));
    assert_eq!(t["from_cache"], false);
    accepted_by_b(&kdcs, kdcs.get("KEYTAB"), &t);
    assert_eq!(
        (relay_a.service_tgs_reps("alice"), relay_b.service_tgs_reps("alice")),
        (2, 2)
    );

    // (c) Another service of B: the kept cross-realm TGT goes straight to B's KDC, A's is not asked.
    let a_log = kdcs.tgs_log("a").len();
    let t = ticket(&stack, &id, &format!("{http_spn}@{realm_b}"));
    assert_eq!(t["from_cache"], false);
    accepted_by_b(&kdcs, kdcs.get("HTTP_KEYTAB"), &t);
    assert_eq!(
        (relay_a.service_tgs_reps("alice"), relay_b.service_tgs_reps("alice")),
        (2, 3),
        "no request to A's KDC"
    );
    assert_eq!(kdcs.tgs_log("a").len(), a_log, "A's KDC log: no TGS request");
}

#[test]
fn the_proxy_holds_no_cross_realm_tgt_key_and_an_unknown_referred_realm_is_a_clear_error() {
    use support::memory::{assert_no_secrets, assert_scanner_sees};
    let Some((kdcs, relay_a, relay_b, stack)) = cross_realm_stack("kerberos_cross_realm_memory") else {
        return;
    };
    let id = logon(&stack, &kdcs, &relay_a);
    ticket(&stack, &id, kdcs.get("SPN"));
    ticket(
        &stack,
        &id,
        &format!("{}@{}", kdcs.get("HTTP_SPN"), kdcs.get("REALM_B")),
    );

    // A referral to a realm no source knows (A trusts C, C has no KDC anywhere): a clear error,
    // at once.
    let started = std::time::Instant::now();
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &id, "host/svc.c.xrealm.test"], "");
    assert_ne!(code, 0);
    assert!(
        err.contains("referred") && err.contains("C.XREALM.TEST") && err.contains("no KDC"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "no hang");

    // The keys, learnt from the relays' copies of the replies and the keys kadmin exports: the
    // cross-realm TGTs' (their tickets are under the trust's key), the TGT's, the services'.
    let trust = kdcs.long_term_keys("A", kdcs.get("TRUST"));
    let to_c = kdcs.long_term_keys("A", &format!("krbtgt/C.XREALM.TEST@{}", kdcs.get("REALM_A")));
    let alice = kdcs.long_term_keys("A", &format!("alice@{}", kdcs.get("REALM_A")));
    // One service's keys at a time: the keys are picked by enctype.
    let services = [
        kdcs.long_term_keys("B", kdcs.get("SPN")),
        kdcs.long_term_keys("B", kdcs.get("HTTP_SPN")),
    ];
    let from_a = relay_a.replies.lock().unwrap().clone();
    let from_b = relay_b.replies.lock().unwrap().clone();
    let cross: Vec<Vec<u8>> = from_a.iter().filter_map(|r| service_session_key(r, &trust)).collect();
    let referral_c: Vec<Vec<u8>> = from_a.iter().filter_map(|r| service_session_key(r, &to_c)).collect();
    let tgt: Vec<Vec<u8>> = from_a.iter().filter_map(|r| tgt_session_key(r, &alice)).collect();
    let service: Vec<Vec<u8>> = services
        .iter()
        .flat_map(|keys| from_b.iter().filter_map(|r| service_session_key(r, keys)))
        .collect();
    assert_eq!(
        cross.len(),
        1,
        "one cross-realm TGT, reused ({} replies from A)",
        from_a.len()
    );
    assert_eq!((tgt.len(), service.len(), referral_c.len()), (1, 2, 1));
    let mut needles: Vec<(&str, Vec<u8>)> = vec![
        ("cross-realm TGT session key", cross[0].clone()),
        ("referral TGT (to C) session key", referral_c[0].clone()),
        ("TGT session key", tgt[0].clone()),
        ("password", kdcs.get("PASSWORD").as_bytes().to_vec()),
    ];
    needles.extend(service.iter().map(|k| ("service ticket session key", k.clone())));
    assert_scanner_sees(&needles);
    let proxy = stack.proxy_pid().expect("the proxy runs");
    assert_no_secrets("proxy", proxy, &needles, "service ticket session key");
}
