//! Unit tests of the enclave's Kerberos negotiation that need no KDC.

use super::*;
use messages::EtypeInfo;

fn info(etype: i32) -> EtypeInfo {
    EtypeInfo {
        etype,
        salt: None,
        s2kparams: None,
    }
}

#[test]
fn des_only_etype_info2_is_refused_with_a_clear_error() {
    let e = choose_etype(&[info(3), info(1), info(2)], true).unwrap_err();
    assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
    assert!(e.message().contains("only DES"));
}

#[test]
fn etype_choice_skips_des_and_rc4_unless_allowed() {
    assert_eq!(choose_etype(&[info(3), info(18)], false).unwrap().etype, 18);
    assert_eq!(choose_etype(&[info(23), info(17)], false).unwrap().etype, 17);
    assert_eq!(choose_etype(&[info(23), info(17)], true).unwrap().etype, 23);
    let e = choose_etype(&[info(23)], false).unwrap_err();
    assert!(e.clone().message().contains("allow_rc4"), "{e:?}");
}

#[test]
fn spns_parse() {
    let (p, realm) = messages::parse_spn_realm("host/svc.test").unwrap();
    assert_eq!(p.string.len(), 2);
    // Host-based without a realm (a KDC may refer it), a plain instance with one.
    assert_eq!((p.r#type, realm), (3, None));
    assert_eq!(messages::parse_spn_realm("HTTP@web.test").unwrap().0.r#type, 3);
    let (p, realm) = messages::parse_spn_realm("host/svc.test@REALM").unwrap();
    assert_eq!((p.r#type, realm.as_deref()), (2, Some("REALM")));
    for bad in ["", "nohost", "/h", "s/", "a\nb/c", "s/h@", "s/h@A B", "s/h@A/B"] {
        assert!(messages::parse_spn_realm(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn gss_token_framing() {
    let t = messages::gss_initial_token(&[0xaa; 200]);
    assert_eq!(&t[..3], &[0x60, 0x81, 213]);
    assert_eq!(
        &t[3..14],
        &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02]
    );
    assert_eq!(&t[14..16], &[1, 0]);
}

#[test]
fn malformed_kdc_replies_are_errors_not_panics() {
    for bytes in [&[][..], &[0x7e, 0x03, 0x01][..], &[0x6b, 0xff][..], &[0x30, 0x00][..]] {
        assert!(messages::parse_kdc_reply(bytes).is_err());
    }
}

mod exchanges {
    //! AS steps against KDC replies built here: clock skew, DES-only offers, garbage.
    use super::super::*;
    use crate::credentials::SESSION_HANDLE_LEN;
    use rasn::types::{GeneralString, Integer, OctetString};
    use rasn_kerberos::{EtypeInfo2Entry, KerberosTime, KrbError, PaData, PrincipalName};

    use super::super::counter_rng::Counter;

    const H: [u8; SESSION_HANDLE_LEN] = [7; SESSION_HANDLE_LEN];

    fn setup() -> (CredentialStore, KerberosSessions, Counter) {
        let mut creds = CredentialStore::new();
        let cred = LogonCredential {
            enterprise: false,
            owner: credguard_proto::attest::Owner::uid(1000),
            allow_rc4: false,
            id: [0; 16],
            user: "alice".into(),
            domain: String::new(),
            realm: "R.TEST".into(),
            kind: "password",
            nt_hash: None,
            password: Some(zeroize::Zeroizing::new("pw".into())),
            keys: Vec::new(),
        };
        creds.insert(H, cred).unwrap();
        (creds, KerberosSessions::new(), Counter::new(1))
    }

    fn gs(s: &str) -> GeneralString {
        GeneralString::from_bytes(s.as_bytes()).unwrap()
    }

    fn krb_error(code: i32, stime: i64, e_data: Option<Vec<u8>>) -> Vec<u8> {
        let t = KerberosTime(chrono::DateTime::from_timestamp(stime, 0).unwrap().fixed_offset());
        let e = KrbError {
            pvno: Integer::from(5),
            msg_type: Integer::from(30),
            ctime: None,
            cusec: None,
            stime: t,
            susec: Integer::from(0),
            error_code: code,
            crealm: None,
            cname: None,
            realm: gs("R.TEST"),
            sname: PrincipalName {
                r#type: 2,
                string: alloc::vec![gs("krbtgt"), gs("R.TEST")],
            },
            e_text: None,
            e_data: e_data.map(OctetString::from),
        };
        rasn::der::encode(&e).unwrap()
    }

    fn preauth_required(etypes: &[i32]) -> Vec<u8> {
        let info: Vec<EtypeInfo2Entry> = etypes
            .iter()
            .map(|&etype| EtypeInfo2Entry {
                etype,
                salt: Some(gs("R.TESTalice")),
                s2kparams: None,
            })
            .collect();
        let pa = alloc::vec![PaData {
            r#type: 19,
            value: OctetString::from(rasn::der::encode(&info).unwrap()),
        }];
        krb_error(25, 1_000, Some(rasn::der::encode(&pa).unwrap()))
    }

    fn step(
        creds: &mut CredentialStore,
        st: &mut KerberosSessions,
        rng: &mut Counter,
        now: i64,
        reply: Vec<u8>,
    ) -> Result<KerberosAsReply, KerberosError> {
        let req = KerberosAsRequest {
            session_handle: H.to_vec(),
            now_unix: now,
            kdc_reply: reply,
            fast: 0,
        };
        as_step(creds, st, rng, req)
    }

    #[test]
    fn clock_skew_is_retried_once_at_the_kdc_time() {
        let (mut creds, mut st, mut rng) = setup();
        let first = step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        assert!(!first.kdc_request.is_empty());
        // The KDC is an hour ahead: one retry, with the offset learnt.
        let retry = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(37, 4_600, None)).unwrap();
        assert!(!retry.kdc_request.is_empty());
        assert_eq!(st.sessions.get(&H).unwrap().clock_offset, 3_600);
        // A second skew in the same exchange is an error, not a loop.
        let e = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(37, 9_000, None)).unwrap_err();
        assert_eq!(e.code(), CODE_UNAVAILABLE);
    }

    #[test]
    fn a_kdc_offering_only_des_is_refused_and_the_password_stays_unused() {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let e = step(&mut creds, &mut st, &mut rng, 1_000, preauth_required(&[3, 1])).unwrap_err();
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
        assert!(e.message().contains("only DES"));
        assert!(creds.get(&H).unwrap().keys.is_empty(), "no key derived for DES");
    }

    #[test]
    fn an_expired_password_is_its_own_error_and_the_password_stays() {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        // MIT checks the preauthentication first, then the expiry: the second AS-REQ gets it.
        let r = step(
            &mut creds,
            &mut st,
            &mut rng,
            1_000,
            fake_kdc::preauth_required(REALM, 1_000, &[(18, SALT, None)]),
        )
        .unwrap();
        assert!(!r.kdc_request.is_empty());
        let e = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(23, 1_000, None)).unwrap_err();
        assert!(matches!(e, KerberosError::PasswordExpired(_)), "{e:?}");
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
        let rpc = credguard_proto::rpc::RpcError::from(e.clone());
        assert_eq!(rpc.reason, credguard_proto::enclave::ErrorReason::PasswordExpired);
        assert!(e.message().starts_with("password expired"));
        // The old password stays: changing it needs it.
        let c = creds.get(&H).unwrap();
        assert!(c.password.is_some() && c.keys.is_empty());
        // Other refusals keep their own codes and no reason.
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let e = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(24, 1_000, None)).unwrap_err();
        assert_eq!(e.code(), CODE_UNAUTHENTICATED);
        let rpc = credguard_proto::rpc::RpcError::from(e);
        assert_eq!(rpc.reason, credguard_proto::enclave::ErrorReason::Unspecified);
    }

    use super::super::fake_kdc::{self, Issue};

    const REALM: &str = "R.TEST";
    const SALT: &str = "R.TESTalice";

    fn user_key(salt: &str) -> Key {
        crypto::string_to_key(18, b"pw", salt.as_bytes(), None).unwrap()
    }

    fn nonce_of(r: &KerberosAsReply) -> u32 {
        fake_kdc::parse_request(&r.kdc_request).unwrap().nonce
    }

    fn issue<'a>(sname: &'a [&'a str], nonce: u32, session_key: &'a Key, cipher_len: usize) -> Issue<'a> {
        Issue {
            realm: REALM,
            cname: &["alice"],
            sname,
            nonce,
            session_key,
            now: 1_000,
            ticket_cipher_len: cipher_len,
        }
    }

    /// Runs a whole AS exchange with the right salt; returns the TGT session key.
    fn get_tgt(creds: &mut CredentialStore, st: &mut KerberosSessions, rng: &mut Counter) -> Key {
        step(creds, st, rng, 1_000, Vec::new()).unwrap();
        let r = step(
            creds,
            st,
            rng,
            1_000,
            fake_kdc::preauth_required(REALM, 1_000, &[(18, SALT, None)]),
        )
        .unwrap();
        let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
        let rep = fake_kdc::as_rep(&issue(&["krbtgt", REALM], nonce_of(&r), &tgt_key, 300), &user_key(SALT));
        let done = step(creds, st, rng, 1_000, rep).unwrap();
        assert!(done.kdc_request.is_empty(), "the TGT is held");
        tgt_key
    }

    mod ticket_cache_tests {
        //! The per-session service ticket cache: a second request for a service costs no KDC
        //! exchange. (Its own file; an inline module's `#[path]` would name a directory that
        //! does not exist.)
        include!("ticket_cache_tests.rs");
    }

    mod client_referral_tests {
        //! Client referrals (KDC_ERR_WRONG_REALM) in the AS exchange.
        include!("client_referral_tests.rs");
    }

    mod referral_tests {
        //! Referrals and cross-realm TGTs: followed here, bounded, never out.
        include!("referral_tests.rs");
    }

    mod change_password {
        use super::*;
        use crate::kerberos::kpasswd::tests::{reply, result, serve};
        use credguard_proto::enclave::{KerberosChangePasswordReply, KerberosChangePasswordRequest};

        const LOCAL: [u8; 4] = [127, 0, 0, 1];

        fn change(
            creds: &mut CredentialStore,
            st: &mut KerberosSessions,
            rng: &mut Counter,
            new: Option<&str>,
            kdc_reply: Vec<u8>,
            kpasswd_reply: Vec<u8>,
        ) -> Result<KerberosChangePasswordReply, KerberosError> {
            let req = KerberosChangePasswordRequest {
                session_handle: H.to_vec(),
                now_unix: 1_000,
                new_password: None,
                kdc_reply,
                kpasswd_reply,
                sender_address: LOCAL.to_vec(),
                check_old_password: false,
            };
            change_step(creds, st, rng, req, new.map(|p| zeroize::Zeroizing::new(p.into())))
        }

        #[test]
        fn a_check_of_the_old_password_gets_the_changepw_ticket_and_changes_nothing() {
            let (mut creds, mut st, mut rng) = setup();
            let check = |kdc_reply: Vec<u8>, check_old_password: bool| KerberosChangePasswordRequest {
                session_handle: H.to_vec(),
                now_unix: 1_000,
                kdc_reply,
                check_old_password,
                ..Default::default()
            };
            // With a new password as well: refused, a check changes nothing.
            let both = change_step(
                &mut creds,
                &mut st,
                &mut rng,
                check(Vec::new(), true),
                Some(zeroize::Zeroizing::new("New-Passw0rd".into())),
            );
            assert!(matches!(both, Err(KerberosError::InvalidArgument(_))));
            let first = change_step(&mut creds, &mut st, &mut rng, check(Vec::new(), true), None).unwrap();
            let asked = fake_kdc::parse_request(&first.kdc_request).unwrap();
            assert_eq!(asked.sname, alloc::vec!["kadmin", "changepw"]);
            let preauth = fake_kdc::preauth_required(REALM, 1_000, &[(18, SALT, None)]);
            let r = change_step(&mut creds, &mut st, &mut rng, check(preauth, false), None).unwrap();
            let sent = fake_kdc::parse_request(&r.kdc_request).unwrap();
            let cp_key = Key::new(18, &[0x66; 32]).unwrap();
            let rep = fake_kdc::as_rep(
                &issue(&["kadmin", "changepw"], sent.nonce, &cp_key, 300),
                &user_key(SALT),
            );
            let done = change_step(&mut creds, &mut st, &mut rng, check(rep, false), None).unwrap();
            assert!(done.old_password_verified && !done.changed);
            assert!(done.kdc_request.is_empty() && done.kpasswd_request.is_empty());
            assert_eq!(password_of(&creds), "pw", "the old password stays");
            // Nothing is pending: a kpasswd reply now has no change to continue.
            let late = change(&mut creds, &mut st, &mut rng, None, Vec::new(), alloc::vec![1]);
            assert!(matches!(late, Err(KerberosError::FailedPrecondition(_))));
        }

        fn password_of(creds: &CredentialStore) -> String {
            creds
                .get(&H)
                .unwrap()
                .password
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default()
        }

        /// Runs the change up to the kpasswd request; returns it, the changepw session key, and
        /// the AS-REQ that asked for the ticket.
        fn up_to_kpasswd(
            creds: &mut CredentialStore,
            st: &mut KerberosSessions,
            rng: &mut Counter,
            ticket_for: &[&str],
        ) -> Result<(Vec<u8>, Key), KerberosError> {
            let first = change(creds, st, rng, Some("New-Passw0rd"), Vec::new(), Vec::new())?;
            let asked = fake_kdc::parse_request(&first.kdc_request).unwrap();
            assert_eq!(
                asked.sname,
                alloc::vec!["kadmin", "changepw"],
                "a changepw ticket, not a TGT"
            );
            assert_eq!(asked.enc_timestamp_etype, None);
            let preauth = fake_kdc::preauth_required(REALM, 1_000, &[(18, SALT, None)]);
            let r = change(creds, st, rng, None, preauth, Vec::new())?;
            let sent = fake_kdc::parse_request(&r.kdc_request).unwrap();
            assert!(
                fake_kdc::timestamp_opens(&sent, &user_key(SALT)),
                "preauthenticated with the old password"
            );
            let cp_key = Key::new(18, &[0x66; 32]).unwrap();
            let rep = fake_kdc::as_rep(&issue(ticket_for, sent.nonce, &cp_key, 300), &user_key(SALT));
            let r = change(creds, st, rng, None, rep, Vec::new())?;
            assert!(r.kdc_request.is_empty() && !r.changed);
            Ok((r.kpasswd_request, cp_key))
        }

        #[test]
        fn an_expired_password_is_changed_and_the_session_then_holds_the_new_one() {
            let (mut creds, mut st, mut rng) = setup();
            let (request, cp_key) = up_to_kpasswd(&mut creds, &mut st, &mut rng, &["kadmin", "changepw"]).unwrap();
            let seen = serve(&request, &cp_key);
            assert_eq!(seen.password, b"New-Passw0rd");
            assert_eq!(seen.sender.address.as_ref(), &LOCAL);
            assert_eq!(
                password_of(&creds),
                "pw",
                "the old password stays until the server says yes"
            );
            let ok = reply(&cp_key, &seen.subkey, None, &result(0, "Password changed"), 9);
            let done = change(&mut creds, &mut st, &mut rng, None, Vec::new(), ok).unwrap();
            assert!(done.changed);
            assert_eq!(password_of(&creds), "New-Passw0rd");
            assert!(
                creds.get(&H).unwrap().keys.is_empty(),
                "no key of the old password or of changepw kept"
            );
            // Over: a further reply is out of turn.
            let again = reply(&cp_key, &seen.subkey, None, &result(0, ""), 9);
            let e = change(&mut creds, &mut st, &mut rng, None, Vec::new(), again).unwrap_err();
            assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
        }

        #[test]
        fn a_refused_or_forged_change_keeps_the_old_password() {
            let (mut creds, mut st, mut rng) = setup();
            let (request, cp_key) = up_to_kpasswd(&mut creds, &mut st, &mut rng, &["kadmin", "changepw"]).unwrap();
            let seen = serve(&request, &cp_key);
            let soft = reply(&cp_key, &seen.subkey, None, &result(4, "Password is too short"), 9);
            let e = change(&mut creds, &mut st, &mut rng, None, Vec::new(), soft).unwrap_err();
            assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
            let m = e.message();
            assert!(m.contains("too short"), "{m}");
            assert_eq!(password_of(&creds), "pw");
            // A forger without the changepw session key.
            let (request, cp_key) = up_to_kpasswd(&mut creds, &mut st, &mut rng, &["kadmin", "changepw"]).unwrap();
            let seen = serve(&request, &cp_key);
            let wrong = Key::new(18, &[0x99; 32]).unwrap();
            let forged = reply(&wrong, &seen.subkey, None, &result(0, ""), 9);
            assert!(change(&mut creds, &mut st, &mut rng, None, Vec::new(), forged).is_err());
            assert_eq!(password_of(&creds), "pw");
        }

        #[test]
        fn only_a_changepw_ticket_is_used_never_a_tgt() {
            for wrong in [
                &["krbtgt", REALM][..],
                &["kadmin", "admin"][..],
                &["KRBTGT", "changepw"][..],
            ] {
                let (mut creds, mut st, mut rng) = setup();
                let Err(e) = up_to_kpasswd(&mut creds, &mut st, &mut rng, wrong) else {
                    panic!("{wrong:?} was used");
                };
                assert_eq!(e.code(), CODE_INVALID_ARGUMENT, "{wrong:?}: {}", e.message());
                let s = st.sessions.get(&H).unwrap();
                assert!(s.tgt.is_none() && s.change.is_none());
                assert_eq!(password_of(&creds), "pw");
            }
        }

        #[test]
        fn steps_out_of_turn_or_ambiguous_are_refused() {
            let (mut creds, mut st, mut rng) = setup();
            let e = change(&mut creds, &mut st, &mut rng, None, Vec::new(), Vec::new()).unwrap_err();
            assert_eq!(e.code(), CODE_INVALID_ARGUMENT);
            let e = change(
                &mut creds,
                &mut st,
                &mut rng,
                None,
                krb_error(25, 1_000, None),
                Vec::new(),
            )
            .unwrap_err();
            assert_eq!(e.code(), CODE_FAILED_PRECONDITION, "nothing in progress");
            let e = change(
                &mut creds,
                &mut st,
                &mut rng,
                Some("x"),
                krb_error(25, 1_000, None),
                Vec::new(),
            )
            .unwrap_err();
            assert_eq!(e.code(), CODE_INVALID_ARGUMENT);
            let e = change(&mut creds, &mut st, &mut rng, Some(""), Vec::new(), Vec::new()).unwrap_err();
            assert_eq!(e.code(), CODE_INVALID_ARGUMENT, "an empty new password");
            // A kpasswd reply while the KDC's is awaited.
            change(
                &mut creds,
                &mut st,
                &mut rng,
                Some("New-Passw0rd"),
                Vec::new(),
                Vec::new(),
            )
            .unwrap();
            let e = change(&mut creds, &mut st, &mut rng, None, Vec::new(), alloc::vec![0; 8]).unwrap_err();
            assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
            // A session without its password (a confirmed key) cannot change it.
            get_tgt(&mut creds, &mut st, &mut rng);
            let e = change(
                &mut creds,
                &mut st,
                &mut rng,
                Some("New-Passw0rd"),
                Vec::new(),
                Vec::new(),
            )
            .unwrap_err();
            assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
        }
    }

    #[test]
    fn preauth_keeps_the_password_until_the_as_rep_decrypts() {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let r = step(&mut creds, &mut st, &mut rng, 1_000, preauth_required(&[1, 18])).unwrap();
        let sent = fake_kdc::parse_request(&r.kdc_request).unwrap();
        assert_eq!(sent.enc_timestamp_etype, Some(18));
        let c = creds.get(&H).unwrap();
        assert!(c.password.is_some(), "kept until an AS-REP decrypts");
        assert!(c.keys.is_empty(), "the derived key is not trusted yet");
        // A second PREAUTH_REQUIRED is the KDC refusing the preauthentication, not a loop.
        let e = step(&mut creds, &mut st, &mut rng, 1_000, preauth_required(&[18])).unwrap_err();
        assert!(matches!(e.code(), CODE_FAILED_PRECONDITION | CODE_UNAUTHENTICATED));
        assert!(creds.get(&H).unwrap().password.is_some());
        // The genuine exchange: now the key is kept and the password wiped.
        get_tgt(&mut creds, &mut st, &mut rng);
        let c = creds.get(&H).unwrap();
        assert!(c.password.is_none(), "the password is wiped once its key is confirmed");
        assert_eq!(c.keys.iter().map(|k| k.enctype).collect::<Vec<_>>(), alloc::vec![18]);
    }

    #[test]
    fn a_forged_etype_info2_does_not_burn_the_password() {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let forged = fake_kdc::preauth_required(REALM, 1_000, &[(18, "attacker-salt", None)]);
        step(&mut creds, &mut st, &mut rng, 1_000, forged).unwrap();
        // The real KDC (or the forger) refuses the timestamp under the wrong key.
        let e = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(24, 1_000, None)).unwrap_err();
        assert_eq!(e.code(), CODE_UNAUTHENTICATED);
        // A forged AS-REP under a key of the attacker's does not decrypt either.
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let r = step(
            &mut creds,
            &mut st,
            &mut rng,
            1_000,
            fake_kdc::preauth_required(REALM, 1_000, &[(18, "x", None)]),
        )
        .unwrap();
        let junk_key = Key::new(18, &[0x11; 32]).unwrap();
        let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
        let rep = fake_kdc::as_rep(&issue(&["krbtgt", REALM], nonce_of(&r), &tgt_key, 100), &junk_key);
        let e = step(&mut creds, &mut st, &mut rng, 1_000, rep).unwrap_err();
        assert_eq!(e.code(), CODE_UNAUTHENTICATED);
        let c = creds.get(&H).unwrap();
        assert!(c.password.is_some() && c.keys.is_empty(), "the session is not burnt");
        // The next genuine exchange still works.
        get_tgt(&mut creds, &mut st, &mut rng);
    }

    #[test]
    fn weak_or_absurd_string_to_key_parameters_are_refused() {
        for (etype, iterations, ok) in [
            (18, 1, false),
            (18, 4_095, false),
            (18, 4_096, true),
            (17, 100, false),
            (20, 4_096, false),
            (20, 32_767, false),
            (20, 32_768, true),
            (19, 1 << 21, false),
        ] {
            let (mut creds, mut st, mut rng) = setup();
            step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
            let offer = fake_kdc::preauth_required(REALM, 1_000, &[(etype, SALT, Some(iterations))]);
            let r = step(&mut creds, &mut st, &mut rng, 1_000, offer);
            match (ok, r) {
                (true, Ok(r)) => assert_eq!(
                    fake_kdc::parse_request(&r.kdc_request).unwrap().enc_timestamp_etype,
                    Some(etype)
                ),
                (false, Err(e)) => {
                    assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
                    assert!(e.message().contains("iterations"));
                }
                (ok, r) => panic!("{etype} x {iterations}: expected ok={ok}, got {:?}", r.map(|_| ())),
            }
        }
        assert!(check_s2k_params(18, Some(&[0, 0])).is_err(), "not a 4-byte count");
        assert!(check_s2k_params(18, None).is_ok(), "absent: the RFC default");
    }

    fn tgs(
        creds: &CredentialStore,
        st: &mut KerberosSessions,
        rng: &mut Counter,
        spn: &str,
        reply: Vec<u8>,
    ) -> Result<KerberosTgsReply, KerberosError> {
        let req = KerberosTgsRequest {
            session_handle: H.to_vec(),
            now_unix: 1_000,
            spn: spn.into(),
            mutual: false,
            delegate: false,
            kdc_reply: reply,
            channel_bindings: Vec::new(),
        };
        tgs_step(creds, st, rng, req)
    }

    #[test]
    fn no_tgt_leaves_under_any_name() {
        let (mut creds, mut st, mut rng) = setup();
        get_tgt(&mut creds, &mut st, &mut rng);
        for spn in [
            "krbtgt/R.TEST",
            "krbtgt/R.TEST@R.TEST",
            "krbtgt@R.TEST",
            "KRBTGT/r.test",
            "KrbTgt/OTHER.TEST",
        ] {
            let e = tgs(&creds, &mut st, &mut rng, spn, Vec::new()).unwrap_err();
            assert_eq!(e.code(), CODE_FAILED_PRECONDITION, "{spn}");
            assert!(e.message().contains("krbtgt"), "{spn}");
        }
    }

    #[test]
    fn a_tgs_rep_must_name_the_service_asked_for_and_never_a_tgs() {
        let (mut creds, mut st, mut rng) = setup();
        let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
        let svc_key = Key::new(18, &[0x99; 32]).unwrap();
        let mut exchange = |sname: &[&str]| {
            let first = tgs(&creds, &mut st, &mut rng, "HTTP/web.r.test", Vec::new()).unwrap();
            let nonce = fake_kdc::parse_request(&first.kdc_request).unwrap().nonce;
            let rep = fake_kdc::tgs_rep(&issue(sname, nonce, &svc_key, 200), &tgt_key);
            tgs(&creds, &mut st, &mut rng, "HTTP/web.r.test", rep)
        };
        // A referral under the service's request: followed here (see referral_tests), its TGT
        // and key kept; only the next request, for the referred realm's KDC, goes out.
        let next = exchange(&["krbtgt", "OTHER.TEST"]).unwrap();
        assert_eq!(next.kdc_realm, "OTHER.TEST");
        assert!(next.ticket.is_empty() && next.session_key.is_empty() && next.ap_req.is_empty());
        // Another service's ticket: refused.
        let e = exchange(&["HTTP", "evil.r.test"]).unwrap_err();
        assert_eq!(e.code(), CODE_INVALID_ARGUMENT);
        // The one asked for (the host's case may differ): the ticket and its session key.
        let ok = exchange(&["HTTP", "WEB.r.test"]).unwrap();
        assert_eq!(ok.session_key, alloc::vec![0x99; 32]);
        assert!(!ok.ap_req.is_empty());
    }

    #[test]
    fn several_tgs_exchanges_of_one_session_are_pending_at_once() {
        let (mut creds, mut st, mut rng) = setup();
        let tgt_key = get_tgt(&mut creds, &mut st, &mut rng);
        let svc_key = Key::new(18, &[0x55; 32]).unwrap();
        // Three services asked at once (one of them twice), answered out of order.
        let spns = ["HTTP/a.r.test", "HTTP/b.r.test", "cifs/c.r.test", "HTTP/a.r.test"];
        let nonces: Vec<u32> = spns
            .iter()
            .map(|spn| {
                let first = tgs(&creds, &mut st, &mut rng, spn, Vec::new()).unwrap();
                fake_kdc::parse_request(&first.kdc_request).unwrap().nonce
            })
            .collect();
        for i in [2, 3, 0, 1] {
            let (service, host) = spns[i].split_once('/').unwrap();
            let rep = fake_kdc::tgs_rep(&issue(&[service, host], nonces[i], &svc_key, 200), &tgt_key);
            let ok = tgs(&creds, &mut st, &mut rng, spns[i], rep).unwrap();
            assert!(ok.server_principal.starts_with(spns[i]), "{}", ok.server_principal);
        }
        // Every exchange is done: a reply now answers nothing.
        let rep = fake_kdc::tgs_rep(&issue(&["HTTP", "a.r.test"], nonces[0], &svc_key, 200), &tgt_key);
        let e = tgs(&creds, &mut st, &mut rng, "HTTP/a.r.test", rep).unwrap_err();
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
        // A session's waiting exchanges are bounded: the oldest gives way.
        let first = tgs(&creds, &mut st, &mut rng, "HTTP/old.r.test", Vec::new()).unwrap();
        let old_nonce = fake_kdc::parse_request(&first.kdc_request).unwrap().nonce;
        for i in 0..MAX_PENDING_TGS {
            tgs(
                &creds,
                &mut st,
                &mut rng,
                &alloc::format!("HTTP/h{i}.r.test"),
                Vec::new(),
            )
            .unwrap();
        }
        let rep = fake_kdc::tgs_rep(&issue(&["HTTP", "old.r.test"], old_nonce, &svc_key, 200), &tgt_key);
        let e = tgs(&creds, &mut st, &mut rng, "HTTP/old.r.test", rep).unwrap_err();
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION);
    }

    #[test]
    fn oversized_replies_and_one_owners_tickets_are_bounded() {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let e = step(
            &mut creds,
            &mut st,
            &mut rng,
            1_000,
            alloc::vec![0x6b; MAX_KDC_REPLY_LEN + 1],
        )
        .unwrap_err();
        assert_eq!(e.code(), CODE_RESOURCE_EXHAUSTED);
        // Many sessions of one owner with big TGTs: the owner's budget ends it, not the heap.
        let big = 60 << 10;
        let mut refused = None;
        for i in 0..(MAX_TICKET_BYTES_PER_OWNER / big + 2) {
            let h = [i as u8 + 100; SESSION_HANDLE_LEN];
            creds.insert(h, session_of(1000)).unwrap();
            let r = as_with_ticket(&mut creds, &mut st, &mut rng, h, big);
            if let Err(e) = r {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("the budget ends it");
        assert_eq!(e.code(), CODE_RESOURCE_EXHAUSTED);
        assert!(st.held_by(Owner::uid(1000)) <= MAX_TICKET_BYTES_PER_OWNER);
        // Another owner is not affected.
        creds.insert([1; SESSION_HANDLE_LEN], session_of(2000)).unwrap();
        as_with_ticket(&mut creds, &mut st, &mut rng, [1; SESSION_HANDLE_LEN], big).unwrap();
        // Logging off gives the budget back.
        st.forget_session(&[100; SESSION_HANDLE_LEN], Owner::uid(1000));
        creds.insert([250; SESSION_HANDLE_LEN], session_of(1000)).unwrap();
        as_with_ticket(&mut creds, &mut st, &mut rng, [250; SESSION_HANDLE_LEN], big).unwrap();
    }

    fn session_of(uid: u32) -> LogonCredential {
        LogonCredential {
            enterprise: false,
            owner: Owner::uid(uid),
            allow_rc4: false,
            id: [0; 16],
            user: "alice".into(),
            domain: String::new(),
            realm: REALM.into(),
            kind: "key",
            nt_hash: None,
            password: None,
            keys: alloc::vec![crate::credentials::KerberosKey {
                enctype: 18,
                value: zeroize::Zeroizing::new(user_key(SALT).value.to_vec()),
            }],
        }
    }

    fn as_with_ticket(
        creds: &mut CredentialStore,
        st: &mut KerberosSessions,
        rng: &mut Counter,
        h: [u8; SESSION_HANDLE_LEN],
        ticket_len: usize,
    ) -> Result<(), KerberosError> {
        let go = |creds: &mut CredentialStore, st: &mut KerberosSessions, rng: &mut Counter, reply| {
            let req = KerberosAsRequest {
                session_handle: h.to_vec(),
                now_unix: 1_000,
                kdc_reply: reply,
                fast: 0,
            };
            as_step(creds, st, rng, req)
        };
        let first = go(creds, st, rng, Vec::new())?;
        let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
        let rep = fake_kdc::as_rep(
            &issue(&["krbtgt", REALM], nonce_of(&first), &tgt_key, ticket_len),
            &user_key(SALT),
        );
        go(creds, st, rng, rep).map(|_| ())
    }

    #[test]
    fn replies_out_of_turn_or_garbled_are_errors() {
        let (mut creds, mut st, mut rng) = setup();
        let e = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(6, 1_000, None)).unwrap_err();
        assert_eq!(e.code(), CODE_FAILED_PRECONDITION, "no exchange in progress");
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let e = step(&mut creds, &mut st, &mut rng, 1_000, krb_error(6, 1_000, None)).unwrap_err();
        assert_eq!(e.code(), CODE_NOT_FOUND);
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let e = step(&mut creds, &mut st, &mut rng, 1_000, alloc::vec![0x6b, 0x01, 0x00]).unwrap_err();
        assert_eq!(e.code(), CODE_INVALID_ARGUMENT);
    }
}

#[test]
fn an_active_directory_refusal_says_why_the_account_is_refused() {
    let refusal = |status: Option<u32>| {
        let e_data = status.map(|s| {
            let mut value = s.to_le_bytes().to_vec();
            value.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
            let pa = alloc::vec![rasn_kerberos::PaData {
                r#type: 3,
                value: rasn::types::OctetString::from(value),
            }];
            rasn::der::encode(&pa).unwrap()
        });
        let e = messages::KrbErr {
            code: 18,
            stime: 0,
            e_data,
            ..Default::default()
        };
        kdc_error(&e, "AS")
    };
    let disabled = refusal(Some(0xC000_0072));
    assert_eq!(disabled.code(), credguard_proto::rpc::code::PERMISSION_DENIED);
    assert!(disabled.message().contains("disabled"));
    assert!(refusal(Some(0xC000_0234)).message().contains("locked out"));
    // MIT's KDC gives no NTSTATUS: still a refusal of the account, in general words.
    let plain = refusal(None);
    assert_eq!(plain.code(), credguard_proto::rpc::code::PERMISSION_DENIED);
    assert!(plain.message().contains("refuses the account, not the password"));
    // A malformed or short status is no status.
    let short = messages::KrbErr {
        code: 18,
        stime: 0,
        e_data: Some(alloc::vec![0x30, 0x03, 0x02, 0x01, 0x00]),
        ..Default::default()
    };
    assert!(kdc_error(&short, "AS").message().contains("refuses the account"));
}
