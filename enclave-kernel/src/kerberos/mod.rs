//! Kerberos inside the enclave: the long-term keys, the TGT and its session key never leave.
//!
//! The proxy does all networking and gives the time: each call is one step of an exchange, taking
//! the KDC's reply to the previous step and returning the next request for the KDC, or the
//! outcome. What comes out is what Credential Guard lets out: protocol messages, the service
//! ticket and its session key, and facts about the TGT.
//!
//! Rules enforced here whatever the caller asks: DES never; rc4-hmac only when the proxy's
//! configuration allows it; never a forwarded TGT, never the delegation flag.

pub mod crypto;
// Visible to `crate::fuzz`, whose targets decode KDC replies.
pub(crate) mod messages;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::enclave::{KerberosAsReply, KerberosAsRequest, KerberosTgsReply, KerberosTgsRequest};
use prost::Message;
use rand_core::TryCryptoRng;

use crate::credentials::{CredentialStore, KerberosKey, SessionHandle};
use crypto::{CryptoError, Key};
use messages::{KdcReply, TicketInfo};

/// gRPC code INVALID_ARGUMENT.
const CODE_INVALID_ARGUMENT: i32 = 3;
/// gRPC code NOT_FOUND.
const CODE_NOT_FOUND: i32 = 5;
/// gRPC code FAILED_PRECONDITION.
const CODE_FAILED_PRECONDITION: i32 = 9;
/// gRPC code INTERNAL.
const CODE_INTERNAL: i32 = 13;
/// gRPC code UNAVAILABLE.
const CODE_UNAVAILABLE: i32 = 14;
/// gRPC code UNAUTHENTICATED.
const CODE_UNAUTHENTICATED: i32 = 16;

/// The message prefix of the refusal to use a session without a valid TGT; the proxy reacts to
/// it by running an AS exchange first.
pub const NO_TGT_MESSAGE: &str = "no valid TGT in this session";

/// Why a Kerberos step failed. Messages name the rule or the KDC's error, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KerberosError {
    /// Malformed request or KDC message.
    InvalidArgument(String),
    /// No such session, or the KDC does not know a principal.
    NotFound(String),
    /// The KDC refused the password or key.
    Unauthenticated(String),
    /// Refused by rule, or the session is in the wrong state.
    FailedPrecondition(String),
    /// The KDC is not answering usefully (e.g. repeated clock skew); retrying later may help.
    Unavailable(String),
    /// The enclave itself failed (e.g. its random source).
    Internal(String),
}

impl KerberosError {
    /// Its gRPC code.
    pub fn code(&self) -> i32 {
        match self {
            KerberosError::InvalidArgument(_) => CODE_INVALID_ARGUMENT,
            KerberosError::NotFound(_) => CODE_NOT_FOUND,
            KerberosError::Unauthenticated(_) => CODE_UNAUTHENTICATED,
            KerberosError::FailedPrecondition(_) => CODE_FAILED_PRECONDITION,
            KerberosError::Unavailable(_) => CODE_UNAVAILABLE,
            KerberosError::Internal(_) => CODE_INTERNAL,
        }
    }

    /// Its message.
    pub fn message(self) -> String {
        match self {
            KerberosError::InvalidArgument(m)
            | KerberosError::NotFound(m)
            | KerberosError::Unauthenticated(m)
            | KerberosError::FailedPrecondition(m)
            | KerberosError::Unavailable(m)
            | KerberosError::Internal(m) => m,
        }
    }
}

impl From<CryptoError> for KerberosError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Des(_) | CryptoError::Rc4NotAllowed | CryptoError::Unsupported(_) => {
                KerberosError::FailedPrecondition(format!("{e}"))
            }
            CryptoError::Integrity => {
                KerberosError::Unauthenticated("a KDC reply did not decrypt: wrong password or key".into())
            }
            CryptoError::KeyLength | CryptoError::Params => KerberosError::InvalidArgument(format!("{e}")),
        }
    }
}

/// A TGT and its session key, as held for a session.
struct Tgt {
    /// The ticket, DER (wiped when dropped: a TGT is as good as its session key to whoever has both).
    ticket: zeroize::Zeroizing<Vec<u8>>,
    /// Its session key.
    key: Key,
    info: TicketInfo,
}

