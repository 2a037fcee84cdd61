//! The vault (saved credentials): sealing a credential so that only an enclave with the vault key
//! can open it again, after restarts of the enclave, the VMM or the host.
//!
//! **Keys.** The vault key of an image is HKDF-SHA256 of the host sealing secret (a root-only file
//! on the host) with the image's measurement (SHA-384 of the signed image) as info
//! (`abi::VAULT_KEY_SALT`). The VMM derives it for the image it has just verified and hands over
//! only that key, never the host secret, through the exchange page, plus the keys of the earlier
//! images that the image's *signed* manifest lists in `upgrade_from` (in `BootInfo::upgrade_from`
//! order), which are used for opening only: what is opened under one is re-sealed under this
//! image's own key. So:
//! - the proxy, a stolen vault directory or another uid has no key;
//! - another image (a tampered one cannot boot; a different signed one) gets its own key only,
//!   and cannot derive this one's, since it never holds the host secret.
//!
//! **Blob format** (version 1, all integers little-endian):
//!
//! | bytes | what |
//! |---|---|
//! | 4 | magic `CGVT` |
//! | 1 | format version (1) |
//! | 48 | measurement of the image whose key sealed it |
//! | 12 | AES-GCM nonce (random) |
//! | n + 16 | AES-256-GCM ciphertext and tag of an encoded `SealedLogonSecret` |
//!
//! The associated data binds the whole header (so a swapped measurement or version fails), the
//! owner uid, the target, user, domain, realm and creation time ([`Binding`], each string
//! length-prefixed): a blob moved to another uid's directory or to another target, or whose
//! metadata was edited, does not open.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use aes_gcm::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};
use credguard_proto::abi::MEASUREMENT_LEN;
use credguard_proto::checks;
use credguard_proto::enclave::{SealedLogonSecret, sealed_logon_secret};
use prost::Message;
use zeroize::{Zeroize, Zeroizing};

/// First bytes of every blob.
pub const MAGIC: &[u8; 4] = b"CGVT";
/// The blob format this enclave writes (and the only one it reads).
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of the AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = MAGIC.len() + 1 + MEASUREMENT_LEN + NONCE_LEN;
/// Longest blob accepted: the longest secret (a 1 KiB password) and its framing, with room.
pub const MAX_BLOB_LEN: usize = HEADER_LEN + 2048 + TAG_LEN;
/// First bytes of the associated data.
const AAD_DOMAIN: &[u8] = b"credguard vault v1";

/// gRPC status code PERMISSION_DENIED: the blob does not open for this owner and target.
pub const CODE_PERMISSION_DENIED: i32 = 7;

/// The fields of `VaultSealRequest` and `VaultLogonRequest` that go into their audit record:
/// decoding only these skips the secret's field without copying it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditView {
    /// The owner uid (field 1 of both requests).
    #[prost(uint32, tag = "1")]
    pub uid: u32,
    /// The target (field 2 of both requests).
    #[prost(string, tag = "2")]
    pub target: String,
}

/// Why a vault call failed. Messages never hold a secret; each maps to a gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// The VMM gave no sealing secret (FAILED_PRECONDITION).
    #[error("no vault: the VMM was started without a sealing secret")]
    NoVault,
    /// The blob is not a vault blob of a known format (INVALID_ARGUMENT).
    #[error("the sealed credential is malformed: {0}")]
    Malformed(&'static str),
    /// Sealed by an image whose key this image may not derive (FAILED_PRECONDITION).
    #[error(
        "the sealed credential was sealed by another enclave image (measurement {hex}...), which this image's \
         signed manifest does not allow (upgrade_from)",
        hex = short_hex(.0)
    )]
    OtherImage([u8; MEASUREMENT_LEN]),
    /// The blob does not open under this owner, target and names, or was altered, or was sealed
    /// under another host sealing secret (PERMISSION_DENIED).
    #[error(
        "the sealed credential does not open: it was saved by another uid or for another target, \
         was altered, or was sealed under another host sealing secret"
    )]
    DoesNotOpen,
    /// The request itself is invalid (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// The random source failed (INTERNAL).
    #[error("the enclave's random source failed")]
    Random,
}

