//! The signed enclave image.
//!
//! An enclave image is an ELF file plus a manifest (JSON, next to it as `<image>.manifest.json`).
//! The manifest records the image's size and SHA-384 measurement and an Ed25519 signature over
//! them. [`SignedImage::load_and_verify`] is the only way to get image bytes to boot: it checks the
//! signer against the trusted public key, the signature, the size and the measurement, and then
//! keeps the bytes it measured, so the VMM boots exactly what was verified (no second read of the
//! file that could race with a writer).
//!
//! Keys: the private key is a PKCS#8 DER file (ring's format); the public key is a text file with
//! the 32-byte Ed25519 key in hex. [`dev`] creates a development key pair on first use; it is never
//! committed (`images/keys/` is ignored by git).
#![deny(missing_docs)]

pub mod dev;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ring::digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Length of a [`Measurement`].
pub const MEASUREMENT_LEN: usize = 48;
/// Value of the manifest's `format` field.
pub const MANIFEST_FORMAT: &str = "credguard-enclave-manifest/1";
/// Largest image accepted: the guest layout leaves it 5 MiB; more is a wrong file.
pub const MAX_IMAGE_SIZE: u64 = 16 << 20;
/// Domain separation for the signed message, so a signature over a manifest cannot be
/// mistaken for a signature over anything else made with the same key.
const SIGNED_PREFIX: &[u8] = b"credguard enclave manifest v1\0";
/// Domain separation of a manifest that also allows upgrades (non-empty `upgrade_from`): a
/// different prefix, so that the allowance cannot be stripped from or added to a v1 signature.
const SIGNED_PREFIX_UPGRADE: &[u8] = b"credguard enclave manifest v1 upgrade_from\0";
/// Domain separation of a manifest with a non-default [`Policy`].
const SIGNED_PREFIX_POLICY: &[u8] = b"credguard enclave manifest v1 policy\0";
/// Most earlier images one manifest may allow (the boot ABI hands over at most this many).
pub const MAX_UPGRADE_FROM: usize = 4;

/// SHA-384 of an image file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Measurement([u8; MEASUREMENT_LEN]);

impl Measurement {
    /// Measures `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA384, bytes);
        let mut m = [0u8; MEASUREMENT_LEN];
        m.copy_from_slice(d.as_ref());
        Measurement(m)
    }

    /// The raw 48 bytes.
    pub fn as_bytes(&self) -> &[u8; MEASUREMENT_LEN] {
        &self.0
    }

    /// Parses 96 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(Measurement(v.try_into().ok()?))
    }
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Measurement({self})")
    }
}

/// Short identifier of an Ed25519 public key: the first 16 bytes of its SHA-256, in hex.
pub fn fingerprint(public_key: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, public_key);
    hex::encode(&d.as_ref()[..16])
}

/// The manifest file's contents. Parsed strictly: an unknown or repeated field is refused, and
/// so is a `signer` other than the fingerprint of `signer_public_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// File name of the image (informational; the path given to the verifier is what counts).
    pub image: String,
    /// Size of the image in bytes.
    pub image_size: u64,
    /// SHA-384 of the image, hex.
    pub measurement: String,
    /// The signer's Ed25519 public key, hex.
    pub signer_public_key: String,
    /// Fingerprint of the signer's key (see [`fingerprint`]).
    pub signer: String,
    /// Ed25519 signature over the signed message (see [`Manifest::signed_message_with`]), hex.
    pub signature: String,
    /// Measurements (hex) of earlier images whose vault (saved credentials) this image may open
    /// and re-seal: the signer's allowance of a controlled upgrade. Covered by the signature.
    /// Absent in manifests that allow none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrade_from: Vec<String>,
    /// The image's signed policy (see [`Policy`]). Covered by the signature. Absent when it is
    /// the default, the strictest.
    #[serde(default, skip_serializing_if = "Policy::is_default")]
    pub policy: Policy,
}

