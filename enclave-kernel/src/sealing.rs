//! Sealed secrets: secrets a client encrypted to this boot of the enclave, so that the proxy that
//! relays them never sees them.
//!
//! At boot the enclave makes an X25519 key pair; the VMM signs its public half with the boot's
//! measurement (see `credguard_proto::vmm_status`) and serves the signature; `Status` hands out
//! the key. A client checks the signature, asks for a single-use nonce, seals its secret to the
//! public key with the nonce, its own identity (the [`Owner`]) and the secret's purpose bound in,
//! and the enclave opens it here.
//!
//! Freshness is the enclave's own: a sealed secret opens only with a nonce this boot issued to
//! that owner and that has not been used. The nonces are kept per owner, a few at a time
//! ([`NONCES_PER_OWNER`]): asking for more forgets that owner's oldest, never another owner's,
//! so no caller can flush someone else's. Nothing is remembered about used nonces, so replay
//! protection cannot be emptied by flooding: an unknown nonce is refused, whatever the reason it
//! is unknown (used, forgotten, or from another boot). The private key lives only in the
//! enclave's hidden memory and dies with the boot.
//!
//! X25519 from x25519-dalek, HKDF-SHA256 and AES-256-GCM from RustCrypto: ring, used on the host
//! side, cannot run here (its RNG wants an OS).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use credguard_proto::attest::{self, Owner, PUBLIC_KEY_LEN, SEALING_NONCE_LEN, SealPurpose, SealedNames};
use credguard_proto::checks::{self, SealedParts};
use credguard_proto::enclave::{SealedLogonSecret, SealedSecret, sealed_logon_secret};
use hkdf::Hkdf;
use prost::Message;
use rand_core::TryCryptoRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Unused nonces an owner holds at most; asking for one more forgets that owner's oldest.
pub const NONCES_PER_OWNER: usize = 8;
/// Owners with unused nonces at most; beyond it the owner that asked least recently loses its
/// nonces (only a proxy that invents callers gets here: each local user is one owner).
pub const MAX_NONCE_OWNERS: usize = 4096;

/// Why a sealed secret was not opened. No variant says anything about the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    /// A part has the wrong length or the plaintext is not a `SealedLogonSecret` (INVALID_ARGUMENT).
    #[error("malformed sealed secret: {0}")]
    Malformed(&'static str),
    /// Sealed to another boot's key: the enclave restarted since the client read `Status`.
    #[error("the secret was sealed to another boot of the enclave (it restarted): read Status again and reseal")]
    OtherBoot,
    /// The nonce was not issued to this owner in this boot, or was used, or was forgotten.
    #[error(
        "the sealed secret's nonce is not one the enclave issued to this caller and did not use yet \
         (replayed, forgotten, or from another boot): get a fresh nonce with GetSealingNonce and seal again"
    )]
    StaleNonce,
    /// Does not decrypt: tampered, or sealed for another purpose, caller or names than the
    /// request's.
    #[error(
        "the sealed secret does not open: it was tampered with, or sealed for another purpose, caller, \
         user, domain, realm or target"
    )]
    DoesNotOpen,
    /// The random source failed while issuing a nonce (INTERNAL).
    #[error("the enclave's random source failed")]
    Random,
}

impl UnsealError {
    /// A message for the caller (its `Display`).
    pub fn message(&self) -> String {
        alloc::string::ToString::to_string(self)
    }
}

/// A secret opened from a seal, with the client's choices that came with it.
pub struct Opened {
    /// The secret (the caller's credential path takes and wipes it).
    pub secret: sealed_logon_secret::Secret,
    /// The client refuses rc4-hmac for this credential.
    pub refuse_rc4: bool,
}

/// The unused nonces of one owner, oldest first.
struct OwnerNonces {
    nonces: VecDeque<[u8; SEALING_NONCE_LEN]>,
    /// When this owner last asked (a counter), to find the least recent owner.
    last_issued: u64,
}

