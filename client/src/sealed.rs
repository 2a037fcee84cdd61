//! The client side of sealed logon: check the VMM's attestation of the enclave's sealing key, then
//! encrypt a secret to it, so that the LSA proxy in between only relays ciphertext.
//!
//! Used by `credguardctl`; any client may do the same with the construction documented in
//! `credguard_proto::attest` (X25519, HKDF-SHA256, AES-256-GCM). ring on the host side.

use std::path::{Path, PathBuf};

use credguard_proto::abi::{self, MEASUREMENT_LEN, SIGNER_LEN};
use credguard_proto::attest::{
    self, BOOT_ID_LEN, NONCE_LEN, Owner, PUBLIC_KEY_LEN, SEALING_NONCE_LEN, SealPurpose, SealedNames,
};
use credguard_proto::vmm_status::{self, Attested, protection};
use credguard_proto::{enclave, lsa};
use prost::Message;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, UnparsedPublicKey as SigKey};
use zeroize::Zeroizing;

/// Where clients find the VMM's attestation public key unless told otherwise.
pub const DEFAULT_ATTESTATION_PUB: &str = "/etc/credguard/attestation.pub";
/// Where clients find the public key that signs the enclave image (the key the VMM trusts), which
/// they pin: they seal only to an enclave whose attested signer it is.
pub const DEFAULT_SIGNER_PUB: &str = "/etc/credguard/signing.pub";

/// Why a secret could not be sealed. Never names the secret.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// A public key file is missing or malformed.
    #[error("public key {path}: {why}")]
    PublicKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `Status` carries no sealing key (the enclave is down) or no attestation signature (the VMM
    /// runs without an attestation key).
    #[error("the enclave offers no attested sealing key: {0}")]
    NotOffered(&'static str),
    /// The attestation signature does not verify: the key may not be the enclave's.
    #[error(
        "the attestation of the enclave's sealing key does not verify against {0}: refusing to send the secret (is the proxy genuine?)"
    )]
    BadAttestation(PathBuf),
    /// Nothing to pin the enclave to: no signer key, no expected measurement.
    #[error(
        "no signer key to check the enclave against ({0} is missing) and no expected measurement: install the image \
         signer's public key there (or give --signer-pub / $CREDGUARD_SIGNER_PUB, or --expect-measurement)"
    )]
    NoPin(PathBuf),
    /// The image was signed by another key than the pinned one.
    #[error(
        "the enclave image was signed by key {got}, not by the pinned signer {expected}: refusing to send the secret"
    )]
    UnexpectedSigner {
        /// What the attestation says.
        got: String,
        /// The pinned key's fingerprint.
        expected: String,
    },
    /// The measurement is not the one the caller expects.
    #[error("the enclave's measurement {got} is not the expected {expected}")]
    UnexpectedMeasurement {
        /// What Status says.
        got: String,
        /// What the caller asked for.
        expected: String,
    },
    /// The attestation says the enclave's memory is mapped in the VMM, and the client requires it
    /// hidden.
    #[error(
        "the enclave's memory is mapped in the VMM (no guest_memfd on that host: {0}); refusing to send the secret \
         (--require-hidden-memory)"
    )]
    MemoryNotHidden(String),
    /// The attestation says the enclave is a test build.
    #[error(
        "the enclave is a TEST build (fault injection compiled in): refusing to send a secret to it (allow it only for \
         tests: --allow-test-image or CREDGUARD_ALLOW_TEST_IMAGE=1)"
    )]
    TestImage,
    /// A field of `Status` is malformed.
    #[error("malformed Status: {0}")]
    Malformed(&'static str),
    /// ring failed (no randomness, or an invalid peer key).
    #[error("sealing failed: {0}")]
    Crypto(&'static str),
}

/// Reads a hex Ed25519 public key file (as the VMM writes `<attestation key>.pub`, and
/// `credguard-image keygen` writes `<key>.pub`).
pub fn read_public_key(path: &Path) -> Result<[u8; 32], SealError> {
    let bad = |why: String| SealError::PublicKey {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex".into()))?;
    bytes
        .try_into()
        .map_err(|_| bad("not a 32-byte Ed25519 public key".into()))
}

/// Reads the VMM's attestation public key.
pub fn read_attestation_public_key(path: &Path) -> Result<[u8; 32], SealError> {
    read_public_key(path)
}

/// The fingerprint of a signer's public key as images and the VMM name it: the first 16 bytes of
/// its SHA-256, hex (`credguard_image::fingerprint`).
pub fn signer_fingerprint(public_key: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, public_key);
    hex::encode(&d.as_ref()[..SIGNER_LEN])
}

/// What a client requires of the enclave before it seals a secret to it.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// The VMM's attestation public key, and where it was read (for messages).
    pub attestation_pub: [u8; 32],
    /// See [`Expectations::attestation_pub`].
    pub attestation_pub_path: PathBuf,
    /// The fingerprint of the pinned image signer, if its key is installed.
    pub signer: Option<String>,
    /// Where the signer key was looked for (for messages).
    pub signer_path: PathBuf,
    /// An exact measurement the enclave must have.
    pub measurement: Option<String>,
    /// Refuse an enclave whose memory is mapped in the VMM.
    pub require_hidden_memory: bool,
    /// Accept a test build of the enclave (tests only).
    pub allow_test_image: bool,
}

