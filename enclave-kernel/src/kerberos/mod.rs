//! Kerberos inside the enclave: the long-term keys, the TGT and its session key never leave.
//!
//! The proxy does all networking and gives the time: each call is one step of an exchange, taking
//! the KDC's reply to the previous step and returning the next request for the KDC, or the
//! outcome. What comes out is what Credential Guard lets out: protocol messages, the service
//! ticket and its session key, and facts about the TGT.
//!
//! Rules enforced here whatever the caller asks:
//! - DES never; rc4-hmac only for a session whose logon asked for it, and only if the image's
//!   signed policy allows it (never per request).
//! - No ticket-granting ticket ever leaves: a service name `krbtgt/...` (any spelling, any case) is
//!   refused, and a TGS-REP is used only if it names the service that was asked for. A reply that
//!   names another realm's TGS (a referral, RFC 6806, or the cross-realm TGT an SPN `svc/host@OTHER`
//!   asks for first) is followed here, its TGT kept per session (see [`referral`]); only the
//!   next request and the realm whose KDC gets it go out.
//! - Never a forwarded TGT, never the delegation flag.
//! - String-to-key parameters below the RFC defaults (4,096 PBKDF2 iterations for the SHA-1
//!   enctypes, 32,768 for the SHA-2 ones) are refused: a forged ETYPE-INFO2 cannot make the enclave
//!   send a PA-ENC-TIMESTAMP under a cheap key.
//! - The password stays until an AS-REP decrypts with the key derived from it: a forged reply (a
//!   wrong salt, say) costs one exchange, never the session.
//! - KDC replies are at most [`MAX_KDC_REPLY_LEN`], and the TGTs one owner's sessions hold at most
//!   [`MAX_TICKET_BYTES_PER_OWNER`] in all (RESOURCE_EXHAUSTED beyond).
//! - FAST (RFC 6113, [`fast`]): where the realm's policy asks for it, the AS exchange is armored
//!   with the TGT of the realm's machine account (a root session registered for it), got and
//!   kept here; under "require" a reply without armor is an error, never a fallback.
//! - Service tickets are kept per session (at most [`MAX_CACHED_TICKETS`], charged to the same
//!   budget) and served again, with a fresh authenticator, until near their end: a second request
//!   for a service costs no KDC exchange. They go with the session, and with its TGT when a
//!   password change drops it or an AS exchange gets one for another principal.

pub mod ap;
mod armor;
mod change;
pub mod crypto;
#[cfg(any(test, feature = "fake-kdc"))]
pub mod fake_kdc;
pub mod fast;
pub mod kpasswd;
mod referral;
mod ticket_cache;
// The user's SID from the TGT's PAC (user-to-user ticket to oneself).
pub mod pac;
mod u2u;
pub use u2u::user_sid_step;
// Visible to `crate::fuzz`, whose targets decode KDC replies.
pub(crate) mod messages;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use change::change_step;
use credguard_proto::enclave::{KerberosAsReply, KerberosAsRequest, KerberosTgsReply, KerberosTgsRequest};
use rand_core::TryCryptoRng;
pub use referral::{MAX_CROSS_TGTS, MAX_REFERRAL_HOPS};
pub use ticket_cache::MAX_CACHED_TICKETS;

use credguard_proto::attest::Owner;
use credguard_proto::checks::{self, CheckError};
use credguard_proto::enctype;

use crate::credentials::{CredentialStore, KerberosKey, LogonCredential, SessionHandle};
use crypto::{CryptoError, Key};
use messages::{KdcReply, TicketInfo};

use credguard_proto::rpc::code::{
    FAILED_PRECONDITION as CODE_FAILED_PRECONDITION, INTERNAL as CODE_INTERNAL,
    INVALID_ARGUMENT as CODE_INVALID_ARGUMENT, NOT_FOUND as CODE_NOT_FOUND,
    PERMISSION_DENIED as CODE_PERMISSION_DENIED, RESOURCE_EXHAUSTED as CODE_RESOURCE_EXHAUSTED,
    UNAUTHENTICATED as CODE_UNAUTHENTICATED, UNAVAILABLE as CODE_UNAVAILABLE,
};

pub use credguard_proto::checks::MAX_KDC_REPLY_LEN;
/// Bytes of TGTs all sessions of one owner may hold together.
pub const MAX_TICKET_BYTES_PER_OWNER: usize = 1 << 20;
/// Largest PBKDF2 iteration count accepted from a KDC: more would keep the enclave (which serves
/// one request at a time) busy for seconds on behalf of one hostile KDC.
pub const MAX_S2K_ITERATIONS: u32 = 1 << 20;

/// Why a Kerberos step failed. Messages name the rule or the KDC's error, never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KerberosError {
    /// Malformed request or KDC message.
    InvalidArgument(String),
    /// No such session, or the KDC does not know a principal.
    NotFound(String),
    /// The KDC refused the password or key.
    Unauthenticated(String),
    /// The KDC refused the account itself (KDC_ERR_CLIENT_REVOKED: disabled, locked out, expired;
    /// PERMISSION_DENIED).
    AccountRefused(String),
    /// Refused by rule, or the session is in the wrong state.
    FailedPrecondition(String),
    /// The session holds no valid TGT (none yet, or one near its end): the caller runs the AS
    /// exchange first (`ErrorReason::NoTgt` on the wire; FAILED_PRECONDITION).
    NoTgt(String),
    /// The KDC says the session's password has expired (KDC_ERR_KEY_EXPIRED): it can only be
    /// changed (`ErrorReason::PasswordExpired` on the wire; FAILED_PRECONDITION).
    PasswordExpired(String),
    /// A size or memory limit of the enclave.
    ResourceExhausted(String),
    /// The KDC is not answering usefully (e.g. repeated clock skew); retrying later may help.
    Unavailable(String),
    /// The enclave itself failed (e.g. its random source).
    Internal(String),
}

impl KerberosError {
    /// Its gRPC code.
    pub fn code(&self) -> i32 {
        match self {
            KerberosError::InvalidArgument(_) => CODE_INVALID_ARGUMENT,
            KerberosError::NotFound(_) => CODE_NOT_FOUND,
            KerberosError::Unauthenticated(_) => CODE_UNAUTHENTICATED,
            KerberosError::AccountRefused(_) => CODE_PERMISSION_DENIED,
            KerberosError::FailedPrecondition(_) | KerberosError::NoTgt(_) | KerberosError::PasswordExpired(_) => {
                CODE_FAILED_PRECONDITION
            }
            KerberosError::ResourceExhausted(_) => CODE_RESOURCE_EXHAUSTED,
            KerberosError::Unavailable(_) => CODE_UNAVAILABLE,
            KerberosError::Internal(_) => CODE_INTERNAL,
        }
    }

    /// Its message.
    pub fn message(self) -> String {
        match self {
            KerberosError::InvalidArgument(m)
            | KerberosError::NotFound(m)
            | KerberosError::Unauthenticated(m)
            | KerberosError::AccountRefused(m)
            | KerberosError::FailedPrecondition(m)
            | KerberosError::NoTgt(m)
            | KerberosError::PasswordExpired(m)
            | KerberosError::ResourceExhausted(m)
            | KerberosError::Unavailable(m)
            | KerberosError::Internal(m) => m,
        }
    }
}

