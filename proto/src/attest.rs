//! How a client seals a secret to a boot of the enclave (what the VMM signs about that boot is
//! host-side only, in `vmm_status`).
//!
//! Both ends of a sealed secret (the client with ring, the enclave with RustCrypto) use
//! the labels here, so that neither can drift from the other.
//!
//! Sealing: the client asks the enclave for a single-use nonce (`GetSealingNonce`), makes an
//! ephemeral X25519 key pair, computes the shared secret with the enclave's public key, derives a
//! 32-byte key with HKDF-SHA256 (salt = [`SEALED_SECRET_SALT`], info = [`sealed_logon_info`]), and
//! encrypts an encoded `SealedLogonSecret` with AES-256-GCM under a random 96-bit AES nonce and
//! the associated data [`sealed_secret_aad`]: what the secret is for ([`SealPurpose`]), whose it is
//! (the [`Owner`] the client states, which the enclave compares with the caller the proxy reports),
//! the enclave's nonce, and the names. So a sealed secret opens once, for one purpose, for one
//! caller and one set of names.

use alloc::vec::Vec;

/// Length of a boot id.
pub const BOOT_ID_LEN: usize = 16;
/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Length of the enclave's single-use sealing nonce.
pub const SEALING_NONCE_LEN: usize = 16;

/// HKDF salt of a sealed secret.
pub const SEALED_SECRET_SALT: &[u8] = b"credguard sealed secret v2";

/// HKDF info of a sealed secret: both public keys, so the key is bound to this exchange.
pub fn sealed_logon_info(ephemeral_public: &[u8; PUBLIC_KEY_LEN], enclave_public: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut info = Vec::with_capacity(2 * PUBLIC_KEY_LEN);
    info.extend_from_slice(ephemeral_public);
    info.extend_from_slice(enclave_public);
    info
}

/// What a sealed secret may be used for: the enclave opens it only in the call of that purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealPurpose {
    /// A logon session (`Logon`).
    Logon,
    /// A credential saved to the vault (`SaveCredential`, the enclave's `VaultSeal`).
    VaultSave,
    /// The new password of a session's password change (`ChangePassword`, the enclave's
    /// `KerberosChangePassword`).
    PasswordChange,
}

impl SealPurpose {
    /// The label bound into the associated data.
    pub fn label(self) -> &'static [u8] {
        match self {
            SealPurpose::Logon => b"logon",
            SealPurpose::VaultSave => b"vault-save",
            SealPurpose::PasswordChange => b"password-change",
        }
    }
}

/// Who a sealed secret is for, as the enclave counts callers: a local uid, or a vsock peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner(pub u64);

impl Owner {
    /// A local caller, by uid (what the proxy reads with `SO_PEERCRED`).
    pub const fn uid(uid: u32) -> Self {
        Owner(uid as u64)
    }

    /// A caller in another VM, by its vsock CID.
    pub const fn vsock(cid: u32) -> Self {
        Owner((1 << 32) | cid as u64)
    }

    /// The uid, if this is a local caller.
    pub const fn as_uid(self) -> Option<u32> {
        if self.0 >> 32 == 0 { Some(self.0 as u32) } else { None }
    }
}

impl core::fmt::Display for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.as_uid() {
            Some(uid) => write!(f, "uid {uid}"),
            None => write!(f, "vsock cid {}", self.0 as u32),
        }
    }
}

/// The names a sealed secret is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedNames<'a> {
    /// User name.
    pub user: &'a str,
    /// NetBIOS domain.
    pub domain: &'a str,
    /// Kerberos realm.
    pub realm: &'a str,
    /// The vault target ([`SealPurpose::VaultSave`]); empty for a logon.
    pub target: &'a str,
}

/// AES-GCM associated data of a sealed secret: its purpose, its owner, the enclave's single-use
/// nonce and the names, each length-prefixed, so that a relay can neither replay it, nor use a
/// logon's secret for a vault save (or the reverse), nor attach it to another caller or name.
pub fn sealed_secret_aad(
    purpose: SealPurpose,
    owner: Owner,
    sealing_nonce: &[u8; SEALING_NONCE_LEN],
    names: &SealedNames<'_>,
) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(64 + names.user.len() + names.domain.len() + names.realm.len() + names.target.len());
    let mut part = |bytes: &[u8]| {
        aad.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        aad.extend_from_slice(bytes);
    };
    part(purpose.label());
    part(&owner.0.to_le_bytes());
    part(sealing_nonce);
    for name in [names.user, names.domain, names.realm, names.target] {
        part(name.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_unambiguous_and_binds_purpose_owner_and_nonce() {
        let names = |user, domain, realm, target| SealedNames {
            user,
            domain,
            realm,
            target,
        };
        let aad = |p, o, n: u8, names: SealedNames<'_>| sealed_secret_aad(p, o, &[n; 16], &names);
        let base = aad(SealPurpose::Logon, Owner::uid(1000), 1, names("ab", "c", "", ""));
        assert_ne!(
            base,
            aad(SealPurpose::Logon, Owner::uid(1000), 1, names("a", "bc", "", ""))
        );
        assert_ne!(
            base,
            aad(SealPurpose::Logon, Owner::uid(1000), 1, names("ab", "", "c", ""))
        );
        assert_ne!(
            base,
            aad(SealPurpose::VaultSave, Owner::uid(1000), 1, names("ab", "c", "", ""))
        );
        assert_ne!(
            base,
            aad(
                SealPurpose::PasswordChange,
                Owner::uid(1000),
                1,
                names("ab", "c", "", "")
            )
        );
        assert_ne!(
            aad(SealPurpose::VaultSave, Owner::uid(1000), 1, names("ab", "c", "", "")),
            aad(
                SealPurpose::PasswordChange,
                Owner::uid(1000),
                1,
                names("ab", "c", "", "")
            )
        );
        assert_ne!(
            base,
            aad(SealPurpose::Logon, Owner::uid(1001), 1, names("ab", "c", "", ""))
        );
        assert_ne!(
            base,
            aad(SealPurpose::Logon, Owner::vsock(1000), 1, names("ab", "c", "", ""))
        );
        assert_ne!(
            base,
            aad(SealPurpose::Logon, Owner::uid(1000), 2, names("ab", "c", "", ""))
        );
        assert_ne!(
            base,
            aad(SealPurpose::Logon, Owner::uid(1000), 1, names("ab", "c", "", "t"))
        );
    }

    #[test]
    fn owners_of_both_kinds_are_distinct() {
        assert_eq!(Owner::uid(7).as_uid(), Some(7));
        assert_eq!(Owner::vsock(7).as_uid(), None);
        assert_ne!(Owner::uid(7), Owner::vsock(7));
        assert_eq!(alloc::format!("{}", Owner::vsock(9)), "vsock cid 9");
    }
}