/// Rules of an image's signed configuration, which the VMM hands to the enclave
/// (`abi::BootInfo::policy`) and no request can change. The default is the strictest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Logons that ask for it may use rc4-hmac (weak; only for domains that still need it).
    #[serde(default)]
    pub allow_rc4: bool,
}

impl Policy {
    /// Whether this is the default policy.
    pub fn is_default(&self) -> bool {
        *self == Policy::default()
    }

    /// The `abi::policy` bits of this policy.
    pub fn bits(&self) -> u64 {
        if self.allow_rc4 {
            credguard_proto::abi::policy::ALLOW_RC4
        } else {
            0
        }
    }
}

impl Manifest {
    /// The bytes the signature covers: a domain prefix, the image size, the measurement and the
    /// signer's public key.
    pub fn signed_message(image_size: u64, measurement: &Measurement, public_key: &[u8]) -> Vec<u8> {
        signed_parts(SIGNED_PREFIX, image_size, measurement, public_key, None, None)
    }

    /// The bytes the signature covers when the manifest also allows upgrades from the images
    /// `upgrade_from`: as [`Manifest::signed_message`] with its own domain prefix, followed by the
    /// count and the measurements. With none, exactly [`Manifest::signed_message`], so manifests
    /// made before upgrades existed still verify.
    pub fn signed_message_with(
        image_size: u64,
        measurement: &Measurement,
        public_key: &[u8],
        upgrade_from: &[Measurement],
    ) -> Vec<u8> {
        if upgrade_from.is_empty() {
            return Self::signed_message(image_size, measurement, public_key);
        }
        let prefix = SIGNED_PREFIX_UPGRADE;
        signed_parts(prefix, image_size, measurement, public_key, Some(upgrade_from), None)
    }

    /// The bytes the signature covers with a [`Policy`] too: with the default policy exactly
    /// [`Manifest::signed_message_with`] (so older manifests still verify); otherwise its own
    /// domain prefix, the upgrade list and the policy bits, so a policy can be neither added nor
    /// removed without the key.
    pub fn signed_message_full(
        image_size: u64,
        measurement: &Measurement,
        public_key: &[u8],
        upgrade_from: &[Measurement],
        policy: &Policy,
    ) -> Vec<u8> {
        if policy.is_default() {
            return Self::signed_message_with(image_size, measurement, public_key, upgrade_from);
        }
        let (prefix, bits) = (SIGNED_PREFIX_POLICY, Some(policy.bits()));
        signed_parts(prefix, image_size, measurement, public_key, Some(upgrade_from), bits)
    }
}

/// A signed message: `prefix`, the image size, the measurement and the public key, then (if
/// given) the count and measurements of `upgrade_from`, then (if given) the policy bits.
fn signed_parts(
    prefix: &[u8],
    image_size: u64,
    measurement: &Measurement,
    public_key: &[u8],
    upgrade_from: Option<&[Measurement]>,
    policy_bits: Option<u64>,
) -> Vec<u8> {
    let upgrades = upgrade_from.unwrap_or_default();
    let mut m = Vec::with_capacity(prefix.len() + 20 + MEASUREMENT_LEN * (1 + upgrades.len()) + public_key.len());
    m.extend_from_slice(prefix);
    m.extend_from_slice(&image_size.to_le_bytes());
    m.extend_from_slice(measurement.as_bytes());
    m.extend_from_slice(public_key);
    if let Some(list) = upgrade_from {
        m.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for u in list {
            m.extend_from_slice(u.as_bytes());
        }
    }
    if let Some(bits) = policy_bits {
        m.extend_from_slice(&bits.to_le_bytes());
    }
    m
}

