//! Finding an Active Directory domain's KDC, end to end: a throwaway Samba AD DC on loopback
//! (scripts/test-samba-dc.sh), the real enclave under KVM, the VMM and the proxy as processes,
//! `credguardctl` as the client.
//!
//! - the KDC found in the DC's DNS (SRV records `_kerberos._udp.corp.test`, the target
//!   dc1.corp.test resolved by the same DNS, which the host's resolver does not know), and the
//!   kpasswd server likewise for a password change;
//! - a realm table whose first KDCs are dead (one refuses, one never answers): they are skipped;
//! - the KDC named by a krb5.conf the configuration points at.
//!
//! One DC serves every test of this file that runs at the same time (a DC takes fixed ports, and
//! provisioning one is the slow part); it stops when the last of them ends.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex, Weak};

use support::samba::SambaDc;
use support::{Stack, json, kvm_or_skip, temp_dir};

/// A uid other than root: it may name only KDCs the configuration (or DNS) gives.
const OTHER_UID: u32 = 1000;

/// The running DC, shared by the tests of this file that run at once.
static DC: Mutex<Weak<SambaDc>> = Mutex::new(Weak::new());

/// The shared DC (started if none runs), or None after a loud skip when Samba is missing.
fn dc(test: &str) -> Option<Arc<SambaDc>> {
    let mut shared = DC.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(dc) = shared.upgrade() {
        return Some(dc);
    }
    let dc = Arc::new(SambaDc::start(test)?);
    // Samba's provisioning registers no address for a DC on 127.0.0.1 (the SRV records name
    // dc1.corp.test, which then has none): give it the one a DC on a real network registers.
    dc.samba_tool(&[
        "dns",
        "add",
        "127.0.0.1",
        "corp.test",
        "dc1",
        "A",
        "127.0.0.1",
        "-U",
        "administrator",
        &format!("--password={}", dc.get("ADMIN_PASSWORD")),
    ]);
    *shared = Arc::downgrade(&dc);
    Some(dc)
}

/// KVM, the DC and a stack with `config`; None after a loud skip.
fn ad_stack(test: &str, config: &str) -> Option<(Arc<SambaDc>, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let dc = dc(test)?;
    let stack = Stack::start(&test.replace('_', "-"), config);
    stack.wait_ready();
    Some((dc, stack))
}

/// Logs `user` on to the realm (password on stdin), naming `kdc` if given; the session id.
fn logon(stack: &Stack, dc: &SambaDc, uid: Option<u32>, user: &str, kdc: Option<&str>) -> String {
    let mut args = vec!["logon", user, "--realm", dc.get("REALM")];
    args.extend(kdc.map(|k| ["--kdc", k]).into_iter().flatten());
    let (code, out, err) = stack.ctl(uid, &args, &format!("{}\n", dc.get("PASSWORD")));
    assert_eq!(code, 0, "logon {user}: {err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

/// The session's TGT, which must come: its client principal.
fn tgt(stack: &Stack, uid: Option<u32>, id: &str) -> String {
    let (code, out, err) = stack.ctl(uid, &["kerberos-tgt", id], "");
    assert_eq!(code, 0, "kerberos-tgt: {err}");
    json(&out)["client_principal"].as_str().unwrap().to_string()
}

#[test]
fn the_kdc_is_found_through_the_dcs_dns() {
    let test = "ad_kdc_by_dns";
    // No KDC anywhere in the configuration, no krb5.conf: only the DC's DNS knows.
    let config = "[kerberos]\ndns_servers = [\"127.0.0.1:53\"]\nkrb5_conf = \"/dev/null\"\n\
                  [kerberos.realms.\"CORP.TEST\"]\n";
    let Some((dc, stack)) = ad_stack(test, config) else {
        return;
    };
    let realm = dc.get("REALM");
    let id = logon(&stack, &dc, None, "alice", None);
    assert_eq!(tgt(&stack, None, &id), format!("alice@{realm}"));
    let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &id, &format!("cifs/{}", dc.get("DC"))], "");
    assert_eq!(code, 0, "a service ticket from the KDC found in DNS: {err}");
    assert!(!json(&out)["ticket"].as_str().unwrap_or_default().is_empty(), "{out}");

    // A KDC found in DNS counts as configured: any caller may name it, by the name the SRV record
    // gives (which only the DC's DNS resolves) or by its address; nothing else.
    let id = logon(&stack, &dc, Some(OTHER_UID), "alice", Some("dc1.corp.test:88"));
    assert_eq!(tgt(&stack, Some(OTHER_UID), &id), format!("alice@{realm}"));
    logon(&stack, &dc, Some(OTHER_UID), "alice", Some(dc.get("KDC")));
    let (code, _, err) = stack.ctl(
        Some(OTHER_UID),
        &["logon", "alice", "--realm", realm, "--kdc", "192.0.2.1:88"],
        &format!("{}\n", dc.get("PASSWORD")),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("PermissionDenied") && err.contains("not a configured KDC"),
        "{err}"
    );
    // A realm the configuration does not name is not looked up in DNS.
    let (code, out, err) = stack.ctl(None, &["logon", "bob", "--realm", "ELSEWHERE.TEST"], "pw\n");
    assert_eq!(code, 0, "{err}");
    let id = json(&out)["session_id"].as_str().unwrap().to_string();
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_ne!(code, 0);
    assert!(err.contains("no KDC for realm"), "{err}");

    // The kpasswd server, likewise from the SRV records (_kpasswd._udp.corp.test): a password
    // the DC says must change is changed, and the session then gets its TGT.
    let id = logon(&stack, &dc, None, "expired", None);
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_ne!(code, 0);
    assert!(err.contains("password expired"), "{err}");
    let (code, out, err) = stack.ctl(None, &["change-password", &id], "Changed-Passw0rd-2026\n");
    assert_eq!(
        code, 0,
        "change-password through the kpasswd server found in DNS: {err}"
    );
    assert_eq!(json(&out)["changed"], true);
    assert_eq!(tgt(&stack, None, &id), format!("expired@{realm}"));
}

