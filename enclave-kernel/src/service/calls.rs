//! The methods of the enclave service (`EnclaveServer`, generated from `enclave.proto`): each gets
//! its request decoded once by the generated dispatcher. The ones that put a secret to work go
//! through [`Service::secret_call`]: the rate limit first, then the call, then its audit record.

use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::attest::{Owner, SealPurpose, SealedNames};
use credguard_proto::enclave::{
    AuditRecord, EnclaveServer, IssueSealingNonceReply, IssueSealingNonceRequest, KerberosAsReply, KerberosAsRequest,
    KerberosChangePasswordReply, KerberosChangePasswordRequest, KerberosTgsReply, KerberosTgsRequest,
    KerberosUserSidReply, KerberosUserSidRequest, KerberosVerifyApRepReply, KerberosVerifyApRepRequest,
    LegacyAuthenticateReply, LegacyAuthenticateRequest, LegacyProtocol, LogoffReply, LogoffRequest, LogonReply,
    LogonRequest, NtlmAuthenticateReply, NtlmAuthenticateRequest, NtlmNegotiateReply, NtlmNegotiateRequest,
    SealedSecret, StatusReply, StatusRequest, VaultLogonReply, VaultLogonRequest, VaultSealReply, VaultSealRequest,
    logon_request, sealed_logon_secret,
};
use credguard_proto::rpc::{RpcError, code};
use rand_core::TryCryptoRng;

use super::{CallContext, ENCLAVE_FLAGS, Service};
use crate::credentials::{LogonCredential, SESSION_HANDLE_LEN, SessionHandle, credential_from};
use crate::ratelimit::CredentialId;

/// Longest prefix of an SPN (or other target) copied into an audit record.
const MAX_AUDITED_TARGET: usize = 256;

/// Audit record operation names (`AuditRecord.operation`).
pub mod operation {
    /// A credential taken in (`Logon`).
    pub const LOGON: &str = "logon";
    /// An NTLMv2 response computed (`NtlmAuthenticate`).
    pub const NTLM_AUTHENTICATE: &str = "ntlm_authenticate";
    /// A step of an AS exchange with the long-term key (`KerberosAs`).
    pub const KERBEROS_AS: &str = "kerberos_as";
    /// A step of an expired password's change (`KerberosChangePassword`).
    pub const KERBEROS_CHANGE_PASSWORD: &str = "kerberos_change_password";
    /// A step of a TGS exchange with the TGT (`KerberosTgs`).
    pub const KERBEROS_TGS: &str = "kerberos_tgs";
    /// A step of the user-to-user exchange for the user's SID with the TGT (`KerberosUserSid`).
    pub const KERBEROS_USER_SID: &str = "kerberos_user_sid";
    /// A legacy protocol's response asked for, and refused (`LegacyAuthenticate`).
    pub const LEGACY_REFUSED: &str = "legacy_refused";
    /// A credential sealed for the vault (`VaultSeal`).
    pub const VAULT_SEAL: &str = "vault_seal";
    /// A vault credential opened into a session (`VaultLogon`).
    pub const VAULT_LOGON: &str = "vault_logon";
}

/// A call that uses (or tries to use) a session's secret, as known before it runs.
pub(super) struct SecretUse {
    pub(super) operation: &'static str,
    pub(super) session: Vec<u8>,
    pub(super) target: String,
    /// Whether it costs one token of the rate limits: the calls that put the secret to work on
    /// input the caller chose (one per NTLM authenticate, per AS or TGS exchange, per legacy
    /// attempt), not the later steps of an exchange already paid for.
    pub(super) charged: bool,
}

impl<R: TryCryptoRng> Service<R> {
    /// Runs `call` as the use `u` of a secret: takes a token from the rate limits of the session's
    /// owner and credential if it costs one (refusing the call without one), and records one audit
    /// record of the outcome in `ctx`.
    pub(super) fn secret_call<T>(
        &mut self,
        ctx: &mut CallContext,
        u: SecretUse,
        call: impl FnOnce(&mut Self) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let result = match self.charge(&u, ctx.now_tsc) {
            Ok(()) => call(self),
            Err(e) => Err(e),
        };
        ctx.audit.push(AuditRecord {
            operation: String::from(u.operation),
            session_handle: u.session,
            target: u.target,
            code: result.as_ref().map_or_else(|e| e.code, |_| code::OK),
            enclave_time_ms: self.enclave_time_ms(ctx.now_tsc),
        });
        result
    }

