//! Mutual authentication (RFC 4120 3.2.5): the AP-REQs built with `mutual` wait here, per
//! session, for the service's AP-REP, which `KerberosVerifyApRep` checks.
//!
//! What a context keeps (the ticket's session key, the subkey) went to the caller already: the
//! table is not there to hide them but so that the caller cannot choose what an AP-REP is checked
//! against. Each context is checked once, whatever the outcome (a refused AP-REP is never tried
//! again), and lives at most [`AP_CONTEXT_TTL_SECS`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::enclave::{KerberosVerifyApRepReply, KerberosVerifyApRepRequest};
use rand_core::TryCryptoRng;

use super::crypto::{self, Key};
use super::{KerberosError, messages};
use crate::credentials::{CredentialStore, SessionHandle};

/// Most AP-REQs one session may have waiting for their AP-REP; a new one beyond it drops the
/// session's oldest.
pub const MAX_AP_CONTEXTS: usize = 16;
/// How long an AP-REQ waits for its AP-REP, seconds (host time).
pub const AP_CONTEXT_TTL_SECS: i64 = 300;
/// Length of a context id.
pub const CONTEXT_ID_LEN: usize = 16;

/// An AP-REQ waiting for its AP-REP.
struct ApContext {
    id: [u8; CONTEXT_ID_LEN],
    /// Host time it was made, Unix seconds.
    created: i64,
    session_key: Key,
    ctime: i64,
    cusec: u32,
}

/// The AP-REQs of every session waiting for their AP-REP.
#[derive(Default)]
pub struct ApContexts {
    waiting: BTreeMap<SessionHandle, Vec<ApContext>>,
}

/// What identifies the AP-REQ an AP-REP answers.
pub struct Sent<'a> {
    /// The ticket's session key.
    pub session_key: &'a Key,
    /// The authenticator's ctime (Unix seconds) and cusec.
    pub ctime: i64,
    /// cusec.
    pub cusec: u32,
}

fn unauthenticated(why: &str) -> KerberosError {
    KerberosError::Unauthenticated(alloc::format!("the AP-REP is refused: {why}"))
}

impl ApContexts {
    /// None yet.
    pub const fn new() -> Self {
        Self {
            waiting: BTreeMap::new(),
        }
    }

    /// Forgets every context of `handle`.
    pub fn forget(&mut self, handle: &SessionHandle) {
        self.waiting.remove(handle);
    }

    /// Keeps `sent` for `handle` (at host time `now`) and returns its new id.
    pub fn register<R: TryCryptoRng>(
        &mut self,
        handle: SessionHandle,
        now: i64,
        sent: &Sent<'_>,
        rng: &mut R,
    ) -> Result<Vec<u8>, KerberosError> {
        let mut id = [0u8; CONTEXT_ID_LEN];
        rng.try_fill_bytes(&mut id)
            .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
        let list = self.waiting.entry(handle).or_default();
        list.retain(|c| !expired(c, now));
        if list.len() >= MAX_AP_CONTEXTS {
            list.remove(0);
        }
        list.push(ApContext {
            id,
            created: now,
            session_key: sent.session_key.duplicate(),
            ctime: sent.ctime,
            cusec: sent.cusec,
        });
        Ok(id.to_vec())
    }

    /// Takes the context `id` of `handle` out of the table (so that it is tried once).
    fn take(&mut self, handle: &SessionHandle, id: &[u8], now: i64) -> Result<ApContext, KerberosError> {
        let list = self.waiting.get_mut(handle);
        let found = list.and_then(|l| {
            l.retain(|c| !expired(c, now));
            let i = l.iter().position(|c| c.id[..] == *id)?;
            Some(l.remove(i))
        });
        found.ok_or_else(|| {
            unauthenticated(
                "no AP-REQ of this session awaits it under this context id (unknown, expired, or already checked)",
            )
        })
    }
}

fn expired(c: &ApContext, now: i64) -> bool {
    now.saturating_sub(c.created) > AP_CONTEXT_TTL_SECS || now < c.created.saturating_sub(AP_CONTEXT_TTL_SECS)
}

/// `KerberosVerifyApRep`.
pub fn verify_step(
    creds: &CredentialStore,
    table: &mut ApContexts,
    req: KerberosVerifyApRepRequest,
) -> Result<KerberosVerifyApRepReply, KerberosError> {
    let handle = super::session_handle(&req.session_handle)?;
    let cred = creds.get(&handle).ok_or_else(super::no_session)?;
    if req.ap_rep.len() > super::MAX_KDC_REPLY_LEN {
        return Err(KerberosError::InvalidArgument(String::from("the AP-REP is too long")));
    }
    let ctx = table.take(&handle, &req.context_id, req.now_unix)?;
    let (etype, cipher) = messages::parse_ap_rep(&req.ap_rep)?;
    if etype != ctx.session_key.enctype {
        return Err(unauthenticated(
            "it is not encrypted in the ticket's session key's enctype",
        ));
    }
    // Key usage 12: AP-REP encrypted part.
    let plain = crypto::decrypt(&ctx.session_key, 12, &cipher)
        .map_err(|_| unauthenticated("it does not decrypt with the ticket's session key"))?;
    let part = messages::enc_ap_rep_part(&plain)?;
    if part.ctime != ctx.ctime || part.cusec != ctx.cusec {
        return Err(unauthenticated("its ctime and cusec are not the authenticator's"));
    }
    let (acceptor_subkey, acceptor_subkey_enctype) = match part.subkey {
        Some((enctype, value)) => {
            crypto::check_enctype(enctype, cred.allow_rc4)?;
            let key = Key::new(enctype, &value)?;
            (key.value.to_vec(), enctype)
        }
        None => (Vec::new(), 0),
    };
    Ok(KerberosVerifyApRepReply {
        acceptor_subkey,
        acceptor_subkey_enctype,
        has_seq_number: part.seq.is_some(),
        seq_number: part.seq.unwrap_or(0),
    })
}

#[cfg(test)]
#[path = "ap_tests.rs"]
mod tests;
