//! NTLM in the enclave: NTLMv2 client contexts over the NT hashes of the credential store.
//!
//! The NT hash and the NTLMv2 hash (NTOWFv2) are computed and used only here; replies carry the
//! NEGOTIATE and AUTHENTICATE messages and the per-context exported session key, nothing else.
//! A context (the NEGOTIATE sent, the session it belongs to) lives here between `NtlmNegotiate`
//! and `NtlmAuthenticate`, under a random id, for one use. Each owner (uid) holds at most
//! [`MAX_NTLM_CONTEXTS_PER_OWNER`]: a new one evicts that owner's oldest, never another owner's;
//! when the enclave holds [`MAX_NTLM_CONTEXTS`] in all, a new one is refused (RESOURCE_EXHAUSTED).
//!
//! A caller that built its own NEGOTIATE (SPNEGO, gss-ntlmssp) hands it in with the CHALLENGE,
//! and the MIC covers it instead of the context's: it is checked ([`message::parse_negotiate`])
//! and is MIC input only, so no flag of it relaxes anything below. The AUTHENTICATE names the
//! workstation the proxy's configuration gives, checked here too.
//!
//! The rules are enforced here, whatever the host asks (Credential Guard's lesson from
//! Pass-the-Challenge and DumpGuard, which used the isolated LSA as an NTLMv1 oracle):
//! a CHALLENGE that would need NTLMv1 or LM is refused, and so is every legacy protocol
//! (`LegacyAuthenticate`) for every credential held here, since all of them are protected.

pub mod message;
pub mod sample;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use credguard_proto::enclave::{
    LegacyAuthenticateRequest, LegacyProtocol, NtlmAuthenticateReply, NtlmAuthenticateRequest, NtlmNegotiateReply,
    NtlmNegotiateRequest,
};
use rand_core::TryCryptoRng;
use zeroize::Zeroizing;

use credguard_proto::attest::Owner;
use credguard_proto::checks::{self, CheckError};

use crate::credentials::{CredentialStore, SESSION_HANDLE_LEN, SessionHandle};
use credguard_proto::rpc::code::{
    FAILED_PRECONDITION as CODE_FAILED_PRECONDITION, INTERNAL as CODE_INTERNAL,
    INVALID_ARGUMENT as CODE_INVALID_ARGUMENT, NOT_FOUND as CODE_NOT_FOUND,
    RESOURCE_EXHAUSTED as CODE_RESOURCE_EXHAUSTED,
};

pub use credguard_proto::checks::{CONTEXT_ID_LEN, MAX_NTLM_CONTEXTS, MAX_NTLM_CONTEXTS_PER_OWNER};

/// Why an NTLM call failed. Messages name the rule or the malformed part, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NtlmError {
    /// Malformed input (INVALID_ARGUMENT).
    Invalid(String),
    /// Refused by rule (FAILED_PRECONDITION).
    Refused(String),
    /// No such session or context (NOT_FOUND).
    NotFound(String),
    /// The enclave holds as many contexts as it can (RESOURCE_EXHAUSTED).
    Exhausted(String),
    /// The enclave's random source failed (INTERNAL).
    Random,
}

impl From<CheckError> for NtlmError {
    fn from(e: CheckError) -> Self {
        NtlmError::Invalid(alloc::string::ToString::to_string(&e))
    }
}

impl NtlmError {
    /// The gRPC status code of this error.
    pub fn code(&self) -> i32 {
        match self {
            NtlmError::Invalid(_) => CODE_INVALID_ARGUMENT,
            NtlmError::Refused(_) => CODE_FAILED_PRECONDITION,
            NtlmError::NotFound(_) => CODE_NOT_FOUND,
            NtlmError::Exhausted(_) => CODE_RESOURCE_EXHAUSTED,
            NtlmError::Random => CODE_INTERNAL,
        }
    }

    /// The message of this error.
    pub fn message(self) -> String {
        match self {
            NtlmError::Invalid(m) | NtlmError::Refused(m) | NtlmError::NotFound(m) | NtlmError::Exhausted(m) => m,
            NtlmError::Random => String::from("the enclave's random source failed"),
        }
    }
}

/// One NTLM client context between NEGOTIATE and AUTHENTICATE.
struct Context {
    session: SessionHandle,
    owner: Owner,
    negotiate: Vec<u8>,
    seq: u64,
}

/// The open NTLM contexts.
#[derive(Default)]
pub struct NtlmContexts {
    by_id: BTreeMap<[u8; CONTEXT_ID_LEN], Context>,
    /// Each owner's contexts, oldest first.
    by_owner: BTreeMap<(Owner, u64), [u8; CONTEXT_ID_LEN]>,
    next_seq: u64,
}

