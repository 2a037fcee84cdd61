//! The user's SID from the PAC: against a real Samba AD DC the session reports the SID the DC
//! has for the user (read by the enclave from a user-to-user ticket to oneself, whose PAC the
//! test also opens itself), once per principal; against MIT's KDC (no SID in its PACs) the TGT
//! still comes, with an empty SID.
#![allow(clippy::unwrap_used)]

mod support;

use support::kdc::TestKdc;
use support::kdc_relay::{KdcRelay, pac_of_ticket_part, tgt_session_key, ticket_part, ticket_sname};
use support::samba::SambaDc;
use support::{Stack, json, kvm_or_skip};

/// `credguardctl logon USER --realm REALM --kdc KDC` with `password`: the session id.
fn logon(stack: &Stack, user: &str, realm: &str, kdc: &str, password: &str) -> String {
    let (code, out, err) = stack.ctl(
        None,
        &["logon", user, "--realm", realm, "--kdc", kdc],
        &format!("{password}\n"),
    );
    assert_eq!(code, 0, "logon {user}: {err}");
    json(&out)["session_id"].as_str().unwrap().to_string()
}

/// `credguardctl kerberos-tgt SESSION`, which must succeed: its JSON.
fn tgt(stack: &Stack, session: &str) -> serde_json::Value {
    let (code, out, err) = stack.ctl(None, &["kerberos-tgt", session], "");
    assert_eq!(code, 0, "kerberos-tgt: {err}");
    json(&out)
}

/// The `user_sid` `credguardctl sessions` lists for `session`.
fn listed_sid(stack: &Stack, session: &str) -> String {
    let (code, out, err) = stack.ctl(None, &["sessions"], "");
    assert_eq!(code, 0, "sessions: {err}");
    let sessions = json(&out);
    let s = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == session)
        .unwrap_or_else(|| panic!("{session} not listed: {out}"));
    s["user_sid"].as_str().unwrap().to_string()
}

/// The user-to-user replies the relay passed on: TGS-REPs whose ticket is for `user` itself.
fn u2u_replies(relay: &KdcRelay, user: &str) -> Vec<Vec<u8>> {
    relay
        .replies
        .lock()
        .unwrap()
        .iter()
        .filter(|r| ticket_sname(r).is_some_and(|s| s == [user]))
        .cloned()
        .collect()
}

/// What the relay passed on, for failure messages: AS-REP, TGS-REP for whom, KRB-ERROR code.
fn seen(relay: &KdcRelay) -> Vec<String> {
    let replies = relay.replies.lock().unwrap().clone();
    replies
        .iter()
        .map(|r| match r.first() {
            Some(0x6b) => "AS-REP".to_string(),
            Some(0x6d) => format!("TGS-REP {:?}", ticket_sname(r)),
            Some(0x7e) => {
                let code = r.windows(5).find(|w| w[..4] == [0xa6, 0x03, 0x02, 0x01]).map(|w| w[4]);
                format!("KRB-ERROR {code:?}")
            }
            _ => "?".to_string(),
        })
        .collect()
}

/// The buffers of a PAC (MS-PAC 2.3: type, size, offset), read here independently of the enclave.
fn pac_buffers(pac: &[u8]) -> Vec<(u32, &[u8])> {
    let u32_at = |at: usize| u32::from_le_bytes(pac[at..at + 4].try_into().unwrap());
    (0..u32_at(0) as usize)
        .map(|i| {
            let at = 8 + 16 * i;
            let offset = u64::from_le_bytes(pac[at + 8..at + 16].try_into().unwrap()) as usize;
            (u32_at(at), &pac[offset..offset + u32_at(at + 4) as usize])
        })
        .collect()
}

/// The objectSid the DC has for `user` (`samba-tool user show`).
fn object_sid(dc: &SambaDc, user: &str) -> String {
    let shown = dc.samba_tool(&["user", "show", user, "--attributes=objectSid"]);
    let sid = shown
        .lines()
        .find_map(|l| l.strip_prefix("objectSid: "))
        .unwrap_or_else(|| panic!("no objectSid in {shown}"))
        .trim()
        .to_string();
    assert!(sid.starts_with("S-1-5-21-"), "{sid}");
    sid
}

