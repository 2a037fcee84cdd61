//! The AP-REQ's subkey, sequence number and channel bindings, and the AP-REP check, against
//! TGS-REPs and AP-REPs built here.

use alloc::vec::Vec;

use credguard_proto::enclave::{
    KerberosAsRequest, KerberosTgsReply, KerberosTgsRequest, KerberosVerifyApRepReply, KerberosVerifyApRepRequest,
};
use md5::{Digest, Md5};
use rasn::types::{Integer, OctetString};
use rasn_kerberos::{ApRep, ApReq, Authenticator, EncApRepPart, EncryptedData, EncryptionKey, KerberosTime};

use super::super::fake_kdc::{self, Issue};
use super::super::{KerberosError, KerberosSessions, as_step, crypto, messages, tgs_step, verify_ap_rep};
use super::{AP_CONTEXT_TTL_SECS, MAX_AP_CONTEXTS};
use crate::credentials::{CredentialStore, LogonCredential, SESSION_HANDLE_LEN};
use crypto::Key;

use crate::kerberos::counter_rng::Counter;

const H: [u8; SESSION_HANDLE_LEN] = [9; SESSION_HANDLE_LEN];
const REALM: &str = "R.TEST";
const NOW: i64 = 1_000;

struct World {
    creds: CredentialStore,
    st: KerberosSessions,
    rng: Counter,
    svc_key: Key,
}

/// A session holding a TGT (given with its long-term key, AS exchange against a fake KDC).
fn world() -> World {
    let mut creds = CredentialStore::new();
    let user_key = Key::new(18, &[0x42; 32]).unwrap();
    let cred = LogonCredential {
        enterprise: false,
        owner: credguard_proto::attest::Owner::uid(1000),
        allow_rc4: false,
        id: [0; 16],
        user: "alice".into(),
        domain: alloc::string::String::new(),
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
        rng: Counter::new(7),
        svc_key: Key::new(18, &[0x99; 32]).unwrap(),
    };
    let as_req = |reply| KerberosAsRequest {
        session_handle: H.to_vec(),
        now_unix: NOW,
        kdc_reply: reply,
        fast: 0,
    };
    let first = as_step(&mut w.creds, &mut w.st, &mut w.rng, as_req(Vec::new())).unwrap();
    let nonce = fake_kdc::parse_request(&first.kdc_request).unwrap().nonce;
    let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
    let rep = fake_kdc::as_rep(&issue(&["krbtgt", REALM], nonce, &tgt_key), &user_key);
    as_step(&mut w.creds, &mut w.st, &mut w.rng, as_req(rep)).unwrap();
    w
}

fn issue<'a>(sname: &'a [&'a str], nonce: u32, session_key: &'a Key) -> Issue<'a> {
    Issue {
        realm: REALM,
        cname: &["alice"],
        sname,
        nonce,
        session_key,
        now: NOW,
        ticket_cipher_len: 100,
    }
}

/// A whole TGS exchange for HTTP/web.r.test, or the answer from the session's kept ticket.
fn service_ticket(w: &mut World, mutual: bool, channel_bindings: &[u8]) -> KerberosTgsReply {
    let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
    let req = |reply| KerberosTgsRequest {
        session_handle: H.to_vec(),
        now_unix: NOW,
        spn: "HTTP/web.r.test".into(),
        mutual,
        delegate: false,
        kdc_reply: reply,
        channel_bindings: channel_bindings.to_vec(),
    };
    let first = tgs_step(&w.creds, &mut w.st, &mut w.rng, req(Vec::new())).unwrap();
    if first.kdc_request.is_empty() {
        // The session's kept ticket answered (the enclave's ticket cache): an AP-REQ all the same.
        return first;
    }
    let nonce = fake_kdc::parse_request(&first.kdc_request).unwrap().nonce;
    let rep = fake_kdc::tgs_rep(&issue(&["HTTP", "web.r.test"], nonce, &w.svc_key), &tgt_key);
    tgs_step(&w.creds, &mut w.st, &mut w.rng, req(rep)).unwrap()
}

/// The authenticator of an AP-REQ, as the service decrypts it.
fn authenticator(ap_req: &[u8], session_key: &Key) -> Authenticator {
    let ap: ApReq = rasn::der::decode(ap_req).unwrap();
    let plain = crypto::decrypt(session_key, 11, &ap.authenticator.cipher).unwrap();
    rasn::der::decode(&plain).unwrap()
}

