//! The VMM's attestation key: it signs, once per boot, what the enclave says about itself (its
//! boot id and sealing public key) together with what the VMM verified (the image's measurement
//! and signer), so that a client can seal a secret to the enclave through an untrusted proxy.
//!
//! The key is a root-only file (under systemd handed to the VMM with `LoadCredential=`), never
//! readable by the proxy; its public half (`<key>.pub`, hex) is installed for clients. Ed25519
//! from ring, like the image signatures.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use credguard_proto::attest::SIGNATURE_LEN;
use credguard_proto::vmm_status::{self, Attested};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::keyfile::{self, KeyFileError};

/// Why the attestation key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// The key file cannot be read or made, or others may read it.
    #[error(transparent)]
    File(#[from] KeyFileError),
    /// Writing the public half failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is not an Ed25519 PKCS#8 key.
    #[error("{0}: not an Ed25519 PKCS#8 key")]
    BadKey(PathBuf),
    /// Key generation failed.
    #[error("cannot generate an attestation key")]
    Generate,
}

/// The VMM's Ed25519 attestation key.
pub struct AttestationKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AttestationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationKey")
            .field("public", &hex::encode(self.public_key()))
            .finish()
    }
}

/// Where the public half of the key at `key` is written: `<key>.pub`.
pub fn public_key_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

impl AttestationKey {
    /// Loads the key at `path`, or, if there is no file there, makes one (mode 0600) and writes
    /// its public half to [`public_key_path`] (mode 0644).
    pub fn load_or_create(path: &Path) -> Result<Self, AttestationError> {
        let bad = || AttestationError::BadKey(path.to_owned());
        if let Some(pkcs8) = keyfile::read_private(path)? {
            let key = AttestationKey {
                pair: Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad())?,
            };
            // Keep the public half in step (it may have been deleted); never fatal.
            let pub_path = public_key_path(path);
            if !pub_path.exists() {
                let _ = key.write_public(&pub_path);
            }
            return Ok(key);
        }
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| AttestationError::Generate)?;
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        keyfile::create_private(path, &pkcs8)?;
        let key = AttestationKey {
            pair: Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad())?,
        };
        key.write_public(&public_key_path(path))?;
        tracing::info!(
            "made a new attestation key {} (public half {})",
            path.display(),
            public_key_path(path).display()
        );
        Ok(key)
    }

    fn write_public(&self, path: &Path) -> Result<(), AttestationError> {
        let io = |source| AttestationError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::write(path, format!("{}\n", hex::encode(self.public_key()))).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io)
    }

    /// The public key (32 bytes).
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Signs [`vmm_status::attestation_message`] of `facts`.
    pub fn sign(&self, facts: &Attested) -> [u8; SIGNATURE_LEN] {
        let message = vmm_status::attestation_message(facts);
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(&message).as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn creates_loads_and_signs() {
        let dir = std::env::temp_dir().join(format!("cg-attest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("attestation.key");
        let made = AttestationKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = AttestationKey::load_or_create(&path).unwrap();
        assert_eq!(made.public_key(), loaded.public_key());
        let pub_hex = std::fs::read_to_string(public_key_path(&path)).unwrap();
        assert_eq!(pub_hex.trim(), hex::encode(made.public_key()));

        let facts = Attested {
            measurement: [1; 48],
            signer: [2; 16],
            boot_id: [3; 16],
            public_key: [4; 32],
            protection_bits: 5,
            host_mapped_bytes: 6,
            ram_size: 7,
            policy_bits: 0,
            enclave_flags: 0,
            restarts: 0,
            restart_reasons: Vec::new(),
        };
        let sig = loaded.sign(&facts);
        let verifier = UnparsedPublicKey::new(&ED25519, made.public_key());
        assert!(verifier.verify(&vmm_status::attestation_message(&facts), &sig).is_ok());
        // A test build, or another policy, under the same signature: does not verify.
        for other in [
            Attested {
                enclave_flags: 1,
                ..facts.clone()
            },
            Attested {
                policy_bits: 1,
                ..facts.clone()
            },
            Attested {
                protection_bits: 7,
                ..facts.clone()
            },
            Attested {
                restarts: 1,
                ..facts.clone()
            },
        ] {
            assert!(verifier.verify(&vmm_status::attestation_message(&other), &sig).is_err());
        }

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            AttestationKey::load_or_create(&path),
            Err(AttestationError::File(KeyFileError::TooOpen(..)))
        ));
        std::fs::write(&path, b"junk").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            AttestationKey::load_or_create(&path),
            Err(AttestationError::BadKey(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
