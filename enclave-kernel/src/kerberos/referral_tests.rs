// Included into `tests::exchanges::referral_tests` (tests.rs), whose helpers it uses.
use super::*;
use super::super::fake_kdc::RequestView;

/// The service's session key; the cross-realm TGTs' keys are `0xc0 + n`.
const SVC_KEY: [u8; 32] = [0x99; 32];

fn k(byte: u8) -> Key {
    Key::new(18, &[byte; 32]).unwrap()
}

fn ask_at(
    creds: &CredentialStore,
    st: &mut KerberosSessions,
    rng: &mut Counter,
    spn: &str,
    reply: Vec<u8>,
    now: i64,
) -> Result<KerberosTgsReply, KerberosError> {
    let req = KerberosTgsRequest {
        session_handle: H.to_vec(),
        now_unix: now,
        spn: spn.into(),
        kdc_reply: reply,
        ..Default::default()
    };
    tgs_step(creds, st, rng, req)
}

fn view(r: &KerberosTgsReply) -> RequestView {
    fake_kdc::parse_request(&r.kdc_request).expect("a TGS-REQ")
}

/// A TGS-REP from the KDC of `realm` (for the client of R.TEST), issued at `issued`, the
/// ticket's opaque part `len` bytes, under `under`.
fn answer(realm: &str, sname: &[&str], nonce: u32, session: &Key, under: &Key, issued: i64, len: usize) -> Vec<u8> {
    let issue = Issue {
        realm,
        now: issued,
        ..issue(sname, nonce, session, len)
    };
    fake_kdc::cross_tgs_rep(&issue, REALM, under)
}

/// Whether `secret` appears anywhere in `r` (every field, as the proxy would get it).
fn shows(r: &KerberosTgsReply, secret: &[u8]) -> bool {
    prost::Message::encode_to_vec(r).windows(secret.len()).any(|w| w == secret)
}

/// Runs `spn` through the referrals `hops` (each: the realm the KDC refers to), answering each
/// request as the KDC it went to; the last realm's KDC issues the service ticket. Returns every
/// reply the enclave gave.
fn through(
    creds: &CredentialStore,
    st: &mut KerberosSessions,
    rng: &mut Counter,
    tgt_key: &Key,
    spn: &str,
    hops: &[&str],
) -> Vec<KerberosTgsReply> {
    let mut out = alloc::vec![ask_at(creds, st, rng, spn, Vec::new(), 1_000).unwrap()];
    let (service, host) = spn.split_once('/').unwrap();
    let host = host.split_once('@').map_or(host, |(h, _)| h);
    let (mut at, mut under) = (String::from(REALM), Key::new(18, &tgt_key.value).unwrap());
    for (n, to) in hops.iter().enumerate() {
        let last = out.last().unwrap();
        assert_eq!(last.kdc_realm, if at == REALM { "" } else { at.as_str() });
        let cross = k(0xc0 + n as u8);
        let rep = answer(&at, &["krbtgt", to], view(last).nonce, &cross, &under, 1_000, 300 + n);
        out.push(ask_at(creds, st, rng, spn, rep, 1_000).unwrap());
        (at, under) = (String::from(*to), cross);
    }
    let last = out.last().unwrap();
    assert_eq!(last.kdc_realm, at);
    let rep = answer(&at, &[service, host], view(last).nonce, &k(0x99), &under, 1_000, 200);
    out.push(ask_at(creds, st, rng, spn, rep, 1_000).unwrap());
    out
}

#[test]
fn tgs_requests_ask_to_canonicalize_and_go_to_the_session_realm() {
    let (mut creds, mut st, mut rng) = setup();
    get_tgt(&mut creds, &mut st, &mut rng);
    let r = ask_at(&creds, &mut st, &mut rng, "HTTP/web.r.test", Vec::new(), 1_000).unwrap();
    let v = view(&r);
    assert!(v.canonicalize, "bit 15 set: the KDC may refer");
    assert_eq!((v.realm.as_str(), r.kdc_realm.as_str()), (REALM, ""));
    assert_eq!(v.sname, ["HTTP", "web.r.test"]);
}

