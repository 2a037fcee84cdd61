//! The caches, per uid: a collection of named caches (principal, credentials, KDC offset,
//! UUIDs) and the collection's default name.
//!
//! Naming follows sssd-kcm, which MIT's tools and gssproxy (`KCM:%U`) already expect: a uid's
//! primary cache is named `<uid>` (`KCM:1000`), and `GEN_NEW` names new ones `<uid>:<n>`. The
//! store keys everything by the owning uid; which uid a caller may name is the server's rule
//! (`crate::server`). A collection never holds a TGT: the server refuses to store one, and the
//! primary cache of a uid with a default credguard session is *bound* to that session, holding
//! only a keyless TGT entry (times, no key, no ticket) besides the service tickets fetched for
//! it and what programs stored.
//!
//! Limits per uid (caches, credentials, bytes) keep one uid from exhausting the daemon for the
//! others; tickets the daemon fetched are dropped once they expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ccache::{Credential, Principal};
use crate::protocol::{MatchCred, UUID_LEN, Uuid, code};

/// Per-uid limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Caches one uid may have (its bound primary cache is not counted).
    pub caches_per_uid: usize,
    /// Credentials one uid may have over all its caches (keyless TGT entries not counted).
    pub credentials_per_uid: usize,
    /// Bytes (encoded credentials, principals and names) one uid may have.
    pub bytes_per_uid: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            caches_per_uid: 64,
            credentials_per_uid: 1024,
            bytes_per_uid: 8 << 20,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The cache does not exist (or was destroyed).
    #[error("no cache named {0:?}")]
    NoCache(String),
    /// The uid has as many caches as allowed.
    #[error("uid {uid} has {max} caches, the limit")]
    TooManyCaches {
        /// The uid.
        uid: u32,
        /// The limit.
        max: usize,
    },
    /// The uid has as many credentials as allowed.
    #[error("uid {uid} has {max} credentials, the limit")]
    TooManyCredentials {
        /// The uid.
        uid: u32,
        /// The limit.
        max: usize,
    },
    /// The uid's caches would take more bytes than allowed.
    #[error("uid {uid}'s caches would exceed {max} bytes")]
    TooManyBytes {
        /// The uid.
        uid: u32,
        /// The limit.
        max: usize,
    },
    /// The cache is bound to a credguard session of another principal.
    #[error("cache {name:?} belongs to the credguard session of {principal}")]
    Bound {
        /// The cache.
        name: String,
        /// The session's principal.
        principal: String,
    },
}

impl StoreError {
    /// The KCM error code that answers it.
    pub fn code(&self) -> i32 {
        match self {
            StoreError::NoCache(_) => code::KRB5_FCC_NOFILE,
            StoreError::TooManyCaches { .. }
            | StoreError::TooManyCredentials { .. }
            | StoreError::TooManyBytes { .. } => code::KRB5_CC_NOMEM,
            StoreError::Bound { .. } => code::KRB5_FCC_PERM,
        }
    }
}

/// Where a credential came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A program stored it (`STORE`, `REPLACE`): kept until removed, like MIT's own caches.
    Stored,
    /// The daemon fetched it from the enclave: dropped once it expires.
    Fetched,
}

/// What a primary cache is bound to: a uid's default credguard session.
#[derive(Clone, Debug)]
pub struct SessionView {
    /// The session's identifier.
    pub session_id: String,
    /// The session's client principal: the cache's principal.
    pub principal: Principal,
    /// The keyless TGT entry (see [`Credential::keyless_tgt`]), if the TGT's times are known.
    pub tgt: Option<Credential>,
}

struct Entry {
    uuid: Uuid,
    cred: Arc<Credential>,
    origin: Origin,
    size: usize,
}

struct Binding {
    session_id: String,
    tgt: Option<(Uuid, Arc<Credential>)>,
}

struct Cache {
    uuid: Uuid,
    principal: Principal,
    entries: Vec<Entry>,
    kdc_offset: i32,
    binding: Option<Binding>,
}

impl Cache {
    fn size(&self, name: &str) -> usize {
        name.len() + self.principal.encoded_len() + self.entries.iter().map(|e| e.size).sum::<usize>()
    }

