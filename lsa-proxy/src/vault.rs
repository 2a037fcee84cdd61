//! Saved credentials (the vault): `SaveCredential`, `ListSavedCredentials`,
//! `DeleteSavedCredential`, `LogonSaved`.
//!
//! The enclave seals each credential (`VaultSeal`) under a key only it can derive (from the host
//! sealing secret and its own measurement), binding the owner uid, the target and the names into
//! the seal. The proxy stores what comes back: one file per target in one directory per uid,
//! `<vault dir>/<uid>/<sha256(target) hex>.cred` (directories 0700, files 0600, owned by the
//! proxy's user), holding the metadata and the sealed blob, never a secret. `LogonSaved` gives the
//! blob back to the enclave with the *caller's* uid and the *asked* target, so a blob moved to
//! another uid's directory or to another target's file does not open there: the enclave, not this
//! file, is the judge.
//!
//! Who sees what: a saved credential belongs to the uid that saved it (SO_PEERCRED); only that
//! uid can use or delete it. `ListSavedCredentials` lists the caller's; root's lists every uid's
//! (metadata only, as `ListSessions` does for sessions: root can read the directory anyway), but
//! root cannot use or delete another uid's. Callers over vsock have no uid and no vault.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use credguard_proto::checks::{self, MAX_NAME_LEN};
use credguard_proto::enclave;
use credguard_proto::lsa;
use credguard_proto::secret::SecretRef;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zeroize::Zeroize;

use crate::core::{LsaCore, check_host_port, check_secret};
use crate::error::LsaError;
use crate::sessions::{Caller, LogonSession, now_unix_ms};

/// Default vault directory.
pub const DEFAULT_VAULT_DIR: &str = "/var/lib/credguard/vault";
/// Value of a record's `format`.
const RECORD_FORMAT: &str = "credguard-vault-record/1";
/// Largest record file read (a sealed 1 KiB password and its metadata take about 3 KiB).
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Longest sealed blob accepted from the enclave (its own limit is about 2.1 KiB).
const MAX_BLOB_LEN: usize = 8 * 1024;

/// What the vault directory holds per saved credential (JSON): metadata and the sealed blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Always `credguard-vault-record/1`.
    pub format: String,
    /// The owner.
    pub uid: u32,
    /// The target name.
    pub target: String,
    /// User name.
    pub user: String,
    /// NetBIOS domain.
    pub domain: String,
    /// Kerberos realm.
    pub realm: String,
    /// KDC `host:port` for sessions made from it (may be empty).
    pub kdc: String,
    /// When it was saved, ms since the Unix epoch (bound into the seal).
    pub created_unix_ms: u64,
    /// "password", "nt_hash" or "key".
    pub secret_kind: String,
    /// The enclave's sealed blob, hex.
    pub sealed_blob: String,
}

impl Record {
    fn info(&self) -> lsa::SavedCredentialInfo {
        lsa::SavedCredentialInfo {
            target: self.target.clone(),
            user: self.user.clone(),
            domain: self.domain.clone(),
            realm: self.realm.clone(),
            created_unix_ms: self.created_unix_ms,
            secret_kind: self.secret_kind.clone(),
            uid: self.uid,
            kdc: self.kdc.clone(),
        }
    }
}

/// Why the vault directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No saved credential for that target.
    #[error("no saved credential for target {0:?}")]
    NotFound(String),
    /// The record file is not a vault record.
    #[error("the saved credential for target {target:?} is corrupt: {why}")]
    Corrupt {
        /// The target asked for.
        target: String,
        /// What is wrong.
        why: String,
    },
    /// A file operation failed.
    #[error("vault directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<StoreError> for LsaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => LsaError::NotFound(e.to_string()),
            StoreError::Corrupt { .. } => LsaError::InvalidArgument(e.to_string()),
            // The path is the proxy's own configuration, not a secret; the details are logged.
            StoreError::Io { .. } => {
                warn!("vault: {e}");
                LsaError::Internal("the vault directory cannot be read or written (see the proxy's log)".into())
            }
        }
    }
}

