//! The Kerberos change-password protocol (RFC 3244 framing; MIT's kpasswd service in kadmind):
//! the request the enclave sends to change an expired password and the reply it reads.
//!
//! Version 0x0001 (change password): the KRB-PRIV's user-data is the new password itself, as
//! MIT's `kpasswd` sends it (RFC 3244's ChangePasswdData with a target is version 0xff80, for
//! setting another principal's password, which credguard never does). The request is
//!
//! ```text
//! message length (2) | version 0x0001 (2) | AP-REQ length (2) | AP-REQ | KRB-PRIV
//! ```
//!
//! with the AP-REQ for the `kadmin/changepw` ticket carrying a fresh subkey and sequence number,
//! and the KRB-PRIV encrypted under that subkey (key usage 13). The reply has the same framing
//! with an AP-REP (key usage 12, under the ticket's session key) and a KRB-PRIV whose user-data is
//! a 2-byte result code and a result string; or an AP-REP length of 0 and a KRB-ERROR.
//!
//! The new password appears only inside the KRB-PRIV's ciphertext.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rasn::types::{Integer, OctetString};
use rasn_kerberos::{
    ApOptions, ApRep, ApReq, Authenticator, EncApRepPart, EncKrbPrivPart, EncryptedData, EncryptionKey, HostAddress,
    KerberosTime, KrbError, KrbPriv, PrincipalName, Ticket,
};
use zeroize::Zeroizing;

use super::KerberosError;
use super::crypto::{self, Key};

/// The protocol version of a password change (RFC 3244 section 2; RFC 3244's set-password form is
/// 0xff80).
pub const VERSION_CHANGE: u16 = 0x0001;
/// Longest new password accepted, bytes (the message length is a 16-bit field; MIT's own limit
/// for a password is far below this).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest result string kept from the server's reply, characters.
const MAX_RESULT_STRING: usize = 200;

/// Key usage of a KRB-PRIV's encrypted part.
const USAGE_KRB_PRIV: u32 = 13;
/// Key usage of an AP-REQ authenticator.
const USAGE_AP_REQ_AUTH: u32 = 11;
/// Key usage of an AP-REP's encrypted part.
const USAGE_AP_REP: u32 = 12;

/// The sender's address in the KRB-PRIV (MIT's kadmind compares it with the address the request
/// came from): the proxy's end of its socket to the kpasswd server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderAddress {
    /// RFC 4120 address type: 2 (IPv4) or 24 (IPv6).
    pub addr_type: i32,
    /// The address bytes (4 or 16).
    pub address: Vec<u8>,
}

impl SenderAddress {
    /// An address from the proxy, checked: IPv4 (4 bytes) or IPv6 (16).
    pub fn new(address: &[u8]) -> Result<Self, KerberosError> {
        let addr_type = match address.len() {
            4 => 2,
            16 => 24,
            n => {
                return Err(KerberosError::InvalidArgument(format!(
                    "the sender address has {n} bytes: an IPv4 (4) or IPv6 (16) address is needed"
                )));
            }
        };
        Ok(SenderAddress {
            addr_type,
            address: address.to_vec(),
        })
    }
}

/// What a change request is made of. The caller chooses the random parts.
pub struct ChangeRequest<'a> {
    /// The client's realm.
    pub crealm: &'a str,
    /// The client's name, as the KDC returned it.
    pub cname: &'a PrincipalName,
    /// The `kadmin/changepw` ticket, DER.
    pub ticket: &'a [u8],
    /// That ticket's session key.
    pub session_key: &'a Key,
    /// A fresh random subkey (of the session key's enctype) for this exchange.
    pub subkey: &'a Key,
    /// A random sequence number (the KRB-PRIV's; the authenticator carries it too).
    pub seq: u32,
    /// The client's time, Unix seconds.
    pub now: i64,
    /// The new password.
    pub new_password: &'a [u8],
    /// The sender's address.
    pub sender: &'a SenderAddress,
}

fn encode_err(_: rasn::error::EncodeError) -> KerberosError {
    KerberosError::Internal("DER encoding failed".into())
}

fn bad(what: &str) -> KerberosError {
    KerberosError::InvalidArgument(format!("malformed {what} from the kpasswd server"))
}

fn time(unix: i64) -> Result<KerberosTime, KerberosError> {
    let t = chrono::DateTime::from_timestamp(unix, 0)
        .ok_or_else(|| KerberosError::InvalidArgument("time out of range".into()))?;
    Ok(KerberosTime(t.fixed_offset()))
}

