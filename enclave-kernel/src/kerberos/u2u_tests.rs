//! The user-to-user exchange for the user's SID against replies built here.

use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::enclave::{KerberosAsRequest, KerberosUserSidReply, KerberosUserSidRequest};
use rasn::types::{GeneralString, Integer, OctetString};
use rasn_kerberos::{
    AuthorizationDataValue, EncTicketPart, EncryptedData, EncryptionKey, KerberosTime, PrincipalName, TgsRep, TgsReq,
    Ticket, TicketFlags, TransitedEncoding,
};

use super::super::fake_kdc::{self, Issue};
use super::super::pac::tests::{alice_sid, pac, upn_dns_info};
use super::super::{KerberosError, KerberosSessions, as_step, crypto};
use super::user_sid_step;
use crate::credentials::{CredentialStore, LogonCredential, SESSION_HANDLE_LEN};
use crate::kerberos::counter_rng::Counter;
use crypto::Key;

const H: [u8; SESSION_HANDLE_LEN] = [5; SESSION_HANDLE_LEN];
const REALM: &str = "CORP.TEST";
const NOW: i64 = 1_000;
const SID: &str = "S-1-5-21-1111-2222-3333-1104";

struct World {
    creds: CredentialStore,
    st: KerberosSessions,
    rng: Counter,
    /// The TGT, DER, as the KDC issued it.
    tgt: Vec<u8>,
}

fn tgt_key() -> Key {
    Key::new(18, &[0x77; 32]).unwrap()
}

/// A session of `alice` holding a TGT (AS exchange against a fake KDC).
fn world() -> World {
    let mut creds = CredentialStore::new();
    let user_key = Key::new(18, &[0x42; 32]).unwrap();
    let cred = LogonCredential {
        enterprise: false,
        owner: credguard_proto::attest::Owner::uid(1000),
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
            value: zeroize::Zeroizing::new(user_key.value.to_vec()),
        }],
    };
    creds.insert(H, cred).unwrap();
    let mut w = World {
        creds,
        st: KerberosSessions::new(),
        rng: Counter::new(3),
        tgt: Vec::new(),
    };
    let as_req = |reply| KerberosAsRequest {
        session_handle: H.to_vec(),
        now_unix: NOW,
        kdc_reply: reply,
        fast: 0,
    };
    let first = as_step(&mut w.creds, &mut w.st, &mut w.rng, as_req(Vec::new())).unwrap();
    let nonce = fake_kdc::parse_request(&first.kdc_request).unwrap().nonce;
    let key = tgt_key();
    let rep = fake_kdc::as_rep(&issue(&["alice"], &["krbtgt", REALM], nonce, &key), &user_key);
    let parsed: rasn_kerberos::AsRep = rasn::der::decode(&rep).unwrap();
    w.tgt = rasn::der::encode(&parsed.0.ticket).unwrap();
    let held = as_step(&mut w.creds, &mut w.st, &mut w.rng, as_req(rep)).unwrap();
    // The step that holds the TGT made the first user-to-user step too (one enclave call fewer).
    let first = held.user_sid_first.expect("the first SID step comes with the TGT");
    assert!(!first.kdc_request.is_empty() && first.user_sid.is_empty());
    // The tests below start the exchange themselves.
    w.st.sessions.values_mut().for_each(|s| s.user_sid.pending = None);
    w
}

fn issue<'a>(cname: &'a [&'a str], sname: &'a [&'a str], nonce: u32, session_key: &'a Key) -> Issue<'a> {
    Issue {
        realm: REALM,
        cname,
        sname,
        nonce,
        session_key,
        now: NOW,
        ticket_cipher_len: 100,
    }
}

fn step(w: &mut World, kdc_reply: Vec<u8>) -> Result<KerberosUserSidReply, KerberosError> {
    let req = KerberosUserSidRequest {
        session_handle: H.to_vec(),
        now_unix: NOW,
        kdc_reply,
    };
    user_sid_step(&w.creds, &mut w.st, &mut w.rng, req)
}