impl From<CheckError> for KerberosError {
    fn from(e: CheckError) -> Self {
        if e.is_rule() {
            KerberosError::FailedPrecondition(format!("{e}"))
        } else {
            KerberosError::InvalidArgument(format!("{e}"))
        }
    }
}

impl From<CryptoError> for KerberosError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Enctype(_) => KerberosError::FailedPrecondition(format!("{e}")),
            CryptoError::Integrity => {
                KerberosError::Unauthenticated("a KDC reply did not decrypt: wrong password or key".into())
            }
            CryptoError::KeyLength | CryptoError::Params => KerberosError::InvalidArgument(format!("{e}")),
        }
    }
}

/// A TGT and its session key, as held for a session.
struct Tgt {
    /// The ticket, DER (wiped when dropped: a TGT is as good as its session key to whoever has both).
    ticket: zeroize::Zeroizing<Vec<u8>>,
    /// Its session key.
    key: Key,
    info: TicketInfo,
}

impl Tgt {
    /// A copy (the machine account's TGT, for one armor).
    fn duplicate(&self) -> Self {
        Tgt {
            ticket: self.ticket.clone(),
            key: self.key.duplicate(),
            info: self.info.clone(),
        }
    }
}

/// An AS exchange waiting for the KDC's reply.
struct PendingAs {
    nonce: u32,
    /// Whether the request carried PA-ENC-TIMESTAMP: a second PREAUTH_REQUIRED then is an error.
    preauth: bool,
    /// Whether a clock-skew retry was made already.
    skew_retried: bool,
    /// A key derived from the password for this exchange, kept only once an AS-REP decrypts
    /// with it (until then the password stays).
    candidate: Option<Key>,
    /// The realms asked so far, the session's first and then each client referral's (at most
    /// [`MAX_CLIENT_REFERRALS`] more); the last is the one the request went to.
    realms: Vec<String>,
    /// The realm's FAST policy, as the exchange's first step gave it.
    mode: fast::FastMode,
    /// Whether the request out is armored, or the machine account's.
    fast: armor::FastPhase,
}

impl PendingAs {
    /// An exchange asking the session's own realm first, unarmored.
    fn new(cred: &LogonCredential, nonce: u32, preauth: bool) -> Self {
        Self {
            nonce,
            preauth,
            skew_retried: false,
            candidate: None,
            realms: alloc::vec![cred.realm.clone()],
            mode: fast::FastMode::Off,
            fast: armor::FastPhase::Plain,
        }
    }

    /// The realm this exchange's request went to.
    fn realm<'a>(&'a self, cred: &'a LogonCredential) -> &'a str {
        self.realms.last().map_or(cred.realm.as_str(), String::as_str)
    }
}

/// Most client referrals (KDC_ERR_WRONG_REALM) one AS exchange follows: a forest is searched in
/// one hop; more, or a realm named twice, is a loop or a hostile KDC.
pub const MAX_CLIENT_REFERRALS: usize = 3;

/// Most TGS exchanges one session may have waiting for the KDC; a new one beyond it drops the
/// session's oldest (never another session's).
pub const MAX_PENDING_TGS: usize = 16;

/// A TGS exchange waiting for the KDC's reply.
struct PendingTgs {
    nonce: u32,
    skew_retried: bool,
    /// The SPN as the caller gave it (the next step must name the same).
    spn: String,
    /// The service asked for, which the final reply must name.
    sname: rasn_kerberos::PrincipalName,
    /// The realm whose KDC got the request (a referral's or cross-realm TGT's); `None`: the
    /// session's TGT's realm.
    realm: Option<String>,
    /// The SPN's explicit realm, when it is not the TGT's: `krbtgt/TARGET` is asked for until a
    /// KDC of `TARGET` is reached.
    target: Option<String>,
    /// The realms whose KDCs this exchange asked, the session's first: a referral back to one is
    /// a loop.
    visited: Vec<String>,
}

impl PendingTgs {
    /// The realm whose KDC got the request.
    fn kdc_realm<'a>(&'a self, home: &'a Tgt) -> &'a str {
        self.realm.as_deref().unwrap_or(&home.info.server_realm)
    }

    /// What the request asks for: the service, or the TGS of the SPN's realm until there.
    fn asking(&self, home: &Tgt) -> Result<rasn_kerberos::PrincipalName, KerberosError> {
        match &self.target {
            Some(t) if !t.eq_ignore_ascii_case(self.kdc_realm(home)) => messages::tgs_principal(t),
            _ => Ok(self.sname.clone()),
        }
    }
}

/// What the enclave keeps about Kerberos for one logon session.
#[derive(Default)]
struct SessionState {
    /// KDC time minus host time, seconds (learnt from KRB_AP_ERR_SKEW).
    clock_offset: i64,
    pending_as: Option<PendingAs>,
    /// TGS exchanges waiting for the KDC, oldest first (at most [`MAX_PENDING_TGS`]): programs
    /// of one user fetch tickets for several services at once.
    pending_tgs: Vec<PendingTgs>,
    tgt: Option<Tgt>,
    /// A password change waiting for the KDC or the kpasswd server.
    change: Option<change::PendingChange>,
    /// Service tickets from finished TGS exchanges, served again while fresh.
    tickets: ticket_cache::TicketCache,
    /// TGTs for other realms (referrals, cross-realm), keyed by the realm whose KDC takes them.
    cross: referral::CrossTgts,
    /// The user-to-user exchange for the user's SID, and what it learnt.
    user_sid: u2u::UserSidState,
}

impl SessionState {
    fn tgt_bytes(&self) -> usize {
        self.tgt.as_ref().map_or(0, |t| t.ticket.len())
    }

    /// Bytes of every ticket held (TGT, cross-realm TGTs, service tickets).
    fn ticket_bytes(&self) -> usize {
        self.tgt_bytes()
            .saturating_add(self.tickets.bytes())
            .saturating_add(self.cross.bytes())
    }

    /// Drops the TGT and every ticket got with it (service tickets, cross-realm TGTs); returns
    /// the bytes freed.
    fn drop_tickets(&mut self) -> usize {
        let freed = self
            .tgt_bytes()
            .saturating_add(self.tickets.clear())
            .saturating_add(self.cross.clear());
        self.tgt = None;
        freed
    }
}

/// Kerberos state of every session.
#[derive(Default)]
pub struct KerberosSessions {
    sessions: BTreeMap<SessionHandle, SessionState>,
    /// Bytes of TGTs held per owner.
    held: BTreeMap<Owner, usize>,
    /// AP-REQs waiting for their AP-REP (mutual authentication).
    ap: ap::ApContexts,
    /// The machine account of each realm (upper case): a root session whose TGT is the FAST armor.
    machines: BTreeMap<String, SessionHandle>,
}

/// A TGT closer than this to its end is not used: the proxy gets a new one first (renewal before
/// expiry). Tickets shorter than twice this use half their lifetime instead.
const TGT_RENEW_MARGIN_SECS: i64 = 300;

/// Whether `info`'s ticket is still good for use at `now`.
fn fresh(info: &TicketInfo, now: i64) -> bool {
    let lifetime = info.end_time.saturating_sub(info.start_time).max(0);
    let margin = TGT_RENEW_MARGIN_SECS.min(lifetime / 2);
    info.end_time.saturating_sub(margin) > now
}

