//! The LSA's logic, independent of gRPC: validation, ownership, and the calls to the enclave.
//!
//! `grpc.rs` is a thin adapter over this; tests drive it directly.

use std::sync::Arc;

use credguard_proto::abi;
use credguard_proto::checks::{self, CheckError};
use credguard_proto::enclave;
use credguard_proto::enctype::EnctypeRefused;
use credguard_proto::lsa;
use credguard_proto::principal::{self, LogonNames};
use credguard_proto::secret::SecretRef;
use credguard_proto::vmm_status::{self, VmmStatus};
use tracing::{info, warn};
use zeroize::Zeroize;

use crate::config::Config;
use crate::enclave_link::{EnclaveLink, LinkState};
use crate::error::LsaError;
use crate::kdcs::KdcLocator;
use crate::sessions::{Caller, LogonSession, SessionTable, now_unix_ms};

/// The answer to a secret sent in the clear to a proxy that accepts only sealed ones.
pub const PLAINTEXT_REFUSED: &str = "this proxy accepts only sealed secrets (api.allow_plaintext_secrets = false): \
     seal the secret to the enclave and send it in the `sealed` field. credguardctl seals by itself \
     when the VMM's attestation public key is installed (/etc/credguard/attestation.pub, or \
     --attestation-pub PATH); other clients: the SealedSecret construction in credguard_proto::attest \
     (client/src/sealed.rs is a reference client; Python's credguard package, clients/python, seals by \
     itself)";

/// The LSA service's core.
pub struct LsaCore {
    config: Config,
    link: EnclaveLink,
    sessions: SessionTable,
    /// The realms' KDCs (the configuration's, krb5.conf's, DNS's).
    kdcs: KdcLocator,
    /// One AS exchange at a time per session (the enclave keeps one pending): the programs of a
    /// user asking for several services at once wait for the same TGT.
    as_turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What the VMM last said about the enclave boot it runs: every field is fixed for a boot
    /// (restarts before it, protection, the attestation of it), so `Status` asks the VMM again
    /// only when the enclave reports another boot id (a new connection to the VMM's status port
    /// costs several wake-ups here, more than the rest of the call).
    vmm_status: std::sync::Mutex<Option<VmmStatus>>,
}

impl LsaCore {
    /// A core over an enclave link.
    pub fn new(config: Config, link: EnclaveLink) -> Arc<Self> {
        Arc::new(LsaCore {
            kdcs: KdcLocator::new(&config.kerberos),
            config,
            link,
            sessions: SessionTable::default(),
            as_turns: Default::default(),
            vmm_status: Default::default(),
        })
    }