/// The first 8 bytes of a measurement in hex, as messages name an image.
fn short_hex(measurement: &[u8]) -> String {
    measurement.iter().take(8).map(|b| alloc::format!("{b:02x}")).collect()
}

impl VaultError {
    /// The gRPC status code of this error.
    pub fn code(&self) -> i32 {
        use credguard_proto::rpc::code::{
            FAILED_PRECONDITION as CODE_FAILED_PRECONDITION, INTERNAL as CODE_INTERNAL,
            INVALID_ARGUMENT as CODE_INVALID_ARGUMENT,
        };
        match self {
            VaultError::NoVault | VaultError::OtherImage(_) => CODE_FAILED_PRECONDITION,
            VaultError::Malformed(_) | VaultError::Invalid(_) => CODE_INVALID_ARGUMENT,
            VaultError::DoesNotOpen => CODE_PERMISSION_DENIED,
            VaultError::Random => CODE_INTERNAL,
        }
    }
}

/// What a blob is bound to: the associated data besides its header.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The owner uid.
    pub uid: u32,
    /// The target name.
    pub target: &'a str,
    /// User name.
    pub user: &'a str,
    /// NetBIOS domain.
    pub domain: &'a str,
    /// Kerberos realm.
    pub realm: &'a str,
    /// When it was saved, ms since the Unix epoch.
    pub created_unix_ms: u64,
}

impl Binding<'_> {
    /// Refuses a target that is empty, too long or has control characters.
    pub fn check_target(&self) -> Result<(), VaultError> {
        checks::target(self.target).map_err(|e| VaultError::Invalid(e.to_string()))
    }

    /// The associated data of a blob with `header` (magic, version, measurement, nonce).
    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(
            AAD_DOMAIN.len() + header.len() + 24 + self.target.len() + self.user.len() + self.domain.len() + 32,
        );
        aad.extend_from_slice(AAD_DOMAIN);
        aad.extend_from_slice(header);
        aad.extend_from_slice(&self.uid.to_le_bytes());
        for part in [self.target, self.user, self.domain, self.realm] {
            aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        aad
    }
}

/// A credential opened from a blob.
pub struct Opened {
    /// The secret (its fields are wiped by the caller's credential path).
    pub secret: sealed_logon_secret::Secret,
    /// The saver refused rc4-hmac for it.
    pub refuse_rc4: bool,
    /// Whether it was sealed under an earlier image's key (an allowed upgrade): the caller should
    /// re-seal it under this image's key.
    pub from_earlier_image: bool,
}

/// A vault key (32 bytes, AES-256).
pub type VaultKey = Zeroizing<[u8; 32]>;

/// The vault keys of this boot. Live in the ring-3 heap only; never in a `static`.
pub struct Vault {
    /// This image's measurement.
    measurement: [u8; MEASUREMENT_LEN],
    /// This image's vault key.
    key: VaultKey,
    /// Earlier images whose blobs this one may open, with their keys (from the VMM, as the
    /// signed manifest allows).
    upgrade_from: Vec<([u8; MEASUREMENT_LEN], VaultKey)>,
}

impl Vault {
    /// The vault of the image `measurement` with its vault `key`, which may also open blobs of
    /// the images in `upgrade_from` (measurement and key of each).
    pub fn new(
        key: VaultKey,
        measurement: [u8; MEASUREMENT_LEN],
        upgrade_from: Vec<([u8; MEASUREMENT_LEN], VaultKey)>,
    ) -> Self {
        Vault {
            measurement,
            key,
            upgrade_from: upgrade_from.into_iter().filter(|(m, _)| *m != measurement).collect(),
        }
    }