impl KerberosSessions {
    /// No state yet.
    pub const fn new() -> Self {
        Self {
            sessions: BTreeMap::new(),
            held: BTreeMap::new(),
            ap: ap::ApContexts::new(),
            machines: BTreeMap::new(),
        }
    }

    /// Forgets (and wipes) the Kerberos state of `handle`, a session of `owner`.
    pub fn forget_session(&mut self, handle: &[u8], owner: Owner) {
        let Ok(h) = SessionHandle::try_from(handle) else {
            return;
        };
        self.ap.forget(&h);
        self.machines.retain(|_, m| *m != h);
        if let Some(st) = self.sessions.remove(&h) {
            self.release(owner, st.ticket_bytes());
        }
    }

    /// Bytes of tickets (TGTs and kept service tickets) `owner`'s sessions hold.
    pub fn held_by(&self, owner: Owner) -> usize {
        self.held.get(&owner).copied().unwrap_or(0)
    }

    fn release(&mut self, owner: Owner, bytes: usize) {
        release_from(&mut self.held, owner, bytes);
    }

    /// Keeps `tgt` for `handle` (replacing its old one) if `owner` stays within its budget. The
    /// service tickets and cross-realm TGTs of an old TGT for another principal go with it.
    fn keep_tgt(&mut self, handle: SessionHandle, owner: Owner, tgt: Tgt) -> Result<(), KerberosError> {
        if let Some(st) = self.sessions.get_mut(&handle)
            && st
                .tgt
                .as_ref()
                .is_some_and(|old| !messages::same_principal(&old.info.client, &tgt.info.client))
        {
            let freed = st.tickets.clear().saturating_add(st.cross.clear());
            self.release(owner, freed);
        }
        let old = self.sessions.get(&handle).map_or(0, SessionState::tgt_bytes);
        let total = self.held_by(owner).saturating_sub(old).saturating_add(tgt.ticket.len());
        if total > MAX_TICKET_BYTES_PER_OWNER {
            return Err(KerberosError::ResourceExhausted(format!(
                "this user's sessions hold {MAX_TICKET_BYTES_PER_OWNER} bytes of tickets, as many as the enclave \
                 allows one user: log off some sessions"
            )));
        }
        self.held.insert(owner, total);
        self.sessions.entry(handle).or_default().tgt = Some(tgt);
        Ok(())
    }
}

/// Takes `bytes` off what `owner` holds.
fn release_from(held: &mut BTreeMap<Owner, usize>, owner: Owner, bytes: usize) {
    if let Some(h) = held.get_mut(&owner) {
        *h = h.saturating_sub(bytes);
        if *h == 0 {
            held.remove(&owner);
        }
    }
}

fn random_u32<R: TryCryptoRng>(rng: &mut R) -> Result<u32, KerberosError> {
    let mut b = [0u8; 4];
    rng.try_fill_bytes(&mut b)
        .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
    // Nonces are 31-bit: some KDCs treat them as signed.
    Ok(u32::from_be_bytes(b) & 0x7fff_ffff)
}

fn confounder<R: TryCryptoRng>(rng: &mut R) -> Result<[u8; 16], KerberosError> {
    let mut c = [0u8; 16];
    rng.try_fill_bytes(&mut c)
        .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
    Ok(c)
}

fn no_session() -> KerberosError {
    KerberosError::NotFound("no such session in this enclave".into())
}

/// The handle a request names; a malformed one names no session.
fn session_handle(bytes: &[u8]) -> Result<SessionHandle, KerberosError> {
    SessionHandle::try_from(bytes).map_err(|_| no_session())
}

fn check_reply_len(reply: &[u8]) -> Result<(), KerberosError> {
    if reply.len() > MAX_KDC_REPLY_LEN {
        return Err(KerberosError::ResourceExhausted(format!(
            "a KDC reply of {} bytes exceeds the enclave's limit of {MAX_KDC_REPLY_LEN} bytes",
            reply.len()
        )));
    }
    Ok(())
}

/// `KerberosAs`: one step of the AS exchange.
pub fn as_step<R: TryCryptoRng>(
    creds: &mut CredentialStore,
    state: &mut KerberosSessions,
    rng: &mut R,
    req: KerberosAsRequest,
) -> Result<KerberosAsReply, KerberosError> {
    check_reply_len(&req.kdc_reply)?;
    let handle = session_handle(&req.session_handle)?;
    let cred = creds.get(&handle).ok_or_else(no_session)?;
    if cred.realm.is_empty() {
        return Err(KerberosError::FailedPrecondition(
            "the session has no Kerberos realm (log on with a realm)".into(),
        ));
    }
    let st = state.sessions.get(&handle);
    let realm = String::from(
        st.and_then(|s| s.pending_as.as_ref())
            .map_or(cred.realm.as_str(), |p| p.realm(cred)),
    );
    let offset = st.map_or(0, |s| s.clock_offset);
    let mut machine = armor::machine_account(creds, state, &realm, handle, req.now_unix.saturating_add(offset));
    let cred = creds.get_mut(&handle).ok_or_else(no_session)?;
    if req.kdc_reply.is_empty() {
        let mode = fast::FastMode::from_wire(req.fast)?;
        let st = state.sessions.entry(handle).or_default();
        return as_start(cred, st, rng, req.now_unix, (mode, machine.as_ref()));
    }
    let owner = cred.owner;
    let st = state.sessions.entry(handle).or_default();
    let Some(pending) = st.pending_as.take() else {
        return Err(KerberosError::FailedPrecondition(
            "no AS exchange is in progress for this session".into(),
        ));
    };
    let reply = messages::parse_kdc_reply(&req.kdc_reply)?;
    if let armor::FastPhase::MachineTgt(nonce) = pending.fast {
        // The machine account's TGT, then the session's armored request.
        let m = machine.as_mut().ok_or_else(|| {
            KerberosError::FailedPrecondition("the realm's machine account was logged off during the exchange".into())
        })?;
        let tgt = armor::open_machine_rep(m, reply, nonce)?;
        state.keep_tgt(m.handle, m.owner, tgt.duplicate())?;
        m.tgt = Some(tgt);
        let st = state.sessions.entry(handle).or_default();
        return as_armored(cred, st, rng, req.now_unix, (pending, machine.as_ref()));
    }
    match reply {
        KdcReply::Error(e) => {
            let e = match &pending.fast {
                armor::FastPhase::Armored(a) => fast::open_error(a, &e, pending.nonce)?,
                _ => e,
            };
            as_retry(cred, st, rng, req.now_unix, (pending, machine.as_ref()), &e)
        }
        KdcReply::Rep(rep) => {
            let (mut reply, tgt) = as_finish(cred, pending, rep)?;
            let allow_rc4 = cred.allow_rc4;
            state.keep_tgt(handle, owner, tgt)?;
            // Never fails the TGT: without it the proxy asks for the first step itself.
            reply.user_sid_first = u2u::first_step(state, handle, req.now_unix, allow_rc4, rng).ok();
            Ok(reply)
        }
    }
}