impl NtlmContexts {
    /// No contexts.
    pub const fn new() -> Self {
        Self {
            by_id: BTreeMap::new(),
            by_owner: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Contexts held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Contexts `owner` holds.
    pub fn count_of(&self, owner: Owner) -> usize {
        self.by_owner.range((owner, 0)..=(owner, u64::MAX)).count()
    }

    fn insert(
        &mut self,
        id: [u8; CONTEXT_ID_LEN],
        session: SessionHandle,
        owner: Owner,
        negotiate: Vec<u8>,
    ) -> Result<(), NtlmError> {
        if self.by_id.contains_key(&id) {
            // 128 random bits never collide unless the random source is broken.
            return Err(NtlmError::Random);
        }
        if self.count_of(owner) >= MAX_NTLM_CONTEXTS_PER_OWNER {
            let oldest = self
                .by_owner
                .range((owner, 0)..=(owner, u64::MAX))
                .next()
                .map(|(_, id)| *id);
            if let Some(oldest) = oldest {
                self.take(&oldest);
            }
        } else if self.by_id.len() >= MAX_NTLM_CONTEXTS {
            return Err(NtlmError::Exhausted(format!(
                "the enclave holds {MAX_NTLM_CONTEXTS} open NTLM contexts: finish or abandon some (each user may hold \
                 {MAX_NTLM_CONTEXTS_PER_OWNER})"
            )));
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_owner.insert((owner, seq), id);
        self.by_id.insert(
            id,
            Context {
                session,
                owner,
                negotiate,
                seq,
            },
        );
        Ok(())
    }

    /// Takes the context `id` out (one use only).
    fn take(&mut self, id: &[u8]) -> Option<Context> {
        let id: [u8; CONTEXT_ID_LEN] = id.try_into().ok()?;
        let ctx = self.by_id.remove(&id)?;
        self.by_owner.remove(&(ctx.owner, ctx.seq));
        Some(ctx)
    }

    /// The session the context `id` belongs to, without using the context (for its audit record
    /// and rate limit, which are settled before the context is taken).
    pub fn session_of(&self, id: &[u8]) -> Option<SessionHandle> {
        let id: [u8; CONTEXT_ID_LEN] = id.try_into().ok()?;
        self.by_id.get(&id).map(|c| c.session)
    }

    /// Forgets the contexts of the session `handle` (at logoff).
    pub fn forget_session(&mut self, handle: &[u8]) {
        let gone: Vec<([u8; CONTEXT_ID_LEN], u64)> = self
            .by_id
            .iter()
            .filter(|(_, c)| c.session.as_slice() == handle)
            .map(|(id, c)| (*id, c.seq))
            .collect();
        for (id, _) in gone {
            self.take(&id);
        }
    }
}

fn session_handle(bytes: &[u8]) -> Result<SessionHandle, NtlmError> {
    bytes
        .try_into()
        .map_err(|_| NtlmError::Invalid(format!("a session handle is {SESSION_HANDLE_LEN} bytes")))
}

fn no_session() -> NtlmError {
    NtlmError::NotFound(String::from("no such session in this enclave"))
}

/// `NtlmNegotiate`: opens a context for a session that holds an NT hash.
pub fn negotiate<R: TryCryptoRng>(
    store: &CredentialStore,
    contexts: &mut NtlmContexts,
    rng: &mut R,
    req: NtlmNegotiateRequest,
) -> Result<NtlmNegotiateReply, NtlmError> {
    let handle = session_handle(&req.session_handle)?;
    let cred = store.get(&handle).ok_or_else(no_session)?;
    if cred.nt_hash.is_none() {
        return Err(NtlmError::Refused(String::from(
            "this session has no NT hash (it logged on with a Kerberos key): NTLM needs a password or an NT hash",
        )));
    }
    let mut id = [0u8; CONTEXT_ID_LEN];
    rng.try_fill_bytes(&mut id).map_err(|_| NtlmError::Random)?;
    let negotiate = message::negotiate_message();
    contexts.insert(id, handle, cred.owner, negotiate.clone())?;
    Ok(NtlmNegotiateReply {
        context_id: id.to_vec(),
        negotiate_message: negotiate,
    })
}

/// `NtlmAuthenticate`: takes the context out (whatever the outcome: one use only), checks the
/// CHALLENGE and answers it with an NTLMv2 AUTHENTICATE.
pub fn authenticate<R: TryCryptoRng>(
    store: &CredentialStore,
    contexts: &mut NtlmContexts,
    rng: &mut R,
    req: NtlmAuthenticateRequest,
) -> Result<NtlmAuthenticateReply, NtlmError> {
    let ctx = contexts
        .take(&req.context_id)
        .ok_or_else(|| NtlmError::NotFound(String::from("no such NTLM context (unknown, used or evicted)")))?;
    checks::ntlm_options(&req.channel_bindings, &req.target_spn)?;
    checks::ntlm_workstation(&req.workstation)?;
    // The caller's own NEGOTIATE is MIC input only; the flags and rules come from the CHALLENGE
    // and from here.
    let negotiate = if req.negotiate_message.is_empty() {
        ctx.negotiate.as_slice()
    } else {
        message::parse_negotiate(&req.negotiate_message)?;
        req.negotiate_message.as_slice()
    };
    let challenge = message::parse_challenge(&req.challenge_message)?;
    let cred = store.get(&ctx.session).ok_or_else(no_session)?;
    let Some(nt_hash) = cred.nt_hash.as_ref() else {
        return Err(NtlmError::Refused(String::from("this session has no NT hash")));
    };
    let mut client_challenge = Zeroizing::new([0u8; 8]);
    let mut random_session_key = Zeroizing::new([0u8; 16]);
    rng.try_fill_bytes(&mut *client_challenge)
        .map_err(|_| NtlmError::Random)?;
    rng.try_fill_bytes(&mut *random_session_key)
        .map_err(|_| NtlmError::Random)?;
    let out = message::authenticate_message(&message::AuthenticateInput {
        user: &cred.user,
        domain: &cred.domain,
        nt_hash,
        negotiate,
        workstation: &req.workstation,
        challenge_message: &req.challenge_message,
        challenge: &challenge,
        client_challenge: *client_challenge,
        random_session_key: *random_session_key,
        now_filetime: req.now_filetime,
        channel_bindings: Some(req.channel_bindings.as_slice()).filter(|c| !c.is_empty()),
        target_spn: Some(req.target_spn.as_str()).filter(|s| !s.is_empty()),
    });
    Ok(NtlmAuthenticateReply {
        authenticate_message: out.message,
        exported_session_key: out.exported_session_key.to_vec(),
    })
}

/// Longest server name taken from a CHALLENGE into an audit record, in characters.
const MAX_AUDITED_NAME: usize = 256;

/// The server a CHALLENGE names, for the audit record: its DNS computer name, else its NetBIOS
/// computer name, else empty (also for a CHALLENGE that does not parse: it will be refused).
pub fn challenge_server_name(challenge_message: &[u8]) -> String {
    /// `MsvAvDnsComputerName` (MS-NLMP 2.2.2.1).
    const DNS_COMPUTER_NAME: u16 = 3;
    let Ok(challenge) = message::parse_challenge(challenge_message) else {
        return String::new();
    };
    let pick = |id: u16| challenge.target_info.iter().find(|p| p.id == id && !p.value.is_empty());
    let Some(pair) = pick(DNS_COMPUTER_NAME).or_else(|| pick(message::av::NB_COMPUTER_NAME)) else {
        return String::new();
    };
    let units = pair.value.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    // Names come from the network: control characters are replaced so a log line stays one line.
    char::decode_utf16(units)
        .take(MAX_AUDITED_NAME)
        .map(|c| match c {
            Ok(c) if !c.is_control() => c,
            _ => char::REPLACEMENT_CHARACTER,
        })
        .collect()
}

/// `LegacyAuthenticate`: always an error. Every credential in the enclave is protected, and no
/// legacy protocol's response is ever computed from one.
pub fn legacy_authenticate(store: &CredentialStore, req: &LegacyAuthenticateRequest) -> NtlmError {
    let name = match checks::legacy_request(req.protocol, &req.challenge) {
        Ok(LegacyProtocol::Ntlmv1) => "NTLMv1",
        Ok(LegacyProtocol::Mschapv2) => "MS-CHAPv2",
        Ok(LegacyProtocol::Digest) => "Digest",
        Ok(LegacyProtocol::Credssp) => "CredSSP",
        // `legacy_request` never returns it.
        Ok(LegacyProtocol::Unspecified) => return CheckError::LegacyProtocol(req.protocol).into(),
        Err(e) => return e.into(),
    };
    let handle = match session_handle(&req.session_handle) {
        Ok(h) => h,
        Err(e) => return e,
    };
    if store.get(&handle).is_none() {
        return no_session();
    }
    NtlmError::Refused(format!(
        "refused by the protected-credential rule: {name} is never computed from a credential held by credguard \
         (its response exposes the NT hash or password to cracking or relay); provision a separate, secondary \
         credential for {name}"
    ))
}

#[cfg(test)]
mod tests;
