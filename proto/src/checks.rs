//! The limits and checks both sides of the enclave boundary apply to a request, defined once.
//!
//! The enclave enforces every one of them itself: the proxy is untrusted, so whatever it forwards
//! is checked again inside. The proxy runs the same functions first only to answer its callers
//! early, with a clear gRPC error, and to spare the enclave a round trip for a request it would
//! refuse. A refusal is a [`CheckError`]: a broken rule ([`CheckError::is_rule`],
//! FAILED_PRECONDITION) or a malformed request (INVALID_ARGUMENT). Messages name the field and
//! the rule, never a secret.

use alloc::string::String;

use crate::attest::{NONCE_LEN, PUBLIC_KEY_LEN, SEALING_NONCE_LEN};
use crate::enclave::{Key, LegacyProtocol, SealedSecret};
use crate::enctype::{self, Enctype, EnctypeRefused};
use crate::secret::SecretRef;

/// Most referrals (RFC 6806) or cross-realm hops one TGS exchange follows: the enclave ends the
/// exchange beyond it, and the proxy's step count allows for it.
pub const MAX_REFERRAL_HOPS: usize = 5;
/// Longest user, domain, realm (or KDC host) name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Bytes of an NT hash.
pub const NT_HASH_LEN: usize = 16;
/// Shortest sealed ciphertext: the AES-GCM tag alone.
pub const MIN_SEALED_CIPHERTEXT_LEN: usize = 16;
/// Longest sealed ciphertext: the longest secret (a password), its protobuf framing and the tag.
pub const MAX_SEALED_CIPHERTEXT_LEN: usize = MAX_PASSWORD_LEN + 64;
/// Longest vault target name, in bytes.
pub const MAX_TARGET_LEN: usize = 256;
/// Bytes of a session handle the enclave hands out.
pub const SESSION_HANDLE_LEN: usize = 16;
/// Bytes of an NTLM context id the enclave hands out.
pub const CONTEXT_ID_LEN: usize = 16;

/// Longest Kerberos service principal name asked for, in bytes.
pub const MAX_SPN_LEN: usize = 512;
/// Largest KDC reply either side reads (real ones, PAC included, are a few KiB).
pub const MAX_KDC_REPLY_LEN: usize = 64 << 10;

/// Largest NTLM CHALLENGE_MESSAGE.
pub const MAX_NTLM_CHALLENGE_LEN: usize = 64 << 10;
/// Largest `gss_channel_bindings_struct`.
pub const MAX_CHANNEL_BINDINGS_LEN: usize = 64 << 10;
/// Longest NTLM target SPN (MsvAvTargetName), in bytes.
pub const MAX_NTLM_TARGET_SPN_LEN: usize = 1024;
/// Largest NEGOTIATE_MESSAGE a caller may hand in for the MIC (real ones are 32 to a few hundred
/// bytes: the header, a Version and at most a domain and a workstation name).
pub const MAX_NTLM_NEGOTIATE_LEN: usize = 4096;
/// Longest workstation name put in an AUTHENTICATE, in bytes (a DNS label; NetBIOS names are 15).
pub const MAX_NTLM_WORKSTATION_LEN: usize = 63;
/// Longest legacy protocol challenge, in bytes.
pub const MAX_LEGACY_CHALLENGE_LEN: usize = 4096;
/// NTLM contexts the enclave holds at most; beyond it a new one is refused rather than another
/// owner's evicted. The proxy's table of who owns which context has the same bound.
pub const MAX_NTLM_CONTEXTS: usize = 4096;
/// NTLM contexts one owner holds at most; a new one evicts that owner's oldest, never another's.
pub const MAX_NTLM_CONTEXTS_PER_OWNER: usize = 64;

