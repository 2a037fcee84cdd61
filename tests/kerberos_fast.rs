//! FAST (RFC 6113) end to end against MIT's KDC: the realm requires armoring, root registers the
//! host's machine account from a keytab (`credguardctl machine-account`), and a user's AS
//! exchange goes out armored with the machine TGT. A relay between the proxy and the KDC shows
//! what was on the wire: PA-FX-FAST in the AS-REQ (and no PA-ENC-TIMESTAMP), PA-FX-FAST in the
//! AS-REP, whose encrypted part does not open with the user's long-term key (the reply key is
//! strengthened). The TGT then gets a service ticket, as any other.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use support::kdc::TestKdc;
use support::kdc_relay::{KdcRelay, as_req_client, padata_types, tgt_session_key};
use support::{Stack, json, kvm_or_skip};

const PA_ENC_TIMESTAMP: i32 = 2;
const PA_FX_FAST: i32 = 136;

fn logon(stack: &Stack, kdc: &TestKdc, relay: &KdcRelay, user: &str) -> String {
    let (code, out, err) = stack.ctl(
        None,
        &[
            "logon",
            user,
            "--realm",
            kdc.get("REALM"),
            "--kdc",
            &relay.addr.to_string(),
        ],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "logon {user}: {err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

/// The padata types of each AS-REQ for `client` the relay passed on, in order.
fn as_reqs_of(relay: &KdcRelay, client: &str) -> Vec<Vec<i32>> {
    let requests = relay.requests.lock().unwrap();
    requests
        .iter()
        .filter(|r| as_req_client(r).as_deref() == Some(client))
        .map(|r| padata_types(r))
        .collect()
}

#[test]
fn require_armors_the_as_exchange_with_the_machine_tgt_and_refuses_without_one() {
    let test = "kerberos_fast_require";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(kdc) = TestKdc::start(test) else {
        return;
    };
    let relay = KdcRelay::start(kdc.get("KDC"));
    let realm = kdc.get("REALM");
    let config = format!(
        "[kerberos]\ndefault_kdc = \"{relay}\"\n[kerberos.realms.\"{realm}\"]\nkdc = [\"{relay}\"]\nfast = \"require\"\n",
        relay = relay.addr
    );
    let stack = Stack::start("kerberos-fast", &config);
    stack.wait_ready();

    // No machine account yet: "require" refuses, and nothing unarmored went out.
    let id = logon(&stack, &kdc, &relay, "alice");
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_ne!(code, 0);
    assert!(err.contains("no machine account"), "{err}");
    assert!(
        as_reqs_of(&relay, "alice").is_empty(),
        "no AS-REQ for alice without armor"
    );

    // Only root registers one (a copy of the keytab anyone can read, so that the refusal is the
    // proxy's, not the file's).
    use std::os::unix::fs::PermissionsExt;
    let readable = std::env::temp_dir().join(format!("credguard-fast-{}.keytab", std::process::id()));
    std::fs::copy(kdc.get("KEYTAB"), &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let machine = ["machine-account", "--realm", realm, "--principal", kdc.get("SPN")];
    let mut args = machine.to_vec();
    args.extend(["--keytab", readable.to_str().unwrap()]);
    let (code, _, err) = stack.ctl(Some(1000), &args, "");
    assert_ne!(code, 0);
    assert!(err.contains("PermissionDenied"), "{err}");
    std::fs::remove_file(&readable).unwrap();
    // Root, with the host keytab.
    let mut args = machine.to_vec();
    args.extend(["--keytab", kdc.get("KEYTAB")]);
    let (code, out, err) = stack.ctl(None, &args, "");
    assert_eq!(code, 0, "{err}");
    assert!(!json(&out)["session_id"].as_str().unwrap().is_empty());

    // Now alice's AS exchange is armored: the machine account's own AS-REQ first, then hers.
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["client_principal"], format!("alice@{realm}"));
    let host = kdc.get("SPN");
    assert!(
        !as_reqs_of(&relay, host).is_empty(),
        "the machine TGT came from the KDC"
    );
    let alice = as_reqs_of(&relay, "alice");
    assert!(!alice.is_empty());
    for padata in &alice {
        assert_eq!(
            padata,
            &[PA_FX_FAST],
            "every AS-REQ for alice armored, no PA-ENC-TIMESTAMP outside"
        );
        assert!(!padata.contains(&PA_ENC_TIMESTAMP));
    }
    // The KDC answered armored; the reply key was strengthened, so alice's long-term keys (what a
    // password guesser would get at) do not open the AS-REP.
    let alice_keys = kdc.long_term_keys("alice");
    let replies = relay.replies.lock().unwrap().clone();
    let as_reps: Vec<&Vec<u8>> = replies.iter().filter(|r| r.first() == Some(&0x6b)).collect();
    assert!(as_reps.iter().any(|r| padata_types(r).contains(&PA_FX_FAST)));
    let armored: Vec<&&Vec<u8>> = as_reps
        .iter()
        .filter(|r| padata_types(r).contains(&PA_FX_FAST))
        .collect();
    assert!(armored.iter().all(|r| tgt_session_key(r, &alice_keys).is_none()));

    // The armored TGT gets a service ticket (the TGS exchange is not armored).
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, kdc.get("SPN")], "");
    assert_eq!(code, 0, "{err}");
    assert!(!json(&out)["gss_token"].as_str().unwrap().is_empty());
    assert!(relay.service_tgs_reps("alice") >= 1);

    // A second user: the machine TGT is kept, so no second machine AS exchange.
    let machine_reqs = as_reqs_of(&relay, host).len();
    let id2 = logon(&stack, &kdc, &relay, "alice18");
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id2], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(as_reqs_of(&relay, host).len(), machine_reqs);
    assert!(as_reqs_of(&relay, "alice18").iter().all(|p| p == &[PA_FX_FAST]));
}

