// Included into `tests::exchanges::ticket_cache_tests` (tests.rs), whose helpers it uses.
use super::*;
use crate::kerberos::kpasswd::tests::{reply, result, serve};
use credguard_proto::enclave::KerberosChangePasswordRequest;
use rasn_kerberos::{ApReq, Authenticator};

const SVC: &str = "HTTP/web.r.test";

/// A whole TGS exchange for `spn` (the KDC's ticket issued at `issued`, lasting 10 hours).
fn exchange(
    creds: &CredentialStore,
    st: &mut KerberosSessions,
    rng: &mut Counter,
    tgt_key: &Key,
    spn: &str,
    issued: i64,
) -> KerberosTgsReply {
    let first = tgs(creds, st, rng, spn, Vec::new()).unwrap();
    let nonce = fake_kdc::parse_request(&first.kdc_request).expect("a TGS-REQ").nonce;
    let (service, host) = spn.split_once('/').unwrap();
    let svc_key = Key::new(18, &[0x99; 32]).unwrap();
    let rep = fake_kdc::tgs_rep(
        &Issue {
            now: issued,
            ..issue(&[service, host], nonce, &svc_key, 200)
        },
        tgt_key,
    );
    let done = tgs(creds, st, rng, spn, rep).unwrap();
    assert!(done.kdc_request.is_empty());
    done
}

/// The authenticator of `ap_req`, opened with the ticket's session key (key usage 11).
fn authenticator(ap_req: &[u8], key: &Key) -> Authenticator {
    let ap: ApReq = rasn::der::decode(ap_req).unwrap();
    let plain = crypto::decrypt(key, 11, &ap.authenticator.cipher).expect("under the ticket's session key");
    rasn::der::decode(&plain).unwrap()
}

/// A new TGT (the session's key preauthenticates at once), for `cname`.
fn new_tgt(creds: &mut CredentialStore, st: &mut KerberosSessions, rng: &mut Counter, cname: &[&str]) {
    let r = step(creds, st, rng, 1_000, Vec::new()).unwrap();
    let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
    let rep = fake_kdc::as_rep(
        &Issue {
            cname,
            ..issue(&["krbtgt", REALM], nonce_of(&r), &tgt_key, 300)
        },
        &user_key(SALT),
    );
    assert!(step(creds, st, rng, 1_000, rep).unwrap().kdc_request.is_empty());
}

fn kept(st: &KerberosSessions) -> usize {
    st.sessions.get(&H).map_or(0, |s| s.tickets.len())
}

#[test]
fn a_second_request_for_a_service_needs_no_kdc_and_gets_a_fresh_authenticator() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    let tgt_only = st.held_by(Owner::uid(1000));
    let first = exchange(&creds, &mut st, &mut rng, &tgt_key, SVC, 1_000);
    assert!(st.held_by(Owner::uid(1000)) > tgt_only, "the kept ticket is charged to its owner");
    // Another spelling of the same service (case, realm suffix), with mutual authentication.
    let mut req = KerberosTgsRequest {
        session_handle: H.to_vec(),
        now_unix: 1_060,
        spn: "http/WEB.r.test@R.TEST".into(),
        mutual: true,
        delegate: false,
        kdc_reply: Vec::new(),
        channel_bindings: Vec::new(),
    };
    let again = tgs_step(&creds, &mut st, &mut rng, req.clone()).unwrap();
    assert!(again.kdc_request.is_empty(), "no KDC exchange");
    assert_eq!(again.ticket, first.ticket);
    assert_eq!(again.session_key, first.session_key);
    assert_eq!((again.end_time, again.enctype), (first.end_time, first.enctype));
    assert_eq!(again.server_principal, first.server_principal);
    assert_ne!(again.ap_req, first.ap_req);
    let key = Key::new(first.enctype, &first.session_key).unwrap();
    let (a, b) = (authenticator(&first.ap_req, &key), authenticator(&again.ap_req, &key));
    assert_ne!(a.ctime, b.ctime, "a new authenticator, at the new time");
    assert_ne!(a.seq_number, b.seq_number);
    // And once more: still from the cache, never a KDC request.
    req.mutual = false;
    assert!(tgs_step(&creds, &mut st, &mut rng, req).unwrap().kdc_request.is_empty());
    assert_eq!(kept(&st), 1);
}

#[test]
fn a_ticket_near_its_end_is_not_served() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    // Issued so that it ends 100 s after now (tickets of the fake KDC last 10 hours).
    exchange(&creds, &mut st, &mut rng, &tgt_key, SVC, 1_100 - 36_000);
    let again = tgs(&creds, &mut st, &mut rng, SVC, Vec::new()).unwrap();
    assert!(!again.kdc_request.is_empty(), "a new TGS exchange");
    // Its reply replaces the old ticket, which is then served.
    let nonce = fake_kdc::parse_request(&again.kdc_request).unwrap().nonce;
    let svc_key = Key::new(18, &[0x98; 32]).unwrap();
    let rep = fake_kdc::tgs_rep(&issue(&["HTTP", "web.r.test"], nonce, &svc_key, 200), &tgt_key);
    tgs(&creds, &mut st, &mut rng, SVC, rep).unwrap();
    assert_eq!(kept(&st), 1);
    let third = tgs(&creds, &mut st, &mut rng, SVC, Vec::new()).unwrap();
    assert!(third.kdc_request.is_empty());
    assert_eq!(third.session_key, alloc::vec![0x98; 32]);
}

