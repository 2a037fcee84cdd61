//! The table of logon sessions: who owns which session, and what may be said about it.
//!
//! The secrets are not here: they are in the enclave, under the session's handle. The table only
//! records ownership and metadata, enforces the per-uid limit, and knows which boot of the enclave
//! holds each session, so that a session of a restarted enclave is reported as gone rather than
//! sent to an enclave that never heard of it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::LsaError;

/// Who is calling: a local uid (from SO_PEERCRED), or a VM connecting over AF_VSOCK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caller {
    /// A local process with this uid.
    Uid(u32),
    /// A peer VM with this vsock context id.
    VsockCid(u32),
}

impl Caller {
    /// Root may see every session (but not use another's).
    pub fn is_root(&self) -> bool {
        matches!(self, Caller::Uid(0))
    }

    /// The caller as the enclave counts owners (sessions, limits, sealed secrets).
    pub fn owner(&self) -> credguard_proto::attest::Owner {
        match self {
            Caller::Uid(u) => credguard_proto::attest::Owner::uid(*u),
            Caller::VsockCid(c) => credguard_proto::attest::Owner::vsock(*c),
        }
    }

    /// The uid shown in session listings (vsock peers have none: `u32::MAX`).
    pub fn uid(&self) -> u32 {
        match self {
            Caller::Uid(u) => *u,
            Caller::VsockCid(_) => u32::MAX,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Uid(u) => write!(f, "uid {u}"),
            Caller::VsockCid(c) => write!(f, "vsock cid {c}"),
        }
    }
}

/// A logon session, as the proxy knows it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogonSession {
    /// Public identifier (hex of the enclave's handle).
    pub session_id: String,
    /// The enclave's handle.
    pub handle: Vec<u8>,
    /// The owner.
    pub owner: Caller,
    /// User name.
    pub user: String,
    /// NetBIOS domain.
    pub domain: String,
    /// Kerberos realm.
    pub realm: String,
    /// KDC given at logon.
    pub kdc: String,
    /// "password", "nt_hash" or "key".
    pub secret_kind: &'static str,
    /// Whether the secret came sealed to the enclave (the proxy never saw it).
    pub sealed: bool,
    /// Creation time, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// Boot of the enclave that holds the secrets.
    pub boot_id: Vec<u8>,
    /// The user's SID from the PAC of its last TGT (empty: none read yet, or none to read).
    pub user_sid: String,
}

/// How many sessions lost to an enclave restart are remembered, so that their owners are told
/// why the session is gone; the oldest are forgotten first.
pub const MAX_REMEMBERED_LOST: usize = 4096;

#[derive(Default)]
struct Tables {
    open: BTreeMap<String, LogonSession>,
    /// Sessions whose enclave restarted: id -> (owner, sequence number for eviction).
    lost: BTreeMap<String, (Caller, u64)>,
    lost_seq: u64,
    /// Each owner's default session (what its KCM cache and PAM use): the newest logon unless
    /// the owner chose another.
    defaults: BTreeMap<Caller, String>,
}

impl Tables {
    /// After `owner` lost its default session: its newest remaining one, if any.
    fn pick_default(&mut self, owner: Caller) {
        let newest = self
            .open
            .values()
            .filter(|s| s.owner == owner)
            .max_by_key(|s| s.created_unix_ms)
            .map(|s| s.session_id.clone());
        match newest {
            Some(id) => self.defaults.insert(owner, id),
            None => self.defaults.remove(&owner),
        };
    }

    fn forget(&mut self, s: &LogonSession) {
        if self.defaults.get(&s.owner) == Some(&s.session_id) {
            self.pick_default(s.owner);
        }
    }
}

