//! The enclave service: framed request bytes in, framed reply bytes out.
//!
//! Nothing here trusts its input: any byte sequence from the host either yields replies or a
//! [`WireError`] after which the caller closes that stream. Nothing here panics on input.
//!
//! "No oracle" is applied here, around every method: a call that puts a session's secret to work
//! first takes a token from the rate limits of the session's owner and of its credential
//! ([`crate::ratelimit`]), and its reply carries exactly one [`AuditRecord`] of the use (done,
//! refused or rate-limited), which the proxy writes to its log.
//!
//! Memory is bounded so that no caller can make the enclave fail for others: every call that can
//! grow the enclave's state is refused (RESOURCE_EXHAUSTED) once the heap has less than
//! [`MEMORY_HEADROOM`] free, which is more than any one request needs, and the state of each
//! owner is capped (sessions, NTLM contexts, ticket bytes, nonces). An allocation failure, which
//! would end the enclave and every session in it, is thereby out of a caller's reach.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::abi::{self, MEASUREMENT_LEN};
use credguard_proto::attest::{Owner, SealPurpose, SealedNames};
use credguard_proto::enclave::{
    AuditRecord, Frame, IssueSealingNonceReply, IssueSealingNonceRequest, KerberosAsRequest, KerberosTgsRequest,
    LegacyAuthenticateRequest, LegacyProtocol, LogoffReply, LogoffRequest, LogonReply, LogonRequest,
    METHOD_ISSUE_SEALING_NONCE, METHOD_KERBEROS_AS, METHOD_KERBEROS_TGS, METHOD_LEGACY_AUTHENTICATE, METHOD_LOGOFF,
    METHOD_LOGON, METHOD_NTLM_AUTHENTICATE, METHOD_NTLM_NEGOTIATE, METHOD_STATUS, METHOD_VAULT_LOGON,
    METHOD_VAULT_SEAL, NtlmAuthenticateRequest, StatusReply, StatusRequest,
};
use credguard_proto::wire::{FrameDecoder, WireError, encode_frame};
use prost::Message;
use rand_core::TryCryptoRng;
use zeroize::Zeroize;

use crate::credentials::{
    CredentialStore, LogonCredential, LogonRefused, SESSION_HANDLE_LEN, SessionHandle, credential_from,
};
use crate::ratelimit::{CredentialId, RateLimited, RateLimits};

mod vault_calls;

/// gRPC status code OK.
pub const CODE_OK: i32 = 0;
/// gRPC status code INVALID_ARGUMENT: the payload does not decode as the method's request.
pub const CODE_INVALID_ARGUMENT: i32 = 3;
/// gRPC status code NOT_FOUND: no such session.
pub const CODE_NOT_FOUND: i32 = 5;
/// gRPC status code RESOURCE_EXHAUSTED: the enclave holds as many sessions as it can, or a
/// session is over its rate limit.
pub const CODE_RESOURCE_EXHAUSTED: i32 = 8;
/// gRPC status code FAILED_PRECONDITION: refused by one of the enclave's rules.
pub const CODE_FAILED_PRECONDITION: i32 = 9;
/// gRPC status code UNIMPLEMENTED: no such method.
pub const CODE_UNIMPLEMENTED: i32 = 12;
/// gRPC status code INTERNAL: the enclave itself failed (e.g. its random source).
pub const CODE_INTERNAL: i32 = 13;

/// Free heap below which calls that can grow the enclave's state are refused. It covers what is
/// allocated outside any call's control, the partly received frames of every open stream (at most
/// `serve::MAX_CONNECTIONS` of `wire::MAX_FRAME_LEN` each), plus what the largest request needs
/// while it runs (its frame decoded a few times over), with room for fragmentation.
pub const MEMORY_HEADROOM: usize = 2 << 20;

/// Longest prefix of an unknown method name echoed back in an error message.
const MAX_ECHOED_METHOD: usize = 80;
/// Longest prefix of an SPN copied into an audit record.
const MAX_AUDITED_TARGET: usize = 256;

/// One open stream: bytes received but not yet a whole frame.
#[derive(Default)]
pub struct Connection {
    decoder: FrameDecoder,
}

impl Connection {
    /// A stream with nothing buffered.
    pub const fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(),
        }
    }

    /// Bytes buffered towards the next frame.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }
}

/// Who this enclave is, as the VMM launched it.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// SHA-384 of the signed image.
    pub measurement: [u8; MEASUREMENT_LEN],
    /// Fingerprint of the key that signed the image.
    pub signer: [u8; 16],
}

/// State shared by all streams.
pub struct Service<R> {
    identity: Identity,
    boot_id: [u8; 16],
    tsc_khz: u64,
    start_tsc: u64,
    requests_served: u64,
    rng: R,
    credentials: CredentialStore,
    ntlm: crate::ntlm::NtlmContexts,
    kerberos: crate::kerberos::KerberosSessions,
    /// Rate limits of secret-using operations, per owner and per credential.
    limits: RateLimits,
    /// Key of the credential fingerprints ([`CredentialId`]), random per boot.
    fingerprint_key: zeroize::Zeroizing<[u8; 32]>,
    /// What the VMM said at boot: protection bits, mapped bytes, RAM size, the image's policy.
    boot_facts: BootFacts,
    /// Free heap bytes, if the enclave can tell (the bare-metal binary's allocator).
    free_heap: Option<fn() -> usize>,
    /// This boot's key for sealed logons, and its attestation.
    sealing: crate::sealing::SealingKey,
    /// Restarts of the enclave before this boot, and why (from the boot info).
    restarts: u64,
    restart_reasons: Vec<String>,
    /// The vault's keys, when the VMM handed over a sealing secret.
    vault: Option<crate::vault::Vault>,
}

/// What the VMM told the enclave at boot, reported by `Status` and covered by the attestation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootFacts {
    /// `abi::protection` bits.
    pub protection_bits: u64,
    /// Bytes of guest RAM the VMM keeps mapped.
    pub host_mapped_bytes: u64,
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// The image's signed `abi::policy` bits.
    pub policy_bits: u64,
}

impl BootFacts {
    /// Whether the image's signed policy allows rc4-hmac at all.
    pub fn allows_rc4(&self) -> bool {
        self.policy_bits & abi::policy::ALLOW_RC4 != 0
    }
}