/// The vault directory: one subdirectory per uid, one file per target.
#[derive(Debug, Clone)]
pub struct VaultStore {
    dir: PathBuf,
}

/// Makes temporary file names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl VaultStore {
    /// The store in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        VaultStore { dir: dir.into() }
    }

    /// The file name of `target`'s record: SHA-256 of the target, hex (so that any target is a
    /// safe, fixed-length file name).
    pub fn file_name(target: &str) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, target.as_bytes());
        format!("{}.cred", hex::encode(d.as_ref()))
    }

    /// The directory of `uid`.
    pub fn uid_dir(&self, uid: u32) -> PathBuf {
        self.dir.join(uid.to_string())
    }

    /// The record file of `uid`'s `target`.
    pub fn path(&self, uid: u32, target: &str) -> PathBuf {
        self.uid_dir(uid).join(Self::file_name(target))
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Creates `dir` (mode 0700) if missing; refuses a symlink or a non-directory.
    fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: io::Error::other("not a directory (or a symlink)"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(Self::io(dir))?;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(Self::io(dir))
            }
            Err(e) => Err(Self::io(dir)(e)),
        }
    }

    /// Writes `record` atomically: a temporary file (0600) in the same directory, fsync,
    /// rename over the old one, fsync of the directory.
    pub fn write(&self, record: &Record) -> Result<(), StoreError> {
        Self::ensure_dir(&self.dir)?;
        let dir = self.uid_dir(record.uid);
        Self::ensure_dir(&dir)?;
        let path = self.path(record.uid, &record.target);
        let tmp = dir.join(format!(
            ".{}.{}.{}.tmp",
            Self::file_name(&record.target),
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let text = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Self::io(&path)(e));
        }
        Ok(())
    }

    /// Reads `uid`'s record of `target`.
    pub fn read(&self, uid: u32, target: &str) -> Result<Record, StoreError> {
        let path = self.path(uid, target);
        Self::read_file(&path, target)
    }

    fn read_file(path: &Path, target: &str) -> Result<Record, StoreError> {
        let corrupt = |why: String| StoreError::Corrupt {
            target: target.to_string(),
            why,
        };
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path);
        let f = match f {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(target.into())),
            Err(e) => return Err(Self::io(path)(e)),
        };
        let mut text = Vec::new();
        f.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(Self::io(path))?;
        if text.len() as u64 > MAX_RECORD_BYTES {
            return Err(corrupt("the file is too large".into()));
        }
        let r: Record = serde_json::from_slice(&text).map_err(|e| corrupt(format!("not a vault record ({e})")))?;
        if r.format != RECORD_FORMAT {
            return Err(corrupt("unknown record format".into()));
        }
        Ok(r)
    }

    /// Removes `uid`'s record of `target`.
    pub fn delete(&self, uid: u32, target: &str) -> Result<(), StoreError> {
        let path = self.path(uid, target);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Ok(d) = fs::File::open(self.uid_dir(uid)) {
                    let _ = d.sync_all();
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(target.into())),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    /// The records of `uid` (all uids for `None`), ordered by uid then target. Unreadable or
    /// corrupt files are skipped with a warning: one bad file does not hide the others.
    pub fn list(&self, uid: Option<u32>) -> Result<Vec<Record>, StoreError> {
        let uids: Vec<u32> = match uid {
            Some(u) => vec![u],
            None => match fs::read_dir(&self.dir) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(Self::io(&self.dir)(e)),
            },
        };
        let mut out = Vec::new();
        for u in uids {
            let dir = self.uid_dir(u);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io(&dir)(e)),
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.ends_with(".cred") || name.starts_with('.') {
                    continue;
                }
                match Self::read_file(&entry.path(), name) {
                    // A record shows under the uid of the directory it is in.
                    Ok(r) if r.uid == u && Self::file_name(&r.target) == name => out.push(r),
                    Ok(_) => warn!(uid = u, file = name, "vault: a record in the wrong place; not listed"),
                    Err(e) => warn!(uid = u, file = name, "vault: {e}"),
                }
            }
        }
        out.sort_by(|a, b| (a.uid, &a.target).cmp(&(b.uid, &b.target)));
        Ok(out)
    }
}

