//! The LSA's logic, independent of gRPC: validation, ownership, and the calls to the enclave.
//!
//! `grpc.rs` is a thin adapter over this; tests drive it directly.

use std::sync::Arc;

use credguard_proto::abi;
use credguard_proto::enclave as wire;
use credguard_proto::lsa;
use credguard_proto::vmm_status::{self, VmmStatus};
use tracing::{info, warn};
use zeroize::Zeroize;

use crate::config::Config;
use crate::enclave_link::{EnclaveLink, LinkState};
use crate::error::LsaError;
use crate::sessions::{Caller, LogonSession, SessionTable, now_unix_ms};

/// Longest user, domain or realm name accepted.
pub const MAX_NAME_LEN: usize = 256;
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The answer to a secret sent in the clear to a proxy that accepts only sealed ones.
pub const PLAINTEXT_REFUSED: &str = "this proxy accepts only sealed secrets (api.allow_plaintext_secrets = false): \
     seal the secret to the enclave and send it in the `sealed` field. credguardctl seals by itself \
     when the VMM's attestation public key is installed (/etc/credguard/attestation.pub, or \
     --attestation-pub PATH); other clients: the SealedSecret construction in credguard_proto::attest \
     (lsa-proxy/src/sealed.rs is a reference client)";

/// The LSA service's core.
pub struct LsaCore {
    config: Config,
    link: EnclaveLink,
    sessions: SessionTable,
}