/// What this build of the enclave says about itself (`abi::enclave_flags`).
pub const ENCLAVE_FLAGS: u64 = if cfg!(feature = "test-modes") {
    abi::enclave_flags::TEST_BUILD
} else {
    0
};

/// Audit record operation names (`AuditRecord.operation`).
pub mod operation {
    /// A credential taken in (`Logon`).
    pub const LOGON: &str = "logon";
    /// An NTLMv2 response computed (`NtlmAuthenticate`).
    pub const NTLM_AUTHENTICATE: &str = "ntlm_authenticate";
    /// A step of an AS exchange with the long-term key (`KerberosAs`).
    pub const KERBEROS_AS: &str = "kerberos_as";
    /// A step of a TGS exchange with the TGT (`KerberosTgs`).
    pub const KERBEROS_TGS: &str = "kerberos_tgs";
    /// A legacy protocol's response asked for, and refused (`LegacyAuthenticate`).
    pub const LEGACY_REFUSED: &str = "legacy_refused";
    /// A credential sealed for the vault (`VaultSeal`).
    pub const VAULT_SEAL: &str = "vault_seal";
    /// A vault credential opened into a session (`VaultLogon`).
    pub const VAULT_LOGON: &str = "vault_logon";
}

/// A call that uses (or tries to use) a session's secret, as known before it runs.
struct SecretUse {
    operation: &'static str,
    session: Vec<u8>,
    target: String,
    /// Whether it costs one token of the session's rate limit: the calls that put the secret to
    /// work on input the caller chose (one per NTLM authenticate, per AS or TGS exchange, per
    /// legacy attempt), not the later steps of an exchange already paid for.
    charged: bool,
}

/// The random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomSourceFailed;

