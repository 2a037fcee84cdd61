//! Kerberos encryption types: string-to-key, key derivation, encryption with integrity, and
//! keyed checksums, for aes128/256-cts-hmac-sha1-96 (RFC 3962), aes128-cts-hmac-sha256-128 and
//! aes256-cts-hmac-sha384-192 (RFC 8009), and rc4-hmac (RFC 4757, only where allowed).
//!
//! The primitives (AES, CBC with ciphertext stealing, HMAC, PBKDF2, RC4, SHA, MD5) are RustCrypto
//! crates. What no crate provides is written here: the RFC 3961 n-fold and derive-key (DK/DR),
//! the RFC 8009 KDF-HMAC-SHA2 label layout, and the message framing of each profile.
//! DES enctypes (1, 2, 3) are refused everywhere: single DES is broken.

use alloc::vec::Vec;

use aes::{Aes128, Aes256};
use cts::{Decrypt, Encrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::{Sha256, Sha384};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use credguard_proto::enctype::{self, EnctypeRefused};
pub use credguard_proto::enctype::{AES128_SHA1, AES128_SHA256, AES256_SHA1, AES256_SHA384, RC4_HMAC};

/// Why a cryptographic operation failed. Never carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// DES, an enctype this enclave does not implement, or rc4-hmac where it is not allowed.
    #[error(transparent)]
    Enctype(#[from] EnctypeRefused),
    /// A key of the wrong length for its enctype.
    #[error("a key has the wrong length for its enctype")]
    KeyLength,
    /// Ciphertext too short or its integrity check failed (wrong key or tampered).
    #[error("decryption integrity check failed")]
    Integrity,
    /// Bad string-to-key parameters (e.g. an absurd iteration count).
    #[error("bad string-to-key parameters")]
    Params,
}

/// Checks that `enctype` may be used at all (rc4-hmac only with `allow_rc4`).
pub fn check_enctype(enctype: i32, allow_rc4: bool) -> Result<(), CryptoError> {
    enctype::usable(enctype, allow_rc4)?;
    Ok(())
}

/// The enctypes offered to a KDC, strongest first.
pub fn preferred_enctypes(allow_rc4: bool) -> Vec<i32> {
    enctype::preferred(allow_rc4).collect()
}

/// Key length in bytes of `enctype`.
pub fn key_len(enctype: i32) -> Result<usize, CryptoError> {
    Ok(enctype::implemented(enctype)?.key_len)
}

/// The error for an enctype a function has no case for: DES (refused by rule) or unsupported.
fn unsupported(enctype: i32) -> CryptoError {
    CryptoError::Enctype(if enctype::is_des(enctype) {
        EnctypeRefused::Des(enctype)
    } else {
        EnctypeRefused::Unsupported(enctype)
    })
}

/// The keyed checksum type that goes with `enctype` (RFC 3961 8, RFC 8009 1, RFC 4757).
pub fn checksum_type(enctype: i32) -> Result<i32, CryptoError> {
    match enctype {
        AES128_SHA1 => Ok(15),
        AES256_SHA1 => Ok(16),
        AES128_SHA256 => Ok(19),
        AES256_SHA384 => Ok(20),
        RC4_HMAC => Ok(-138),
        e => Err(unsupported(e)),
    }
}

/// A Kerberos key and its enctype; wiped when dropped.
pub struct Key {
    /// Its enctype.
    pub enctype: i32,
    /// The key bytes.
    pub value: Zeroizing<Vec<u8>>,
}

impl Key {
    /// A key of `enctype` from `bytes`, checking the length.
    pub fn new(enctype: i32, bytes: &[u8]) -> Result<Self, CryptoError> {
        if key_len(enctype)? != bytes.len() {
            return Err(CryptoError::KeyLength);
        }
        Ok(Key {
            enctype,
            value: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// A copy of this key.
    pub fn duplicate(&self) -> Self {
        Key {
            enctype: self.enctype,
            value: self.value.clone(),
        }
    }
}

/// The RFC default iteration count of an AES enctype (RFC 3962 4, RFC 8009 4): what string-to-key
/// uses when the KDC announces no s2kparams, and the fewest the enclave accepts from a KDC.
pub fn default_iterations(enctype: i32) -> u32 {
    match enctype {
        AES128_SHA256 | AES256_SHA384 => 32_768,
        _ => 4_096,
    }
}

/// Largest iteration count accepted: a hostile KDC must not make the enclave spin forever.
const MAX_ITERATIONS: u32 = 1 << 22;

/// string-to-key of `password` with `salt` and the KDC's `s2kparams` (4-byte big-endian
/// iteration count for AES; empty for the default). rc4-hmac's key is the NT hash.
pub fn string_to_key(enctype: i32, password: &[u8], salt: &[u8], s2kparams: Option<&[u8]>) -> Result<Key, CryptoError> {
    let len = key_len(enctype)?;
    let iterations = match s2kparams {
        None => default_iterations(enctype),
        Some(p) => {
            let arr: [u8; 4] = p.try_into().map_err(|_| CryptoError::Params)?;
            u32::from_be_bytes(arr)
        }
    };
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(CryptoError::Params);
    }
    let mut tkey = Zeroizing::new(alloc::vec![0u8; len]);
    match enctype {
        AES128_SHA1 | AES256_SHA1 => {
            pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut tkey);
            let value = derive_key_sha1(enctype, &tkey, b"kerberos")?;
            Ok(Key { enctype, value })
        }
        AES128_SHA256 | AES256_SHA384 => {
            // RFC 8009 4: saltp = enctype-name | 0x00 | salt.
            let name = enctype::implemented(enctype)?.name.as_bytes();
            let mut saltp = Vec::with_capacity(name.len() + 1 + salt.len());
            saltp.extend_from_slice(name);
            saltp.push(0);
            saltp.extend_from_slice(salt);
            if enctype == AES128_SHA256 {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, &saltp, iterations, &mut tkey);
            } else {
                pbkdf2::pbkdf2_hmac::<Sha384>(password, &saltp, iterations, &mut tkey);
            }
            let value = kdf_sha2(enctype, &tkey, b"kerberos", len)?;
            Ok(Key { enctype, value })
        }
        RC4_HMAC => {
            let s = core::str::from_utf8(password).map_err(|_| CryptoError::Params)?;
            let h = crate::credentials::nt_hash(s);
            Key::new(RC4_HMAC, h.as_slice())
        }
        e => Err(unsupported(e)),
    }
}

/// RFC 3961 5.1 n-fold. Hand-written: no crate has it; used only on public constants.
pub fn nfold(input: &[u8], out_len: usize) -> Vec<u8> {
    let in_len = input.len();
    let lcm = lcm(in_len, out_len);
    let mut out = alloc::vec![0u8; out_len];
    let mut carry: u32 = 0;
    // Walk the lcm-length concatenation of rotated copies from its last byte, adding into the
    // output with end-around carry, as the reference implementation in RFC 3961 does.
    for i in (0..lcm).rev() {
        let msbit = ((in_len << 3) - 1 + (((in_len << 3) + 13) * (i / in_len)) + ((in_len - (i % in_len)) << 3))
            % (in_len << 3);
        let hi = u32::from(input[((in_len - 1) - (msbit >> 3)) % in_len]) << 8;
        let lo = u32::from(input[(in_len - (msbit >> 3)) % in_len]);
        let byte = ((hi | lo) >> ((msbit & 7) + 1)) & 0xff;
        carry += byte + u32::from(out[i % out_len]);
        out[i % out_len] = (carry & 0xff) as u8;
        carry >>= 8;
    }
    if carry != 0 {
        for i in (0..out_len).rev() {
            carry += u32::from(out[i]);
            out[i] = (carry & 0xff) as u8;
            carry >>= 8;
        }
    }
    out
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

fn aes_encrypt_block(key: &[u8], block: &mut [u8; 16]) -> Result<(), CryptoError> {
    use aes::cipher::BlockCipherEncrypt;
    match key.len() {
        16 => {
            let c = Aes128::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
            c.encrypt_block(block.into());
        }
        32 => {
            let c = Aes256::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
            c.encrypt_block(block.into());
        }
        _ => return Err(CryptoError::KeyLength),
    }
    Ok(())
}

fn aes_decrypt_block(key: &[u8], block: &mut [u8; 16]) -> Result<(), CryptoError> {
    use aes::cipher::BlockCipherDecrypt;
    match key.len() {
        16 => {
            let c = Aes128::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
            c.decrypt_block(block.into());
        }
        32 => {
            let c = Aes256::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
            c.decrypt_block(block.into());
        }
        _ => return Err(CryptoError::KeyLength),
    }
    Ok(())
}

/// RFC 3961 5.1 DK(base, constant) for the AES-SHA1 enctypes (random-to-key is the identity).
fn derive_key_sha1(enctype: i32, base: &[u8], constant: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let len = key_len(enctype)?;
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let folded = nfold(constant, 16);
    let mut block = [0u8; 16];
    block.copy_from_slice(&folded);
    while out.len() < len {
        aes_encrypt_block(base, &mut block)?;
        let take = (len - out.len()).min(16);
        out.extend_from_slice(&block[..take]);
    }
    Ok(out)
}

/// RFC 8009 3 KDF-HMAC-SHA2(key, label, k), `out_len` = k / 8 bytes.
fn kdf_sha2(enctype: i32, key: &[u8], label: &[u8], out_len: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let bits = ((out_len * 8) as u32).to_be_bytes();
    let parts: [&[u8]; 4] = [&1u32.to_be_bytes(), label, &[0], &bits];
    let full = match enctype {
        AES128_SHA256 => hmac_sha256(key, &parts)?,
        AES256_SHA384 => hmac_sha384(key, &parts)?,
        e => return Err(unsupported(e)),
    };
    Ok(Zeroizing::new(full[..out_len].to_vec()))
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
    for p in parts {
        m.update(p);
    }
    Ok(Zeroizing::new(m.finalize().into_bytes().to_vec()))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
    for p in parts {
        m.update(p);
    }
    Ok(Zeroizing::new(m.finalize().into_bytes().to_vec()))
}

fn hmac_sha384(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut m = <Hmac<Sha384> as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
    for p in parts {
        m.update(p);
    }
    Ok(Zeroizing::new(m.finalize().into_bytes().to_vec()))
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut m = <Hmac<Md5> as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
    for p in parts {
        m.update(p);
    }
    Ok(Zeroizing::new(m.finalize().into_bytes().to_vec()))
}

/// The derived keys (Ke, Ki, Kc) of `key` for `usage`, per profile.
fn usage_key(key: &Key, usage: u32, kind: u8) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut constant = [0u8; 5];
    constant[..4].copy_from_slice(&usage.to_be_bytes());
    constant[4] = kind;
    match key.enctype {
        AES128_SHA1 | AES256_SHA1 => derive_key_sha1(key.enctype, &key.value, &constant),
        AES128_SHA256 | AES256_SHA384 => {
            // RFC 8009 5: Ke is the key length; Ki and Kc are the HMAC output length (128/192 bits).
            let len = match (key.enctype, kind) {
                (AES128_SHA256, _) => 16,
                (_, 0xAA) => 32,
                _ => 24,
            };
            kdf_sha2(key.enctype, &key.value, &constant, len)
        }
        e => Err(unsupported(e)),
    }
}

fn hmac_len(enctype: i32) -> usize {
    match enctype {
        AES128_SHA1 | AES256_SHA1 => 12,
        AES128_SHA256 => 16,
        AES256_SHA384 => 24,
        _ => 16,
    }
}

/// AES-CBC-CS3 with a zero IV (RFC 3962's AES-CTS). Exactly one block is plain AES: `cts` 0.7
/// gets that case wrong (it encrypts the block twice), so it is done here.
fn cts_encrypt(key: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    if let Ok(block) = <&mut [u8; 16]>::try_from(&mut *buf) {
        return aes_encrypt_block(key, block);
    }
    let iv = [0u8; 16];
    let r = match key.len() {
        16 => cts::CbcCs3::<Aes128>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::KeyLength)?
            .encrypt(buf),
        32 => cts::CbcCs3::<Aes256>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::KeyLength)?
            .encrypt(buf),
        _ => return Err(CryptoError::KeyLength),
    };
    r.map_err(|_| CryptoError::Integrity)
}