/// Why an image, a manifest or a key was refused. Each names the file and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// The manifest is not a valid manifest.
    #[error("{path}: not a valid enclave manifest: {reason}")]
    ManifestInvalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The trusted public key file is not a hex Ed25519 public key.
    #[error("{path}: not an Ed25519 public key (expected 64 hex digits)")]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
    },
    /// The signing key file is not a PKCS#8 Ed25519 key.
    #[error("{path}: not a PKCS#8 Ed25519 private key")]
    SigningKeyInvalid {
        /// The key file.
        path: PathBuf,
    },
    /// The manifest was signed by a key other than the trusted one.
    #[error("{path}: signed by key {signer}, but the trusted key is {trusted}")]
    WrongSigner {
        /// The manifest.
        path: PathBuf,
        /// Fingerprint of the manifest's signer.
        signer: String,
        /// Fingerprint of the trusted key.
        trusted: String,
    },
    /// The signature does not verify.
    #[error("{path}: signature does not verify against trusted key {trusted}")]
    BadSignature {
        /// The manifest.
        path: PathBuf,
        /// Fingerprint of the trusted key.
        trusted: String,
    },
    /// The image's size differs from the manifest's (a truncated or extended image).
    #[error("{path}: image is {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The image.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The image's SHA-384 differs from the manifest's.
    #[error("{path}: measurement {actual} does not match the manifest's {expected}")]
    MeasurementMismatch {
        /// The image.
        path: PathBuf,
        /// Measurement in the manifest.
        expected: Measurement,
        /// Measurement of the file.
        actual: Measurement,
    },
    /// The image is larger than any enclave image can be.
    #[error("{path}: image is larger than {MAX_IMAGE_SIZE} bytes")]
    TooLarge {
        /// The image.
        path: PathBuf,
    },
    /// Building the enclave failed.
    #[error("building the enclave image failed: {0}")]
    Build(String),
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> ImageError + use<'a> {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// The manifest path that goes with an image: `<image>.manifest.json`.
pub fn default_manifest_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

/// The measurement an `--upgrade-from` argument names: 96 hex digits, or the path of the earlier
/// image's manifest (its `measurement` is taken; the signer vouches for it by signing the new one).
pub fn upgrade_from_arg(arg: &str) -> Result<Measurement, ImageError> {
    if let Some(m) = Measurement::from_hex(arg.trim()) {
        return Ok(m);
    }
    let path = Path::new(arg);
    let text = fs::read_to_string(path).map_err(io_err(
        path,
        "--upgrade-from is neither a measurement nor a readable manifest",
    ))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| ImageError::ManifestInvalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Measurement::from_hex(&m.measurement).ok_or_else(|| ImageError::ManifestInvalid {
        path: path.to_path_buf(),
        reason: "measurement is not 96 hex digits".into(),
    })
}

/// An Ed25519 public key trusted to sign enclave images.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey([u8; 32]);

impl TrustedKey {
    /// Reads a public key file (64 hex digits, surrounding white space allowed).
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let text = fs::read_to_string(path).map_err(io_err(path, "cannot read the trusted public key"))?;
        let bytes = hex::decode(text.trim()).map_err(|_| ImageError::KeyInvalid {
            path: path.to_path_buf(),
        })?;
        let key = bytes.try_into().map_err(|_| ImageError::KeyInvalid {
            path: path.to_path_buf(),
        })?;
        Ok(TrustedKey(key))
    }

    /// The key's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.0)
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// An image whose signature and measurement have been verified.
pub struct SignedImage {
    bytes: Vec<u8>,
    measurement: Measurement,
    signer: String,
    path: PathBuf,
    upgrade_from: Vec<Measurement>,
    policy: Policy,
}

impl fmt::Debug for SignedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedImage")
            .field("path", &self.path)
            .field("size", &self.bytes.len())
            .field("measurement", &self.measurement)
            .field("signer", &self.signer)
            .finish()
    }
}