/// The session's armored request, once the machine account's TGT is held.
fn as_armored<R: TryCryptoRng>(
    cred: &LogonCredential,
    st: &mut SessionState,
    rng: &mut R,
    now_unix: i64,
    (mut pending, machine): (PendingAs, Option<&armor::MachineAccount>),
) -> Result<KerberosAsReply, KerberosError> {
    let now = now_unix.saturating_add(st.clock_offset);
    let key = request_key(cred, &pending);
    let request = armor::send(cred, &mut pending, machine, key.as_ref(), rng, now)?;
    st.pending_as = Some(pending);
    Ok(request)
}

/// The first AS-REQ: pre-authenticated at once with a key the session holds already (given at
/// logon, or confirmed by an earlier AS-REP); otherwise without, to learn the salt and iteration
/// count from ETYPE-INFO2. Armored from the start where the realm requires FAST.
fn as_start<R: TryCryptoRng>(
    cred: &LogonCredential,
    st: &mut SessionState,
    rng: &mut R,
    now_unix: i64,
    (mode, machine): (fast::FastMode, Option<&armor::MachineAccount>),
) -> Result<KerberosAsReply, KerberosError> {
    let nonce = random_u32(rng)?;
    let key = usable_key(&cred.keys, cred.allow_rc4);
    let mut pending = PendingAs::new(cred, nonce, key.is_some());
    pending.mode = mode;
    let now = now_unix.saturating_add(st.clock_offset);
    let request = if armor::wants_armor(&pending, false) {
        armor::send(cred, &mut pending, machine, key.as_ref(), rng, now)?
    } else {
        as_request(cred, &cred.realm, AsService::Tgt, key.as_ref(), rng, now, nonce)?
    };
    st.pending_as = Some(pending);
    Ok(request)
}

/// The service an AS exchange asks a ticket for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AsService {
    /// The krbtgt of the client's realm: the session's TGT.
    Tgt,
    /// `kadmin/changepw`: a ticket for the kpasswd service only, to change an expired password.
    ChangePw,
}

/// The components of `kadmin/changepw`.
const CHANGEPW: [&str; 2] = ["kadmin", "changepw"];

/// An AS-REQ for `service` of `realm` (the session's, or one a client referral named).
fn as_request<R: TryCryptoRng>(
    cred: &LogonCredential,
    realm: &str,
    service: AsService,
    key: Option<&Key>,
    rng: &mut R,
    now: i64,
    nonce: u32,
) -> Result<KerberosAsReply, KerberosError> {
    let client = messages::Client {
        user: &cred.user,
        realm,
        enterprise: cred.enterprise,
    };
    let krbtgt = ["krbtgt", realm];
    let sname: &[&str] = match service {
        AsService::Tgt => &krbtgt,
        AsService::ChangePw => &CHANGEPW,
    };
    let bytes = match key {
        Some(k) => messages::as_req(&client, sname, Some((k, confounder(rng)?)), now, nonce, cred.allow_rc4)?,
        None => messages::as_req(&client, sname, None, now, nonce, cred.allow_rc4)?,
    };
    Ok(KerberosAsReply {
        kdc_request: bytes,
        kdc_realm: if realm == cred.realm {
            String::new()
        } else {
            String::from(realm)
        },
        ..Default::default()
    })
}

/// The next AS-REQ after a KRB-ERROR the exchange can recover from: PREAUTH_REQUIRED (once)
/// with the ETYPE-INFO2's parameters, or clock skew (once) at the KDC's time. Armored if the
/// exchange is, or (FAST "if-offered") once the KDC's PREAUTH_REQUIRED offers FAST and the realm
/// has a machine account.
fn as_retry<R: TryCryptoRng>(
    cred: &LogonCredential,
    st: &mut SessionState,
    rng: &mut R,
    now_unix: i64,
    (pending, machine): (PendingAs, Option<&armor::MachineAccount>),
    e: &messages::KrbErr,
) -> Result<KerberosAsReply, KerberosError> {
    let offer = e.code == messages::KDC_ERR_PREAUTH_REQUIRED && fast::offered(e) && machine.is_some();
    let mut next = as_next_state(cred, AsService::Tgt, &mut st.clock_offset, now_unix, pending, e)?;
    let key = request_key(cred, &next);
    let now = now_unix.saturating_add(st.clock_offset);
    let request = if armor::wants_armor(&next, offer) {
        armor::send(cred, &mut next, machine, key.as_ref(), rng, now)?
    } else {
        as_request(
            cred,
            next.realm(cred),
            AsService::Tgt,
            key.as_ref(),
            rng,
            now,
            next.nonce,
        )?
    };
    st.pending_as = Some(next);
    Ok(request)
}

/// The next AS-REQ for `service` after a recoverable KRB-ERROR (see [`as_retry`]), and the
/// exchange that then waits; other errors end the exchange.
fn as_next<R: TryCryptoRng>(
    cred: &LogonCredential,
    service: AsService,
    clock_offset: &mut i64,
    rng: &mut R,
    now_unix: i64,
    pending: PendingAs,
    e: &messages::KrbErr,
) -> Result<(KerberosAsReply, PendingAs), KerberosError> {
    let next = as_next_state(cred, service, clock_offset, now_unix, pending, e)?;
    let key = request_key(cred, &next);
    let now = now_unix.saturating_add(*clock_offset);
    let request = as_request(cred, next.realm(cred), service, key.as_ref(), rng, now, next.nonce)?;
    Ok((request, next))
}

/// The exchange after a recoverable KRB-ERROR (see [`as_retry`]); other errors end it.
fn as_next_state(
    cred: &LogonCredential,
    service: AsService,
    clock_offset: &mut i64,
    now_unix: i64,
    pending: PendingAs,
    e: &messages::KrbErr,
) -> Result<PendingAs, KerberosError> {
    Ok(match e.code {
        messages::KDC_ERR_PREAUTH_REQUIRED if !pending.preauth => {
            let info = messages::etype_info2(e)?;
            let chosen = choose_etype(&info, cred.allow_rc4)?;
            let candidate = match pick_key(&cred.keys, chosen.etype)? {
                Some(_) => None,
                None => Some(derive_candidate(cred, &chosen)?),
            };
            PendingAs {
                preauth: true,
                candidate,
                ..pending
            }
        }
        messages::KRB_AP_ERR_SKEW if !pending.skew_retried => {
            *clock_offset = e.stime.saturating_sub(now_unix);
            PendingAs {
                skew_retried: true,
                ..pending
            }
        }
        messages::KDC_ERR_WRONG_REALM if service == AsService::Tgt => client_referral(cred, pending, e)?,
        _ => return Err(kdc_error(e, "AS")),
    })
}

/// The key the next request of `next` is pre-authenticated with, if any.
fn request_key(cred: &LogonCredential, next: &PendingAs) -> Option<Key> {
    match (&next.candidate, next.preauth) {
        (Some(k), _) => Some(k.duplicate()),
        (None, true) => usable_key(&cred.keys, cred.allow_rc4),
        (None, false) => None,
    }
}

