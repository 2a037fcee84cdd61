//! The helper's state machine: which session answers, one NTLM exchange at a time, and a `BH`
//! with a reason for everything it cannot do.

use credguard_proto::checks::MAX_NTLM_CHALLENGE_LEN;

use crate::protocol::{Reply, Request, parse_request};

/// A logon session as the API lists it (never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// User name given at logon.
    pub user: String,
    /// NetBIOS domain given at logon.
    pub domain: String,
    /// The uid that owns it.
    pub uid: u32,
    /// Whether it is its owner's default session.
    pub is_default: bool,
}

/// A new NTLM context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Its id, for [`Backend::authenticate`].
    pub context_id: String,
    /// The NEGOTIATE message.
    pub negotiate_message: Vec<u8>,
}

/// Why the backend failed: a message fit for a `BH` line (it names no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError(pub String);

/// What the helper asks of credguard.
pub trait Backend {
    /// The sessions the caller may see (root sees every uid's).
    fn sessions(&mut self) -> Result<Vec<Session>, BackendError>;
    /// `NtlmNegotiate` on `session_id`.
    fn negotiate(&mut self, session_id: &str) -> Result<Negotiated, BackendError>;
    /// `NtlmAuthenticate`: the AUTHENTICATE message for `challenge` (the context is used up,
    /// whatever the outcome).
    fn authenticate(&mut self, context_id: &str, challenge: Vec<u8>, target_spn: &str)
    -> Result<Vec<u8>, BackendError>;
}

/// The caller's choices: the command line and the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The uid whose sessions may answer (the helper's effective uid, which the API sees).
    pub uid: u32,
    /// The session `CREDGUARD_SESSION` names, instead of the default one.
    pub session: Option<String>,
    /// `--username`: must name the session's user (a `DOMAIN\user` form gives the domain too).
    pub username: Option<String>,
    /// `--domain`: must name the session's domain.
    pub domain: Option<String>,
    /// The target SPN sent as `MsvAvTargetName` (`--target-service`/`--target-hostname`).
    pub target_spn: String,
    /// Set when `--helper-protocol` names one this helper does not speak: every request gets
    /// `BH` with this reason.
    pub unsupported: Option<String>,
}

/// Where the exchange is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No context: `YR` starts one.
    Idle,
    /// A NEGOTIATE was sent; the CHALLENGE is awaited.
    Negotiated { context_id: String },
    /// The AUTHENTICATE was sent, with these negotiated flags.
    Done { flags: u32 },
}

/// One helper process's conversation.
pub struct Helper<B> {
    backend: B,
    options: Options,
    state: State,
}

impl<B: Backend> Helper<B> {
    /// A helper with no exchange yet.
    pub fn new(backend: B, options: Options) -> Self {
        Helper {
            backend,
            options,
            state: State::Idle,
        }
    }

    /// The reply to one request line (its end removed).
    pub fn handle_line(&mut self, line: &[u8]) -> Reply {
        if let Some(reason) = &self.options.unsupported {
            return Reply::bh(reason.clone());
        }
        match parse_request(line) {
            Request::Start => self.start().unwrap_or_else(Reply::bh),
            Request::Challenge(m) => self.answer(m).unwrap_or_else(Reply::bh),
            Request::Flags => match self.state {
                State::Done { flags } => Reply::Flags(flags),
                _ => Reply::bh("no finished exchange: GF comes after the KK"),
            },
            Request::Refused(reason) => Reply::bh(reason),
        }
    }

    /// `YR`: a new context on the chosen session (an unfinished one is abandoned).
    fn start(&mut self) -> Result<Reply, String> {
        self.state = State::Idle;
        let sessions = self.backend.sessions().map_err(|e| e.0)?;
        let session = choose_session(&sessions, &self.options)?;
        check_names(session, &self.options)?;
        let n = self.backend.negotiate(&session.id).map_err(|e| e.0)?;
        self.state = State::Negotiated {
            context_id: n.context_id,
        };
        Ok(Reply::Negotiate(n.negotiate_message))
    }

