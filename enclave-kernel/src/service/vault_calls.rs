//! The vault's enclave calls, `VaultSeal` and `VaultLogon` (see [`crate::vault`] for the keys and
//! the blob format). A submodule of `service` so that it reaches the service's session store and
//! rate limiters without widening their visibility.
//!
//! Error codes: no sealing secret, or a blob of an image this one may not open,
//! FAILED_PRECONDITION; a malformed blob or request INVALID_ARGUMENT; a blob that does not open
//! for this uid, target and names (moved, swapped, altered, or another host's) PERMISSION_DENIED.

use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::attest::{Owner, SealPurpose, SealedNames};
use credguard_proto::enclave::{
    LogonRequest, VaultLogonReply, VaultLogonRequest, VaultSealReply, VaultSealRequest, sealed_logon_secret,
    vault_seal_request,
};
use credguard_proto::rpc::{RpcError, code};
use credguard_proto::secret::SecretRef;
use rand_core::TryCryptoRng;
use zeroize::Zeroize;

use super::Service;
use crate::credentials::credential_from;
use crate::vault::{Binding, NONCE_LEN, VaultError};

fn binding<'a>(
    req_uid: u32,
    target: &'a str,
    user: &'a str,
    domain: &'a str,
    realm: &'a str,
    created_unix_ms: u64,
) -> Binding<'a> {
    Binding {
        uid: req_uid,
        target,
        user,
        domain,
        realm,
        created_unix_ms,
    }
}

impl<R: TryCryptoRng> Service<R> {
    /// `VaultSeal`: checks the credential as `Logon` would, then seals it under the vault key.
    /// Opens no session. The secret is wiped whatever the outcome.
    pub(super) fn vault_seal_call(&mut self, mut req: VaultSealRequest) -> Result<VaultSealReply, RpcError> {
        let reply = self.vault_seal_inner(&mut req);
        req.secret.zeroize();
        reply
    }

    fn vault_seal_inner(&mut self, req: &mut VaultSealRequest) -> Result<VaultSealReply, RpcError> {
        if self.vault.is_none() {
            return Err(VaultError::NoVault.into());
        }
        let (mut secret, refuse_rc4) = self.vault_secret(req)?;
        let binding = binding(
            req.uid,
            &req.target,
            &req.user,
            &req.domain,
            &req.realm,
            req.created_unix_ms,
        );
        if let Err(e) = binding.check_target() {
            secret.zeroize();
            return Err(e.into());
        }
        // The same checks as a logon (names, lengths, no DES, a realm for a key), so that the
        // vault holds only credentials that will log on. The copy is wiped with the credential.
        let mut probe = LogonRequest {
            default_realm: String::new(),
            user: req.user.clone(),
            domain: req.domain.clone(),
            realm: req.realm.clone(),
            secret: Some(secret.clone().into()),
            operations_per_second: 0,
            owner: u64::from(req.uid),
            allow_rc4: !refuse_rc4,
            machine_account: false,
        };
        if let Err(e) = credential_from(&mut probe, self.boot_facts.allows_rc4()) {
            secret.zeroize();
            return Err(e.into());
        }
        let kind = SecretRef::from(&secret).kind();
        let mut nonce = [0u8; NONCE_LEN];
        if self.rng.try_fill_bytes(&mut nonce).is_err() {
            secret.zeroize();
            return Err(VaultError::Random.into());
        }
        let Some(v) = self.vault.as_ref() else {
            secret.zeroize();
            return Err(VaultError::NoVault.into());
        };
        let sealed_blob = v.seal(&binding, secret, refuse_rc4, nonce)?;
        Ok(VaultSealReply {
            sealed_blob,
            secret_kind: String::from(kind),
        })
    }

