//! `KerberosUserSid`: the user's SID from the PAC of the session's TGT.
//!
//! The TGT's PAC is encrypted in the krbtgt key, which only the KDC has. A user-to-user TGS
//! request to oneself (RFC 4120 2.9.2: KDC option enc-tkt-in-skey, the TGT as the additional
//! ticket, sname the session's own client principal) gets a ticket that the KDC encrypts in the
//! TGT's session key, which the enclave holds, with the TGT's authorization data (the PAC, in
//! AD-IF-RELEVANT) copied in. The enclave opens it (key usage 2), reads the SID ([`super::pac`])
//! and drops the ticket and its session key at once: they never leave.
//!
//! Cost: one KDC round trip per TGT. A session remembers the outcome for its principal (the SID,
//! or that the KDC's ticket had no PAC or a PAC without a SID, as from an MIT KDC, or a refusal
//! that lasts, see [`LASTING_REFUSALS`]), so a renewed TGT for the same principal asks the KDC
//! nothing again; other KDC errors are not remembered (they may pass), and cost that round trip at
//! the next TGT. Any failure only leaves the SID empty: the caller never fails a logon or a TGT
//! over it.
//!
//! Samba 4.17's KDC serves no ticket, user-to-user or not, for a user account without a
//! servicePrincipalName (KDC_ERR_S_PRINCIPAL_UNKNOWN, "message2entry failed" in its log): such a
//! user gets no SID there. Windows' KDC, and Samba's for an account with an SPN, answer.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::enclave::{KerberosUserSidReply, KerberosUserSidRequest};
use rand_core::TryCryptoRng;
use rasn::types::{Integer, OctetString};
use rasn_kerberos::{
    ApOptions, ApReq, AuthorizationDataValue, Checksum, EncTicketPart, EncryptedData, KdcOptions, KdcReq, KdcReqBody,
    PaData, PrincipalName, TgsReq, Ticket,
};

use super::messages::{self, KdcReply};
use super::{KerberosError, KerberosSessions, Tgt, crypto};
use crate::credentials::CredentialStore;

/// KDC option enc-tkt-in-skey (RFC 4120 5.4.1).
const ENC_TKT_IN_SKEY: usize = 28;
/// AD-IF-RELEVANT (RFC 4120 5.2.6.1), around the PAC.
const AD_IF_RELEVANT: i32 = AuthorizationDataValue::IF_RELEVANT;
/// AD-WIN2K-PAC (MS-PAC 2.1).
const AD_WIN2K_PAC: i32 = 128;

/// KDC errors that say the KDC will not serve this user-to-user request however often asked:
/// KDC_ERR_S_PRINCIPAL_UNKNOWN (the account may not be a server: Samba 4.17 for users without an
/// SPN), KDC_ERR_POLICY, KDC_ERR_BADOPTION (no user-to-user). Remembered like an outcome.
const LASTING_REFUSALS: [i32; 3] = [7, 12, 13];

/// A user-to-user exchange waiting for the KDC's reply.
pub(super) struct Pending {
    nonce: u32,
    /// The session's own principal, which the reply must name as client and server.
    sname: PrincipalName,
}

/// What an exchange learnt for one principal of the session.
struct Learnt {
    realm: String,
    client: PrincipalName,
    /// The SID, or why there is none.
    sid: Result<String, String>,
}

/// A session's user-to-user exchange and what the last one learnt.
#[derive(Default)]
pub(super) struct UserSidState {
    pending: Option<Pending>,
    learnt: Option<Learnt>,
}

/// `KerberosUserSid`: one step.
pub fn user_sid_step<R: TryCryptoRng>(
    creds: &CredentialStore,
    state: &mut KerberosSessions,
    rng: &mut R,
    req: KerberosUserSidRequest,
) -> Result<KerberosUserSidReply, KerberosError> {
    super::check_reply_len(&req.kdc_reply)?;
    let handle = super::session_handle(&req.session_handle)?;
    let cred = creds.get(&handle).ok_or_else(super::no_session)?;
    if req.kdc_reply.is_empty() {
        return first_step(state, handle, req.now_unix, cred.allow_rc4, rng);
    }
    let st = state.sessions.entry(handle).or_default();
    let now = req.now_unix.saturating_add(st.clock_offset);
    let tgt = super::usable_tgt(st.tgt.as_ref(), now, cred.allow_rc4)?;
    let realm = tgt_realm(tgt)?;
    let ours = &mut st.user_sid;
    let Some(pending) = ours.pending.take() else {
        return Err(KerberosError::FailedPrecondition(
            "no user-to-user exchange is in progress for this session".into(),
        ));
    };
    let sid = match messages::parse_kdc_reply(&req.kdc_reply)? {
        KdcReply::Error(e) => {
            let m = format!(
                "the KDC refused the user-to-user request: error {} ({})",
                e.code,
                messages::error_name(e.code)
            );
            if !LASTING_REFUSALS.contains(&e.code) {
                // Not remembered: it may pass (the next TGT asks again).
                return Ok(outcome(Err(m), false));
            }
            Err(m)
        }
        KdcReply::Rep(rep) => match u2u_pac(tgt, &pending, &rep)? {
            Some(pac) => super::pac::user_sid(&pac).map_err(|e| e.reason()),
            None => Err("the KDC's ticket carries no PAC (not an Active Directory KDC)".into()),
        },
    };
    ours.learnt = Some(Learnt {
        realm,
        client: tgt.info.client.clone(),
        sid: sid.clone(),
    });
    Ok(outcome(sid, false))
}

