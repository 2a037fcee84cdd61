//! The host sealing secret of the vault: 32 random bytes in a root-only file, made on first start,
//! handed to the enclave at boot (see [`crate::boot::hand_over_sealing_secret`]). The enclave
//! derives its vault key from it and its own measurement; the secret alone opens nothing.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use credguard_proto::abi::exchange::SEALING_SECRET_LEN;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Why the sealing secret could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not hold exactly 32 bytes.
    #[error("{0}: not a sealing secret (must be exactly {SEALING_SECRET_LEN} bytes)")]
    BadLength(PathBuf),
    /// The file may be read by others than its owner.
    #[error("{0}: readable by group or others (mode {1:o}); it must be a root-only file (chmod 600)")]
    TooOpen(PathBuf, u32),
    /// No randomness.
    #[error("cannot generate a sealing secret")]
    Generate,
}

/// The host sealing secret: wiped on drop, never printed.
#[derive(Clone)]
pub struct SealingSecret(Zeroizing<[u8; SEALING_SECRET_LEN]>);

impl std::fmt::Debug for SealingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingSecret(<redacted>)")
    }
}

impl SealingSecret {
    /// A secret of these bytes.
    pub fn from_bytes(bytes: [u8; SEALING_SECRET_LEN]) -> Self {
        SealingSecret(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8; SEALING_SECRET_LEN] {
        &self.0
    }

    /// Loads the secret at `path`, or makes one there (mode 0600) if there is no file.
    pub fn load_or_create(path: &Path) -> Result<Self, SealingError> {
        let io = |source| SealingError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SealingError::TooOpen(path.to_owned(), mode));
                }
                let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
                let mut secret = Zeroizing::new([0u8; SEALING_SECRET_LEN]);
                if bytes.len() != SEALING_SECRET_LEN {
                    return Err(SealingError::BadLength(path.to_owned()));
                }
                secret.copy_from_slice(&bytes);
                Ok(SealingSecret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = Zeroizing::new([0u8; SEALING_SECRET_LEN]);
                SystemRandom::new()
                    .fill(&mut secret[..])
                    .map_err(|_| SealingError::Generate)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(&secret[..]).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!("made a new vault sealing secret {}", path.display());
                Ok(SealingSecret(secret))
            }
            Err(e) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_loads_and_refuses_bad_files() {
        let dir = std::env::temp_dir().join(format!("cg-sealing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sealing.secret");
        let made = SealingSecret::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = SealingSecret::load_or_create(&path).unwrap();
        assert_eq!(made.bytes(), loaded.bytes());
        assert_ne!(made.bytes(), &[0; 32]);
        assert_eq!(format!("{made:?}"), "SealingSecret(<redacted>)");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            SealingSecret::load_or_create(&path),
            Err(SealingError::TooOpen(..))
        ));
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SealingSecret::load_or_create(&path),
            Err(SealingError::BadLength(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
