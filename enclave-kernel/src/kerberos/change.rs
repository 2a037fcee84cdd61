//! `KerberosChangePassword`: changing a session's expired password over kpasswd.
//!
//! Three kinds of step, each the proxy's call with what it got back from the network:
//! 1. the sealed new password (opened by the service) starts an AS exchange for
//!    `kadmin/changepw` with the session's old password (a KDC issues that ticket for an expired
//!    password; it is no TGT, and one for any `krbtgt` is refused);
//! 2. the KDC's replies continue it (PREAUTH_REQUIRED, clock skew) until its AS-REP gives the
//!    `kadmin/changepw` ticket, and the change request for the kpasswd server is built
//!    ([`super::kpasswd`]);
//! 3. the kpasswd server's reply: on success the session holds the new password, and neither a
//!    key of the old one nor a TGT.
//!
//! The old password stays until the change succeeds; neither the `kadmin/changepw` key nor the
//! key derived from the old password is kept after the exchange.
//!
//! A check only (`check_old_password`) stops at step 2: the `kadmin/changepw` ticket proves the
//! old password, since MIT's KDC answers KEY_EXPIRED to an AS-REQ for a TGT whatever password
//! preauthenticated it.

use alloc::string::String;

use credguard_proto::enclave::{KerberosChangePasswordReply, KerberosChangePasswordRequest};
use rand_core::TryCryptoRng;
use zeroize::Zeroizing;

use super::kpasswd::{self, ChangeRequest, SenderAddress};
use super::{
    AsService, CHANGEPW, KdcReply, KerberosError, KerberosSessions, Key, LogonCredential, PendingAs, SessionState,
    as_next, as_open, as_request, check_reply_len, crypto, messages, no_session, random_u32, session_handle,
};
use crate::credentials::CredentialStore;

/// A password change waiting for the network.
pub(super) struct PendingChange {
    /// `None` for a check of the old password only.
    new_password: Option<Zeroizing<String>>,
    stage: Stage,
}

enum Stage {
    /// Waiting for the KDC's reply to the AS-REQ for `kadmin/changepw`.
    As(PendingAs),
    /// Waiting for the kpasswd server's reply.
    Kpasswd {
        /// The `kadmin/changepw` ticket's session key (the AP-REP is under it).
        session_key: Key,
        /// The subkey the request's KRB-PRIV is under.
        subkey: Key,
    },
}

/// One step of `KerberosChangePassword`; `new_password` is the opened seal of a first step.
pub fn change_step<R: TryCryptoRng>(
    creds: &mut CredentialStore,
    state: &mut KerberosSessions,
    rng: &mut R,
    req: KerberosChangePasswordRequest,
    new_password: Option<Zeroizing<String>>,
) -> Result<KerberosChangePasswordReply, KerberosError> {
    check_reply_len(&req.kdc_reply)?;
    check_reply_len(&req.kpasswd_reply)?;
    let handle = session_handle(&req.session_handle)?;
    let cred = creds.get_mut(&handle).ok_or_else(no_session)?;
    if cred.realm.is_empty() {
        return Err(KerberosError::FailedPrecondition(
            "the session has no Kerberos realm (log on with a realm)".into(),
        ));
    }
    let given = [
        new_password.is_some() || req.check_old_password,
        !req.kdc_reply.is_empty(),
        !req.kpasswd_reply.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(KerberosError::InvalidArgument(
            "a password change step carries exactly one of: the sealed new password, the KDC's reply, the kpasswd \
             server's reply"
                .into(),
        ));
    }
    let owner = cred.owner;
    let st = state.sessions.entry(handle).or_default();
    if new_password.is_some() && req.check_old_password {
        return Err(KerberosError::InvalidArgument(
            "check_old_password changes nothing: it carries no new password".into(),
        ));
    }
    if new_password.is_some() || req.check_old_password {
        return change_start(cred, st, rng, req.now_unix, new_password);
    }
    let Some(pending) = st.change.take() else {
        return Err(KerberosError::FailedPrecondition(
            "no password change is in progress for this session".into(),
        ));
    };
    match (pending.stage, req.kdc_reply.is_empty()) {
        (Stage::As(p), false) => change_as(cred, st, rng, &req, pending.new_password, p),
        (Stage::Kpasswd { session_key, subkey }, true) => {
            let Some(new_password) = pending.new_password else {
                return Err(KerberosError::Internal(
                    "a check of the password reached kpasswd".into(),
                ));
            };
            let result = kpasswd::change_reply(&req.kpasswd_reply, &session_key, &subkey)?;
            if result.code != kpasswd::RESULT_SUCCESS {
                return Err(kpasswd::result_error(&result));
            }
            // The old password's keys, the TGT they got and the service tickets it got are of no
            // use now.
            cred.password = Some(new_password);
            cred.keys.clear();
            let freed = st.drop_tickets();
            state.release(owner, freed);
            Ok(KerberosChangePasswordReply {
                changed: true,
                ..Default::default()
            })
        }
        _ => Err(KerberosError::FailedPrecondition(
            "the password change was waiting for another server's reply: start again".into(),
        )),
    }
}

