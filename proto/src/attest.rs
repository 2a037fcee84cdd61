//! What the VMM signs about a boot of the enclave, and how a client seals a secret to it.
//!
//! Both the signer (the VMM) and the verifier (`credguardctl`, any client) build the signed message
//! here, and both ends of a sealed logon (the client with ring, the enclave with RustCrypto) use
//! the labels here, so that neither can drift from the other.
//!
//! Sealing: the client makes an ephemeral X25519 key pair, computes the shared secret with the
//! enclave's public key, derives a 32-byte key with HKDF-SHA256 (salt = [`SEALED_LOGON_SALT`],
//! info = [`sealed_logon_info`]), and encrypts an encoded `SealedLogonSecret` with AES-256-GCM
//! under a random 96-bit nonce and the associated data [`sealed_logon_aad`].

use alloc::vec::Vec;

use crate::abi::{MEASUREMENT_LEN, SIGNER_LEN};

/// Domain separation of the attestation message (never a valid prefix of anything else signed).
pub const ATTESTATION_DOMAIN: &[u8] = b"credguard enclave attestation v1\0";
/// Length of a boot id.
pub const BOOT_ID_LEN: usize = 16;
/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// The message the VMM's attestation key signs for one boot: the image it measured and whose
/// signer it verified, the boot the enclave says it is, and the public key the enclave made.
pub fn attestation_message(
    measurement: &[u8; MEASUREMENT_LEN],
    signer: &[u8; SIGNER_LEN],
    boot_id: &[u8; BOOT_ID_LEN],
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(ATTESTATION_DOMAIN.len() + MEASUREMENT_LEN + SIGNER_LEN + BOOT_ID_LEN + PUBLIC_KEY_LEN);
    m.extend_from_slice(ATTESTATION_DOMAIN);
    m.extend_from_slice(measurement);
    m.extend_from_slice(signer);
    m.extend_from_slice(boot_id);
    m.extend_from_slice(public_key);
    m
}

/// HKDF salt of a sealed logon.
pub const SEALED_LOGON_SALT: &[u8] = b"credguard sealed logon v1";

/// HKDF info of a sealed logon: both public keys, so the key is bound to this exchange.
pub fn sealed_logon_info(ephemeral_public: &[u8; PUBLIC_KEY_LEN], enclave_public: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut info = Vec::with_capacity(2 * PUBLIC_KEY_LEN);
    info.extend_from_slice(ephemeral_public);
    info.extend_from_slice(enclave_public);
    info
}

/// AES-GCM associated data of a sealed logon: the names the secret is for, so that a relay cannot
/// attach someone's sealed password to another user name. Each name is length-prefixed.
pub fn sealed_logon_aad(user: &str, domain: &str, realm: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + user.len() + domain.len() + realm.len());
    aad.extend_from_slice(b"logon");
    for part in [user, domain, realm] {
        aad.extend_from_slice(&(part.len() as u32).to_le_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_message_binds_every_field() {
        let base = attestation_message(&[1; 48], &[2; 16], &[3; 16], &[4; 32]);
        assert!(base.starts_with(ATTESTATION_DOMAIN));
        assert_ne!(base, attestation_message(&[9; 48], &[2; 16], &[3; 16], &[4; 32]));
        assert_ne!(base, attestation_message(&[1; 48], &[9; 16], &[3; 16], &[4; 32]));
        assert_ne!(base, attestation_message(&[1; 48], &[2; 16], &[9; 16], &[4; 32]));
        assert_ne!(base, attestation_message(&[1; 48], &[2; 16], &[3; 16], &[9; 32]));
    }

    #[test]
    fn aad_is_unambiguous() {
        assert_ne!(sealed_logon_aad("ab", "c", ""), sealed_logon_aad("a", "bc", ""));
        assert_ne!(sealed_logon_aad("a", "", "b"), sealed_logon_aad("a", "b", ""));
    }
}