/// KRB-ERRORs with `code` the relay passed on.
fn errors(relay: &KdcRelay, code: u8) -> usize {
    let wanted = format!("KRB-ERROR Some({code})");
    seen(relay).iter().filter(|s| **s == wanted).count()
}

#[test]
fn the_session_reports_the_sid_the_dc_has_for_the_user() {
    let test = "ad_pac_sid";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(dc) = SambaDc::start(test) else {
        return;
    };
    // Every exchange goes through a relay, which keeps the replies.
    let relay = KdcRelay::start(dc.get("KDC"));
    let config = format!(
        "[kerberos.realms.\"{}\"]\nkdc = [\"{}\"]\n",
        dc.get("REALM"),
        relay.addr
    );
    let stack = Stack::start("ad-pac-sid", &config);
    stack.wait_ready();
    let (realm, password) = (dc.get("REALM"), dc.get("PASSWORD"));
    let relay_addr = relay.addr.to_string();
    let alice_sid = object_sid(&dc, "alice");

    // Samba 4.17 serves no ticket for a user account without a servicePrincipalName, not even a
    // user-to-user one (KDC_ERR_S_PRINCIPAL_UNKNOWN): the TGT comes all the same, without a SID,
    // and the refusal is remembered for the session's next TGT.
    let session = logon(&stack, "alice", realm, &relay_addr, password);
    assert_eq!(listed_sid(&stack, &session), "", "no SID before a TGT");
    let r = tgt(&stack, &session);
    assert_eq!(r["client_principal"], "alice@CORP.TEST");
    assert_eq!(r["user_sid"], "", "the KDC's replies: {:?}", seen(&relay));
    assert_eq!(
        errors(&relay, 7),
        1,
        "the user-to-user request refused: {:?}",
        seen(&relay)
    );
    assert_eq!(tgt(&stack, &session)["user_sid"], "");
    assert_eq!(errors(&relay, 7), 1, "asked once per session: {:?}", seen(&relay));

    // With an SPN on the account (as on Windows without one), the DC answers.
    dc.samba_tool(&["spn", "add", "HTTP/alice-desktop.corp.test", "alice"]);
    let session = logon(&stack, "alice", realm, &relay_addr, password);
    let r = tgt(&stack, &session);
    assert_eq!(
        r["user_sid"],
        alice_sid.as_str(),
        "the KDC's replies: {:?}",
        seen(&relay)
    );
    assert_eq!(listed_sid(&stack, &session), alice_sid);

    // The DC's user-to-user ticket, opened here with the TGT's session key (learnt from the
    // AS-REP with alice's keys exported from the DC): its PAC is the enclave's source.
    let u2u = u2u_replies(&relay, "alice");
    assert_eq!(u2u.len(), 1, "one user-to-user ticket: {:?}", seen(&relay));
    let alice = dc.long_term_keys("alice");
    let replies = relay.replies.lock().unwrap().clone();
    // One AS-REP per TGT so far: the ticket opens under one of their session keys.
    let part = replies
        .iter()
        .filter_map(|r| tgt_session_key(r, &alice))
        .find_map(|k| ticket_part(&u2u[0], &[17, 18, 19, 20].map(|e| (e, k.clone()))))
        .expect("the ticket opens under the TGT's session key");
    let pac = pac_of_ticket_part(&part).expect("a PAC in AD-IF-RELEVANT");
    let buffers = pac_buffers(&pac);
    let types: Vec<u32> = buffers.iter().map(|(t, _)| *t).collect();
    eprintln!("Samba's PAC buffer types: {types:?}");
    let upn_dns_info = buffers.iter().find(|(t, _)| *t == 12).expect("UPN_DNS_INFO").1;
    let flags = u32::from_le_bytes(upn_dns_info[8..12].try_into().unwrap());
    eprintln!("its UPN_DNS_INFO flags: {flags:#x}");
    assert_ne!(flags & 2, 0, "the S flag: SamName and SID present");
    // The enclave's fallback for PACs without that SID reads the same from Samba's LOGON_INFO.
    let logon_info = buffers.iter().find(|(t, _)| *t == 1).expect("LOGON_INFO").1;
    assert_eq!(
        credguard_enclave::kerberos::pac::logon_info_sid(logon_info),
        Ok(alice_sid.clone())
    );

    // A second TGT for the same principal costs no user-to-user exchange.
    assert_eq!(tgt(&stack, &session)["user_sid"], alice_sid.as_str());
    assert_eq!(u2u_replies(&relay, "alice").len(), 1, "the outcome is remembered");

    // A session's first TGT got on the way to a service ticket (the NoTgt path) learns it too.
    let other = logon(&stack, "alice", realm, &relay_addr, password);
    let spn = format!("cifs/{}", dc.get("DC"));
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &other, &spn], "");
    assert_eq!(code, 0, "kerberos-ticket: {err}");
    assert_eq!(listed_sid(&stack, &other), alice_sid);

    // Another user has another SID.
    dc.samba_tool(&["spn", "add", "HTTP/erin-desktop.corp.test", "erin"]);
    let erin = logon(&stack, "erin", realm, &relay_addr, password);
    let erin_sid = object_sid(&dc, "erin");
    assert_eq!(tgt(&stack, &erin)["user_sid"], erin_sid.as_str());
    assert_ne!(erin_sid, alice_sid);
}