    /// `TT`: the AUTHENTICATE for the server's CHALLENGE. A message that is not even a CHALLENGE
    /// keeps the context (the caller may send the right one); anything the enclave refuses
    /// has used it up.
    fn answer(&mut self, challenge: Vec<u8>) -> Result<Reply, String> {
        let context_id = match &self.state {
            State::Negotiated { context_id } => context_id.clone(),
            State::Idle => return Err("no NTLM exchange in progress: send YR first".into()),
            State::Done { .. } => return Err("the exchange is finished: send YR to start another".into()),
        };
        check_challenge_shape(&challenge)?;
        self.state = State::Idle;
        let auth = self
            .backend
            .authenticate(&context_id, challenge, &self.options.target_spn)
            .map_err(|e| e.0)?;
        let flags = auth
            .get(60..64)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes);
        self.state = State::Done { flags };
        Ok(Reply::Authenticate(auth))
    }
}

/// `NTLMSSP\0`.
const SIGNATURE: &[u8] = b"NTLMSSP\0";

/// The caller's mistakes the helper can see without the enclave: not an NTLM message, not a
/// CHALLENGE, too long. The enclave checks the rest.
fn check_challenge_shape(m: &[u8]) -> Result<(), String> {
    if m.len() > MAX_NTLM_CHALLENGE_LEN {
        return Err(format!(
            "TT: a CHALLENGE of {} bytes exceeds the limit of {MAX_NTLM_CHALLENGE_LEN}",
            m.len()
        ));
    }
    if !m.starts_with(SIGNATURE) || m.len() < 12 {
        return Err("TT: not an NTLM message (no NTLMSSP signature)".into());
    }
    let kind = u32::from_le_bytes([m[8], m[9], m[10], m[11]]);
    if kind != 2 {
        return Err(format!("TT: NTLM message type {kind} is not a CHALLENGE (2)"));
    }
    Ok(())
}

/// The session that answers: the one `CREDGUARD_SESSION` names, else the caller's default; in
/// both cases one of the caller's own uid (root's list has every uid's).
///
/// A `BH` reason may reach the server: curl 7.88 sends whatever follows the first three
/// characters of the helper's first answer as its NTLM token, `BH` or not. So no reason names the
/// session, its user or domain, or the caller's uid.
fn choose_session<'a>(sessions: &'a [Session], options: &Options) -> Result<&'a Session, String> {
    let mut mine = sessions.iter().filter(|s| s.uid == options.uid);
    match options.session.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => mine
            .find(|s| s.id == id)
            .ok_or_else(|| "CREDGUARD_SESSION names none of your credguard sessions (credguardctl sessions)".into()),
        None => mine.find(|s| s.is_default).ok_or_else(|| {
            "you have no credguard logon session: log on first (credguardctl logon USER --domain DOMAIN)".into()
        }),
    }
}

/// Unicode case-insensitive equality, as Windows compares account and domain names.
fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// `--username` and `--domain`, when given, must name the session's user and domain: a caller
/// that asks for one account never gets another's AUTHENTICATE.
fn check_names(session: &Session, options: &Options) -> Result<(), String> {
    let given = options.username.as_deref().filter(|u| !u.is_empty());
    // `DOMAIN\user` (winbind's form of a domain user's Unix name) or `DOMAIN/user`.
    let (user_domain, user) = match given.and_then(|u| u.split_once(['\\', '/'])) {
        Some((d, u)) => (Some(d), Some(u)),
        None => (None, given),
    };
    if user.is_some_and(|u| !same_name(u, &session.user)) {
        return Err("--username does not match the user of your credguard session (credguardctl sessions)".into());
    }
    let domains = [options.domain.as_deref(), user_domain];
    if domains
        .into_iter()
        .flatten()
        .any(|d| !d.is_empty() && !same_name(d, &session.domain))
    {
        return Err("--domain does not match the domain of your credguard session (credguardctl sessions)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
