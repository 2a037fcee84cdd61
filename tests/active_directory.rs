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