#[test]
fn a_referral_is_followed_in_the_enclave_and_no_tgt_or_its_key_leaves() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    let before = st.held_by(Owner::uid(1000));
    let replies = through(&creds, &mut st, &mut rng, &tgt_key, "HTTP/web.other.test", &["OTHER.TEST"]);
    // The second request: to OTHER.TEST's KDC, for the same service, with the referral TGT.
    let second = view(&replies[1]);
    assert_eq!(replies[1].kdc_realm, "OTHER.TEST");
    assert_eq!(second.realm, "OTHER.TEST");
    assert_eq!(second.sname, ["HTTP", "web.other.test"]);
    assert_eq!(second.tgt_sname, ["krbtgt", "OTHER.TEST", REALM]);
    assert!(replies[1].ticket.is_empty() && replies[1].session_key.is_empty());
    // The end: the service's ticket and key, from OTHER.TEST.
    let done = replies.last().unwrap();
    assert!(done.kdc_request.is_empty() && !done.ap_req.is_empty());
    assert_eq!(done.session_key, SVC_KEY);
    assert_eq!(done.server_principal, "HTTP/web.other.test@OTHER.TEST");
    assert_eq!(done.client_principal, "alice@R.TEST");
    for r in &replies {
        assert!(!shows(r, &[0xc0; 32]), "the referral TGT's key never leaves");
        assert!(!shows(r, &tgt_key.value), "nor the session TGT's");
    }
    // The referral TGT is kept and charged to its owner, with the service ticket.
    let s = st.sessions.get(&H).unwrap();
    assert_eq!(s.cross.len(), 1);
    assert_eq!(st.held_by(Owner::uid(1000)), before + s.cross.bytes() + s.tickets.bytes());
}

#[test]
fn an_explicit_realm_asks_for_its_tgs_first_and_follows_referrals_toward_it() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    let spn = "host/svc.b.test@B.TEST";
    let replies = through(&creds, &mut st, &mut rng, &tgt_key, spn, &["MID.TEST", "B.TEST"]);
    let asked: Vec<_> = replies[..3].iter().map(|r| (view(r).sname, r.kdc_realm.clone())).collect();
    assert_eq!(asked[0], (alloc::vec!["krbtgt".into(), "B.TEST".into()], String::new()));
    assert_eq!(asked[1], (alloc::vec!["krbtgt".into(), "B.TEST".into()], "MID.TEST".into()));
    assert_eq!(asked[2], (alloc::vec!["host".into(), "svc.b.test".into()], "B.TEST".into()));
    // At B, the TGT MID issued; the authenticator names the client's own realm.
    assert_eq!(view(&replies[2]).tgt_sname, ["krbtgt", "B.TEST", "MID.TEST"]);
    let done = replies.last().unwrap();
    assert_eq!(done.session_key, SVC_KEY);
    assert_eq!(done.server_principal, "host/svc.b.test@B.TEST");
    for r in &replies {
        assert!(!shows(r, &[0xc0; 32]) && !shows(r, &[0xc1; 32]));
    }
}