/// Why a request was refused before anything was done with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A required field is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A field is longer than its limit.
    #[error("{field} is longer than {max} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A name has control characters (they would break log lines, and no real name has them).
    #[error("{field} contains control characters")]
    ControlCharacters {
        /// The field.
        field: &'static str,
    },
    /// A name with characters outside its set.
    #[error("{field} may hold only {allowed}")]
    Characters {
        /// The field.
        field: &'static str,
        /// The characters it may hold.
        allowed: &'static str,
    },
    /// No secret in a request that needs one.
    #[error("one secret is required: password, nt_hash, key or sealed")]
    NoSecret,
    /// An NT hash of the wrong length.
    #[error("nt_hash must be exactly {NT_HASH_LEN} bytes")]
    NtHashLength,
    /// A key of an enctype that may not be used.
    #[error(transparent)]
    Enctype(#[from] EnctypeRefused),
    /// A key of the wrong length for its enctype.
    #[error("a {name} key is {len} bytes, not {got}")]
    KeyLength {
        /// The enctype's name.
        name: &'static str,
        /// Its key length.
        len: usize,
        /// The given key's length.
        got: usize,
    },
    /// A Kerberos key without a realm to use it in.
    #[error("a Kerberos key needs a realm")]
    KeyWithoutRealm,
    /// A part of a sealed secret has the wrong length.
    #[error("malformed sealed secret: {0}")]
    Sealed(&'static str),
    /// An SPN that is not `service/host[@REALM]` or `service@host`.
    #[error("spn {0:?} is not service/host or service@host")]
    Spn(String),
    /// Delegation asked for with a service ticket.
    #[error("unconstrained delegation is never allowed: credguard never forwards a TGT")]
    Delegation,
    /// A name that does not have the form it claims (`DOMAIN\user`, `user@suffix`).
    #[error("{field}: {what}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// A legacy protocol number that names none.
    #[error("protocol {0} is not one of NTLMV1, MSCHAPV2, DIGEST, CREDSSP")]
    LegacyProtocol(i32),
}

impl CheckError {
    /// Whether the request breaks a rule (FAILED_PRECONDITION: DES, rc4-hmac where not allowed,
    /// delegation) rather than being malformed (INVALID_ARGUMENT).
    pub fn is_rule(&self) -> bool {
        match self {
            CheckError::Enctype(e) => e.is_rule(),
            CheckError::Delegation => true,
            _ => false,
        }
    }
}

/// Checks a name: at most [`MAX_NAME_LEN`] bytes, no control characters, and not empty unless
/// `may_be_empty`.
pub fn name(field: &'static str, value: &str, may_be_empty: bool) -> Result<(), CheckError> {
    if value.is_empty() && !may_be_empty {
        return Err(CheckError::Empty { field });
    }
    bounded_text(field, value, MAX_NAME_LEN)
}

/// Checks the names of a credential: a user; a domain and a realm, which may be empty.
pub fn credential_names(user: &str, domain: &str, realm: &str) -> Result<(), CheckError> {
    name("user", user, false)?;
    name("domain", domain, true)?;
    name("realm", realm, true)
}

/// Checks a vault target name: 1 to [`MAX_TARGET_LEN`] bytes, no control characters.
pub fn target(target: &str) -> Result<(), CheckError> {
    if target.is_empty() {
        return Err(CheckError::Empty { field: "target" });
    }
    bounded_text("target", target, MAX_TARGET_LEN)
}

/// Checks that `value` is at most `max` bytes and has no control characters.
fn bounded_text(field: &'static str, value: &str, max: usize) -> Result<(), CheckError> {
    if value.len() > max {
        return Err(CheckError::TooLong { field, max });
    }
    if value.chars().any(char::is_control) {
        return Err(CheckError::ControlCharacters { field });
    }
    Ok(())
}

/// Checks the secret of a logon or a vault save for a credential of `realm`; returns its kind
/// ([`SecretRef::kind`]). A key must be of a usable enctype (rc4-hmac only with `allow_rc4`), of
/// that enctype's length, and have a realm; a sealed secret must have parts of the right lengths
/// (what it holds is checked once it is opened, in the enclave).
pub fn secret(secret: Option<SecretRef<'_>>, realm: &str, allow_rc4: bool) -> Result<&'static str, CheckError> {
    let secret = secret.ok_or(CheckError::NoSecret)?;
    match secret {
        SecretRef::Password("") => return Err(CheckError::Empty { field: "password" }),
        SecretRef::Password(p) if p.len() > MAX_PASSWORD_LEN => {
            return Err(CheckError::TooLong {
                field: "password",
                max: MAX_PASSWORD_LEN,
            });
        }
        SecretRef::NtHash(h) if h.len() != NT_HASH_LEN => return Err(CheckError::NtHashLength),
        SecretRef::Key(k) => {
            key(k, realm, allow_rc4)?;
        }
        SecretRef::Sealed(s) => {
            sealed_parts(s).map_err(CheckError::Sealed)?;
        }
        SecretRef::Password(_) | SecretRef::NtHash(_) => {}
    }
    Ok(secret.kind())
}

/// Checks a long-term key for a credential of `realm`; returns its enctype.
pub fn key(key: &Key, realm: &str, allow_rc4: bool) -> Result<&'static Enctype, CheckError> {
    // The enctype first: DES is refused by rule whatever the key's length.
    let enctype = enctype::implemented(key.enctype)?;
    if key.value.len() != enctype.key_len {
        return Err(CheckError::KeyLength {
            name: enctype.name,
            len: enctype.key_len,
            got: key.value.len(),
        });
    }
    if realm.is_empty() {
        return Err(CheckError::KeyWithoutRealm);
    }
    Ok(enctype::usable(key.enctype, allow_rc4)?)
}

/// The fixed-length parts of a sealed secret.
pub struct SealedParts {
    /// The client's ephemeral X25519 public key.
    pub ephemeral_public_key: [u8; PUBLIC_KEY_LEN],
    /// The enclave public key it was sealed to.
    pub enclave_public_key: [u8; PUBLIC_KEY_LEN],
    /// The AES-GCM nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The single-use nonce the enclave issued for it.
    pub sealing_nonce: [u8; SEALING_NONCE_LEN],
}

/// The parts of `sealed`, if each has its length and the ciphertext is 16 to 1088 bytes; else
/// which part is wrong.
pub fn sealed_parts(sealed: &SealedSecret) -> Result<SealedParts, &'static str> {
    let ephemeral_public_key = sealed
        .ephemeral_public_key
        .as_slice()
        .try_into()
        .map_err(|_| "ephemeral_public_key must be 32 bytes")?;
    let enclave_public_key = sealed
        .enclave_public_key
        .as_slice()
        .try_into()
        .map_err(|_| "enclave_public_key must be 32 bytes")?;
    let nonce = sealed
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| "nonce must be 12 bytes")?;
    let sealing_nonce = sealed
        .sealing_nonce
        .as_slice()
        .try_into()
        .map_err(|_| "sealing_nonce must be the 16 bytes GetSealingNonce returned")?;
    if !(MIN_SEALED_CIPHERTEXT_LEN..=MAX_SEALED_CIPHERTEXT_LEN).contains(&sealed.ciphertext.len()) {
        return Err("ciphertext must be 16 to 1088 bytes");
    }
    Ok(SealedParts {
        ephemeral_public_key,
        enclave_public_key,
        nonce,
        sealing_nonce,
    })
}