/// The first AS-REQ for `kadmin/changepw`, without preauthentication (the KDC's ETYPE-INFO2 says
/// how to derive the old password's key).
fn change_start<R: TryCryptoRng>(
    cred: &LogonCredential,
    st: &mut SessionState,
    rng: &mut R,
    now_unix: i64,
    new_password: Option<Zeroizing<String>>,
) -> Result<KerberosChangePasswordReply, KerberosError> {
    if cred.password.is_none() {
        return Err(KerberosError::FailedPrecondition(
            "the session holds no password (it logged on with a key, or its password already got a TGT): log on \
             with the old password to change it"
                .into(),
        ));
    }
    let new_len = new_password.as_ref().map_or(1, |p| p.len());
    if new_len == 0 || new_len > kpasswd::MAX_PASSWORD_LEN {
        return Err(KerberosError::InvalidArgument(alloc::format!(
            "a new password has 1 to {} bytes",
            kpasswd::MAX_PASSWORD_LEN
        )));
    }
    let nonce = random_u32(rng)?;
    let now = now_unix.saturating_add(st.clock_offset);
    let request = as_request(cred, &cred.realm, AsService::ChangePw, None, rng, now, nonce)?;
    st.change = Some(PendingChange {
        new_password,
        stage: Stage::As(PendingAs::new(cred, nonce, false)),
    });
    Ok(KerberosChangePasswordReply {
        kdc_request: request.kdc_request,
        ..Default::default()
    })
}

/// A KDC reply in the AS exchange for `kadmin/changepw`: the next AS-REQ, or (its AS-REP) the
/// change request for the kpasswd server.
fn change_as<R: TryCryptoRng>(
    cred: &LogonCredential,
    st: &mut SessionState,
    rng: &mut R,
    req: &KerberosChangePasswordRequest,
    new_password: Option<Zeroizing<String>>,
    pending: PendingAs,
) -> Result<KerberosChangePasswordReply, KerberosError> {
    let rep = match messages::parse_kdc_reply(&req.kdc_reply)? {
        KdcReply::Error(e) => {
            let (request, next) = as_next(
                cred,
                AsService::ChangePw,
                &mut st.clock_offset,
                rng,
                req.now_unix,
                pending,
                &e,
            )?;
            st.change = Some(PendingChange {
                new_password,
                stage: Stage::As(next),
            });
            return Ok(KerberosChangePasswordReply {
                kdc_request: request.kdc_request,
                ..Default::default()
            });
        }
        KdcReply::Rep(rep) => rep,
    };
    let (session_key, cname) = changepw_ticket(cred, pending, &rep)?;
    let Some(new_password) = new_password else {
        // A check only: the ticket's key goes with `session_key`'s drop.
        return Ok(KerberosChangePasswordReply {
            old_password_verified: true,
            ..Default::default()
        });
    };
    let subkey = random_key(rng, session_key.enctype)?;
    let sender = SenderAddress::new(&req.sender_address)?;
    let now = req.now_unix.saturating_add(st.clock_offset);
    let request = kpasswd::change_request(
        &ChangeRequest {
            crealm: &rep.crealm,
            cname: &cname,
            ticket: &rep.ticket,
            session_key: &session_key,
            subkey: &subkey,
            seq: random_u32(rng)?,
            now,
            new_password: new_password.as_bytes(),
            sender: &sender,
        },
        super::confounder(rng)?,
        super::confounder(rng)?,
    )?;
    st.change = Some(PendingChange {
        new_password: Some(new_password),
        stage: Stage::Kpasswd { session_key, subkey },
    });
    Ok(KerberosChangePasswordReply {
        kpasswd_request: request,
        ..Default::default()
    })
}

/// The session key of an AS-REP's `kadmin/changepw` ticket, and the client's name, after
/// checking the reply is an AS-REP for exactly that service (never a TGT), in its ticket and
/// its encrypted part.
fn changepw_ticket(
    cred: &LogonCredential,
    pending: PendingAs,
    rep: &messages::RepParts,
) -> Result<(Key, rasn_kerberos::PrincipalName), KerberosError> {
    if rep.tgs {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered an AS-REQ with a TGS-REP".into(),
        ));
    }
    crypto::check_enctype(rep.enc_etype, cred.allow_rc4)?;
    let wanted = rasn_kerberos::PrincipalName {
        r#type: 2,
        string: CHANGEPW
            .iter()
            .filter_map(|c| rasn::types::GeneralString::from_bytes(c.as_bytes()).ok())
            .collect(),
    };
    let is_changepw =
        |p: &rasn_kerberos::PrincipalName| !messages::is_tgs_principal(p) && messages::same_principal(p, &wanted);
    if !is_changepw(&rep.ticket_sname) {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered the AS-REQ for kadmin/changepw with a ticket for another service".into(),
        ));
    }
    let (_, _, session_key, info) = as_open(cred, pending, rep)?;
    if !is_changepw(&info.server_pn) {
        return Err(KerberosError::InvalidArgument(
            "the KDC's AS-REP for kadmin/changepw names another service in its encrypted part".into(),
        ));
    }
    Ok((session_key, rep.cname_pn.clone()))
}

/// A random key of `enctype` (the subkey).
fn random_key<R: TryCryptoRng>(rng: &mut R, enctype: i32) -> Result<Key, KerberosError> {
    let mut bytes = Zeroizing::new(alloc::vec![0u8; crypto::key_len(enctype)?]);
    rng.try_fill_bytes(&mut bytes)
        .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
    Ok(Key::new(enctype, &bytes)?)
}