/// The inverse of [`cts_encrypt`] (same one-block special case).
fn cts_decrypt(key: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    if let Ok(block) = <&mut [u8; 16]>::try_from(&mut *buf) {
        return aes_decrypt_block(key, block);
    }
    let iv = [0u8; 16];
    let r = match key.len() {
        16 => cts::CbcCs3::<Aes128>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::KeyLength)?
            .decrypt(buf),
        32 => cts::CbcCs3::<Aes256>::new_from_slices(key, &iv)
            .map_err(|_| CryptoError::KeyLength)?
            .decrypt(buf),
        _ => return Err(CryptoError::KeyLength),
    };
    r.map_err(|_| CryptoError::Integrity)
}

/// RFC 4757 maps some key usages to the ones Windows uses.
fn rc4_usage(usage: u32) -> [u8; 4] {
    let ms = match usage {
        3 => 8,
        9 => 8,
        23 => 13,
        u => u,
    };
    ms.to_le_bytes()
}

/// Encrypts `plaintext` under `key` for `usage` with the caller's random `confounder`
/// (16 bytes; rc4-hmac uses the first 8).
pub fn encrypt(key: &Key, usage: u32, plaintext: &[u8], confounder: &[u8; 16]) -> Result<Vec<u8>, CryptoError> {
    match key.enctype {
        AES128_SHA1 | AES256_SHA1 => {
            let ke = usage_key(key, usage, 0xAA)?;
            let ki = usage_key(key, usage, 0x55)?;
            let mut buf = Zeroizing::new(Vec::with_capacity(16 + plaintext.len()));
            buf.extend_from_slice(confounder);
            buf.extend_from_slice(plaintext);
            let h = hmac_sha1(&ki, &[&buf])?;
            let mut out = buf.to_vec();
            cts_encrypt(&ke, &mut out)?;
            out.extend_from_slice(&h[..12]);
            Ok(out)
        }
        AES128_SHA256 | AES256_SHA384 => {
            let ke = usage_key(key, usage, 0xAA)?;
            let ki = usage_key(key, usage, 0x55)?;
            let mut out = Vec::with_capacity(16 + plaintext.len() + 24);
            out.extend_from_slice(confounder);
            out.extend_from_slice(plaintext);
            cts_encrypt(&ke, &mut out)?;
            // RFC 8009 5: the HMAC covers the (zero) IV and the ciphertext.
            let iv = [0u8; 16];
            let h = if key.enctype == AES128_SHA256 {
                hmac_sha256(&ki, &[&iv, &out])?
            } else {
                hmac_sha384(&ki, &[&iv, &out])?
            };
            out.extend_from_slice(&h[..hmac_len(key.enctype)]);
            Ok(out)
        }
        RC4_HMAC => {
            let k1 = hmac_md5(&key.value, &[&rc4_usage(usage)])?;
            let mut data = Zeroizing::new(Vec::with_capacity(8 + plaintext.len()));
            data.extend_from_slice(&confounder[..8]);
            data.extend_from_slice(plaintext);
            let checksum = hmac_md5(&k1, &[&data])?;
            let k3 = hmac_md5(&k1, &[&checksum])?;
            let mut out = checksum.to_vec();
            let start = out.len();
            out.extend_from_slice(&data);
            rc4_apply(&k3, &mut out[start..])?;
            Ok(out)
        }
        e => Err(unsupported(e)),
    }
}

