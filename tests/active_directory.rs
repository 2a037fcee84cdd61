//! Active Directory as it is: the real stack against a real Samba AD domain controller on
//! loopback (scripts/test-samba-dc.sh): the names users type, the DC's service tickets, and the
//! account states AD has (expired, disabled, locked out), each with its own clear error.
#![allow(clippy::unwrap_used)]

mod support;

use support::samba::SambaDc;
use support::{Stack, json, kvm_or_skip};

/// The DC and a stack whose realm table names it.
fn ad_stack(test: &str) -> Option<(SambaDc, Stack)> {
    if !kvm_or_skip(test) {
        return None;
    }
    let dc = SambaDc::start(test)?;
    let config = format!(
        "[kerberos.realms.\"{}\"]\nkdc = [\"{}\"]\nkpasswd = [\"{}\"]\n",
        dc.get("REALM"),
        dc.get("KDC"),
        dc.get("KPASSWD")
    );
    let stack = Stack::start(&test.replace('_', "-"), &config);
    stack.wait_ready();
    Some((dc, stack))
}

/// `credguardctl logon USER [--realm REALM]` with `password`; the session id, or the error.
fn logon(stack: &Stack, user: &str, realm: Option<&str>, password: &str) -> Result<String, String> {
    let mut args = vec!["logon", user];
    if let Some(realm) = realm {
        args.extend(["--realm", realm]);
    }
    let (code, out, err) = stack.ctl(None, &args, &format!("{password}\n"));
    if code != 0 {
        return Err(err);
    }
    Ok(json(&out)["session_id"].as_str().unwrap().to_string())
}

/// The session's TGT: its client principal, or the error.
fn tgt(stack: &Stack, session: &str) -> Result<String, String> {
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", session], "");
    if code != 0 {
        return Err(err);
    }
    Ok(json(&out)["client_principal"].as_str().unwrap().to_string())
}

#[test]
fn the_names_users_type_log_on_and_the_dcs_services_give_tickets() {
    let Some((dc, stack)) = ad_stack("ad_names") else {
        return;
    };
    let realm = dc.get("REALM");
    let password = dc.get("PASSWORD");
    // Every way of typing alice, and erin by her UPN in the forest's other suffix (an enterprise
    // name the DC maps to her account): the KDC's canonical name comes back each time.
    for (user, realm_arg, canonical) in [
        ("alice", Some(realm), "alice@CORP.TEST"),
        ("ALICE", Some(realm), "alice@CORP.TEST"),
        ("alice@corp.test", None, "alice@CORP.TEST"),
        ("CORP\\alice", Some(realm), "alice@CORP.TEST"),
        ("CORP\\alice", None, "alice@CORP.TEST"),
        ("erin@example.org", Some(realm), "erin@CORP.TEST"),
    ] {
        let session = logon(&stack, user, realm_arg, password).unwrap_or_else(|e| panic!("logon {user}: {e}"));
        let principal = tgt(&stack, &session).unwrap_or_else(|e| panic!("TGT of {user}: {e}"));
        assert_eq!(principal, canonical, "{user}");
        // The DC's own services: SMB and LDAP.
        for spn in [format!("cifs/{}", dc.get("DC")), format!("ldap/{}", dc.get("DC"))] {
            let (code, out, err) = stack.ctl(None, &["kerberos-ticket", &session, &spn], "");
            assert_eq!(code, 0, "{user}: ticket for {spn}: {err}");
            assert!(!json(&out)["ap_req"].as_str().unwrap_or_default().is_empty(), "{out}");
        }
    }
}