    /// Takes a token from the rate limits of the session's owner and credential if the call costs
    /// one. Unknown sessions cost nothing: the call itself will fail with NOT_FOUND.
    fn charge(&mut self, u: &SecretUse, now_tsc: u64) -> Result<(), RpcError> {
        if !u.charged {
            return Ok(());
        }
        match self.credentials.get(&u.session) {
            Some(c) => self
                .limits
                .try_acquire(c.owner, &c.id, now_tsc)
                .map_err(|e| RpcError::new(code::RESOURCE_EXHAUSTED, e.message())),
            None => Ok(()),
        }
    }

    /// Makes a session of `req`'s plain secret (taking it out of `req`, wiped on every path) on
    /// the rate limits of its owner and credential (new ones at `asked_rate`); returns its handle
    /// and the kind of secret. What `Logon` and `VaultLogon` share.
    pub(super) fn open_session(
        &mut self,
        req: &mut LogonRequest,
        asked_rate: u32,
        now_tsc: u64,
    ) -> Result<(SessionHandle, &'static str), RpcError> {
        let mut cred = credential_from(req, self.boot_facts.allows_rc4())?;
        cred.id = self.fingerprint(&cred);
        let mut handle = [0u8; SESSION_HANDLE_LEN];
        self.rng
            .try_fill_bytes(&mut handle)
            .map_err(|_| RpcError::new(code::INTERNAL, "the enclave's random source failed"))?;
        self.limits
            .open(cred.owner, cred.id, asked_rate, self.tsc_khz, now_tsc)
            .map_err(|_| {
                RpcError::new(
                    code::RESOURCE_EXHAUSTED,
                    "the enclave tracks as many rate limits in use as it can: retry in a second",
                )
            })?;
        let kind = cred.kind;
        self.credentials.insert(handle, cred)?;
        Ok((handle, kind))
    }