fn gs(s: &str) -> GeneralString {
    GeneralString::from_bytes(s.as_bytes()).unwrap()
}

fn kt(unix: i64) -> KerberosTime {
    KerberosTime(chrono::DateTime::from_timestamp(unix, 0).unwrap().fixed_offset())
}

/// What a fake KDC puts in its user-to-user reply.
struct U2u<'a> {
    nonce: u32,
    /// Client of the reply, of the ticket and server of both.
    cname: &'a [&'a str],
    ticket_cname: &'a [&'a str],
    sname: &'a [&'a str],
    /// Authorization data of the ticket.
    ad: Option<Vec<AuthorizationDataValue>>,
    /// The key the ticket is encrypted in.
    ticket_key: Key,
}

fn u2u<'a>(nonce: u32, pac: Option<Vec<u8>>) -> U2u<'a> {
    U2u {
        nonce,
        cname: &["alice"],
        ticket_cname: &["alice"],
        sname: &["alice"],
        ad: pac.map(|p| alloc::vec![if_relevant(alloc::vec![(128, p)])]),
        ticket_key: tgt_key(),
    }
}

fn if_relevant(inner: Vec<(i32, Vec<u8>)>) -> AuthorizationDataValue {
    let inner: Vec<AuthorizationDataValue> = inner
        .into_iter()
        .map(|(t, d)| AuthorizationDataValue {
            r#type: t,
            data: OctetString::from(d),
        })
        .collect();
    AuthorizationDataValue {
        r#type: 1,
        data: OctetString::from(rasn::der::encode(&inner).unwrap()),
    }
}

/// The KDC's TGS-REP to a user-to-user request: the ticket encrypted in the TGT's session key.
fn u2u_rep(r: &U2u<'_>) -> Vec<u8> {
    let u2u_key = Key::new(18, &[0x55; 32]).unwrap();
    let rep = fake_kdc::tgs_rep(&issue(r.cname, r.sname, r.nonce, &u2u_key), &tgt_key());
    let mut rep: TgsRep = rasn::der::decode(&rep).unwrap();
    let part = EncTicketPart {
        flags: TicketFlags(rasn::types::BitString::repeat(false, 32)),
        key: EncryptionKey {
            r#type: 18,
            value: OctetString::from(u2u_key.value.to_vec()),
        },
        crealm: gs(REALM),
        cname: PrincipalName {
            r#type: 1,
            string: r.ticket_cname.iter().map(|s| gs(s)).collect(),
        },
        transited: TransitedEncoding {
            r#type: 1,
            contents: OctetString::from(Vec::new()),
        },
        auth_time: kt(NOW),
        start_time: None,
        end_time: kt(NOW + 3600),
        renew_till: None,
        caddr: None,
        authorization_data: r.ad.clone(),
    };
    let plain = rasn::der::encode(&part).unwrap();
    let cipher = crypto::encrypt(&r.ticket_key, 2, &plain, &[0x66; 16]).unwrap();
    rep.0.ticket = Ticket {
        tkt_vno: Integer::from(5),
        realm: gs(REALM),
        sname: PrincipalName {
            r#type: 1,
            string: r.sname.iter().map(|s| gs(s)).collect(),
        },
        enc_part: EncryptedData {
            etype: r.ticket_key.enctype,
            kvno: None,
            cipher: OctetString::from(cipher),
        },
    };
    rasn::der::encode(&rep).unwrap()
}

/// The request's nonce.
fn start(w: &mut World) -> u32 {
    let r = step(w, Vec::new()).unwrap();
    assert!(!r.kdc_request.is_empty());
    fake_kdc::parse_request(&r.kdc_request).unwrap().nonce
}

fn samba_pac() -> Vec<u8> {
    pac(&[
        (1, alloc::vec![0; 200]),
        (12, upn_dns_info(3, &alice_sid())),
        (6, alloc::vec![0; 16]),
    ])
}