/// An exchange waiting for the KDC's reply.
struct Pending {
    nonce: u32,
    /// Whether the request carried PA-ENC-TIMESTAMP (AS) — a second PREAUTH_REQUIRED then is an error.
    preauth: bool,
    /// Whether a clock-skew retry was made already.
    skew_retried: bool,
}

/// What the enclave keeps about Kerberos for one logon session.
#[derive(Default)]
struct SessionState {
    /// KDC time minus host time, seconds (learnt from KRB_AP_ERR_SKEW).
    clock_offset: i64,
    pending_as: Option<Pending>,
    pending_tgs: Option<(Pending, String, bool)>,
    tgt: Option<Tgt>,
}

/// Kerberos state of every session.
#[derive(Default)]
pub struct KerberosSessions {
    sessions: BTreeMap<SessionHandle, SessionState>,
}

/// A TGT closer than this to its end is not used: the proxy gets a new one first (renewal before
/// expiry). Tickets shorter than twice this use half their lifetime instead.
const TGT_RENEW_MARGIN_SECS: i64 = 300;

/// Whether `info`'s ticket is still good for use at `now`.
fn fresh(info: &TicketInfo, now: i64) -> bool {
    let lifetime = info.end_time.saturating_sub(info.start_time).max(0);
    let margin = TGT_RENEW_MARGIN_SECS.min(lifetime / 2);
    info.end_time.saturating_sub(margin) > now
}

impl KerberosSessions {
    /// No state yet.
    pub const fn new() -> Self {
        Self {
            sessions: BTreeMap::new(),
        }
    }

    /// Forgets (and wipes) the Kerberos state of `handle`.
    pub fn forget_session(&mut self, handle: &[u8]) {
        if let Ok(h) = SessionHandle::try_from(handle) {
            self.sessions.remove(&h);
        }
    }
}

fn random_u32<R: TryCryptoRng>(rng: &mut R) -> Result<u32, KerberosError> {
    let mut b = [0u8; 4];
    rng.try_fill_bytes(&mut b)
        .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
    // Nonces are 31-bit: some KDCs treat them as signed.
    Ok(u32::from_be_bytes(b) & 0x7fff_ffff)
}

fn confounder<R: TryCryptoRng>(rng: &mut R) -> Result<[u8; 16], KerberosError> {
    let mut c = [0u8; 16];
    rng.try_fill_bytes(&mut c)
        .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
    Ok(c)
}