    /// The credential's fingerprint: HMAC-SHA256 under this boot's key of its names and secret,
    /// so that sessions of one credential share a rate limit whoever opens them, and nobody
    /// without the secret can spend that budget.
    fn fingerprint(&self, cred: &LogonCredential) -> CredentialId {
        use hmac::{KeyInit, Mac};
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.fingerprint_key[..]) else {
            return [0; 16];
        };
        let mut part = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u32).to_le_bytes());
            mac.update(bytes);
        };
        part(b"credguard credential");
        part(cred.user.to_lowercase().as_bytes());
        part(cred.domain.to_lowercase().as_bytes());
        part(cred.realm.to_uppercase().as_bytes());
        if let Some(h) = &cred.nt_hash {
            part(&h[..]);
        }
        for k in &cred.keys {
            part(&k.enctype.to_le_bytes());
            part(&k.value);
        }
        let tag = mac.finalize().into_bytes();
        let mut id = [0u8; 16];
        id.copy_from_slice(&tag[..16]);
        id
    }

    fn status_reply(&self, now_tsc: u64) -> StatusReply {
        let facts = self.boot_facts;
        StatusReply {
            version: String::from(crate::VERSION),
            measurement: self.identity.measurement.to_vec(),
            uptime_ms: self.enclave_time_ms(now_tsc),
            requests_served: self.requests_served,
            boot_id: self.boot_id.to_vec(),
            signer: hex(&self.identity.signer),
            sessions: self.credentials.len() as u64,
            sealing_public_key: self.sealing.public_key().to_vec(),
            vault_ready: self.vault.is_some(),
            policy_bits: facts.policy_bits,
            enclave_flags: ENCLAVE_FLAGS,
        }
    }

    /// `Logon` after its audit record is set up: opens a sealed secret (the client's rc4-hmac
    /// choice then counts, not the proxy's), then makes the session.
    fn logon_inner(&mut self, mut req: LogonRequest, now_tsc: u64) -> Result<LogonReply, RpcError> {
        let asked_rate = req.operations_per_second;
        if let Some(logon_request::Secret::Sealed(sealed)) = &req.secret {
            let names = SealedNames {
                user: &req.user,
                domain: &req.domain,
                realm: &req.realm,
                target: "",
            };
            let opened = self.open_sealed_secret(sealed, SealPurpose::Logon, Owner(req.owner), &names)?;
            req.allow_rc4 = !opened.refuse_rc4;
            req.secret = Some(opened.secret.into());
        }
        let machine = req.machine_account;
        if machine {
            check_machine_account(&req)?;
        }
        let (handle, secret_kind) = self.open_session(&mut req, asked_rate, now_tsc)?;
        if machine && let Some(cred) = self.credentials.get(&handle) {
            let realm = cred.realm.clone();
            self.kerberos.set_machine_account(&realm, handle);
        }
        Ok(LogonReply {
            session_handle: handle.to_vec(),
            secret_kind: String::from(secret_kind),
        })
    }

    /// The audit target of a Kerberos AS exchange: the realm's krbtgt.
    /// Opens the new password of a password change, sealed by `session`'s owner for its names.
    fn open_new_password(
        &mut self,
        session: &[u8],
        sealed: &SealedSecret,
    ) -> Result<zeroize::Zeroizing<String>, RpcError> {
        let Some(cred) = self.credentials.get(session) else {
            return Err(RpcError::new(code::NOT_FOUND, "no such session in this enclave"));
        };
        let (owner, user, domain, realm) = (cred.owner, cred.user.clone(), cred.domain.clone(), cred.realm.clone());
        let names = SealedNames {
            user: &user,
            domain: &domain,
            realm: &realm,
            target: "",
        };
        let opened = self.open_sealed_secret(sealed, SealPurpose::PasswordChange, owner, &names)?;
        match opened.secret {
            sealed_logon_secret::Secret::Password(p) => Ok(zeroize::Zeroizing::new(p)),
            mut other => {
                wipe_secret(&mut other);
                Err(RpcError::new(
                    code::INVALID_ARGUMENT,
                    "the sealed new password holds another kind of secret: seal a password",
                ))
            }
        }
    }

    fn krbtgt_of(&self, session: &[u8]) -> String {
        self.credentials
            .get(session)
            .filter(|c| !c.realm.is_empty())
            .map(|c| alloc::format!("krbtgt/{}", c.realm))
            .unwrap_or_default()
    }
}

/// A machine account (FAST armor credential of its realm) is registered by root only, with a
/// Kerberos key (the host keytab's) and a realm: a user must not be able to make other users'
/// AS exchanges armored under a ticket of theirs.
fn check_machine_account(req: &LogonRequest) -> Result<(), RpcError> {
    if req.owner != 0 {
        return Err(RpcError::new(
            code::PERMISSION_DENIED,
            "only root registers a realm's machine account",
        ));
    }
    if req.realm.is_empty() || !matches!(req.secret, Some(logon_request::Secret::Key(_))) {
        return Err(RpcError::new(
            code::INVALID_ARGUMENT,
            "a machine account is a Kerberos key (from the host keytab) of a principal with a realm",
        ));
    }
    Ok(())
}

impl<R: TryCryptoRng> EnclaveServer for Service<R> {
    type Context = CallContext;

    fn status(&mut self, ctx: &mut CallContext, _: StatusRequest) -> Result<StatusReply, RpcError> {
        Ok(self.status_reply(ctx.now_tsc))
    }

    fn logon(&mut self, ctx: &mut CallContext, req: LogonRequest) -> Result<LogonReply, RpcError> {
        // The session is born in this call: its handle goes into the record afterwards.
        let u = SecretUse {
            operation: operation::LOGON,
            session: Vec::new(),
            target: String::new(),
            charged: false,
        };
        let now_tsc = ctx.now_tsc;
        let reply = self.secret_call(ctx, u, |svc| svc.logon_inner(req, now_tsc));
        if let (Ok(r), Some(record)) = (&reply, ctx.audit.last_mut()) {
            record.session_handle = r.session_handle.clone();
        }
        reply
    }