/// The caller's uid: the vault is for local users.
fn uid_of(caller: Caller) -> Result<u32, LsaError> {
    match caller {
        Caller::Uid(u) => Ok(u),
        Caller::VsockCid(_) => Err(LsaError::PermissionDenied(
            "saved credentials are for local users (a uid); vsock callers have none".into(),
        )),
    }
}

/// `SaveCredential`. The secret in `req` is wiped before this returns, whatever the outcome.
pub async fn save(
    core: &LsaCore,
    caller: Caller,
    mut req: lsa::SaveCredentialRequest,
) -> Result<lsa::SaveCredentialReply, LsaError> {
    // As for `Logon`: the KDC stays here, the rest moves into the enclave's message, wiped after.
    let kdc = std::mem::take(&mut req.kdc);
    let mut enclave_req = enclave::VaultSealRequest::from(req);
    let result = save_inner(core, caller, &mut enclave_req, kdc).await;
    enclave_req.secret.zeroize();
    result
}

async fn save_inner(
    core: &LsaCore,
    caller: Caller,
    req: &mut enclave::VaultSealRequest,
    kdc: String,
) -> Result<lsa::SaveCredentialReply, LsaError> {
    let sealed = matches!(req.secret, None | Some(enclave::vault_seal_request::Secret::Sealed(_)));
    core.check_plaintext(sealed)?;
    let uid = uid_of(caller)?;
    checks::target(&req.target)?;
    checks::credential_names(&req.user, &req.domain, &req.realm)?;
    if !kdc.is_empty() {
        check_host_port(&kdc)?;
        crate::kerberos::check_logon_kdc(core, caller, &req.realm, &kdc).await?;
    }
    let allow_rc4 = core.config().kerberos.allow_rc4;
    let kind = check_secret(req.secret.as_ref().map(SecretRef::from), &req.realm, allow_rc4)?;
    let created_unix_ms = now_unix_ms();
    req.uid = uid;
    req.created_unix_ms = created_unix_ms;
    req.allow_rc4 = allow_rc4;
    let reply = core.link().client(caller).vault_seal(req).await?;
    if reply.sealed_blob.is_empty() || reply.sealed_blob.len() > MAX_BLOB_LEN {
        return Err(LsaError::Internal(
            "the enclave returned a malformed sealed blob".into(),
        ));
    }
    // The enclave knows what a sealed secret held; the proxy does not.
    let secret_kind = match reply.secret_kind.as_str() {
        "password" | "nt_hash" | "key" => reply.secret_kind.clone(),
        _ => kind.to_string(),
    };
    let record = Record {
        format: RECORD_FORMAT.into(),
        uid,
        target: req.target.clone(),
        user: req.user.clone(),
        domain: req.domain.clone(),
        realm: req.realm.clone(),
        kdc,
        created_unix_ms,
        secret_kind,
        sealed_blob: hex::encode(&reply.sealed_blob),
    };
    store(core).write(&record)?;
    info!(%caller, target = ?record.target, user = %record.user, kind = %record.secret_kind, "vault: credential saved");
    Ok(lsa::SaveCredentialReply {
        credential: Some(record.info()),
    })
}

fn store(core: &LsaCore) -> VaultStore {
    VaultStore::new(core.config().vault.dir.clone())
}

/// `ListSavedCredentials`: the caller's (root: everyone's), never a secret.
pub fn list(core: &LsaCore, caller: Caller) -> Result<lsa::ListSavedCredentialsReply, LsaError> {
    let uid = uid_of(caller)?;
    let records = store(core).list(if caller.is_root() { None } else { Some(uid) })?;
    Ok(lsa::ListSavedCredentialsReply {
        credentials: records.iter().map(Record::info).collect(),
    })
}