/// `KerberosAs`: one step of the AS exchange; `payload` is a `KerberosAsRequest`.
pub fn as_step<R: TryCryptoRng>(
    creds: &mut CredentialStore,
    state: &mut KerberosSessions,
    rng: &mut R,
    payload: &[u8],
) -> Result<Vec<u8>, KerberosError> {
    let req = KerberosAsRequest::decode(payload)
        .map_err(|_| KerberosError::InvalidArgument("payload is not a KerberosAsRequest".into()))?;
    let handle = SessionHandle::try_from(req.session_handle.as_slice())
        .map_err(|_| KerberosError::NotFound("no such session in this enclave".into()))?;
    let cred = creds
        .get_mut(&handle)
        .ok_or_else(|| KerberosError::NotFound("no such session in this enclave".into()))?;
    if cred.realm.is_empty() {
        return Err(KerberosError::FailedPrecondition(
            "the session has no Kerberos realm (log on with a realm)".into(),
        ));
    }
    let st = state.sessions.entry(handle).or_default();
    let client = messages::Client {
        user: &cred.user,
        realm: &cred.realm,
    };
    if req.kdc_reply.is_empty() {
        let nonce = random_u32(rng)?;
        // With a key already (given at logon, or derived earlier) pre-authenticate at once;
        // otherwise ask without, to learn the salt and iteration count from ETYPE-INFO2.
        let key = usable_key(&cred.keys, req.allow_rc4);
        let now = req.now_unix.saturating_add(st.clock_offset);
        let bytes = match key {
            Some(k) => messages::as_req(&client, Some((&k, confounder(rng)?)), now, nonce, req.allow_rc4)?,
            None => messages::as_req(&client, None, now, nonce, req.allow_rc4)?,
        };
        st.pending_as = Some(Pending {
            nonce,
            preauth: key_present(&cred.keys, req.allow_rc4),
            skew_retried: false,
        });
        return Ok(KerberosAsReply {
            kdc_request: bytes,
            ..Default::default()
        }
        .encode_to_vec());
    }
    let Some(pending) = st.pending_as.take() else {
        return Err(KerberosError::FailedPrecondition(
            "no AS exchange is in progress for this session".into(),
        ));
    };
    match messages::parse_kdc_reply(&req.kdc_reply)? {
        KdcReply::Error(e) => {
            let next = match e.code {
                messages::KDC_ERR_PREAUTH_REQUIRED if !pending.preauth => {
                    let info = messages::etype_info2(&e)?;
                    let chosen = choose_etype(&info, req.allow_rc4)?;
                    if !cred.keys.iter().any(|k| k.enctype == chosen.etype) {
                        let Some(password) = cred.password.as_ref() else {
                            return Err(KerberosError::FailedPrecondition(format!(
                                "the KDC wants enctype {} and the session has no key of it (no password kept)",
                                chosen.etype
                            )));
                        };
                        let salt = match &chosen.salt {
                            Some(s) => s.clone(),
                            None => messages::default_salt(&client),
                        };
                        let k = crypto::string_to_key(
                            chosen.etype,
                            password.as_bytes(),
                            &salt,
                            chosen.s2kparams.as_deref(),
                        )?;
                        cred.keys.push(KerberosKey {
                            enctype: k.enctype,
                            value: k.value,
                        });
                        // The long-term key is derived: the password is not needed any more.
                        cred.password = None;
                    }
                    let key = pick_key(&cred.keys, chosen.etype)?;
                    let next = Pending {
                        nonce: pending.nonce,
                        preauth: true,
                        skew_retried: pending.skew_retried,
                    };
                    (next, key)
                }
                messages::KRB_AP_ERR_SKEW if !pending.skew_retried => {
                    st.clock_offset = e.stime.saturating_sub(req.now_unix);
                    let key = if pending.preauth {
                        usable_key(&cred.keys, req.allow_rc4)
                    } else {
                        None
                    };
                    let next = Pending {
                        nonce: pending.nonce,
                        preauth: pending.preauth,
                        skew_retried: true,
                    };
                    (next, key)
                }
                _ => return Err(kdc_error(&e, "AS")),
            };
            let (p, key) = next;
            let now = req.now_unix.saturating_add(st.clock_offset);
            let bytes = match key {
                Some(k) => messages::as_req(&client, Some((&k, confounder(rng)?)), now, p.nonce, req.allow_rc4)?,
                None => messages::as_req(&client, None, now, p.nonce, req.allow_rc4)?,
            };
            st.pending_as = Some(p);
            Ok(KerberosAsReply {
                kdc_request: bytes,
                ..Default::default()
            }
            .encode_to_vec())
        }
        KdcReply::Rep(rep) => {
            if rep.tgs {
                return Err(KerberosError::InvalidArgument(
                    "the KDC answered an AS-REQ with a TGS-REP".into(),
                ));
            }
            crypto::check_enctype(rep.enc_etype, req.allow_rc4)?;
            if !cred.keys.iter().any(|k| k.enctype == rep.enc_etype) {
                // The KDC did not require preauthentication: derive the key with the salt of the
                // reply's ETYPE-INFO2 (or the default salt).
                if let Some(password) = cred.password.as_ref() {
                    let entry = rep.etype_info.iter().find(|e| e.etype == rep.enc_etype);
                    let salt = entry
                        .and_then(|e| e.salt.clone())
                        .unwrap_or_else(|| messages::default_salt(&client));
                    let params = entry.and_then(|e| e.s2kparams.clone());
                    let k = crypto::string_to_key(rep.enc_etype, password.as_bytes(), &salt, params.as_deref())?;
                    cred.keys.push(KerberosKey {
                        enctype: k.enctype,
                        value: k.value,
                    });
                    cred.password = None;
                }
            }
            let key = pick_key(&cred.keys, rep.enc_etype)?.ok_or_else(|| {
                KerberosError::FailedPrecondition(format!(
                    "the KDC encrypted the AS-REP in enctype {} and the session has no key of it",
                    rep.enc_etype
                ))
            })?;
            // Key usage 3: AS-REP encrypted part.
            let plain = crypto::decrypt(&key, 3, &rep.enc_cipher)?;
            let (session_key, mut info) = messages::enc_kdc_rep_part(&plain, pending.nonce)?;
            crypto::check_enctype(session_key.enctype, req.allow_rc4)?;
            info.client = rep.cname_pn.clone();
            let reply = KerberosAsReply {
                kdc_request: Vec::new(),
                client_principal: format!("{}@{}", rep.cname, rep.crealm),
                realm: rep.crealm.clone(),
                enctype: session_key.enctype,
                auth_time: info.auth_time,
                start_time: info.start_time,
                end_time: info.end_time,
                renew_till: info.renew_till,
            };
            st.tgt = Some(Tgt {
                ticket: zeroize::Zeroizing::new(rep.ticket),
                key: session_key,
                info,
            });
            Ok(reply.encode_to_vec())
        }
    }
}