/// The service's AP-REP under `key` for the authenticator's ctime/cusec.
fn ap_rep(key: &Key, ctime: &KerberosTime, cusec: &Integer, subkey: Option<&Key>, seq: Option<u32>) -> Vec<u8> {
    let part = EncApRepPart {
        ctime: ctime.clone(),
        cusec: cusec.clone(),
        subkey: subkey.map(|k| EncryptionKey {
            r#type: k.enctype,
            value: OctetString::from(k.value.to_vec()),
        }),
        seq_number: seq,
    };
    let cipher = crypto::encrypt(key, 12, &rasn::der::encode(&part).unwrap(), &[0x21; 16]).unwrap();
    rasn::der::encode(&ApRep {
        pvno: Integer::from(5),
        msg_type: Integer::from(15),
        enc_part: EncryptedData {
            etype: key.enctype,
            kvno: None,
            cipher: OctetString::from(cipher),
        },
    })
    .unwrap()
}

fn verify(
    w: &mut World,
    context_id: &[u8],
    ap_rep: Vec<u8>,
    now: i64,
) -> Result<KerberosVerifyApRepReply, KerberosError> {
    let req = KerberosVerifyApRepRequest {
        session_handle: H.to_vec(),
        now_unix: now,
        context_id: context_id.to_vec(),
        ap_rep,
    };
    verify_ap_rep(&w.creds, &mut w.st, req)
}

