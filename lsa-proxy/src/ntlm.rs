//! NTLM for the API: who owns which NTLM context, size bounds, and the calls to the enclave.
//!
//! The proxy only moves messages. The NT hash and the NTLMv2 hash are used in the enclave alone,
//! which also keeps the context between `NtlmNegotiate` and `NtlmAuthenticate` and enforces the
//! rules (NTLMv2 only; no legacy protocol for a protected credential). The proxy records which
//! caller opened each context, so that a context id seen by another uid is useless to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use credguard_proto::checks::{self, MAX_NTLM_CHALLENGE_LEN, MAX_NTLM_CONTEXTS, MAX_NTLM_CONTEXTS_PER_OWNER};
use credguard_proto::convert::legacy_protocol;
use credguard_proto::enclave;
use credguard_proto::lsa;
use tracing::info;
use zeroize::Zeroize;

use crate::core::LsaCore;
use crate::enclave_link::LinkState;
use crate::error::LsaError;
use crate::sessions::Caller;

/// Seconds between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET_SECS: u64 = 11_644_473_600;

/// The current time as a Windows FILETIME (100 ns since 1601). The enclave has no wall clock;
/// this only becomes `MsvAvTimestamp` when the server sent none, and it is not a secret.
pub fn now_filetime() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() + FILETIME_UNIX_OFFSET_SECS) * 10_000_000 + u64::from(d.subsec_nanos() / 100)
}

struct Entry {
    owner: Caller,
    /// The enclave's context id.
    enclave_id: Vec<u8>,
    boot_id: Vec<u8>,
    seq: u64,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Entry>,
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Table {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.by_id.remove(id)?;
        self.by_age.remove(&e.seq);
        Some(e)
    }

    /// Remembers a context; with the table full of other callers' contexts it forgets those of
    /// earlier enclave boots (gone anyway), never a live one of another caller.
    fn insert(&mut self, id: String, owner: Caller, enclave_id: Vec<u8>, boot_id: Vec<u8>) {
        let mine = self.by_id.values().filter(|e| e.owner == owner).count();
        if mine >= MAX_NTLM_CONTEXTS_PER_OWNER {
            let oldest = self
                .by_age
                .values()
                .find(|k| self.by_id.get(*k).is_some_and(|e| e.owner == owner))
                .cloned();
            if let Some(k) = oldest {
                self.remove(&k);
            }
        }
        if self.by_id.len() >= MAX_NTLM_CONTEXTS {
            let stale: Vec<String> = self
                .by_id
                .iter()
                .filter(|(_, e)| e.boot_id != boot_id)
                .map(|(k, _)| k.clone())
                .collect();
            for k in stale {
                self.remove(&k);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, id.clone());
        self.by_id.insert(
            id,
            Entry {
                owner,
                enclave_id,
                boot_id,
                seq,
            },
        );
    }
}

/// The NTLM calls of the API.
#[derive(Default)]
pub struct Ntlm {
    contexts: Mutex<Table>,
}

fn check_context_id(id: &str) -> Result<(), LsaError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LsaError::InvalidArgument(
            "context_id must be the 32 hex digits NtlmNegotiate returned".into(),
        ));
    }
    Ok(())
}

impl Ntlm {
    /// No contexts.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every change keeps the maps consistent at each step: a poisoned lock is still usable.
        self.contexts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Contexts currently recorded.
    pub fn contexts(&self) -> usize {
        self.table().by_id.len()
    }

    /// `NtlmNegotiate`: a context for the caller's session, and its NEGOTIATE message.
    pub async fn negotiate(
        &self,
        core: &LsaCore,
        caller: Caller,
        req: lsa::NtlmNegotiateRequest,
    ) -> Result<lsa::NtlmNegotiateReply, LsaError> {
        let session = core.session(caller, &req.session_id)?;
        let enclave_req = enclave::NtlmNegotiateRequest {
            session_handle: session.handle.clone(),
        };
        let reply = core.link().client(caller).ntlm_negotiate(&enclave_req).await?;
        if reply.context_id.len() != checks::CONTEXT_ID_LEN || reply.negotiate_message.is_empty() {
            return Err(LsaError::Internal(
                "the enclave returned a malformed NTLM context".into(),
            ));
        }
        let context_id = hex::encode(&reply.context_id);
        info!(%caller, session = %session.session_id, context = %context_id, "ntlm negotiate");
        self.table()
            .insert(context_id.clone(), caller, reply.context_id, session.boot_id);
        Ok(lsa::NtlmNegotiateReply {
            context_id,
            negotiate_message: reply.negotiate_message,
        })
    }

