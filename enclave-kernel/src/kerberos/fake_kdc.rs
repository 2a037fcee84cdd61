//! The KDC's side of the messages, for tests: a hostile or scripted KDC builds its replies here.
//!
//! Compiled only for the enclave's own unit tests and, with the `fake-kdc` feature, for the
//! host's end-to-end tests (`tests/support/fake_kdc.rs`); never into the enclave image. It is a
//! mock where the real part cannot play the attacker: a genuine MIT KDC never forges an
//! ETYPE-INFO2 or hands out a TGT under a service's name.

use alloc::string::String;
use alloc::vec::Vec;

use rasn::types::{GeneralString, Integer, OctetString};
use rasn_kerberos::{
    AsRep, AsReq, EncAsRepPart, EncKdcRepPart, EncTgsRepPart, EncryptedData, EncryptionKey, EtypeInfo2Entry, KdcRep,
    KerberosTime, KrbError, PaData, PrincipalName, TgsRep, TgsReq, Ticket, TicketFlags,
};

use super::crypto::{self, Key};

fn gs(s: &str) -> GeneralString {
    GeneralString::from_bytes(s.as_bytes()).expect("test names are printable ASCII")
}

fn kt(unix: i64) -> KerberosTime {
    let t = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    KerberosTime(t.fixed_offset())
}

fn name(ty: i32, parts: &[&str]) -> PrincipalName {
    PrincipalName {
        r#type: ty,
        string: parts.iter().map(|p| gs(p)).collect(),
    }
}

fn text(g: &GeneralString) -> String {
    String::from_utf8_lossy(g.as_bytes()).into_owned()
}

/// What a fake KDC needs from an AS-REQ or TGS-REQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestView {
    /// A TGS-REQ (else an AS-REQ).
    pub tgs: bool,
    /// The request's nonce.
    pub nonce: u32,
    /// The client name's components (AS-REQ; empty for a TGS-REQ).
    pub cname: Vec<String>,
    /// The service name's components.
    pub sname: Vec<String>,
    /// The enctypes the client offers, in its order.
    pub etypes: Vec<i32>,
    /// Whether it carries PA-ENC-TIMESTAMP (AS-REQ), and in which enctype.
    pub enc_timestamp_etype: Option<i32>,
    /// The PA-ENC-TIMESTAMP's ciphertext (key usage 1), to check it under the client's key.
    pub enc_timestamp: Vec<u8>,
    /// The request body's realm (the server's: the realm whose KDC it is for).
    pub realm: String,
    /// Whether the canonicalize option (bit 15) is set.
    pub canonicalize: bool,
    /// TGS-REQ: the service and realm its TGT names (`krbtgt`, then the realm it is for; the
    /// issuing realm last), from the PA-TGS-REQ.
    pub tgt_sname: Vec<String>,
}

/// Whether `view`'s PA-ENC-TIMESTAMP decrypts under `user_key` (what a real KDC checks).
pub fn timestamp_opens(view: &RequestView, user_key: &Key) -> bool {
    view.enc_timestamp_etype == Some(user_key.enctype) && crypto::decrypt(user_key, 1, &view.enc_timestamp).is_ok()
}

/// Reads an AS-REQ or TGS-REQ; `None` for anything else.
pub fn parse_request(bytes: &[u8]) -> Option<RequestView> {
    let (tgs, req) = match bytes.first()? {
        0x6a => (false, rasn::der::decode::<AsReq>(bytes).ok()?.0),
        0x6c => (true, rasn::der::decode::<TgsReq>(bytes).ok()?.0),
        _ => return None,
    };
    let parts = |p: &Option<PrincipalName>| {
        p.as_ref()
            .map(|p| p.string.iter().map(text).collect())
            .unwrap_or_default()
    };
    let enc_timestamp = req
        .padata
        .iter()
        .flatten()
        .find(|p| p.r#type == 2)
        .and_then(|p| rasn::der::decode::<EncryptedData>(&p.value).ok());
    let tgt_sname = req
        .padata
        .iter()
        .flatten()
        .find(|p| p.r#type == 1)
        .and_then(|p| rasn::der::decode::<rasn_kerberos::ApReq>(&p.value).ok())
        .map(|ap| {
            let mut v: Vec<String> = ap.ticket.sname.string.iter().map(text).collect();
            v.push(text(&ap.ticket.realm));
            v
        })
        .unwrap_or_default();
    Some(RequestView {
        realm: text(&req.req_body.realm),
        canonicalize: req.req_body.kdc_options.0.get(15).is_some_and(|b| *b),
        tgt_sname,
        tgs,
        nonce: req.req_body.nonce,
        cname: parts(&req.req_body.cname),
        sname: parts(&req.req_body.sname),
        etypes: req.req_body.etype.clone(),
        enc_timestamp_etype: enc_timestamp.as_ref().map(|e| e.etype),
        enc_timestamp: enc_timestamp.map(|e| e.cipher.to_vec()).unwrap_or_default(),
    })
}

/// A KRB-ERROR with `code` from the KDC of `realm`, at `now`.
pub fn krb_error(realm: &str, code: i32, now: i64, e_data: Option<Vec<u8>>) -> Vec<u8> {
    let e = KrbError {
        pvno: Integer::from(5),
        msg_type: Integer::from(30),
        ctime: None,
        cusec: None,
        stime: kt(now),
        susec: Integer::from(0),
        error_code: code,
        crealm: None,
        cname: None,
        realm: gs(realm),
        sname: name(2, &["krbtgt", realm]),
        e_text: None,
        e_data: e_data.map(OctetString::from),
    };
    rasn::der::encode(&e).unwrap_or_default()
}

/// KDC_ERR_WRONG_REALM from the KDC of `realm`: a client referral to `crealm` (RFC 6806 4).
pub fn wrong_realm(realm: &str, crealm: &str, now: i64) -> Vec<u8> {
    let Ok(mut e) = rasn::der::decode::<KrbError>(&krb_error(realm, 68, now, None)) else {
        return Vec::new();
    };
    e.crealm = Some(gs(crealm));
    rasn::der::encode(&e).unwrap_or_default()
}

/// One ETYPE-INFO2 entry: enctype, salt, and a PBKDF2 iteration count (`None`: no s2kparams).
pub type EtypeInfoEntry<'a> = (i32, &'a str, Option<u32>);

/// KDC_ERR_PREAUTH_REQUIRED with an ETYPE-INFO2 of `entries`.
pub fn preauth_required(realm: &str, now: i64, entries: &[EtypeInfoEntry<'_>]) -> Vec<u8> {
    let info: Vec<EtypeInfo2Entry> = entries
        .iter()
        .map(|(etype, salt, iterations)| EtypeInfo2Entry {
            etype: *etype,
            salt: Some(gs(salt)),
            s2kparams: iterations.map(|i| OctetString::from(i.to_be_bytes().to_vec())),
        })
        .collect();
    let pa = alloc::vec![PaData {
        r#type: 19,
        value: OctetString::from(rasn::der::encode(&info).unwrap_or_default()),
    }];
    krb_error(realm, 25, now, Some(rasn::der::encode(&pa).unwrap_or_default()))
}

/// A reply's facts, as a fake KDC chooses them.
pub struct Issue<'a> {
    /// Realm of client and service.
    pub realm: &'a str,
    /// The client's name components.
    pub cname: &'a [&'a str],
    /// The service's name components, in the ticket and in the encrypted part.
    pub sname: &'a [&'a str],
    /// The request's nonce.
    pub nonce: u32,
    /// The new ticket's session key.
    pub session_key: &'a Key,
    /// Issue time (and start), Unix seconds; the ticket lasts 10 hours.
    pub now: i64,
    /// Bytes of the ticket's (opaque) encrypted part: real ones are a few hundred to a few
    /// thousand; a hostile KDC may send more.
    pub ticket_cipher_len: usize,
}