    fn prune_expired(&mut self, now: u32) {
        self.entries
            .retain(|e| e.origin == Origin::Stored || e.cred.times.endtime > now);
    }

    fn listing(&self) -> Vec<(Uuid, Arc<Credential>)> {
        let tgt = self.binding.as_ref().and_then(|b| b.tgt.clone());
        tgt.into_iter()
            .chain(self.entries.iter().map(|e| (e.uuid, e.cred.clone())))
            .collect()
    }
}

#[derive(Default)]
struct Collection {
    caches: BTreeMap<String, Cache>,
    default_name: Option<String>,
    next_generated: u64,
}

impl Collection {
    fn usage(&self) -> (usize, usize) {
        let creds = self.caches.values().map(|c| c.entries.len()).sum();
        let bytes = self.caches.iter().map(|(n, c)| c.size(n)).sum();
        (creds, bytes)
    }

    fn unbound_caches(&self) -> usize {
        self.caches.values().filter(|c| c.binding.is_none()).count()
    }
}

/// Every uid's caches.
pub struct Store {
    collections: HashMap<u32, Collection>,
    limits: Limits,
    uuid_prefix: [u8; 8],
    next_uuid: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("uids", &self.collections.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store with `limits`.
    pub fn new(limits: Limits) -> Self {
        // UUIDs need only be unique; a per-process prefix keeps those of a restarted daemon
        // from meeting the ones a long-running client still holds.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let prefix = nanos ^ (u64::from(std::process::id()) << 40);
        Store {
            collections: HashMap::new(),
            limits,
            uuid_prefix: prefix.to_be_bytes(),
            next_uuid: 1,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn new_uuid(&mut self) -> Uuid {
        let mut u = [0u8; UUID_LEN];
        u[..8].copy_from_slice(&self.uuid_prefix);
        u[8..].copy_from_slice(&self.next_uuid.to_be_bytes());
        self.next_uuid = self.next_uuid.wrapping_add(1);
        u
    }

    /// The name of `uid`'s primary cache: `<uid>`, the one bound to its default session.
    pub fn primary_name(uid: u32) -> String {
        uid.to_string()
    }

    /// The default cache name of `uid`'s collection (its primary cache unless it switched).
    pub fn default_name(&self, uid: u32) -> String {
        self.collections
            .get(&uid)
            .and_then(|c| c.default_name.clone())
            .unwrap_or_else(|| Self::primary_name(uid))
    }

    /// Makes `name` the default cache of `uid`'s collection.
    pub fn set_default(&mut self, uid: u32, name: &str) {
        let c = self.collections.entry(uid).or_default();
        c.default_name = (name != Self::primary_name(uid)).then(|| name.to_string());
        self.drop_if_empty(uid);
    }

    /// A cache name of `uid` no cache has: `<uid>:<n>`. Nothing is created until a program
    /// initializes it.
    pub fn gen_new(&mut self, uid: u32) -> String {
        let c = self.collections.entry(uid).or_default();
        let name = loop {
            c.next_generated += 1;
            let name = format!("{uid}:{}", c.next_generated);
            if !c.caches.contains_key(&name) {
                break name;
            }
        };
        self.drop_if_empty(uid);
        name
    }

    fn drop_if_empty(&mut self, uid: u32) {
        if self
            .collections
            .get(&uid)
            .is_some_and(|c| c.caches.is_empty() && c.default_name.is_none() && c.next_generated == 0)
        {
            self.collections.remove(&uid);
        }
    }

    fn cache(&self, uid: u32, name: &str) -> Result<&Cache, StoreError> {
        self.collections
            .get(&uid)
            .and_then(|c| c.caches.get(name))
            .ok_or_else(|| StoreError::NoCache(name.to_string()))
    }

    fn cache_mut(&mut self, uid: u32, name: &str) -> Result<&mut Cache, StoreError> {
        self.collections
            .get_mut(&uid)
            .and_then(|c| c.caches.get_mut(name))
            .ok_or_else(|| StoreError::NoCache(name.to_string()))
    }

    /// Checks that `uid` may grow by `add_creds` credentials and `add_bytes` bytes.
    fn check_room(&self, uid: u32, add_creds: usize, add_bytes: usize) -> Result<(), StoreError> {
        let (creds, bytes) = self.collections.get(&uid).map_or((0, 0), Collection::usage);
        if creds + add_creds > self.limits.credentials_per_uid {
            return Err(StoreError::TooManyCredentials {
                uid,
                max: self.limits.credentials_per_uid,
            });
        }
        if bytes + add_bytes > self.limits.bytes_per_uid {
            return Err(StoreError::TooManyBytes {
                uid,
                max: self.limits.bytes_per_uid,
            });
        }
        Ok(())
    }

    /// Empties cache `name` (creating it) and gives it `principal`. A cache bound to a credguard
    /// session keeps its binding and takes only that session's principal.
    pub fn initialize(&mut self, uid: u32, name: &str, principal: Principal) -> Result<(), StoreError> {
        self.replace(uid, name, 0, principal, Vec::new())
    }

    /// Replaces cache `name` whole (creating it): its principal, KDC offset and credentials, all
    /// or nothing (MIT's `REPLACE`).
    pub fn replace(
        &mut self,
        uid: u32,
        name: &str,
        kdc_offset: i32,
        principal: Principal,
        creds: Vec<Credential>,
    ) -> Result<(), StoreError> {
        let existing = self.collections.get(&uid).and_then(|c| c.caches.get(name));
        let bound_principal = existing.filter(|c| c.binding.is_some()).map(|c| &c.principal);
        if let Some(bound) = bound_principal
            && *bound != principal
        {
            return Err(StoreError::Bound {
                name: name.to_string(),
                principal: bound.to_string(),
            });
        }
        let is_new = existing.is_none();
        if is_new
            && self
                .collections
                .get(&uid)
                .is_some_and(|c| c.unbound_caches() >= self.limits.caches_per_uid)
        {
            return Err(StoreError::TooManyCaches {
                uid,
                max: self.limits.caches_per_uid,
            });
        }
        let old = existing.map_or((0, 0), |c| (c.entries.len(), c.size(name)));
        let sizes: Vec<usize> = creds.iter().map(Credential::encoded_len).collect();
        let new_bytes = name.len() + principal.encoded_len() + sizes.iter().sum::<usize>();
        let (creds_now, bytes_now) = self.collections.get(&uid).map_or((0, 0), Collection::usage);
        if creds_now - old.0 + creds.len() > self.limits.credentials_per_uid {
            return Err(StoreError::TooManyCredentials {
                uid,
                max: self.limits.credentials_per_uid,
            });
        }
        if bytes_now - old.1 + new_bytes > self.limits.bytes_per_uid {
            return Err(StoreError::TooManyBytes {
                uid,
                max: self.limits.bytes_per_uid,
            });
        }
        let entries: Vec<Entry> = creds
            .into_iter()
            .zip(sizes)
            .map(|(cred, size)| Entry {
                uuid: self.new_uuid(),
                cred: Arc::new(cred),
                origin: Origin::Stored,
                size,
            })
            .collect();
        let fresh_uuid = self.new_uuid();
        let collection = self.collections.entry(uid).or_default();
        let cache = collection.caches.entry(name.to_string()).or_insert_with(|| Cache {
            uuid: fresh_uuid,
            principal: principal.clone(),
            entries: Vec::new(),
            kdc_offset: 0,
            binding: None,
        });
        cache.principal = principal;
        cache.entries = entries;
        cache.kdc_offset = kdc_offset;
        Ok(())
    }

    /// Destroys cache `name`. A cache bound to a credguard session loses what was fetched or
    /// stored into it but stays, with the session's principal and keyless TGT entry: the session
    /// is ended with `credguardctl logoff`, not by a ccache operation.
    pub fn destroy(&mut self, uid: u32, name: &str) -> Result<(), StoreError> {
        let cache = self.cache_mut(uid, name)?;
        if cache.binding.is_some() {
            cache.entries.clear();
            cache.kdc_offset = 0;
            return Ok(());
        }
        if let Some(c) = self.collections.get_mut(&uid) {
            c.caches.remove(name);
        }
        self.drop_if_empty(uid);
        Ok(())
    }

    /// Adds `cred` to cache `name`, replacing an entry of the same client and server. The
    /// server refuses TGTs before this.
    pub fn store(
        &mut self,
        uid: u32,
        name: &str,
        cred: Credential,
        origin: Origin,
        now: u32,
    ) -> Result<(), StoreError> {
        let size = cred.encoded_len();
        let cache = self.cache_mut(uid, name)?;
        cache.prune_expired(now);
        let same =
            |e: &Entry| e.cred.client == cred.client && e.cred.server == cred.server && e.cred.is_skey == cred.is_skey;
        let replaced = cache.entries.iter().find(|e| same(e)).map_or((0, 0), |e| (1, e.size));
        self.check_room(uid, 1 - replaced.0, size.saturating_sub(replaced.1))?;
        let uuid = self.new_uuid();
        let cache = self.cache_mut(uid, name)?;
        cache.entries.retain(|e| !same(e));
        cache.entries.push(Entry {
            uuid,
            cred: Arc::new(cred),
            origin,
            size,
        });
        Ok(())
    }

    /// The principal of cache `name`.
    pub fn principal(&self, uid: u32, name: &str) -> Result<&Principal, StoreError> {
        Ok(&self.cache(uid, name)?.principal)
    }

    /// The credentials of cache `name` with their UUIDs: the keyless TGT entry first if the cache
    /// is bound, then the others in the order they came (expired fetched tickets dropped).
    pub fn credentials(&mut self, uid: u32, name: &str, now: u32) -> Result<Vec<(Uuid, Arc<Credential>)>, StoreError> {
        let cache = self.cache_mut(uid, name)?;
        cache.prune_expired(now);
        Ok(cache.listing())
    }

    /// The credential `uuid` of cache `name`, if it is still there.
    pub fn credential(&self, uid: u32, name: &str, uuid: &Uuid) -> Result<Option<Arc<Credential>>, StoreError> {
        Ok(self
            .cache(uid, name)?
            .listing()
            .into_iter()
            .find(|(u, _)| u == uuid)
            .map(|(_, c)| c))
    }

    /// The first credential of cache `name` that matches `tag` under `flags`, never a `krbtgt`
    /// entry (lookups never yield one, keyless or not).
    pub fn find(
        &mut self,
        uid: u32,
        name: &str,
        flags: u32,
        tag: &MatchCred,
        now: u32,
    ) -> Result<Option<Arc<Credential>>, StoreError> {
        let cache = self.cache_mut(uid, name)?;
        cache.prune_expired(now);
        Ok(cache
            .entries
            .iter()
            .find(|e| !e.cred.is_tgt() && tag.matches(flags, &e.cred))
            .map(|e| e.cred.clone()))
    }

    /// Removes the credentials of cache `name` that match `tag` (never the keyless TGT entry);
    /// returns how many.
    pub fn remove(&mut self, uid: u32, name: &str, flags: u32, tag: &MatchCred) -> Result<usize, StoreError> {
        let cache = self.cache_mut(uid, name)?;
        let before = cache.entries.len();
        cache.entries.retain(|e| !tag.matches(flags, &e.cred));
        Ok(before - cache.entries.len())
    }

    /// The KDC time offset of cache `name`.
    pub fn kdc_offset(&self, uid: u32, name: &str) -> Result<i32, StoreError> {
        Ok(self.cache(uid, name)?.kdc_offset)
    }

    /// Sets the KDC time offset of cache `name`.
    pub fn set_kdc_offset(&mut self, uid: u32, name: &str, offset: i32) -> Result<(), StoreError> {
        self.cache_mut(uid, name)?.kdc_offset = offset;
        Ok(())
    }

    /// The UUIDs of `uid`'s caches.
    pub fn cache_uuids(&self, uid: u32) -> Vec<Uuid> {
        self.collections
            .get(&uid)
            .map(|c| c.caches.values().map(|c| c.uuid).collect())
            .unwrap_or_default()
    }

    /// The name of `uid`'s cache `uuid`, if it exists.
    pub fn cache_name(&self, uid: u32, uuid: &Uuid) -> Option<String> {
        self.collections
            .get(&uid)?
            .caches
            .iter()
            .find(|(_, c)| c.uuid == *uuid)
            .map(|(n, _)| n.clone())
    }

    /// The session cache `name` is bound to, if any.
    pub fn bound_session(&self, uid: u32, name: &str) -> Option<&str> {
        self.cache(uid, name)
            .ok()?
            .binding
            .as_ref()
            .map(|b| b.session_id.as_str())
    }

    /// Binds `uid`'s primary cache to `session` (creating it; a cache of that name made by a
    /// program is taken over). Bound to another session or principal before, it loses every
    /// ticket of the old one. The keyless TGT entry follows the session's TGT.
    pub fn bind(&mut self, uid: u32, session: SessionView) {
        let name = Self::primary_name(uid);
        let cache_uuid = self.new_uuid();
        let tgt_uuid = self.new_uuid();
        let collection = self.collections.entry(uid).or_default();
        let cache = collection.caches.entry(name).or_insert_with(|| Cache {
            uuid: cache_uuid,
            principal: session.principal.clone(),
            entries: Vec::new(),
            kdc_offset: 0,
            binding: None,
        });
        let same_session = cache
            .binding
            .as_ref()
            .is_some_and(|b| b.session_id == session.session_id)
            && cache.principal == session.principal;
        if !same_session {
            cache.entries.clear();
            cache.kdc_offset = 0;
            cache.principal = session.principal;
            cache.binding = Some(Binding {
                session_id: session.session_id,
                tgt: None,
            });
        }
        if let Some(b) = cache.binding.as_mut() {
            let unchanged = matches!((&b.tgt, &session.tgt), (Some((_, old)), Some(new)) if **old == *new);
            if !unchanged {
                // A new UUID when the entry changes, as for any credential MIT stores anew.
                b.tgt = session.tgt.map(|t| (tgt_uuid, Arc::new(t)));
            }
        }
    }

    /// Unbinds `uid`'s primary cache (its session ended or is no longer the default): the cache
    /// and every ticket fetched for the session go.
    pub fn unbind(&mut self, uid: u32) {
        let name = Self::primary_name(uid);
        if let Some(c) = self.collections.get_mut(&uid)
            && c.caches.get(&name).is_some_and(|c| c.binding.is_some())
        {
            c.caches.remove(&name);
        }
        self.drop_if_empty(uid);
    }

    /// How many uids have anything in the store.
    pub fn uids(&self) -> usize {
        self.collections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ccache::tests::service_cred;
    use crate::ccache::{NT_PRINCIPAL, Times};

    fn alice() -> Principal {
        Principal::parse("alice@R", NT_PRINCIPAL).unwrap()
    }

    fn tag(server: &str) -> MatchCred {
        MatchCred {
            server: Some(Principal::parse(server, 2).unwrap()),
            ..MatchCred::default()
        }
    }

    fn session(id: &str) -> SessionView {
        let times = Times {
            authtime: 10,
            starttime: 10,
            endtime: 5000,
            renew_till: 0,
        };
        SessionView {
            session_id: id.into(),
            principal: alice(),
            tgt: Some(Credential::keyless_tgt(&alice(), "R", 18, times)),
        }
    }

    #[test]
    fn caches_store_find_list_remove() {
        let mut s = Store::new(Limits::default());
        assert_eq!(s.default_name(1000), "1000");
        assert_eq!(s.principal(1000, "1000"), Err(StoreError::NoCache("1000".into())));
        s.initialize(1000, "1000", alice()).unwrap();
        s.store(
            1000,
            "1000",
            service_cred("alice@R", "HTTP/a@R", 100),
            Origin::Stored,
            0,
        )
        .unwrap();
        s.store(
            1000,
            "1000",
            service_cred("alice@R", "HTTP/b@R", 100),
            Origin::Stored,
            0,
        )
        .unwrap();
        // The same server again replaces the entry, under a new UUID.
        let first = s.credentials(1000, "1000", 0).unwrap();
        s.store(
            1000,
            "1000",
            service_cred("alice@R", "HTTP/a@R", 200),
            Origin::Stored,
            0,
        )
        .unwrap();
        let list = s.credentials(1000, "1000", 0).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].1.times.endtime, 200);
        assert!(s.credential(1000, "1000", &first[0].0).unwrap().is_none());
        assert!(s.credential(1000, "1000", &list[1].0).unwrap().is_some());
        let found = s.find(1000, "1000", 0, &tag("HTTP/b@R"), 0).unwrap().unwrap();
        assert_eq!(found.server.to_string(), "HTTP/b@R");
        assert!(s.find(1000, "1000", 0, &tag("HTTP/c@R"), 0).unwrap().is_none());
        assert_eq!(s.remove(1000, "1000", 0, &tag("HTTP/b@R")).unwrap(), 1);
        assert_eq!(s.credentials(1000, "1000", 0).unwrap().len(), 1);
        s.set_kdc_offset(1000, "1000", -3).unwrap();
        assert_eq!(s.kdc_offset(1000, "1000"), Ok(-3));
        s.destroy(1000, "1000").unwrap();
        assert!(s.principal(1000, "1000").is_err());
        assert_eq!(s.uids(), 0, "an empty collection is dropped");
    }

    #[test]
    fn uids_never_see_each_other() {
        let mut s = Store::new(Limits::default());
        s.initialize(1000, "shared-name", alice()).unwrap();
        s.store(
            1000,
            "shared-name",
            service_cred("alice@R", "HTTP/a@R", 100),
            Origin::Stored,
            0,
        )
        .unwrap();
        // The same name under another uid is another cache (or none).
        assert!(s.principal(1001, "shared-name").is_err());
        assert!(s.credentials(1001, "shared-name", 0).is_err());
        assert!(s.cache_uuids(1001).is_empty());
        let uuid = s.cache_uuids(1000)[0];
        assert_eq!(s.cache_name(1001, &uuid), None);
        assert_eq!(s.cache_name(1000, &uuid).as_deref(), Some("shared-name"));
        s.initialize(1001, "shared-name", Principal::parse("bob@R", 1).unwrap())
            .unwrap();
        assert!(s.credentials(1001, "shared-name", 0).unwrap().is_empty());
        assert_eq!(s.credentials(1000, "shared-name", 0).unwrap().len(), 1);
    }

    #[test]
    fn limits_per_uid() {
        let limits = Limits {
            caches_per_uid: 2,
            credentials_per_uid: 3,
            bytes_per_uid: 2000,
        };
        let mut s = Store::new(limits);
        s.initialize(1, "a", alice()).unwrap();
        s.initialize(1, "b", alice()).unwrap();
        assert_eq!(
            s.initialize(1, "c", alice()),
            Err(StoreError::TooManyCaches { uid: 1, max: 2 })
        );
        // Re-initializing an existing cache is no new cache.
        s.initialize(1, "a", alice()).unwrap();
        for server in ["h/1@R", "h/2@R", "h/3@R"] {
            s.store(1, "a", service_cred("alice@R", server, 100), Origin::Stored, 0)
                .unwrap();
        }
        let e = s
            .store(1, "b", service_cred("alice@R", "h/4@R", 100), Origin::Stored, 0)
            .unwrap_err();
        assert_eq!(e, StoreError::TooManyCredentials { uid: 1, max: 3 });
        assert_eq!(e.code(), code::KRB5_CC_NOMEM);
        // Replacing one is fine at the limit.
        s.store(1, "a", service_cred("alice@R", "h/1@R", 200), Origin::Stored, 0)
            .unwrap();
        // Another uid is not affected by uid 1 being full.
        s.initialize(2, "a", alice()).unwrap();
        s.store(2, "a", service_cred("alice@R", "h/4@R", 100), Origin::Stored, 0)
            .unwrap();
        // Bytes.
        let mut big = service_cred("alice@R", "h/big@R", 100);
        big.ticket = vec![0; 1900];
        assert_eq!(
            s.store(2, "a", big.clone(), Origin::Stored, 0),
            Err(StoreError::TooManyBytes { uid: 2, max: 2000 })
        );
        assert_eq!(
            s.replace(2, "a", 0, alice(), vec![big]),
            Err(StoreError::TooManyBytes { uid: 2, max: 2000 })
        );
        // A failed REPLACE changed nothing.
        assert_eq!(s.credentials(2, "a", 0).unwrap().len(), 1);
    }

    #[test]
    fn fetched_tickets_expire_stored_ones_stay() {
        let mut s = Store::new(Limits::default());
        s.initialize(1, "a", alice()).unwrap();
        s.store(1, "a", service_cred("alice@R", "h/f@R", 100), Origin::Fetched, 0)
            .unwrap();
        s.store(1, "a", service_cred("alice@R", "h/s@R", 100), Origin::Stored, 0)
            .unwrap();
        assert_eq!(s.credentials(1, "a", 99).unwrap().len(), 2);
        let left = s.credentials(1, "a", 100).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.server.to_string(), "h/s@R");
        assert!(s.find(1, "a", 0, &tag("h/f@R"), 100).unwrap().is_none());
    }

    #[test]
    fn bound_cache_follows_the_session() {
        let mut s = Store::new(Limits::default());
        s.bind(1000, session("s1"));
        assert_eq!(s.principal(1000, "1000"), Ok(&alice()));
        assert_eq!(s.bound_session(1000, "1000"), Some("s1"));
        let list = s.credentials(1000, "1000", 0).unwrap();
        assert_eq!(list.len(), 1);
        assert!(list[0].1.is_tgt() && list[0].1.key.key.is_empty());
        // The keyless TGT entry is never found by a lookup, nor removed.
        assert!(s.find(1000, "1000", 0, &tag("krbtgt/R@R"), 0).unwrap().is_none());
        assert_eq!(s.remove(1000, "1000", 0, &tag("krbtgt/R@R")).unwrap(), 0);
        s.store(
            1000,
            "1000",
            service_cred("alice@R", "HTTP/a@R", 100),
            Origin::Fetched,
            0,
        )
        .unwrap();
        // The same session again: nothing lost, same TGT entry UUID.
        s.bind(1000, session("s1"));
        let again = s.credentials(1000, "1000", 0).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].0, list[0].0);
        // Re-initializing with the session's principal empties it; with another, refused.
        let bob = Principal::parse("bob@R", 1).unwrap();
        let e = s.initialize(1000, "1000", bob).unwrap_err();
        assert_eq!(e.code(), code::KRB5_FCC_PERM);
        // DESTROY keeps the binding, drops the tickets.
        s.destroy(1000, "1000").unwrap();
        assert_eq!(s.credentials(1000, "1000", 0).unwrap().len(), 1);
        // Another session: the old session's tickets are gone.
        s.store(
            1000,
            "1000",
            service_cred("alice@R", "HTTP/a@R", 100),
            Origin::Fetched,
            0,
        )
        .unwrap();
        s.bind(1000, session("s2"));
        assert_eq!(s.credentials(1000, "1000", 0).unwrap().len(), 1);
        assert_eq!(s.bound_session(1000, "1000"), Some("s2"));
        // Logoff: the cache goes.
        s.unbind(1000);
        assert!(s.principal(1000, "1000").is_err());
        // Unbinding leaves a program's own primary cache alone.
        s.initialize(1000, "1000", alice()).unwrap();
        s.unbind(1000);
        assert!(s.principal(1000, "1000").is_ok());
    }

    #[test]
    fn bound_cache_is_not_counted_against_cache_limit() {
        let mut s = Store::new(Limits {
            caches_per_uid: 1,
            ..Limits::default()
        });
        s.initialize(5, "5:1", alice()).unwrap();
        s.bind(5, session("s"));
        assert!(s.principal(5, "5").is_ok());
        assert!(s.initialize(5, "5:2", alice()).is_err());
    }

    #[test]
    fn generated_names_and_default() {
        let mut s = Store::new(Limits::default());
        let a = s.gen_new(7);
        let b = s.gen_new(7);
        assert!(a.starts_with("7:") && b.starts_with("7:") && a != b);
        s.initialize(7, &a, alice()).unwrap();
        s.set_default(7, &a);
        assert_eq!(s.default_name(7), a);
        assert_eq!(s.default_name(8), "8");
        s.set_default(7, "7");
        assert_eq!(s.default_name(7), "7");
    }
}