fn realm(s: &str) -> Result<rasn::types::GeneralString, KerberosError> {
    rasn::types::GeneralString::from_bytes(s.as_bytes())
        .map_err(|_| KerberosError::InvalidArgument("a realm has characters Kerberos cannot carry".into()))
}

fn u16_len(n: usize, what: &str) -> Result<[u8; 2], KerberosError> {
    u16::try_from(n)
        .map(u16::to_be_bytes)
        .map_err(|_| KerberosError::InvalidArgument(format!("the {what} is too long for the kpasswd framing")))
}

/// The AP-REQ of a change request: the ticket, and an authenticator under its session key with
/// the subkey and sequence number.
fn ap_req(r: &ChangeRequest<'_>, conf: &[u8; 16]) -> Result<Vec<u8>, KerberosError> {
    let ticket: Ticket = rasn::der::decode(r.ticket).map_err(|_| bad("kadmin/changepw ticket"))?;
    let auth = Authenticator {
        authenticator_vno: Integer::from(5),
        crealm: realm(r.crealm)?,
        cname: r.cname.clone(),
        cksum: None,
        cusec: Integer::from(0),
        ctime: time(r.now)?,
        subkey: Some(EncryptionKey {
            r#type: r.subkey.enctype,
            value: OctetString::from(r.subkey.value.to_vec()),
        }),
        seq_number: Some(r.seq),
        authorization_data: None,
    };
    let auth_der = Zeroizing::new(rasn::der::encode(&auth).map_err(encode_err)?);
    let enc = crypto::encrypt(r.session_key, USAGE_AP_REQ_AUTH, &auth_der, conf)?;
    let ap = ApReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(14),
        ap_options: ApOptions(rasn::types::BitString::repeat(false, 32)),
        ticket,
        authenticator: EncryptedData {
            etype: r.session_key.enctype,
            kvno: None,
            cipher: OctetString::from(enc),
        },
    };
    rasn::der::encode(&ap).map_err(encode_err)
}

/// The KRB-PRIV carrying the new password, under the subkey.
fn krb_priv(r: &ChangeRequest<'_>, conf: &[u8; 16]) -> Result<Vec<u8>, KerberosError> {
    let part = EncKrbPrivPart {
        user_data: OctetString::from(r.new_password.to_vec()),
        timestamp: None,
        usec: None,
        seq_number: Some(r.seq),
        sender_address: HostAddress {
            addr_type: r.sender.addr_type,
            address: OctetString::from(r.sender.address.clone()),
        },
        recipient_address: None,
    };
    let plain = Zeroizing::new(rasn::der::encode(&part).map_err(encode_err)?);
    // `part` holds a copy of the password that cannot be wiped: rasn's OctetString gives no access
    // to its buffer. It is freed here, inside the enclave, as the decoded keys of KDC replies are.
    let enc = crypto::encrypt(r.subkey, USAGE_KRB_PRIV, &plain, conf)?;
    let p = KrbPriv {
        pvno: Integer::from(5),
        msg_type: Integer::from(21),
        enc_part: EncryptedData {
            etype: r.subkey.enctype,
            kvno: None,
            cipher: OctetString::from(enc),
        },
    };
    rasn::der::encode(&p).map_err(encode_err)
}

/// The whole change request, framed.
pub fn change_request(
    r: &ChangeRequest<'_>,
    conf_auth: [u8; 16],
    conf_priv: [u8; 16],
) -> Result<Vec<u8>, KerberosError> {
    if r.new_password.is_empty() || r.new_password.len() > MAX_PASSWORD_LEN {
        return Err(KerberosError::InvalidArgument(format!(
            "a new password has 1 to {MAX_PASSWORD_LEN} bytes"
        )));
    }
    let ap = ap_req(r, &conf_auth)?;
    let p = krb_priv(r, &conf_priv)?;
    let total = 6 + ap.len() + p.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u16_len(total, "request")?);
    out.extend_from_slice(&VERSION_CHANGE.to_be_bytes());
    out.extend_from_slice(&u16_len(ap.len(), "AP-REQ")?);
    out.extend_from_slice(&ap);
    out.extend_from_slice(&p);
    Ok(out)
}

/// The result of a change, from the server's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeResult {
    /// RFC 3244 result code (0: changed).
    pub code: u16,
    /// The server's result string (printable ASCII only, shortened).
    pub text: String,
}

/// Result code 0: the password was changed.
pub const RESULT_SUCCESS: u16 = 0;