fn key_present(keys: &[KerberosKey], allow_rc4: bool) -> bool {
    keys.iter().any(|k| crypto::check_enctype(k.enctype, allow_rc4).is_ok())
}

/// The strongest usable key the session holds.
fn usable_key(keys: &[KerberosKey], allow_rc4: bool) -> Option<Key> {
    crypto::preferred_enctypes(allow_rc4)
        .into_iter()
        .find_map(|e| keys.iter().find(|k| k.enctype == e))
        .and_then(|k| Key::new(k.enctype, &k.value).ok())
}

fn pick_key(keys: &[KerberosKey], enctype: i32) -> Result<Option<Key>, KerberosError> {
    match keys.iter().find(|k| k.enctype == enctype) {
        Some(k) => Ok(Some(Key::new(k.enctype, &k.value)?)),
        None => Ok(None),
    }
}

/// The ETYPE-INFO2 entry to use: the KDC's order (its preference), skipping what is refused.
/// Only DES offered: a clear refusal.
pub fn choose_etype(entries: &[messages::EtypeInfo], allow_rc4: bool) -> Result<messages::EtypeInfo, KerberosError> {
    if let Some(e) = entries
        .iter()
        .find(|e| crypto::check_enctype(e.etype, allow_rc4).is_ok())
    {
        return Ok(e.clone());
    }
    if !entries.is_empty() && entries.iter().all(|e| (1..=3).contains(&e.etype)) {
        return Err(KerberosError::FailedPrecondition(
            "the KDC offers only DES enctypes: credguard never uses DES (single DES is broken)".into(),
        ));
    }
    let offered: Vec<String> = entries.iter().map(|e| format!("{}", e.etype)).collect();
    Err(KerberosError::FailedPrecondition(format!(
        "the KDC offers no enctype credguard accepts (offered: [{}]; accepted: 17, 18, 19, 20{})",
        offered.join(", "),
        if allow_rc4 {
            ", 23"
        } else {
            "; 23 only with kerberos.allow_rc4"
        }
    )))
}

/// The gRPC error for a KRB-ERROR.
fn kdc_error(e: &messages::KrbErr, exchange: &str) -> KerberosError {
    let name = messages::error_name(e.code);
    let m = format!("KDC error {} ({name}) in the {exchange} exchange", e.code);
    match e.code {
        6 | 7 => KerberosError::NotFound(m),
        messages::KDC_ERR_PREAUTH_FAILED | 31 => KerberosError::Unauthenticated(format!("{m}: wrong password or key")),
        18 | 12 | 1 | 2 => KerberosError::Unauthenticated(m),
        messages::KRB_AP_ERR_SKEW => {
            KerberosError::Unavailable(format!("{m}, again after one retry at the KDC's time"))
        }
        14 | 16 | 25 => KerberosError::FailedPrecondition(m),
        _ => KerberosError::FailedPrecondition(m),
    }
}

