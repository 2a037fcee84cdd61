//! The Kerberos encryption types credguard implements, and which of them may be used.
//!
//! One table for both sides: the enclave enforces it on every key it takes and every enctype a
//! KDC picks; the proxy checks keys against it first only to answer a bad logon early.
//!
//! DES (enctypes 1 to 3) is refused everywhere: single DES is broken. rc4-hmac is implemented
//! but usable only where allowed: in the enclave, where the image's signed policy and the logon
//! both allow it; in the proxy's early check, where its configuration does.

/// aes128-cts-hmac-sha1-96 (RFC 3962).
pub const AES128_SHA1: i32 = 17;
/// aes256-cts-hmac-sha1-96 (RFC 3962).
pub const AES256_SHA1: i32 = 18;
/// aes128-cts-hmac-sha256-128 (RFC 8009).
pub const AES128_SHA256: i32 = 19;
/// aes256-cts-hmac-sha384-192 (RFC 8009).
pub const AES256_SHA384: i32 = 20;
/// rc4-hmac (RFC 4757).
pub const RC4_HMAC: i32 = 23;

/// An encryption type credguard implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enctype {
    /// Its number in the IANA Kerberos registry.
    pub number: i32,
    /// Its name (RFC 3961, 3962, 4757, 8009); RFC 8009's string-to-key salts with it.
    pub name: &'static str,
    /// Bytes of its keys.
    pub key_len: usize,
}

/// Every enctype credguard implements, strongest first: the order offered to a KDC.
pub const IMPLEMENTED: [Enctype; 5] = [
    Enctype {
        number: AES256_SHA384,
        name: "aes256-cts-hmac-sha384-192",
        key_len: 32,
    },
    Enctype {
        number: AES128_SHA256,
        name: "aes128-cts-hmac-sha256-128",
        key_len: 16,
    },
    Enctype {
        number: AES256_SHA1,
        name: "aes256-cts-hmac-sha1-96",
        key_len: 32,
    },
    Enctype {
        number: AES128_SHA1,
        name: "aes128-cts-hmac-sha1-96",
        key_len: 16,
    },
    Enctype {
        number: RC4_HMAC,
        name: "rc4-hmac",
        key_len: 16,
    },
];

/// Why an enctype may not be used. Each side may say more about rc4-hmac (who refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnctypeRefused {
    /// A DES enctype: refused by rule.
    #[error("enctype {0} is DES: credguard never uses DES (single DES is broken)")]
    Des(i32),
    /// An enctype credguard does not implement.
    #[error("enctype {0} is not supported")]
    Unsupported(i32),
    /// rc4-hmac where it is not allowed.
    #[error(
        "rc4-hmac is not allowed for this session: the image's signed policy and the logon must both allow it \
         (kerberos.allow_rc4 alone cannot)"
    )]
    Rc4NotAllowed,
}

impl EnctypeRefused {
    /// Whether this is a rule (FAILED_PRECONDITION) rather than an unknown number
    /// (INVALID_ARGUMENT where a caller chose it).
    pub fn is_rule(&self) -> bool {
        !matches!(self, EnctypeRefused::Unsupported(_))
    }
}

/// Whether `number` is one of the DES enctypes.
pub fn is_des(number: i32) -> bool {
    matches!(number, 1..=3)
}

/// The enctype `number`, if credguard implements it (rc4-hmac included: see [`usable`]).
pub fn implemented(number: i32) -> Result<&'static Enctype, EnctypeRefused> {
    if is_des(number) {
        return Err(EnctypeRefused::Des(number));
    }
    IMPLEMENTED
        .iter()
        .find(|e| e.number == number)
        .ok_or(EnctypeRefused::Unsupported(number))
}

/// The enctype `number`, if it may be used: implemented, and rc4-hmac only with `allow_rc4`.
pub fn usable(number: i32, allow_rc4: bool) -> Result<&'static Enctype, EnctypeRefused> {
    let enctype = implemented(number)?;
    if number == RC4_HMAC && !allow_rc4 {
        return Err(EnctypeRefused::Rc4NotAllowed);
    }
    Ok(enctype)
}

/// The usable enctypes, strongest first.
pub fn preferred(allow_rc4: bool) -> impl Iterator<Item = i32> {
    IMPLEMENTED
        .iter()
        .map(|e| e.number)
        .filter(move |&n| allow_rc4 || n != RC4_HMAC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn des_and_unknown_enctypes_are_refused_rc4_only_when_allowed() {
        for des in 1..=3 {
            assert_eq!(usable(des, true), Err(EnctypeRefused::Des(des)));
        }
        assert_eq!(usable(99, true), Err(EnctypeRefused::Unsupported(99)));
        assert_eq!(usable(RC4_HMAC, false), Err(EnctypeRefused::Rc4NotAllowed));
        assert_eq!(usable(RC4_HMAC, true).map(|e| e.key_len), Ok(16));
        assert_eq!(usable(AES256_SHA1, false).map(|e| e.key_len), Ok(32));
        assert!(EnctypeRefused::Des(1).is_rule() && !EnctypeRefused::Unsupported(4).is_rule());
    }

    #[test]
    fn preference_is_strongest_first() {
        assert_eq!(preferred(false).collect::<Vec<_>>(), [20, 19, 18, 17]);
        assert_eq!(preferred(true).collect::<Vec<_>>(), [20, 19, 18, 17, 23]);
    }
}
