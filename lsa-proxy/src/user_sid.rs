//! The user's SID from the PAC of the session's TGT, learnt once after each AS exchange.
//!
//! The enclave runs a user-to-user TGS exchange to the session's own principal (`KerberosUserSid`,
//! see the enclave's `kerberos/u2u.rs`): the proxy carries its request to the session's KDCs, as
//! for any TGS step, and records the SID the enclave read on the session. It costs one KDC round
//! trip for the first TGT of a principal; the enclave remembers the outcome (the SID, or that the
//! KDC's tickets have no PAC or no SID in it), so renewals cost none. Nothing here may fail a
//! logon or a TGT: a failure leaves the SID empty and says why at debug level.

use credguard_proto::enclave;
use tracing::debug;

use crate::core::LsaCore;
use crate::error::LsaError;
use crate::kdcs::KdcAddr;
use crate::kerberos::{kdc_exchange_any, now_unix};
use crate::sessions::LogonSession;

/// Steps of the exchange at most: the request and the KDC's reply.
const MAX_STEPS: usize = 2;

/// Learns the user's SID for the TGT session `s` just got from `kdcs` and records it on the
/// session (empty when none could be read); returns it. `first` is the exchange's first step
/// if the enclave made it with the AS exchange's last (then it costs no enclave call here).
pub async fn learn(
    core: &LsaCore,
    s: &LogonSession,
    kdcs: &[KdcAddr],
    first: Option<enclave::KerberosUserSidReply>,
) -> String {
    let sid = match exchange(core, s, kdcs, first).await {
        Ok(r) if r.user_sid.is_empty() => {
            debug!(session = %s.session_id, reason = %r.reason, remembered = r.remembered, "no user SID from the PAC");
            String::new()
        }
        Ok(r) => {
            debug!(session = %s.session_id, sid = %r.user_sid, remembered = r.remembered, "user SID from the PAC");
            r.user_sid
        }
        Err(e) => {
            debug!(session = %s.session_id, error = %e, "no user SID: the user-to-user exchange failed");
            String::new()
        }
    };
    core.set_user_sid(&s.session_id, &sid);
    sid
}

/// The enclave's `KerberosUserSid` steps, carried to the KDCs.
async fn exchange(
    core: &LsaCore,
    s: &LogonSession,
    kdcs: &[KdcAddr],
    first: Option<enclave::KerberosUserSidReply>,
) -> Result<enclave::KerberosUserSidReply, LsaError> {
    let mut kdc_reply = Vec::new();
    let mut kdc = 0;
    if let Some(first) = first {
        if first.kdc_request.is_empty() {
            return Ok(first);
        }
        kdc_reply = kdc_exchange_any(kdcs, &mut kdc, &first.kdc_request).await?;
    }
    for _ in 0..MAX_STEPS {
        let step = enclave::KerberosUserSidRequest {
            session_handle: s.handle.clone(),
            now_unix: now_unix(),
            kdc_reply: std::mem::take(&mut kdc_reply),
        };
        let r = core.link().client(s.owner).kerberos_user_sid(&step).await?;
        if r.kdc_request.is_empty() {
            return Ok(r);
        }
        kdc_reply = kdc_exchange_any(kdcs, &mut kdc, &r.kdc_request).await?;
    }
    Err(LsaError::Unavailable(
        "the user-to-user exchange did not finish: the enclave keeps asking".into(),
    ))
}
