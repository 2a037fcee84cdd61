//! FAST (RFC 6113) for the AS exchange: the request tunnelled under an armor key that comes from
//! the host's machine TGT, and the armored reply opened and checked.
//!
//! The armor is an AP-REQ with the machine TGT and a fresh subkey (KrbFastArmor type 1); the
//! armor key is KRB-FX-CF2(subkey, TGT session key, "subkeyarmor", "ticketarmor"). Inside the
//! tunnel the client's proof is PA-ENCRYPTED-CHALLENGE (RFC 6113 5.4.6), not PA-ENC-TIMESTAMP
//! (MIT's KDC offers only the former under FAST). A reply is used only if its KrbFastResponse
//! opens under the armor key, answers this request's nonce and (an AS-REP) carries a
//! KrbFastFinished whose ticket checksum matches: a KDC, or a proxy, that drops the armor gets
//! an error, never a silent fallback to an unarmored exchange.
//!
//! The ASN.1 types are not in `rasn-kerberos` 0.30: they are derived here from RFC 6113 6
//! (EXPLICIT TAGS).

use alloc::format;
use alloc::vec::Vec;

use rasn::types::{Integer, OctetString};
use rasn_kerberos::{ApOptions, ApReq, AsReq, Authenticator, Checksum, EncryptedData, PaData, PaEncTsEnc, Ticket};

use super::KerberosError;
use super::crypto::{self, Key};
use super::messages::{self, KrbErr, RepParts, bad, encode_err, flags32, kstring, time};

/// PA-FX-FAST: the armored request, or the armored reply, or (empty, in a METHOD-DATA) the KDC's
/// offer of FAST.
pub const PA_FX_FAST: i32 = 136;
/// PA-FX-ERROR: the real KRB-ERROR inside a KrbFastResponse.
const PA_FX_ERROR: i32 = 137;
/// PA-ENCRYPTED-CHALLENGE.
const PA_ENCRYPTED_CHALLENGE: i32 = 138;
/// KrbFastArmor type FX_FAST_ARMOR_AP_REQUEST.
const ARMOR_AP_REQUEST: i32 = 1;
/// RFC 6113 key usages.
const USAGE_REQ_CHECKSUM: u32 = 50;
const USAGE_ENC_FAST_REQ: u32 = 51;
const USAGE_FAST_REP: u32 = 52;
const USAGE_FINISHED: u32 = 53;
const USAGE_CHALLENGE_CLIENT: u32 = 54;
/// AP-REQ authenticator (RFC 4120 7.5.1).
const USAGE_AP_REQ_AUTH: u32 = 11;

/// The RFC 6113 types, derived with rasn (its derive expects its prelude in scope).
pub(super) mod asn {
    use alloc::vec::Vec;
    use rasn::prelude::*;
    use rasn_kerberos::{Checksum, EncryptedData, EncryptionKey, KdcReqBody, KerberosFlags, KerberosTime, PaData};
    use rasn_kerberos::{PrincipalName, Realm};

    /// KrbFastArmor.
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    pub struct KrbFastArmor {
        #[rasn(tag(explicit(0)))]
        pub armor_type: i32,
        #[rasn(tag(explicit(1)))]
        pub armor_value: OctetString,
    }

    /// KrbFastArmoredReq.
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    pub struct KrbFastArmoredReq {
        #[rasn(tag(explicit(0)))]
        pub armor: Option<KrbFastArmor>,
        #[rasn(tag(explicit(1)))]
        pub req_checksum: Checksum,
        #[rasn(tag(explicit(2)))]
        pub enc_fast_req: EncryptedData,
    }

    /// PA-FX-FAST-REQUEST (only armored-data is defined).
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    #[rasn(choice)]
    pub enum PaFxFastRequest {
        #[rasn(tag(explicit(0)))]
        ArmoredData(KrbFastArmoredReq),
    }

    /// KrbFastReq.
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    pub struct KrbFastReq {
        #[rasn(tag(explicit(0)))]
        pub fast_options: KerberosFlags,
        #[rasn(tag(explicit(1)))]
        pub padata: Vec<PaData>,
        #[rasn(tag(explicit(2)))]
        pub req_body: KdcReqBody,
    }

    /// KrbFastArmoredRep.
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    pub struct KrbFastArmoredRep {
        #[rasn(tag(explicit(0)))]
        pub enc_fast_rep: EncryptedData,
    }

