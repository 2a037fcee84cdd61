//! credguard-kcm end to end: MIT's own programs (`kvno`, `klist`, `kdestroy`, `kinit`) with
//! `KRB5CCNAME=KCM:` get service tickets from the enclave through the KCM daemon and the proxy,
//! against the test MIT KDC, while no TGT ever exists outside the enclave.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::json;
use support::kcm::{kcm_stack, logon, mit, text};

#[test]
fn mit_programs_get_service_tickets_through_kcm_and_never_a_tgt() {
    let Some((kdc, stack, conf)) = kcm_stack("kcm_mit_programs") else {
        return;
    };
    let session = logon(&stack, &kdc, None);
    let (code, out, _) = stack.ctl(None, &["default"], "");
    assert_eq!((code, json(&out)["session_id"].as_str()), (0, Some(session.as_str())));
    // `logon --no-default` leaves the default where it is; the spare session is logged off.
    let (code, out, err) = stack.ctl(
        None,
        &["logon", "alice", "--realm", kdc.get("REALM"), "--no-default"],
        &format!("{}\n", kdc.get("PASSWORD")),
    );
    assert_eq!(code, 0, "logon --no-default: {err}");
    let spare = json(&out);
    assert_eq!(spare["default"], false, "{spare}");
    let (_, out, _) = stack.ctl(None, &["default"], "");
    assert_eq!(json(&out)["session_id"].as_str(), Some(session.as_str()));
    let spare = spare["session_id"].as_str().unwrap();
    assert_eq!(stack.ctl(None, &["logoff", spare], "").0, 0);

    // kvno: no TGT anywhere on the host, yet a service ticket, which the enclave fetched.
    let spn = kdc.get("SPN");
    let out = mit(&conf, None, &["kvno", spn], "");
    assert!(out.status.success(), "kvno: {}", text(&out));
    // The README's recipe: a krb5.conf that names no KDC at all works, since MIT never talks to
    // the KDC itself.
    let bare = stack.dir.join("krb5-bare.conf");
    std::fs::write(
        &bare,
        format!(
            "[libdefaults]\n default_realm = {}\n default_ccache_name = KCM:\n kcm_socket = {}\n",
            kdc.get("REALM"),
            stack.dir.join("kcm.sock").display()
        ),
    )
    .unwrap();
    let out = mit(&bare, None, &["kvno", "HTTP/web01.credguard.test"], "");
    assert!(
        out.status.success(),
        "kvno with a krb5.conf naming no KDC: {}",
        text(&out)
    );
    // klist: the principal, a TGT entry with no usable key (MIT wants one listed), the ticket.
    let out = mit(&conf, None, &["klist"], "");
    let listing = text(&out);
    assert!(out.status.success(), "klist: {listing}");
    assert!(listing.contains("Default principal: alice@CREDGUARD.TEST"), "{listing}");
    assert!(listing.contains("krbtgt/CREDGUARD.TEST@CREDGUARD.TEST"), "{listing}");
    assert!(listing.contains("host/svc.credguard.test@CREDGUARD.TEST"), "{listing}");
    // The TGT entry carries no key: MIT cannot use it for a TGS exchange of its own, so a
    // request for a TGT by name finds nothing.
    let out = mit(&conf, None, &["kvno", "krbtgt/CREDGUARD.TEST"], "");
    assert!(!out.status.success(), "kvno krbtgt: {}", text(&out));
    // kinit into KCM: gets a TGT from the KDC, which the daemon refuses to store.
    let out = mit(&conf, None, &["kinit", "alice"], &format!("{}\n", kdc.get("PASSWORD")));
    assert!(!out.status.success(), "kinit must be refused: {}", text(&out));
    let listing = text(&mit(&conf, None, &["klist"], ""));
    assert!(
        listing.matches("krbtgt/").count() == 1,
        "still only the keyless entry: {listing}"
    );
    // kdestroy empties the cache of tickets; the session (and so the principal) stays.
    let out = mit(&conf, None, &["kdestroy"], "");
    assert!(out.status.success(), "kdestroy: {}", text(&out));
    let listing = text(&mit(&conf, None, &["klist"], ""));
    assert!(!listing.contains("host/svc.credguard.test"), "{listing}");
}

#[test]
fn two_uids_never_see_each_others_tickets_and_many_services_come_at_once() {
    let Some((kdc, stack, conf)) = kcm_stack("kcm_two_uids") else {
        return;
    };
    let (alice, bob, nobody) = (4301, 4302, 4303);
    logon(&stack, &kdc, Some(alice));
    logon(&stack, &kdc, Some(bob));

    // 50 programs of one uid, each asking for another service, all at once.
    let children: Vec<_> = (1..=50)
        .map(|i| {
            Command::new("setpriv")
                .args([
                    format!("--reuid={alice}"),
                    format!("--regid={alice}"),
                    "--clear-groups".into(),
                    "kvno".into(),
                    format!("HTTP/web{i:02}.credguard.test"),
                ])
                .env("KRB5_CONFIG", &conf)
                .env("KRB5CCNAME", "KCM:")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kvno web{:02}: {}", i + 1, text(&out));
    }
    let out = mit(&conf, Some(bob), &["kvno", kdc.get("SPN")], "");
    assert!(out.status.success(), "bob's kvno: {}", text(&out));

    let alices = text(&mit(&conf, Some(alice), &["klist"], ""));
    let bobs = text(&mit(&conf, Some(bob), &["klist"], ""));
    assert_eq!(alices.matches("HTTP/web").count(), 50, "{alices}");
    assert!(!alices.contains("host/svc.credguard.test"), "{alices}");
    assert!(
        bobs.contains("host/svc.credguard.test") && !bobs.contains("HTTP/web"),
        "{bobs}"
    );
    // A uid without a session has no principal, and gets no ticket.
    let out = mit(&conf, Some(nobody), &["kvno", kdc.get("SPN")], "");
    assert!(!out.status.success(), "a uid without a session: {}", text(&out));
    // A uid naming another's cache is refused.
    let out = mit(&conf, Some(bob), &["klist", "-c", &format!("KCM:{alice}")], "");
    let listing = text(&out);
    assert!(!out.status.success() && !listing.contains("HTTP/web"), "{listing}");
}
