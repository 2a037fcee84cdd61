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
    let p = messages::parse_spn("host/svc.test").unwrap();
    assert_eq!(p.string.len(), 2);
    assert!(messages::parse_spn("HTTP@web.test").is_ok());
    assert!(messages::parse_spn("host/svc.test@REALM").is_ok());
    for bad in ["", "nohost", "/h", "s/", "a\nb/c"] {
        assert!(messages::parse_spn(bad).is_err(), "{bad:?}");
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
    use crate::credentials::{LogonCredential, SESSION_HANDLE_LEN};
    use rasn::types::{GeneralString, Integer, OctetString};
    use rasn_kerberos::{EtypeInfo2Entry, KerberosTime, KrbError, PaData, PrincipalName};

    struct Counter(u8);

    impl rand_core::TryRng for Counter {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(u32::from(self.0))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(u64::from(self.0))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            for d in dst {
                self.0 = self.0.wrapping_add(1);
                *d = self.0;
            }
            Ok(())
        }
    }

    impl rand_core::TryCryptoRng for Counter {}

    const H: [u8; SESSION_HANDLE_LEN] = [7; SESSION_HANDLE_LEN];

    fn setup() -> (CredentialStore, KerberosSessions, Counter) {
        let mut creds = CredentialStore::new();
        let cred = LogonCredential {
            user: "alice".into(),
            domain: String::new(),
            realm: "R.TEST".into(),
            kind: "password",
            nt_hash: None,
            password: Some(zeroize::Zeroizing::new("pw".into())),
            keys: Vec::new(),
        };
        creds.insert(H, cred).unwrap();
        (creds, KerberosSessions::new(), Counter(0))
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
            allow_rc4: false,
            kdc_reply: reply,
        };
        as_step(creds, st, rng, &req.encode_to_vec()).map(|b| KerberosAsReply::decode(b.as_slice()).unwrap())
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
    fn preauth_derives_the_key_and_wipes_the_password() {
        let (mut creds, mut st, mut rng) = setup();
        step(&mut creds, &mut st, &mut rng, 1_000, Vec::new()).unwrap();
        let r = step(&mut creds, &mut st, &mut rng, 1_000, preauth_required(&[1, 18])).unwrap();
        assert!(!r.kdc_request.is_empty());
        let c = creds.get(&H).unwrap();
        assert!(c.password.is_none(), "the password is wiped once the key is derived");
        assert_eq!(c.keys.iter().map(|k| k.enctype).collect::<Vec<_>>(), alloc::vec![18]);
        // A second PREAUTH_REQUIRED is the KDC refusing the preauthentication, not a loop.
        let e = step(&mut creds, &mut st, &mut rng, 1_000, preauth_required(&[18])).unwrap_err();
        assert!(matches!(e.code(), CODE_FAILED_PRECONDITION | CODE_UNAUTHENTICATED));
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
