//! Sealed logon: secrets a client encrypted to this boot of the enclave, so that the proxy that
//! relays them never sees them.
//!
//! At boot the enclave makes an X25519 key pair; the VMM signs its public half with the boot's
//! measurement (see `credguard_proto::attest`), and `Status` hands both out. A client checks the
//! signature, seals its secret to the public key, and the enclave opens it here. The private key
//! lives only in the enclave's hidden memory and dies with the boot, so a sealed secret captured
//! on the host opens under no later boot; within a boot, each sealed secret opens once.
//!
//! X25519 from x25519-dalek, HKDF-SHA256 and AES-256-GCM from RustCrypto: ring, used on the host
//! side, cannot run here (its RNG wants an OS).

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use credguard_proto::attest::{self, NONCE_LEN, PUBLIC_KEY_LEN};
use credguard_proto::enclave::{Key, SealedLogonSecret, SealedSecret, logon_request, sealed_logon_secret};
use hkdf::Hkdf;
use prost::Message;
use rand_core::TryCryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// How many sealed secrets of this boot are remembered to refuse a replay. The oldest is
/// forgotten first; 16 bytes each, so the cache stays small in a heap of a few MiB.
pub const REPLAY_CACHE_ENTRIES: usize = 4096;

/// Why a sealed secret was not opened. No variant says anything about the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// A part has the wrong length or the plaintext is not a `SealedLogonSecret` (INVALID_ARGUMENT).
    Malformed(&'static str),
    /// Sealed to another boot's key: the enclave restarted since the client read `Status`.
    OtherBoot,
    /// Opened before in this boot.
    Replayed,
    /// Does not decrypt: tampered, or sealed for other names than the request's.
    DoesNotOpen,
}

impl SealError {
    /// A message for the caller.
    pub fn message(&self) -> String {
        match self {
            SealError::Malformed(what) => alloc::format!("malformed sealed secret: {what}"),
            SealError::OtherBoot => String::from(
                "the secret was sealed to another boot of the enclave (it restarted): read Status again and reseal",
            ),
            SealError::Replayed => {
                String::from("this sealed secret was used before; each logon must be sealed afresh (replay refused)")
            }
            SealError::DoesNotOpen => String::from(
                "the sealed secret does not open: it was tampered with, or sealed for another user, domain or realm",
            ),
        }
    }
}

/// This boot's sealing key pair, its attestation, and the replay cache.
pub struct SealingKey {
    secret: StaticSecret,
    public: [u8; PUBLIC_KEY_LEN],
    attestation: Vec<u8>,
    seen: BTreeSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
}

impl SealingKey {
    /// A new key pair from `rng`; `None` if the random source failed.
    pub fn generate<R: TryCryptoRng>(rng: &mut R) -> Option<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut bytes[..]).ok()?;
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Some(SealingKey {
            secret,
            public,
            attestation: Vec::new(),
            seen: BTreeSet::new(),
            order: VecDeque::new(),
        })
    }

    /// The public key clients seal to.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// Records the VMM's signature over this boot's attestation message.
    pub fn set_attestation(&mut self, signature: Vec<u8>) {
        self.attestation = signature;
    }

    /// The VMM's signature (empty if the VMM has no attestation key).
    pub fn attestation(&self) -> &[u8] {
        &self.attestation
    }

    /// Opens `sealed`, sealed for `user`, `domain`, `realm`, into the secret it holds.
    pub fn open(
        &mut self,
        sealed: &SealedSecret,
        user: &str,
        domain: &str,
        realm: &str,
    ) -> Result<logon_request::Secret, SealError> {
        let epk: [u8; PUBLIC_KEY_LEN] = sealed
            .ephemeral_public_key
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Malformed("ephemeral_public_key must be 32 bytes"))?;
        let recipient: [u8; PUBLIC_KEY_LEN] = sealed
            .enclave_public_key
            .as_slice()
            .try_into()
            .map_err(|_| SealError::Malformed("enclave_public_key must be 32 bytes"))?;
        if sealed.nonce.len() != NONCE_LEN {
            return Err(SealError::Malformed("nonce must be 12 bytes"));
        }
        if recipient != self.public {
            return Err(SealError::OtherBoot);
        }
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&epk[..16]);
        if self.seen.contains(&tag) {
            return Err(SealError::Replayed);
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(epk));
        // A low-order point gives an all-zero shared secret that anyone knows.
        if !shared.was_contributory() {
            return Err(SealError::DoesNotOpen);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        let info = attest::sealed_logon_info(&epk, &self.public);
        Hkdf::<Sha256>::new(Some(attest::SEALED_LOGON_SALT), shared.as_bytes())
            .expand(&info, &mut key[..])
            .map_err(|_| SealError::DoesNotOpen)?;
        let cipher = Aes256Gcm::new_from_slice(&key[..]).map_err(|_| SealError::DoesNotOpen)?;
        let nonce =
            Nonce::try_from(sealed.nonce.as_slice()).map_err(|_| SealError::Malformed("nonce must be 12 bytes"))?;
        let aad = attest::sealed_logon_aad(user, domain, realm);
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| SealError::DoesNotOpen)?,
        );
        // Remembered only once it opened: garbage cannot evict real entries cheaply.
        self.remember(tag);
        let mut inner =
            SealedLogonSecret::decode(plain.as_slice()).map_err(|_| SealError::Malformed("not a SealedLogonSecret"))?;
        Ok(match inner.secret.take() {
            Some(sealed_logon_secret::Secret::Password(p)) => logon_request::Secret::Password(p),
            Some(sealed_logon_secret::Secret::NtHash(h)) => logon_request::Secret::NtHash(h),
            Some(sealed_logon_secret::Secret::Key(Key { enctype, value })) => {
                logon_request::Secret::Key(Key { enctype, value })
            }
            None => return Err(SealError::Malformed("it holds no secret")),
        })
    }

    fn remember(&mut self, tag: [u8; 16]) {
        if self.order.len() >= REPLAY_CACHE_ENTRIES
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(tag);
        self.order.push_back(tag);
    }
}