#[test]
fn a_session_keeps_a_bounded_number_evicting_the_ticket_ending_first() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    // The first ends an hour before the others.
    exchange(&creds, &mut st, &mut rng, &tgt_key, "HTTP/soon.r.test", 1_000 - 3_600);
    for i in 0..MAX_CACHED_TICKETS {
        exchange(&creds, &mut st, &mut rng, &tgt_key, &alloc::format!("HTTP/h{i}.r.test"), 1_000);
    }
    assert_eq!(kept(&st), MAX_CACHED_TICKETS);
    let e = tgs(&creds, &mut st, &mut rng, "HTTP/soon.r.test", Vec::new()).unwrap();
    assert!(!e.kdc_request.is_empty(), "the one ending first was evicted");
    let h0 = tgs(&creds, &mut st, &mut rng, "HTTP/h0.r.test", Vec::new()).unwrap();
    assert!(h0.kdc_request.is_empty(), "the others stay");
}

#[test]
fn no_krbtgt_is_ever_served_from_the_cache() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    exchange(&creds, &mut st, &mut rng, &tgt_key, SVC, 1_000);
    let e = tgs(&creds, &mut st, &mut rng, "krbtgt/R.TEST", Vec::new()).unwrap_err();
    assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
    assert_eq!(kept(&st), 1);
}

#[test]
fn logoff_drops_the_kept_tickets_and_gives_their_bytes_back() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    exchange(&creds, &mut st, &mut rng, &tgt_key, SVC, 1_000);
    st.forget_session(&H, Owner::uid(1000));
    assert_eq!(st.held_by(Owner::uid(1000)), 0);
    assert_eq!(kept(&st), 0);
    // A new TGT for the same handle: the old ticket is not served.
    new_tgt(&mut creds, &mut st, &mut rng, &["alice"]);
    assert!(!tgs(&creds, &mut st, &mut rng, SVC, Vec::new()).unwrap().kdc_request.is_empty());
}

#[test]
fn a_new_tgt_for_the_same_principal_keeps_them_one_for_another_drops_them() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    exchange(&creds, &mut st, &mut rng, &tgt_key, SVC, 1_000);
    new_tgt(&mut creds, &mut st, &mut rng, &["alice"]);
    assert_eq!(kept(&st), 1, "a renewal keeps them");
    assert!(tgs(&creds, &mut st, &mut rng, SVC, Vec::new()).unwrap().kdc_request.is_empty());
    // The KDC names another client in a new AS-REP.
    new_tgt(&mut creds, &mut st, &mut rng, &["bob"]);
    assert_eq!(kept(&st), 0);
    assert!(!tgs(&creds, &mut st, &mut rng, SVC, Vec::new()).unwrap().kdc_request.is_empty());
}

#[test]
fn a_password_change_drops_them() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    exchange(&creds, &mut st, &mut rng, &tgt_key, SVC, 1_000);
    // A TGT took the session's password; a change needs it (as after a logon for the change).
    creds.get_mut(&H).unwrap().password = Some(zeroize::Zeroizing::new("pw".into()));
    let mut change = |creds: &mut CredentialStore, new: Option<&str>, kdc_reply, kpasswd_reply| {
        let req = KerberosChangePasswordRequest {
            session_handle: H.to_vec(),
            now_unix: 1_000,
            kdc_reply,
            kpasswd_reply,
            sender_address: alloc::vec![127, 0, 0, 1],
            ..Default::default()
        };
        change_step(creds, &mut st, &mut rng, req, new.map(|p| zeroize::Zeroizing::new(p.into()))).unwrap()
    };
    let mut r = change(&mut creds, Some("New-Passw0rd"), Vec::new(), Vec::new());
    let mut sent = fake_kdc::parse_request(&r.kdc_request).unwrap();
    if sent.enc_timestamp_etype.is_none() {
        let preauth = fake_kdc::preauth_required(REALM, 1_000, &[(18, SALT, None)]);
        r = change(&mut creds, None, preauth, Vec::new());
        sent = fake_kdc::parse_request(&r.kdc_request).unwrap();
    }
    let cp_key = Key::new(18, &[0x66; 32]).unwrap();
    let rep = fake_kdc::as_rep(&issue(&["kadmin", "changepw"], sent.nonce, &cp_key, 300), &user_key(SALT));
    let r = change(&mut creds, None, rep, Vec::new());
    let seen = serve(&r.kpasswd_request, &cp_key);
    let ok = reply(&cp_key, &seen.subkey, None, &result(0, "Password changed"), 9);
    assert!(change(&mut creds, None, Vec::new(), ok).changed);
    assert_eq!(kept(&st), 0);
    assert_eq!(st.held_by(Owner::uid(1000)), 0, "neither TGT nor service tickets held");
}