#[test]
fn referral_loops_and_long_chains_end_with_failed_precondition() {
    for (hops, says) in [
        (&["OTHER.TEST", "R.TEST"][..], "loop"),
        (&["OTHER.TEST", "other.test"][..], "loop"),
        (&["A1.TEST", "A2.TEST", "A3.TEST", "A4.TEST", "A5.TEST", "A6.TEST"][..], "too many"),
    ] {
        let (mut creds, mut st, mut rng) = setup();
        let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
        let spn = "HTTP/web.far.test";
        let mut last = ask_at(&creds, &mut st, &mut rng, spn, Vec::new(), 1_000).unwrap();
        let (mut at, mut under) = (String::from(REALM), Key::new(18, &tgt_key.value).unwrap());
        let mut end = None;
        for (n, to) in hops.iter().enumerate() {
            let cross = k(0xc0 + n as u8);
            let rep = answer(&at, &["krbtgt", to], view(&last).nonce, &cross, &under, 1_000, 300);
            match ask_at(&creds, &mut st, &mut rng, spn, rep, 1_000) {
                Ok(r) => last = r,
                Err(e) => {
                    end = Some((n, e));
                    break;
                }
            }
            (at, under) = (String::from(*to), cross);
        }
        let (n, e) = end.unwrap_or_else(|| panic!("{hops:?} was followed to the end"));
        assert_eq!(n, hops.len() - 1, "{hops:?}: only the last referral is refused");
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION, "{hops:?}");
        assert!(e.clone().message().contains(says), "{hops:?}: {e:?}");
        // The exchange is over.
        assert!(st.sessions.get(&H).unwrap().pending_tgs.is_empty());
        if says == "too many" {
            assert_eq!(hops.len(), MAX_REFERRAL_HOPS + 1);
        }
    }
}

#[test]
fn a_reply_must_come_from_the_realm_and_exchange_the_request_went_to() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    let spn = "HTTP/web.other.test";
    let start = |st: &mut KerberosSessions, rng: &mut Counter| {
        let first = ask_at(&creds, st, rng, spn, Vec::new(), 1_000).unwrap();
        let rep = answer(REALM, &["krbtgt", "OTHER.TEST"], view(&first).nonce, &k(0xc0), &tgt_key, 1_000, 300);
        ask_at(&creds, st, rng, spn, rep, 1_000).unwrap()
    };
    let svc = ["HTTP", "web.other.test"];
    let cases: [(&str, u32, &Key); 3] = [
        // Under the referral TGT's key, but a ticket of the home realm: not from OTHER.TEST.
        (REALM, 0, &k(0xc0)),
        // From OTHER.TEST, but for another request (nonce).
        ("OTHER.TEST", 1, &k(0xc0)),
        // From OTHER.TEST, under the session TGT's key instead of the referral TGT's.
        ("OTHER.TEST", 0, &tgt_key),
    ];
    for (realm, nonce_off, under) in cases {
        let second = start(&mut st, &mut rng);
        let nonce = view(&second).nonce.wrapping_add(nonce_off);
        let rep = answer(realm, &svc, nonce, &k(0x99), under, 1_000, 200);
        let e = ask_at(&creds, &mut st, &mut rng, spn, rep, 1_000).unwrap_err();
        assert!(
            matches!(e.code(), CODE_INVALID_ARGUMENT | CODE_UNAUTHENTICATED),
            "{realm} {nonce_off}: {e:?}"
        );
    }
    // A TGT in the ticket, a service in the encrypted part (and the reverse): refused.
    let first = ask_at(&creds, &mut st, &mut rng, spn, Vec::new(), 1_000).unwrap();
    let mut rep = answer(REALM, &svc, view(&first).nonce, &k(0xc0), &tgt_key, 1_000, 300);
    let from = b"\x1b\x04HTTP\x1b\x0eweb.other.test";
    let to = b"\x1b\x06krbtgt\x1b\x0aOTHER.TEST";
    let at = rep.windows(from.len()).position(|w| w == from).expect("the ticket's clear-text sname");
    rep.splice(at..at + from.len(), to.iter().copied());
    let e = ask_at(&creds, &mut st, &mut rng, spn, rep, 1_000).unwrap_err();
    assert_eq!(e.code(), CODE_INVALID_ARGUMENT, "{e:?}");
    // A referral to a realm name that could confuse the proxy: refused.
    let first = ask_at(&creds, &mut st, &mut rng, spn, Vec::new(), 1_000).unwrap();
    let rep = answer(REALM, &["krbtgt", "EVIL REALM"], view(&first).nonce, &k(0xc0), &tgt_key, 1_000, 300);
    let e = ask_at(&creds, &mut st, &mut rng, spn, rep, 1_000).unwrap_err();
    assert_eq!(e.code(), CODE_INVALID_ARGUMENT, "{e:?}");
    // Asking for krbtgt directly stays refused, with another realm too.
    for bad in ["krbtgt/OTHER.TEST@R.TEST", "krbtgt/OTHER.TEST@OTHER.TEST"] {
        let e = ask_at(&creds, &mut st, &mut rng, bad, Vec::new(), 1_000).unwrap_err();
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION, "{bad}");
    }
}