/// This boot's sealing key pair and the issued nonces.
pub struct SealingKey {
    secret: StaticSecret,
    public: [u8; PUBLIC_KEY_LEN],
    nonces: BTreeMap<Owner, OwnerNonces>,
    issued: u64,
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
            nonces: BTreeMap::new(),
            issued: 0,
        })
    }

    /// The public key clients seal to.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    /// A fresh nonce for one sealed secret of `owner`.
    pub fn issue_nonce<R: TryCryptoRng>(
        &mut self,
        owner: Owner,
        rng: &mut R,
    ) -> Result<[u8; SEALING_NONCE_LEN], UnsealError> {
        let mut nonce = [0u8; SEALING_NONCE_LEN];
        rng.try_fill_bytes(&mut nonce).map_err(|_| UnsealError::Random)?;
        if !self.nonces.contains_key(&owner) && self.nonces.len() >= MAX_NONCE_OWNERS {
            let least_recent = self.nonces.iter().min_by_key(|(_, n)| n.last_issued).map(|(o, _)| *o);
            if let Some(o) = least_recent {
                self.nonces.remove(&o);
            }
        }
        self.issued += 1;
        let entry = self.nonces.entry(owner).or_insert_with(|| OwnerNonces {
            nonces: VecDeque::new(),
            last_issued: 0,
        });
        if entry.nonces.len() >= NONCES_PER_OWNER {
            entry.nonces.pop_front();
        }
        entry.nonces.push_back(nonce);
        entry.last_issued = self.issued;
        Ok(nonce)
    }

    /// Unused nonces held for `owner` (for tests and accounting).
    pub fn nonces_of(&self, owner: Owner) -> usize {
        self.nonces.get(&owner).map_or(0, |n| n.nonces.len())
    }

    /// Opens `sealed`, sealed by `owner` for `purpose` and `names`, into the secret it holds. The
    /// nonce is used up only when the secret opens, so a forged message cannot burn a caller's.
    pub fn open(
        &mut self,
        sealed: &SealedSecret,
        purpose: SealPurpose,
        owner: Owner,
        names: &SealedNames<'_>,
    ) -> Result<Opened, UnsealError> {
        let parts = checks::sealed_parts(sealed).map_err(UnsealError::Malformed)?;
        if parts.enclave_public_key != self.public {
            return Err(UnsealError::OtherBoot);
        }
        let Some(slot) = self
            .nonces
            .get(&owner)
            .and_then(|n| n.nonces.iter().position(|x| *x == parts.sealing_nonce))
        else {
            return Err(UnsealError::StaleNonce);
        };
        let aad = attest::sealed_secret_aad(purpose, owner, &parts.sealing_nonce, names);
        let plain = self.decrypt(&parts, &sealed.ciphertext, &aad)?;
        if let Some(n) = self.nonces.get_mut(&owner) {
            n.nonces.remove(slot);
            if n.nonces.is_empty() {
                self.nonces.remove(&owner);
            }
        }
        let mut inner = SealedLogonSecret::decode(plain.as_slice())
            .map_err(|_| UnsealError::Malformed("not a SealedLogonSecret"))?;
        let refuse_rc4 = inner.refuse_rc4;
        match inner.secret.take() {
            Some(secret) => Ok(Opened { secret, refuse_rc4 }),
            None => Err(UnsealError::Malformed("it holds no secret")),
        }
    }

    /// X25519 with the client's ephemeral key, HKDF-SHA256, AES-256-GCM with `aad`.
    fn decrypt(&self, parts: &SealedParts, ciphertext: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        let epk = &parts.ephemeral_public_key;
        let shared = self.secret.diffie_hellman(&PublicKey::from(*epk));
        if !shared.was_contributory() {
            return Err(UnsealError::DoesNotOpen);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        let info = attest::sealed_logon_info(epk, &self.public);
        Hkdf::<Sha256>::new(Some(attest::SEALED_SECRET_SALT), shared.as_bytes())
            .expand(&info, &mut key[..])
            .map_err(|_| UnsealError::DoesNotOpen)?;
        let cipher = Aes256Gcm::new_from_slice(&key[..]).map_err(|_| UnsealError::DoesNotOpen)?;
        let plain = cipher
            .decrypt(&parts.nonce.into(), Payload { msg: ciphertext, aad })
            .map_err(|_| UnsealError::DoesNotOpen)?;
        Ok(Zeroizing::new(plain))
    }
}