    /// Seals `secret` for `binding` with a fresh random `nonce`; `refuse_rc4` (the saver's choice)
    /// is kept with it.
    pub fn seal(
        &self,
        binding: &Binding<'_>,
        secret: sealed_logon_secret::Secret,
        refuse_rc4: bool,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, VaultError> {
        binding.check_target()?;
        let mut message = SealedLogonSecret {
            secret: Some(secret),
            refuse_rc4,
        };
        let mut plaintext = Zeroizing::new(message.encode_to_vec());
        message.secret.zeroize();
        let mut blob = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        blob.extend_from_slice(MAGIC);
        blob.push(FORMAT_VERSION);
        blob.extend_from_slice(&self.measurement);
        blob.extend_from_slice(&nonce);
        let aad = binding.aad(&blob);
        let cipher = Aes256Gcm::new(&(*self.key).into());
        let tag = cipher
            .encrypt_inout_detached(&nonce.into(), &aad, plaintext.as_mut_slice().into())
            .map_err(|_| VaultError::Invalid("the credential is too long to seal".into()))?;
        // `plaintext` is ciphertext now.
        blob.extend_from_slice(&plaintext);
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    /// Opens `blob` for `binding`.
    pub fn open(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Opened, VaultError> {
        binding.check_target()?;
        if blob.len() > MAX_BLOB_LEN {
            return Err(VaultError::Malformed("longer than any sealed credential"));
        }
        if blob.len() < MAGIC.len() || &blob[..MAGIC.len()] != MAGIC {
            return Err(VaultError::Malformed("not a credguard vault blob (bad magic)"));
        }
        if blob.len() < MAGIC.len() + 1 {
            return Err(VaultError::Malformed("truncated"));
        }
        if blob[MAGIC.len()] != FORMAT_VERSION {
            return Err(VaultError::Malformed("unknown format version"));
        }
        if blob.len() < HEADER_LEN + TAG_LEN + 1 {
            return Err(VaultError::Malformed("truncated"));
        }
        let (header, rest) = blob.split_at(HEADER_LEN);
        let m_at = MAGIC.len() + 1;
        let mut sealed_by = [0u8; MEASUREMENT_LEN];
        sealed_by.copy_from_slice(&header[m_at..m_at + MEASUREMENT_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[m_at + MEASUREMENT_LEN..]);
        let (key, from_earlier_image) = if sealed_by == self.measurement {
            (&self.key, false)
        } else if let Some((_, k)) = self.upgrade_from.iter().find(|(m, _)| *m == sealed_by) {
            (k, true)
        } else {
            return Err(VaultError::OtherImage(sealed_by));
        };
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        let aad = binding.aad(header);
        let mut tag_arr = [0u8; TAG_LEN];
        tag_arr.copy_from_slice(tag);
        Aes256Gcm::new(&(**key).into())
            .decrypt_inout_detached(&nonce.into(), &aad, plaintext.as_mut_slice().into(), &tag_arr.into())
            .map_err(|_| VaultError::DoesNotOpen)?;
        // Authentic: written by an enclave with the key, so it decodes; checked anyway.
        let message = SealedLogonSecret::decode(plaintext.as_slice())
            .map_err(|_| VaultError::Malformed("the sealed content does not decode"))?;
        let refuse_rc4 = message.refuse_rc4;
        let Some(secret) = message.secret else {
            return Err(VaultError::Malformed("the sealed content holds no secret"));
        };
        Ok(Opened {
            secret,
            refuse_rc4,
            from_earlier_image,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use credguard_proto::enclave::Key;
    use credguard_proto::secret::SecretRef;

    const SECRET: [u8; 32] = [7; 32];
    const OLD: [u8; MEASUREMENT_LEN] = [1; MEASUREMENT_LEN];
    const NEW: [u8; MEASUREMENT_LEN] = [2; MEASUREMENT_LEN];

    /// The key the VMM derives (`credguard_vmm::vault_key::VaultRootSecret::vault_key`), here with
    /// RustCrypto's HKDF.
    fn derive_key(secret: &[u8; 32], measurement: &[u8; MEASUREMENT_LEN]) -> VaultKey {
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<sha2::Sha256>::new(Some(credguard_proto::abi::VAULT_KEY_SALT), secret)
            .expand(measurement, key.as_mut_slice())
            .unwrap();
        key
    }

    /// The vault of image `m` under host secret `secret`, allowing `upgrade` images.
    fn vault(secret: [u8; 32], m: [u8; MEASUREMENT_LEN], upgrade: &[[u8; MEASUREMENT_LEN]]) -> Vault {
        let keys = upgrade.iter().map(|u| (*u, derive_key(&secret, u))).collect();
        Vault::new(derive_key(&secret, &m), m, keys)
    }

    fn binding<'a>(uid: u32, target: &'a str) -> Binding<'a> {
        Binding {
            uid,
            target,
            user: "alice",
            domain: "CORP",
            realm: "CORP.TEST",
            created_unix_ms: 1_700_000_000_000,
        }
    }

    fn pw(s: &str) -> sealed_logon_secret::Secret {
        sealed_logon_secret::Secret::Password(s.into())
    }

    fn password_of(o: Opened) -> String {
        match o.secret {
            sealed_logon_secret::Secret::Password(p) => p,
            _ => panic!("not a password"),
        }
    }

    #[test]
    fn seals_and_opens_each_kind() {
        let v = vault(SECRET, OLD, &[]);
        let b = binding(1000, "fileserver");
        let blob = v.seal(&b, pw("S3cret!"), false, [9; 12]).unwrap();
        assert_eq!(&blob[..4], MAGIC);
        assert_eq!(blob[4], FORMAT_VERSION);
        assert_eq!(&blob[5..53], &OLD);
        // The password is not in the blob.
        assert!(!blob.windows(7).any(|w| w == b"S3cret!"));
        let o = v.open(&b, &blob).unwrap();
        assert!(!o.from_earlier_image);
        assert_eq!(password_of(o), "S3cret!");
        let key = sealed_logon_secret::Secret::Key(Key {
            enctype: 18,
            value: vec![3; 32],
        });
        let blob = v.seal(&b, key, false, [8; 12]).unwrap();
        assert!(matches!(
            v.open(&b, &blob).unwrap().secret,
            sealed_logon_secret::Secret::Key(k) if k.value == vec![3; 32] && k.enctype == 18
        ));
        let blob = v
            .seal(&b, sealed_logon_secret::Secret::NtHash(vec![4; 16]), false, [7; 12])
            .unwrap();
        assert_eq!(SecretRef::from(&v.open(&b, &blob).unwrap().secret).kind(), "nt_hash");
    }

    #[test]
    fn another_uid_target_or_name_does_not_open() {
        let v = vault(SECRET, OLD, &[]);
        let b = binding(1000, "fileserver");
        let blob = v.seal(&b, pw("pw"), false, [1; 12]).unwrap();
        assert_eq!(
            v.open(&binding(1001, "fileserver"), &blob).err(),
            Some(VaultError::DoesNotOpen)
        );
        assert_eq!(
            v.open(&binding(1000, "other"), &blob).err(),
            Some(VaultError::DoesNotOpen)
        );
        let mut edited = b;
        edited.user = "mallory";
        assert_eq!(v.open(&edited, &blob).err(), Some(VaultError::DoesNotOpen));
        let mut edited = b;
        edited.created_unix_ms += 1;
        assert_eq!(v.open(&edited, &blob).err(), Some(VaultError::DoesNotOpen));
        // "ab" + "c" and "a" + "bc" are different bindings (length prefixes).
        let mut x = b;
        x.user = "ab";
        x.domain = "c";
        let blob = v.seal(&x, pw("pw"), false, [1; 12]).unwrap();
        let mut y = b;
        y.user = "a";
        y.domain = "bc";
        assert_eq!(v.open(&y, &blob).err(), Some(VaultError::DoesNotOpen));
    }

    #[test]
    fn another_host_secret_does_not_open() {
        let b = binding(1000, "t");
        let blob = vault(SECRET, OLD, &[]).seal(&b, pw("pw"), false, [1; 12]).unwrap();
        let thief = vault([8; 32], OLD, &[]);
        assert_eq!(thief.open(&b, &blob).err(), Some(VaultError::DoesNotOpen));
    }

    #[test]
    fn another_image_needs_the_upgrade_allowance() {
        let b = binding(1000, "t");
        let old = vault(SECRET, OLD, &[]);
        let blob = old.seal(&b, pw("pw"), false, [1; 12]).unwrap();
        let new = vault(SECRET, NEW, &[]);
        let e = new.open(&b, &blob).err().unwrap();
        assert_eq!(e, VaultError::OtherImage(OLD));
        assert!(e.to_string().contains("0101010101010101..."), "{e}");
        assert_eq!(e.code(), credguard_proto::rpc::code::FAILED_PRECONDITION);
        let upgraded = vault(SECRET, NEW, &[OLD]);
        let o = upgraded.open(&b, &blob).unwrap();
        assert!(o.from_earlier_image);
        let resealed = upgraded.seal(&b, o.secret, false, [2; 12]).unwrap();
        assert_eq!(&resealed[5..53], &NEW);
        assert!(!upgraded.open(&b, &resealed).unwrap().from_earlier_image);
        // The old image cannot open the re-sealed blob (no downgrade allowance).
        assert_eq!(old.open(&b, &resealed).err(), Some(VaultError::OtherImage(NEW)));
        // A header whose measurement was swapped to this image's does not open either: the
        // header is in the associated data and the key differs.
        let mut swapped = blob.clone();
        swapped[5..53].copy_from_slice(&NEW);
        assert_eq!(new.open(&b, &swapped).err(), Some(VaultError::DoesNotOpen));
    }

    #[test]
    fn corrupt_and_truncated_blobs_are_refused_without_panic() {
        let v = vault(SECRET, OLD, &[]);
        let b = binding(1000, "t");
        let blob = v.seal(&b, pw("pw"), false, [1; 12]).unwrap();
        for n in 0..blob.len() {
            let e = v.open(&b, &blob[..n]).err().unwrap();
            assert!(
                matches!(e, VaultError::Malformed(_) | VaultError::DoesNotOpen),
                "{n}: {e:?}"
            );
        }
        for i in 0..blob.len() {
            let mut c = blob.clone();
            c[i] ^= 0x40;
            assert!(v.open(&b, &c).is_err(), "flipped byte {i}");
        }
        let mut bad = blob.clone();
        bad[4] = 2;
        assert_eq!(
            v.open(&b, &bad).err(),
            Some(VaultError::Malformed("unknown format version"))
        );
        assert!(matches!(v.open(&b, &[0u8; 5000]), Err(VaultError::Malformed(_))));
        assert!(matches!(v.open(&b, b"garbage"), Err(VaultError::Malformed(_))));
    }

    #[test]
    fn targets_are_checked() {
        let v = vault(SECRET, OLD, &[]);
        for t in ["", "a\nb", &"x".repeat(257)] {
            let e = v.seal(&binding(1, t), pw("pw"), false, [0; 12]).err().unwrap();
            assert_eq!(e.code(), credguard_proto::rpc::code::INVALID_ARGUMENT, "{t:?}");
        }
        assert!(v.seal(&binding(1, &"x".repeat(256)), pw("pw"), false, [0; 12]).is_ok());
    }

    #[test]
    fn keys_are_bound_to_secret_and_measurement() {
        assert_ne!(*derive_key(&SECRET, &OLD), *derive_key(&SECRET, &NEW));
        assert_ne!(*derive_key(&SECRET, &OLD), *derive_key(&[8; 32], &OLD));
        // The same vector as the VMM's (ring) test: both sides compute the same standard HKDF.
        let hex: String = derive_key(&SECRET, &OLD)
            .iter()
            .map(|b| alloc::format!("{b:02x}"))
            .collect();
        assert_eq!(hex, VMM_VECTOR);
    }

    /// HKDF-SHA256(salt "credguard vault key v1", ikm [7; 32], info [1; 48]), as ring computes
    /// it in `credguard_vmm::sealing` tests.
    const VMM_VECTOR: &str = "29b9798375dfd87fb0f6f983725fc5d3b64d4770e806ba2ff317bdaa50833615";
}
