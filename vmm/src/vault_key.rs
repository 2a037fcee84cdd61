//! The vault's keys, host side: the root secret they derive from, and the derivation.
//!
//! The root secret (the "host sealing secret" of `--sealing-secret`: the vault seals saved
//! credentials under keys derived from it) is 32 random bytes in a root-only file, made on first
//! start. It never enters the guest: at each boot the VMM derives from it the vault key of the
//! image it verified ([`VaultRootSecret::vault_key`], bound to the measurement), and those of the
//! earlier images the image's signed manifest allows, and hands only those keys to the enclave
//! (see [`crate::boot::hand_over_vault_keys`]).
//!
//! Not to be confused with the enclave's `sealing.rs`, which opens secrets that clients seal to
//! the attested enclave (sealed logon).

use std::path::{Path, PathBuf};

use credguard_proto::abi::exchange::SEALING_SECRET_LEN;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keyfile::{self, KeyFileError};

/// Why the vault's root secret could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum VaultRootSecretError {
    /// The file cannot be read or made, or others may read it.
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// The file does not hold exactly 32 bytes.
    #[error("{0}: not a sealing secret (must be exactly {SEALING_SECRET_LEN} bytes)")]
    BadLength(PathBuf),
    /// No randomness.
    #[error("cannot generate a sealing secret")]
    Generate,
}

/// The vault's root secret (the `--sealing-secret` file): wiped on drop, never printed.
#[derive(Clone)]
pub struct VaultRootSecret(Zeroizing<[u8; SEALING_SECRET_LEN]>);

impl std::fmt::Debug for VaultRootSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultRootSecret(<redacted>)")
    }
}

impl VaultRootSecret {
    /// A secret of these bytes.
    pub fn from_bytes(bytes: [u8; SEALING_SECRET_LEN]) -> Self {
        VaultRootSecret(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8; SEALING_SECRET_LEN] {
        &self.0
    }

    /// The vault key of the enclave image with `measurement`: HKDF-SHA256 with salt
    /// [`abi::VAULT_KEY_SALT`](credguard_proto::abi::VAULT_KEY_SALT) and the measurement as info.
    /// The VMM hands the enclave only the keys of the image it verified and of the earlier images
    /// its signed manifest allows, never this secret, so that an image cannot derive the key of
    /// any other image.
    pub fn vault_key(&self, measurement: &[u8; credguard_proto::abi::MEASUREMENT_LEN]) -> Zeroizing<[u8; 32]> {
        use ring::hkdf::{HKDF_SHA256, Salt};
        let mut key = Zeroizing::new([0u8; 32]);
        let info = [&measurement[..]];
        // 32 bytes is HKDF-SHA256's natural length: expanding to it cannot fail.
        if let Ok(okm) = Salt::new(HKDF_SHA256, credguard_proto::abi::VAULT_KEY_SALT)
            .extract(&self.0[..])
            .expand(&info, HKDF_SHA256)
        {
            let _ = okm.fill(&mut key[..]);
        }
        key
    }

    /// Loads the secret at `path`, or makes one there (mode 0600) if there is no file.
    pub fn load_or_create(path: &Path) -> Result<Self, VaultRootSecretError> {
        let mut secret = Zeroizing::new([0u8; SEALING_SECRET_LEN]);
        if let Some(bytes) = keyfile::read_private(path)? {
            if bytes.len() != SEALING_SECRET_LEN {
                return Err(VaultRootSecretError::BadLength(path.to_owned()));
            }
            secret.copy_from_slice(&bytes);
            return Ok(VaultRootSecret(secret));
        }
        SystemRandom::new()
            .fill(&mut secret[..])
            .map_err(|_| VaultRootSecretError::Generate)?;
        keyfile::create_private(path, &secret[..])?;
        tracing::info!("made a new vault sealing secret {}", path.display());
        Ok(VaultRootSecret(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn vault_keys_are_hkdf_sha256_of_secret_and_measurement() {
        let s = VaultRootSecret::from_bytes([7; 32]);
        let a = s.vault_key(&[1; 48]);
        assert_ne!(*a, [0; 32]);
        assert_eq!(*a, *s.vault_key(&[1; 48]));
        assert_ne!(*a, *s.vault_key(&[2; 48]));
        assert_ne!(*a, *VaultRootSecret::from_bytes([8; 32]).vault_key(&[1; 48]));
        // The same vector as the enclave's test (RustCrypto's hkdf): both sides derive alike.
        let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "29b9798375dfd87fb0f6f983725fc5d3b64d4770e806ba2ff317bdaa50833615");
        // RFC 5869 test case 1's construction with ring, checked against the RFC's OKM prefix,
        // so the derivation is standard HKDF (the enclave's tests use RustCrypto's hkdf).
        use ring::hkdf::{HKDF_SHA256, KeyType, Salt};
        struct Len(usize);
        impl KeyType for Len {
            fn len(&self) -> usize {
                self.0
            }
        }
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        Salt::new(HKDF_SHA256, &salt)
            .extract(&ikm)
            .expand(&[&info], Len(42))
            .unwrap()
            .fill(&mut okm)
            .unwrap();
        assert_eq!(&okm[..8], &[0x3c, 0xb2, 0x5f, 0x25, 0xfa, 0xac, 0xd5, 0x7a]);
    }

    #[test]
    fn creates_loads_and_refuses_bad_files() {
        let dir = std::env::temp_dir().join(format!("cg-vault-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sealing.secret");
        let made = VaultRootSecret::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = VaultRootSecret::load_or_create(&path).unwrap();
        assert_eq!(made.bytes(), loaded.bytes());
        assert_ne!(made.bytes(), &[0; 32]);
        assert_eq!(format!("{made:?}"), "VaultRootSecret(<redacted>)");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            VaultRootSecret::load_or_create(&path),
            Err(VaultRootSecretError::File(KeyFileError::TooOpen(..)))
        ));
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            VaultRootSecret::load_or_create(&path),
            Err(VaultRootSecretError::BadLength(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