#[test]
fn with_mit_kdc_the_tgt_comes_with_an_empty_sid() {
    let test = "mit_pac_sid";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(kdc) = TestKdc::start(test) else {
        return;
    };
    let relay = KdcRelay::start(kdc.get("KDC"));
    let stack = Stack::start(
        "mit-pac-sid",
        &format!("[kerberos]\ndefault_kdc = \"{}\"\n", relay.addr),
    );
    stack.wait_ready();
    let session = logon(
        &stack,
        "alice",
        kdc.get("REALM"),
        &relay.addr.to_string(),
        kdc.get("PASSWORD"),
    );
    let r = tgt(&stack, &session);
    assert_eq!(r["client_principal"], format!("alice@{}", kdc.get("REALM")));
    assert_eq!(r["user_sid"], "");
    assert_eq!(listed_sid(&stack, &session), "");
    // MIT answers the user-to-user request; its ticket's PAC (MIT 1.20 issues a minimal one)
    // has no SID.
    let u2u = u2u_replies(&relay, "alice");
    assert_eq!(u2u.len(), 1, "{:?}", seen(&relay));
    let alice = kdc.long_term_keys("alice");
    let replies = relay.replies.lock().unwrap().clone();
    let part = replies
        .iter()
        .filter_map(|r| tgt_session_key(r, &alice))
        .find_map(|k| ticket_part(&u2u[0], &[17, 18, 19, 20].map(|e| (e, k.clone()))))
        .expect("the ticket opens under the TGT's session key");
    let pac = pac_of_ticket_part(&part);
    let types: Option<Vec<u32>> = pac.as_deref().map(|p| pac_buffers(p).iter().map(|(t, _)| *t).collect());
    eprintln!("MIT's PAC buffer types: {types:?}");
    assert!(!types.unwrap_or_default().contains(&12), "no UPN_DNS_INFO");
    // A second TGT does not ask again.
    let tried = relay.replies.lock().unwrap().len();
    let again = tgt(&stack, &session);
    assert_eq!(again["user_sid"], "");
    let after = relay.replies.lock().unwrap().len();
    assert!(after > tried, "the second TGT took an AS exchange");
    assert_eq!(u2u_replies(&relay, "alice").len(), 1, "the outcome is remembered");
    // A service ticket still comes.
    let (code, _, err) = stack.ctl(None, &["kerberos-ticket", &session, kdc.get("SPN")], "");
    assert_eq!(code, 0, "kerberos-ticket: {err}");
}