#[test]
fn a_kept_cross_realm_tgt_serves_another_service_of_its_realm_while_fresh() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    // B's TGT, issued long ago: it ends at 1_000 + 10 h - 8 h, before the session's TGT.
    let first = ask_at(&creds, &mut st, &mut rng, "host/a.b.test@B.TEST", Vec::new(), 1_000).unwrap();
    let old = 1_000 - 8 * 3600;
    let rep = answer(REALM, &["krbtgt", "B.TEST"], view(&first).nonce, &k(0xc0), &tgt_key, old, 300);
    let second = ask_at(&creds, &mut st, &mut rng, "host/a.b.test@B.TEST", rep, 1_000).unwrap();
    let rep = answer("B.TEST", &["host", "a.b.test"], view(&second).nonce, &k(0x99), &k(0xc0), 1_000, 200);
    ask_at(&creds, &mut st, &mut rng, "host/a.b.test@B.TEST", rep, 1_000).unwrap();
    // Another service of B.TEST: straight to B's KDC, with the kept TGT (one exchange fewer).
    let spn = "HTTP/c.b.test@B.TEST";
    let direct = ask_at(&creds, &mut st, &mut rng, spn, Vec::new(), 1_060).unwrap();
    assert_eq!(direct.kdc_realm, "B.TEST");
    assert_eq!(view(&direct).tgt_sname, ["krbtgt", "B.TEST", REALM]);
    assert_eq!(view(&direct).sname, ["HTTP", "c.b.test"]);
    let rep = answer("B.TEST", &["HTTP", "c.b.test"], view(&direct).nonce, &k(0x99), &k(0xc0), 1_000, 200);
    let done = ask_at(&creds, &mut st, &mut rng, spn, rep, 1_060).unwrap();
    assert_eq!(done.session_key, SVC_KEY);
    // Once B's TGT nears its end it is dropped, its bytes given back, and the home KDC asked.
    let later = 1_000 + 2 * 3600;
    let held = st.held_by(Owner::uid(1000));
    let cross_bytes = st.sessions.get(&H).unwrap().cross.bytes();
    assert!(cross_bytes > 300);
    let r = ask_at(&creds, &mut st, &mut rng, "HTTP/d.b.test@B.TEST", Vec::new(), later).unwrap();
    assert_eq!(r.kdc_realm, "");
    assert_eq!(view(&r).sname, ["krbtgt", "B.TEST"]);
    assert_eq!(st.sessions.get(&H).unwrap().cross.len(), 0);
    assert_eq!(st.held_by(Owner::uid(1000)), held - cross_bytes);
}

#[test]
fn the_service_ticket_of_a_referral_is_kept_for_its_spn() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    let spn = "HTTP/web.other.test";
    let replies = through(&creds, &mut st, &mut rng, &tgt_key, spn, &["OTHER.TEST"]);
    let first = replies.last().unwrap();
    // The same SPN, and the same with the realm the referral led to: no KDC exchange.
    for again in [spn, "HTTP/web.other.test@OTHER.TEST"] {
        let r = ask_at(&creds, &mut st, &mut rng, again, Vec::new(), 1_060).unwrap();
        assert!(r.kdc_request.is_empty(), "{again}");
        assert_eq!((&r.ticket, &r.session_key), (&first.ticket, &first.session_key));
    }
    // The home realm's service of that name is another one.
    let r = ask_at(&creds, &mut st, &mut rng, "HTTP/web.other.test@R.TEST", Vec::new(), 1_060).unwrap();
    assert!(!r.kdc_request.is_empty());
}