impl<R: TryCryptoRng> Service<R> {
    /// The service of the enclave `identity`, whose service started at TSC `start_tsc` on a TSC of
    /// `tsc_khz` kHz, drawing session handles and its boot id from `rng`.
    pub fn new(identity: Identity, tsc_khz: u64, start_tsc: u64, mut rng: R) -> Result<Self, RandomSourceFailed> {
        let mut boot_id = [0u8; 16];
        rng.try_fill_bytes(&mut boot_id).map_err(|_| RandomSourceFailed)?;
        let sealing = crate::sealing::SealingKey::generate(&mut rng).ok_or(RandomSourceFailed)?;
        let mut fingerprint_key = zeroize::Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut fingerprint_key[..])
            .map_err(|_| RandomSourceFailed)?;
        Ok(Self {
            sealing,
            identity,
            boot_id,
            tsc_khz,
            start_tsc,
            requests_served: 0,
            rng,
            credentials: CredentialStore::new(),
            ntlm: crate::ntlm::NtlmContexts::new(),
            kerberos: crate::kerberos::KerberosSessions::new(),
            limits: RateLimits::new(),
            fingerprint_key,
            boot_facts: BootFacts::default(),
            free_heap: None,
            restarts: 0,
            restart_reasons: Vec::new(),
            vault: None,
        })
    }

    /// This boot's random identifier.
    pub fn boot_id(&self) -> [u8; 16] {
        self.boot_id
    }

    /// Logon sessions held.
    pub fn sessions(&self) -> usize {
        self.credentials.len()
    }

    /// Requests answered so far.
    pub fn requests_served(&self) -> u64 {
        self.requests_served
    }

    /// Feeds `bytes` received on `conn`, appending a framed reply to `out` for every whole request
    /// frame; returns how many were answered. After an error the stream is out of sync and must be
    /// closed; replies appended to `out` before the error are still valid.
    pub fn on_bytes(
        &mut self,
        conn: &mut Connection,
        bytes: &[u8],
        now_tsc: u64,
        out: &mut Vec<u8>,
    ) -> Result<usize, WireError> {
        conn.decoder.push(bytes);
        let mut answered = 0;
        while let Some(mut request) = conn.decoder.next_frame()? {
            let reply = self.dispatch(&request, now_tsc);
            // A logon's payload holds its secret, now copied into the credential store.
            request.payload.zeroize();
            encode_frame(&reply, out);
            answered += 1;
        }
        Ok(answered)
    }

    /// Sets what the VMM said at boot (from the boot info): `Status` reports it, and the image's
    /// policy applies to every logon from now on.
    pub fn set_boot_facts(&mut self, facts: BootFacts) {
        self.boot_facts = facts;
    }

    /// Lets the service ask how much heap is free (see [`MEMORY_HEADROOM`]).
    pub fn set_free_heap(&mut self, free_heap: fn() -> usize) {
        self.free_heap = Some(free_heap);
    }

    /// This boot's X25519 public key for sealed logons.
    pub fn sealing_public_key(&self) -> [u8; 32] {
        self.sealing.public_key()
    }

    /// Records the VMM's signature over this boot's attestation (measurement, signer, boot id,
    /// sealing public key), for `Status`.
    pub fn set_attestation(&mut self, signature: Vec<u8>) {
        self.sealing.set_attestation(signature);
    }

    /// Opens a secret `owner` sealed to this boot for `purpose` and `names`; returns it in the form
    /// the credential path takes, and whether the client refused rc4-hmac.
    pub fn open_sealed_secret(
        &mut self,
        sealed: &credguard_proto::enclave::SealedSecret,
        purpose: SealPurpose,
        owner: Owner,
        names: &SealedNames<'_>,
    ) -> Result<crate::sealing::Opened, LogonRefused> {
        use crate::sealing::SealError;
        self.sealing.open(sealed, purpose, owner, names).map_err(|e| match e {
            SealError::Malformed(_) | SealError::DoesNotOpen | SealError::Random => LogonRefused::Invalid(e.message()),
            SealError::OtherBoot | SealError::StaleNonce => LogonRefused::Rule(e.message()),
        })
    }

    /// Sets how many times the VMM restarted the enclave before this boot, and why (oldest
    /// first), for `Status`.
    pub fn set_restarts(&mut self, count: u64, reasons: Vec<String>) {
        self.restarts = count;
        self.restart_reasons = reasons;
    }

    /// Enables the vault with the keys of `vault` (from the host sealing secret; see
    /// [`crate::vault`]).
    pub fn set_vault(&mut self, vault: crate::vault::Vault) {
        self.vault = Some(vault);
    }

    /// The reply to one request frame, carrying one audit record if the call used (or was refused
    /// the use of) a session's secret. The session's rate limit is applied first.
    pub fn dispatch(&mut self, request: &Frame, now_tsc: u64) -> Frame {
        self.requests_served = self.requests_served.saturating_add(1);
        let secret_use = self.secret_use(&request.method, &request.payload);
        let limited = secret_use.as_ref().and_then(|u| self.charge(u, now_tsc).err());
        let mut reply = match (limited, self.memory_short(&request.method)) {
            (Some(e), _) => error(request.call_id, CODE_RESOURCE_EXHAUSTED, e.message()),
            (None, Some(m)) => error(request.call_id, CODE_RESOURCE_EXHAUSTED, m),
            (None, None) => self.answer(request, now_tsc),
        };
        if let Some(u) = secret_use {
            let mut session = u.session;
            if (u.operation == operation::LOGON || u.operation == operation::VAULT_LOGON) && reply.code == CODE_OK {
                // (`VaultLogonReply` has the handle in field 1, as `LogonReply`.)
                // The session is born in this call: its handle is in the reply.
                session = LogonReply::decode(reply.payload.as_slice())
                    .map(|r| r.session_handle)
                    .unwrap_or_default();
            }
            reply.audit.push(AuditRecord {
                operation: String::from(u.operation),
                session_handle: session,
                target: u.target,
                code: reply.code,
                enclave_time_ms: crate::cycles_to_ms(now_tsc.wrapping_sub(self.start_tsc), self.tsc_khz),
            });
        }
        reply
    }

    /// Takes a token from the rate limits of the session's owner and credential if the call costs
    /// one. Unknown sessions cost nothing: the call itself will fail with NOT_FOUND.
    fn charge(&mut self, u: &SecretUse, now_tsc: u64) -> Result<(), RateLimited> {
        if !u.charged {
            return Ok(());
        }
        match self.credentials.get(&u.session) {
            Some(c) => self.limits.try_acquire(c.owner, &c.id, now_tsc),
            None => Ok(()),
        }
    }

    /// Why a call must be refused for want of memory, if it must: calls that may grow the
    /// enclave's state are refused while the heap is short; `Status` and `Logoff` (which frees
    /// memory) always run.
    fn memory_short(&self, method: &str) -> Option<String> {
        let free = self.free_heap?();
        if free >= MEMORY_HEADROOM || method == METHOD_STATUS || method == METHOD_LOGOFF {
            return None;
        }
        Some(format!(
            "the enclave's memory is nearly full ({} KiB free): refused so that no request can exhaust it; \
             log off unused sessions or retry later",
            free >> 10
        ))
    }

    /// What a secret-using call is about, read from its request before it runs; `None` for the
    /// other methods and for payloads that do not decode (those fail without touching a secret).
    fn secret_use(&self, method: &str, payload: &[u8]) -> Option<SecretUse> {
        let u = |operation, session, target, charged| {
            Some(SecretUse {
                operation,
                session,
                target,
                charged,
            })
        };
        match method {
            // Not decoded here: the payload holds the secret, and the handle is in the reply.
            METHOD_LOGON => u(operation::LOGON, Vec::new(), String::new(), false),
            METHOD_NTLM_AUTHENTICATE => {
                let req = NtlmAuthenticateRequest::decode(payload).ok()?;
                let session = self
                    .ntlm
                    .session_of(&req.context_id)
                    .map(|h| h.to_vec())
                    .unwrap_or_default();
                let target = if req.target_spn.is_empty() {
                    crate::ntlm::challenge_server_name(&req.challenge_message)
                } else {
                    req.target_spn
                };
                u(operation::NTLM_AUTHENTICATE, session, target, true)
            }
            METHOD_KERBEROS_AS => {
                let req = KerberosAsRequest::decode(payload).ok()?;
                let target = SessionHandle::try_from(req.session_handle.as_slice())
                    .ok()
                    .and_then(|h| self.credentials.get(&h))
                    .filter(|c| !c.realm.is_empty())
                    .map(|c| format!("krbtgt/{}", c.realm))
                    .unwrap_or_default();
                u(
                    operation::KERBEROS_AS,
                    req.session_handle,
                    target,
                    req.kdc_reply.is_empty(),
                )
            }
            METHOD_KERBEROS_TGS => {
                let req = KerberosTgsRequest::decode(payload).ok()?;
                let target = truncate_chars(&req.spn, MAX_AUDITED_TARGET).into();
                u(
                    operation::KERBEROS_TGS,
                    req.session_handle,
                    target,
                    req.kdc_reply.is_empty(),
                )
            }
            METHOD_LEGACY_AUTHENTICATE => {
                let req = LegacyAuthenticateRequest::decode(payload).ok()?;
                let target = LegacyProtocol::try_from(req.protocol)
                    .map(|p| String::from(p.as_str_name()))
                    .unwrap_or_default();
                u(operation::LEGACY_REFUSED, req.session_handle, target, true)
            }
            // Only uid and target are decoded: the secret's field is skipped, never copied. Like
            // `Logon`, neither costs a token: a session's limit starts with the session.
            METHOD_VAULT_SEAL | METHOD_VAULT_LOGON => {
                let view = crate::vault::AuditView::decode(payload).ok()?;
                let op = if method == METHOD_VAULT_SEAL {
                    operation::VAULT_SEAL
                } else {
                    operation::VAULT_LOGON
                };
                let target = format!("uid {}: {}", view.uid, truncate_chars(&view.target, MAX_AUDITED_TARGET));
                u(op, Vec::new(), target, false)
            }
            _ => None,
        }
    }

    /// The reply to one request frame, without its audit record.
    fn answer(&mut self, request: &Frame, now_tsc: u64) -> Frame {
        let call_id = request.call_id;
        match request.method.as_str() {
            METHOD_STATUS => match StatusRequest::decode(request.payload.as_slice()) {
                Ok(StatusRequest {}) => {
                    let uptime_ms = crate::cycles_to_ms(now_tsc.wrapping_sub(self.start_tsc), self.tsc_khz);
                    let reply = StatusReply {
                        version: String::from(crate::VERSION),
                        measurement: self.identity.measurement.to_vec(),
                        uptime_ms,
                        requests_served: self.requests_served,
                        boot_id: self.boot_id.to_vec(),
                        signer: hex(&self.identity.signer),
                        sessions: self.credentials.len() as u64,
                        protection: abi::describe_protection(
                            self.boot_facts.protection_bits,
                            self.boot_facts.host_mapped_bytes,
                            self.boot_facts.ram_size,
                        ),
                        sealing_public_key: self.sealing.public_key().to_vec(),
                        attestation_signature: self.sealing.attestation().to_vec(),
                        restarts: self.restarts,
                        restart_reasons: self.restart_reasons.clone(),
                        vault_ready: self.vault.is_some(),
                        protection_bits: self.boot_facts.protection_bits,
                        host_mapped_bytes: self.boot_facts.host_mapped_bytes,
                        ram_size: self.boot_facts.ram_size,
                        policy_bits: self.boot_facts.policy_bits,
                        enclave_flags: ENCLAVE_FLAGS,
                    };
                    ok(call_id, reply.encode_to_vec())
                }
                Err(_) => error(
                    call_id,
                    CODE_INVALID_ARGUMENT,
                    String::from("payload is not a StatusRequest"),
                ),
            },
            METHOD_LOGON => self.logon(call_id, &request.payload, now_tsc),
            METHOD_VAULT_SEAL => self.vault_seal(call_id, &request.payload),
            METHOD_VAULT_LOGON => self.vault_logon(call_id, &request.payload, now_tsc),
            METHOD_ISSUE_SEALING_NONCE => self.issue_sealing_nonce(call_id, &request.payload),
            METHOD_LOGOFF => match LogoffRequest::decode(request.payload.as_slice()) {
                Ok(r) => match self.credentials.get(&r.session_handle).map(|c| c.owner) {
                    Some(owner) => {
                        // The rate-limit buckets stay: logging on again must not reset them.
                        self.credentials.remove(&r.session_handle);
                        self.ntlm.forget_session(&r.session_handle);
                        self.kerberos.forget_session(&r.session_handle, owner);
                        ok(call_id, LogoffReply {}.encode_to_vec())
                    }
                    None => error(call_id, CODE_NOT_FOUND, String::from("no such session in this enclave")),
                },
                Err(_) => error(
                    call_id,
                    CODE_INVALID_ARGUMENT,
                    String::from("payload is not a LogoffRequest"),
                ),
            },
            METHOD_KERBEROS_AS => kerberos_reply(
                call_id,
                crate::kerberos::as_step(
                    &mut self.credentials,
                    &mut self.kerberos,
                    &mut self.rng,
                    &request.payload,
                ),
            ),
            METHOD_KERBEROS_TGS => kerberos_reply(
                call_id,
                crate::kerberos::tgs_step(&self.credentials, &mut self.kerberos, &mut self.rng, &request.payload),
            ),
            METHOD_NTLM_NEGOTIATE => ntlm_reply(
                call_id,
                crate::ntlm::negotiate(&self.credentials, &mut self.ntlm, &mut self.rng, &request.payload),
            ),
            METHOD_NTLM_AUTHENTICATE => ntlm_reply(
                call_id,
                crate::ntlm::authenticate(&self.credentials, &mut self.ntlm, &mut self.rng, &request.payload),
            ),
            METHOD_LEGACY_AUTHENTICATE => ntlm_reply(
                call_id,
                Err(crate::ntlm::legacy_authenticate(&self.credentials, &request.payload)),
            ),
            method => {
                let shown = truncate_chars(method, MAX_ECHOED_METHOD);
                let ellipsis = if shown.len() < method.len() { "..." } else { "" };
                error(
                    call_id,
                    CODE_UNIMPLEMENTED,
                    format!("unknown method {shown:?}{ellipsis}"),
                )
            }
        }
    }
}

