//! The logon sessions the enclave holds: who logged on, with which secret.
//!
//! This is where the secrets live. They never leave: no reply carries a field of a
//! [`LogonCredential`]'s secret, and every copy is wiped when dropped ([`Zeroizing`]).
//!
//! The enclave checks a logon itself rather than trusting the proxy's checks: it refuses DES keys
//! and malformed secrets whatever its caller asks.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::enclave::{LogonRequest, logon_request};
use zeroize::{Zeroize, Zeroizing};

/// Bytes of a session handle.
pub const SESSION_HANDLE_LEN: usize = 16;
/// Sessions the enclave holds at most (its memory is small and fixed).
pub const MAX_SESSIONS: usize = 4096;
/// Longest user, domain or realm.
pub const MAX_NAME_LEN: usize = 256;
/// Longest password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Random identifier of a session.
pub type SessionHandle = [u8; SESSION_HANDLE_LEN];

/// A session's secret.
pub enum Secret {
    /// A password (UTF-8), kept until the keys the protocols need are derived from it.
    Password(Zeroizing<String>),
    /// An NT hash.
    NtHash(Zeroizing<[u8; 16]>),
    /// A Kerberos long-term key.
    Key {
        /// Its enctype.
        enctype: i32,
        /// The key.
        value: Zeroizing<Vec<u8>>,
    },
}

impl Secret {
    /// What kind of secret, for messages (never the secret itself).
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Password(_) => "password",
            Secret::NtHash(_) => "nt_hash",
            Secret::Key { .. } => "key",
        }
    }
}

/// A logged-on credential.
pub struct LogonCredential {
    /// User name.
    pub user: String,
    /// NetBIOS domain.
    pub domain: String,
    /// Kerberos realm (may be empty).
    pub realm: String,
    /// The secret.
    pub secret: Secret,
}

/// Why a logon was refused. The messages name the rule, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogonRefused {
    /// The request is malformed (INVALID_ARGUMENT).
    Invalid(String),
    /// Refused by rule (FAILED_PRECONDITION).
    Rule(String),
    /// The enclave holds [`MAX_SESSIONS`] already (RESOURCE_EXHAUSTED).
    Full,
}

fn check_name(field: &str, v: &str, may_be_empty: bool) -> Result<(), LogonRefused> {
    if v.is_empty() && !may_be_empty {
        return Err(LogonRefused::Invalid(format!("{field} must not be empty")));
    }
    if v.len() > MAX_NAME_LEN || v.chars().any(char::is_control) {
        return Err(LogonRefused::Invalid(format!(
            "{field} is too long or has control characters"
        )));
    }
    Ok(())
}

/// Key length of the enctypes the enclave accepts; `None` for any other.
fn key_len(enctype: i32) -> Option<usize> {
    match enctype {
        17 | 19 | 23 => Some(16),
        18 | 20 => Some(32),
        _ => None,
    }
}

/// Turns a logon request into a credential, taking its secret out of `req` (which is left
/// without one). Wipes the secret on refusal.
pub fn credential_from(req: &mut LogonRequest) -> Result<LogonCredential, LogonRefused> {
    let secret = req.secret.take();
    let checked = check_name("user", &req.user, false)
        .and_then(|_| check_name("domain", &req.domain, true))
        .and_then(|_| check_name("realm", &req.realm, true));
    let secret = match (checked, secret) {
        (Err(e), Some(s)) => {
            wipe(s);
            return Err(e);
        }
        (Err(e), None) => return Err(e),
        (Ok(()), None) => return Err(LogonRefused::Invalid("one secret is required".into())),
        (Ok(()), Some(s)) => s,
    };
    let secret = match secret {
        logon_request::Secret::Password(p) => {
            let p = Zeroizing::new(p);
            if p.is_empty() || p.len() > MAX_PASSWORD_LEN {
                return Err(LogonRefused::Invalid(format!(
                    "a password is 1 to {MAX_PASSWORD_LEN} bytes"
                )));
            }
            Secret::Password(p)
        }
        logon_request::Secret::NtHash(h) => {
            let h = Zeroizing::new(h);
            let Ok(arr) = <[u8; 16]>::try_from(h.as_slice()) else {
                return Err(LogonRefused::Invalid("an NT hash is 16 bytes".into()));
            };
            Secret::NtHash(Zeroizing::new(arr))
        }
        logon_request::Secret::Key(k) => {
            let value = Zeroizing::new(k.value);
            if (1..=3).contains(&k.enctype) {
                return Err(LogonRefused::Rule(
                    "DES keys are never accepted: single DES is broken".into(),
                ));
            }
            match key_len(k.enctype) {
                None => return Err(LogonRefused::Invalid(format!("enctype {} is not supported", k.enctype))),
                Some(n) if n != value.len() => {
                    return Err(LogonRefused::Invalid(format!(
                        "a key of enctype {} is {n} bytes",
                        k.enctype
                    )));
                }
                Some(_) => {}
            }
            if req.realm.is_empty() {
                return Err(LogonRefused::Invalid("a Kerberos key needs a realm".into()));
            }
            Secret::Key {
                enctype: k.enctype,
                value,
            }
        }
    };
    Ok(LogonCredential {
        user: core::mem::take(&mut req.user),
        domain: core::mem::take(&mut req.domain),
        realm: core::mem::take(&mut req.realm),
        secret,
    })
}