/// All open sessions.
#[derive(Default)]
pub struct SessionTable {
    inner: Mutex<Tables>,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SessionTable {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Every change keeps the maps valid at each step, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails with RESOURCE_EXHAUSTED when `owner` already has `limit` sessions.
    pub fn check_limit(&self, owner: Caller, limit: usize) -> Result<(), LsaError> {
        let n = self.tables().open.values().filter(|s| s.owner == owner).count();
        if n >= limit {
            return Err(LsaError::ResourceExhausted(format!(
                "{owner} already has {n} logon sessions (the limit); log off one first"
            )));
        }
        Ok(())
    }

    /// Adds a session, which becomes its owner's default when `make_default` is set or the owner
    /// has none.
    pub fn insert(&self, s: LogonSession, make_default: bool) {
        let mut t = self.tables();
        if make_default || !t.defaults.contains_key(&s.owner) {
            t.defaults.insert(s.owner, s.session_id.clone());
        }
        t.open.insert(s.session_id.clone(), s);
    }

    /// Makes the open session `id` of `caller` its default.
    pub fn set_default(&self, caller: Caller, id: &str) -> Result<(), LsaError> {
        let mut t = self.tables();
        match t.open.get(id) {
            Some(s) if s.owner == caller => {
                t.defaults.insert(caller, id.to_string());
                Ok(())
            }
            Some(_) => Err(LsaError::PermissionDenied(format!(
                "logon session {id} belongs to another user"
            ))),
            None => Err(LsaError::NotFound(format!("no logon session {id}"))),
        }
    }

    /// The id of `owner`'s default session, if it has one.
    pub fn default_of(&self, owner: Caller) -> Option<String> {
        self.tables().defaults.get(&owner).cloned()
    }

    /// The session `id` if `caller` owns it and it belongs to the enclave boot `boot_id`.
    pub fn get(&self, caller: Caller, id: &str, boot_id: &[u8]) -> Result<LogonSession, LsaError> {
        let t = self.tables();
        let Some(s) = t.open.get(id) else {
            return Err(match t.lost.get(id) {
                Some((owner, _)) if *owner == caller => LsaError::NotFound(format!(
                    "logon session {id} was lost: the enclave restarted since it was made; log on again"
                )),
                Some(_) => LsaError::PermissionDenied(format!("logon session {id} belongs to another user")),
                None => LsaError::NotFound(format!("no logon session {id}")),
            });
        };
        if s.owner != caller {
            // Not NOT_FOUND: the caller should learn that the id is not theirs, nothing more.
            return Err(LsaError::PermissionDenied(format!(
                "logon session {id} belongs to another user"
            )));
        }
        if s.boot_id != boot_id {
            return Err(LsaError::NotFound(format!(
                "logon session {id} was lost: the enclave restarted since it was made; log on again"
            )));
        }
        Ok(s.clone())
    }

    /// Moves the open session `id` to `realm`, where a client referral found its account: its
    /// later exchanges go to that realm's KDCs (a KDC named at logon was the first realm's).
    pub fn move_to_realm(&self, id: &str, realm: &str) {
        if let Some(s) = self.tables().open.get_mut(id) {
            s.realm = realm.to_string();
            s.kdc.clear();
        }
    }

    /// Records the user's SID the session's last TGT carried (see [`crate::user_sid`]); a session
    /// gone meanwhile is left alone.
    pub fn set_user_sid(&self, id: &str, sid: &str) {
        if let Some(s) = self.tables().open.get_mut(id) {
            s.user_sid = sid.to_string();
        }
    }

    /// Removes the session `id` of `caller` and returns it.
    pub fn remove(&self, caller: Caller, id: &str) -> Result<LogonSession, LsaError> {
        let mut t = self.tables();
        if let Some((owner, _)) = t.lost.get(id) {
            if *owner != caller {
                return Err(LsaError::PermissionDenied(format!(
                    "logon session {id} belongs to another user"
                )));
            }
            t.lost.remove(id);
            return Err(LsaError::NotFound(format!(
                "logon session {id} was already gone: the enclave restarted since it was made"
            )));
        }
        let map = &mut t.open;
        match map.get(id) {
            None => Err(LsaError::NotFound(format!("no logon session {id}"))),
            Some(s) if s.owner != caller => Err(LsaError::PermissionDenied(format!(
                "logon session {id} belongs to another user"
            ))),
            Some(_) => {
                let s = map
                    .remove(id)
                    .ok_or_else(|| LsaError::NotFound(format!("no logon session {id}")))?;
                t.forget(&s);
                Ok(s)
            }
        }
    }

    /// Sessions `caller` may see: its own, or all for root. Oldest first.
    pub fn list(&self, caller: Caller) -> Vec<LogonSession> {
        let mut v: Vec<_> = self
            .tables()
            .open
            .values()
            .filter(|s| caller.is_root() || s.owner == caller)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.created_unix_ms);
        v
    }

    /// Number of sessions `caller` may see.
    pub fn count(&self, caller: Caller) -> usize {
        self.tables()
            .open
            .values()
            .filter(|s| caller.is_root() || s.owner == caller)
            .count()
    }

