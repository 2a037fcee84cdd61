//! The enclave service: framed request bytes in, framed reply bytes out.
//!
//! Nothing here trusts its input: any byte sequence from the host either yields replies or a
//! [`FrameError`] after which the caller closes that stream. Nothing here panics on input.
//!
//! A request travels: [`Service::on_bytes`] cuts the stream into frames; [`Service::dispatch`]
//! looks the method up by its id and hands the payload to the dispatcher generated from
//! `enclave.proto` (`credguard_proto::enclave::dispatch_enclave`), which decodes it once and calls
//! the method of [`EnclaveServer`] that `calls.rs` implements; the reply (or the
//! [`RpcError`]) goes back in a frame with the call's audit records.
//!
//! "No oracle" is applied in each method that puts a session's secret to work: it first takes a
//! token from the rate limits of the session's owner and of its credential
//! ([`crate::ratelimit`]), and its reply carries exactly one [`AuditRecord`] of the use (done,
//! refused or rate-limited), which the proxy writes to its log.
//!
//! Memory is bounded so that no caller can make the enclave fail for others: every call that can
//! grow the enclave's state is refused (RESOURCE_EXHAUSTED) once the heap has less than
//! [`MEMORY_HEADROOM`] free, which is more than any one request needs, and the state of each
//! owner is capped (sessions, NTLM contexts, ticket bytes, nonces). An allocation failure, which
//! would end the enclave and every session in it, is thereby out of a caller's reach.

use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::abi::{self, MEASUREMENT_LEN};
use credguard_proto::attest::{Owner, SealPurpose, SealedNames};
use credguard_proto::enclave::{AuditRecord, EnclaveMethod, Frame, dispatch_enclave};
use credguard_proto::framing::{FrameDecoder, FrameError, encode_frame};
use credguard_proto::rpc::{RpcError, code};
use rand_core::TryCryptoRng;
use zeroize::Zeroize;

use crate::credentials::{CredentialStore, LogonRefused};
use crate::ratelimit::RateLimits;

mod calls;
mod errors;
mod vault_calls;

#[cfg(test)]
mod tests;

pub use calls::operation;

/// Free heap below which calls that can grow the enclave's state are refused. It covers what is
/// allocated outside any call's control, the partly received frames of every open stream (at most
/// `serve::MAX_CONNECTIONS` of `framing::MAX_FRAME_LEN` each), plus what the largest request needs
/// while it runs (its frame decoded a few times over), with room for fragmentation.
pub const MEMORY_HEADROOM: usize = 2 << 20;

/// One open stream of requests: bytes received but not yet a whole frame.
#[derive(Default)]
pub struct RequestStream {
    decoder: FrameDecoder,
}

impl RequestStream {
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

/// What the VMM told the enclave at boot that steers it, reported by `Status` and covered by the
/// attestation. (The VMM's own facts, protection and restarts, the VMM reports itself.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootFacts {
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
    /// Key of the credential fingerprints (`ratelimit::CredentialId`), random per boot.
    fingerprint_key: zeroize::Zeroizing<[u8; 32]>,
    /// What the VMM said at boot: the image's policy.
    boot_facts: BootFacts,
    /// Free heap bytes, if the enclave can tell (the bare-metal binary's allocator).
    free_heap: Option<fn() -> usize>,
    /// This boot's key for sealed secrets and the nonces it issued.
    sealing: crate::sealing::SealingKey,
    /// The vault's keys, when the VMM handed over a sealing secret.
    vault: Option<crate::vault::Vault>,
}

/// What one call carries besides its request: the enclave's time when it runs, and the audit
/// records of the secrets it used (returned in the reply frame).
pub struct CallContext {
    /// The enclave's TSC when the call started.
    pub now_tsc: u64,
    /// One record per use of a secret (done, refused or rate-limited).
    pub audit: Vec<AuditRecord>,
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

    /// Sets what the VMM said at boot (from the boot info): `Status` reports it, and the image's
    /// policy applies to every logon from now on.
    pub fn set_boot_facts(&mut self, facts: BootFacts) {
        self.boot_facts = facts;
    }

    /// Lets the service ask how much heap is free (see [`MEMORY_HEADROOM`]).
    pub fn set_free_heap(&mut self, free_heap: fn() -> usize) {
        self.free_heap = Some(free_heap);
    }