    /// The turn of session `id` for an AS exchange: hold it while getting the session's TGT.
    pub fn as_turn(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.as_turns.lock().unwrap_or_else(|p| p.into_inner());
        // Turns nobody holds or waits for are dropped, so the map stays as small as the
        // exchanges in flight.
        turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        turns.entry(id.to_string()).or_default().clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the realms' KDCs are found.
    pub fn kdcs(&self) -> &KdcLocator {
        &self.kdcs
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

    /// The enclave's status and the VMM's about the same boot (the VMM's as it said it for that
    /// boot id, see `vmm_status`): if the enclave restarted between the two questions, both are
    /// asked once more.
    async fn enclave_and_vmm_status(&self) -> Result<(enclave::StatusReply, Result<VmmStatus, String>), LsaError> {
        let mut attempt = 0;
        loop {
            let enclave = self.link.service_client().status(&enclave::StatusRequest {}).await?;
            let known = lock_unpoisoned(&self.vmm_status)
                .as_ref()
                .filter(|v| !v.boot_id.is_empty() && v.boot_id == enclave.boot_id)
                .cloned();
            if let Some(vmm) = known {
                return Ok((enclave, Ok(vmm)));
            }
            let vmm = self.link.vmm_status().await;
            let same_boot = vmm.as_ref().map_or(true, |v| v.boot_id == enclave.boot_id);
            attempt += 1;
            if same_boot || attempt == 2 {
                if let (Ok(v), true) = (vmm.as_ref(), same_boot) {
                    *lock_unpoisoned(&self.vmm_status) = Some(v.clone());
                }
                return Ok((enclave, vmm));
            }
        }
    }

    /// `Logon`. The secret in `req` is wiped before this returns, whatever the outcome.
    pub async fn logon(&self, caller: Caller, mut req: lsa::LogonRequest) -> Result<lsa::LogonReply, LsaError> {
        // The KDC is the proxy's business; the rest, secret included, moves into the enclave's
        // message (no copy is left behind), which is wiped whatever the outcome. The transport
        // wipes the encoded request once written to the enclave.
        let kdc = std::mem::take(&mut req.kdc);
        let machine_account = req.machine_account;
        let make_default = !req.keep_default && !machine_account;
        if machine_account && caller.owner().0 != 0 {
            req.secret.zeroize();
            return Err(LsaError::PermissionDenied(
                "only root registers a realm's machine account (FAST armor)".into(),
            ));
        }
        let mut enclave_req = enclave::LogonRequest::from(req);
        enclave_req.machine_account = machine_account;
        let result = self.logon_inner(caller, &mut enclave_req, kdc, make_default).await;
        enclave_req.secret.zeroize();
        result
    }

    async fn logon_inner(
        &self,
        caller: Caller,
        req: &mut enclave::LogonRequest,
        kdc: String,
        make_default: bool,
    ) -> Result<lsa::LogonReply, LsaError> {
        let sealed = matches!(req.secret, None | Some(enclave::logon_request::Secret::Sealed(_)));
        self.check_plaintext(sealed)?;
        checks::credential_names(&req.user, &req.domain, &req.realm)?;
        let names = self.logon_names(req)?;
        if !kdc.is_empty() {
            check_host_port(&kdc)?;
            crate::kerberos::check_logon_kdc(self, caller, &names.realm, &kdc).await?;
        }
        let allow_rc4 = self.config.kerberos.allow_rc4;
        let kind = check_secret(req.secret.as_ref().map(SecretRef::from), &req.realm, allow_rc4)?;
        req.operations_per_second = self.config.limits.operations_per_second_per_session;
        req.owner = caller.owner().0;
        req.allow_rc4 = allow_rc4;
        let ready = self
            .sessions
            .check_limit(caller, self.config.limits.sessions_per_uid)
            .and_then(|()| self.boot_id());
        let boot_id = ready?;
        let reply = self.link.client(caller).logon(req).await?;
        if reply.session_handle.len() != checks::SESSION_HANDLE_LEN {
            return Err(LsaError::Internal(
                "the enclave returned a malformed session handle".into(),
            ));
        }
        let session_id = hex::encode(&reply.session_handle);
        info!(%caller, session = %session_id, user = %names.user, domain = %names.domain, realm = %names.realm, kind, "logon");
        self.sessions.insert(
            LogonSession {
                session_id: session_id.clone(),
                handle: reply.session_handle,
                owner: caller,
                user: names.user,
                domain: names.domain,
                realm: names.realm,
                kdc,
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
                user_sid: String::new(),
            },
            make_default,
        );
        Ok(lsa::LogonReply { session_id })
    }

    /// The names of a logon as the enclave will read them (`CORP\alice`, `alice@corp.test`: see
    /// `credguard_proto::principal`), after giving the enclave the realm of a domain-qualified
    /// user from the realm table. The session is recorded, and its KDCs picked, by these names.
    fn logon_names(&self, req: &mut enclave::LogonRequest) -> Result<LogonNames, LsaError> {
        req.default_realm = match req.user.split_once('\\') {
            Some((domain, _)) if req.realm.is_empty() => self.config.kerberos.realm_of_domain(domain),
            _ => String::new(),
        };
        Ok(principal::logon_names(
            &req.user,
            &req.domain,
            &req.realm,
            &req.default_realm,
        )?)
    }

    /// `GetSealingNonce`: a single-use nonce the enclave issues for the caller's next sealed secret.
    pub async fn sealing_nonce(&self, caller: Caller) -> Result<lsa::GetSealingNonceReply, LsaError> {
        let boot_id = self.boot_id()?;
        let req = enclave::IssueSealingNonceRequest {
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
            let req = enclave::LogoffRequest {
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
                is_default: self.sessions.default_of(s.owner).as_deref() == Some(s.session_id.as_str()),
                session_id: s.session_id,
                user: s.user,
                domain: s.domain,
                realm: s.realm,
                uid: s.owner.uid(),
                created_unix_ms: s.created_unix_ms,
                secret_kind: s.secret_kind.into(),
                sealed: s.sealed,
                user_sid: s.user_sid,
            })
            .collect();
        lsa::ListSessionsReply { sessions }
    }

    /// `SetDefaultSession`.
    pub fn set_default_session(&self, caller: Caller, id: &str) -> Result<(), LsaError> {
        check_session_id(id)?;
        self.sessions.set_default(caller, id)?;
        info!(%caller, session = %id, "default session");
        Ok(())
    }

    /// The session `id` of `caller`, if it is usable now.
    pub fn session(&self, caller: Caller, id: &str) -> Result<LogonSession, LsaError> {
        check_session_id(id)?;
        let boot_id = self.boot_id()?;
        self.sessions.get(caller, id, &boot_id)
    }

    /// Records that session `id`'s account lives in `realm` (see [`SessionTable::move_to_realm`]).
    pub(crate) fn move_session_to_realm(&self, id: &str, realm: &str) {
        self.sessions.move_to_realm(id, realm);
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

    /// Registers a session the enclave made (the vault's `LogonSaved`); like a `Logon`, it becomes
    /// the owner's default.
    pub(crate) fn register_session(&self, s: LogonSession) {
        self.sessions.insert(s, true);
    }

    /// Records the user's SID the TGT of session `id` carried.
    pub(crate) fn set_user_sid(&self, id: &str, sid: &str) {
        self.sessions.set_user_sid(id, sid);
    }

    /// Forgets sessions held by earlier boots of the enclave; returns how many.
    pub fn drop_stale_sessions(&self) -> usize {
        match self.boot_id() {
            Ok(b) => self.sessions.drop_other_boots(&b),
            Err(_) => 0,
        }
    }
}

/// The answer to an rc4-hmac key while the configuration refuses rc4-hmac.
const RC4_REFUSED: &str = "rc4-hmac keys are refused by configuration (kerberos.allow_rc4 = false)";

/// Checks the secret of a logon or a vault save as the enclave will (see
/// `credguard_proto::checks`), for an early, clear error; returns the kind reported for the session
/// ("password", "nt_hash", "key" or "sealed": the proxy cannot see what a sealed secret holds).
pub(crate) fn check_secret(
    secret: Option<SecretRef<'_>>,
    realm: &str,
    allow_rc4: bool,
) -> Result<&'static str, LsaError> {
    checks::secret(secret, realm, allow_rc4).map_err(|e| match e {
        // Here the proxy's configuration refused it, not the enclave's policy.
        CheckError::Enctype(EnctypeRefused::Rc4NotAllowed) => LsaError::FailedPrecondition(RC4_REFUSED.into()),
        e => e.into(),
    })
}

pub(crate) fn check_host_port(v: &str) -> Result<(), LsaError> {
    let bad = || LsaError::InvalidArgument(format!("kdc {v:?} is not host:port"));
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.len() > checks::MAX_NAME_LEN || port.parse::<u16>().map_or(true, |p| p == 0) {
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

/// What the enclave says of itself: its image, boot, sealing key, policy and build.
fn fill_from_enclave(reply: &mut lsa::StatusReply, s: enclave::StatusReply) {
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

/// A poisoned lock's value is still good here (single assignments).
fn lock_unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(field: &'static str, v: &str, may_be_empty: bool) -> Result<(), LsaError> {
        Ok(checks::name(field, v, may_be_empty)?)
    }

    /// The proxy's check of a key, through the shared check of a logon's secret.
    fn check_key(k: &enclave::Key, allow_rc4: bool, realm: &str) -> Result<&'static str, LsaError> {
        check_secret(Some(SecretRef::Key(k)), realm, allow_rc4)
    }

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
        let k = |enctype, n| enclave::Key {
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