#[test]
fn dead_kdcs_first_in_the_list_are_skipped() {
    let test = "ad_kdc_failover";
    // One KDC refuses (nothing listens: ICMP port unreachable, TCP reset); one never answers
    // (the socket is bound and the connection accepted by the kernel, nothing is read).
    let silent_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = silent_udp.local_addr().unwrap();
    let _silent_tcp = std::net::TcpListener::bind(silent).unwrap();
    let config = format!(
        "[kerberos]\nkrb5_conf = \"/dev/null\"\n[kerberos.realms.\"CORP.TEST\"]\n\
         kdc = [\"127.0.0.1:1\", \"{silent}\", \"127.0.0.1:88\"]\n"
    );
    let Some((dc, stack)) = ad_stack(test, &config) else {
        return;
    };
    let id = logon(&stack, &dc, None, "alice", None);
    assert_eq!(tgt(&stack, None, &id), format!("alice@{}", dc.get("REALM")));
    // Only dead ones: UNAVAILABLE, naming one.
    let id = logon(&stack, &dc, None, "alice", Some("127.0.0.1:1"));
    let (code, _, err) = stack.ctl(None, &["kerberos-tgt", &id], "");
    assert_ne!(code, 0);
    assert!(err.contains("Unavailable") && err.contains("127.0.0.1:1"), "{err}");
}

#[test]
fn the_kdc_is_read_from_the_configured_krb5_conf() {
    let test = "ad_kdc_from_krb5_conf";
    let dir = temp_dir(test);
    let krb5_conf = dir.join("krb5.conf");
    // As the DC's own krb5.conf would say it, plus what the proxy must skip.
    std::fs::write(
        &krb5_conf,
        "[libdefaults]\n default_realm = CORP.TEST\n dns_lookup_kdc = false\n[realms]\n CORP.TEST = {\n  \
         kdc = 127.0.0.1:88\n  admin_server = 127.0.0.1\n  kpasswd_server = 127.0.0.1:464\n  auth_to_local = {\n   \
         kdc = 192.0.2.1\n  }\n }\n[domain_realm]\n .corp.test = CORP.TEST\n",
    )
    .unwrap();
    // No realm table, no default KDC, no DNS server that knows the realm.
    let config = format!("[kerberos]\nkrb5_conf = \"{}\"\n", krb5_conf.display());
    let Some((dc, stack)) = ad_stack(test, &config) else {
        return;
    };
    let id = logon(&stack, &dc, None, "alice", None);
    assert_eq!(tgt(&stack, None, &id), format!("alice@{}", dc.get("REALM")));
    // krb5.conf's KDC is a configured one; the relation of a subsection is not.
    let id = logon(&stack, &dc, Some(OTHER_UID), "alice", Some(dc.get("KDC")));
    assert_eq!(tgt(&stack, Some(OTHER_UID), &id), format!("alice@{}", dc.get("REALM")));
    let (code, _, err) = stack.ctl(
        Some(OTHER_UID),
        &["logon", "alice", "--realm", dc.get("REALM"), "--kdc", "192.0.2.1:88"],
        &format!("{}\n", dc.get("PASSWORD")),
    );
    assert_ne!(code, 0);
    assert!(err.contains("PermissionDenied"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
