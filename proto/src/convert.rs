//! The public API's messages (`credguard.v1`) as the enclave's (`credguard.enclave.v1`), and the
//! client's plain secret as the API's: one conversion per pair, for the proxy and the client; and
//! wiping of the API's secrets.
//!
//! A conversion moves the secret (no copy is left behind to wipe) and only the fields both
//! messages have: what the proxy adds (the owner, the rate, the rc4-hmac choice, the vault's uid
//! and time) it sets on the result; what the enclave never sees (the KDC address: the enclave
//! does no networking) is dropped.

use zeroize::Zeroize;

use crate::{enclave, lsa};

impl From<lsa::Key> for enclave::Key {
    fn from(k: lsa::Key) -> Self {
        enclave::Key {
            enctype: k.enctype,
            value: k.value,
        }
    }
}

impl From<enclave::Key> for lsa::Key {
    fn from(k: enclave::Key) -> Self {
        lsa::Key {
            enctype: k.enctype,
            value: k.value,
        }
    }
}

impl From<lsa::SealedSecret> for enclave::SealedSecret {
    fn from(s: lsa::SealedSecret) -> Self {
        enclave::SealedSecret {
            ephemeral_public_key: s.ephemeral_public_key,
            nonce: s.nonce,
            ciphertext: s.ciphertext,
            enclave_public_key: s.enclave_public_key,
            sealing_nonce: s.sealing_nonce,
        }
    }
}

impl From<lsa::logon_request::Secret> for enclave::logon_request::Secret {
    fn from(s: lsa::logon_request::Secret) -> Self {
        use enclave::logon_request::Secret as E;
        use lsa::logon_request::Secret as L;
        match s {
            L::Password(p) => E::Password(p),
            L::NtHash(h) => E::NtHash(h),
            L::Key(k) => E::Key(k.into()),
            L::Sealed(s) => E::Sealed(s.into()),
        }
    }
}

/// The names and the secret of a logon; the proxy sets `owner`, `operations_per_second` and
/// `allow_rc4`. `kdc` is dropped.
impl From<lsa::LogonRequest> for enclave::LogonRequest {
    fn from(r: lsa::LogonRequest) -> Self {
        enclave::LogonRequest {
            user: r.user,
            domain: r.domain,
            realm: r.realm,
            secret: r.secret.map(Into::into),
            ..Default::default()
        }
    }
}

impl From<lsa::save_credential_request::Secret> for enclave::vault_seal_request::Secret {
    fn from(s: lsa::save_credential_request::Secret) -> Self {
        use enclave::vault_seal_request::Secret as E;
        use lsa::save_credential_request::Secret as L;
        match s {
            L::Password(p) => E::Password(p),
            L::NtHash(h) => E::NtHash(h),
            L::Key(k) => E::Key(k.into()),
            L::Sealed(s) => E::Sealed(s.into()),
        }
    }
}

/// The target, names and secret of a vault save; the proxy sets `uid`, `created_unix_ms` and
/// `allow_rc4`. `kdc` is dropped (the proxy keeps it in its record).
impl From<lsa::SaveCredentialRequest> for enclave::VaultSealRequest {
    fn from(r: lsa::SaveCredentialRequest) -> Self {
        enclave::VaultSealRequest {
            target: r.target,
            user: r.user,
            domain: r.domain,
            realm: r.realm,
            secret: r.secret.map(Into::into),
            ..Default::default()
        }
    }
}

/// A client's secret sent unsealed.
impl From<enclave::sealed_logon_secret::Secret> for lsa::logon_request::Secret {
    fn from(s: enclave::sealed_logon_secret::Secret) -> Self {
        use enclave::sealed_logon_secret::Secret as S;
        match s {
            S::Password(p) => lsa::logon_request::Secret::Password(p),
            S::NtHash(h) => lsa::logon_request::Secret::NtHash(h),
            S::Key(k) => lsa::logon_request::Secret::Key(k.into()),
        }
    }
}

/// The same oneof in `SaveCredentialRequest` as in `LogonRequest`.
impl From<lsa::logon_request::Secret> for lsa::save_credential_request::Secret {
    fn from(s: lsa::logon_request::Secret) -> Self {
        use lsa::logon_request::Secret as L;
        use lsa::save_credential_request::Secret as S;
        match s {
            L::Password(p) => S::Password(p),
            L::NtHash(h) => S::NtHash(h),
            L::Key(k) => S::Key(k),
            L::Sealed(s) => S::Sealed(s),
        }
    }
}

// Wiping, as for the enclave's secrets (`crate::secret`): a sealed secret is ciphertext the proxy
// cannot read, with nothing to wipe.

impl Zeroize for lsa::logon_request::Secret {
    fn zeroize(&mut self) {
        use lsa::logon_request::Secret as L;
        match self {
            L::Password(p) => p.zeroize(),
            L::NtHash(h) => h.zeroize(),
            L::Key(k) => k.value.zeroize(),
            L::Sealed(_) => {}
        }
    }
}

impl Zeroize for lsa::save_credential_request::Secret {
    fn zeroize(&mut self) {
        use lsa::save_credential_request::Secret as S;
        match self {
            S::Password(p) => p.zeroize(),
            S::NtHash(h) => h.zeroize(),
            S::Key(k) => k.value.zeroize(),
            S::Sealed(_) => {}
        }
    }
}

/// The API's legacy protocol number as the enclave's protocol; `None` for a number that names no
/// protocol (unspecified included).
pub fn legacy_protocol(api_protocol: i32) -> Option<enclave::LegacyProtocol> {
    use enclave::LegacyProtocol as E;
    match lsa::LegacyProtocol::try_from(api_protocol) {
        Ok(lsa::LegacyProtocol::Ntlmv1) => Some(E::Ntlmv1),
        Ok(lsa::LegacyProtocol::Mschapv2) => Some(E::Mschapv2),
        Ok(lsa::LegacyProtocol::Digest) => Some(E::Digest),
        Ok(lsa::LegacyProtocol::Credssp) => Some(E::Credssp),
        Ok(lsa::LegacyProtocol::Unspecified) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logon_keeps_its_names_and_secret_and_drops_the_kdc() {
        let r = enclave::LogonRequest::from(lsa::LogonRequest {
            user: "alice".into(),
            domain: "CORP".into(),
            realm: "CORP.TEST".into(),
            kdc: "kdc.test:88".into(),
            secret: Some(lsa::logon_request::Secret::Key(lsa::Key {
                enctype: 18,
                value: vec![7; 32],
            })),
            ..Default::default()
        });
        assert_eq!(
            (r.user.as_str(), r.domain.as_str(), r.realm.as_str()),
            ("alice", "CORP", "CORP.TEST")
        );
        assert_eq!((r.owner, r.operations_per_second, r.allow_rc4), (0, 0, false));
        match r.secret {
            Some(enclave::logon_request::Secret::Key(k)) => assert_eq!((k.enctype, k.value), (18, vec![7; 32])),
            _ => panic!("not the key"),
        }
    }

    #[test]
    fn legacy_protocols_map_by_name() {
        assert_eq!(
            legacy_protocol(lsa::LegacyProtocol::Mschapv2 as i32),
            Some(enclave::LegacyProtocol::Mschapv2)
        );
        assert_eq!(legacy_protocol(0), None);
        assert_eq!(legacy_protocol(77), None);
    }
}