/// What the server's result string says, kept to printable ASCII and [`MAX_RESULT_STRING`]
/// characters: it is shown to people and goes into logs.
fn result_text(bytes: &[u8]) -> String {
    bytes
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(MAX_RESULT_STRING)
        .map(|&b| char::from(b))
        .collect()
}

fn result_of(user_data: &[u8]) -> Result<ChangeResult, KerberosError> {
    let Some((code, text)) = user_data.split_first_chunk::<2>() else {
        return Err(bad("result (shorter than its 2-byte code)"));
    };
    Ok(ChangeResult {
        code: u16::from_be_bytes(*code),
        text: result_text(text),
    })
}

/// Reads the server's reply to a change request made with `session_key` and `subkey`. `Ok` has
/// the server's result (changed or not); `Err` is a reply that cannot be trusted or read.
pub fn change_reply(bytes: &[u8], session_key: &Key, subkey: &Key) -> Result<ChangeResult, KerberosError> {
    let Some((head, rest)) = bytes.split_first_chunk::<6>() else {
        return Err(bad("reply (shorter than its header)"));
    };
    let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
    let ap_len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if len != bytes.len() {
        return Err(bad("reply (its length field disagrees with its size)"));
    }
    if ap_len == 0 {
        // A KRB-ERROR instead: the request was refused before the server could answer privately;
        // MIT puts the result code and string in its e-data.
        return error_reply(rest);
    }
    let version = u16::from_be_bytes([head[2], head[3]]);
    if version != VERSION_CHANGE {
        return Err(bad("reply (unknown protocol version)"));
    }
    let (ap_rep, priv_der) = rest
        .split_at_checked(ap_len)
        .ok_or_else(|| bad("reply (AP-REP length beyond the message)"))?;
    let rep: ApRep = rasn::der::decode(ap_rep).map_err(|_| bad("AP-REP"))?;
    let rep_plain = crypto::decrypt(session_key, USAGE_AP_REP, &rep.enc_part.cipher)?;
    let rep_part: EncApRepPart = rasn::der::decode(&rep_plain).map_err(|_| bad("AP-REP encrypted part"))?;
    // A server may choose its own subkey (RFC 3244 section 2); MIT's keeps the client's.
    let server_subkey = match &rep_part.subkey {
        Some(k) => Some(Key::new(k.r#type, &k.value)?),
        None => None,
    };
    let key = server_subkey.as_ref().unwrap_or(subkey);
    let p: KrbPriv = rasn::der::decode(priv_der).map_err(|_| bad("KRB-PRIV"))?;
    let plain = crypto::decrypt(key, USAGE_KRB_PRIV, &p.enc_part.cipher)?;
    let part: EncKrbPrivPart = rasn::der::decode(&plain).map_err(|_| bad("KRB-PRIV encrypted part"))?;
    if part.seq_number != rep_part.seq_number {
        return Err(bad("KRB-PRIV (its sequence number is not the AP-REP's)"));
    }
    result_of(&part.user_data)
}

fn error_reply(der: &[u8]) -> Result<ChangeResult, KerberosError> {
    let e: KrbError = rasn::der::decode(der).map_err(|_| bad("KRB-ERROR"))?;
    match e.e_data.as_deref().map(result_of) {
        Some(Ok(r)) if r.code != RESULT_SUCCESS => Ok(r),
        // An error that says success, or says nothing readable: the Kerberos error is the answer.
        _ => Err(KerberosError::FailedPrecondition(format!(
            "the kpasswd server refused the request: Kerberos error {} ({})",
            e.error_code,
            super::messages::error_name(e.error_code)
        ))),
    }
}

/// The error a result other than success is.
pub fn result_error(r: &ChangeResult) -> KerberosError {
    let what = match r.code {
        1 => "malformed request",
        2 => "server error",
        3 => "authentication error",
        4 => "the new password was rejected (password policy)",
        5 => "access denied",
        6 => "bad protocol version",
        7 => "initial ticket required",
        _ => "unknown result",
    };
    let m = format!(
        "the kpasswd server did not change the password: {what} (result {}): {:?}",
        r.code, r.text
    );
    match r.code {
        3 | 5 | 7 => KerberosError::Unauthenticated(m),
        1 | 6 => KerberosError::InvalidArgument(m),
        2 => KerberosError::Unavailable(m),
        _ => KerberosError::FailedPrecondition(m),
    }
}

#[cfg(test)]
pub(crate) mod tests;