/// `DeleteSavedCredential`: one of the caller's.
pub fn delete(
    core: &LsaCore,
    caller: Caller,
    req: lsa::DeleteSavedCredentialRequest,
) -> Result<lsa::DeleteSavedCredentialReply, LsaError> {
    let uid = uid_of(caller)?;
    checks::target(&req.target)?;
    store(core).delete(uid, &req.target)?;
    info!(%caller, target = ?req.target, "vault: credential deleted");
    Ok(lsa::DeleteSavedCredentialReply {})
}

/// `LogonSaved`: a logon session from one of the caller's saved credentials, registered as
/// `Logon` registers one. When the enclave re-seals the blob (an allowed upgrade of the image),
/// the stored blob is replaced.
pub async fn logon_saved(
    core: &LsaCore,
    caller: Caller,
    req: lsa::LogonSavedRequest,
) -> Result<lsa::LogonSavedReply, LsaError> {
    let uid = uid_of(caller)?;
    checks::target(&req.target)?;
    let vault = store(core);
    let mut record = vault.read(uid, &req.target)?;
    let blob = hex::decode(&record.sealed_blob).map_err(|_| StoreError::Corrupt {
        target: req.target.clone(),
        why: "the sealed blob is not hex".into(),
    })?;
    // Names as they were sealed; they are checked by the enclave (bound into the seal), and here
    // only so that a corrupt file cannot make an over-long session entry.
    for (field, v) in [
        ("user", &record.user),
        ("domain", &record.domain),
        ("realm", &record.realm),
    ] {
        if v.len() > MAX_NAME_LEN {
            return Err(StoreError::Corrupt {
                target: req.target.clone(),
                why: format!("{field} is too long"),
            }
            .into());
        }
    }
    let secret_kind: &'static str = match record.secret_kind.as_str() {
        "nt_hash" => "nt_hash",
        "key" => "key",
        _ => "password",
    };
    core.check_session_limit(caller)?;
    let boot_id = core.current_boot_id()?;
    // The caller's uid and the asked target, not the file's: a blob moved to another uid's
    // directory or another target's file does not open (they are bound into the seal).
    let enclave_req = enclave::VaultLogonRequest {
        uid,
        target: req.target.clone(),
        user: record.user.clone(),
        domain: record.domain.clone(),
        realm: record.realm.clone(),
        created_unix_ms: record.created_unix_ms,
        sealed_blob: blob,
        operations_per_second: core.config().limits.operations_per_second_per_session,
    };
    let reply = core.link().client(caller).vault_logon(&enclave_req).await?;
    if reply.session_handle.len() != checks::SESSION_HANDLE_LEN {
        return Err(LsaError::Internal(
            "the enclave returned a malformed session handle".into(),
        ));
    }
    let session_id = hex::encode(&reply.session_handle);
    info!(%caller, session = %session_id, target = ?req.target, user = %record.user, kind = secret_kind, "logon from the vault");
    core.register_session(LogonSession {
        session_id: session_id.clone(),
        handle: reply.session_handle,
        owner: caller,
        user: record.user.clone(),
        domain: record.domain.clone(),
        realm: record.realm.clone(),
        kdc: record.kdc.clone(),
        secret_kind,
        // The vault's secret went in sealed (by the enclave), never through the proxy again.
        sealed: true,
        created_unix_ms: now_unix_ms(),
        boot_id,
        user_sid: String::new(),
    });
    if !reply.resealed_blob.is_empty() && reply.resealed_blob.len() <= MAX_BLOB_LEN {
        record.sealed_blob = hex::encode(&reply.resealed_blob);
        // The session exists either way; a failed rewrite leaves the old blob, which this image
        // can still open while its manifest allows the old one.
        match vault.write(&record) {
            Ok(()) => info!(%caller, target = ?req.target, "vault: re-sealed under this enclave image's key"),
            Err(e) => warn!(%caller, target = ?req.target, "vault: re-sealing not stored: {e}"),
        }
    }
    Ok(lsa::LogonSavedReply { session_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cg-vault-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn record(uid: u32, target: &str) -> Record {
        Record {
            format: RECORD_FORMAT.into(),
            uid,
            target: target.into(),
            user: "alice".into(),
            domain: "CORP".into(),
            realm: String::new(),
            kdc: String::new(),
            created_unix_ms: 1,
            secret_kind: "password".into(),
            sealed_blob: "43475654".into(),
        }
    }

    #[test]
    fn write_read_list_delete() {
        let d = dir("store");
        let s = VaultStore::new(&d);
        assert!(matches!(s.list(Some(5)), Ok(v) if v.is_empty()));
        s.write(&record(5, "b")).unwrap();
        s.write(&record(5, "a/../../x")).unwrap();
        s.write(&record(6, "a")).unwrap();
        assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(s.uid_dir(5)).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(s.path(5, "b")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(s.read(5, "b").unwrap(), record(5, "b"));
        let mine: Vec<_> = s.list(Some(5)).unwrap().into_iter().map(|r| r.target).collect();
        assert_eq!(mine, ["a/../../x", "b"]);
        assert_eq!(s.list(None).unwrap().len(), 3);
        // Replacing keeps one file; no temporary files are left.
        let mut r = record(5, "b");
        r.user = "bob".into();
        s.write(&r).unwrap();
        assert_eq!(s.read(5, "b").unwrap().user, "bob");
        assert_eq!(fs::read_dir(s.uid_dir(5)).unwrap().count(), 2);
        s.delete(5, "b").unwrap();
        assert!(matches!(s.delete(5, "b"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.read(5, "b"), Err(StoreError::NotFound(_))));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_and_misplaced_records_are_refused_or_skipped() {
        let d = dir("corrupt");
        let s = VaultStore::new(&d);
        s.write(&record(5, "good")).unwrap();
        fs::write(s.path(5, "bad"), b"{ not json").unwrap();
        let e = s.read(5, "bad").unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert!(matches!(LsaError::from(e), LsaError::InvalidArgument(_)));
        // Another uid's record copied into uid 5's directory, under another target's name.
        fs::copy(s.path(5, "good"), s.path(5, "moved")).unwrap();
        let listed: Vec<_> = s.list(Some(5)).unwrap().into_iter().map(|r| r.target).collect();
        assert_eq!(listed, ["good"], "corrupt and misplaced files are not listed");
        fs::write(s.path(5, "huge"), vec![b' '; 70_000]).unwrap();
        assert!(matches!(s.read(5, "huge"), Err(StoreError::Corrupt { .. })));
        fs::remove_dir_all(&d).unwrap();
    }

    fn check_target(target: &str) -> Result<(), LsaError> {
        Ok(checks::target(target)?)
    }

    #[test]
    fn targets_are_checked() {
        assert!(check_target("fileserver.corp.test").is_ok());
        assert!(check_target(&"x".repeat(256)).is_ok());
        assert!(check_target("").is_err());
        assert!(check_target(&"x".repeat(257)).is_err());
        assert!(check_target("a\tb").is_err());
        assert!(matches!(
            uid_of(Caller::VsockCid(3)),
            Err(LsaError::PermissionDenied(_))
        ));
        assert_eq!(VaultStore::file_name("a").len(), 64 + 5);
        assert_ne!(VaultStore::file_name("a"), VaultStore::file_name("b"));
    }

    #[test]
    fn save_requests_are_wiped() {
        let mut r = lsa::SaveCredentialRequest {
            target: "t".into(),
            secret: Some(lsa::save_credential_request::Secret::Password("pw".into())),
            ..Default::default()
        };
        r.secret.zeroize();
        assert!(r.secret.is_none());
    }
}