/// What a verified `Status` says about the enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedEnclave {
    /// The sealing public key, verified to be this boot's.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Hex measurement of the image.
    pub measurement: String,
    /// Hex boot id.
    pub boot_id: String,
    /// Everything the signature covers.
    pub facts: Attested,
}

fn fixed<const N: usize>(bytes: &[u8], what: &'static str) -> Result<[u8; N], SealError> {
    bytes.try_into().map_err(|_| SealError::Malformed(what))
}

/// The attested facts `status` states (not yet verified).
fn facts_of(status: &lsa::StatusReply) -> Result<Attested, SealError> {
    let hex_field = |s: &str, what| hex::decode(s).map_err(|_| SealError::Malformed(what));
    Ok(Attested {
        measurement: fixed::<MEASUREMENT_LEN>(
            &hex_field(&status.measurement, "measurement is not hex")?,
            "measurement is not 48 bytes",
        )?,
        signer: fixed::<SIGNER_LEN>(
            &hex_field(&status.signer, "signer is not hex")?,
            "signer is not 16 bytes",
        )?,
        boot_id: fixed::<BOOT_ID_LEN>(&status.boot_id, "boot_id is not 16 bytes")?,
        public_key: fixed::<PUBLIC_KEY_LEN>(&status.enclave_public_key, "enclave_public_key is not 32 bytes")?,
        protection_bits: status.protection_bits,
        host_mapped_bytes: status.host_mapped_bytes,
        ram_size: status.ram_size,
        policy_bits: status.policy_bits,
        enclave_flags: status.enclave_flags,
        restarts: status.enclave_restarts,
        restart_reasons: status.enclave_restart_reasons.clone(),
    })
}

/// Checks that `status` carries a sealing key signed by the attestation key for everything it
/// states (measurement, signer, boot, protections, policy, build, restarts), then that the enclave is what
/// `expect` requires: the pinned signer (or measurement), hidden memory if asked, no test build
/// unless allowed.
pub fn verify(status: &lsa::StatusReply, expect: &Expectations) -> Result<AttestedEnclave, SealError> {
    if status.enclave_public_key.is_empty() {
        return Err(SealError::NotOffered("the enclave is not reachable"));
    }
    if status.attestation_signature.is_empty() {
        return Err(SealError::NotOffered("the VMM runs without an attestation key"));
    }
    let facts = facts_of(status)?;
    let message = vmm_status::attestation_message(&facts);
    SigKey::new(&ED25519, expect.attestation_pub)
        .verify(&message, &status.attestation_signature)
        .map_err(|_| SealError::BadAttestation(expect.attestation_pub_path.clone()))?;
    check_expectations(status, &facts, expect)?;
    Ok(AttestedEnclave {
        public_key: facts.public_key,
        measurement: status.measurement.clone(),
        boot_id: hex::encode(facts.boot_id),
        facts,
    })
}

fn check_expectations(status: &lsa::StatusReply, facts: &Attested, expect: &Expectations) -> Result<(), SealError> {
    match (&expect.signer, &expect.measurement) {
        (None, None) => return Err(SealError::NoPin(expect.signer_path.clone())),
        (Some(signer), _) if !signer.eq_ignore_ascii_case(&status.signer) => {
            return Err(SealError::UnexpectedSigner {
                got: status.signer.clone(),
                expected: signer.clone(),
            });
        }
        _ => {}
    }
    if let Some(expected) = &expect.measurement
        && !expected.trim().eq_ignore_ascii_case(&status.measurement)
    {
        return Err(SealError::UnexpectedMeasurement {
            got: status.measurement.clone(),
            expected: expected.trim().to_owned(),
        });
    }
    if expect.require_hidden_memory && facts.protection_bits & protection::HIDDEN == 0 {
        return Err(SealError::MemoryNotHidden(status.protection.clone()));
    }
    if !expect.allow_test_image && facts.enclave_flags & abi::enclave_flags::TEST_BUILD != 0 {
        return Err(SealError::TestImage);
    }
    Ok(())
}

/// What a sealed secret is for and whose it is (bound into the associated data).
#[derive(Debug, Clone, Copy)]
pub struct SealFor<'a> {
    /// The purpose.
    pub purpose: SealPurpose,
    /// The caller the client is (its uid).
    pub owner: Owner,
    /// The nonce `GetSealingNonce` returned.
    pub sealing_nonce: &'a [u8],
    /// The names.
    pub names: SealedNames<'a>,
}

