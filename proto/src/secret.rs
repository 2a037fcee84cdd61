//! The secrets the enclave's messages carry.
//!
//! Three messages hold one of the same kinds of secret in a `oneof` of their own (`LogonRequest`,
//! `VaultSealRequest`, and the plaintext of a sealed secret, `SealedLogonSecret`). [`SecretRef`]
//! is one borrowed view of any of them, for the checks ([`crate::checks::secret`]) and the kind a
//! session reports; each oneof is [`Zeroize`], so that every holder wipes it the same way.

use zeroize::Zeroize;

use crate::enclave::{Key, SealedSecret, logon_request, sealed_logon_secret, vault_seal_request};

/// A secret of any enclave message, borrowed.
#[derive(Clone, Copy)]
pub enum SecretRef<'a> {
    /// A password, UTF-8.
    Password(&'a str),
    /// An NT hash.
    NtHash(&'a [u8]),
    /// A Kerberos long-term key.
    Key(&'a Key),
    /// One of the above, sealed by the client to the enclave.
    Sealed(&'a SealedSecret),
}

impl SecretRef<'_> {
    /// What a session reports it holds: "password", "nt_hash", "key", or "sealed" (what a sealed
    /// secret holds, only the enclave knows). Never the secret.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretRef::Password(_) => "password",
            SecretRef::NtHash(_) => "nt_hash",
            SecretRef::Key(_) => "key",
            SecretRef::Sealed(_) => "sealed",
        }
    }
}

impl core::fmt::Debug for SecretRef<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "<{} redacted>", self.kind())
    }
}

impl<'a> From<&'a logon_request::Secret> for SecretRef<'a> {
    fn from(s: &'a logon_request::Secret) -> Self {
        match s {
            logon_request::Secret::Password(p) => SecretRef::Password(p),
            logon_request::Secret::NtHash(h) => SecretRef::NtHash(h),
            logon_request::Secret::Key(k) => SecretRef::Key(k),
            logon_request::Secret::Sealed(s) => SecretRef::Sealed(s),
        }
    }
}

impl<'a> From<&'a vault_seal_request::Secret> for SecretRef<'a> {
    fn from(s: &'a vault_seal_request::Secret) -> Self {
        match s {
            vault_seal_request::Secret::Password(p) => SecretRef::Password(p),
            vault_seal_request::Secret::NtHash(h) => SecretRef::NtHash(h),
            vault_seal_request::Secret::Key(k) => SecretRef::Key(k),
            vault_seal_request::Secret::Sealed(s) => SecretRef::Sealed(s),
        }
    }
}

impl<'a> From<&'a sealed_logon_secret::Secret> for SecretRef<'a> {
    fn from(s: &'a sealed_logon_secret::Secret) -> Self {
        match s {
            sealed_logon_secret::Secret::Password(p) => SecretRef::Password(p),
            sealed_logon_secret::Secret::NtHash(h) => SecretRef::NtHash(h),
            sealed_logon_secret::Secret::Key(k) => SecretRef::Key(k),
        }
    }
}

/// An opened sealed secret, to be logged on with.
impl From<sealed_logon_secret::Secret> for logon_request::Secret {
    fn from(s: sealed_logon_secret::Secret) -> Self {
        match s {
            sealed_logon_secret::Secret::Password(p) => logon_request::Secret::Password(p),
            sealed_logon_secret::Secret::NtHash(h) => logon_request::Secret::NtHash(h),
            sealed_logon_secret::Secret::Key(k) => logon_request::Secret::Key(k),
        }
    }
}

// Wiping: the key bytes, the password or the hash. A sealed secret is ciphertext to the enclave's
// key, with nothing readable to wipe.

impl Zeroize for logon_request::Secret {
    fn zeroize(&mut self) {
        match self {
            logon_request::Secret::Password(p) => p.zeroize(),
            logon_request::Secret::NtHash(h) => h.zeroize(),
            logon_request::Secret::Key(k) => k.value.zeroize(),
            logon_request::Secret::Sealed(_) => {}
        }
    }
}

impl Zeroize for vault_seal_request::Secret {
    fn zeroize(&mut self) {
        match self {
            vault_seal_request::Secret::Password(p) => p.zeroize(),
            vault_seal_request::Secret::NtHash(h) => h.zeroize(),
            vault_seal_request::Secret::Key(k) => k.value.zeroize(),
            vault_seal_request::Secret::Sealed(_) => {}
        }
    }
}

impl Zeroize for sealed_logon_secret::Secret {
    fn zeroize(&mut self) {
        match self {
            sealed_logon_secret::Secret::Password(p) => p.zeroize(),
            sealed_logon_secret::Secret::NtHash(h) => h.zeroize(),
            sealed_logon_secret::Secret::Key(k) => k.value.zeroize(),
        }
    }
}