impl Drop for SealingKey {
    fn drop(&mut self) {}
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::CounterRng;
    use aes_gcm::Nonce;
    use credguard_proto::enclave::sealed_logon_secret::Secret as Inner;

    /// Seals `secret` to `enclave_public` as a client does (here with the same crates; the
    /// end-to-end tests seal with ring in credguardctl).
    pub(crate) fn seal(
        enclave_public: [u8; 32],
        eph: [u8; 32],
        secret: Inner,
        purpose: SealPurpose,
        owner: Owner,
        sealing_nonce: [u8; 16],
        names: &SealedNames<'_>,
    ) -> SealedSecret {
        let eph = StaticSecret::from(eph);
        let epk = PublicKey::from(&eph).to_bytes();
        let shared = eph.diffie_hellman(&PublicKey::from(enclave_public));
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(attest::SEALED_SECRET_SALT), shared.as_bytes())
            .expand(&attest::sealed_logon_info(&epk, &enclave_public), &mut key)
            .unwrap();
        let nonce = [7u8; 12];
        let plain = SealedLogonSecret {
            secret: Some(secret),
            refuse_rc4: false,
        }
        .encode_to_vec();
        let aad = attest::sealed_secret_aad(purpose, owner, &sealing_nonce, names);
        let ciphertext = Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .encrypt(
                &Nonce::try_from(nonce.as_slice()).unwrap(),
                Payload { msg: &plain, aad: &aad },
            )
            .unwrap();
        SealedSecret {
            ephemeral_public_key: epk.to_vec(),
            nonce: nonce.to_vec(),
            ciphertext,
            enclave_public_key: enclave_public.to_vec(),
            sealing_nonce: sealing_nonce.to_vec(),
        }
    }

    pub(crate) fn names<'a>(user: &'a str, domain: &'a str, realm: &'a str) -> SealedNames<'a> {
        SealedNames {
            user,
            domain,
            realm,
            target: "",
        }
    }

    const ALICE: Owner = Owner::uid(1000);

    fn key_and_rng(seed: u8) -> (SealingKey, CounterRng) {
        let mut rng = CounterRng::starting_at(seed.wrapping_mul(40));
        (SealingKey::generate(&mut rng).unwrap(), rng)
    }

    fn password(p: &str) -> Inner {
        Inner::Password(p.into())
    }

    #[test]
    fn opens_once_and_only_for_its_names_and_boot() {
        let (mut key, mut rng) = key_and_rng(1);
        let n = key.issue_nonce(ALICE, &mut rng).unwrap();
        let sealed = seal(
            key.public_key(),
            [5; 32],
            password("pw"),
            SealPurpose::Logon,
            ALICE,
            n,
            &names("alice", "CORP", ""),
        );
        let open = |key: &mut SealingKey, user| {
            key.open(&sealed, SealPurpose::Logon, ALICE, &names(user, "CORP", ""))
                .map(|o| o.secret)
        };
        assert_eq!(open(&mut key, "mallory").err(), Some(UnsealError::DoesNotOpen));
        match open(&mut key, "alice") {
            Ok(Inner::Password(p)) => assert_eq!(p, "pw"),
            Ok(_) => panic!("not the password"),
            Err(e) => panic!("{e:?}"),
        }
        assert_eq!(open(&mut key, "alice").err(), Some(UnsealError::StaleNonce), "replay");

        let (mut other_boot, _) = key_and_rng(2);
        assert_eq!(open(&mut other_boot, "alice").err(), Some(UnsealError::OtherBoot));

        let n = key.issue_nonce(ALICE, &mut rng).unwrap();
        let mut tampered = seal(
            key.public_key(),
            [6; 32],
            Inner::NtHash(vec![1; 16]),
            SealPurpose::Logon,
            ALICE,
            n,
            &names("a", "", ""),
        );
        tampered.ciphertext[0] ^= 1;
        let r = key.open(&tampered, SealPurpose::Logon, ALICE, &names("a", "", ""));
        assert_eq!(r.err(), Some(UnsealError::DoesNotOpen));
        assert_eq!(key.nonces_of(ALICE), 1, "a message that does not open leaves the nonce");
        let mut short = tampered.clone();
        short.nonce.truncate(5);
        let r = key.open(&short, SealPurpose::Logon, ALICE, &names("a", "", ""));
        assert!(matches!(r, Err(UnsealError::Malformed(_))));
    }

    #[test]
    fn bound_to_purpose_and_owner() {
        let (mut key, mut rng) = key_and_rng(3);
        let n = key.issue_nonce(ALICE, &mut rng).unwrap();
        let sealed = seal(
            key.public_key(),
            [8; 32],
            password("pw"),
            SealPurpose::Logon,
            ALICE,
            n,
            &names("alice", "", "R"),
        );
        let who = names("alice", "", "R");
        // Re-labelled as a vault save: the associated data differs.
        let r = key.open(&sealed, SealPurpose::VaultSave, ALICE, &who);
        assert_eq!(r.err(), Some(UnsealError::DoesNotOpen));
        // Moved to another uid: that uid was never issued this nonce.
        let bob = Owner::uid(1001);
        let r = key.open(&sealed, SealPurpose::Logon, bob, &who);
        assert_eq!(r.err(), Some(UnsealError::StaleNonce));
        // Even if bob holds nonces of his own, alice's does not open for him.
        let _ = key.issue_nonce(bob, &mut rng).unwrap();
        let r = key.open(&sealed, SealPurpose::Logon, bob, &who);
        assert_eq!(r.err(), Some(UnsealError::StaleNonce));
        assert!(key.open(&sealed, SealPurpose::Logon, ALICE, &who).is_ok());
    }

    #[test]
    fn flooding_cannot_flush_another_owners_nonce() {
        let (mut key, mut rng) = key_and_rng(4);
        let n = key.issue_nonce(ALICE, &mut rng).unwrap();
        let sealed = seal(
            key.public_key(),
            [9; 32],
            password("pw"),
            SealPurpose::Logon,
            ALICE,
            n,
            &names("alice", "", ""),
        );
        let mallory = Owner::uid(666);
        for _ in 0..10 * NONCES_PER_OWNER {
            key.issue_nonce(mallory, &mut rng).unwrap();
        }
        assert_eq!(key.nonces_of(mallory), NONCES_PER_OWNER, "bounded per owner");
        assert!(
            key.open(&sealed, SealPurpose::Logon, ALICE, &names("alice", "", ""))
                .is_ok()
        );
        // Alice's own flood forgets her oldest: refused, never accepted.
        let n = key.issue_nonce(ALICE, &mut rng).unwrap();
        let old = seal(
            key.public_key(),
            [10; 32],
            password("pw"),
            SealPurpose::Logon,
            ALICE,
            n,
            &names("alice", "", ""),
        );
        for _ in 0..NONCES_PER_OWNER {
            key.issue_nonce(ALICE, &mut rng).unwrap();
        }
        let r = key.open(&old, SealPurpose::Logon, ALICE, &names("alice", "", ""));
        assert_eq!(r.err(), Some(UnsealError::StaleNonce));
    }

    #[test]
    fn owners_are_bounded() {
        let (mut key, mut rng) = key_and_rng(5);
        for uid in 0..(MAX_NONCE_OWNERS as u32 + 10) {
            key.issue_nonce(Owner::uid(uid), &mut rng).unwrap();
        }
        assert_eq!(key.nonces.len(), MAX_NONCE_OWNERS);
        // The least recent owners went first.
        assert_eq!(key.nonces_of(Owner::uid(0)), 0);
        assert_eq!(key.nonces_of(Owner::uid(MAX_NONCE_OWNERS as u32 + 9)), 1);
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        let (mut key, mut rng) = key_and_rng(6);
        let n = key.issue_nonce(ALICE, &mut rng).unwrap();
        let sealed = SealedSecret {
            ephemeral_public_key: vec![0; 32],
            nonce: vec![0; 12],
            ciphertext: vec![0; 32],
            enclave_public_key: key.public_key().to_vec(),
            sealing_nonce: n.to_vec(),
        };
        let r = key.open(&sealed, SealPurpose::Logon, ALICE, &names("a", "", ""));
        assert_eq!(r.err(), Some(UnsealError::DoesNotOpen));
    }
}