/// The exchange after a client referral (RFC 6806 4): the same request to the realm the
/// KDC_ERR_WRONG_REALM names, from the start (that realm's KDC says its own salt). A realm
/// already asked, a malformed one, or more than [`MAX_CLIENT_REFERRALS`] hops end the exchange:
/// a hostile KDC could otherwise send the proxy round in circles.
fn client_referral(
    cred: &LogonCredential,
    pending: PendingAs,
    e: &messages::KrbErr,
) -> Result<PendingAs, KerberosError> {
    let refused = |why: String| {
        KerberosError::FailedPrecondition(format!(
            "the KDC of {:?} refers the account to another realm (KDC_ERR_WRONG_REALM), and the referral is \
             not followed: {why}",
            pending.realm(cred)
        ))
    };
    let Some(realm) = e.crealm.as_deref() else {
        return Err(refused("it names no realm".into()));
    };
    if checks::realm("realm", realm).is_err() {
        return Err(refused("the realm it names is not a realm name".into()));
    }
    if pending.realms.iter().any(|r| r.eq_ignore_ascii_case(realm)) {
        return Err(refused(format!("{realm:?} was asked already (a referral loop)")));
    }
    if pending.realms.len() > MAX_CLIENT_REFERRALS {
        return Err(refused(format!("more than {MAX_CLIENT_REFERRALS} referrals")));
    }
    let mut realms = pending.realms;
    realms.push(String::from(realm));
    Ok(PendingAs {
        nonce: pending.nonce,
        preauth: false,
        skew_retried: pending.skew_retried,
        candidate: None,
        realms,
        mode: pending.mode,
        fast: armor::FastPhase::Plain,
    })
}

/// A key derived from the session's password with the KDC's announced parameters, after the
/// parameters passed [`check_s2k_params`]. The password stays.
fn derive_candidate(cred: &LogonCredential, chosen: &messages::EtypeInfo) -> Result<Key, KerberosError> {
    let Some(password) = cred.password.as_ref() else {
        return Err(KerberosError::FailedPrecondition(format!(
            "the KDC wants enctype {} and the session has no key of it (no password kept)",
            chosen.etype
        )));
    };
    check_s2k_params(chosen.etype, chosen.s2kparams.as_deref())?;
    let client = messages::Client {
        user: &cred.user,
        realm: &cred.realm,
        enterprise: cred.enterprise,
    };
    let salt = match &chosen.salt {
        Some(s) => s.clone(),
        None => messages::default_salt(&client),
    };
    Ok(crypto::string_to_key(
        chosen.etype,
        password.as_bytes(),
        &salt,
        chosen.s2kparams.as_deref(),
    )?)
}

/// Refuses string-to-key parameters weaker than the RFC defaults (or absurdly costly): a forged
/// ETYPE-INFO2 must not make the enclave publish a PA-ENC-TIMESTAMP under a cheap key.
pub fn check_s2k_params(etype: i32, s2kparams: Option<&[u8]>) -> Result<(), KerberosError> {
    // rc4-hmac's key is the NT hash: no parameters.
    if etype == crypto::RC4_HMAC {
        return Ok(());
    }
    let floor = crypto::default_iterations(etype);
    let Some(p) = s2kparams else {
        return Ok(());
    };
    let Ok(bytes) = <[u8; 4]>::try_from(p) else {
        return Err(KerberosError::FailedPrecondition(format!(
            "the KDC's string-to-key parameters for enctype {etype} are not a 4-byte iteration count"
        )));
    };
    let iterations = u32::from_be_bytes(bytes);
    if iterations < floor || iterations > MAX_S2K_ITERATIONS {
        return Err(KerberosError::FailedPrecondition(format!(
            "the KDC asks for {iterations} string-to-key iterations for enctype {etype}: refused (at least {floor}, \
             at most {MAX_S2K_ITERATIONS}); a genuine KDC never asks for fewer than the RFC default"
        )));
    }
    Ok(())
}

/// Decrypts the AS-REP with the key it is encrypted in; keeps that key if it came from the
/// password (whose job is then done); returns the reply and the TGT.
fn as_finish(
    cred: &mut LogonCredential,
    pending: PendingAs,
    rep: messages::RepParts,
) -> Result<(KerberosAsReply, Tgt), KerberosError> {
    if rep.tgs {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered an AS-REQ with a TGS-REP".into(),
        ));
    }
    crypto::check_enctype(rep.enc_etype, cred.allow_rc4)?;
    if !messages::is_tgs_principal(&rep.ticket_sname) {
        return Err(KerberosError::InvalidArgument(
            "the KDC answered an AS-REQ for krbtgt with a ticket for another service".into(),
        ));
    }
    let asked = String::from(pending.realm(cred));
    if !rep.crealm.eq_ignore_ascii_case(&asked) {
        return Err(KerberosError::InvalidArgument(format!(
            "the KDC of {asked:?} answered for an account of realm {:?}",
            rep.crealm
        )));
    }
    let (key, derived, session_key, mut info) = as_open(cred, pending, &rep)?;
    if asked != cred.realm {
        // A client referral led here: the account's realm, for its renewals and TGS exchanges.
        cred.realm = asked;
    }
    if derived {
        // The key is confirmed: the password is not needed any more.
        cred.keys.push(KerberosKey {
            enctype: key.enctype,
            value: key.value.clone(),
        });
        cred.password = None;
    }
    info.client = rep.cname_pn.clone();
    let reply = KerberosAsReply {
        kdc_request: Vec::new(),
        client_principal: format!("{}@{}", rep.cname, rep.crealm),
        realm: rep.crealm.clone(),
        enctype: session_key.enctype,
        auth_time: info.auth_time,
        start_time: info.start_time,
        end_time: info.end_time,
        renew_till: info.renew_till,
        kdc_realm: String::new(),
        user_sid_first: None,
    };
    let tgt = Tgt {
        ticket: zeroize::Zeroizing::new(rep.ticket),
        key: session_key,
        info,
    };
    Ok((reply, tgt))
}

/// Decrypts an AS-REP (the caller checked whom its ticket is for) with the key it is encrypted
/// in: returns that key, whether it came from the password, and the ticket's session key and
/// facts.
fn as_open(
    cred: &LogonCredential,
    pending: PendingAs,
    rep: &messages::RepParts,
) -> Result<(Key, bool, Key, TicketInfo), KerberosError> {
    // An armored exchange: the reply's FAST response is checked, and its strengthen key
    // strengthens the reply key (RFC 6113 5.4.3).
    let strengthen = match &pending.fast {
        armor::FastPhase::Armored(a) => fast::check_rep(a, rep, pending.nonce)?,
        _ if pending.mode == fast::FastMode::Require => {
            return Err(KerberosError::Internal(
                "an AS exchange under FAST \"require\" was not armored".into(),
            ));
        }
        _ => None,
    };
    let (key, derived) = as_reply_key(cred, pending.candidate, rep)?;
    let reply_key = fast::reply_key(strengthen.as_ref(), key.duplicate())?;
    // Key usage 3: AS-REP encrypted part.
    let plain = crypto::decrypt(&reply_key, 3, &rep.enc_cipher)?;
    let (session_key, info) = messages::enc_kdc_rep_part(&plain, pending.nonce)?;
    crypto::check_enctype(session_key.enctype, cred.allow_rc4)?;
    Ok((key, derived, session_key, info))
}