    /// The secret of a `VaultSeal` (opened, if the client sealed it to this boot for a vault save
    /// of exactly this uid, target and names) and whether rc4-hmac is refused for it.
    fn vault_secret(&mut self, req: &mut VaultSealRequest) -> Result<(sealed_logon_secret::Secret, bool), RpcError> {
        let refuse_unsealed_rc4 = !req.allow_rc4;
        Ok(match req.secret.take() {
            None => {
                return Err(RpcError::new(
                    code::INVALID_ARGUMENT,
                    "one secret is required: password, nt_hash, key or sealed",
                ));
            }
            Some(vault_seal_request::Secret::Password(p)) => {
                (sealed_logon_secret::Secret::Password(p), refuse_unsealed_rc4)
            }
            Some(vault_seal_request::Secret::NtHash(h)) => {
                (sealed_logon_secret::Secret::NtHash(h), refuse_unsealed_rc4)
            }
            Some(vault_seal_request::Secret::Key(k)) => (sealed_logon_secret::Secret::Key(k), refuse_unsealed_rc4),
            Some(vault_seal_request::Secret::Sealed(sealed)) => {
                let names = SealedNames {
                    user: &req.user,
                    domain: &req.domain,
                    realm: &req.realm,
                    target: &req.target,
                };
                let opened = self.open_sealed_secret(&sealed, SealPurpose::VaultSave, Owner::uid(req.uid), &names)?;
                (opened.secret, opened.refuse_rc4)
            }
        })
    }