/// How an SPN names its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpnForm {
    /// `service/host[@REALM]` (Kerberos NT-SRV-INST).
    Instance,
    /// `service@host` (Kerberos NT-SRV-HST).
    Host,
}

/// A service principal name, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spn<'a> {
    /// The service, e.g. `HTTP`.
    pub service: &'a str,
    /// The host, e.g. `web.example.test`.
    pub host: &'a str,
    /// How it was written.
    pub form: SpnForm,
    /// The realm of `service/host@REALM`, if one is given: the service may be in another realm
    /// than the TGT's (a cross-realm request). `None` for `service/host` and `service@host`.
    pub realm: Option<&'a str>,
}

/// Splits a Kerberos SPN, `service/host[@REALM]` or `service@host`. A realm suffix must be a
/// valid realm name (see [`realm`]).
pub fn spn(spn: &str) -> Result<Spn<'_>, CheckError> {
    if spn.is_empty() {
        return Err(CheckError::Empty { field: "spn" });
    }
    bounded_text("spn", spn, MAX_SPN_LEN)?;
    let invalid = || CheckError::Spn(String::from(spn));
    let (service, host, form, realm) = if let Some((service, rest)) = spn.split_once('/') {
        let (host, realm) = rest.split_once('@').map_or((rest, None), |(h, r)| (h, Some(r)));
        (service, host, SpnForm::Instance, realm)
    } else {
        let (service, host) = spn.split_once('@').ok_or_else(invalid)?;
        (service, host, SpnForm::Host, None)
    };
    if service.is_empty() || host.is_empty() || host.contains('/') {
        return Err(invalid());
    }
    if let Some(r) = realm {
        self::realm("spn realm", r)?;
    }
    Ok(Spn {
        service,
        host,
        form,
        realm,
    })
}

/// Checks a realm name from a caller or a KDC (an SPN's suffix, a referral's target): 1 to
/// [`MAX_NAME_LEN`] bytes of printable ASCII without `/`, `@` or spaces. Such a name later
/// selects KDCs and is printed in messages, so nothing that could confuse either gets through.
pub fn realm(field: &'static str, value: &str) -> Result<(), CheckError> {
    if value.is_empty() {
        return Err(CheckError::Empty { field });
    }
    bounded_text(field, value, MAX_NAME_LEN)?;
    if !value.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@') {
        return Err(CheckError::Malformed {
            field,
            what: "a realm is printable ASCII without '/', '@' or spaces",
        });
    }
    Ok(())
}