impl SignedImage {
    /// Reads the manifest, the trusted key and the image, and verifies, in this order: the
    /// manifest's signer is the trusted key, the signature, the image's size, its measurement.
    pub fn load_and_verify(image: &Path, manifest: &Path, trusted_key: &Path) -> Result<Self, ImageError> {
        let key = TrustedKey::load(trusted_key)?;
        let manifest_text = fs::read_to_string(manifest).map_err(io_err(manifest, "cannot read the manifest"))?;
        let m: Manifest = serde_json::from_str(&manifest_text).map_err(|e| ImageError::ManifestInvalid {
            path: manifest.to_path_buf(),
            reason: e.to_string(),
        })?;
        let invalid = |reason: &str| ImageError::ManifestInvalid {
            path: manifest.to_path_buf(),
            reason: reason.into(),
        };
        if m.format != MANIFEST_FORMAT {
            return Err(invalid("unknown format"));
        }
        let expected =
            Measurement::from_hex(&m.measurement).ok_or_else(|| invalid("measurement is not 96 hex digits"))?;
        let signer_key = hex::decode(&m.signer_public_key).map_err(|_| invalid("signer_public_key is not hex"))?;
        // `signer` is not covered by the signature: it must say exactly what the key it names
        // is, or a reader of the manifest could be shown one key while another one signed.
        if m.signer != fingerprint(&signer_key) {
            return Err(invalid("signer is not the fingerprint of signer_public_key"));
        }
        let sig = hex::decode(&m.signature).map_err(|_| invalid("signature is not hex"))?;
        if m.upgrade_from.len() > MAX_UPGRADE_FROM {
            return Err(invalid("upgrade_from lists more than 4 measurements"));
        }
        let upgrade_from = m
            .upgrade_from
            .iter()
            .map(|h| Measurement::from_hex(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("an upgrade_from entry is not 96 hex digits"))?;
        if signer_key != key.0 {
            return Err(ImageError::WrongSigner {
                path: manifest.to_path_buf(),
                signer: fingerprint(&signer_key),
                trusted: key.fingerprint(),
            });
        }
        let message = Manifest::signed_message_full(m.image_size, &expected, &key.0, &upgrade_from, &m.policy);
        UnparsedPublicKey::new(&signature::ED25519, &key.0)
            .verify(&message, &sig)
            .map_err(|_| ImageError::BadSignature {
                path: manifest.to_path_buf(),
                trusted: key.fingerprint(),
            })?;

        let bytes = read_image(image)?;
        if bytes.len() as u64 != m.image_size {
            return Err(ImageError::SizeMismatch {
                path: image.to_path_buf(),
                expected: m.image_size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Measurement::of(&bytes);
        if actual != expected {
            return Err(ImageError::MeasurementMismatch {
                path: image.to_path_buf(),
                expected,
                actual,
            });
        }
        Ok(SignedImage {
            bytes,
            measurement: actual,
            signer: key.fingerprint(),
            path: image.to_path_buf(),
            upgrade_from,
            policy: m.policy,
        })
    }

    /// The image's signed policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Earlier images whose vault this one may open (from the signed manifest).
    pub fn upgrade_from(&self) -> &[Measurement] {
        &self.upgrade_from
    }

    /// The verified image bytes: boot these, never the file again.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The image's measurement.
    pub fn measurement(&self) -> Measurement {
        self.measurement
    }

    /// Fingerprint of the key that signed it, hex.
    pub fn signer_fingerprint(&self) -> String {
        self.signer.clone()
    }

    /// Fingerprint of the key that signed it, raw (see [`fingerprint`]).
    pub fn signer_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        if let Ok(v) = hex::decode(&self.signer) {
            id.copy_from_slice(&v[..16]);
        }
        id
    }

    /// The image file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_image(path: &Path) -> Result<Vec<u8>, ImageError> {
    let meta = fs::metadata(path).map_err(io_err(path, "cannot read the image"))?;
    if meta.len() > MAX_IMAGE_SIZE {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    fs::read(path).map_err(io_err(path, "cannot read the image"))
}

/// A private signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Reads a PKCS#8 Ed25519 private key file.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let der = fs::read(path).map_err(io_err(path, "cannot read the signing key"))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| ImageError::SigningKeyInvalid {
            path: path.to_path_buf(),
        })?;
        Ok(SigningKey { pair })
    }