    /// `VaultLogon`: opens a blob and makes a logon session of it, exactly as `Logon` does. A
    /// blob of an allowed earlier image comes back re-sealed under this image's key.
    pub(super) fn vault_logon_call(
        &mut self,
        req: VaultLogonRequest,
        now_tsc: u64,
    ) -> Result<VaultLogonReply, RpcError> {
        let Some(v) = self.vault.as_ref() else {
            return Err(VaultError::NoVault.into());
        };
        let binding = binding(
            req.uid,
            &req.target,
            &req.user,
            &req.domain,
            &req.realm,
            req.created_unix_ms,
        );
        let mut opened = v.open(&binding, &req.sealed_blob)?;
        let mut resealed_blob = Vec::new();
        if opened.from_earlier_image {
            let mut nonce = [0u8; NONCE_LEN];
            if self.rng.try_fill_bytes(&mut nonce).is_err() {
                opened.secret.zeroize();
                return Err(VaultError::Random.into());
            }
            match v.seal(&binding, opened.secret.clone(), opened.refuse_rc4, nonce) {
                Ok(b) => resealed_blob = b,
                Err(e) => {
                    opened.secret.zeroize();
                    return Err(e.into());
                }
            }
        }
        let mut logon = LogonRequest {
            default_realm: String::new(),
            user: req.user.clone(),
            domain: req.domain.clone(),
            realm: req.realm.clone(),
            secret: Some(opened.secret.into()),
            operations_per_second: req.operations_per_second,
            owner: u64::from(req.uid),
            allow_rc4: !opened.refuse_rc4,
            machine_account: false,
        };
        // From here on as `Logon`: the credential path takes (and wipes) the secret.
        let (handle, _) = self.open_session(&mut logon, req.operations_per_second, now_tsc)?;
        Ok(VaultLogonReply {
            session_handle: handle.to_vec(),
            resealed_blob,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Identity, operation};
    use super::*;
    use crate::rng::CounterRng;
    use crate::vault::{CODE_PERMISSION_DENIED, Vault};
    use credguard_proto::abi::MEASUREMENT_LEN;
    use credguard_proto::enclave::{EnclaveMethod, Frame, LogonReply, StatusReply};
    use credguard_proto::rpc::code::{
        FAILED_PRECONDITION as CODE_FAILED_PRECONDITION, INVALID_ARGUMENT as CODE_INVALID_ARGUMENT, OK as CODE_OK,
    };
    use prost::Message;
    use zeroize::Zeroizing;

    /// The vault key the VMM would hand an image whose measurement is all `m` (any fixed function
    /// of the measurement does for these tests).
    fn key_of(m: u8) -> Zeroizing<[u8; 32]> {
        Zeroizing::new([m ^ 0x5c; 32])
    }

    fn service(measurement: u8, upgrade_from: &[u8], vault: bool) -> Service<CounterRng> {
        let identity = Identity {
            measurement: [measurement; MEASUREMENT_LEN],
            signer: [0x5a; 16],
        };
        let mut svc = Service::new(identity, 1_000_000, 0, CounterRng::starting_at(0)).unwrap();
        if vault {
            let upgrade = upgrade_from
                .iter()
                .map(|m| ([*m; MEASUREMENT_LEN], key_of(*m)))
                .collect();
            svc.set_vault(Vault::new(key_of(measurement), [measurement; MEASUREMENT_LEN], upgrade));
        }
        svc
    }

    fn frame(method: EnclaveMethod, payload: Vec<u8>) -> Frame {
        Frame {
            call_id: 1,
            method_id: method.id(),
            payload,
            ..Default::default()
        }
    }

    fn seal(svc: &mut Service<CounterRng>, uid: u32, target: &str, password: &str) -> Frame {
        let req = VaultSealRequest {
            uid,
            target: target.into(),
            user: "alice".into(),
            domain: "CORP".into(),
            realm: String::new(),
            created_unix_ms: 42,
            secret: Some(vault_seal_request::Secret::Password(password.into())),
            allow_rc4: false,
        };
        svc.dispatch(&frame(EnclaveMethod::VaultSeal, req.encode_to_vec()), 0)
    }

    fn logon(svc: &mut Service<CounterRng>, uid: u32, target: &str, blob: &[u8]) -> Frame {
        let req = VaultLogonRequest {
            uid,
            target: target.into(),
            user: "alice".into(),
            domain: "CORP".into(),
            realm: String::new(),
            created_unix_ms: 42,
            sealed_blob: blob.to_vec(),
            operations_per_second: 0,
        };
        svc.dispatch(&frame(EnclaveMethod::VaultLogon, req.encode_to_vec()), 0)
    }

    #[test]
    fn seal_then_logon_makes_a_session_and_both_are_audited() {
        let mut svc = service(1, &[], true);
        let st = svc.dispatch(&frame(EnclaveMethod::Status, Vec::new()), 0);
        assert!(StatusReply::decode(st.payload.as_slice()).unwrap().vault_ready);
        let r = seal(&mut svc, 1000, "fs", "S3cret!");
        assert_eq!(r.code, CODE_OK, "{}", r.message);
        let sealed = VaultSealReply::decode(r.payload.as_slice()).unwrap();
        assert_eq!(sealed.secret_kind, "password");
        assert!(!sealed.sealed_blob.windows(7).any(|w| w == b"S3cret!"));
        assert_eq!(svc.sessions(), 0, "sealing opens no session");
        assert_eq!(r.audit.len(), 1);
        assert_eq!(r.audit[0].operation, operation::VAULT_SEAL);
        assert_eq!(r.audit[0].target, "uid 1000: fs");

        let r = logon(&mut svc, 1000, "fs", &sealed.sealed_blob);
        assert_eq!(r.code, CODE_OK, "{}", r.message);
        let reply = VaultLogonReply::decode(r.payload.as_slice()).unwrap();
        assert_eq!(reply.session_handle.len(), 16);
        assert!(reply.resealed_blob.is_empty());
        assert_eq!(svc.sessions(), 1);
        // The session works like a Logon session: it has the password's NT hash.
        let cred = svc.credentials.get(&reply.session_handle).unwrap();
        assert_eq!(cred.nt_hash.as_deref(), Some(&*crate::credentials::nt_hash("S3cret!")));
        assert_eq!(r.audit.len(), 1);
        assert_eq!(r.audit[0].operation, operation::VAULT_LOGON);
        assert_eq!(r.audit[0].session_handle, reply.session_handle);
        assert_eq!(
            LogonReply::decode(r.payload.as_slice()).unwrap().session_handle,
            reply.session_handle
        );

        // Another uid or target: refused, audited, no session.
        for (uid, target) in [(1001, "fs"), (1000, "other")] {
            let r = logon(&mut svc, uid, target, &sealed.sealed_blob);
            assert_eq!(r.code, CODE_PERMISSION_DENIED, "{}", r.message);
            assert!(r.message.contains("does not open"), "{}", r.message);
            assert_eq!(r.audit[0].code, CODE_PERMISSION_DENIED);
        }
        // Garbage: INVALID_ARGUMENT.
        assert_eq!(logon(&mut svc, 1000, "fs", b"nonsense").code, CODE_INVALID_ARGUMENT);
        assert_eq!(svc.sessions(), 1);
    }

    #[test]
    fn no_vault_and_bad_secrets_are_refused() {
        let mut svc = service(1, &[], false);
        let r = seal(&mut svc, 1000, "fs", "pw");
        assert_eq!(r.code, CODE_FAILED_PRECONDITION);
        assert_eq!(r.message, "no vault: the VMM was started without a sealing secret");
        assert_eq!(logon(&mut svc, 1000, "fs", b"CGVT").code, CODE_FAILED_PRECONDITION);
        let mut svc = service(1, &[], true);
        assert_eq!(seal(&mut svc, 1000, "fs", "").code, CODE_INVALID_ARGUMENT);
        assert_eq!(seal(&mut svc, 1000, "", "pw").code, CODE_INVALID_ARGUMENT);
        assert_eq!(seal(&mut svc, 1000, "a\u{7}b", "pw").code, CODE_INVALID_ARGUMENT);
        let r = svc.dispatch(&frame(EnclaveMethod::VaultSeal, alloc::vec![0xff]), 0);
        assert_eq!(r.code, CODE_INVALID_ARGUMENT);
    }

    #[test]
    fn an_upgraded_image_opens_and_reseals_only_when_allowed() {
        let mut old = service(1, &[], true);
        let blob = VaultSealReply::decode(seal(&mut old, 7, "t", "pw").payload.as_slice())
            .unwrap()
            .sealed_blob;
        let mut other = service(2, &[], true);
        let r = logon(&mut other, 7, "t", &blob);
        assert_eq!(r.code, CODE_FAILED_PRECONDITION);
        assert!(r.message.contains("another enclave image"), "{}", r.message);
        let mut upgraded = service(2, &[1], true);
        let r = logon(&mut upgraded, 7, "t", &blob);
        assert_eq!(r.code, CODE_OK, "{}", r.message);
        let resealed = VaultLogonReply::decode(r.payload.as_slice()).unwrap().resealed_blob;
        assert!(!resealed.is_empty());
        // The re-sealed blob opens in the new image without the allowance.
        assert_eq!(logon(&mut other, 7, "t", &resealed).code, CODE_OK);
    }

    #[test]
    fn arbitrary_payloads_and_blobs_never_panic() {
        let mut svc = service(1, &[], true);
        let good = VaultSealReply::decode(seal(&mut svc, 7, "t", "pw").payload.as_slice())
            .unwrap()
            .sealed_blob;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3_000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let method = if round % 2 == 0 {
                EnclaveMethod::VaultSeal
            } else {
                EnclaveMethod::VaultLogon
            };
            let r = svc.dispatch(&frame(method, bytes.clone()), 0);
            assert_ne!(r.code, CODE_OK, "random bytes sealed or opened something");
            // A blob with a valid header and random or mutated content.
            let mut blob = good.clone();
            match round % 3 {
                0 => blob.truncate((next() as usize) % good.len()),
                1 => {
                    let i = (next() as usize) % good.len();
                    blob[i] ^= (next() as u8) | 1;
                }
                _ => {
                    blob.push(next() as u8);
                    blob.extend_from_slice(&bytes);
                }
            }
            let r = logon(&mut svc, 7, "t", &blob);
            assert_ne!(r.code, CODE_OK, "round {round}: a damaged blob opened");
            assert_eq!(r.audit.len(), 1);
        }
        assert_eq!(svc.sessions(), 0);
        assert_eq!(logon(&mut svc, 7, "t", &good).code, CODE_OK);
    }
}