/// Against a Samba AD DC (4.17, Heimdal's KDC): the DC's own machine account `DC1$`, exported
/// with `samba-tool domain exportkeytab`, armors alice's AS exchange under "require"; a wrong
/// password inside the tunnel is still a wrong password.
#[test]
fn require_against_samba_ad_with_a_machine_account_keytab() {
    let test = "kerberos_fast_samba";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(dc) = support::samba::SambaDc::start(test) else {
        return;
    };
    let relay = KdcRelay::start(dc.get("KDC"));
    let realm = dc.get("REALM");
    let config = format!(
        "[kerberos.realms.\"{realm}\"]\nkdc = [\"{}\"]\nfast = \"require\"\n",
        relay.addr
    );
    let stack = Stack::start("kerberos-fast-samba", &config);
    stack.wait_ready();
    let keytab = dc.dir.join("dc1-machine.keytab");
    let keytab_arg = keytab.display().to_string();
    dc.samba_tool(&["domain", "exportkeytab", &keytab_arg, "--principal=DC1$"]);
    let (code, _, err) = stack.ctl(
        None,
        &[
            "machine-account",
            "--realm",
            realm,
            "--principal",
            "DC1$",
            "--keytab",
            &keytab_arg,
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");

    let relay_addr = relay.addr.to_string();
    let logon = |password: &str| {
        let (code, out, err) = stack.ctl(
            None,
            &["logon", "alice", "--realm", realm, "--kdc", &relay_addr],
            &format!("{password}\n"),
        );
        assert_eq!(code, 0, "logon: {err}");
        json(&out)["session_id"].as_str().unwrap().to_string()
    };
    let id = logon(dc.get("PASSWORD"));
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["client_principal"], format!("alice@{realm}"));
    let alice = as_reqs_of(&relay, "alice");
    assert!(!alice.is_empty());
    assert!(alice.iter().all(|p| p == &[PA_FX_FAST]), "{alice:?}");
    assert!(
        !as_reqs_of(&relay, "DC1$").is_empty(),
        "the machine TGT came from the DC"
    );
    let armored_reps = relay
        .replies
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.first() == Some(&0x6b) && padata_types(r).contains(&PA_FX_FAST))
        .count();
    assert!(armored_reps >= 1, "alice's AS-REP armored");
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, &format!("ldap/{}", dc.get("DC"))], "");
    assert_eq!(code, 0, "{err}");
    assert!(!json(&out)["gss_token"].as_str().unwrap().is_empty());

    // A wrong password, armored: the DC's refusal comes out of the tunnel as such.
    let wrong = logon("Wrong-Passw0rd-1");
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &wrong], "");
    assert_ne!(code, 0);
    assert!(err.contains("Unauthenticated"), "{err}");
}