/// Seals `secret` to the attested enclave key for `seal_for` (`refuse_rc4`: the client refuses
/// rc4-hmac for it). The plaintext encoding is wiped before this returns.
pub fn seal(
    enclave_public: &[u8; PUBLIC_KEY_LEN],
    secret: enclave::sealed_logon_secret::Secret,
    refuse_rc4: bool,
    seal_for: &SealFor<'_>,
) -> Result<lsa::SealedSecret, SealError> {
    // The secret as the caller handed it over is wiped too, on every path, not only its
    // encoding (prost's types do not wipe themselves on drop).
    let plain = WipedOnDrop(enclave::SealedLogonSecret {
        secret: Some(secret),
        refuse_rc4,
    });
    let sealing_nonce: [u8; SEALING_NONCE_LEN] = seal_for
        .sealing_nonce
        .try_into()
        .map_err(|_| SealError::Malformed("the sealing nonce is not 16 bytes"))?;
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| SealError::Crypto("no randomness"))?;
    let epk: [u8; PUBLIC_KEY_LEN] = ephemeral
        .compute_public_key()
        .map_err(|_| SealError::Crypto("cannot compute the public key"))?
        .as_ref()
        .try_into()
        .map_err(|_| SealError::Crypto("unexpected public key length"))?;
    let info = attest::sealed_logon_info(&epk, enclave_public);
    let key = agreement::agree_ephemeral(ephemeral, &UnparsedPublicKey::new(&X25519, enclave_public), |shared| {
        let prk = Salt::new(HKDF_SHA256, attest::SEALED_SECRET_SALT).extract(shared);
        prk.expand(&[&info], &AES_256_GCM).map(UnboundKey::from)
    })
    .map_err(|_| SealError::Crypto("key agreement failed"))?
    .map_err(|_| SealError::Crypto("key derivation failed"))?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| SealError::Crypto("no randomness"))?;
    let mut buf = Zeroizing::new(plain.0.encode_to_vec());
    let aad = attest::sealed_secret_aad(seal_for.purpose, seal_for.owner, &sealing_nonce, &seal_for.names);
    // `seal_in_place_append_tag` encrypts `buf` in place, so only ciphertext is left in it.
    LessSafeKey::new(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut *buf)
        .map_err(|_| SealError::Crypto("encryption failed"))?;
    Ok(lsa::SealedSecret {
        ephemeral_public_key: epk.to_vec(),
        nonce: nonce.to_vec(),
        ciphertext: std::mem::take(&mut *buf),
        enclave_public_key: enclave_public.to_vec(),
        sealing_nonce: sealing_nonce.to_vec(),
    })
}