fn ticket(issue: &Issue<'_>) -> Ticket {
    Ticket {
        tkt_vno: Integer::from(5),
        realm: gs(issue.realm),
        sname: name(2, issue.sname),
        enc_part: EncryptedData {
            etype: crypto::AES256_SHA1,
            kvno: Some(1),
            cipher: OctetString::from(alloc::vec![0x5a; issue.ticket_cipher_len]),
        },
    }
}

fn enc_part(issue: &Issue<'_>) -> EncKdcRepPart {
    EncKdcRepPart {
        key: EncryptionKey {
            r#type: issue.session_key.enctype,
            value: OctetString::from(issue.session_key.value.to_vec()),
        },
        last_req: Vec::new(),
        nonce: issue.nonce,
        key_expiration: None,
        flags: TicketFlags(rasn::types::BitString::repeat(false, 32)),
        auth_time: kt(issue.now),
        start_time: Some(kt(issue.now)),
        end_time: kt(issue.now + 10 * 3600),
        renew_till: None,
        srealm: gs(issue.realm),
        sname: name(2, issue.sname),
        caddr: None,
        encrypted_pa_data: None,
    }
}

fn kdc_rep(issue: &Issue<'_>, reply_key: &Key, cipher: Vec<u8>) -> KdcRep {
    KdcRep {
        pvno: Integer::from(5),
        msg_type: Integer::from(0),
        padata: None,
        crealm: gs(issue.realm),
        cname: name(1, issue.cname),
        ticket: ticket(issue),
        enc_part: EncryptedData {
            etype: reply_key.enctype,
            kvno: None,
            cipher: OctetString::from(cipher),
        },
    }
}

/// An AS-REP, its encrypted part under the client's `user_key` (key usage 3).
pub fn as_rep(issue: &Issue<'_>, user_key: &Key) -> Vec<u8> {
    let plain = rasn::der::encode(&EncAsRepPart(enc_part(issue))).unwrap_or_default();
    let cipher = crypto::encrypt(user_key, 3, &plain, &[0x33; 16]).unwrap_or_default();
    let mut rep = kdc_rep(issue, user_key, cipher);
    rep.msg_type = Integer::from(11);
    rasn::der::encode(&AsRep(rep)).unwrap_or_default()
}

/// A TGS-REP, its encrypted part under the TGT's session key `tgt_key` (key usage 8).
pub fn tgs_rep(issue: &Issue<'_>, tgt_key: &Key) -> Vec<u8> {
    cross_tgs_rep(issue, issue.realm, tgt_key)
}

/// A TGS-REP from the KDC of `issue.realm` (the ticket's and the service's realm) for a client
/// of `crealm` (another realm's, after a referral), under `tgt_key` (key usage 8).
pub fn cross_tgs_rep(issue: &Issue<'_>, crealm: &str, tgt_key: &Key) -> Vec<u8> {
    let plain = rasn::der::encode(&EncTgsRepPart(enc_part(issue))).unwrap_or_default();
    let cipher = crypto::encrypt(tgt_key, 8, &plain, &[0x44; 16]).unwrap_or_default();
    let mut rep = kdc_rep(issue, tgt_key, cipher);
    rep.msg_type = Integer::from(13);
    rep.crealm = gs(crealm);
    rasn::der::encode(&TgsRep(rep)).unwrap_or_default()
}
