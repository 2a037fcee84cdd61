//! The VMM's root-only key files (the attestation key, the vault's root secret): read only if
//! no one but the owner can read them, made with mode 0600 when missing, wiped from memory after
//! use.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a key file could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file may be read by others than its owner.
    #[error("{0}: readable by group or others (mode {1:o}); it must be a root-only file (chmod 600)")]
    TooOpen(PathBuf, u32),
}

/// The contents of the key file at `path`, or `None` if there is none. Refuses a file that group
/// or others may read: such a key may already be known.
pub fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::TooOpen(path.to_owned(), mode));
            }
            Ok(Some(Zeroizing::new(std::fs::read(path).map_err(io)?)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Makes the key file `path` (mode 0600; never replacing an existing file) holding `bytes`, on
/// disk before this returns.
pub fn create_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_reads_and_refuses_open_files() {
        let dir = std::env::temp_dir().join(format!("cg-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        assert!(read_private(&path).unwrap().is_none());
        create_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(create_private(&path, b"other").is_err(), "never replaces a key");
        assert_eq!(read_private(&path).unwrap().unwrap().as_slice(), b"secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(matches!(read_private(&path), Err(KeyFileError::TooOpen(_, 0o604))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