impl LsaCore {
    /// A core over an enclave link.
    pub fn new(config: Config, link: EnclaveLink) -> Arc<Self> {
        Arc::new(LsaCore {
            config,
            link,
            sessions: SessionTable::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The enclave link.
    pub fn link(&self) -> &EnclaveLink {
        &self.link
    }

    /// Refuses requests larger than the configured limit.
    pub fn check_size(&self, encoded_len: usize) -> Result<(), LsaError> {
        let limit = self.config.limits.max_request_bytes;
        if encoded_len > limit {
            return Err(LsaError::ResourceExhausted(format!(
                "request of {encoded_len} bytes exceeds the limit of {limit} bytes"
            )));
        }
        Ok(())
    }

    /// Refuses a secret in the clear (`sealed` false) unless `api.allow_plaintext_secrets`.
    pub(crate) fn check_plaintext(&self, sealed: bool) -> Result<(), LsaError> {
        if sealed || self.config.api.allow_plaintext_secrets {
            return Ok(());
        }
        Err(LsaError::FailedPrecondition(PLAINTEXT_REFUSED.into()))
    }

    /// The current boot of the enclave, or UNAVAILABLE.
    fn boot_id(&self) -> Result<Vec<u8>, LsaError> {
        match self.link.state() {
            LinkState::Ready(info) => Ok(info.boot_id),
            LinkState::Connecting { last_error } => Err(LsaError::Unavailable(if last_error.is_empty() {
                "the enclave is not reachable yet; retry shortly".into()
            } else {
                format!("the enclave is not reachable ({last_error}); retry later")
            })),
        }
    }

    /// `Status`.
    pub async fn status(&self, caller: Caller) -> Result<lsa::StatusReply, LsaError> {
        let sessions = self.sessions.count(caller) as u64;
        let state = self.link.state();
        let mut reply = lsa::StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            state: state.name().into(),
            sessions,
            proxy_protection: crate::sandbox::protections(),
            ..Default::default()
        };
        if let LinkState::Ready(_) = state {
            match self.enclave_and_vmm_status().await {
                Ok((enclave, vmm)) => {
                    fill_from_enclave(&mut reply, enclave);
                    match vmm {
                        Ok(vmm) => fill_from_vmm(&mut reply, vmm),
                        Err(e) => {
                            warn!(error = %e, "the VMM did not report its status");
                            reply.protection = vmm_status::describe_protection(0, 0, 0);
                        }
                    }
                }
                // Status reports a down enclave as a state, not as an error.
                Err(_) => reply.state = self.link.state().name().into(),
            }
        }
        Ok(reply)
    }

    /// The enclave's status and the VMM's about the same boot: if the enclave restarted between
    /// the two questions, both are asked once more.
    async fn enclave_and_vmm_status(&self) -> Result<(wire::StatusReply, Result<VmmStatus, String>), LsaError> {
        let mut attempt = 0;
        loop {
            let enclave = self.link.service_client().status(&wire::StatusRequest {}).await?;
            let vmm = self.link.vmm_status().await;
            let same_boot = vmm.as_ref().map_or(true, |v| v.boot_id == enclave.boot_id);
            attempt += 1;
            if same_boot || attempt == 2 {
                return Ok((enclave, vmm));
            }
        }
    }

    /// `Logon`. The secret in `req` is wiped before this returns, whatever the outcome.
    pub async fn logon(&self, caller: Caller, mut req: lsa::LogonRequest) -> Result<lsa::LogonReply, LsaError> {
        let result = self.logon_inner(caller, &mut req).await;
        wipe_logon(&mut req);
        result
    }

    async fn logon_inner(&self, caller: Caller, req: &mut lsa::LogonRequest) -> Result<lsa::LogonReply, LsaError> {
        let sealed = matches!(req.secret, None | Some(lsa::logon_request::Secret::Sealed(_)));
        self.check_plaintext(sealed)?;
        check_name("user", &req.user, false)?;
        check_name("domain", &req.domain, true)?;
        check_name("realm", &req.realm, true)?;
        if !req.kdc.is_empty() {
            check_host_port(&req.kdc)?;
            crate::kerberos::check_logon_kdc(self, caller, &req.realm, &req.kdc)?;
        }
        let (secret, kind) = wire_secret(req.secret.take(), self.config.kerberos.allow_rc4, &req.realm)?;
        let wire_req = wire::LogonRequest {
            user: req.user.clone(),
            domain: req.domain.clone(),
            realm: req.realm.clone(),
            secret: Some(secret),
            operations_per_second: self.config.limits.operations_per_second_per_session,
            owner: caller.owner().0,
            allow_rc4: self.config.kerberos.allow_rc4,
        };
        let ready = self
            .sessions
            .check_limit(caller, self.config.limits.sessions_per_uid)
            .and_then(|()| self.boot_id());
        let boot_id = match ready {
            Ok(b) => b,
            Err(e) => {
                wipe_wire_logon(wire_req);
                return Err(e);
            }
        };
        // The transport wipes the encoded request once written to the enclave; this wipes the
        // decoded one.
        let result = self.link.client(caller).logon(&wire_req).await;
        wipe_wire_logon(wire_req);
        let reply = result?;
        if reply.session_handle.len() != 16 {
            return Err(LsaError::Internal(
                "the enclave returned a malformed session handle".into(),
            ));
        }
        let session_id = hex::encode(&reply.session_handle);
        info!(%caller, session = %session_id, user = %req.user, domain = %req.domain, realm = %req.realm, kind, "logon");
        self.sessions.insert(LogonSession {
            session_id: session_id.clone(),
            handle: reply.session_handle,
            owner: caller,
            user: req.user.clone(),
            domain: req.domain.clone(),
            realm: req.realm.clone(),
            kdc: req.kdc.clone(),
            // For a sealed logon only the enclave knows what was inside.
            secret_kind: match (kind, reply.secret_kind.as_str()) {
                ("sealed", "password") => "password",
                ("sealed", "nt_hash") => "nt_hash",
                ("sealed", "key") => "key",
                (kind, _) => kind,
            },
            sealed: kind == "sealed",
            created_unix_ms: now_unix_ms(),
            boot_id,
        });
        Ok(lsa::LogonReply { session_id })
    }

    /// `GetSealingNonce`: a single-use nonce the enclave issues for the caller's next sealed secret.
    pub async fn sealing_nonce(&self, caller: Caller) -> Result<lsa::GetSealingNonceReply, LsaError> {
        let boot_id = self.boot_id()?;
        let req = wire::IssueSealingNonceRequest {
            owner: caller.owner().0,
        };
        let r = self.link.client(caller).issue_sealing_nonce(&req).await?;
        Ok(lsa::GetSealingNonceReply {
            nonce: r.nonce,
            boot_id,
        })
    }

    /// `Logoff`.
    pub async fn logoff(&self, caller: Caller, req: lsa::LogoffRequest) -> Result<lsa::LogoffReply, LsaError> {
        check_session_id(&req.session_id)?;
        let s = self.sessions.remove(caller, &req.session_id)?;
        info!(%caller, session = %s.session_id, "logoff");
        // The session is gone from the table either way; if the enclave is down or restarted, its
        // secrets are gone with it already.
        if self.boot_id().ok().as_deref() == Some(s.boot_id.as_slice()) {
            let req = wire::LogoffRequest {
                session_handle: s.handle,
            };
            match self.link.service_client().logoff(&req).await {
                Ok(_) | Err(LsaError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(lsa::LogoffReply {})
    }

    /// `ListSessions`.
    pub fn list_sessions(&self, caller: Caller) -> lsa::ListSessionsReply {
        let sessions = self
            .sessions
            .list(caller)
            .into_iter()
            .map(|s| lsa::SessionInfo {
                session_id: s.session_id,
                user: s.user,
                domain: s.domain,
                realm: s.realm,
                uid: s.owner.uid(),
                created_unix_ms: s.created_unix_ms,
                secret_kind: s.secret_kind.into(),
                sealed: s.sealed,
            })
            .collect();
        lsa::ListSessionsReply { sessions }
    }

    /// The session `id` of `caller`, if it is usable now.
    pub fn session(&self, caller: Caller, id: &str) -> Result<LogonSession, LsaError> {
        check_session_id(id)?;
        let boot_id = self.boot_id()?;
        self.sessions.get(caller, id, &boot_id)
    }

    /// Fails with RESOURCE_EXHAUSTED when `caller` has as many sessions as allowed (for the
    /// vault's `LogonSaved`, which registers sessions as `Logon` does).
    pub(crate) fn check_session_limit(&self, caller: Caller) -> Result<(), LsaError> {
        self.sessions.check_limit(caller, self.config.limits.sessions_per_uid)
    }

    /// The enclave boot that new sessions belong to, or UNAVAILABLE.
    pub(crate) fn current_boot_id(&self) -> Result<Vec<u8>, LsaError> {
        self.boot_id()
    }

    /// Registers a session the enclave made (the vault's `LogonSaved`).
    pub(crate) fn register_session(&self, s: LogonSession) {
        self.sessions.insert(s);
    }

    /// Forgets sessions held by earlier boots of the enclave; returns how many.
    pub fn drop_stale_sessions(&self) -> usize {
        match self.boot_id() {
            Ok(b) => self.sessions.drop_other_boots(&b),
            Err(_) => 0,
        }
    }
}

/// Lengths of the parts of a sealed secret.
const SEALED_KEY_LEN: usize = 32;
const SEALED_NONCE_LEN: usize = 12;
/// Longest sealed ciphertext: the longest plaintext secret plus protobuf framing and the tag.
const MAX_SEALED_LEN: usize = MAX_PASSWORD_LEN + 64;

/// Checks a secret of the public API and converts it to the enclave's message; returns it with
/// the kind reported for the session ("password", "nt_hash", "key" or "sealed": the proxy cannot
/// see what a sealed secret holds). The secret is wiped on refusal.
pub(crate) fn wire_secret(
    secret: Option<lsa::logon_request::Secret>,
    allow_rc4: bool,
    realm: &str,
) -> Result<(wire::logon_request::Secret, &'static str), LsaError> {
    Ok(match secret {
        None => {
            return Err(LsaError::InvalidArgument(
                "one secret is required: password, nt_hash, key or sealed".into(),
            ));
        }
        Some(lsa::logon_request::Secret::Password(p)) => {
            let bad = if p.is_empty() {
                Some("password must not be empty".to_string())
            } else if p.len() > MAX_PASSWORD_LEN {
                Some(format!("password is longer than {MAX_PASSWORD_LEN} bytes"))
            } else {
                None
            };
            let s = wire::logon_request::Secret::Password(p);
            if let Some(msg) = bad {
                wipe_secret(s);
                return Err(LsaError::InvalidArgument(msg));
            }
            (s, "password")
        }
        Some(lsa::logon_request::Secret::NtHash(h)) => {
            let ok = h.len() == 16;
            let s = wire::logon_request::Secret::NtHash(h);
            if !ok {
                wipe_secret(s);
                return Err(LsaError::InvalidArgument("nt_hash must be exactly 16 bytes".into()));
            }
            (s, "nt_hash")
        }
        Some(lsa::logon_request::Secret::Key(k)) => {
            let check = check_key(&k, allow_rc4, realm);
            let s = wire::logon_request::Secret::Key(wire::Key {
                enctype: k.enctype,
                value: k.value,
            });
            if let Err(e) = check {
                wipe_secret(s);
                return Err(e);
            }
            (s, "key")
        }
        Some(lsa::logon_request::Secret::Sealed(sealed)) => {
            let bad = if sealed.ephemeral_public_key.len() != SEALED_KEY_LEN {
                Some("sealed.ephemeral_public_key must be 32 bytes")
            } else if sealed.enclave_public_key.len() != SEALED_KEY_LEN {
                Some("sealed.enclave_public_key must be 32 bytes")
            } else if sealed.nonce.len() != SEALED_NONCE_LEN {
                Some("sealed.nonce must be 12 bytes")
            } else if sealed.sealing_nonce.len() != credguard_proto::attest::SEALING_NONCE_LEN {
                Some("sealed.sealing_nonce must be the 16 bytes GetSealingNonce returned")
            } else if sealed.ciphertext.len() < 16 || sealed.ciphertext.len() > MAX_SEALED_LEN {
                Some("sealed.ciphertext must be 16 to 1088 bytes")
            } else {
                None
            };
            if let Some(msg) = bad {
                return Err(LsaError::InvalidArgument(msg.into()));
            }
            (
                wire::logon_request::Secret::Sealed(wire::SealedSecret {
                    ephemeral_public_key: sealed.ephemeral_public_key,
                    nonce: sealed.nonce,
                    ciphertext: sealed.ciphertext,
                    enclave_public_key: sealed.enclave_public_key,
                    sealing_nonce: sealed.sealing_nonce,
                }),
                "sealed",
            )
        }
    })
}

fn wipe_secret(s: wire::logon_request::Secret) {
    match s {
        wire::logon_request::Secret::Password(mut p) => p.zeroize(),
        wire::logon_request::Secret::NtHash(mut h) => h.zeroize(),
        wire::logon_request::Secret::Key(mut k) => k.value.zeroize(),
        // Ciphertext the proxy cannot read: nothing to wipe.
        wire::logon_request::Secret::Sealed(_) => {}
    }
}

fn wipe_wire_logon(mut r: wire::LogonRequest) {
    if let Some(s) = r.secret.take() {
        wipe_secret(s);
    }
}

/// Wipes the secret of a logon request.
pub(crate) fn wipe_logon(r: &mut lsa::LogonRequest) {
    match r.secret.take() {
        Some(lsa::logon_request::Secret::Password(mut p)) => p.zeroize(),
        Some(lsa::logon_request::Secret::NtHash(mut h)) => h.zeroize(),
        Some(lsa::logon_request::Secret::Key(mut k)) => k.value.zeroize(),
        Some(lsa::logon_request::Secret::Sealed(_)) | None => {}
    }
}

pub(crate) fn check_name(field: &str, v: &str, may_be_empty: bool) -> Result<(), LsaError> {
    if v.is_empty() && !may_be_empty {
        return Err(LsaError::InvalidArgument(format!("{field} must not be empty")));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(LsaError::InvalidArgument(format!(
            "{field} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(LsaError::InvalidArgument(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

pub(crate) fn check_host_port(v: &str) -> Result<(), LsaError> {
    let bad = || LsaError::InvalidArgument(format!("kdc {v:?} is not host:port"));
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.len() > MAX_NAME_LEN || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

fn check_session_id(id: &str) -> Result<(), LsaError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LsaError::InvalidArgument(
            "session_id must be the 32 hex digits Logon returned".into(),
        ));
    }
    Ok(())
}

/// Kerberos enctypes: (number, name, key length).
const ENCTYPES: &[(i32, &str, usize)] = &[
    (17, "aes128-cts-hmac-sha1-96", 16),
    (18, "aes256-cts-hmac-sha1-96", 32),
    (19, "aes128-cts-hmac-sha256-128", 16),
    (20, "aes256-cts-hmac-sha384-192", 32),
    (23, "rc4-hmac", 16),
];

fn check_key(k: &lsa::Key, allow_rc4: bool, realm: &str) -> Result<(), LsaError> {
    if matches!(k.enctype, 1..=3) {
        return Err(LsaError::FailedPrecondition(format!(
            "enctype {} is DES: credguard never uses DES keys (single DES is broken)",
            k.enctype
        )));
    }
    let Some(&(_, name, len)) = ENCTYPES.iter().find(|e| e.0 == k.enctype) else {
        return Err(LsaError::InvalidArgument(format!(
            "unknown or unsupported enctype {}",
            k.enctype
        )));
    };
    if k.enctype == 23 && !allow_rc4 {
        return Err(LsaError::FailedPrecondition(
            "rc4-hmac keys are refused by configuration (kerberos.allow_rc4 = false)".into(),
        ));
    }
    if k.value.len() != len {
        return Err(LsaError::InvalidArgument(format!(
            "a {name} key is {len} bytes, not {}",
            k.value.len()
        )));
    }
    if realm.is_empty() {
        return Err(LsaError::InvalidArgument("a Kerberos key needs a realm".into()));
    }
    Ok(())
}

/// What the enclave says of itself: its image, boot, sealing key, policy and build.
fn fill_from_enclave(reply: &mut lsa::StatusReply, s: wire::StatusReply) {
    reply.measurement = hex::encode(&s.measurement);
    reply.signer = s.signer;
    reply.uptime_ms = s.uptime_ms;
    reply.enclave_version = s.version;
    reply.enclave_public_key = s.sealing_public_key;
    reply.boot_id = s.boot_id;
    reply.vault_ready = s.vault_ready;
    reply.policy_bits = s.policy_bits;
    reply.enclave_flags = s.enclave_flags;
    reply.rc4_allowed = s.policy_bits & abi::policy::ALLOW_RC4 != 0;
    reply.test_image = s.enclave_flags & abi::enclave_flags::TEST_BUILD != 0;
}

/// What only the VMM knows: protection, restarts, and its attestation signature.
fn fill_from_vmm(reply: &mut lsa::StatusReply, v: VmmStatus) {
    reply.protection = vmm_status::describe_protection(v.protection_bits, v.host_mapped_bytes, v.ram_size);
    reply.attestation_signature = v.attestation_signature;
    reply.enclave_restarts = v.restarts;
    reply.enclave_restart_reasons = v.restart_reasons;
    reply.protection_bits = v.protection_bits;
    reply.host_mapped_bytes = v.host_mapped_bytes;
    reply.ram_size = v.ram_size;
    reply.memory_hidden = v.protection_bits & vmm_status::protection::HIDDEN != 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_checked() {
        assert!(check_name("user", "", false).is_err());
        assert!(check_name("user", "a\nb", false).is_err());
        assert!(check_name("user", &"x".repeat(300), false).is_err());
        assert!(check_name("domain", "", true).is_ok());
        assert!(check_session_id("00112233445566778899aabbccddeeff").is_ok());
        assert!(check_session_id("xyz").is_err());
        assert!(check_host_port("kdc.test:88").is_ok());
        assert!(check_host_port("kdc.test").is_err());
        assert!(check_host_port("kdc.test:0").is_err());
        assert!(check_host_port(":88").is_err());
    }

    #[test]
    fn keys_are_checked() {
        let k = |enctype, n| lsa::Key {
            enctype,
            value: vec![0; n],
        };
        assert!(matches!(
            check_key(&k(3, 8), true, "R"),
            Err(LsaError::FailedPrecondition(_))
        ));
        assert!(matches!(
            check_key(&k(23, 16), false, "R"),
            Err(LsaError::FailedPrecondition(_))
        ));
        assert!(check_key(&k(23, 16), true, "R").is_ok());
        assert!(check_key(&k(18, 32), false, "R").is_ok());
        assert!(matches!(
            check_key(&k(18, 16), false, "R"),
            Err(LsaError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_key(&k(99, 16), false, "R"),
            Err(LsaError::InvalidArgument(_))
        ));
        assert!(matches!(
            check_key(&k(18, 32), false, ""),
            Err(LsaError::InvalidArgument(_))
        ));
    }
}