#[test]
fn the_request_is_user_to_user_to_oneself_with_the_tgt() {
    let mut w = world();
    let r = step(&mut w, Vec::new()).unwrap();
    let req: TgsReq = rasn::der::decode(&r.kdc_request).unwrap();
    let body = &req.0.req_body;
    let sname = body.sname.as_ref().unwrap();
    assert_eq!(sname.r#type, 1, "NT-PRINCIPAL");
    assert_eq!(sname.string, alloc::vec![gs("alice")]);
    assert_eq!(body.realm, gs(REALM));
    // enc-tkt-in-skey (28), and nothing else: not forwardable, not renewable.
    let set: Vec<usize> = (0..32)
        .filter(|&i| body.kdc_options.0.get(i).is_some_and(|b| *b))
        .collect();
    assert_eq!(set, [28]);
    let extra = body.additional_tickets.as_ref().unwrap();
    assert_eq!(extra.len(), 1);
    assert_eq!(
        rasn::der::encode(&extra[0]).unwrap(),
        w.tgt,
        "the additional ticket is the TGT"
    );
    // The TGT also authenticates the request (PA-TGS-REQ), with the req-body checksum under its key.
    let pa = &req.0.padata.as_ref().unwrap()[0];
    assert_eq!(pa.r#type, 1);
    let ap: rasn_kerberos::ApReq = rasn::der::decode(&pa.value).unwrap();
    assert_eq!(rasn::der::encode(&ap.ticket).unwrap(), w.tgt);
    let auth = crypto::decrypt(&tgt_key(), 7, &ap.authenticator.cipher).unwrap();
    let auth: rasn_kerberos::Authenticator = rasn::der::decode(&auth).unwrap();
    let body_der = rasn::der::encode(body).unwrap();
    assert_eq!(
        auth.cksum.unwrap().checksum.to_vec(),
        crypto::checksum(&tgt_key(), 6, &body_der).unwrap()
    );
}

#[test]
fn the_sid_is_read_from_the_pac_and_remembered() {
    let mut w = world();
    let nonce = start(&mut w);
    let r = step(&mut w, u2u_rep(&u2u(nonce, Some(samba_pac())))).unwrap();
    assert_eq!((r.user_sid.as_str(), r.reason.as_str(), r.remembered), (SID, "", false));
    assert!(r.kdc_request.is_empty());
    // A renewal for the same principal asks the KDC nothing.
    let again = step(&mut w, Vec::new()).unwrap();
    assert!(again.kdc_request.is_empty());
    assert_eq!((again.user_sid.as_str(), again.remembered), (SID, true));
}

#[test]
fn no_pac_gives_no_sid_and_is_remembered() {
    let mut w = world();
    let nonce = start(&mut w);
    let r = step(&mut w, u2u_rep(&u2u(nonce, None))).unwrap();
    assert_eq!(r.user_sid, "");
    assert!(r.reason.contains("no PAC"), "{}", r.reason);
    let again = step(&mut w, Vec::new()).unwrap();
    assert!(
        again.kdc_request.is_empty(),
        "no second round trip to a KDC without PACs"
    );
    assert!(again.remembered && again.user_sid.is_empty());
    // Authorization data without a PAC is no PAC either.
    let mut w = world();
    let nonce = start(&mut w);
    let mut rep = u2u(nonce, None);
    rep.ad = Some(alloc::vec![if_relevant(alloc::vec![(129, alloc::vec![1, 2])])]);
    assert!(step(&mut w, u2u_rep(&rep)).unwrap().reason.contains("no PAC"));
}

#[test]
fn a_pac_without_a_sid_or_malformed_gives_no_sid() {
    for (p, why) in [
        (pac(&[(12, upn_dns_info(1, &[]))]), "no S flag"),
        (alloc::vec![0xff; 40], "malformed PAC"),
        (Vec::new(), "malformed PAC"),
    ] {
        let mut w = world();
        let nonce = start(&mut w);
        let r = step(&mut w, u2u_rep(&u2u(nonce, Some(p)))).unwrap();
        assert_eq!(r.user_sid, "");
        assert!(r.reason.contains(why), "{}", r.reason);
    }
}

#[test]
fn a_kdc_error_gives_no_sid_and_is_asked_again_next_time() {
    let mut w = world();
    start(&mut w);
    let r = step(&mut w, fake_kdc::krb_error(REALM, 60, NOW, None)).unwrap();
    assert_eq!(r.user_sid, "");
    assert!(r.reason.contains("KRB_ERR_GENERIC"), "{}", r.reason);
    assert!(!step(&mut w, Vec::new()).unwrap().kdc_request.is_empty());
}

#[test]
fn a_lasting_refusal_is_remembered() {
    // Samba 4.17 for a user without an SPN.
    let mut w = world();
    start(&mut w);
    let r = step(&mut w, fake_kdc::krb_error(REALM, 7, NOW, None)).unwrap();
    assert_eq!(r.user_sid, "");
    assert!(r.reason.contains("KDC_ERR_S_PRINCIPAL_UNKNOWN"), "{}", r.reason);
    let again = step(&mut w, Vec::new()).unwrap();
    assert!(again.kdc_request.is_empty() && again.remembered);
    assert_eq!(again.reason, r.reason);
}

#[test]
fn a_reply_with_another_nonce_is_refused() {
    let mut w = world();
    let nonce = start(&mut w);
    let e = step(&mut w, u2u_rep(&u2u(nonce ^ 1, Some(samba_pac())))).unwrap_err();
    assert!(
        matches!(e, KerberosError::InvalidArgument(ref m) if m.contains("nonce")),
        "{e:?}"
    );
    // The exchange is spent: the right reply now answers nothing.
    let e = step(&mut w, u2u_rep(&u2u(nonce, Some(samba_pac())))).unwrap_err();
    assert!(matches!(e, KerberosError::FailedPrecondition(_)), "{e:?}");
}

#[test]
fn a_reply_for_another_principal_is_refused() {
    let cases: [(&[&str], &[&str], &[&str]); 4] = [
        (&["mallory"], &["alice"], &["alice"]),
        (&["alice"], &["alice"], &["mallory"]),
        (&["alice"], &["mallory"], &["alice"]),
        (&["alice"], &["alice"], &["krbtgt", REALM]),
    ];
    for (cname, ticket_cname, sname) in cases {
        let mut w = world();
        let nonce = start(&mut w);
        let rep = U2u {
            cname,
            ticket_cname,
            sname,
            ..u2u(nonce, Some(samba_pac()))
        };
        let e = step(&mut w, u2u_rep(&rep)).unwrap_err();
        assert!(
            matches!(e, KerberosError::InvalidArgument(_)),
            "{cname:?} {sname:?}: {e:?}"
        );
    }
}

#[test]
fn a_ticket_not_under_the_tgt_session_key_is_refused() {
    let mut w = world();
    let nonce = start(&mut w);
    let rep = U2u {
        ticket_key: Key::new(18, &[0x13; 32]).unwrap(),
        ..u2u(nonce, Some(samba_pac()))
    };
    assert!(matches!(
        step(&mut w, u2u_rep(&rep)).unwrap_err(),
        KerberosError::Unauthenticated(_)
    ));
}

#[test]
fn no_tgt_no_exchange_and_garbage_are_errors() {
    let mut w = world();
    let e = step(&mut w, u2u_rep(&u2u(1, None))).unwrap_err();
    assert!(matches!(e, KerberosError::FailedPrecondition(_)), "{e:?}");
    start(&mut w);
    assert!(step(&mut w, alloc::vec![0x6d, 0x03, 0, 0, 0]).is_err());
    let e = step(&mut w, alloc::vec![0; super::super::MAX_KDC_REPLY_LEN + 1]).unwrap_err();
    assert!(matches!(e, KerberosError::ResourceExhausted(_)), "{e:?}");
    // A session without a TGT.
    w.st = KerberosSessions::new();
    assert!(matches!(step(&mut w, Vec::new()).unwrap_err(), KerberosError::NoTgt(_)));
}
