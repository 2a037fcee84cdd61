//! The client side of sealed logon: check the VMM's attestation of the enclave's sealing key, then
//! encrypt a secret to it, so that the LSA proxy in between only relays ciphertext.
//!
//! Used by `credguardctl`; any client may do the same with the construction documented in
//! `credguard_proto::attest` (X25519, HKDF-SHA256, AES-256-GCM). ring on the host side.

use std::path::{Path, PathBuf};

use credguard_proto::abi::{MEASUREMENT_LEN, SIGNER_LEN};
use credguard_proto::attest::{self, BOOT_ID_LEN, NONCE_LEN, PUBLIC_KEY_LEN};
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

/// Why a secret could not be sealed. Never names the secret.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The attestation public key file is missing or malformed.
    #[error("attestation public key {path}: {why}")]
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
    /// The measurement is not the one the caller expects.
    #[error("the enclave's measurement {got} is not the expected {expected}")]
    UnexpectedMeasurement {
        /// What Status says.
        got: String,
        /// What the caller asked for.
        expected: String,
    },
    /// A field of `Status` is malformed.
    #[error("malformed Status: {0}")]
    Malformed(&'static str),
    /// ring failed (no randomness, or an invalid peer key).
    #[error("sealing failed: {0}")]
    Crypto(&'static str),
}

/// Reads a hex Ed25519 public key file (as the VMM writes `<attestation key>.pub`).
pub fn read_attestation_public_key(path: &Path) -> Result<[u8; 32], SealError> {
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

/// What a verified `Status` says about the enclave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedEnclave {
    /// The sealing public key, verified to be this boot's.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Hex measurement of the image.
    pub measurement: String,
    /// Hex boot id.
    pub boot_id: String,
}

/// Checks that `status` carries a sealing key signed by the attestation key `attestation_pub`
/// for its measurement, signer and boot id (and, if given, that the measurement is `expected`).
pub fn verify(
    status: &lsa::StatusReply,
    attestation_pub: &[u8; 32],
    pub_path: &Path,
    expected_measurement: Option<&str>,
) -> Result<AttestedEnclave, SealError> {
    if status.enclave_public_key.is_empty() {
        return Err(SealError::NotOffered("the enclave is not reachable"));
    }
    if status.attestation_signature.is_empty() {
        return Err(SealError::NotOffered("the VMM runs without an attestation key"));
    }
    let public_key: [u8; PUBLIC_KEY_LEN] = status
        .enclave_public_key
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Malformed("enclave_public_key is not 32 bytes"))?;
    let measurement: [u8; MEASUREMENT_LEN] = hex::decode(&status.measurement)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or(SealError::Malformed("measurement is not 48 bytes of hex"))?;
    let signer: [u8; SIGNER_LEN] = hex::decode(&status.signer)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or(SealError::Malformed("signer is not 16 bytes of hex"))?;
    let boot_id: [u8; BOOT_ID_LEN] = status
        .boot_id
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Malformed("boot_id is not 16 bytes"))?;
    let message = attest::attestation_message(&measurement, &signer, &boot_id, &public_key);
    SigKey::new(&ED25519, attestation_pub)
        .verify(&message, &status.attestation_signature)
        .map_err(|_| SealError::BadAttestation(pub_path.to_owned()))?;
    if let Some(expected) = expected_measurement
        && !expected.trim().eq_ignore_ascii_case(&status.measurement)
    {
        return Err(SealError::UnexpectedMeasurement {
            got: status.measurement.clone(),
            expected: expected.trim().to_owned(),
        });
    }
    Ok(AttestedEnclave {
        public_key,
        measurement: status.measurement.clone(),
        boot_id: hex::encode(boot_id),
    })
}

/// Seals `secret` for `user`, `domain`, `realm` to the attested enclave key. The plaintext
/// encoding is wiped before this returns.
pub fn seal(
    enclave_public: &[u8; PUBLIC_KEY_LEN],
    secret: enclave::sealed_logon_secret::Secret,
    user: &str,
    domain: &str,
    realm: &str,
) -> Result<lsa::SealedSecret, SealError> {
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
        let prk = Salt::new(HKDF_SHA256, attest::SEALED_LOGON_SALT).extract(shared);
        prk.expand(&[&info], &AES_256_GCM).map(UnboundKey::from)
    })
    .map_err(|_| SealError::Crypto("key agreement failed"))?
    .map_err(|_| SealError::Crypto("key derivation failed"))?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| SealError::Crypto("no randomness"))?;
    let mut buf = Zeroizing::new(enclave::SealedLogonSecret { secret: Some(secret) }.encode_to_vec());
    let aad = attest::sealed_logon_aad(user, domain, realm);
    // `seal_in_place_append_tag` encrypts `buf` in place, so only ciphertext is left in it.
    LessSafeKey::new(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut *buf)
        .map_err(|_| SealError::Crypto("encryption failed"))?;
    Ok(lsa::SealedSecret {
        ephemeral_public_key: epk.to_vec(),
        nonce: nonce.to_vec(),
        ciphertext: std::mem::take(&mut *buf),
        enclave_public_key: enclave_public.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn signed_status(pair: &Ed25519KeyPair, pk: [u8; 32]) -> lsa::StatusReply {
        let msg = attest::attestation_message(&[1; 48], &[2; 16], &[3; 16], &pk);
        lsa::StatusReply {
            measurement: hex::encode([1u8; 48]),
            signer: hex::encode([2u8; 16]),
            boot_id: vec![3; 16],
            enclave_public_key: pk.to_vec(),
            attestation_signature: pair.sign(&msg).as_ref().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn verifies_only_a_genuine_attestation() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let vk: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        let p = Path::new("test.pub");
        let status = signed_status(&pair, [4; 32]);
        let ok = verify(&status, &vk, p, None).unwrap();
        assert_eq!(ok.public_key, [4; 32]);
        assert!(verify(&status, &vk, p, Some(&hex::encode([1u8; 48]))).is_ok());
        assert!(matches!(
            verify(&status, &vk, p, Some("00")),
            Err(SealError::UnexpectedMeasurement { .. })
        ));
        // A proxy that swaps in its own key cannot make the signature fit.
        let mut swapped = status.clone();
        swapped.enclave_public_key = vec![5; 32];
        assert!(matches!(
            verify(&swapped, &vk, p, None),
            Err(SealError::BadAttestation(_))
        ));
        let mut other_boot = status.clone();
        other_boot.boot_id = vec![9; 16];
        assert!(matches!(
            verify(&other_boot, &vk, p, None),
            Err(SealError::BadAttestation(_))
        ));
        let mut unsigned = status;
        unsigned.attestation_signature.clear();
        assert!(matches!(verify(&unsigned, &vk, p, None), Err(SealError::NotOffered(_))));
    }

    #[test]
    fn seals_with_fresh_keys_each_time() {
        let a = seal(
            &[9; 32],
            enclave::sealed_logon_secret::Secret::Password("pw".into()),
            "u",
            "",
            "",
        );
        // [9; 32] is a valid X25519 point encoding (any 32 bytes are); agreement succeeds.
        let a = a.unwrap();
        let b = seal(
            &[9; 32],
            enclave::sealed_logon_secret::Secret::Password("pw".into()),
            "u",
            "",
            "",
        )
        .unwrap();
        assert_ne!(a.ephemeral_public_key, b.ephemeral_public_key);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(2).any(|w| w == b"pw"));
    }
}