impl<R: TryCryptoRng> Service<R> {
    fn logon(&mut self, call_id: u64, payload: &[u8], now_tsc: u64) -> Frame {
        let Ok(mut req) = LogonRequest::decode(payload) else {
            return error(
                call_id,
                CODE_INVALID_ARGUMENT,
                String::from("payload is not a LogonRequest"),
            );
        };
        let asked_rate = req.operations_per_second;
        if let Some(credguard_proto::enclave::logon_request::Secret::Sealed(sealed)) = &req.secret {
            let names = SealedNames {
                user: &req.user,
                domain: &req.domain,
                realm: &req.realm,
                target: "",
            };
            match self.open_sealed_secret(sealed, SealPurpose::Logon, Owner(req.owner), &names) {
                Ok(opened) => {
                    // The client's choice counts, not the proxy's.
                    req.allow_rc4 = !opened.refuse_rc4;
                    req.secret = Some(crate::vault::to_logon_secret(opened.secret));
                }
                Err(e) => return refused(call_id, e),
            }
        }
        match self.open_session(call_id, &mut req, asked_rate, now_tsc) {
            Ok((handle, secret_kind)) => ok(
                call_id,
                LogonReply {
                    session_handle: handle.to_vec(),
                    secret_kind: String::from(secret_kind),
                }
                .encode_to_vec(),
            ),
            Err(reply) => reply,
        }
    }

    /// `IssueSealingNonce`: a fresh single-use nonce for the owner's next sealed secret.
    fn issue_sealing_nonce(&mut self, call_id: u64, payload: &[u8]) -> Frame {
        let Ok(req) = IssueSealingNonceRequest::decode(payload) else {
            return error(
                call_id,
                CODE_INVALID_ARGUMENT,
                String::from("payload is not an IssueSealingNonceRequest"),
            );
        };
        match self.sealing.issue_nonce(Owner(req.owner), &mut self.rng) {
            Ok(nonce) => ok(
                call_id,
                IssueSealingNonceReply { nonce: nonce.to_vec() }.encode_to_vec(),
            ),
            Err(e) => error(call_id, CODE_INTERNAL, e.message()),
        }
    }