    /// Generates a key pair, writes the private key (mode 0600) to `private_path` and the public
    /// key (hex) to `public_path`.
    pub fn generate(private_path: &Path, public_path: &Path) -> Result<Self, ImageError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| ImageError::Build("the system random source failed".into()))?;
        if let Some(dir) = private_path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir, "cannot create the key directory"))?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(private_path)
            .map_err(io_err(private_path, "cannot create the signing key"))?;
        f.write_all(der.as_ref())
            .map_err(io_err(private_path, "cannot write the signing key"))?;
        let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|_| ImageError::SigningKeyInvalid {
            path: private_path.to_path_buf(),
        })?;
        let key = SigningKey { pair };
        fs::write(public_path, format!("{}\n", key.public_key_hex()))
            .map_err(io_err(public_path, "cannot write the public key"))?;
        Ok(key)
    }

    /// The public key, hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.pair.public_key().as_ref())
    }

    /// The public key's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.pair.public_key().as_ref())
    }

    /// Measures `image` and returns its signed manifest.
    pub fn sign(&self, image_name: &str, image: &[u8]) -> Manifest {
        self.sign_with(image_name, image, &[])
    }

    /// Measures `image` and returns its signed manifest, allowing it to open the vaults of the
    /// images `upgrade_from` (see [`Manifest::upgrade_from`]).
    pub fn sign_with(&self, image_name: &str, image: &[u8], upgrade_from: &[Measurement]) -> Manifest {
        self.sign_full(image_name, image, upgrade_from, &Policy::default())
    }

    /// Measures `image` and returns its signed manifest with `upgrade_from` and `policy`.
    pub fn sign_full(&self, image_name: &str, image: &[u8], upgrade_from: &[Measurement], policy: &Policy) -> Manifest {
        let measurement = Measurement::of(image);
        let public = self.pair.public_key().as_ref();
        let message = Manifest::signed_message_full(image.len() as u64, &measurement, public, upgrade_from, policy);
        Manifest {
            format: MANIFEST_FORMAT.into(),
            image: image_name.into(),
            image_size: image.len() as u64,
            measurement: measurement.to_string(),
            signer_public_key: hex::encode(public),
            signer: fingerprint(public),
            signature: hex::encode(self.pair.sign(&message)),
            upgrade_from: upgrade_from.iter().map(Measurement::to_string).collect(),
            policy: *policy,
        }
    }

    /// Signs the image file at `image` and writes the manifest to `manifest`.
    pub fn sign_file(&self, image: &Path, manifest: &Path) -> Result<Manifest, ImageError> {
        self.sign_file_with(image, manifest, &[])
    }

    /// Like [`SigningKey::sign_file`], allowing upgrades from the images `upgrade_from`.
    pub fn sign_file_with(
        &self,
        image: &Path,
        manifest: &Path,
        upgrade_from: &[Measurement],
    ) -> Result<Manifest, ImageError> {
        self.sign_file_full(image, manifest, upgrade_from, &Policy::default())
    }

    /// Like [`SigningKey::sign_file_with`], with a [`Policy`].
    pub fn sign_file_full(
        &self,
        image: &Path,
        manifest: &Path,
        upgrade_from: &[Measurement],
        policy: &Policy,
    ) -> Result<Manifest, ImageError> {
        if upgrade_from.len() > MAX_UPGRADE_FROM {
            return Err(ImageError::Build(format!(
                "at most {MAX_UPGRADE_FROM} --upgrade-from measurements"
            )));
        }
        let bytes = read_image(image)?;
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let m = self.sign_full(&name, &bytes, upgrade_from, policy);
        let text = serde_json::to_string_pretty(&m).map_err(|e| ImageError::Build(e.to_string()))?;
        fs::write(manifest, text + "\n").map_err(io_err(manifest, "cannot write the manifest"))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: PathBuf,
        image: PathBuf,
        manifest: PathBuf,
        public: PathBuf,
    }

    fn fixture(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("credguard-image-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let key = SigningKey::generate(&dir.join("k.pk8"), &dir.join("k.pub")).unwrap();
        let image = dir.join("enclave.elf");
        fs::write(&image, b"\x7fELF pretend image bytes, long enough to flip one").unwrap();
        let manifest = default_manifest_path(&image);
        key.sign_file(&image, &manifest).unwrap();
        Fixture {
            public: dir.join("k.pub"),
            dir,
            image,
            manifest,
        }
    }

    #[test]
    fn verifies_a_signed_image() {
        let f = fixture("ok");
        let img = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap();
        assert_eq!(img.bytes(), fs::read(&f.image).unwrap());
        assert_eq!(img.measurement(), Measurement::of(&fs::read(&f.image).unwrap()));
        assert_eq!(
            img.signer_fingerprint(),
            TrustedKey::load(&f.public).unwrap().fingerprint()
        );
    }

    #[test]
    fn refuses_a_flipped_byte() {
        let f = fixture("flip");
        let mut b = fs::read(&f.image).unwrap();
        b[10] ^= 1;
        fs::write(&f.image, b).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::MeasurementMismatch { .. }), "{e}");
        assert!(e.to_string().contains("enclave.elf"), "{e}");
    }

    #[test]
    fn refuses_a_truncated_image() {
        let f = fixture("trunc");
        let b = fs::read(&f.image).unwrap();
        fs::write(&f.image, &b[..b.len() - 1]).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::SizeMismatch { .. }), "{e}");
    }

    #[test]
    fn refuses_another_key() {
        let f = fixture("key");
        let other = f.dir.join("other.pub");
        SigningKey::generate(&f.dir.join("other.pk8"), &other).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &other).unwrap_err();
        assert!(matches!(e, ImageError::WrongSigner { .. }), "{e}");
    }

    #[test]
    fn refuses_a_forged_signature() {
        let f = fixture("forge");
        // An attacker re-measures a changed image and edits the manifest, keeping the signer.
        let mut b = fs::read(&f.image).unwrap();
        b[0] ^= 0xff;
        fs::write(&f.image, &b).unwrap();
        let mut m: Manifest = serde_json::from_str(&fs::read_to_string(&f.manifest).unwrap()).unwrap();
        m.measurement = Measurement::of(&b).to_string();
        fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::BadSignature { .. }), "{e}");
    }

    #[test]
    fn refuses_a_manifest_of_another_image() {
        let f = fixture("other");
        let key = SigningKey::load(&f.dir.join("k.pk8")).unwrap();
        let other = f.dir.join("other.elf");
        fs::write(&other, b"\x7fELF another image of the same length, signed fine!").unwrap();
        key.sign_file(&other, &f.manifest).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::MeasurementMismatch { .. } | ImageError::SizeMismatch { .. }
            ),
            "{e}"
        );
    }

    #[test]
    fn upgrade_allowance_is_signed() {
        let f = fixture("upgrade");
        let key = SigningKey::load(&f.dir.join("k.pk8")).unwrap();
        let old = Measurement::of(b"the old image");
        key.sign_file_with(&f.image, &f.manifest, &[old]).unwrap();
        let img = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap();
        assert_eq!(img.upgrade_from(), &[old]);
        // Adding, changing or removing an allowance breaks the signature.
        let signed: Manifest = serde_json::from_str(&fs::read_to_string(&f.manifest).unwrap()).unwrap();
        for edit in [
            vec![],
            vec![Measurement::of(b"another image").to_string()],
            vec![old.to_string(), Measurement::of(b"x").to_string()],
        ] {
            let mut m = signed.clone();
            m.upgrade_from = edit;
            fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
            let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
            assert!(matches!(e, ImageError::BadSignature { .. }), "{e}");
        }
        let mut m = signed.clone();
        m.upgrade_from = vec!["zz".into()];
        fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::ManifestInvalid { .. }), "{e}");
        // A manifest without the field (as before upgrades existed) still verifies.
        key.sign_file(&f.image, &f.manifest).unwrap();
        assert!(!fs::read_to_string(&f.manifest).unwrap().contains("upgrade_from"));
        let img = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap();
        assert!(img.upgrade_from().is_empty());
        assert!(key.sign_file_with(&f.image, &f.manifest, &[old; 5]).is_err());
    }

    #[test]
    fn the_policy_is_signed_and_cannot_be_added_or_removed() {
        let f = fixture("policy");
        let key = SigningKey::load(&f.dir.join("k.pk8")).unwrap();
        let rc4 = Policy { allow_rc4: true };
        let old = Measurement::of(b"the old image");
        key.sign_file_full(&f.image, &f.manifest, &[old], &rc4).unwrap();
        let img = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap();
        assert_eq!((img.policy(), img.upgrade_from()), (rc4, &[old][..]));
        assert_eq!(img.policy().bits(), credguard_proto::abi::policy::ALLOW_RC4);
        let signed: Manifest = serde_json::from_str(&fs::read_to_string(&f.manifest).unwrap()).unwrap();
        // Dropped from a manifest that has it, or the upgrade list changed under it: refused.
        let mut m = signed.clone();
        m.policy = Policy::default();
        fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::BadSignature { .. }), "{e}");
        let mut m = signed.clone();
        m.upgrade_from.clear();
        fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::BadSignature { .. }), "{e}");
        // Added to a manifest signed without it: refused.
        key.sign_file(&f.image, &f.manifest).unwrap();
        assert!(!fs::read_to_string(&f.manifest).unwrap().contains("policy"));
        let mut m: Manifest = serde_json::from_str(&fs::read_to_string(&f.manifest).unwrap()).unwrap();
        m.policy = rc4;
        fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::BadSignature { .. }), "{e}");
        // An unknown policy key: refused as invalid.
        let text = fs::read_to_string(&f.manifest)
            .unwrap()
            .replace("\"allow_rc4\"", "\"allow_des\"");
        fs::write(&f.manifest, text).unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::ManifestInvalid { .. }), "{e}");
    }

    #[test]
    fn refuses_a_signer_that_is_not_the_keys_fingerprint() {
        let f = fixture("signer");
        let signed: Manifest = serde_json::from_str(&fs::read_to_string(&f.manifest).unwrap()).unwrap();
        let other = SigningKey::generate(&f.dir.join("other.pk8"), &f.dir.join("other.pub")).unwrap();
        for signer in [other.fingerprint(), String::new(), signed.signer.to_uppercase()] {
            let mut m = signed.clone();
            m.signer = signer;
            fs::write(&f.manifest, serde_json::to_string(&m).unwrap()).unwrap();
            let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
            assert!(
                matches!(&e, ImageError::ManifestInvalid { reason, .. } if reason.contains("signer")),
                "{e}"
            );
        }
        // The untouched manifest verifies.
        fs::write(&f.manifest, serde_json::to_string(&signed).unwrap()).unwrap();
        assert!(SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).is_ok());
    }

    #[test]
    fn refuses_unknown_and_repeated_fields() {
        let f = fixture("fields");
        let text = fs::read_to_string(&f.manifest).unwrap();
        let body = text.trim_end().strip_suffix('}').unwrap();
        for extra in [
            ",\n  \"comment\": \"harmless?\"\n}",
            ",\n  \"trusted\": true\n}",
            ",\n  \"image_size\": 1\n}",
        ] {
            fs::write(&f.manifest, format!("{body}{extra}")).unwrap();
            let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
            assert!(matches!(e, ImageError::ManifestInvalid { .. }), "{extra}: {e}");
        }
        fs::write(&f.manifest, &text).unwrap();
        assert!(SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).is_ok());
    }

    #[test]
    fn refuses_garbage_manifest_and_key() {
        let f = fixture("garbage");
        fs::write(&f.manifest, "{ not json").unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::ManifestInvalid { .. }), "{e}");
        fs::write(&f.public, "zz").unwrap();
        let e = SignedImage::load_and_verify(&f.image, &f.manifest, &f.public).unwrap_err();
        assert!(matches!(e, ImageError::KeyInvalid { .. }), "{e}");
    }
}