fn wipe(s: logon_request::Secret) {
    match s {
        logon_request::Secret::Password(mut p) => p.zeroize(),
        logon_request::Secret::NtHash(mut h) => h.zeroize(),
        logon_request::Secret::Key(mut k) => k.value.zeroize(),
    }
}

/// All sessions of this boot of the enclave.
#[derive(Default)]
pub struct CredentialStore {
    sessions: BTreeMap<SessionHandle, LogonCredential>,
}

impl CredentialStore {
    /// An empty store.
    pub const fn new() -> Self {
        Self {
            sessions: BTreeMap::new(),
        }
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Adds `cred` under `handle` (fresh random bytes from the caller).
    pub fn insert(&mut self, handle: SessionHandle, cred: LogonCredential) -> Result<(), LogonRefused> {
        if self.sessions.len() >= MAX_SESSIONS {
            return Err(LogonRefused::Full);
        }
        if self.sessions.contains_key(&handle) {
            // 128 random bits never collide unless the RNG is broken: refuse rather than replace.
            return Err(LogonRefused::Rule(
                "session handle collision: the random source is failing".into(),
            ));
        }
        self.sessions.insert(handle, cred);
        Ok(())
    }

    /// The session `handle`.
    pub fn get(&self, handle: &[u8]) -> Option<&LogonCredential> {
        let h: SessionHandle = handle.try_into().ok()?;
        self.sessions.get(&h)
    }

    /// Removes the session `handle`; its secret is wiped as it is dropped.
    pub fn remove(&mut self, handle: &[u8]) -> bool {
        let Ok(h) = SessionHandle::try_from(handle) else {
            return false;
        };
        self.sessions.remove(&h).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use credguard_proto::enclave::Key;

    fn req(secret: logon_request::Secret) -> LogonRequest {
        LogonRequest {
            user: "u".into(),
            domain: "D".into(),
            realm: "R".into(),
            secret: Some(secret),
        }
    }

    #[test]
    fn accepts_each_kind_of_secret() {
        let mut r = req(logon_request::Secret::Password("pw".into()));
        let c = credential_from(&mut r).unwrap();
        assert_eq!(c.secret.kind(), "password");
        assert!(r.secret.is_none(), "the secret is taken out of the request");
        let c = credential_from(&mut req(logon_request::Secret::NtHash(alloc::vec![1; 16]))).unwrap();
        assert_eq!(c.secret.kind(), "nt_hash");
        let k = Key {
            enctype: 18,
            value: alloc::vec![2; 32],
        };
        assert_eq!(
            credential_from(&mut req(logon_request::Secret::Key(k)))
                .unwrap()
                .secret
                .kind(),
            "key"
        );
    }

    #[test]
    fn refuses_des_and_malformed_secrets() {
        let des = Key {
            enctype: 3,
            value: alloc::vec![0; 8],
        };
        assert!(matches!(
            credential_from(&mut req(logon_request::Secret::Key(des))),
            Err(LogonRefused::Rule(_))
        ));
        let short = Key {
            enctype: 18,
            value: alloc::vec![0; 16],
        };
        assert!(matches!(
            credential_from(&mut req(logon_request::Secret::Key(short))),
            Err(LogonRefused::Invalid(_))
        ));
        let h = logon_request::Secret::NtHash(alloc::vec![0; 15]);
        assert!(matches!(credential_from(&mut req(h)), Err(LogonRefused::Invalid(_))));
        let mut none = req(logon_request::Secret::Password("x".into()));
        none.secret = None;
        assert!(matches!(credential_from(&mut none), Err(LogonRefused::Invalid(_))));
        let mut nouser = req(logon_request::Secret::Password("x".into()));
        nouser.user.clear();
        assert!(matches!(credential_from(&mut nouser), Err(LogonRefused::Invalid(_))));
    }

    #[test]
    fn store_limits_and_removes() {
        let mut s = CredentialStore::new();
        let cred = || credential_from(&mut req(logon_request::Secret::Password("p".into()))).unwrap();
        s.insert([1; 16], cred()).unwrap();
        assert!(matches!(s.insert([1; 16], cred()), Err(LogonRefused::Rule(_))));
        assert!(s.get(&[1; 16]).is_some());
        assert!(s.get(&[1; 15]).is_none());
        assert!(s.remove(&[1; 16]));
        assert!(!s.remove(&[1; 16]));
        for i in 0..MAX_SESSIONS {
            let mut h = [0u8; 16];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.insert(h, cred()).unwrap();
        }
        assert_eq!(s.insert([0xff; 16], cred()), Err(LogonRefused::Full));
    }
}
