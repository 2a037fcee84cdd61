//! How many PAM sessions use one credguard logon session, so the last `close_session` logs it off.
//!
//! One file per logon session, `<state_dir>/<session-id>`, holding the count in decimal. The
//! directory is root's alone (made 0700; refused if it is a link, someone else's, or open to
//! group or others), so no user can forge or remove a count. A PAM handle's data do not cross
//! `fork`s that each call `pam_close_session` (sshd, login), and a logon can outlive the process
//! that made it, so the count lives in the file system rather than in the handle; `flock` keeps
//! concurrent opens and closes apart.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The longest session id taken as a file name.
const MAX_SESSION_ID_LEN: usize = 128;

/// Why a count could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum RefcountError {
    /// The session id is not a plain name (the proxy's ids are hex).
    #[error("session id {0:?} is not a plain name")]
    BadSessionId(String),
    /// The state directory is not root's alone.
    #[error("{0} is not a private directory of this user (a link, another owner, or open to others)")]
    UnsafeDir(PathBuf),
    /// The count file holds something else than a count.
    #[error("{0} does not hold a count")]
    Corrupt(PathBuf),
    /// A file system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RefcountError + '_ {
    move |source| RefcountError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`release`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// Other PAM sessions still use the logon session (this many).
    StillUsed(u64),
    /// This was the last one: the count is gone and the logon session should be logged off.
    Last,
    /// There was no count (never opened here, or already released).
    NotHeld,
}

/// Counts one more PAM session of `session_id`; returns the new count.
pub fn acquire(dir: &Path, session_id: &str) -> Result<u64, RefcountError> {
    let path = count_path(dir, session_id)?;
    let mut file = open_locked(&path, true)?.ok_or_else(|| RefcountError::Io {
        path: path.clone(),
        source: io::ErrorKind::NotFound.into(),
    })?;
    let count = read_count(&mut file, &path)?.saturating_add(1);
    write_count(&mut file, &path, count)?;
    Ok(count)
}

/// Counts one PAM session of `session_id` less.
pub fn release(dir: &Path, session_id: &str) -> Result<Released, RefcountError> {
    let path = count_path(dir, session_id)?;
    let Some(mut file) = open_locked(&path, false)? else {
        return Ok(Released::NotHeld);
    };
    match read_count(&mut file, &path)? {
        0 | 1 => {
            // Removed while locked: a process waiting for the lock sees the file unlinked and
            // starts over (see `open_locked`).
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            Ok(Released::Last)
        }
        n => {
            write_count(&mut file, &path, n - 1)?;
            Ok(Released::StillUsed(n - 1))
        }
    }
}

/// `dir/session_id`, after making sure `dir` is private and the id a plain name.
fn count_path(dir: &Path, session_id: &str) -> Result<PathBuf, RefcountError> {
    let plain = !session_id.is_empty()
        && session_id.len() <= MAX_SESSION_ID_LEN
        && session_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(RefcountError::BadSessionId(session_id.to_owned()));
    }
    private_dir(dir)?;
    Ok(dir.join(session_id))
}

/// Makes `dir` (0700) if missing, and checks it is a directory of this user that nobody else
/// may write or read.
fn private_dir(dir: &Path) -> Result<(), RefcountError> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(RefcountError::UnsafeDir(dir.to_path_buf()));
    }
    Ok(())
}

/// The count file at `path`, opened (created if `create`) without following links and locked
/// exclusively; `None` if it does not exist and `create` is false.
fn open_locked(path: &Path, create: bool) -> Result<Option<File>, RefcountError> {
    loop {
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        let file = match opened {
            Ok(f) => f,
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        // SAFETY: flock on a descriptor this function owns (`file` is open until it returns).
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(path)(io::Error::last_os_error()));
        }
        // Another process may have removed the file (its last release) between our open and our
        // lock: then this count would go to an unlinked file. Start over.
        if file.metadata().map_err(io_err(path))?.nlink() > 0 {
            return Ok(Some(file));
        }
    }
}

fn read_count(file: &mut File, path: &Path) -> Result<u64, RefcountError> {
    let mut text = String::new();
    // A count is at most 20 digits; anything longer is not one.
    Read::by_ref(file)
        .take(32)
        .read_to_string(&mut text)
        .map_err(|_| RefcountError::Corrupt(path.to_path_buf()))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| RefcountError::Corrupt(path.to_path_buf()))
}

fn write_count(file: &mut File, path: &Path, count: u64) -> Result<(), RefcountError> {
    file.set_len(0).map_err(io_err(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    file.write_all(format!("{count}\n").as_bytes()).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pam-credguard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_last_release_says_so_and_removes_the_count() {
        let dir = temp_dir("last").join("pam");
        assert_eq!(acquire(&dir, "ab12").unwrap(), 1);
        assert_eq!(acquire(&dir, "ab12").unwrap(), 2);
        assert_eq!(acquire(&dir, "cd34").unwrap(), 1);
        assert_eq!(release(&dir, "ab12").unwrap(), Released::StillUsed(1));
        assert_eq!(release(&dir, "ab12").unwrap(), Released::Last);
        assert!(!dir.join("ab12").exists());
        assert_eq!(release(&dir, "ab12").unwrap(), Released::NotHeld);
        // Another logon's count is its own.
        assert_eq!(release(&dir, "cd34").unwrap(), Released::Last);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "made root-only");
    }

    #[test]
    fn session_ids_that_are_not_plain_names_are_refused() {
        let dir = temp_dir("names");
        for bad in ["", "../etc/passwd", "a/b", ".", "..", "a b", &"a".repeat(129)] {
            assert!(
                matches!(acquire(&dir, bad), Err(RefcountError::BadSessionId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_directory_open_to_others_or_a_link_is_refused() {
        let base = temp_dir("unsafe");
        let open = base.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o733)).unwrap();
        assert!(matches!(acquire(&open, "ab"), Err(RefcountError::UnsafeDir(_))));

        let private = base.join("private");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(matches!(acquire(&link, "ab"), Err(RefcountError::UnsafeDir(_))));
    }

    #[test]
    fn a_count_file_that_is_a_link_is_not_followed() {
        let dir = temp_dir("filelink");
        private_dir(&dir).unwrap();
        let target = temp_dir("filelink-target");
        std::fs::write(&target, "7\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("ab")).unwrap();
        assert!(matches!(acquire(&dir, "ab"), Err(RefcountError::Io { .. })));
        assert!(matches!(release(&dir, "ab"), Err(RefcountError::Io { .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "7\n", "untouched");
    }

    #[test]
    fn a_corrupt_count_is_an_error_not_a_logoff() {
        let dir = temp_dir("corrupt");
        private_dir(&dir).unwrap();
        std::fs::write(dir.join("ab"), "many\n").unwrap();
        assert!(matches!(release(&dir, "ab"), Err(RefcountError::Corrupt(_))));
        assert!(dir.join("ab").exists());
    }

    #[test]
    fn concurrent_acquires_and_releases_balance() {
        let dir = temp_dir("concurrent");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        acquire(&dir, "ab").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut last = 0;
        for _ in 0..400 {
            if release(&dir, "ab").unwrap() == Released::Last {
                last += 1;
            }
        }
        assert_eq!(last, 1);
        assert_eq!(release(&dir, "ab").unwrap(), Released::NotHeld);
    }
}