impl Drop for SealingKey {
    fn drop(&mut self) {
        // StaticSecret wipes itself (x25519-dalek's zeroize feature); the rest is public.
        self.attestation.zeroize();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::CounterRng;
    use credguard_proto::enclave::sealed_logon_secret::Secret as Inner;

    /// Seals `secret` to `enclave_public` as a client does (here with the same crates; the
    /// end-to-end test seals with ring in credguardctl).
    pub(crate) fn seal(
        enclave_public: [u8; 32],
        eph: [u8; 32],
        secret: Inner,
        user: &str,
        domain: &str,
        realm: &str,
    ) -> SealedSecret {
        let eph = StaticSecret::from(eph);
        let epk = PublicKey::from(&eph).to_bytes();
        let shared = eph.diffie_hellman(&PublicKey::from(enclave_public));
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(attest::SEALED_LOGON_SALT), shared.as_bytes())
            .expand(&attest::sealed_logon_info(&epk, &enclave_public), &mut key)
            .unwrap();
        let nonce = [7u8; 12];
        let plain = SealedLogonSecret { secret: Some(secret) }.encode_to_vec();
        let ciphertext = Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt(
                &Nonce::try_from(nonce.as_slice()).unwrap(),
                Payload {
                    msg: &plain,
                    aad: &attest::sealed_logon_aad(user, domain, realm),
                },
            )
            .unwrap();
        SealedSecret {
            ephemeral_public_key: epk.to_vec(),
            nonce: nonce.to_vec(),
            ciphertext,
            enclave_public_key: enclave_public.to_vec(),
        }
    }

    #[test]
    fn opens_once_and_only_for_its_names_and_boot() {
        let mut key = SealingKey::generate(&mut CounterRng::starting_at(1 * 50)).unwrap();
        let sealed = seal(
            key.public_key(),
            [5; 32],
            Inner::Password("pw".into()),
            "alice",
            "CORP",
            "",
        );
        // Other names: does not open, and is not burnt.
        assert_eq!(
            key.open(&sealed, "mallory", "CORP", "").err(),
            Some(SealError::DoesNotOpen)
        );
        match key.open(&sealed, "alice", "CORP", "") {
            Ok(logon_request::Secret::Password(p)) => assert_eq!(p, "pw"),
            Ok(_) => panic!("not the password"),
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(key.open(&sealed, "alice", "CORP", "").err(), Some(SealError::Replayed));

        let mut other_boot = SealingKey::generate(&mut CounterRng::starting_at(2 * 50)).unwrap();
        assert_eq!(
            other_boot.open(&sealed, "alice", "CORP", "").err(),
            Some(SealError::OtherBoot)
        );

        let mut tampered = seal(key.public_key(), [6; 32], Inner::NtHash(vec![1; 16]), "a", "", "");
        tampered.ciphertext[0] ^= 1;
        assert_eq!(key.open(&tampered, "a", "", "").err(), Some(SealError::DoesNotOpen));
        let mut short = tampered.clone();
        short.nonce.truncate(5);
        assert!(matches!(key.open(&short, "a", "", ""), Err(SealError::Malformed(_))));
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        let mut key = SealingKey::generate(&mut CounterRng::starting_at(3 * 50)).unwrap();
        let sealed = SealedSecret {
            ephemeral_public_key: vec![0; 32],
            nonce: vec![0; 12],
            ciphertext: vec![0; 32],
            enclave_public_key: key.public_key().to_vec(),
        };
        assert_eq!(key.open(&sealed, "a", "", "").err(), Some(SealError::DoesNotOpen));
    }

    #[test]
    fn the_replay_cache_is_bounded() {
        let mut key = SealingKey::generate(&mut CounterRng::starting_at(4 * 50)).unwrap();
        for i in 0..(REPLAY_CACHE_ENTRIES + 10) {
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key.remember(tag);
        }
        assert_eq!(key.seen.len(), REPLAY_CACHE_ENTRIES);
        assert_eq!(key.order.len(), REPLAY_CACHE_ENTRIES);
    }
}