    /// This boot's X25519 public key for sealed secrets.
    pub fn sealing_public_key(&self) -> [u8; 32] {
        self.sealing.public_key()
    }

    /// Enables the vault with the keys of `vault` (from the host sealing secret; see
    /// [`crate::vault`]).
    pub fn set_vault(&mut self, vault: crate::vault::Vault) {
        self.vault = Some(vault);
    }

    /// Feeds `bytes` received on `stream`, appending a framed reply to `out` for every whole
    /// request frame; returns how many were answered. After an error the stream is out of sync and
    /// must be closed; replies appended to `out` before the error are still valid.
    pub fn on_bytes(
        &mut self,
        stream: &mut RequestStream,
        bytes: &[u8],
        now_tsc: u64,
        out: &mut Vec<u8>,
    ) -> Result<usize, FrameError> {
        stream.decoder.push(bytes);
        let mut answered = 0;
        while let Some(mut request) = stream.decoder.next_frame()? {
            let reply = self.dispatch(&request, now_tsc);
            // A logon's payload holds its secret, now copied into the credential store.
            request.payload.zeroize();
            encode_frame(&reply, out);
            answered += 1;
        }
        Ok(answered)
    }

    /// The reply to one request frame, with the audit records of the secrets the call used (or
    /// was refused the use of).
    pub fn dispatch(&mut self, request: &Frame, now_tsc: u64) -> Frame {
        self.requests_served = self.requests_served.saturating_add(1);
        let mut ctx = CallContext {
            now_tsc,
            audit: Vec::new(),
        };
        let result = match EnclaveMethod::from_id(request.method_id) {
            None => Err(RpcError::unknown_method(request.method_id)),
            Some(method) => match self.memory_short(method) {
                Some(e) => Err(e),
                None => dispatch_enclave(self, &mut ctx, method, &request.payload),
            },
        };
        reply_frame(request.call_id, result, ctx.audit)
    }

    /// The refusal of a call that may grow the enclave's state while the heap is short; `Status`
    /// and `Logoff` (which frees memory) always run.
    fn memory_short(&self, method: EnclaveMethod) -> Option<RpcError> {
        let free = self.free_heap?();
        if free >= MEMORY_HEADROOM || matches!(method, EnclaveMethod::Status | EnclaveMethod::Logoff) {
            return None;
        }
        Some(RpcError::new(
            code::RESOURCE_EXHAUSTED,
            alloc::format!(
                "the enclave's memory is nearly full ({} KiB free): refused so that no request can exhaust it; \
                 log off unused sessions or retry later",
                free >> 10
            ),
        ))
    }

    /// Opens a secret `owner` sealed to this boot for `purpose` and `names`.
    pub fn open_sealed_secret(
        &mut self,
        sealed: &credguard_proto::enclave::SealedSecret,
        purpose: SealPurpose,
        owner: Owner,
        names: &SealedNames<'_>,
    ) -> Result<crate::sealing::Opened, LogonRefused> {
        use crate::sealing::UnsealError;
        self.sealing.open(sealed, purpose, owner, names).map_err(|e| match e {
            UnsealError::Malformed(_) | UnsealError::DoesNotOpen | UnsealError::Random => {
                LogonRefused::Invalid(e.message())
            }
            UnsealError::OtherBoot | UnsealError::StaleNonce => LogonRefused::Rule(e.message()),
        })
    }

    /// Milliseconds since the service started, by the enclave's own clock.
    fn enclave_time_ms(&self, now_tsc: u64) -> u64 {
        crate::cycles_to_ms(now_tsc.wrapping_sub(self.start_tsc), self.tsc_khz)
    }
}

/// The reply frame of call `call_id`.
fn reply_frame(call_id: u64, result: Result<Vec<u8>, RpcError>, audit: Vec<AuditRecord>) -> Frame {
    let (payload, code, reason, message) = match result {
        Ok(payload) => (payload, code::OK, 0, String::new()),
        Err(e) => (Vec::new(), e.code, e.reason as i32, e.message),
    };
    Frame {
        call_id,
        method_id: 0,
        payload,
        code,
        reason,
        message,
        audit,
    }
}
