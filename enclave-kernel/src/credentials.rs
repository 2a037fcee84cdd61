//! The logon sessions the enclave holds: who logged on, with which secret.
//!
//! This is where the secrets live. They never leave: no reply carries a field of a
//! [`LogonCredential`]'s secret, and every copy is wiped when dropped ([`Zeroizing`]).
//!
//! The enclave checks a logon itself rather than trusting the proxy's: the checks of
//! `credguard_proto::checks` (names, lengths, no DES, a realm for a key) run here again, whatever
//! its caller asks.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use credguard_proto::attest::Owner;
use credguard_proto::checks::{self, CheckError};
use credguard_proto::enclave::{LogonRequest, logon_request};
use credguard_proto::enctype::EnctypeRefused;
use credguard_proto::principal;
use credguard_proto::secret::SecretRef;
use zeroize::{Zeroize, Zeroizing};

use crate::ratelimit::CredentialId;

pub use credguard_proto::checks::SESSION_HANDLE_LEN;
/// Sessions the enclave holds at most (its memory is small and fixed).
pub const MAX_SESSIONS: usize = 4096;
/// Sessions one owner (uid) holds at most, so that no caller can take every slot.
pub const MAX_SESSIONS_PER_OWNER: usize = 256;

/// Random identifier of a session.
pub type SessionHandle = [u8; SESSION_HANDLE_LEN];

/// A Kerberos long-term key.
pub struct KerberosKey {
    /// Its enctype.
    pub enctype: i32,
    /// The key.
    pub value: Zeroizing<Vec<u8>>,
}

/// A logged-on credential: the secrets each protocol needs, in the form it needs them.
///
/// A password is not kept as such longer than needed: its NT hash is derived at logon, and it
/// stays only while Kerberos keys are still to be derived from it (string-to-key needs the salt
/// and iteration count the KDC announces). Without a realm it is wiped at logon.
pub struct LogonCredential {
    /// Who logged on (the uid the proxy reported).
    pub owner: Owner,
    /// Whether this session may use rc4-hmac: the image's signed policy allows it and the logon
    /// asked for it (see `credential_from`).
    pub allow_rc4: bool,
    /// Fingerprint of the credential, for its rate limit (set by the service at logon).
    pub id: CredentialId,
    /// User name.
    pub user: String,
    /// NetBIOS domain.
    pub domain: String,
    /// Kerberos realm (may be empty).
    pub realm: String,
    /// `user` is an enterprise name (`user@suffix` asked of `realm`'s KDC, `NT-ENTERPRISE`).
    pub enterprise: bool,
    /// What the logon gave: "password", "nt_hash" or "key".
    pub kind: &'static str,
    /// The NT hash (NTLM): given, or MD4 of the UTF-16LE password.
    pub nt_hash: Option<Zeroizing<[u8; 16]>>,
    /// The password, until the Kerberos keys are derived from it (only with a realm).
    pub password: Option<Zeroizing<String>>,
    /// Kerberos long-term keys: given, or derived from the password.
    pub keys: Vec<KerberosKey>,
}

/// The NT hash of `password`: MD4 of its UTF-16LE encoding (MS-NLMP 3.3.1, NTOWFv1).
pub fn nt_hash(password: &str) -> Zeroizing<[u8; 16]> {
    use md4::{Digest, Md4};
    let mut utf16 = Zeroizing::new(Vec::with_capacity(password.len() * 2));
    for unit in password.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mut out = Zeroizing::new([0u8; 16]);
    out.copy_from_slice(&Md4::digest(utf16.as_slice()));
    out
}

/// Why a logon was refused. The messages name the rule, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogonRefused {
    /// The request is malformed (INVALID_ARGUMENT).
    Invalid(String),
    /// Refused by rule (FAILED_PRECONDITION).
    Rule(String),
    /// The enclave holds [`MAX_SESSIONS`] already, or the owner [`MAX_SESSIONS_PER_OWNER`]
    /// (RESOURCE_EXHAUSTED).
    Full(&'static str),
}

impl From<CheckError> for LogonRefused {
    fn from(e: CheckError) -> Self {
        if e.is_rule() {
            LogonRefused::Rule(e.to_string())
        } else {
            LogonRefused::Invalid(e.to_string())
        }
    }
}