#[test]
fn each_refused_account_gets_its_own_error_and_an_expired_password_is_changed() {
    let Some((dc, stack)) = ad_stack("ad_accounts") else {
        return;
    };
    let realm = Some(dc.get("REALM"));
    let password = dc.get("PASSWORD");
    // Logon only stores the secret; the KDC judges it at the TGT.
    let refusal = |user: &str, password: &str| {
        let session = logon(&stack, user, realm, password).unwrap();
        tgt(&stack, &session).expect_err(user)
    };
    let wrong = refusal("alice", "Wrong-Passw0rd-9");
    assert!(
        wrong.contains("Unauthenticated") && wrong.contains("wrong password"),
        "{wrong}"
    );
    let disabled = refusal("disabled", password);
    assert!(
        disabled.contains("PermissionDenied") && disabled.contains("disabled"),
        "{disabled}"
    );
    // Samba's KDC gives a locked-out account no NTSTATUS (Windows gives STATUS_ACCOUNT_LOCKED_OUT,
    // which the enclave's unit tests cover): a refusal of the account, not of the password.
    let locked = refusal("locked", password);
    assert!(
        locked.contains("PermissionDenied") && locked.contains("refuses the account, not the password"),
        "{locked}"
    );
    assert!(!locked.contains("disabled"), "{locked}");
    assert!(!wrong.contains(password) && !disabled.contains(password) && !locked.contains(password));

    // pwdLastSet=0: the DC says the password expired; it is changed through the enclave over
    // the DC's kpasswd, after which the new password logs on and the old one does not.
    let session = logon(&stack, "expired", realm, password).unwrap();
    let expired = tgt(&stack, &session).expect_err("an expired password");
    assert!(expired.contains("password expired"), "{expired}");
    let new = "Changed-Passw0rd-2026";
    let (code, _, err) = stack.ctl(None, &["change-password", &session], &format!("{new}\n"));
    assert_eq!(code, 0, "change-password: {err}");
    assert_eq!(tgt(&stack, &session).as_deref(), Ok("expired@CORP.TEST"));
    let fresh = logon(&stack, "expired", realm, new).unwrap();
    assert_eq!(tgt(&stack, &fresh).as_deref(), Ok("expired@CORP.TEST"));
    let stale = logon(&stack, "expired", realm, password).unwrap();
    assert!(tgt(&stack, &stale).unwrap_err().contains("Unauthenticated"));
}

/// Runs `args` as root in a private mount namespace whose /etc/hosts names the DC (the host's
/// resolver does not know corp.test), with MIT's libraries pointed at `conf` and the KCM cache.
fn with_dc_name(dc: &SambaDc, stack: &Stack, conf: &std::path::Path, args: &[&str]) -> std::process::Output {
    with_dc_name_cache(dc, stack, conf, "KCM:", args)
}

/// As [`with_dc_name`], with the credential cache `ccache`.
fn with_dc_name_cache(
    dc: &SambaDc,
    stack: &Stack,
    conf: &std::path::Path,
    ccache: &str,
    args: &[&str],
) -> std::process::Output {
    let hosts = stack.dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {} localhost\n", dc.get("DC"))).unwrap();
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(&hosts)
        .args(args)
        .env("KRB5_CONFIG", conf)
        .env("KRB5CCNAME", ccache)
        .output()
        .unwrap()
}

#[test]
fn smbclient_and_ldapsearch_use_the_enclaves_tickets_through_kcm() {
    let Some((dc, mut stack)) = ad_stack("ad_programs") else {
        return;
    };
    let socket = stack.start_kcm();
    let conf = stack.dir.join("krb5-kcm.conf");
    let base = std::fs::read_to_string(dc.get("KRB5_CONFIG")).unwrap();
    let kcm = format!(
        "[libdefaults]\n kcm_socket = {}\n default_ccache_name = KCM:\n",
        socket.display()
    );
    std::fs::write(&conf, base.replacen("[libdefaults]\n", &kcm, 1)).unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // SMB: the DC's netlogon share, listed with Kerberos only. Debian's smbclient runs Samba's
    // own Heimdal, built without KCM support (it reads `KCM:` as a file name), so it gets the
    // enclave's cifs ticket in a ccache file of its own: the service ticket, never a TGT.
    let session = logon(&stack, "alice", Some(dc.get("REALM")), dc.get("PASSWORD")).unwrap();
    let spn = format!("cifs/{}", dc.get("DC"));
    let ccache = stack.dir.join("cifs.ccache");
    let ccache_arg = ccache.display().to_string();
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &session, &spn, "--ccache", &ccache_arg], "");
    assert_eq!(code, 0, "the cifs ticket into a ccache file: {err}");
    let share = format!("//{}/netlogon", dc.get("DC"));
    let use_ccache = format!("--use-krb5-ccache=FILE:{ccache_arg}");
    let smb = with_dc_name_cache(
        &dc,
        &stack,
        &conf,
        &format!("FILE:{ccache_arg}"),
        &[
            "smbclient",
            &share,
            "--use-kerberos=required",
            &use_ccache,
            "-d",
            "10",
            "-c",
            "ls",
        ],
    );
    assert!(smb.status.success(), "smbclient: {}", text(&smb));
    assert!(text(&smb).contains("blocks available"), "{}", text(&smb));
    // LDAP with SASL GSSAPI: alice's own entry.
    let url = format!("ldap://{}", dc.get("DC"));
    let ldap = with_dc_name(
        &dc,
        &stack,
        &conf,
        &[
            "ldapsearch",
            "-N",
            "-Y",
            "GSSAPI",
            "-H",
            &url,
            "-b",
            "DC=corp,DC=test",
            "(sAMAccountName=alice)",
            "dn",
        ],
    );
    assert!(ldap.status.success(), "ldapsearch: {}", text(&ldap));
    assert!(
        text(&ldap).contains("CN=alice,CN=Users,DC=corp,DC=test"),
        "{}",
        text(&ldap)
    );
    // The ldap ticket came from the enclave through KCM; smbclient's ccache file holds the cifs
    // ticket and no TGT.
    let klist = with_dc_name(&dc, &stack, &conf, &["klist"]);
    let listing = text(&klist);
    assert!(
        listing.contains(&format!("ldap/{}@CORP.TEST", dc.get("DC"))),
        "{listing}"
    );
    let ticket_file = std::fs::read(&ccache).unwrap();
    assert!(
        !ticket_file.windows(6).any(|w| w == b"krbtgt"),
        "a TGT in the cifs ccache file"
    );
}

