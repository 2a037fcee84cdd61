//! Mutual authentication, channel bindings and SPNEGO end to end: a throwaway MIT KDC, the real
//! enclave under KVM, the VMM and the proxy, `credguardctl` as the client, and MIT's GSS-API
//! (python-gssapi, tests/python/gss_accept_mutual.py) with the service's keytab as the acceptor.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::kdc::{TestKdc, tools_missing};
use support::pyspnego::hex;
use support::{Stack, json, kvm_or_skip};

/// The TLS channel binding a server and its client would agree on (application data only).
const APP_DATA: &[u8] = b"tls-server-end-point:\x01\x02\x03\x04\x05\x06\x07\x08";

/// gss_channel_bindings_struct with no addresses and `app` as application data.
fn channel_bindings(app: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    v.extend_from_slice(&(app.len() as u32).to_le_bytes());
    v.extend_from_slice(app);
    v
}

/// MIT's acceptor on `token_hex`; (accepted, its JSON).
fn accept(kdc: &TestKdc, token_hex: &str, cb_app: Option<&[u8]>, spnego: bool) -> (bool, serde_json::Value) {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new("python3");
    cmd.arg(format!("{root}/tests/python/gss_accept_mutual.py"))
        .arg(kdc.get("KEYTAB"))
        .env("KRB5_CONFIG", kdc.get("KRB5_CONFIG"));
    if let Some(app) = cb_app {
        cmd.args(["--cb-app-data-hex", &hex::encode(app)]);
    }
    if spnego {
        cmd.arg("--spnego");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gss_accept_mutual.py");
    child.stdin.take().unwrap().write_all(token_hex.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim_start().starts_with('{'),
        "the acceptor failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), json(&stdout))
}

fn ticket(stack: &Stack, id: &str, spn: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["kerberos-ticket", id, spn];
    args.extend_from_slice(extra);
    let (code, out, err) = stack.ctl(None, &args, "");
    assert_eq!(code, 0, "{err}");
    json(&out)
}

fn verify(stack: &Stack, id: &str, context_id: &str, ap_rep_hex: &str) -> (i32, String, String) {
    stack.ctl(
        None,
        &[
            "kerberos-verify-ap-rep",
            id,
            "--context-id-hex",
            context_id,
            "--ap-rep-hex",
            ap_rep_hex,
        ],
        "",
    )
}

fn start(test: &str) -> Option<(TestKdc, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let have_gssapi = matches!(
        Command::new("python3").args(["-c", "import gssapi"]).status(),
        Ok(s) if s.success()
    );
    if !have_gssapi {
        tools_missing(
            test,
            "python3 gssapi is missing (pip install gssapi; needs libkrb5-dev)",
        );
        return None;
    }
    let kdc = TestKdc::start(test)?;
    let config = format!("[kerberos]\ndefault_kdc = \"{}\"\n", kdc.get("KDC"));
    let stack = Stack::start(&test.replace('_', "-"), &config);
    stack.wait_ready();
    Some((kdc, stack))
}

#[test]
fn channel_bindings_mutual_authentication_and_spnego_with_mit() {
    let Some((kdc, stack)) = start("kerberos_mutual") else {
        return;
    };
    let spn = kdc.get("SPN").to_string();
    let realm = kdc.get("REALM").to_string();
    let (code, out, err) = stack.ctl(
        None,
        &["logon", "alice", "--realm", &realm, "--kdc", kdc.get("KDC")],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "logon: {err}");
    let id = json(&out)["session_id"].as_str().unwrap().to_string();
    let cb_hex = hex::encode(channel_bindings(APP_DATA));

    // With the bindings the acceptor has: accepted, and its AP-REP verifies in the enclave.
    let t = ticket(&stack, &id, &spn, &["--mutual", "--channel-bindings-hex", &cb_hex]);
    assert_eq!(
        t["subkey"].as_str().unwrap().len(),
        t["session_key"].as_str().unwrap().len()
    );
    assert_ne!(t["subkey"], t["session_key"]);
    let context_id = t["context_id"].as_str().unwrap().to_string();
    assert_eq!(context_id.len(), 32);
    let (ok, verdict) = accept(&kdc, t["gss_token"].as_str().unwrap(), Some(APP_DATA), false);
    assert!(ok, "the acceptor refused the bindings: {verdict}");
    assert_eq!(verdict["initiator"], format!("alice@{realm}"));
    assert_eq!(verdict["complete"], true);
    let ap_rep = verdict["output_token"].as_str().unwrap().to_string();
    assert!(!ap_rep.is_empty(), "mutual: the acceptor answers with an AP-REP");

    // A tampered AP-REP is refused (and spends the context: the good one is refused after it).
    let mut bad = hex::decode(&ap_rep).unwrap();
    let n = bad.len();
    bad[n - 5] ^= 0x01;
    let (code, _, err) = verify(&stack, &id, &context_id, &hex::encode(&bad));
    assert_eq!(code, 1);
    assert!(err.contains("Unauthenticated"), "{err}");
    let (code, _, err) = verify(&stack, &id, &context_id, &ap_rep);
    assert_eq!(code, 1, "a context is checked once");
    assert!(err.contains("Unauthenticated"), "{err}");

    // A fresh context: MIT's AP-REP verifies, once.
    let t = ticket(&stack, &id, &spn, &["--mutual", "--channel-bindings-hex", &cb_hex]);
    let context_id = t["context_id"].as_str().unwrap().to_string();
    let (ok, verdict) = accept(&kdc, t["gss_token"].as_str().unwrap(), Some(APP_DATA), false);
    assert!(ok, "{verdict}");
    let ap_rep = verdict["output_token"].as_str().unwrap().to_string();
    // Another uid cannot use root's session (nor spend its context).
    let args = [
        "kerberos-verify-ap-rep",
        id.as_str(),
        "--context-id-hex",
        context_id.as_str(),
        "--ap-rep-hex",
        ap_rep.as_str(),
    ];
    let (code, _, err) = stack.ctl(Some(1000), &args, "");
    assert_eq!(code, 1, "another uid verified: {err}");
    let (code, out, err) = verify(&stack, &id, &context_id, &ap_rep);
    assert_eq!(code, 0, "MIT's AP-REP is refused: {err}");
    let v = json(&out);
    assert_eq!(v["verified"], true);
    // MIT asserts an acceptor subkey of the same enctype and its own sequence number.
    assert_eq!(v["acceptor_subkey_enctype"], t["enctype"]);
    assert!(!v["acceptor_subkey"].as_str().unwrap().is_empty());
    assert!(v["seq_number"].is_u64());
    let (code, _, err) = verify(&stack, &id, &context_id, &ap_rep);
    assert_eq!(code, 1, "replayed: {err}");

    // The AP-REP of one context does not verify another.
    let other = ticket(&stack, &id, &spn, &["--mutual"]);
    let (code, _, err) = verify(&stack, &id, other["context_id"].as_str().unwrap(), &ap_rep);
    assert_eq!(code, 1);
    assert!(err.contains("Unauthenticated"), "{err}");

    // Other bindings than the acceptor's: refused by MIT.
    let t = ticket(
        &stack,
        &id,
        &spn,
        &[
            "--channel-bindings-hex",
            &hex::encode(channel_bindings(b"tls-server-end-point:other")),
        ],
    );
    let (ok, verdict) = accept(&kdc, t["gss_token"].as_str().unwrap(), Some(APP_DATA), false);
    assert!(!ok, "other bindings accepted: {verdict}");

    // SPNEGO: MIT's SPNEGO acceptor takes the NegTokenInit, with the bindings too.
    let t = ticket(&stack, &id, &spn, &["--channel-bindings-hex", &cb_hex]);
    let spnego = t["spnego_token"].as_str().unwrap();
    assert!(spnego.starts_with("60"), "{spnego}");
    let (ok, verdict) = accept(&kdc, spnego, Some(APP_DATA), true);
    assert!(ok, "the SPNEGO acceptor refused the token: {verdict}");
    assert_eq!(verdict["initiator"], format!("alice@{realm}"));
    assert_eq!(verdict["complete"], true);

    // SPNEGO with mutual authentication: the acceptor's negTokenResp carries its AP-REP, which
    // verifies as it comes (as an HTTP server's `WWW-Authenticate: Negotiate` would).
    let t = ticket(&stack, &id, &spn, &["--mutual", "--channel-bindings-hex", &cb_hex]);
    let (ok, verdict) = accept(&kdc, t["spnego_token"].as_str().unwrap(), Some(APP_DATA), true);
    assert!(ok, "{verdict}");
    let resp = verdict["output_token"].as_str().unwrap().to_string();
    assert!(resp.starts_with("a1"), "a negTokenResp: {resp}");
    let (code, _, err) = verify(&stack, &id, t["context_id"].as_str().unwrap(), &resp);
    assert_eq!(code, 0, "the SPNEGO-wrapped AP-REP is refused: {err}");

    // Hostile input through the API: garbage AP-REPs and context ids are errors, not crashes.
    for (ctx, rep) in [("00", "00"), ("", "6000"), (context_id.as_str(), "30")] {
        let (code, _, err) = verify(&stack, &id, ctx, rep);
        assert_eq!(code, 1, "{ctx} {rep}");
        assert!(
            err.contains("Unauthenticated") || err.contains("InvalidArgument"),
            "{err}"
        );
    }
    let (code, _, err) = verify(&stack, &id, "zz", "00");
    assert_eq!(code, 2, "not hex: a usage error: {err}");
    let (code, _, _) = stack.ctl(None, &["status"], "");
    assert_eq!(code, 0, "the stack is still up");
}