fn rc4_apply(key: &[u8], buf: &mut [u8]) -> Result<(), CryptoError> {
    use rc4::{KeyInit as _, StreamCipher};
    let mut c = rc4::Rc4::new_from_slice(key).map_err(|_| CryptoError::KeyLength)?;
    c.apply_keystream(buf);
    Ok(())
}

/// Decrypts `ciphertext` under `key` for `usage`, checking its integrity; returns the
/// plaintext without the confounder.
pub fn decrypt(key: &Key, usage: u32, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    match key.enctype {
        AES128_SHA1 | AES256_SHA1 | AES128_SHA256 | AES256_SHA384 => {
            let h = hmac_len(key.enctype);
            if ciphertext.len() < 16 + h {
                return Err(CryptoError::Integrity);
            }
            let (c, mac) = ciphertext.split_at(ciphertext.len() - h);
            let ke = usage_key(key, usage, 0xAA)?;
            let ki = usage_key(key, usage, 0x55)?;
            let expected = if key.enctype == AES128_SHA256 {
                hmac_sha256(&ki, &[&[0u8; 16], c])?
            } else if key.enctype == AES256_SHA384 {
                hmac_sha384(&ki, &[&[0u8; 16], c])?
            } else {
                Zeroizing::new(Vec::new())
            };
            if !expected.is_empty() && !bool::from(expected[..h].ct_eq(mac)) {
                return Err(CryptoError::Integrity);
            }
            let mut plain = Zeroizing::new(c.to_vec());
            cts_decrypt(&ke, &mut plain)?;
            if expected.is_empty() {
                let got = hmac_sha1(&ki, &[&plain])?;
                if !bool::from(got[..h].ct_eq(mac)) {
                    return Err(CryptoError::Integrity);
                }
            }
            Ok(Zeroizing::new(plain[16..].to_vec()))
        }
        RC4_HMAC => {
            if ciphertext.len() < 24 {
                return Err(CryptoError::Integrity);
            }
            let (checksum, c) = ciphertext.split_at(16);
            let k1 = hmac_md5(&key.value, &[&rc4_usage(usage)])?;
            let k3 = hmac_md5(&k1, &[checksum])?;
            let mut plain = Zeroizing::new(c.to_vec());
            rc4_apply(&k3, &mut plain)?;
            let got = hmac_md5(&k1, &[&plain])?;
            if !bool::from(got.as_slice().ct_eq(checksum)) {
                return Err(CryptoError::Integrity);
            }
            Ok(Zeroizing::new(plain[8..].to_vec()))
        }
        e => Err(unsupported(e)),
    }
}