#[test]
fn after_the_domain_work_the_proxy_and_the_kcm_daemon_hold_no_password_key_or_tgt_key() {
    use support::kdc_relay::{KdcRelay, service_session_key, tgt_session_key};
    use support::memory::{assert_no_secrets, assert_scanner_sees, utf16le};
    let test = "ad_memory";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(dc) = SambaDc::start(test) else {
        return;
    };
    // The enclave reaches the DC through a relay that keeps the replies: with the keys exported
    // from the DC, the test learns the TGT's session key to look for it.
    let relay = KdcRelay::start(dc.get("KDC"));
    let config = format!(
        "[kerberos.realms.\"{}\"]\nkdc = [\"{}\"]\n",
        dc.get("REALM"),
        relay.addr
    );
    let mut stack = Stack::start("ad-memory", &config);
    stack.wait_ready();
    let socket = stack.start_kcm();
    let conf = stack.dir.join("krb5-kcm.conf");
    let base = std::fs::read_to_string(dc.get("KRB5_CONFIG")).unwrap();
    let kcm = format!(
        "[libdefaults]\n kcm_socket = {}\n default_ccache_name = KCM:\n",
        socket.display()
    );
    std::fs::write(&conf, base.replacen("[libdefaults]\n", &kcm, 1)).unwrap();
    let password = dc.get("PASSWORD");
    logon(&stack, "CORP\\alice", None, password).unwrap();
    let kvno = with_dc_name(&dc, &stack, &conf, &["kvno", &format!("ldap/{}", dc.get("DC"))]);
    assert!(kvno.status.success(), "kvno: {}", String::from_utf8_lossy(&kvno.stderr));

    let alice = dc.long_term_keys("alice");
    let machine = dc.long_term_keys("DC1$");
    assert!(!alice.is_empty() && !machine.is_empty(), "keys exported");
    let replies = relay.replies.lock().unwrap().clone();
    let tgt_keys: Vec<Vec<u8>> = replies.iter().filter_map(|r| tgt_session_key(r, &alice)).collect();
    let ticket_keys: Vec<Vec<u8>> = replies
        .iter()
        .filter_map(|r| service_session_key(r, &machine))
        .collect();
    assert_eq!(tgt_keys.len(), 1, "one AS-REP, decrypted ({} replies)", replies.len());
    assert!(
        !ticket_keys.is_empty(),
        "no TGS-REP for ldap/ ({} replies)",
        replies.len()
    );

    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("password (UTF-8)".into(), password.as_bytes().to_vec()),
        ("password (UTF-16LE)".into(), utf16le(password)),
        ("TGT session key".into(), tgt_keys[0].clone()),
    ];
    for (enctype, key) in &alice {
        needles.push((format!("long-term key (enctype {enctype})"), key.clone()));
    }
    for key in &ticket_keys {
        needles.push(("service ticket session key".into(), key.clone()));
    }
    let needles: Vec<(&str, Vec<u8>)> = needles.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    assert_scanner_sees(&needles);
    let proxy = stack.proxy_pid().expect("the proxy runs");
    let kcm = stack.kcm_pid().expect("the KCM daemon runs");
    assert_no_secrets("proxy", proxy, &needles, "service ticket session key");
    let hits = assert_no_secrets("KCM daemon", kcm, &needles, "service ticket session key");
    // It hands out the service ticket, so its key is there: the scan finds keys.
    assert!(
        hits.iter().any(|h| h.starts_with("service ticket session key at ")),
        "the scanner finds no service ticket session key in the KCM daemon: it proves nothing"
    );
}