/// Refuses a service ticket request that asks for delegation: no forwarded TGT ever leaves.
pub fn no_delegation(delegate: bool) -> Result<(), CheckError> {
    if delegate {
        return Err(CheckError::Delegation);
    }
    Ok(())
}

/// Checks the length of a `gss_channel_bindings_struct` (NTLM or Kerberos; empty: none).
pub fn channel_bindings(channel_bindings: &[u8]) -> Result<(), CheckError> {
    if channel_bindings.len() > MAX_CHANNEL_BINDINGS_LEN {
        return Err(CheckError::TooLong {
            field: "channel_bindings",
            max: MAX_CHANNEL_BINDINGS_LEN,
        });
    }
    Ok(())
}

/// Checks the optional inputs of an NTLM AUTHENTICATE: channel bindings and the target SPN.
pub fn ntlm_options(channel_bindings: &[u8], target_spn: &str) -> Result<(), CheckError> {
    self::channel_bindings(channel_bindings)?;
    bounded_text("target_spn", target_spn, MAX_NTLM_TARGET_SPN_LEN)
}

/// Checks the length of a NEGOTIATE_MESSAGE handed in for the MIC (empty: none); its content is
/// the enclave's to parse.
pub fn ntlm_negotiate_len(negotiate_message: &[u8]) -> Result<(), CheckError> {
    if negotiate_message.len() > MAX_NTLM_NEGOTIATE_LEN {
        return Err(CheckError::TooLong {
            field: "negotiate_message",
            max: MAX_NTLM_NEGOTIATE_LEN,
        });
    }
    Ok(())
}

/// Checks a workstation name for an AUTHENTICATE (empty: none): at most
/// [`MAX_NTLM_WORKSTATION_LEN`] bytes of ASCII letters, digits, `-`, `_` and `.`, which every
/// host and NetBIOS name fits and which no acceptor's log or parser can mistake for anything else.
pub fn ntlm_workstation(workstation: &str) -> Result<(), CheckError> {
    if workstation.len() > MAX_NTLM_WORKSTATION_LEN {
        return Err(CheckError::TooLong {
            field: "workstation",
            max: MAX_NTLM_WORKSTATION_LEN,
        });
    }
    if !workstation
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(CheckError::Characters {
            field: "workstation",
            allowed: "ASCII letters, digits, '-', '_' and '.'",
        });
    }
    Ok(())
}