/// The first step for `handle`'s TGT at host time `now_unix`: a `KerberosUserSid` call without a
/// KDC reply, and the AS exchange's last step once it kept a TGT (so that a new TGT costs no
/// separate enclave call for it).
pub(super) fn first_step<R: TryCryptoRng>(
    state: &mut KerberosSessions,
    handle: crate::credentials::SessionHandle,
    now_unix: i64,
    allow_rc4: bool,
    rng: &mut R,
) -> Result<KerberosUserSidReply, KerberosError> {
    let st = state.sessions.entry(handle).or_default();
    let now = now_unix.saturating_add(st.clock_offset);
    let tgt = super::usable_tgt(st.tgt.as_ref(), now, allow_rc4)?;
    let realm = tgt_realm(tgt)?;
    u2u_start(&mut st.user_sid, tgt, realm, now, allow_rc4, rng)
}

/// The first step: what the session learnt already for the TGT's principal, or the request.
fn u2u_start<R: TryCryptoRng>(
    ours: &mut UserSidState,
    tgt: &Tgt,
    realm: String,
    now: i64,
    allow_rc4: bool,
    rng: &mut R,
) -> Result<KerberosUserSidReply, KerberosError> {
    if let Some(l) = ours
        .learnt
        .as_ref()
        .filter(|l| l.realm == realm && messages::same_principal(&l.client, &tgt.info.client))
    {
        return Ok(outcome(l.sid.clone(), true));
    }
    let nonce = super::random_u32(rng)?;
    let sname = PrincipalName {
        r#type: messages::NT_PRINCIPAL,
        string: tgt.info.client.string.clone(),
    };
    let kdc_request = u2u_req(&realm, tgt, &sname, now, nonce, allow_rc4, super::confounder(rng)?)?;
    ours.pending = Some(Pending { nonce, sname });
    Ok(KerberosUserSidReply {
        kdc_request,
        ..Default::default()
    })
}

fn outcome(sid: Result<String, String>, remembered: bool) -> KerberosUserSidReply {
    let (user_sid, reason) = match sid {
        Ok(s) => (s, String::new()),
        Err(r) => (String::new(), r),
    };
    KerberosUserSidReply {
        kdc_request: Vec::new(),
        user_sid,
        reason,
        remembered,
    }
}

/// The realm of the TGT's ticket: the realm the user-to-user request goes to.
fn tgt_realm(tgt: &Tgt) -> Result<String, KerberosError> {
    let ticket: Ticket =
        rasn::der::decode(&tgt.ticket).map_err(|_| KerberosError::Internal("stored TGT does not decode".into()))?;
    Ok(String::from_utf8_lossy(ticket.realm.as_bytes()).into_owned())
}