/// Turns a logon request into a credential, taking its secret out of `req` (which is left
/// without one). Wipes the secret on refusal. The session may use rc4-hmac only if the image's
/// signed policy allows it (`policy_allows_rc4`) and the request asks for it (`req.allow_rc4`);
/// an rc4-hmac key is refused otherwise.
pub fn credential_from(req: &mut LogonRequest, policy_allows_rc4: bool) -> Result<LogonCredential, LogonRefused> {
    let allow_rc4 = policy_allows_rc4 && req.allow_rc4;
    let checked = checks::credential_names(&req.user, &req.domain, &req.realm)
        .and_then(|()| checks::secret(req.secret.as_ref().map(SecretRef::from), &req.realm, allow_rc4));
    let secret = match (checked, req.secret.take()) {
        (Ok(_), Some(s)) => s,
        (Err(e), mut s) => {
            s.zeroize();
            return Err(match e {
                CheckError::Enctype(EnctypeRefused::Rc4NotAllowed) => {
                    LogonRefused::Rule(rc4_refused(policy_allows_rc4))
                }
                e => e.into(),
            });
        }
        (Ok(_), None) => return Err(CheckError::NoSecret.into()),
    };
    let names = match principal::logon_names(&req.user, &req.domain, &req.realm, &req.default_realm)
        .and_then(|n| checks::credential_names(&n.user, &n.domain, &n.realm).map(|()| n))
    {
        Ok(n) => n,
        Err(e) => {
            let mut s = Some(secret);
            s.zeroize();
            return Err(e.into());
        }
    };
    let mut cred = LogonCredential {
        owner: Owner(req.owner),
        allow_rc4,
        id: [0; 16],
        user: names.user,
        domain: names.domain,
        realm: names.realm,
        enterprise: names.enterprise,
        kind: "password",
        nt_hash: None,
        password: None,
        keys: Vec::new(),
    };
    // The checks above passed: each kind has its length, a key its enctype and a realm.
    match secret {
        logon_request::Secret::Password(p) => {
            let p = Zeroizing::new(p);
            cred.nt_hash = Some(nt_hash(&p));
            if !cred.realm.is_empty() {
                cred.password = Some(p);
            }
        }
        logon_request::Secret::NtHash(h) => {
            let h = Zeroizing::new(h);
            let Ok(arr) = <[u8; 16]>::try_from(h.as_slice()) else {
                return Err(CheckError::NtHashLength.into());
            };
            cred.kind = "nt_hash";
            cred.nt_hash = Some(Zeroizing::new(arr));
        }
        logon_request::Secret::Key(k) => {
            cred.kind = "key";
            cred.keys.push(KerberosKey {
                enctype: k.enctype,
                value: Zeroizing::new(k.value),
            });
        }
        // The service opens a sealed secret before it gets here (see `crate::sealing`).
        logon_request::Secret::Sealed(_) => {
            return Err(LogonRefused::Invalid("a sealed secret must be opened first".into()));
        }
    }
    Ok(cred)
}