    /// PA-FX-FAST-REPLY (only armored-data is defined).
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    #[rasn(choice)]
    pub enum PaFxFastReply {
        #[rasn(tag(explicit(0)))]
        ArmoredData(KrbFastArmoredRep),
    }

    /// KrbFastFinished.
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    pub struct KrbFastFinished {
        #[rasn(tag(explicit(0)))]
        pub timestamp: KerberosTime,
        #[rasn(tag(explicit(1)))]
        pub usec: Integer,
        #[rasn(tag(explicit(2)))]
        pub crealm: Realm,
        #[rasn(tag(explicit(3)))]
        pub cname: PrincipalName,
        #[rasn(tag(explicit(4)))]
        pub ticket_checksum: Checksum,
    }

    /// KrbFastResponse.
    #[derive(AsnType, Encode, Decode, Clone, Debug)]
    pub struct KrbFastResponse {
        #[rasn(tag(explicit(0)))]
        pub padata: Vec<PaData>,
        #[rasn(tag(explicit(1)))]
        pub strengthen_key: Option<EncryptionKey>,
        #[rasn(tag(explicit(2)))]
        pub finished: Option<KrbFastFinished>,
        #[rasn(tag(explicit(3)))]
        pub nonce: u32,
    }
}
#[cfg(test)]
use asn::KrbFastFinished;
use asn::{KrbFastArmor, KrbFastResponse, PaFxFastReply, PaFxFastRequest};

/// A realm's FAST policy (`[kerberos.realms."R"] fast`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FastMode {
    /// Never armor.
    Off,
    /// Armor when the KDC's PREAUTH_REQUIRED offers FAST and the realm has a machine credential.
    #[default]
    IfOffered,
    /// Always armor; no machine credential, or a reply without armor, is an error.
    Require,
}

impl FastMode {
    /// From the enclave protocol's number (0 if-offered, 1 off, 2 require); anything else is
    /// refused.
    pub fn from_wire(v: i32) -> Result<Self, KerberosError> {
        match v {
            0 => Ok(FastMode::IfOffered),
            1 => Ok(FastMode::Off),
            2 => Ok(FastMode::Require),
            _ => Err(KerberosError::InvalidArgument(format!("unknown FAST mode {v}"))),
        }
    }
}

/// The machine TGT an armor is made of, with what its AP-REQ's authenticator names.
pub struct ArmorTicket<'a> {
    /// The ticket, DER.
    pub ticket: &'a [u8],
    /// Its session key.
    pub session_key: &'a Key,
    /// The machine account's realm.
    pub crealm: &'a str,
    /// The machine account's name.
    pub cname: &'a rasn_kerberos::PrincipalName,
}

/// One AS exchange's armor: the KrbFastArmor (AP-REQ with the machine TGT) and the armor key.
/// Never leaves the enclave except as the armor AP-REQ (whose subkey is encrypted).
pub struct Armor {
    /// The armor key.
    pub key: Key,
    /// The armor AP-REQ, DER.
    ap_req: Vec<u8>,
}

impl Armor {
    /// The armor of `tgt` with the fresh random `subkey` (of the TGT session key's enctype).
    pub fn new(tgt: &ArmorTicket<'_>, subkey: Key, now: i64, conf: [u8; 16]) -> Result<Self, KerberosError> {
        let ticket: Ticket =
            rasn::der::decode(tgt.ticket).map_err(|_| KerberosError::Internal("stored TGT does not decode".into()))?;
        let auth = Authenticator {
            authenticator_vno: Integer::from(5),
            crealm: kstring(tgt.crealm)?,
            cname: tgt.cname.clone(),
            cksum: None,
            cusec: Integer::from(0),
            ctime: time(now)?,
            subkey: Some(rasn_kerberos::EncryptionKey {
                r#type: subkey.enctype,
                value: OctetString::from(subkey.value.to_vec()),
            }),
            seq_number: None,
            authorization_data: None,
        };
        let auth_der = zeroize::Zeroizing::new(rasn::der::encode(&auth).map_err(encode_err)?);
        let enc = crypto::encrypt(tgt.session_key, USAGE_AP_REQ_AUTH, &auth_der, &conf)?;
        let ap = ApReq {
            pvno: Integer::from(5),
            msg_type: Integer::from(14),
            ap_options: ApOptions(flags32(&[])),
            ticket,
            authenticator: EncryptedData {
                etype: tgt.session_key.enctype,
                kvno: None,
                cipher: OctetString::from(enc),
            },
        };
        let key = crypto::cf2(&subkey, tgt.session_key, b"subkeyarmor", b"ticketarmor")?;
        Ok(Armor {
            key,
            ap_req: rasn::der::encode(&ap).map_err(encode_err)?,
        })
    }
}