/// `KerberosTgs`: one step of the TGS exchange; `payload` is a `KerberosTgsRequest`.
pub fn tgs_step<R: TryCryptoRng>(
    creds: &CredentialStore,
    state: &mut KerberosSessions,
    rng: &mut R,
    payload: &[u8],
) -> Result<Vec<u8>, KerberosError> {
    let req = KerberosTgsRequest::decode(payload)
        .map_err(|_| KerberosError::InvalidArgument("payload is not a KerberosTgsRequest".into()))?;
    if req.delegate {
        return Err(KerberosError::FailedPrecondition(
            "unconstrained delegation is never allowed: credguard never forwards a TGT".into(),
        ));
    }
    let handle = SessionHandle::try_from(req.session_handle.as_slice())
        .map_err(|_| KerberosError::NotFound("no such session in this enclave".into()))?;
    let cred = creds
        .get(&handle)
        .ok_or_else(|| KerberosError::NotFound("no such session in this enclave".into()))?;
    let spn = messages::parse_spn(&req.spn)?;
    let st = state.sessions.entry(handle).or_default();
    let now = req.now_unix.saturating_add(st.clock_offset);
    let tgt = match &st.tgt {
        Some(t) if fresh(&t.info, now) => t,
        _ => {
            return Err(KerberosError::FailedPrecondition(format!(
                "{NO_TGT_MESSAGE}: get one with KerberosGetTgt"
            )));
        }
    };
    crypto::check_enctype(tgt.key.enctype, req.allow_rc4)?;
    if req.kdc_reply.is_empty() {
        let nonce = random_u32(rng)?;
        let bytes = messages::tgs_req(
            &cred.realm,
            &tgt.info.client,
            &tgt.ticket,
            &tgt.key,
            &spn,
            tgt.info.end_time,
            now,
            nonce,
            req.allow_rc4,
            confounder(rng)?,
        )?;
        st.pending_tgs = Some((
            Pending {
                nonce,
                preauth: false,
                skew_retried: false,
            },
            req.spn.clone(),
            req.mutual,
        ));
        return Ok(KerberosTgsReply {
            kdc_request: bytes,
            ..Default::default()
        }
        .encode_to_vec());
    }
    let Some((pending, pending_spn, _)) = st.pending_tgs.take() else {
        return Err(KerberosError::FailedPrecondition(
            "no TGS exchange is in progress for this session".into(),
        ));
    };
    if pending_spn != req.spn {
        return Err(KerberosError::InvalidArgument(
            "the SPN differs from the exchange's first step".into(),
        ));
    }
    match messages::parse_kdc_reply(&req.kdc_reply)? {
        KdcReply::Error(e) if e.code == messages::KRB_AP_ERR_SKEW && !pending.skew_retried => {
            st.clock_offset = e.stime.saturating_sub(req.now_unix);
            let now = req.now_unix.saturating_add(st.clock_offset);
            let bytes = messages::tgs_req(
                &cred.realm,
                &tgt.info.client,
                &tgt.ticket,
                &tgt.key,
                &spn,
                tgt.info.end_time,
                now,
                pending.nonce,
                req.allow_rc4,
                confounder(rng)?,
            )?;
            st.pending_tgs = Some((
                Pending {
                    skew_retried: true,
                    ..pending
                },
                req.spn.clone(),
                req.mutual,
            ));
            Ok(KerberosTgsReply {
                kdc_request: bytes,
                ..Default::default()
            }
            .encode_to_vec())
        }
        KdcReply::Error(e) => Err(kdc_error(&e, "TGS")),
        KdcReply::Rep(rep) => {
            if !rep.tgs {
                return Err(KerberosError::InvalidArgument(
                    "the KDC answered a TGS-REQ with an AS-REP".into(),
                ));
            }
            // Key usage 8: TGS-REP encrypted part, under the TGT session key (no subkey sent).
            let plain = crypto::decrypt(&tgt.key, 8, &rep.enc_cipher)?;
            let (session_key, info) = messages::enc_kdc_rep_part(&plain, pending.nonce)?;
            crypto::check_enctype(session_key.enctype, req.allow_rc4)?;
            let seq = random_u32(rng)?;
            let ap_req = messages::ap_req(
                &rep.crealm,
                &tgt.info.client,
                &rep.ticket,
                &session_key,
                now,
                seq,
                req.mutual,
                confounder(rng)?,
            )?;
            let gss_token = messages::gss_initial_token(&ap_req);
            let reply = KerberosTgsReply {
                kdc_request: Vec::new(),
                gss_token,
                ap_req,
                ticket: rep.ticket,
                session_key: session_key.value.to_vec(),
                enctype: session_key.enctype,
                auth_time: info.auth_time,
                start_time: info.start_time,
                end_time: info.end_time,
                renew_till: info.renew_till,
                flags: info.flags,
                client_principal: format!("{}@{}", rep.cname, rep.crealm),
                server_principal: format!("{}@{}", info.server, info.server_realm),
            };
            Ok(reply.encode_to_vec())
        }
    }
}

#[cfg(test)]
mod tests;