/// The keyed checksum of `msg` under `key` for `usage` (type from [`checksum_type`]).
pub fn checksum(key: &Key, usage: u32, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
    match key.enctype {
        AES128_SHA1 | AES256_SHA1 => {
            let kc = usage_key(key, usage, 0x99)?;
            Ok(hmac_sha1(&kc, &[msg])?[..12].to_vec())
        }
        AES128_SHA256 => {
            let kc = usage_key(key, usage, 0x99)?;
            Ok(hmac_sha256(&kc, &[msg])?[..16].to_vec())
        }
        AES256_SHA384 => {
            let kc = usage_key(key, usage, 0x99)?;
            Ok(hmac_sha384(&kc, &[msg])?[..24].to_vec())
        }
        RC4_HMAC => {
            use md5::Digest;
            let ksign = hmac_md5(&key.value, &[b"signaturekey\0"])?;
            let mut h = Md5::new();
            h.update(rc4_usage(usage));
            h.update(msg);
            let tmp = h.finalize();
            Ok(hmac_md5(&ksign, &[&tmp])?.to_vec())
        }
        e => Err(unsupported(e)),
    }
}

/// RFC 3961 3 pseudo-random function of each profile: RFC 3962 3 (AES-SHA1: the first block of
/// SHA-1(`input`) encrypted under DK(key, "prf")), RFC 8009 5 (KDF-HMAC-SHA2(key, "prf",
/// `input`)), RFC 4757 (rc4-hmac: HMAC-SHA1). Hand-written: RFC glue over the primitives above.
pub fn prf(key: &Key, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    match key.enctype {
        AES128_SHA1 | AES256_SHA1 => {
            use sha1::Digest;
            let digest = Sha1::digest(input);
            let mut block = [0u8; 16];
            block.copy_from_slice(&digest[..16]);
            let kp = derive_key_sha1(key.enctype, &key.value, b"prf")?;
            aes_encrypt_block(&kp, &mut block)?;
            Ok(Zeroizing::new(block.to_vec()))
        }
        AES128_SHA256 | AES256_SHA384 => {
            let (len, bits) = if key.enctype == AES128_SHA256 {
                (32, 256u32)
            } else {
                (48, 384)
            };
            let parts: [&[u8]; 5] = [&1u32.to_be_bytes(), b"prf", &[0], input, &bits.to_be_bytes()];
            let full = if key.enctype == AES128_SHA256 {
                hmac_sha256(&key.value, &parts)?
            } else {
                hmac_sha384(&key.value, &parts)?
            };
            Ok(Zeroizing::new(full[..len].to_vec()))
        }
        RC4_HMAC => hmac_sha1(&key.value, &[input]),
        e => Err(unsupported(e)),
    }
}