    fn logoff(&mut self, _: &mut CallContext, req: LogoffRequest) -> Result<LogoffReply, RpcError> {
        let Some(owner) = self.credentials.get(&req.session_handle).map(|c| c.owner) else {
            return Err(RpcError::new(code::NOT_FOUND, "no such session in this enclave"));
        };
        // The rate-limit buckets stay: logging on again must not reset them.
        self.credentials.remove(&req.session_handle);
        self.ntlm.forget_session(&req.session_handle);
        self.kerberos.forget_session(&req.session_handle, owner);
        Ok(LogoffReply {})
    }

    fn kerberos_as(&mut self, ctx: &mut CallContext, req: KerberosAsRequest) -> Result<KerberosAsReply, RpcError> {
        let u = SecretUse {
            operation: operation::KERBEROS_AS,
            session: req.session_handle.clone(),
            target: self.krbtgt_of(&req.session_handle),
            charged: req.kdc_reply.is_empty(),
        };
        self.secret_call(ctx, u, |svc| {
            Ok(crate::kerberos::as_step(
                &mut svc.credentials,
                &mut svc.kerberos,
                &mut svc.rng,
                req,
            )?)
        })
    }

    fn kerberos_change_password(
        &mut self,
        ctx: &mut CallContext,
        mut req: KerberosChangePasswordRequest,
    ) -> Result<KerberosChangePasswordReply, RpcError> {
        let realm = self.krbtgt_of(&req.session_handle);
        let u = SecretUse {
            operation: operation::KERBEROS_CHANGE_PASSWORD,
            session: req.session_handle.clone(),
            target: realm.replacen("krbtgt/", "kadmin/changepw@", 1),
            charged: req.new_password.is_some() || req.check_old_password,
        };
        self.secret_call(ctx, u, |svc| {
            let new_password = match req.new_password.take() {
                Some(sealed) => Some(svc.open_new_password(&req.session_handle, &sealed)?),
                None => None,
            };
            Ok(crate::kerberos::change_step(
                &mut svc.credentials,
                &mut svc.kerberos,
                &mut svc.rng,
                req,
                new_password,
            )?)
        })
    }

    fn kerberos_tgs(&mut self, ctx: &mut CallContext, req: KerberosTgsRequest) -> Result<KerberosTgsReply, RpcError> {
        let u = SecretUse {
            operation: operation::KERBEROS_TGS,
            session: req.session_handle.clone(),
            target: String::from(truncate_chars(&req.spn, MAX_AUDITED_TARGET)),
            charged: req.kdc_reply.is_empty(),
        };
        self.secret_call(ctx, u, |svc| {
            Ok(crate::kerberos::tgs_step(
                &svc.credentials,
                &mut svc.kerberos,
                &mut svc.rng,
                req,
            )?)
        })
    }

    fn kerberos_user_sid(
        &mut self,
        ctx: &mut CallContext,
        req: KerberosUserSidRequest,
    ) -> Result<KerberosUserSidReply, RpcError> {
        let u = SecretUse {
            operation: operation::KERBEROS_USER_SID,
            session: req.session_handle.clone(),
            target: self.krbtgt_of(&req.session_handle),
            // Free: the proxy runs it once after each AS exchange, which paid; a rate limit
            // here would only leave the SID empty. It gives out nothing but the SID.
            charged: false,
        };
        self.secret_call(ctx, u, |svc| {
            Ok(crate::kerberos::user_sid_step(
                &svc.credentials,
                &mut svc.kerberos,
                &mut svc.rng,
                req,
            )?)
        })
    }

    fn kerberos_verify_ap_rep(
        &mut self,
        _: &mut CallContext,
        req: KerberosVerifyApRepRequest,
    ) -> Result<KerberosVerifyApRepReply, RpcError> {
        // No secret of the session is used (the keys are the ticket's, which went out with it):
        // no token and no audit record, as for the NTLM negotiate.
        Ok(crate::kerberos::verify_ap_rep(
            &self.credentials,
            &mut self.kerberos,
            req,
        )?)
    }