/// A secret to seal, overwritten with zeros when dropped.
struct WipedOnDrop(enclave::SealedLogonSecret);

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        use enclave::sealed_logon_secret::Secret as S;
        use zeroize::Zeroize;
        match &mut self.0.secret {
            Some(S::Password(p)) => p.zeroize(),
            Some(S::NtHash(h)) => h.zeroize(),
            Some(S::Key(k)) => k.value.zeroize(),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn facts(pk: [u8; 32]) -> Attested {
        Attested {
            measurement: [1; 48],
            signer: [2; 16],
            boot_id: [3; 16],
            public_key: pk,
            protection_bits: protection::KNOWN | protection::SECCOMP,
            host_mapped_bytes: 16 << 20,
            ram_size: 16 << 20,
            policy_bits: 0,
            enclave_flags: 0,
            restarts: 1,
            restart_reasons: vec!["watchdog: no answer in 5 s".into()],
        }
    }

    fn signed_status(pair: &Ed25519KeyPair, f: &Attested) -> lsa::StatusReply {
        let msg = vmm_status::attestation_message(f);
        lsa::StatusReply {
            measurement: hex::encode(f.measurement),
            signer: hex::encode(f.signer),
            boot_id: f.boot_id.to_vec(),
            enclave_public_key: f.public_key.to_vec(),
            attestation_signature: pair.sign(&msg).as_ref().to_vec(),
            protection_bits: f.protection_bits,
            host_mapped_bytes: f.host_mapped_bytes,
            ram_size: f.ram_size,
            policy_bits: f.policy_bits,
            enclave_flags: f.enclave_flags,
            enclave_restarts: f.restarts,
            enclave_restart_reasons: f.restart_reasons.clone(),
            ..Default::default()
        }
    }

    fn pair() -> (Ed25519KeyPair, [u8; 32]) {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let vk: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        (pair, vk)
    }

    fn expect(vk: [u8; 32]) -> Expectations {
        Expectations {
            attestation_pub: vk,
            attestation_pub_path: "test.pub".into(),
            signer: Some(hex::encode([2u8; 16])),
            signer_path: "signing.pub".into(),
            measurement: None,
            require_hidden_memory: false,
            allow_test_image: false,
        }
    }

    #[test]
    fn verifies_only_a_genuine_attestation() {
        let (pair, vk) = pair();
        let status = signed_status(&pair, &facts([4; 32]));
        let ok = verify(&status, &expect(vk)).unwrap();
        assert_eq!(ok.public_key, [4; 32]);
        let mut e = expect(vk);
        e.measurement = Some(hex::encode([1u8; 48]));
        assert!(verify(&status, &e).is_ok());
        e.measurement = Some("00".into());
        assert!(matches!(
            verify(&status, &e),
            Err(SealError::UnexpectedMeasurement { .. })
        ));
        // A proxy that swaps in its own key, or claims other protections, a test build or
        // another policy, cannot make the signature fit.
        let tamper: [fn(&mut lsa::StatusReply); 8] = [
            |s| s.enclave_public_key = vec![5; 32],
            |s| s.boot_id = vec![9; 16],
            |s| s.protection_bits |= protection::HIDDEN,
            |s| s.enclave_flags = 0,
            |s| s.policy_bits = abi::policy::ALLOW_RC4,
            |s| s.host_mapped_bytes = 1,
            |s| s.enclave_restarts = 0,
            |s| s.enclave_restart_reasons.clear(),
        ];
        let test_build = signed_status(
            &pair,
            &Attested {
                enclave_flags: abi::enclave_flags::TEST_BUILD,
                ..facts([4; 32])
            },
        );
        for (i, t) in tamper.iter().enumerate() {
            let mut s = if i == 3 { test_build.clone() } else { status.clone() };
            t(&mut s);
            assert!(
                matches!(verify(&s, &expect(vk)), Err(SealError::BadAttestation(_))),
                "{i}"
            );
        }
        let mut unsigned = status;
        unsigned.attestation_signature.clear();
        assert!(matches!(verify(&unsigned, &expect(vk)), Err(SealError::NotOffered(_))));
    }

    #[test]
    fn the_client_pins_the_signer_and_its_requirements() {
        let (pair, vk) = pair();
        let status = signed_status(&pair, &facts([4; 32]));
        let mut e = expect(vk);
        e.signer = Some(hex::encode([7u8; 16]));
        assert!(matches!(verify(&status, &e), Err(SealError::UnexpectedSigner { .. })));
        e.signer = None;
        assert!(matches!(verify(&status, &e), Err(SealError::NoPin(_))));
        e.measurement = Some(hex::encode([1u8; 48]));
        assert!(verify(&status, &e).is_ok(), "a measurement is a pin too");
        let mut e = expect(vk);
        e.require_hidden_memory = true;
        assert!(matches!(verify(&status, &e), Err(SealError::MemoryNotHidden(_))));
        let hidden = signed_status(
            &pair,
            &Attested {
                protection_bits: protection::KNOWN | protection::HIDDEN | protection::GUEST_MEMFD,
                ..facts([4; 32])
            },
        );
        assert!(verify(&hidden, &e).is_ok());
        let test_build = signed_status(
            &pair,
            &Attested {
                enclave_flags: abi::enclave_flags::TEST_BUILD,
                ..facts([4; 32])
            },
        );
        let mut e = expect(vk);
        assert!(matches!(verify(&test_build, &e), Err(SealError::TestImage)));
        e.allow_test_image = true;
        assert!(verify(&test_build, &e).is_ok());
    }

    #[test]
    fn fingerprints_agree_with_the_image_tool() {
        let key = [0x42u8; 32];
        assert_eq!(signer_fingerprint(&key), credguard_image::fingerprint(&key));
    }

    #[test]
    fn seals_with_fresh_keys_each_time() {
        let seal_for = SealFor {
            purpose: SealPurpose::Logon,
            owner: Owner::uid(1000),
            sealing_nonce: &[1; 16],
            names: SealedNames {
                user: "u",
                domain: "",
                realm: "",
                target: "",
            },
        };
        let pw = || enclave::sealed_logon_secret::Secret::Password("pw".into());
        // [9; 32] is a valid X25519 point encoding (any 32 bytes are); agreement succeeds.
        let a = seal(&[9; 32], pw(), false, &seal_for).unwrap();
        let b = seal(&[9; 32], pw(), false, &seal_for).unwrap();
        assert_ne!(a.ephemeral_public_key, b.ephemeral_public_key);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(2).any(|w| w == b"pw"));
        assert_eq!(a.sealing_nonce, vec![1; 16]);
        let short = SealFor {
            sealing_nonce: &[1; 3],
            ..seal_for
        };
        assert!(matches!(
            seal(&[9; 32], pw(), false, &short),
            Err(SealError::Malformed(_))
        ));
    }
}