/// The client's proof inside the tunnel: PA-ENCRYPTED-CHALLENGE, the time under
/// KRB-FX-CF2(armor key, long-term key, "clientchallengearmor", "challengelongterm").
fn encrypted_challenge(armor: &Armor, long_term: &Key, now: i64, conf: [u8; 16]) -> Result<PaData, KerberosError> {
    let ts = PaEncTsEnc {
        patimestamp: time(now)?,
        pausec: Some(Integer::from(0)),
    };
    let plain = rasn::der::encode(&ts).map_err(encode_err)?;
    let key = crypto::cf2(&armor.key, long_term, b"clientchallengearmor", b"challengelongterm")?;
    let enc = EncryptedData {
        etype: key.enctype,
        kvno: None,
        cipher: OctetString::from(crypto::encrypt(&key, USAGE_CHALLENGE_CLIENT, &plain, &conf)?),
    };
    Ok(PaData {
        r#type: PA_ENCRYPTED_CHALLENGE,
        value: OctetString::from(rasn::der::encode(&enc).map_err(encode_err)?),
    })
}

/// Armors `plain`, an AS-REQ without padata (from [`messages::as_req`]): its body goes inside
/// the KrbFastReq (with PA-ENCRYPTED-CHALLENGE under `proof`'s key, which also narrows the
/// offered enctypes to that key's), and stays outside too, covered by the req-checksum.
pub fn armor_as_req(
    plain: &[u8],
    armor: &Armor,
    proof: Option<(&Key, i64)>,
    confs: [[u8; 16]; 2],
) -> Result<Vec<u8>, KerberosError> {
    let AsReq(mut req) =
        rasn::der::decode(plain).map_err(|_| KerberosError::Internal("AS-REQ does not decode".into()))?;
    let mut inner = Vec::new();
    if let Some((key, now)) = proof {
        req.req_body.etype = alloc::vec![key.enctype];
        inner.push(encrypted_challenge(armor, key, now, confs[0])?);
    }
    let fast_req = asn::KrbFastReq {
        fast_options: flags32(&[]),
        padata: inner,
        req_body: req.req_body.clone(),
    };
    let fast_der = zeroize::Zeroizing::new(rasn::der::encode(&fast_req).map_err(encode_err)?);
    let body_der = rasn::der::encode(&req.req_body).map_err(encode_err)?;
    let armored = asn::KrbFastArmoredReq {
        armor: Some(KrbFastArmor {
            armor_type: ARMOR_AP_REQUEST,
            armor_value: OctetString::from(armor.ap_req.clone()),
        }),
        req_checksum: Checksum {
            r#type: crypto::checksum_type(armor.key.enctype)?,
            checksum: OctetString::from(crypto::checksum(&armor.key, USAGE_REQ_CHECKSUM, &body_der)?),
        },
        enc_fast_req: EncryptedData {
            etype: armor.key.enctype,
            kvno: None,
            cipher: OctetString::from(crypto::encrypt(&armor.key, USAGE_ENC_FAST_REQ, &fast_der, &confs[1])?),
        },
    };
    let pa = PaData {
        r#type: PA_FX_FAST,
        value: OctetString::from(rasn::der::encode(&PaFxFastRequest::ArmoredData(armored)).map_err(encode_err)?),
    };
    req.padata = Some(alloc::vec![pa]);
    rasn::der::encode(&AsReq(req)).map_err(encode_err)
}