/// Checks a legacy protocol request (protocol number and challenge length); returns the protocol.
pub fn legacy_request(protocol: i32, challenge: &[u8]) -> Result<LegacyProtocol, CheckError> {
    let protocol = match LegacyProtocol::try_from(protocol) {
        Ok(LegacyProtocol::Unspecified) | Err(_) => return Err(CheckError::LegacyProtocol(protocol)),
        Ok(p) => p,
    };
    if challenge.len() > MAX_LEGACY_CHALLENGE_LEN {
        return Err(CheckError::TooLong {
            field: "challenge",
            max: MAX_LEGACY_CHALLENGE_LEN,
        });
    }
    Ok(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn names_are_checked() {
        assert_eq!(name("user", "", false), Err(CheckError::Empty { field: "user" }));
        assert!(name("domain", "", true).is_ok());
        assert!(name("user", "a\nb", false).is_err());
        assert!(name("user", &"x".repeat(300), false).is_err());
        assert!(credential_names("alice", "", "R").is_ok());
        assert!(target("").is_err() && target("a\tb").is_err() && target(&"t".repeat(257)).is_err());
        assert!(target("fileserver.example.test").is_ok());
    }

    fn key_of(enctype: i32, n: usize) -> Key {
        Key {
            enctype,
            value: vec![0; n],
        }
    }

    #[test]
    fn keys_are_checked() {
        let rule = |r: Result<&Enctype, CheckError>| r.is_err_and(|e| e.is_rule());
        let malformed = |r: Result<&Enctype, CheckError>| r.is_err_and(|e| !e.is_rule());
        assert!(rule(key(&key_of(3, 8), "R", true)), "DES");
        assert!(rule(key(&key_of(23, 16), "R", false)), "rc4-hmac not allowed");
        assert!(key(&key_of(23, 16), "R", true).is_ok());
        assert!(key(&key_of(18, 32), "R", false).is_ok());
        assert!(malformed(key(&key_of(18, 16), "R", false)), "length");
        assert!(malformed(key(&key_of(99, 16), "R", false)), "unknown enctype");
        assert!(malformed(key(&key_of(18, 32), "", false)), "no realm");
    }

    #[test]
    fn secrets_are_checked() {
        let check = |s: SecretRef<'_>| secret(Some(s), "R", false);
        assert_eq!(check(SecretRef::Password("pw")), Ok("password"));
        assert!(check(SecretRef::Password("")).is_err());
        assert!(check(SecretRef::Password(&"p".repeat(MAX_PASSWORD_LEN + 1))).is_err());
        assert_eq!(check(SecretRef::NtHash(&[0; 15])), Err(CheckError::NtHashLength));
        assert_eq!(check(SecretRef::NtHash(&[0; 16])), Ok("nt_hash"));
        assert_eq!(secret(None, "R", true), Err(CheckError::NoSecret));
        let mut sealed = SealedSecret {
            ephemeral_public_key: vec![1; 32],
            nonce: vec![2; 12],
            ciphertext: vec![3; 48],
            enclave_public_key: vec![4; 32],
            sealing_nonce: vec![5; 16],
        };
        assert_eq!(check(SecretRef::Sealed(&sealed)), Ok("sealed"));
        sealed.nonce.truncate(5);
        assert!(matches!(check(SecretRef::Sealed(&sealed)), Err(CheckError::Sealed(_))));
        sealed.nonce = vec![2; 12];
        sealed.ciphertext = vec![3; MAX_SEALED_CIPHERTEXT_LEN + 1];
        assert!(matches!(check(SecretRef::Sealed(&sealed)), Err(CheckError::Sealed(_))));
    }

    #[test]
    fn spns_are_split() {
        let s = spn("host/svc.test@REALM").unwrap();
        assert_eq!((s.service, s.host, s.form), ("host", "svc.test", SpnForm::Instance));
        assert_eq!(s.realm, Some("REALM"));
        let s = spn("host/svc.test").unwrap();
        assert_eq!((s.host, s.realm), ("svc.test", None));
        let s = spn("HTTP@web.test").unwrap();
        assert_eq!((s.service, s.host, s.form), ("HTTP", "web.test", SpnForm::Host));
        assert_eq!(s.realm, None);
        for bad in [
            "",
            "nohost",
            "/h",
            "s/",
            "s@",
            "a\nb/c",
            "s/h/x",
            "s/h@",
            "s/h@A B",
            "s/h@A@B",
            "s/h@A\u{e9}",
        ] {
            assert!(spn(bad).is_err(), "{bad:?}");
        }
        assert!(spn(&"s/".repeat(300)).is_err());
        assert!(no_delegation(false).is_ok());
        assert!(no_delegation(true).is_err_and(|e| e.is_rule()));
    }

    #[test]
    fn ntlm_and_legacy_inputs_are_bounded() {
        assert!(ntlm_options(&[0; 16], "HTTP/web.test").is_ok());
        assert!(ntlm_options(&vec![0; MAX_CHANNEL_BINDINGS_LEN + 1], "").is_err());
        assert!(ntlm_options(&[], "a\r\nb").is_err());
        assert!(ntlm_negotiate_len(&[]).is_ok());
        assert!(ntlm_negotiate_len(&[0; MAX_NTLM_NEGOTIATE_LEN]).is_ok());
        assert!(ntlm_negotiate_len(&[0; MAX_NTLM_NEGOTIATE_LEN + 1]).is_err());
        for good in [
            "",
            "WS01",
            "laptop-7.corp.test",
            "A_B",
            &"x".repeat(MAX_NTLM_WORKSTATION_LEN),
        ] {
            assert!(ntlm_workstation(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a b",
            "WS\r\n",
            "ws/1",
            "w\u{e9}",
            "a\0",
            &"x".repeat(MAX_NTLM_WORKSTATION_LEN + 1),
        ] {
            assert!(ntlm_workstation(bad).is_err(), "{bad:?}");
        }
        assert_eq!(legacy_request(1, &[0; 8]), Ok(LegacyProtocol::Ntlmv1));
        assert_eq!(legacy_request(0, &[]), Err(CheckError::LegacyProtocol(0)));
        assert_eq!(legacy_request(99, &[]), Err(CheckError::LegacyProtocol(99)));
        assert!(legacy_request(2, &[0; MAX_LEGACY_CHALLENGE_LEN + 1]).is_err());
    }
}