/// The key an AS-REP is encrypted in: one the session holds, this exchange's candidate, or (a
/// KDC that did not require preauthentication) one derived now with the reply's ETYPE-INFO2.
/// Also says whether it came from the password.
fn as_reply_key(
    cred: &LogonCredential,
    candidate: Option<Key>,
    rep: &messages::RepParts,
) -> Result<(Key, bool), KerberosError> {
    if let Some(k) = pick_key(&cred.keys, rep.enc_etype)? {
        return Ok((k, false));
    }
    if let Some(k) = candidate.filter(|k| k.enctype == rep.enc_etype) {
        return Ok((k, true));
    }
    if cred.password.is_some() {
        let entry = rep.etype_info.iter().find(|e| e.etype == rep.enc_etype);
        let chosen = messages::EtypeInfo {
            etype: rep.enc_etype,
            salt: entry.and_then(|e| e.salt.clone()),
            s2kparams: entry.and_then(|e| e.s2kparams.clone()),
        };
        return Ok((derive_candidate(cred, &chosen)?, true));
    }
    Err(KerberosError::FailedPrecondition(format!(
        "the KDC encrypted the AS-REP in enctype {} and the session has no key of it",
        rep.enc_etype
    )))
}

/// The strongest usable key the session holds.
fn usable_key(keys: &[KerberosKey], allow_rc4: bool) -> Option<Key> {
    enctype::preferred(allow_rc4)
        .find_map(|e| keys.iter().find(|k| k.enctype == e))
        .and_then(|k| Key::new(k.enctype, &k.value).ok())
}

fn pick_key(keys: &[KerberosKey], enctype: i32) -> Result<Option<Key>, KerberosError> {
    match keys.iter().find(|k| k.enctype == enctype) {
        Some(k) => Ok(Some(Key::new(k.enctype, &k.value)?)),
        None => Ok(None),
    }
}

/// The ETYPE-INFO2 entry to use: the KDC's order (its preference), skipping what is refused.
/// Only DES offered: a clear refusal.
pub fn choose_etype(entries: &[messages::EtypeInfo], allow_rc4: bool) -> Result<messages::EtypeInfo, KerberosError> {
    if let Some(e) = entries
        .iter()
        .find(|e| crypto::check_enctype(e.etype, allow_rc4).is_ok())
    {
        return Ok(e.clone());
    }
    if !entries.is_empty() && entries.iter().all(|e| enctype::is_des(e.etype)) {
        return Err(KerberosError::FailedPrecondition(
            "the KDC offers only DES enctypes: credguard never uses DES (single DES is broken)".into(),
        ));
    }
    let offered: Vec<String> = entries.iter().map(|e| format!("{}", e.etype)).collect();
    Err(KerberosError::FailedPrecondition(format!(
        "the KDC offers no enctype credguard accepts (offered: [{}]; accepted: 17, 18, 19, 20{})",
        offered.join(", "),
        if allow_rc4 {
            ", 23"
        } else {
            "; 23 only where the image's signed policy and the logon allow rc4-hmac (kerberos.allow_rc4)"
        }
    )))
}

/// The gRPC error for a KRB-ERROR.
fn kdc_error(e: &messages::KrbErr, exchange: &str) -> KerberosError {
    let name = messages::error_name(e.code);
    let m = format!("KDC error {} ({name}) in the {exchange} exchange", e.code);
    match e.code {
        6 | 7 => KerberosError::NotFound(m),
        messages::KDC_ERR_PREAUTH_FAILED | 31 => KerberosError::Unauthenticated(format!("{m}: wrong password or key")),
        18 => account_refused(m, messages::nt_status(e), e.e_text.as_deref()),
        12 | 1 | 2 => KerberosError::Unauthenticated(m),
        messages::KDC_ERR_KEY_EXPIRED => KerberosError::PasswordExpired(format!(
            "password expired ({m}): change it, then log on with the new one"
        )),
        messages::KRB_AP_ERR_SKEW => {
            KerberosError::Unavailable(format!("{m}, again after one retry at the KDC's time"))
        }
        _ => KerberosError::FailedPrecondition(m),
    }
}

/// KDC_ERR_CLIENT_REVOKED: the KDC refuses the account, not the password. Active Directory says
/// why in an NTSTATUS; each reason gets its own words, as Windows' logon screen has.
fn account_refused(m: String, status: Option<u32>, e_text: Option<&str>) -> KerberosError {
    let why = match status {
        Some(0xC000_0072) => "the account is disabled",
        Some(0xC000_0234) => "the account is locked out (too many wrong passwords): wait, or ask an administrator",
        Some(0xC000_0193) => "the account has expired",
        Some(0xC000_006F) => "the account may not log on at this time",
        Some(0xC000_0070) => "the account may not log on from this workstation",
        Some(other) => {
            return KerberosError::AccountRefused(format!("{m}: the KDC refuses the account (NTSTATUS {other:#010x})"));
        }
        // Samba's KDC says "locked out" only in words.
        None if e_text.is_some_and(|t| t.to_ascii_lowercase().contains("locked out")) => {
            "the account is locked out (too many wrong passwords): wait, or ask an administrator"
        }
        None => {
            // Samba 4.17 gives a locked-out account no NTSTATUS and no words.
            let said = e_text.map(|t| format!("; the KDC says: {t}")).unwrap_or_default();
            return KerberosError::AccountRefused(format!(
                "{m}: the KDC refuses the account, not the password (locked out, expired, or not allowed to log on now; \
                 it did not say which{said})"
            ));
        }
    };
    KerberosError::AccountRefused(format!("{m}: {why}"))
}

/// `KerberosTgs`: one step of the TGS exchange.
pub fn tgs_step<R: TryCryptoRng>(
    creds: &CredentialStore,
    state: &mut KerberosSessions,
    rng: &mut R,
    req: KerberosTgsRequest,
) -> Result<KerberosTgsReply, KerberosError> {
    checks::no_delegation(req.delegate)?;
    check_reply_len(&req.kdc_reply)?;
    let handle = session_handle(&req.session_handle)?;
    let cred = creds.get(&handle).ok_or_else(no_session)?;
    let (sname, realm) = service_name(&req.spn)?;
    let st = state.sessions.entry(handle).or_default();
    let now = req.now_unix.saturating_add(st.clock_offset);
    let tgt = usable_tgt(st.tgt.as_ref(), now, cred.allow_rc4)?;
    if req.kdc_reply.is_empty() {
        if let Some(kept) = st.tickets.find(&sname, realm.as_deref(), now) {
            // No KDC exchange: the kept ticket with a new authenticator, as after a TGS-REP.
            let (parts, rep) = kept.reply_parts()?;
            return tgs_finish(cred, tgt, parts, rep, now, ap_ask(&req, handle, &mut state.ap)?, rng);
        }
        release_from(&mut state.held, cred.owner, st.cross.drop_stale(now));
        let target = realm.filter(|r| !r.eq_ignore_ascii_case(&tgt.info.server_realm));
        let (request, pending) = tgs_start(cred, tgt, &st.cross, (sname, target), &req.spn, now, rng)?;
        if st.pending_tgs.len() >= MAX_PENDING_TGS {
            st.pending_tgs.remove(0);
        }
        st.pending_tgs.push(pending);
        return Ok(request);
    }
    let waiting = pending_for(&st.pending_tgs, &req.spn)?;
    match messages::parse_kdc_reply(&req.kdc_reply)? {
        KdcReply::Error(e) => {
            // A KRB-ERROR names no nonce: it ends the oldest exchange for this SPN.
            let pending = st.pending_tgs.remove(waiting[0]);
            if e.code != messages::KRB_AP_ERR_SKEW || pending.skew_retried {
                let exchange = match &pending.realm {
                    Some(realm) => format!("cross-realm TGS ({realm})"),
                    None => String::from("TGS"),
                };
                return Err(kdc_error(&e, &exchange));
            }
            // Once: the same request again, at the KDC's time.
            st.clock_offset = e.stime.saturating_sub(req.now_unix);
            let now = req.now_unix.saturating_add(st.clock_offset);
            let request = tgs_request(cred, tgt, &st.cross, &pending, now, rng)?;
            st.pending_tgs.push(PendingTgs {
                skew_retried: true,
                ..pending
            });
            Ok(request)
        }
        KdcReply::Rep(rep) => {
            let exchange = Exchange {
                cred,
                held: &mut state.held,
                now,
                rng,
            };
            tgs_reply(exchange, st, &waiting, rep, ap_ask(&req, handle, &mut state.ap)?)
        }
    }
}