/// Whether a KRB-ERROR's METHOD-DATA offers FAST (an empty PA-FX-FAST, RFC 6113 5.4.2).
pub fn offered(e: &KrbErr) -> bool {
    e.e_data
        .as_deref()
        .and_then(|d| rasn::der::decode::<Vec<PaData>>(d).ok())
        .is_some_and(|m| m.iter().any(|p| p.r#type == PA_FX_FAST))
}

fn unarmored(what: &str) -> KerberosError {
    KerberosError::Unauthenticated(format!(
        "the KDC's {what} to an armored (FAST) AS-REQ is not armored: refused (a KDC or proxy that strips FAST \
         gets no unarmored fallback)"
    ))
}

/// Opens a PA-FX-FAST reply value under the armor key and checks it answers `nonce`.
fn open_response(armor: &Armor, value: &[u8], nonce: u32) -> Result<KrbFastResponse, KerberosError> {
    let PaFxFastReply::ArmoredData(rep) = rasn::der::decode(value).map_err(|_| bad("PA-FX-FAST reply"))?;
    let plain = crypto::decrypt(&armor.key, USAGE_FAST_REP, &rep.enc_fast_rep.cipher).map_err(|_| {
        KerberosError::Unauthenticated("the KDC's FAST response does not open under the armor key".into())
    })?;
    let resp: KrbFastResponse = rasn::der::decode(&plain).map_err(|_| bad("KrbFastResponse"))?;
    if resp.nonce != nonce {
        return Err(KerberosError::InvalidArgument(
            "the KDC's FAST response does not answer this request (nonce mismatch)".into(),
        ));
    }
    Ok(resp)
}

/// The real error inside an armored KRB-ERROR (its PA-FX-ERROR), with the FAST response's
/// padata (ETYPE-INFO2 and the like) as its e-data, as METHOD-DATA.
pub fn open_error(armor: &Armor, e: &KrbErr, nonce: u32) -> Result<KrbErr, KerberosError> {
    let method: Vec<PaData> = e
        .e_data
        .as_deref()
        .and_then(|d| rasn::der::decode(d).ok())
        .unwrap_or_default();
    let Some(fx) = method.iter().find(|p| p.r#type == PA_FX_FAST && !p.value.is_empty()) else {
        return Err(unarmored(&format!(
            "error {} ({})",
            e.code,
            messages::error_name(e.code)
        )));
    };
    let resp = open_response(armor, &fx.value, nonce)?;
    let inner = resp
        .padata
        .iter()
        .find(|p| p.r#type == PA_FX_ERROR)
        .ok_or_else(|| bad("FAST error response (no PA-FX-ERROR)"))?;
    let messages::KdcReply::Error(mut real) = messages::parse_kdc_reply(&inner.value)? else {
        return Err(bad("PA-FX-ERROR (not a KRB-ERROR)"));
    };
    let rest: Vec<PaData> = resp.padata.into_iter().filter(|p| p.r#type != PA_FX_ERROR).collect();
    real.e_data = Some(rasn::der::encode(&rest).map_err(encode_err)?);
    Ok(real)
}

/// Checks an armored AS-REP: its FAST response opens, answers `nonce`, and its
/// KrbFastFinished names the reply's client and checksums its ticket (key usage 53). Returns
/// the strengthen key, if the KDC sent one.
pub fn check_rep(armor: &Armor, rep: &RepParts, nonce: u32) -> Result<Option<Key>, KerberosError> {
    let value = rep.fast.as_deref().ok_or_else(|| unarmored("AS-REP"))?;
    let resp = open_response(armor, value, nonce)?;
    let finished = resp
        .finished
        .ok_or_else(|| KerberosError::Unauthenticated("the KDC's armored AS-REP has no KrbFastFinished".into()))?;
    let expected = crypto::checksum(&armor.key, USAGE_FINISHED, &rep.ticket)?;
    let good_type = finished.ticket_checksum.r#type == crypto::checksum_type(armor.key.enctype)?;
    let same = subtle::ConstantTimeEq::ct_eq(expected.as_slice(), &finished.ticket_checksum.checksum[..]);
    if !good_type || !bool::from(same) {
        return Err(KerberosError::Unauthenticated(
            "the KDC's armored AS-REP: the KrbFastFinished ticket checksum does not match".into(),
        ));
    }
    let realm = core::str::from_utf8(finished.crealm.as_bytes()).unwrap_or_default();
    if !realm.eq_ignore_ascii_case(&rep.crealm) || !messages::same_principal(&finished.cname, &rep.cname_pn) {
        return Err(KerberosError::InvalidArgument(
            "the KDC's armored AS-REP names another client in its KrbFastFinished".into(),
        ));
    }
    resp.strengthen_key
        .map(|k| Key::new(k.r#type, &k.value))
        .transpose()
        .map_err(KerberosError::from)
}

/// The key an armored AS-REP is encrypted in: the long-term key, strengthened with the FAST
/// response's strengthen key when there is one (RFC 6113 5.4.3).
pub fn reply_key(strengthen: Option<&Key>, long_term: Key) -> Result<Key, KerberosError> {
    match strengthen {
        Some(s) => Ok(crypto::cf2(s, &long_term, b"strengthenkey", b"replykey")?),
        None => Ok(long_term),
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