#[test]
fn cross_realm_tgts_go_with_the_session_and_its_tickets() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    through(&creds, &mut st, &mut rng, &tgt_key, "HTTP/web.other.test", &["OTHER.TEST"]);
    assert_eq!(st.sessions.get(&H).unwrap().cross.len(), 1);
    // A new TGT for another principal: the old one's cross-realm TGTs go too.
    let r = step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
    let rep = fake_kdc::as_rep(
        &Issue {
            cname: &["bob"],
            ..issue(&["krbtgt", REALM], nonce_of(&r), &k(0x78), 300)
        },
        &user_key(SALT),
    );
    step(&mut creds, &mut st, &mut rng, 1_000, rep).unwrap();
    assert_eq!(st.sessions.get(&H).unwrap().cross.len(), 0);
    let tgt_bytes = st.sessions.get(&H).unwrap().tgt_bytes();
    assert_eq!(st.held_by(Owner::uid(1000)), tgt_bytes, "only the new TGT is charged");
    // Logging off frees everything.
    let tgt_key = k(0x78);
    let first = ask_at(&creds, &mut st, &mut rng, "h/x.o.test@O.TEST", Vec::new(), 1_000).unwrap();
    // A referral TGT for another client than the session's: refused.
    let cross_key = k(0xc0);
    let rep = fake_kdc::cross_tgs_rep(
        &issue(&["krbtgt", "O.TEST"], view(&first).nonce, &cross_key, 300),
        REALM,
        &tgt_key,
    );
    let e = ask_at(&creds, &mut st, &mut rng, "h/x.o.test@O.TEST", rep, 1_000).unwrap_err();
    assert_eq!(e.code(), CODE_INVALID_ARGUMENT, "{e:?}");
    let first = ask_at(&creds, &mut st, &mut rng, "h/x.o.test@O.TEST", Vec::new(), 1_000).unwrap();
    let rep = fake_kdc::cross_tgs_rep(
        &Issue {
            cname: &["bob"],
            ..issue(&["krbtgt", "O.TEST"], view(&first).nonce, &k(0xc0), 300)
        },
        REALM,
        &tgt_key,
    );
    ask_at(&creds, &mut st, &mut rng, "h/x.o.test@O.TEST", rep, 1_000).unwrap();
    assert_eq!(st.sessions.get(&H).unwrap().cross.len(), 1);
    st.forget_session(&H, Owner::uid(1000));
    assert_eq!(st.held_by(Owner::uid(1000)), 0);
}

#[test]
fn an_error_from_a_referred_realm_names_that_realm() {
    let (mut creds, mut st, mut rng) = setup();
    let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
    let spn = "HTTP/web.other.test";
    let first = ask_at(&creds, &mut st, &mut rng, spn, Vec::new(), 1_000).unwrap();
    let rep = answer(REALM, &["krbtgt", "OTHER.TEST"], view(&first).nonce, &k(0xc0), &tgt_key, 1_000, 300);
    ask_at(&creds, &mut st, &mut rng, spn, rep, 1_000).unwrap();
    let e = ask_at(&creds, &mut st, &mut rng, spn, fake_kdc::krb_error("OTHER.TEST", 7, 1_000, None), 1_000)
        .unwrap_err();
    assert_eq!(e.code(), CODE_NOT_FOUND);
    assert!(e.message().contains("cross-realm TGS (OTHER.TEST)"));
    assert!(st.sessions.get(&H).unwrap().pending_tgs.is_empty());
}