/// What a TGS step works with besides the session's state.
struct Exchange<'a, R> {
    cred: &'a LogonCredential,
    /// Ticket bytes held per owner.
    held: &'a mut BTreeMap<Owner, usize>,
    /// KDC time.
    now: i64,
    rng: &'a mut R,
}

/// A TGS-REP for one of `waiting` (the reply's nonce says which): the service ticket and what
/// presents it, or (a referral) the next request, to another realm's KDC.
fn tgs_reply<R: TryCryptoRng>(
    mut ex: Exchange<'_, R>,
    st: &mut SessionState,
    waiting: &[usize],
    rep: messages::RepParts,
    ask: ApAsk<'_>,
) -> Result<KerberosTgsReply, KerberosError> {
    let tgt = usable_tgt(st.tgt.as_ref(), ex.now, ex.cred.allow_rc4)?;
    let mut first_error = None;
    for &i in waiting {
        let opened = referral::tgt_for(tgt, &st.cross, &st.pending_tgs[i])
            .and_then(|(using, _)| referral::open(tgt, using, &st.pending_tgs[i], &rep, ex.cred.allow_rc4));
        match opened {
            Ok(referral::Opened::Service(key, info)) => {
                let pending = st.pending_tgs.remove(i);
                let parts = (key, info);
                keep_ticket(ex.held, ex.cred.owner, &mut st.tickets, pending, &parts, &rep);
                return tgs_finish(ex.cred, tgt, parts, rep, ex.now, ask, ex.rng);
            }
            Ok(referral::Opened::Referral(got)) => {
                let pending = st.pending_tgs.remove(i);
                let (request, next) = follow(&mut ex, tgt, pending, &got)?;
                referral::keep(ex.held, ex.cred.owner, &mut st.cross, got)?;
                st.pending_tgs.push(next);
                return Ok(request);
            }
            // A reply that opened under this exchange's key says more than one that did not
            // (another exchange of the SPN, waiting at another realm's KDC).
            Err(e) if first_error.is_none() || matches!(first_error, Some((_, KerberosError::Unauthenticated(_)))) => {
                first_error = Some((i, e));
            }
            Err(_) => {}
        }
    }
    // It answers none of them: the one it came closest to (else the oldest) is spent, as with a
    // single exchange.
    st.pending_tgs
        .remove(first_error.as_ref().map_or(waiting[0], |(i, _)| *i));
    Err(first_error
        .map(|(_, e)| e)
        .unwrap_or_else(|| KerberosError::FailedPrecondition("no TGS exchange is in progress for this session".into())))
}

/// The request that follows a referral to `got.realm` (unless it loops or goes too far), and
/// the exchange that then waits.
fn follow<R: TryCryptoRng>(
    ex: &mut Exchange<'_, R>,
    home: &Tgt,
    pending: PendingTgs,
    got: &referral::CrossTgt,
) -> Result<(KerberosTgsReply, PendingTgs), KerberosError> {
    referral::may_follow(&pending.visited, &got.realm)?;
    let mut visited = pending.visited;
    visited.push(got.realm.clone());
    let next = PendingTgs {
        nonce: random_u32(ex.rng)?,
        skew_retried: false,
        realm: Some(got.realm.clone()),
        visited,
        ..pending
    };
    let asking = next.asking(home)?;
    let request = tgs_request_with(ex.cred, (&got.tgt, Some(&got.crealm)), &next, &asking, ex.now, ex.rng)?;
    Ok((request, next))
}

/// Keeps the service ticket of a finished exchange for `pending`'s service, charged to `owner`,
/// if the owner's budget has room for it; if not, it is only not kept (this caller still gets it).
fn keep_ticket(
    held: &mut BTreeMap<Owner, usize>,
    owner: Owner,
    cache: &mut ticket_cache::TicketCache,
    pending: PendingTgs,
    (key, info): &(Key, TicketInfo),
    rep: &messages::RepParts,
) {
    let Ok(key) = Key::new(key.enctype, &key.value) else {
        return;
    };
    let entry = ticket_cache::CachedTicket {
        sname: pending.sname,
        crealm: rep.crealm.clone(),
        cname: rep.cname.clone(),
        ticket: rep.ticket.clone(),
        key,
        info: info.clone(),
    };
    release_from(held, owner, cache.make_room(&entry.sname, &entry.info.server_realm));
    let total = held.get(&owner).copied().unwrap_or(0).saturating_add(entry.bytes());
    if total <= MAX_TICKET_BYTES_PER_OWNER {
        held.insert(owner, total);
        cache.push(entry);
    }
}

/// The service an SPN names, as a principal, and its explicit realm; never a ticket-granting
/// service (`krbtgt`, any spelling), whose ticket would be a TGT leaving the enclave.
fn service_name(spn: &str) -> Result<(rasn_kerberos::PrincipalName, Option<String>), KerberosError> {
    let (sname, realm) = messages::parse_spn_realm(spn)?;
    if messages::is_tgs_principal(&sname) {
        return Err(KerberosError::FailedPrecondition(format!(
            "{spn:?} names a ticket-granting service (krbtgt): a TGT never leaves the enclave; ask for the \
             service's own name"
        )));
    }
    Ok((sname, realm))
}

/// The session's TGT, if it is good for use at `now` (see [`fresh`]) and of an enctype the session
/// may use; else NoTgt, for the proxy to run the AS exchange first.
fn usable_tgt(tgt: Option<&Tgt>, now: i64, allow_rc4: bool) -> Result<&Tgt, KerberosError> {
    let Some(tgt) = tgt.filter(|t| fresh(&t.info, now)) else {
        return Err(KerberosError::NoTgt(
            "no valid TGT in this session: get one with KerberosGetTgt".into(),
        ));
    };
    crypto::check_enctype(tgt.key.enctype, allow_rc4)?;
    Ok(tgt)
}