/// The user-to-user TGS-REQ: as [`messages::tgs_req`], with enc-tkt-in-skey and the TGT also
/// as the additional ticket, for `sname` (the session's own principal).
fn u2u_req(
    realm: &str,
    tgt: &Tgt,
    sname: &PrincipalName,
    now: i64,
    nonce: u32,
    allow_rc4: bool,
    conf: [u8; 16],
) -> Result<Vec<u8>, KerberosError> {
    let ticket: Ticket =
        rasn::der::decode(&tgt.ticket).map_err(|_| KerberosError::Internal("stored TGT does not decode".into()))?;
    let body = KdcReqBody {
        // No forwardable, no forwarded, no renewable: the ticket is read and dropped.
        kdc_options: KdcOptions(messages::flags32(&[ENC_TKT_IN_SKEY])),
        cname: None,
        realm: messages::kstring(realm)?,
        sname: Some(sname.clone()),
        from: None,
        till: messages::time(tgt.info.end_time)?,
        rtime: None,
        nonce,
        etype: crypto::preferred_enctypes(allow_rc4),
        addresses: None,
        enc_authorization_data: None,
        additional_tickets: Some(alloc::vec![ticket.clone()]),
    };
    // Key usage 6: the req-body checksum, over the body without its [4] tag (as for every TGS-REQ).
    let body_der = rasn::der::encode(&body).map_err(messages::encode_err)?;
    let cksum = Checksum {
        r#type: crypto::checksum_type(tgt.key.enctype)?,
        checksum: OctetString::from(crypto::checksum(&tgt.key, 6, &body_der)?),
    };
    let auth = messages::authenticator(realm, &tgt.info.client, cksum, now, None)?;
    let auth_der = rasn::der::encode(&auth).map_err(messages::encode_err)?;
    // Key usage 7: the PA-TGS-REQ authenticator.
    let enc = crypto::encrypt(&tgt.key, 7, &auth_der, &conf)?;
    let ap = ApReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(14),
        ap_options: ApOptions(messages::flags32(&[])),
        ticket,
        authenticator: EncryptedData {
            etype: tgt.key.enctype,
            kvno: None,
            cipher: OctetString::from(enc),
        },
    };
    let pa = PaData {
        r#type: messages::PA_TGS_REQ,
        value: OctetString::from(rasn::der::encode(&ap).map_err(messages::encode_err)?),
    };
    let req = TgsReq(KdcReq {
        pvno: Integer::from(5),
        msg_type: Integer::from(12),
        padata: Some(alloc::vec![pa]),
        req_body: body,
    });
    rasn::der::encode(&req).map_err(messages::encode_err)
}

/// The PAC of the user-to-user ticket in `rep`, once the reply is checked to answer `pending`
/// (its nonce) for the session's own principal, as client and as server. The ticket's session
/// key is dropped (and wiped) here.
fn u2u_pac(tgt: &Tgt, pending: &Pending, rep: &messages::RepParts) -> Result<Option<Vec<u8>>, KerberosError> {
    if !rep.tgs {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered a TGS-REQ with an AS-REP".into(),
        ));
    }
    // Key usage 8: TGS-REP encrypted part, under the TGT session key.
    let plain = crypto::decrypt(&tgt.key, 8, &rep.enc_cipher)?;
    let (_u2u_key, info) = messages::enc_kdc_rep_part(&plain, pending.nonce)?;
    let own = |p: &PrincipalName| messages::same_principal(p, &pending.sname);
    if !own(&info.server_pn) || !own(&rep.ticket_sname) || !own(&rep.cname_pn) {
        return Err(KerberosError::InvalidArgument(format!(
            "the KDC's user-to-user reply names {:?} for {:?}, not the session's own principal {:?}",
            messages::principal_text(&info.server_pn),
            messages::principal_text(&rep.cname_pn),
            messages::principal_text(&pending.sname)
        )));
    }
    let ticket: Ticket = rasn::der::decode(&rep.ticket).map_err(|_| messages::bad("user-to-user ticket"))?;
    if ticket.enc_part.etype != tgt.key.enctype {
        return Err(KerberosError::InvalidArgument(
            "the KDC's user-to-user ticket is not encrypted in the TGT's session key".into(),
        ));
    }
    // Key usage 2: a ticket's encrypted part, here under the TGT's session key.
    let plain = crypto::decrypt(&tgt.key, 2, &ticket.enc_part.cipher)?;
    let part: EncTicketPart = rasn::der::decode(&plain).map_err(|_| messages::bad("EncTicketPart"))?;
    if !own(&part.cname) {
        return Err(KerberosError::InvalidArgument(
            "the KDC's user-to-user ticket is for another client".into(),
        ));
    }
    Ok(part.authorization_data.as_deref().and_then(pac_of))
}

/// The AD-WIN2K-PAC inside an AD-IF-RELEVANT of `ad` (MS-KILE 3.3.5.6.4: where a KDC puts it).
fn pac_of(ad: &[AuthorizationDataValue]) -> Option<Vec<u8>> {
    ad.iter().filter(|a| a.r#type == AD_IF_RELEVANT).find_map(|a| {
        let inner: Vec<AuthorizationDataValue> = rasn::der::decode(&a.data).ok()?;
        inner
            .into_iter()
            .find(|i| i.r#type == AD_WIN2K_PAC)
            .map(|i| i.data.to_vec())
    })
}

#[cfg(test)]
#[path = "u2u_tests.rs"]
mod tests;