/// RFC 6113 5.1 PRF+(key, `pepper`), `len` bytes: PRF(key, 1 | pepper) | PRF(key, 2 | pepper) ...
fn prf_plus(key: &Key, pepper: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 48));
    let mut input = Zeroizing::new(Vec::with_capacity(pepper.len() + 1));
    input.push(0);
    input.extend_from_slice(pepper);
    let mut counter: u8 = 1;
    while out.len() < len {
        input[0] = counter;
        out.extend_from_slice(&prf(key, &input)?);
        counter = counter.checked_add(1).ok_or(CryptoError::Params)?;
    }
    out.truncate(len);
    Ok(out)
}

/// RFC 6113 5.1 KRB-FX-CF2(key1, key2, pepper1, pepper2): a key of `key1`'s enctype from
/// PRF+(key1, pepper1) XOR PRF+(key2, pepper2) (random-to-key is the identity for the enctypes
/// here). The FAST armor key, and the strengthened reply key, are made this way.
pub fn cf2(key1: &Key, key2: &Key, pepper1: &[u8], pepper2: &[u8]) -> Result<Key, CryptoError> {
    let len = key_len(key1.enctype)?;
    let mut a = prf_plus(key1, pepper1, len)?;
    let b = prf_plus(key2, pepper2, len)?;
    for (x, y) in a.iter_mut().zip(b.iter()) {
        *x ^= y;
    }
    Key::new(key1.enctype, &a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        let s: alloc::string::String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn prf_vectors() {
        // RFC 8009 appendix A (input "test") and MIT krb5's t_prf.in (aes256-cts-hmac-sha1-96, RFC
        // 3962 3's PRF over the PRF+ inputs 0x01 "b" and 0x02 "b").
        let aes_sha1 = "9D520D2D980AA7CB6B693682B62DA258B333867951642CE647AE62B1E5E0B5E9";
        let cases: &[(i32, &str, &[u8], &str)] = &[
            (AES256_SHA1, aes_sha1, b"\x01b", "FF0E289EA756C0559A0E911856961A49"),
            (AES256_SHA1, aes_sha1, b"\x02b", "0D674DD0F9A6806525A4D92E828BD15A"),
            (
                AES128_SHA256,
                "3705D96080C17728A0E800EAB6E0D23C",
                b"test",
                "9D188616F63852FE86915BB840B4A886FF3E6BB0F819B49B893393D393854295",
            ),
            (
                AES256_SHA384,
                "6D404D37FAF79F9DF0D33568D320669800EB4836472EA8A026D16B7182460C52",
                b"test",
                "9801F69A368C2BF675E59521E177D9A07F67EFE1CFDE8D3C8D6F6A0256E3B17DB3C1B62AD1B8553360D17367EB1514D2",
            ),
        ];
        for (et, key, input, expected) in cases {
            let k = Key::new(*et, &h(key)).unwrap();
            assert_eq!(
                prf(&k, input).unwrap().as_slice(),
                h(expected).as_slice(),
                "enctype {et}"
            );
        }
    }

    #[test]
    fn krb_fx_cf2_mit_t_cf2_vectors() {
        // MIT krb5 src/lib/crypto/crypto_tests/t_cf2.in / t_cf2.expected: key1 = string-to-key
        // ("key1", salt "key1"), key2 = string-to-key("key2", salt "key2"), peppers "a" and "b".
        let cases: &[(i32, &str)] = &[
            (AES128_SHA1, "97df97e4b798b29eb31ed7280287a92a"),
            (
                AES256_SHA1,
                "4d6ca4e629785c1f01baf55e2e548566b9617ae3a96868c337cb93b5e72b1c7b",
            ),
            (RC4_HMAC, "24d7f6b6bae4e5c00d2082c5ebab3672"),
            (AES128_SHA256, "edd02a39d2dbde31611c16e610be062c"),
            (
                AES256_SHA384,
                "67f6ea530aea85a37dcbb23349ea52dcc61ca8493ff557252327fd8304341584",
            ),
        ];
        for (et, expected) in cases {
            let k1 = string_to_key(*et, b"key1", b"key1", None).unwrap();
            let k2 = string_to_key(*et, b"key2", b"key2", None).unwrap();
            let out = cf2(&k1, &k2, b"a", b"b").unwrap();
            assert_eq!(out.enctype, *et);
            assert_eq!(out.value.as_slice(), h(expected).as_slice(), "enctype {et}");
        }
    }

    #[test]
    fn nfold_rfc3961_vectors() {
        assert_eq!(nfold(b"012345", 8), h("be072631276b1955"));
        assert_eq!(nfold(b"password", 7), h("78a07b6caf85fa"));
        assert_eq!(nfold(b"Rough Consensus, and Running Code", 8), h("bb6ed30870b7f0e0"));
        assert_eq!(nfold(b"kerberos", 16), h("6b657262 65726f73 7b9b5b2b 93132b93"));
        assert_eq!(
            nfold(b"kerberos", 32),
            h("6b657262 65726f73 7b9b5b2b 93132b93 5c9bdcda d95c9899 c4cae4de e6d6cae4")
        );
    }

    #[test]
    fn rfc3962_string_to_key() {
        // RFC 3962 appendix B.
        let salt = b"ATHENA.MIT.EDUraeburn";
        let cases: &[(u32, i32, &str)] = &[
            (1, AES128_SHA1, "42 26 3c 6e 89 f4 fc 28 b8 df 68 ee 09 79 9f 15"),
            (
                1,
                AES256_SHA1,
                "fe 69 7b 52 bc 0d 3c e1 44 32 ba 03 6a 92 e6 5b bb 52 28 09 90 a2 fa 27 88 39 98 d7 2a f3 01 61",
            ),
            (2, AES128_SHA1, "c6 51 bf 29 e2 30 0a c2 7f a4 69 d6 93 bd da 13"),
            (
                1200,
                AES256_SHA1,
                "55 a6 ac 74 0a d1 7b 48 46 94 10 51 e1 e8 b0 a7 54 8d 93 b0 ab 30 a8 bc 3f f1 62 80 38 2b 8c 2a",
            ),
        ];
        for (iter, et, expected) in cases {
            let k = string_to_key(*et, b"password", salt, Some(&iter.to_be_bytes())).unwrap();
            assert_eq!(k.value.as_slice(), h(expected).as_slice(), "iter {iter} enctype {et}");
        }
        let k = string_to_key(
            AES256_SHA1,
            &[b'X'; 64],
            b"pass phrase equals block size",
            Some(&1200u32.to_be_bytes()),
        )
        .unwrap();
        assert_eq!(
            k.value.as_slice(),
            h("89 ad ee 36 08 db 8b c7 1f 1b fb fe 45 94 86 b0 56 18 b7 0c ba e2 20 92 53 4e 56 c5 53 ba 4b 34")
                .as_slice()
        );
    }

    #[test]
    fn rfc8009_vectors() {
        // RFC 8009 appendix A.
        let salt = h(
            "10 DF 9D D7 83 E5 BC 8A CE A1 73 0E 74 35 5F 61 41 54 48 45 4E 41 2E 4D 49 54 2E 45 44 55 72 61 65 62 75 72 6E",
        );
        let k = string_to_key(AES128_SHA256, b"password", &salt, Some(&32768u32.to_be_bytes())).unwrap();
        assert_eq!(
            k.value.as_slice(),
            h("08 9B CA 48 B1 05 EA 6E A7 7C A5 D2 F3 9D C5 E7").as_slice()
        );
        let k = string_to_key(AES256_SHA384, b"password", &salt, None).unwrap();
        assert_eq!(
            k.value.as_slice(),
            h("45 BD 80 6D BF 6A 83 3A 9C FF C1 C9 45 89 A2 22 36 7A 79 BC 21 C4 13 71 89 06 E9 F5 78 A7 84 67")
                .as_slice()
        );

        // Key derivation for usage 2.
        let base = Key::new(AES128_SHA256, &h("37 05 D9 60 80 C1 77 28 A0 E8 00 EA B6 E0 D2 3C")).unwrap();
        assert_eq!(
            usage_key(&base, 2, 0x99).unwrap().as_slice(),
            h("B3 1A 01 8A 48 F5 47 76 F4 03 E9 A3 96 32 5D C3").as_slice()
        );
        assert_eq!(
            usage_key(&base, 2, 0xAA).unwrap().as_slice(),
            h("9B 19 7D D1 E8 C5 60 9D 6E 67 C3 E3 7C 62 C7 2E").as_slice()
        );
        assert_eq!(
            usage_key(&base, 2, 0x55).unwrap().as_slice(),
            h("9F DA 0E 56 AB 2D 85 E1 56 9A 68 86 96 C2 6A 6C").as_slice()
        );
        let base256 = Key::new(
            AES256_SHA384,
            &h("6D 40 4D 37 FA F7 9F 9D F0 D3 35 68 D3 20 66 98 00 EB 48 36 47 2E A8 A0 26 D1 6B 71 82 46 0C 52"),
        )
        .unwrap();
        assert_eq!(
            usage_key(&base256, 2, 0x99).unwrap().as_slice(),
            h("EF 57 18 BE 86 CC 84 96 3D 8B BB 50 31 E9 F5 C4 BA 41 F2 8F AF 69 E7 3D").as_slice()
        );
        assert_eq!(
            usage_key(&base256, 2, 0xAA).unwrap().as_slice(),
            h("56 AB 22 BE E6 3D 82 D7 BC 52 27 F6 77 3F 8E A7 A5 EB 1C 82 51 60 C3 83 12 98 0C 44 2E 5C 7E 49")
                .as_slice()
        );

        // Encryption (usage 2 with the base keys above): empty, then 21-byte plaintexts.
        let conf: [u8; 16] = h("7E 58 95 EA F2 67 24 35 BA D8 17 F5 45 A3 71 48").try_into().unwrap();
        let c = encrypt(&base, 2, &[], &conf).unwrap();
        assert_eq!(
            c,
            h("EF 85 FB 89 0B B8 47 2F 4D AB 20 39 4D CA 78 1D AD 87 7E DA 39 D5 0C 87 0C 0D 5A 0A 8E 48 C7 18")
        );
        assert_eq!(decrypt(&base, 2, &c).unwrap().as_slice(), &[] as &[u8]);
        let conf: [u8; 16] = h("A7 A4 E2 9A 47 28 CE 10 66 4F B6 4E 49 AD 3F AC").try_into().unwrap();
        let plain = h("00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14");
        let c = encrypt(&base, 2, &plain, &conf).unwrap();
        assert_eq!(
            c,
            h(
                "72 0F 73 B1 8D 98 59 CD 6C CB 43 46 11 5C D3 36 C7 0F 58 ED C0 C4 43 7C 55 73 54 4C 31 C8 13 BC E1 E6 D0 72 C1 86 B3 9A 41 3C 2F 92 CA 9B 83 34 A2 87 FF CB FC"
            )
        );
        assert_eq!(decrypt(&base, 2, &c).unwrap().as_slice(), plain.as_slice());
        let conf: [u8; 16] = h("F7 64 E9 FA 15 C2 76 47 8B 2C 7D 0C 4E 5F 58 E4").try_into().unwrap();
        let c = encrypt(&base256, 2, &[], &conf).unwrap();
        assert_eq!(
            c,
            h(
                "41 F5 3F A5 BF E7 02 6D 91 FA F9 BE 95 91 95 A0 58 70 72 73 A9 6A 40 F0 A0 19 60 62 1A C6 12 74 8B 9B BF BE 7E B4 CE 3C"
            )
        );
        assert_eq!(decrypt(&base256, 2, &c).unwrap().as_slice(), &[] as &[u8]);

        // Checksums (usage 2) over the 21-byte message.
        let msg = h("00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14");
        assert_eq!(
            checksum(&base, 2, &msg).unwrap(),
            h("D7 83 67 18 66 43 D6 7B 41 1C BA 91 39 FC 1D EE")
        );
        assert_eq!(
            checksum(&base256, 2, &msg).unwrap(),
            h("45 EE 79 15 67 EE FC A3 7F 4A C1 E0 22 2D E8 0D 43 C3 BF A0 66 99 67 2A")
        );
    }

    #[test]
    fn aes_sha1_and_rc4_round_trip_and_detect_tampering() {
        for et in [AES128_SHA1, AES256_SHA1, AES128_SHA256, AES256_SHA384, RC4_HMAC] {
            let k = Key::new(et, &alloc::vec![7u8; key_len(et).unwrap()]).unwrap();
            for len in [0usize, 1, 15, 16, 17, 31, 32, 100] {
                let p: Vec<u8> = (0..len as u8).collect();
                let mut c = encrypt(&k, 3, &p, &[9; 16]).unwrap();
                assert_eq!(decrypt(&k, 3, &c).unwrap().as_slice(), p.as_slice(), "{et} {len}");
                assert_eq!(decrypt(&k, 4, &c).err(), Some(CryptoError::Integrity));
                let last = c.len() - 1;
                c[last] ^= 1;
                assert_eq!(decrypt(&k, 3, &c).err(), Some(CryptoError::Integrity));
            }
            assert!(decrypt(&k, 3, &[1, 2, 3]).is_err());
        }
    }

    #[test]
    fn des_is_refused_everywhere() {
        for et in 1..=3 {
            let des = CryptoError::Enctype(EnctypeRefused::Des(et));
            assert_eq!(check_enctype(et, true), Err(des));
            assert_eq!(string_to_key(et, b"p", b"s", None).err(), Some(des));
            assert_eq!(Key::new(et, &[0; 8]).err(), Some(des));
        }
        assert_eq!(
            check_enctype(RC4_HMAC, false),
            Err(CryptoError::Enctype(EnctypeRefused::Rc4NotAllowed))
        );
        assert!(check_enctype(RC4_HMAC, true).is_ok());
    }
}