    /// Closes the sessions of enclave boots other than `boot_id` (their secrets died with that
    /// enclave) and remembers them as lost; returns how many.
    pub fn drop_other_boots(&self, boot_id: &[u8]) -> usize {
        let mut t = self.tables();
        let stale: Vec<String> = t
            .open
            .values()
            .filter(|s| s.boot_id != boot_id)
            .map(|s| s.session_id.clone())
            .collect();
        for id in &stale {
            if let Some(s) = t.open.remove(id) {
                t.lost_seq += 1;
                let seq = t.lost_seq;
                t.lost.insert(id.clone(), (s.owner, seq));
                t.forget(&s);
            }
        }
        while t.lost.len() > MAX_REMEMBERED_LOST {
            let oldest = t.lost.iter().min_by_key(|(_, (_, seq))| *seq).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => t.lost.remove(&k),
                None => break,
            };
        }
        stale.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, owner: Caller, boot: &[u8]) -> LogonSession {
        LogonSession {
            session_id: id.into(),
            handle: vec![1],
            owner,
            user: "alice".into(),
            domain: "D".into(),
            realm: String::new(),
            kdc: String::new(),
            secret_kind: "password",
            sealed: false,
            created_unix_ms: now_unix_ms(),
            boot_id: boot.to_vec(),
            user_sid: String::new(),
        }
    }

    #[test]
    fn the_user_sid_is_recorded_on_an_open_session_only() {
        let t = SessionTable::default();
        t.insert(session("a", Caller::Uid(1000), b"b1"), true);
        t.set_user_sid("a", "S-1-5-21-1-2-3-1104");
        t.set_user_sid("gone", "S-1-5-21-1-2-3-500");
        let listed = t.list(Caller::Uid(0));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].user_sid, "S-1-5-21-1-2-3-1104");
        t.set_user_sid("a", "");
        assert_eq!(t.get(Caller::Uid(1000), "a", b"b1").unwrap().user_sid, "");
    }

    #[test]
    fn owner_only() {
        let t = SessionTable::default();
        t.insert(session("a", Caller::Uid(1000), b"b1"), true);
        assert!(t.get(Caller::Uid(1000), "a", b"b1").is_ok());
        assert!(matches!(
            t.get(Caller::Uid(1001), "a", b"b1"),
            Err(LsaError::PermissionDenied(_))
        ));
        assert!(matches!(
            t.get(Caller::Uid(0), "a", b"b1"),
            Err(LsaError::PermissionDenied(_))
        ));
        assert!(matches!(
            t.remove(Caller::Uid(1001), "a"),
            Err(LsaError::PermissionDenied(_))
        ));
        assert!(matches!(
            t.get(Caller::Uid(1000), "zz", b"b1"),
            Err(LsaError::NotFound(_))
        ));
        assert_eq!(t.list(Caller::Uid(1001)).len(), 0);
        assert_eq!(t.list(Caller::Uid(0)).len(), 1);
        assert!(t.remove(Caller::Uid(1000), "a").is_ok());
        assert_eq!(t.count(Caller::Uid(0)), 0);
    }

    #[test]
    fn the_newest_logon_is_the_default_until_another_is_chosen() {
        let t = SessionTable::default();
        let (alice, bob) = (Caller::Uid(1000), Caller::Uid(1001));
        assert_eq!(t.default_of(alice), None);
        let mut first = session("a1", alice, b"b1");
        first.created_unix_ms = 1;
        t.insert(first, true);
        let mut second = session("a2", alice, b"b1");
        second.created_unix_ms = 2;
        t.insert(second, true);
        t.insert(session("b1", bob, b"b1"), true);
        assert_eq!(t.default_of(alice).as_deref(), Some("a2"));
        assert_eq!(t.default_of(bob).as_deref(), Some("b1"));
        // Only one's own session can be made the default.
        assert!(matches!(t.set_default(alice, "b1"), Err(LsaError::PermissionDenied(_))));
        assert!(matches!(t.set_default(alice, "zz"), Err(LsaError::NotFound(_))));
        t.set_default(alice, "a1").unwrap();
        assert_eq!(t.default_of(alice).as_deref(), Some("a1"));
        // Logging off the default falls back to the newest remaining session.
        t.remove(alice, "a1").unwrap();
        assert_eq!(t.default_of(alice).as_deref(), Some("a2"));
        t.remove(alice, "a2").unwrap();
        assert_eq!(t.default_of(alice), None);
        // A restarted enclave takes the defaults with the sessions.
        assert_eq!(t.drop_other_boots(b"b2"), 1);
        assert_eq!(t.default_of(bob), None);
    }

    #[test]
    fn a_logon_that_keeps_the_default_becomes_it_only_when_there_is_none() {
        let t = SessionTable::default();
        let alice = Caller::Uid(1000);
        t.insert(session("a1", alice, b"b1"), false);
        assert_eq!(t.default_of(alice).as_deref(), Some("a1"));
        t.insert(session("a2", alice, b"b1"), false);
        assert_eq!(t.default_of(alice).as_deref(), Some("a1"));
        t.insert(session("a3", alice, b"b1"), true);
        assert_eq!(t.default_of(alice).as_deref(), Some("a3"));
    }

    #[test]
    fn restarted_enclave_sessions_are_gone() {
        let t = SessionTable::default();
        t.insert(session("a", Caller::Uid(5), b"old"), true);
        let e = t.get(Caller::Uid(5), "a", b"new").unwrap_err();
        assert!(matches!(&e, LsaError::NotFound(m) if m.contains("restarted")), "{e}");
        assert_eq!(t.drop_other_boots(b"new"), 1);
        assert_eq!(t.count(Caller::Uid(5)), 0);
        let e = t.get(Caller::Uid(5), "a", b"new").unwrap_err();
        assert!(matches!(&e, LsaError::NotFound(m) if m.contains("restarted")), "{e}");
        assert!(matches!(
            t.get(Caller::Uid(6), "a", b"new"),
            Err(LsaError::PermissionDenied(_))
        ));
        assert!(
            t.check_limit(Caller::Uid(5), 1).is_ok(),
            "lost sessions do not count against the limit"
        );
    }

    #[test]
    fn limit_per_uid() {
        let t = SessionTable::default();
        t.insert(session("a", Caller::Uid(5), b"b"), true);
        t.insert(session("b", Caller::Uid(5), b"b"), true);
        assert!(t.check_limit(Caller::Uid(5), 2).is_err());
        assert!(t.check_limit(Caller::Uid(6), 2).is_ok());
    }
}