/// The first TGS-REQ for `sname` (in the SPN's explicit realm `target`, if not the TGT's), and
/// the exchange waiting for its reply. With a fresh cross-realm TGT for `target` kept, it goes
/// straight to that realm's KDC.
fn tgs_start<R: TryCryptoRng>(
    cred: &LogonCredential,
    home: &Tgt,
    cross: &referral::CrossTgts,
    (sname, target): (rasn_kerberos::PrincipalName, Option<String>),
    spn: &str,
    now: i64,
    rng: &mut R,
) -> Result<(KerberosTgsReply, PendingTgs), KerberosError> {
    let mut visited = alloc::vec![home.info.server_realm.clone()];
    let realm = target
        .as_ref()
        .and_then(|t| cross.find(t, now))
        .map(|c| c.realm.clone());
    visited.extend(realm.iter().cloned());
    let pending = PendingTgs {
        nonce: random_u32(rng)?,
        skew_retried: false,
        spn: String::from(spn),
        sname,
        realm,
        target,
        visited,
    };
    let request = tgs_request(cred, home, cross, &pending, now, rng)?;
    Ok((request, pending))
}

/// Where in `pending` the exchanges for `spn` are, oldest first: a later step continues one of
/// them, for the same SPN.
fn pending_for(pending: &[PendingTgs], spn: &str) -> Result<Vec<usize>, KerberosError> {
    let waiting: Vec<usize> = (0..pending.len()).filter(|&i| pending[i].spn == spn).collect();
    if waiting.is_empty() {
        return Err(KerberosError::FailedPrecondition(if pending.is_empty() {
            "no TGS exchange is in progress for this session".into()
        } else {
            format!("no TGS exchange for {spn:?} is in progress in this session")
        }));
    }
    Ok(waiting)
}

/// `pending`'s TGS-REQ, with the TGT for the realm it goes to (the session's or a kept
/// cross-realm one).
fn tgs_request<R: TryCryptoRng>(
    cred: &LogonCredential,
    home: &Tgt,
    cross: &referral::CrossTgts,
    pending: &PendingTgs,
    now: i64,
    rng: &mut R,
) -> Result<KerberosTgsReply, KerberosError> {
    let using = referral::tgt_for(home, cross, pending)?;
    tgs_request_with(cred, using, pending, &pending.asking(home)?, now, rng)
}

/// A TGS-REQ for `asking` with `tgt` (and the client realm its authenticator names), to the KDC
/// of `pending`'s realm.
fn tgs_request_with<R: TryCryptoRng>(
    cred: &LogonCredential,
    (tgt, crealm): (&Tgt, Option<&str>),
    pending: &PendingTgs,
    asking: &rasn_kerberos::PrincipalName,
    now: i64,
    rng: &mut R,
) -> Result<KerberosTgsReply, KerberosError> {
    let bytes = messages::tgs_req(
        pending.realm.as_deref().unwrap_or(&cred.realm),
        crealm,
        &tgt.info.client,
        &tgt.ticket,
        &tgt.key,
        asking,
        tgt.info.end_time,
        now,
        pending.nonce,
        cred.allow_rc4,
        confounder(rng)?,
    )?;
    Ok(KerberosTgsReply {
        kdc_request: bytes,
        kdc_realm: pending.realm.clone().unwrap_or_default(),
        ..Default::default()
    })
}

/// What the caller asks of an AP-REQ, and where a mutual one waits for its AP-REP.
struct ApAsk<'a> {
    handle: SessionHandle,
    /// Host time, Unix seconds (the contexts' clock).
    host_now: i64,
    mutual: bool,
    channel_bindings: &'a [u8],
    contexts: &'a mut ap::ApContexts,
}

fn ap_ask<'a>(
    req: &'a KerberosTgsRequest,
    handle: SessionHandle,
    contexts: &'a mut ap::ApContexts,
) -> Result<ApAsk<'a>, KerberosError> {
    checks::channel_bindings(&req.channel_bindings)?;
    Ok(ApAsk {
        handle,
        host_now: req.now_unix,
        mutual: req.mutual,
        channel_bindings: &req.channel_bindings,
        contexts,
    })
}

/// A fresh random key of `enctype` (random-to-key is the identity for the AES and rc4 enctypes).
fn random_key<R: TryCryptoRng>(enctype: i32, rng: &mut R) -> Result<Key, KerberosError> {
    let mut bytes = zeroize::Zeroizing::new(alloc::vec![0u8; crypto::key_len(enctype)?]);
    rng.try_fill_bytes(&mut bytes)
        .map_err(|_| KerberosError::Internal("the enclave's random source failed".into()))?;
    Ok(Key::new(enctype, &bytes)?)
}

/// Builds the AP-REQ (with a fresh subkey, a random sequence number and the caller's channel
/// bindings), the GSS and SPNEGO tokens for the service ticket of a TGS-REP, once
/// [`referral::open`] has checked the reply is for the service asked for (and given its key).
/// A mutual one waits in `ask.contexts` for its AP-REP.
fn tgs_finish<R: TryCryptoRng>(
    cred: &LogonCredential,
    tgt: &Tgt,
    (session_key, info): (Key, TicketInfo),
    rep: messages::RepParts,
    now: i64,
    ask: ApAsk<'_>,
    rng: &mut R,
) -> Result<KerberosTgsReply, KerberosError> {
    crypto::check_enctype(session_key.enctype, cred.allow_rc4)?;
    let subkey = random_key(session_key.enctype, rng)?;
    let seq = random_u32(rng)?;
    let cusec = random_u32(rng)? % 1_000_000;
    let auth = messages::ApAuth {
        mutual: ask.mutual,
        channel_bindings: Some(ask.channel_bindings).filter(|c| !c.is_empty()),
        subkey: &subkey,
        seq,
        cusec,
    };
    let ap_req = messages::ap_req(
        &rep.crealm,
        &tgt.info.client,
        &rep.ticket,
        &session_key,
        now,
        &auth,
        confounder(rng)?,
    )?;
    let gss_token = messages::gss_initial_token(&ap_req);
    let spnego_token = messages::spnego_init_token(&gss_token)?;
    let context_id = if ask.mutual {
        let sent = ap::Sent {
            session_key: &session_key,
            ctime: now,
            cusec,
        };
        ask.contexts.register(ask.handle, ask.host_now, &sent, rng)?
    } else {
        Vec::new()
    };
    Ok(KerberosTgsReply {
        kdc_request: Vec::new(),
        kdc_realm: String::new(),
        gss_token,
        ap_req,
        ticket: rep.ticket,
        session_key: session_key.value.to_vec(),
        enctype: session_key.enctype,
        auth_time: info.auth_time,
        start_time: info.start_time,
        end_time: info.end_time,
        renew_till: info.renew_till,
        flags: info.flags,
        client_principal: format!("{}@{}", rep.cname, rep.crealm),
        server_principal: format!("{}@{}", info.server, info.server_realm),
        subkey: subkey.value.to_vec(),
        seq_number: seq,
        context_id,
        spnego_token,
    })
}

/// `KerberosVerifyApRep`: checks a service's AP-REP against a mutual AP-REQ of the session.
pub fn verify_ap_rep(
    creds: &CredentialStore,
    state: &mut KerberosSessions,
    req: credguard_proto::enclave::KerberosVerifyApRepRequest,
) -> Result<credguard_proto::enclave::KerberosVerifyApRepReply, KerberosError> {
    ap::verify_step(creds, &mut state.ap, req)
}

#[cfg(test)]
mod counter_rng;
#[cfg(test)]
mod tests;