    /// `NtlmAuthenticate`: the AUTHENTICATE message for the server's CHALLENGE. The context is
    /// used up, whatever the outcome.
    pub async fn authenticate(
        &self,
        core: &LsaCore,
        caller: Caller,
        req: lsa::NtlmAuthenticateRequest,
    ) -> Result<lsa::NtlmAuthenticateReply, LsaError> {
        check_context_id(&req.context_id)?;
        let entry = {
            let mut t = self.table();
            match t.by_id.get(&req.context_id) {
                None => {
                    return Err(LsaError::NotFound(format!(
                        "no NTLM context {} (unknown, already used or evicted)",
                        req.context_id
                    )));
                }
                // Not removed: the owner may still use it.
                Some(e) if e.owner != caller => {
                    return Err(LsaError::PermissionDenied(format!(
                        "NTLM context {} belongs to another user",
                        req.context_id
                    )));
                }
                Some(_) => t.remove(&req.context_id),
            }
        };
        let Some(entry) = entry else {
            return Err(LsaError::NotFound(format!("no NTLM context {}", req.context_id)));
        };
        if req.challenge_message.is_empty() || req.challenge_message.len() > MAX_NTLM_CHALLENGE_LEN {
            return Err(LsaError::InvalidArgument(format!(
                "challenge_message must be 1 to {MAX_NTLM_CHALLENGE_LEN} bytes, not {}",
                req.challenge_message.len()
            )));
        }
        checks::ntlm_options(&req.channel_bindings, &req.target_spn)?;
        checks::ntlm_negotiate_len(&req.negotiate_message)?;
        match core.link().state() {
            LinkState::Ready(info) if info.boot_id == entry.boot_id => {}
            LinkState::Ready(_) => {
                return Err(LsaError::NotFound(format!(
                    "NTLM context {} was lost: the enclave restarted since it was made",
                    req.context_id
                )));
            }
            LinkState::Connecting { .. } => {
                return Err(LsaError::Unavailable(
                    "the enclave is not reachable; retry later".into(),
                ));
            }
        }
        let enclave_req = enclave::NtlmAuthenticateRequest {
            context_id: entry.enclave_id,
            challenge_message: req.challenge_message,
            channel_bindings: req.channel_bindings,
            target_spn: req.target_spn,
            now_filetime: now_filetime(),
            negotiate_message: req.negotiate_message,
            workstation: core.config().ntlm.workstation().to_owned(),
        };
        let mut reply = core.link().client(caller).ntlm_authenticate(&enclave_req).await?;
        if reply.exported_session_key.len() != 16 || reply.authenticate_message.is_empty() {
            reply.exported_session_key.zeroize();
            return Err(LsaError::Internal(
                "the enclave returned a malformed AUTHENTICATE".into(),
            ));
        }
        info!(%caller, context = %req.context_id, "ntlm authenticate");
        Ok(lsa::NtlmAuthenticateReply {
            authenticate_message: reply.authenticate_message,
            exported_session_key: reply.exported_session_key,
        })
    }

    /// `LegacyAuthenticate`: forwarded to the enclave, which refuses it for every protected
    /// credential (the proxy does not decide this rule, the enclave does).
    pub async fn legacy_authenticate(
        &self,
        core: &LsaCore,
        caller: Caller,
        req: lsa::LegacyAuthenticateRequest,
    ) -> Result<lsa::LegacyAuthenticateReply, LsaError> {
        let session = core.session(caller, &req.session_id)?;
        let protocol = legacy_protocol(req.protocol).ok_or(checks::CheckError::LegacyProtocol(req.protocol))?;
        checks::legacy_request(protocol as i32, &req.challenge)?;
        let enclave_req = enclave::LegacyAuthenticateRequest {
            session_handle: session.handle,
            protocol: protocol as i32,
            challenge: req.challenge,
        };
        let result = core.link().client(caller).legacy_authenticate(&enclave_req).await;
        info!(%caller, session = %req.session_id, protocol = protocol.as_str_name(), refused = result.is_err(), "legacy authenticate");
        let reply = result?;
        Ok(lsa::LegacyAuthenticateReply {
            response: reply.response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_is_after_2020() {
        // 2020-01-01 as FILETIME.
        assert!(now_filetime() > 132_223_104_000_000_000);
    }

    #[test]
    fn context_ids_are_checked() {
        assert!(check_context_id(&"a".repeat(32)).is_ok());
        assert!(check_context_id("xyz").is_err());
        assert!(check_context_id(&"g".repeat(32)).is_err());
    }

    #[test]
    fn table_is_bounded_per_caller_and_never_evicts_another_callers() {
        let mut t = Table::default();
        let a = Caller::Uid(1);
        for i in 0..MAX_NTLM_CONTEXTS_PER_OWNER + 3 {
            t.insert(format!("a{i}"), a, vec![], vec![1]);
        }
        assert_eq!(t.by_id.len(), MAX_NTLM_CONTEXTS_PER_OWNER);
        assert!(!t.by_id.contains_key("a0"), "the caller's own oldest went");
        // Contexts of an earlier boot of the enclave, then a full table of live ones.
        for i in 0..MAX_NTLM_CONTEXTS_PER_OWNER {
            t.insert(format!("old{i}"), Caller::Uid(2), vec![], vec![0]);
        }
        let mut u = 3;
        while t.by_id.len() < MAX_NTLM_CONTEXTS {
            t.insert(format!("{u}"), Caller::Uid(u), vec![], vec![1]);
            u += 1;
        }
        // Full: a newcomer pushes out only the dead boot's contexts, never a live one.
        t.insert("new".into(), Caller::Uid(999_999), vec![], vec![1]);
        assert!(t.by_id.contains_key("a3") && t.by_id.contains_key("3"));
        assert!(!t.by_id.keys().any(|k| k.starts_with("old")));
        assert_eq!(t.by_age.len(), t.by_id.len());
        assert!(t.remove("new").is_some());
        assert!(t.remove("new").is_none());
    }
}
