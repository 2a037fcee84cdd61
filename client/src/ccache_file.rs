//! Writing a credential cache file on the client's side (`credguardctl kerberos-ticket --ccache`).
//!
//! The proxy returns a service ticket as MIT ccache bytes (`KerberosGetServiceTicketReply.ccache`)
//! and never opens a path a caller names: a privileged service writing where a caller says is a
//! confused deputy. The client writes the file itself, with its own rights: mode 0600, never
//! through a symbolic link, and atomically (a temporary file in the same directory, synced, then
//! renamed over the target), so that klist, kvno or curl never read half a file and a link planted
//! at the target is replaced, not followed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the ccache file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CcacheFileError {
    /// The path names no file (empty, or a directory).
    #[error("{0}: not a file path")]
    NotAFile(PathBuf),
    /// Creating, writing, syncing or renaming failed.
    #[error("cannot write the ccache {path}: {what}: {source}")]
    Io {
        /// The target file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Attempts at a fresh temporary name before giving up (another writer may race us).
const TEMP_ATTEMPTS: u32 = 16;

/// `FILE:/path` (as in `KRB5CCNAME`) or a plain path, as a path.
pub fn ccache_path(arg: &str) -> &Path {
    Path::new(arg.strip_prefix("FILE:").unwrap_or(arg))
}

/// Writes `bytes` to `target` atomically, mode 0600, without following a link at `target`.
pub fn write_ccache(target: &Path, bytes: &[u8]) -> Result<(), CcacheFileError> {
    let err = |what| {
        move |source| CcacheFileError::Io {
            path: target.to_path_buf(),
            what,
            source,
        }
    };
    let name = target
        .file_name()
        .ok_or_else(|| CcacheFileError::NotAFile(target.to_path_buf()))?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (temp, mut file) = create_temp(dir, name).map_err(err("creating a temporary file"))?;
    let written = write_synced(&mut file, bytes)
        .map_err(err("writing"))
        .and_then(|()| std::fs::rename(&temp, target).map_err(err("renaming over it")));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn write_synced(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    // Exactly 0600, whatever the umask (which can only have taken bits away).
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A new file `.<name>.<pid>.<n>.tmp` in `dir`: created exclusively (never an existing file or
/// link), mode 0600, not inherited by children.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let mut last = io::Error::other("no attempt made");
    for n in 0..TEMP_ATTEMPTS {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.{n}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("credguard-ccache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn writes_0600_and_replaces_a_link_instead_of_following_it() {
        let d = temp_dir("link");
        let victim = d.join("victim");
        std::fs::write(&victim, b"untouched").unwrap();
        let target = d.join("krb5cc");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_ccache(&target, b"\x05\x04ticket").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.file_type().is_file(), "the link was followed");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&target).unwrap(), b"\x05\x04ticket");
        // Written again: replaced whole; no temporary file left behind.
        write_ccache(&target, b"second").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn refuses_a_directory_and_a_missing_directory() {
        let d = temp_dir("dir");
        assert!(matches!(
            write_ccache(Path::new("/"), b"x"),
            Err(CcacheFileError::NotAFile(_))
        ));
        let e = write_ccache(&d.join("missing").join("cc"), b"x").unwrap_err();
        assert!(e.to_string().contains("creating a temporary file"), "{e}");
        // A directory at the target: the rename fails and the temporary file is removed.
        std::fs::create_dir(d.join("sub")).unwrap();
        assert!(write_ccache(&d.join("sub"), b"x").is_err());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn file_prefix_is_understood() {
        assert_eq!(ccache_path("FILE:/tmp/cc"), Path::new("/tmp/cc"));
        assert_eq!(ccache_path("/tmp/cc"), Path::new("/tmp/cc"));
    }
}