/// Why rc4-hmac is refused for a session: by the image's policy, or by the logon itself.
pub fn rc4_refused(policy_allows_rc4: bool) -> String {
    if policy_allows_rc4 {
        "rc4-hmac was not asked for at logon (kerberos.allow_rc4 for secrets the proxy forwards; a sealed \
         secret's client refused it)"
            .into()
    } else {
        "rc4-hmac is refused by the enclave image's signed policy (sign the image with \
         `credguard-image sign --allow-rc4` to allow it; kerberos.allow_rc4 alone cannot)"
            .into()
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
            return Err(LogonRefused::Full("the enclave holds as many sessions as it can"));
        }
        if self.count_of(cred.owner) >= MAX_SESSIONS_PER_OWNER {
            return Err(LogonRefused::Full(
                "this user holds as many sessions as the enclave allows one user: log off some",
            ));
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

    /// Sessions of `owner`.
    pub fn count_of(&self, owner: Owner) -> usize {
        self.sessions.values().filter(|c| c.owner == owner).count()
    }

    /// The session `handle`.
    pub fn get(&self, handle: &[u8]) -> Option<&LogonCredential> {
        let h: SessionHandle = handle.try_into().ok()?;
        self.sessions.get(&h)
    }

    /// The session `handle`, to update (e.g. Kerberos keys derived from its password).
    pub fn get_mut(&mut self, handle: &[u8]) -> Option<&mut LogonCredential> {
        let h: SessionHandle = handle.try_into().ok()?;
        self.sessions.get_mut(&h)
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
            default_realm: String::new(),
            user: "u".into(),
            domain: "D".into(),
            realm: "R".into(),
            secret: Some(secret),
            operations_per_second: 0,
            owner: 1000,
            allow_rc4: false,
            machine_account: false,
        }
    }

    #[test]
    fn accepts_each_kind_of_secret() {
        let mut r = req(logon_request::Secret::Password("Password".into()));
        let c = credential_from(&mut r, false).unwrap();
        assert_eq!(c.kind, "password");
        assert!(r.secret.is_none(), "the secret is taken out of the request");
        // MS-NLMP 4.2.1: NTOWFv1("Password") = a4f49c406510bdcab6824ee7c30fd852.
        let expected = [
            0xa4, 0xf4, 0x9c, 0x40, 0x65, 0x10, 0xbd, 0xca, 0xb6, 0x82, 0x4e, 0xe7, 0xc3, 0x0f, 0xd8, 0x52,
        ];
        assert_eq!(c.nt_hash.as_deref(), Some(&expected));
        assert!(c.password.is_some(), "kept for Kerberos: the request has a realm");
        let mut no_realm = req(logon_request::Secret::Password("pw".into()));
        no_realm.realm.clear();
        assert!(
            credential_from(&mut no_realm, false).unwrap().password.is_none(),
            "no realm: wiped at logon"
        );
        let c = credential_from(&mut req(logon_request::Secret::NtHash(alloc::vec![1; 16])), false).unwrap();
        assert_eq!(c.kind, "nt_hash");
        let k = Key {
            enctype: 18,
            value: alloc::vec![2; 32],
        };
        let c = credential_from(&mut req(logon_request::Secret::Key(k)), false).unwrap();
        assert_eq!((c.kind, c.keys.len(), c.nt_hash.is_none()), ("key", 1, true));
    }

    #[test]
    fn refuses_des_and_malformed_secrets() {
        let des = Key {
            enctype: 3,
            value: alloc::vec![0; 8],
        };
        assert!(matches!(
            credential_from(&mut req(logon_request::Secret::Key(des)), false),
            Err(LogonRefused::Rule(_))
        ));
        let short = Key {
            enctype: 18,
            value: alloc::vec![0; 16],
        };
        assert!(matches!(
            credential_from(&mut req(logon_request::Secret::Key(short)), false),
            Err(LogonRefused::Invalid(_))
        ));
        let h = logon_request::Secret::NtHash(alloc::vec![0; 15]);
        assert!(matches!(
            credential_from(&mut req(h), false),
            Err(LogonRefused::Invalid(_))
        ));
        let mut none = req(logon_request::Secret::Password("x".into()));
        none.secret = None;
        assert!(matches!(
            credential_from(&mut none, false),
            Err(LogonRefused::Invalid(_))
        ));
        let mut nouser = req(logon_request::Secret::Password("x".into()));
        nouser.user.clear();
        assert!(matches!(
            credential_from(&mut nouser, false),
            Err(LogonRefused::Invalid(_))
        ));
    }

    #[test]
    fn store_limits_and_removes() {
        let mut s = CredentialStore::new();
        let cred = || credential_from(&mut req(logon_request::Secret::Password("p".into())), false).unwrap();
        let of = |uid: u64| {
            let mut r = req(logon_request::Secret::Password("p".into()));
            r.owner = uid;
            credential_from(&mut r, false).unwrap()
        };
        s.insert([1; 16], cred()).unwrap();
        assert!(matches!(s.insert([1; 16], cred()), Err(LogonRefused::Rule(_))));
        assert!(s.get(&[1; 16]).is_some());
        assert!(s.get(&[1; 15]).is_none());
        assert!(s.remove(&[1; 16]));
        assert!(!s.remove(&[1; 16]));
        for i in 0..MAX_SESSIONS {
            let mut h = [0u8; 16];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let r = s.insert(h, of((i / MAX_SESSIONS_PER_OWNER) as u64));
            assert!(r.is_ok(), "{i}");
        }
        assert!(matches!(s.insert([0xff; 16], of(99_999)), Err(LogonRefused::Full(_))));
    }

    #[test]
    fn one_owner_cannot_take_every_session() {
        let mut s = CredentialStore::new();
        let of = |uid: u64| {
            let mut r = req(logon_request::Secret::Password("p".into()));
            r.owner = uid;
            credential_from(&mut r, false).unwrap()
        };
        for i in 0..MAX_SESSIONS_PER_OWNER {
            let mut h = [0u8; 16];
            h[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.insert(h, of(1000)).unwrap();
        }
        let r = s.insert([0xfe; 16], of(1000));
        assert!(
            matches!(&r, Err(LogonRefused::Full(m)) if m.contains("this user")),
            "{r:?}"
        );
        assert!(s.insert([0xfd; 16], of(1001)).is_ok(), "another user still logs on");
    }

    #[test]
    fn rc4_keys_need_the_policy_and_the_logon() {
        let rc4 = || Key {
            enctype: 23,
            value: alloc::vec![3; 16],
        };
        let mut asks = req(logon_request::Secret::Key(rc4()));
        asks.allow_rc4 = true;
        let r = credential_from(&mut asks, false);
        assert!(matches!(&r, Err(LogonRefused::Rule(m)) if m.contains("signed policy")));
        let r = credential_from(&mut req(logon_request::Secret::Key(rc4())), true);
        assert!(matches!(&r, Err(LogonRefused::Rule(m)) if m.contains("not asked for")));
        let mut asks = req(logon_request::Secret::Key(rc4()));
        asks.allow_rc4 = true;
        let c = credential_from(&mut asks, true).unwrap();
        assert!(c.allow_rc4);
        let mut pw = req(logon_request::Secret::Password("p".into()));
        pw.allow_rc4 = true;
        assert!(!credential_from(&mut pw, false).unwrap().allow_rc4, "the policy wins");
    }
}