    /// Makes a session of `req`'s plain secret (taking it out of `req`, wiped on every path) on
    /// the rate limits of its owner and credential (new ones at `asked_rate`); returns its handle
    /// and the kind of secret, or the error reply. What `Logon` and `VaultLogon` share.
    pub(crate) fn open_session(
        &mut self,
        call_id: u64,
        req: &mut LogonRequest,
        asked_rate: u32,
        now_tsc: u64,
    ) -> Result<(SessionHandle, &'static str), Frame> {
        let mut cred = credential_from(req, self.boot_facts.allows_rc4()).map_err(|e| refused(call_id, e))?;
        cred.id = self.fingerprint(&cred);
        let mut handle = [0u8; SESSION_HANDLE_LEN];
        if self.rng.try_fill_bytes(&mut handle).is_err() {
            return Err(error(
                call_id,
                CODE_INTERNAL,
                String::from("the enclave's random source failed"),
            ));
        }
        if self
            .limits
            .open(cred.owner, cred.id, asked_rate, self.tsc_khz, now_tsc)
            .is_err()
        {
            return Err(error(
                call_id,
                CODE_RESOURCE_EXHAUSTED,
                String::from("the enclave tracks as many rate limits in use as it can: retry in a second"),
            ));
        }
        let kind = cred.kind;
        self.credentials.insert(handle, cred).map_err(|e| refused(call_id, e))?;
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
}

fn refused(call_id: u64, e: LogonRefused) -> Frame {
    match e {
        LogonRefused::Invalid(m) => error(call_id, CODE_INVALID_ARGUMENT, m),
        LogonRefused::Rule(m) => error(call_id, CODE_FAILED_PRECONDITION, m),
        LogonRefused::Full(m) => error(call_id, CODE_RESOURCE_EXHAUSTED, String::from(m)),
    }
}

fn kerberos_reply(call_id: u64, result: Result<Vec<u8>, crate::kerberos::KerberosError>) -> Frame {
    match result {
        Ok(payload) => ok(call_id, payload),
        Err(e) => error(call_id, e.code(), e.message()),
    }
}

fn ntlm_reply(call_id: u64, result: Result<Vec<u8>, crate::ntlm::NtlmError>) -> Frame {
    match result {
        Ok(payload) => ok(call_id, payload),
        Err(e) => error(call_id, e.code(), e.message()),
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

fn ok(call_id: u64, payload: Vec<u8>) -> Frame {
    Frame {
        call_id,
        method: String::new(),
        payload,
        code: CODE_OK,
        message: String::new(),
        audit: Vec::new(),
    }
}

fn error(call_id: u64, code: i32, message: String) -> Frame {
    Frame {
        call_id,
        method: String::new(),
        payload: Vec::new(),
        code,
        message,
        audit: Vec::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    use crate::rng::CounterRng;

    const KHZ: u64 = 1_000_000; // 1 GHz: 1 ms = 1e6 cycles

    fn service() -> Service<CounterRng> {
        let identity = Identity {
            measurement: [0xab; MEASUREMENT_LEN],
            signer: [0x5a; 16],
        };
        Service::new(identity, KHZ, 5_000, CounterRng::starting_at(0)).unwrap()
    }

    fn logon_payload(user: &str, password: &str) -> Vec<u8> {
        use credguard_proto::enclave::logon_request::Secret;
        LogonRequest {
            user: user.to_string(),
            domain: "D".to_string(),
            realm: String::new(),
            secret: Some(Secret::Password(password.to_string())),
            operations_per_second: 0,
            owner: 1000,
            allow_rc4: false,
        }
        .encode_to_vec()
    }

    #[test]
    fn logon_and_logoff() {
        let mut svc = service();
        let reply = svc.dispatch(&request(1, METHOD_LOGON, logon_payload("alice", "pw")), 0);
        assert_eq!(reply.code, CODE_OK, "{}", reply.message);
        let handle = LogonReply::decode(reply.payload.as_slice()).unwrap().session_handle;
        assert_eq!(handle.len(), 16);
        assert_ne!(handle, svc.boot_id().to_vec());
        assert_eq!(svc.sessions(), 1);
        // Nothing in any reply is the secret.
        let status = svc.dispatch(&request(2, METHOD_STATUS, vec![]), 0);
        let st = StatusReply::decode(status.payload.as_slice()).unwrap();
        assert_eq!(st.sessions, 1);
        assert_eq!(st.signer, "5a".repeat(16));
        assert_eq!(st.boot_id, svc.boot_id().to_vec());
        let off = LogoffRequest {
            session_handle: handle.clone(),
        }
        .encode_to_vec();
        assert_eq!(svc.dispatch(&request(3, METHOD_LOGOFF, off.clone()), 0).code, CODE_OK);
        assert_eq!(svc.dispatch(&request(4, METHOD_LOGOFF, off), 0).code, CODE_NOT_FOUND);
        assert_eq!(svc.sessions(), 0);
    }

    fn challenge_message() -> Vec<u8> {
        crate::ntlm::sample::windows_challenge()
    }

    fn logon_as(svc: &mut Service<CounterRng>, uid: u64, user: &str, password: &str, rate: u32, now: u64) -> Vec<u8> {
        use credguard_proto::enclave::logon_request::Secret;
        let req = LogonRequest {
            user: user.to_string(),
            domain: "D".to_string(),
            realm: String::new(),
            secret: Some(Secret::Password(password.to_string())),
            operations_per_second: rate,
            owner: uid,
            allow_rc4: false,
        };
        let reply = svc.dispatch(&request(1, METHOD_LOGON, req.encode_to_vec()), now);
        assert_eq!(reply.code, CODE_OK, "{}", reply.message);
        LogonReply::decode(reply.payload.as_slice()).unwrap().session_handle
    }

    fn ntlm_handshake(svc: &mut Service<CounterRng>, handle: &[u8], now: u64) -> Frame {
        use credguard_proto::enclave::{NtlmNegotiateReply, NtlmNegotiateRequest};
        let neg = NtlmNegotiateRequest {
            session_handle: handle.to_vec(),
        };
        let r = svc.dispatch(&request(2, METHOD_NTLM_NEGOTIATE, neg.encode_to_vec()), now);
        assert_eq!(r.code, CODE_OK, "{}", r.message);
        // Starting a context uses no secret: no record.
        assert!(r.audit.is_empty());
        let ctx = NtlmNegotiateReply::decode(r.payload.as_slice()).unwrap().context_id;
        let auth = NtlmAuthenticateRequest {
            context_id: ctx,
            challenge_message: challenge_message(),
            channel_bindings: Vec::new(),
            target_spn: String::new(),
            now_filetime: 0,
        };
        svc.dispatch(&request(3, METHOD_NTLM_AUTHENTICATE, auth.encode_to_vec()), now)
    }

    fn legacy(svc: &mut Service<CounterRng>, handle: &[u8], now: u64) -> Frame {
        let req = LegacyAuthenticateRequest {
            session_handle: handle.to_vec(),
            protocol: LegacyProtocol::Ntlmv1 as i32,
            challenge: vec![1; 8],
        };
        svc.dispatch(&request(4, METHOD_LEGACY_AUTHENTICATE, req.encode_to_vec()), now)
    }

    fn only_record(f: &Frame) -> &AuditRecord {
        assert_eq!(f.audit.len(), 1, "{:?}", f.audit);
        &f.audit[0]
    }

    #[test]
    fn every_secret_use_yields_exactly_one_audit_record() {
        let mut svc = service();
        let t = 5_000 + 3 * 1_000_000; // 3 ms after the service started
        let logon = svc.dispatch(&request(1, METHOD_LOGON, logon_payload("alice", "pw")), t);
        let handle = LogonReply::decode(logon.payload.as_slice()).unwrap().session_handle;
        let rec = only_record(&logon);
        assert_eq!((rec.operation.as_str(), rec.code), (operation::LOGON, CODE_OK));
        assert_eq!(rec.session_handle, handle);
        assert_eq!(rec.enclave_time_ms, 3);

        let auth = ntlm_handshake(&mut svc, &handle, t);
        assert_eq!(auth.code, CODE_OK, "{}", auth.message);
        let rec = only_record(&auth);
        assert_eq!(rec.operation, operation::NTLM_AUTHENTICATE);
        assert_eq!(rec.session_handle, handle);
        assert_eq!(rec.target, "server.corp.test");

        let refused = legacy(&mut svc, &handle, t);
        assert_eq!(refused.code, CODE_FAILED_PRECONDITION);
        let rec = only_record(&refused);
        assert_eq!(
            (rec.operation.as_str(), rec.code),
            (operation::LEGACY_REFUSED, CODE_FAILED_PRECONDITION)
        );
        assert_eq!(rec.target, "LEGACY_PROTOCOL_NTLMV1");

        let as_req = KerberosAsRequest {
            session_handle: handle.clone(),
            ..Default::default()
        };
        let r = svc.dispatch(&request(5, METHOD_KERBEROS_AS, as_req.encode_to_vec()), t);
        let rec = only_record(&r);
        assert_eq!((rec.operation.as_str(), rec.code), (operation::KERBEROS_AS, r.code));
        assert_eq!(rec.session_handle, handle);

        let tgs_req = KerberosTgsRequest {
            session_handle: handle.clone(),
            spn: "HTTP/web.example.test".to_string(),
            ..Default::default()
        };
        let r = svc.dispatch(&request(6, METHOD_KERBEROS_TGS, tgs_req.encode_to_vec()), t);
        let rec = only_record(&r);
        assert_eq!(
            (rec.operation.as_str(), rec.target.as_str()),
            (operation::KERBEROS_TGS, "HTTP/web.example.test")
        );

        // Calls that use no secret carry none.
        let st = svc.dispatch(&request(7, METHOD_STATUS, vec![]), t);
        assert!(st.audit.is_empty());
        let off = LogoffRequest {
            session_handle: handle.clone(),
        };
        assert!(
            svc.dispatch(&request(8, METHOD_LOGOFF, off.encode_to_vec()), t)
                .audit
                .is_empty()
        );
        // A refused logon is audited too (without a session).
        let bad = svc.dispatch(&request(9, METHOD_LOGON, logon_payload("", "pw")), t);
        let rec = only_record(&bad);
        assert_eq!((rec.code, rec.session_handle.len()), (CODE_INVALID_ARGUMENT, 0));
        // No record carries the secret or its hash.
        let nt = crate::credentials::nt_hash("pw");
        for f in [&logon, &auth, &refused] {
            let bytes = f.audit.iter().map(|r| r.encode_to_vec()).collect::<Vec<_>>().concat();
            assert!(!bytes.windows(16).any(|w| w == nt.as_slice()));
            assert!(!bytes.windows(2).any(|w| w == b"pw"));
        }
    }

    #[test]
    fn the_rate_limit_is_the_enclaves_per_user_and_credential_and_on_its_own_clock() {
        let mut svc = service();
        let t0 = 10 * 1_000_000_000;
        let slow = logon_as(&mut svc, 1000, "alice", "pw", 3, t0);
        let other = logon_as(&mut svc, 1001, "bob", "pw2", 3, t0);
        for _ in 0..3 {
            assert_eq!(legacy(&mut svc, &slow, t0).code, CODE_FAILED_PRECONDITION);
        }
        // The fourth in the same instant is over the limit: for NTLM as for legacy attempts.
        let r = legacy(&mut svc, &slow, t0);
        assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
        assert!(
            r.message
                .contains("rate limit of 3 operations per second per user and per credential"),
            "{}",
            r.message
        );
        assert_eq!(only_record(&r).code, CODE_RESOURCE_EXHAUSTED);
        let r = ntlm_handshake(&mut svc, &slow, t0);
        assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
        assert_eq!(only_record(&r).session_handle, slow);
        // Another user with another credential has their own buckets.
        assert_eq!(ntlm_handshake(&mut svc, &other, t0).code, CODE_OK);
        // Logging on again (even asking for more) or off does not refill alice's.
        let again = logon_as(&mut svc, 1000, "alice", "pw", 1000, t0);
        assert_eq!(legacy(&mut svc, &again, t0).code, CODE_RESOURCE_EXHAUSTED);
        let off = LogoffRequest {
            session_handle: slow.clone(),
        };
        assert_eq!(
            svc.dispatch(&request(8, METHOD_LOGOFF, off.encode_to_vec()), t0).code,
            CODE_OK
        );
        let third = logon_as(&mut svc, 1000, "alice", "pw", 3, t0);
        assert_eq!(legacy(&mut svc, &third, t0).code, CODE_RESOURCE_EXHAUSTED);
        // Alice's credential under another uid (a proxy naming any uid): its bucket is empty too.
        let moved = logon_as(&mut svc, 4242, "alice", "pw", 3, t0);
        assert_eq!(legacy(&mut svc, &moved, t0).code, CODE_RESOURCE_EXHAUSTED);
        // One third of a second of enclave TSC later, one operation is allowed again.
        let t1 = t0 + 1_000_000_000 / 3 + 1;
        assert_eq!(ntlm_handshake(&mut svc, &third, t1).code, CODE_OK);
        assert_eq!(ntlm_handshake(&mut svc, &third, t1).code, CODE_RESOURCE_EXHAUSTED);

        // Asking for more than the ceiling gets the ceiling.
        let greedy = logon_as(&mut svc, 7, "carol", "pw3", u32::MAX, t0);
        let passed = (0..crate::ratelimit::MAX_OPERATIONS_PER_SECOND + 50)
            .filter(|_| legacy(&mut svc, &greedy, t0).code != CODE_RESOURCE_EXHAUSTED)
            .count();
        assert_eq!(passed, crate::ratelimit::MAX_OPERATIONS_PER_SECOND as usize);
    }

    #[test]
    fn no_call_can_exhaust_the_heap() {
        static FREE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);
        let mut svc = service();
        svc.set_free_heap(|| FREE.load(core::sync::atomic::Ordering::Relaxed));
        let h = logon_as(&mut svc, 1000, "alice", "pw", 0, 0);
        FREE.store(MEMORY_HEADROOM - 1, core::sync::atomic::Ordering::Relaxed);
        let r = svc.dispatch(&request(2, METHOD_LOGON, logon_payload("bob", "pw")), 0);
        assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
        assert!(r.message.contains("memory"), "{}", r.message);
        let neg = credguard_proto::enclave::NtlmNegotiateRequest {
            session_handle: h.clone(),
        };
        let r = svc.dispatch(&request(6, METHOD_NTLM_NEGOTIATE, neg.encode_to_vec()), 0);
        assert_eq!(r.code, CODE_RESOURCE_EXHAUSTED);
        // Status and Logoff still work, so the memory can be freed.
        assert_eq!(svc.dispatch(&request(3, METHOD_STATUS, vec![]), 0).code, CODE_OK);
        let off = LogoffRequest { session_handle: h };
        assert_eq!(
            svc.dispatch(&request(4, METHOD_LOGOFF, off.encode_to_vec()), 0).code,
            CODE_OK
        );
        FREE.store(MEMORY_HEADROOM, core::sync::atomic::Ordering::Relaxed);
        let r = svc.dispatch(&request(5, METHOD_LOGON, logon_payload("bob", "pw")), 0);
        assert_eq!(r.code, CODE_OK);
    }

    #[test]
    fn sealed_logons_are_bound_to_purpose_owner_and_a_fresh_nonce() {
        use crate::sealing::tests::{names, seal};
        use credguard_proto::enclave::sealed_logon_secret::Secret as Inner;
        use credguard_proto::enclave::{IssueSealingNonceReply, SealedSecret, logon_request::Secret};
        let mut svc = service();
        let nonce = |svc: &mut Service<CounterRng>, owner: u64| {
            let r = svc.dispatch(
                &request(
                    1,
                    METHOD_ISSUE_SEALING_NONCE,
                    IssueSealingNonceRequest { owner }.encode_to_vec(),
                ),
                0,
            );
            assert_eq!(r.code, CODE_OK, "{}", r.message);
            let n = IssueSealingNonceReply::decode(r.payload.as_slice()).unwrap().nonce;
            <[u8; 16]>::try_from(n.as_slice()).unwrap()
        };
        let logon = |svc: &mut Service<CounterRng>, owner: u64, sealed: SealedSecret| {
            let req = LogonRequest {
                user: "alice".into(),
                domain: "D".into(),
                realm: String::new(),
                secret: Some(Secret::Sealed(sealed)),
                operations_per_second: 0,
                owner,
                allow_rc4: true,
            };
            svc.dispatch(&request(2, METHOD_LOGON, req.encode_to_vec()), 0)
        };
        let n = nonce(&mut svc, 1000);
        let pk = svc.sealing_public_key();
        let sealed = seal(
            pk,
            [3; 32],
            Inner::Password("pw".into()),
            SealPurpose::Logon,
            Owner::uid(1000),
            n,
            &names("alice", "D", ""),
        );
        // Another uid cannot use it; it is not used up by the attempt.
        assert_eq!(logon(&mut svc, 1001, sealed.clone()).code, CODE_FAILED_PRECONDITION);
        let ok = logon(&mut svc, 1000, sealed.clone());
        assert_eq!(ok.code, CODE_OK, "{}", ok.message);
        // Replayed: refused.
        let r = logon(&mut svc, 1000, sealed);
        assert_eq!(r.code, CODE_FAILED_PRECONDITION);
        assert!(r.message.contains("nonce"), "{}", r.message);
        // Sealed for a vault save: does not open as a logon.
        let n = nonce(&mut svc, 1000);
        let vault = seal(
            pk,
            [4; 32],
            Inner::Password("pw".into()),
            SealPurpose::VaultSave,
            Owner::uid(1000),
            n,
            &names("alice", "D", ""),
        );
        assert_eq!(logon(&mut svc, 1000, vault).code, CODE_INVALID_ARGUMENT);
        // A flood of nonces for another uid does not expire alice's.
        let n = nonce(&mut svc, 1000);
        for _ in 0..100 {
            nonce(&mut svc, 666);
        }
        let fresh = seal(
            pk,
            [5; 32],
            Inner::Password("pw".into()),
            SealPurpose::Logon,
            Owner::uid(1000),
            n,
            &names("alice", "D", ""),
        );
        assert_eq!(logon(&mut svc, 1000, fresh).code, CODE_OK);
    }

    #[test]
    fn logon_refusals_have_codes() {
        use credguard_proto::enclave::{Key, logon_request::Secret};
        let mut svc = service();
        let r = svc.dispatch(&request(1, METHOD_LOGON, logon_payload("", "pw")), 0);
        assert_eq!(r.code, CODE_INVALID_ARGUMENT);
        let des = LogonRequest {
            user: "u".to_string(),
            domain: String::new(),
            realm: "R".to_string(),
            secret: Some(Secret::Key(Key {
                enctype: 1,
                value: vec![0; 8],
            })),
            operations_per_second: 0,
            owner: 1000,
            allow_rc4: false,
        };
        let r = svc.dispatch(&request(2, METHOD_LOGON, des.encode_to_vec()), 0);
        assert_eq!(r.code, CODE_FAILED_PRECONDITION);
        assert!(r.message.contains("DES"));
        let r = svc.dispatch(&request(3, METHOD_LOGON, vec![0xff]), 0);
        assert_eq!(r.code, CODE_INVALID_ARGUMENT);
        assert_eq!(svc.sessions(), 0);
    }

    fn framed(frames: &[Frame]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for f in frames {
            encode_frame(f, &mut bytes);
        }
        bytes
    }

    fn request(call_id: u64, method: &str, payload: Vec<u8>) -> Frame {
        Frame {
            call_id,
            method: method.to_string(),
            payload,
            code: 0,
            message: String::new(),
            audit: Vec::new(),
        }
    }

    fn replies(bytes: &[u8]) -> Vec<Frame> {
        let mut dec = FrameDecoder::new();
        dec.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            out.push(f);
        }
        assert_eq!(dec.buffered(), 0);
        out
    }

    #[test]
    fn status_round_trip() {
        let mut svc = service();
        let mut conn = Connection::new();
        let req = framed(&[request(42, METHOD_STATUS, StatusRequest {}.encode_to_vec())]);
        let mut out = Vec::new();
        assert_eq!(
            svc.on_bytes(&mut conn, &req, 5_000 + 7 * 1_000_000 + 1, &mut out),
            Ok(1)
        );
        let got = replies(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].call_id, 42);
        assert_eq!(got[0].code, CODE_OK);
        assert!(got[0].method.is_empty());
        let status = StatusReply::decode(got[0].payload.as_slice()).unwrap();
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(status.measurement, vec![0xab; 48]);
        assert_eq!(status.uptime_ms, 7);
        assert_eq!(status.requests_served, 1);
    }

    #[test]
    fn byte_by_byte_and_pipelined() {
        let mut svc = service();
        let mut conn = Connection::new();
        let req = framed(&[
            request(1, METHOD_STATUS, vec![]),
            request(2, "/nope.Svc/Missing", vec![]),
            request(3, METHOD_STATUS, vec![]),
        ]);
        let mut out = Vec::new();
        let mut answered = 0;
        for b in &req {
            answered += svc
                .on_bytes(&mut conn, core::slice::from_ref(b), 6_000, &mut out)
                .unwrap();
        }
        assert_eq!(answered, 3);
        assert_eq!(conn.buffered(), 0);
        let got = replies(&out);
        assert_eq!(got.iter().map(|f| f.call_id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got.iter().map(|f| f.code).collect::<Vec<_>>(), vec![0, 12, 0]);
        let last = StatusReply::decode(got[2].payload.as_slice()).unwrap();
        assert_eq!(last.requests_served, 3);
    }

    #[test]
    fn unknown_method_is_unimplemented() {
        let mut svc = service();
        let reply = svc.dispatch(&request(9, "/credguard.enclave.v1.Enclave/Nope", vec![]), 0);
        assert_eq!(reply.code, CODE_UNIMPLEMENTED);
        assert_eq!(reply.call_id, 9);
        assert!(reply.message.contains("Nope"), "{}", reply.message);
        assert!(reply.payload.is_empty());
        let long = "é".repeat(500);
        let reply = svc.dispatch(&request(10, &long, vec![]), 0);
        assert_eq!(reply.code, CODE_UNIMPLEMENTED);
        assert!(reply.message.len() < 200);
        assert!(reply.message.ends_with("..."));
    }

    #[test]
    fn bad_payload_is_invalid_argument() {
        let mut svc = service();
        // Field 1 with wire type 7 (invalid).
        let reply = svc.dispatch(&request(5, METHOD_STATUS, vec![0x0f, 0xff]), 0);
        assert_eq!(reply.code, CODE_INVALID_ARGUMENT);
        assert_eq!(reply.call_id, 5);
        // A truncated length-delimited field.
        let reply = svc.dispatch(&request(6, METHOD_STATUS, vec![0x0a, 0x05, 1]), 0);
        assert_eq!(reply.code, CODE_INVALID_ARGUMENT);
        // Unknown fields are fine (forward compatibility).
        let reply = svc.dispatch(&request(7, METHOD_STATUS, vec![0x08, 0x01]), 0);
        assert_eq!(reply.code, CODE_OK);
    }

    #[test]
    fn garbage_is_a_stream_error() {
        let mut svc = service();
        let mut out = Vec::new();
        let mut conn = Connection::new();
        assert_eq!(
            svc.on_bytes(&mut conn, &[0, 0, 0, 0, 2, 0xff, 0xff], 0, &mut out),
            Err(WireError::Decode)
        );
        let mut conn = Connection::new();
        assert_eq!(
            svc.on_bytes(&mut conn, &[1, 0, 0, 0, 0], 0, &mut out),
            Err(WireError::Compressed)
        );
        let mut conn = Connection::new();
        assert!(matches!(
            svc.on_bytes(&mut conn, &[0, 0xff, 0xff, 0xff, 0xff], 0, &mut out),
            Err(WireError::TooLong(_))
        ));
        assert!(out.is_empty());

        // A good frame followed by garbage: the good reply stays in `out`.
        let mut conn = Connection::new();
        let mut bytes = framed(&[request(1, METHOD_STATUS, vec![])]);
        bytes.extend_from_slice(&[7, 7, 7, 7, 7, 7]);
        assert_eq!(svc.on_bytes(&mut conn, &bytes, 0, &mut out), Err(WireError::Compressed));
        assert_eq!(replies(&out).len(), 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz: xorshift bytes, sometimes behind a valid header.
        let mut svc = service();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                let mut framed = vec![0];
                framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                framed.append(&mut bytes);
                bytes = framed;
            }
            let mut conn = Connection::new();
            let mut out = Vec::new();
            let _ = svc.on_bytes(&mut conn, &bytes, next(), &mut out);
        }
    }
}
