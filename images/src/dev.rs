//! Development mode: a signing key made on first use and an enclave built and signed on demand,
//! and the shipped host binaries built on demand ([`binaries`]).
//!
//! Used by the dev launcher (`cargo run --release` at the repository root), the tests and the
//! benchmarks, so that all of them boot the same, freshly built, properly signed image. The dev key
//! lives in `images/keys/` (ignored by git) and is never a production key: a production image is
//! signed with `credguard-image sign --key PATH`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{ImageError, SignedImage, SigningKey, default_manifest_path};

pub mod binaries;

pub use binaries::{BinariesError, HostBinaries, Progress, ensure_host_binaries_built};

/// The repository this crate was built from.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Private half of the dev signing key.
pub fn dev_signing_key_path() -> PathBuf {
    repo_root().join("images/keys/dev-signing.pk8")
}

/// Public half of the dev signing key: the key the VMM trusts by default in dev mode.
pub fn default_trusted_key_path() -> PathBuf {
    repo_root().join("images/keys/dev-signing.pub")
}

/// Where the build puts the enclave image.
pub fn default_image_path() -> PathBuf {
    repo_root().join("images/out/enclave.elf")
}

/// Where the build puts the test image (see [`ensure_test_enclave_built`]).
pub fn test_image_path() -> PathBuf {
    repo_root().join("images/out/enclave-test.elf")
}

/// Which image to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// The production image: no test code.
    Production,
    /// The test image: fault injection, benchmark and self-test boot modes compiled in; the
    /// enclave reports itself a test build in its attestation.
    Test,
}

/// Paths of a built and dev-signed image.
#[derive(Debug, Clone)]
pub struct DevImage {
    /// The ELF image.
    pub image: PathBuf,
    /// Its manifest.
    pub manifest: PathBuf,
    /// The public key that verifies it.
    pub trusted_key: PathBuf,
}

impl DevImage {
    /// Loads and verifies the image.
    pub fn verify(&self) -> Result<SignedImage, ImageError> {
        SignedImage::load_and_verify(&self.image, &self.manifest, &self.trusted_key)
    }
}

/// Loads the dev signing key, generating it on first use.
pub fn ensure_dev_key() -> Result<SigningKey, ImageError> {
    let private = dev_signing_key_path();
    if private.exists() {
        SigningKey::load(&private)
    } else {
        SigningKey::generate(&private, &default_trusted_key_path())
    }
}

/// Builds the production enclave (cargo is incremental: a no-op when nothing changed) and signs
/// it with the dev key unless its manifest already verifies. Safe to call from several processes
/// at once: a file lock serializes them.
pub fn ensure_enclave_built() -> Result<DevImage, ImageError> {
    ensure_built(ImageKind::Production)
}

/// As [`ensure_enclave_built`], for the test image (`images/out/enclave-test.elf`), which the
/// VMM's fault-injection, benchmark and self-test modes need.
pub fn ensure_test_enclave_built() -> Result<DevImage, ImageError> {
    ensure_built(ImageKind::Test)
}

/// Builds and dev-signs the image of `kind`.
pub fn ensure_built(kind: ImageKind) -> Result<DevImage, ImageError> {
    let root = repo_root();
    let out_dir = root.join("images/out");
    fs::create_dir_all(&out_dir).map_err(|source| ImageError::Io {
        path: out_dir.clone(),
        what: "cannot create the output directory",
        source,
    })?;
    let lock_path = out_dir.join(".build.lock");
    let lock = fs::File::create(&lock_path).map_err(|source| ImageError::Io {
        path: lock_path.clone(),
        what: "cannot create the build lock",
        source,
    })?;
    lock.lock().map_err(|source| ImageError::Io {
        path: lock_path,
        what: "cannot take the build lock",
        source,
    })?;

    let script = root.join("scripts/build-enclave.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    if kind == ImageKind::Test {
        cmd.arg("--test");
    }
    cmd.current_dir(&root).stdout(Stdio::null()).stderr(Stdio::inherit());
    // We may run under `cargo test`/`cargo run`: do not let the outer build's settings
    // (encoded RUSTFLAGS, target dir, jobserver) leak into the enclave's own build.
    for (k, _) in env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("CARGO_") || k.starts_with("RUSTC") || k == "RUSTFLAGS")
            && !(k == "CARGO_HOME" || k.starts_with("CARGO_NET_") || k.starts_with("CARGO_TERM_"))
        {
            cmd.env_remove(k);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| ImageError::Build(format!("cannot run {}: {e}", script.display())))?;
    if !status.success() {
        return Err(ImageError::Build(format!("{} failed ({status})", script.display())));
    }

    let image = match kind {
        ImageKind::Production => default_image_path(),
        ImageKind::Test => test_image_path(),
    };
    let dev = DevImage {
        manifest: default_manifest_path(&image),
        image,
        trusted_key: default_trusted_key_path(),
    };
    let key = ensure_dev_key()?;
    if dev.verify().is_err() {
        key.sign_file(&dev.image, &dev.manifest)?;
    }
    dev.verify()?;
    Ok(dev)
}