    fn ntlm_negotiate(
        &mut self,
        _: &mut CallContext,
        req: NtlmNegotiateRequest,
    ) -> Result<NtlmNegotiateReply, RpcError> {
        Ok(crate::ntlm::negotiate(
            &self.credentials,
            &mut self.ntlm,
            &mut self.rng,
            req,
        )?)
    }

    fn ntlm_authenticate(
        &mut self,
        ctx: &mut CallContext,
        req: NtlmAuthenticateRequest,
    ) -> Result<NtlmAuthenticateReply, RpcError> {
        let session = self
            .ntlm
            .session_of(&req.context_id)
            .map(|h| h.to_vec())
            .unwrap_or_default();
        let target = if req.target_spn.is_empty() {
            crate::ntlm::challenge_server_name(&req.challenge_message)
        } else {
            String::from(truncate_chars(&req.target_spn, MAX_AUDITED_TARGET))
        };
        let u = SecretUse {
            operation: operation::NTLM_AUTHENTICATE,
            session,
            target,
            charged: true,
        };
        self.secret_call(ctx, u, |svc| {
            Ok(crate::ntlm::authenticate(
                &svc.credentials,
                &mut svc.ntlm,
                &mut svc.rng,
                req,
            )?)
        })
    }

    fn legacy_authenticate(
        &mut self,
        ctx: &mut CallContext,
        req: LegacyAuthenticateRequest,
    ) -> Result<LegacyAuthenticateReply, RpcError> {
        let u = SecretUse {
            operation: operation::LEGACY_REFUSED,
            session: req.session_handle.clone(),
            target: LegacyProtocol::try_from(req.protocol)
                .map(|p| String::from(p.as_str_name()))
                .unwrap_or_default(),
            charged: true,
        };
        self.secret_call(ctx, u, |svc| {
            Err(crate::ntlm::legacy_authenticate(&svc.credentials, &req).into())
        })
    }

    fn vault_seal(&mut self, ctx: &mut CallContext, req: VaultSealRequest) -> Result<VaultSealReply, RpcError> {
        let u = vault_use(operation::VAULT_SEAL, req.uid, &req.target);
        self.secret_call(ctx, u, |svc| svc.vault_seal_call(req))
    }

    fn vault_logon(&mut self, ctx: &mut CallContext, req: VaultLogonRequest) -> Result<VaultLogonReply, RpcError> {
        let u = vault_use(operation::VAULT_LOGON, req.uid, &req.target);
        let now_tsc = ctx.now_tsc;
        let reply = self.secret_call(ctx, u, |svc| svc.vault_logon_call(req, now_tsc));
        if let (Ok(r), Some(record)) = (&reply, ctx.audit.last_mut()) {
            record.session_handle = r.session_handle.clone();
        }
        reply
    }

    fn issue_sealing_nonce(
        &mut self,
        _: &mut CallContext,
        req: IssueSealingNonceRequest,
    ) -> Result<IssueSealingNonceReply, RpcError> {
        let nonce = self
            .sealing
            .issue_nonce(Owner(req.owner), &mut self.rng)
            .map_err(|e| RpcError::new(code::INTERNAL, e.message()))?;
        Ok(IssueSealingNonceReply { nonce: nonce.to_vec() })
    }
}

/// The audit of a vault call: who and which target (neither costs a token: a session's budget
/// starts with the session).
fn vault_use(operation: &'static str, uid: u32, target: &str) -> SecretUse {
    SecretUse {
        operation,
        session: Vec::new(),
        target: alloc::format!("uid {uid}: {}", truncate_chars(target, MAX_AUDITED_TARGET)),
        charged: false,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Wipes an opened secret that is not used.
fn wipe_secret(secret: &mut sealed_logon_secret::Secret) {
    use zeroize::Zeroize;
    match secret {
        sealed_logon_secret::Secret::Password(p) => p.zeroize(),
        sealed_logon_secret::Secret::NtHash(h) => h.zeroize(),
        sealed_logon_secret::Secret::Key(k) => k.value.zeroize(),
    }
}