/// The 0x8003 checksum's Bnd field and flags.
fn bnd_and_flags(auth: &Authenticator) -> ([u8; 16], u32) {
    let ck = auth.cksum.as_ref().unwrap();
    assert_eq!(ck.r#type, 0x8003);
    let v = &ck.checksum;
    assert_eq!(v.len(), 24, "Lgth, Bnd, Flags; never Dlgth/Deleg");
    assert_eq!(v[..4], 16u32.to_le_bytes());
    (
        v[4..20].try_into().unwrap(),
        u32::from_le_bytes(v[20..24].try_into().unwrap()),
    )
}

#[test]
fn the_authenticator_carries_a_fresh_subkey_and_sequence_number() {
    let mut w = world();
    let a = service_ticket(&mut w, false, &[]);
    let b = service_ticket(&mut w, false, &[]);
    for r in [&a, &b] {
        let auth = authenticator(&r.ap_req, &w.svc_key);
        let sub = auth.subkey.as_ref().expect("a subkey");
        assert_eq!(sub.r#type, 18, "the session key's enctype");
        assert_eq!(sub.value.to_vec(), r.subkey);
        assert_eq!(r.subkey.len(), 32);
        assert_ne!(r.subkey, r.session_key);
        assert_eq!(auth.seq_number, Some(r.seq_number));
        assert!(r.context_id.is_empty(), "no mutual asked: nothing waits");
    }
    assert_ne!(a.subkey, b.subkey, "a new subkey per AP-REQ");
    assert_ne!(a.seq_number, b.seq_number, "a new sequence number per AP-REQ");
}

#[test]
fn the_checksum_carries_the_md5_of_the_channel_bindings_and_never_delegation() {
    // gss_channel_bindings_struct: no addresses, application data "tls-server-end-point:...".
    let mut cb = alloc::vec![0u8; 32];
    let app = b"tls-server-end-point:0123456789abcdef";
    cb.extend_from_slice(&(app.len() as u32).to_le_bytes());
    cb.extend_from_slice(app);
    let mut w = world();
    let with = service_ticket(&mut w, true, &cb);
    let (bnd, flags) = bnd_and_flags(&authenticator(&with.ap_req, &w.svc_key));
    assert_eq!(bnd, <[u8; 16]>::from(Md5::digest(&cb)), "RFC 4121 4.1.1.2");
    assert_eq!(flags & 1, 0, "GSS_C_DELEG_FLAG is never set");
    assert_ne!(flags & 2, 0, "GSS_C_MUTUAL_FLAG when asked");
    let without = service_ticket(&mut w, false, &[]);
    let (bnd, flags) = bnd_and_flags(&authenticator(&without.ap_req, &w.svc_key));
    assert_eq!(bnd, [0; 16], "no bindings: 16 zero bytes");
    assert_eq!(flags & 3, 0);
    // Too long: refused, no ticket (the proxy refuses it before any KDC exchange).
    let tgt_key = Key::new(18, &[0x77; 32]).unwrap();
    let req = |reply| KerberosTgsRequest {
        session_handle: H.to_vec(),
        now_unix: NOW,
        spn: "HTTP/web.r.test".into(),
        kdc_reply: reply,
        channel_bindings: alloc::vec![0; credguard_proto::checks::MAX_CHANNEL_BINDINGS_LEN + 1],
        ..Default::default()
    };
    // The session keeps the ticket by now, so the first step answers at once: and refuses.
    let e = match tgs_step(&w.creds, &mut w.st, &mut w.rng, req(Vec::new())) {
        Err(e) => e,
        Ok(first) => {
            let nonce = fake_kdc::parse_request(&first.kdc_request).unwrap().nonce;
            let rep = fake_kdc::tgs_rep(&issue(&["HTTP", "web.r.test"], nonce, &w.svc_key), &tgt_key);
            tgs_step(&w.creds, &mut w.st, &mut w.rng, req(rep)).unwrap_err()
        }
    };
    assert_eq!(e.code(), super::super::CODE_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn the_spnego_token_offers_kerberos_with_the_gss_token() {
    let mut w = world();
    let r = service_ticket(&mut w, false, &[]);
    let t = &r.spnego_token;
    assert_eq!(t[0], 0x60);
    assert!(
        t.windows(8)
            .any(|x| x == [0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02]),
        "SPNEGO OID"
    );
    let krb5 = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
    assert!(t.windows(11).any(|x| x == krb5), "Kerberos OID");
    assert!(t.ends_with(&r.gss_token), "mechToken is the last field");
}

#[test]
fn the_services_ap_rep_is_verified_once() {
    let mut w = world();
    let r = service_ticket(&mut w, true, &[]);
    assert_eq!(r.context_id.len(), 16);
    let auth = authenticator(&r.ap_req, &w.svc_key);
    let acceptor = Key::new(18, &[0x31; 32]).unwrap();
    let good = ap_rep(&w.svc_key, &auth.ctime, &auth.cusec, Some(&acceptor), Some(77));
    let ok = verify(&mut w, &r.context_id, messages_gss(&good), NOW + 1).unwrap();
    assert_eq!(ok.acceptor_subkey, alloc::vec![0x31; 32]);
    assert_eq!(ok.acceptor_subkey_enctype, 18);
    assert!(ok.has_seq_number);
    assert_eq!(ok.seq_number, 77);
    // Replayed: the context is spent.
    let e = verify(&mut w, &r.context_id, good, NOW + 1).unwrap_err();
    assert_eq!(e.code(), super::super::CODE_UNAUTHENTICATED);
}

/// The RFC 4121 token around an AP-REP (token id 02 00).
fn messages_gss(ap_rep: &[u8]) -> Vec<u8> {
    let mut t = messages::gss_initial_token(ap_rep);
    let at = t.len() - ap_rep.len() - 2;
    t[at] = 0x02;
    t
}

#[test]
fn a_wrong_ap_rep_is_refused() {
    let mut w = world();
    let wrong_key = Key::new(18, &[0x13; 32]).unwrap();
    let mut check = |make: &dyn Fn(&Authenticator) -> Vec<u8>, code: i32| {
        let r = service_ticket(&mut w, true, &[]);
        let auth = authenticator(&r.ap_req, &w.svc_key);
        let e = verify(&mut w, &r.context_id, make(&auth), NOW).unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        // Refused once, spent: even the right AP-REP is refused now.
        let good = ap_rep(&w.svc_key, &auth.ctime, &auth.cusec, None, None);
        assert!(verify(&mut w, &r.context_id, good, NOW).is_err());
    };
    let svc_key = Key::new(18, &[0x99; 32]).unwrap();
    use super::super::{CODE_INVALID_ARGUMENT, CODE_UNAUTHENTICATED};
    check(
        &|a| ap_rep(&wrong_key, &a.ctime, &a.cusec, None, None),
        CODE_UNAUTHENTICATED,
    );
    let other_time = KerberosTime(chrono::DateTime::from_timestamp(NOW + 5, 0).unwrap().fixed_offset());
    check(
        &|a| ap_rep(&svc_key, &other_time, &a.cusec, None, None),
        CODE_UNAUTHENTICATED,
    );
    check(
        &|a| ap_rep(&svc_key, &a.ctime, &(a.cusec.clone() + Integer::from(1)), None, None),
        CODE_UNAUTHENTICATED,
    );
    check(&|_| alloc::vec![0x30, 0x03, 0x02, 0x01], CODE_INVALID_ARGUMENT);
    check(&|_| alloc::vec![0x60, 0xff], CODE_INVALID_ARGUMENT);
    check(
        &|a| {
            let mut t = ap_rep(&svc_key, &a.ctime, &a.cusec, None, None);
            let n = t.len();
            t[n - 3] ^= 1;
            t
        },
        CODE_UNAUTHENTICATED,
    );
}

#[test]
fn unknown_expired_or_excess_contexts_are_refused() {
    let mut w = world();
    let r = service_ticket(&mut w, true, &[]);
    let auth = authenticator(&r.ap_req, &w.svc_key);
    let good = ap_rep(&w.svc_key, &auth.ctime, &auth.cusec, None, None);
    let e = verify(&mut w, &[0; 16], good.clone(), NOW).unwrap_err();
    assert_eq!(e.code(), super::super::CODE_UNAUTHENTICATED, "unknown context");
    let e = verify(&mut w, &r.context_id, good.clone(), NOW + AP_CONTEXT_TTL_SECS + 1).unwrap_err();
    assert_eq!(e.code(), super::super::CODE_UNAUTHENTICATED, "expired");
    // Bounded: the oldest gives way.
    let first = service_ticket(&mut w, true, &[]);
    let auth = authenticator(&first.ap_req, &w.svc_key);
    for _ in 0..MAX_AP_CONTEXTS {
        service_ticket(&mut w, true, &[]);
    }
    let good = ap_rep(&w.svc_key, &auth.ctime, &auth.cusec, None, None);
    assert!(verify(&mut w, &first.context_id, good, NOW).is_err());
    // Another session, or none: no context.
    let req = KerberosVerifyApRepRequest {
        session_handle: alloc::vec![1; SESSION_HANDLE_LEN],
        now_unix: NOW,
        context_id: first.context_id.clone(),
        ap_rep: Vec::new(),
    };
    assert_eq!(
        verify_ap_rep(&w.creds, &mut w.st, req).unwrap_err().code(),
        super::super::CODE_NOT_FOUND
    );
}

/// DER TLV (short or one-byte long form is enough here).
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = alloc::vec![tag];
    if body.len() < 0x80 {
        v.push(body.len() as u8);
    } else if body.len() < 0x100 {
        v.extend_from_slice(&[0x81, body.len() as u8]);
    } else {
        v.extend_from_slice(&[0x82, (body.len() >> 8) as u8, body.len() as u8]);
    }
    v.extend_from_slice(body);
    v
}

/// An SPNEGO negTokenResp with `state` and `token` as responseToken.
fn neg_token_resp(state: u8, token: &[u8]) -> Vec<u8> {
    let mut seq = tlv(0xa0, &[0x0a, 0x01, state]);
    seq.extend_from_slice(&tlv(0xa2, &tlv(0x04, token)));
    tlv(0xa1, &tlv(0x30, &seq))
}

#[test]
fn an_ap_rep_in_an_spnego_response_is_verified_and_a_rejection_is_refused() {
    let mut w = world();
    let r = service_ticket(&mut w, true, &[]);
    let auth = authenticator(&r.ap_req, &w.svc_key);
    let good = ap_rep(&w.svc_key, &auth.ctime, &auth.cusec, None, Some(5));
    let ok = verify(&mut w, &r.context_id, neg_token_resp(0, &messages_gss(&good)), NOW).unwrap();
    assert!(ok.acceptor_subkey.is_empty() && ok.seq_number == 5);
    let r = service_ticket(&mut w, true, &[]);
    let auth = authenticator(&r.ap_req, &w.svc_key);
    let good = ap_rep(&w.svc_key, &auth.ctime, &auth.cusec, None, None);
    let e = verify(&mut w, &r.context_id, neg_token_resp(2, &good), NOW).unwrap_err();
    assert_eq!(e.code(), super::super::CODE_UNAUTHENTICATED, "reject");
    let r = service_ticket(&mut w, true, &[]);
    let nested = neg_token_resp(0, &neg_token_resp(0, &good));
    let e = verify(&mut w, &r.context_id, nested, NOW).unwrap_err();
    assert_eq!(e.code(), super::super::CODE_INVALID_ARGUMENT);
}
