//! The KCM server: connections on a Unix socket, each caller known by its uid (`SO_PEERCRED`),
//! and the answer to each request.
//!
//! Who may name which cache: a cache name starting with a uid (`1000`, `1000:2`, sssd's and
//! gssproxy's `KCM:%U` convention) belongs to that uid's collection; any other name belongs to
//! the caller's own. A caller may name only its own caches, except root, which may name any
//! uid's (`KCM:1000`), as `rpc.gssd`, `cifs.upcall` and gssproxy need; the backend is then asked
//! on behalf of that uid, not root. Collection-wide requests (`GET_DEFAULT_CACHE`,
//! `GET_CACHE_UUID_LIST`, `GET_CACHE_BY_UUID`) always answer for the caller's own uid.
//!
//! What credguard adds to a plain KCM daemon:
//! - a uid's primary cache `<uid>` is bound to its default credguard session: its principal is
//!   the session's, it lists a keyless TGT entry (real times, no key, no ticket), then the
//!   tickets fetched so far;
//! - `RETRIEVE` of a service that cache lacks asks the backend for the ticket (the enclave does
//!   the TGS exchange), keeps it until it expires, and answers with it; concurrent retrievals of
//!   one service by one uid share a single backend call;
//! - retrieving any `krbtgt/...` principal is answered "not found", and storing one (`kinit`
//!   into `KCM:`) is refused: TGTs live in the enclave only.
//!
//! Requests on one connection are answered in order; connections are served concurrently (MIT
//! opens several at once and keeps them open). Bad input is logged at debug and answered with
//! an error code; the daemon never logs a ticket or a key.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OnceCell, Semaphore};
use tracing::{Instrument, debug, info, trace, warn};
use zeroize::Zeroizing;

use crate::backend::{Backend, DefaultSession};
use crate::ccache::{CcacheFile, Credential, NT_PRINCIPAL, Principal, Times};
use crate::protocol::{MAX_REQUEST_LEN, MatchCred, Reply, Request, code, flags};
use crate::store::{Limits, Origin, SessionView, Store, StoreError};

/// The default socket, where MIT and Heimdal look unless `kcm_socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/.heim_org.h5l.kcm-socket";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Creating, binding or preparing the socket failed.
    #[error("{path}: {what}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Another server answers on the socket.
    #[error("{0}: another KCM daemon is listening there (sssd-kcm?); stop it first")]
    InUse(PathBuf),
    /// The socket handed over by systemd is unusable.
    #[error("socket activation: {0}")]
    Activation(String),
}

/// How the server behaves.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Per-uid limits of the store.
    pub limits: Limits,
    /// How long a uid's default session, as the backend said, is trusted before asking again.
    pub session_ttl: Duration,
    /// Connections one uid may hold open.
    pub connections_per_uid: usize,
    /// Connections in all.
    pub connections: usize,
    /// Backend fetches one uid may have under way (more wait their turn).
    pub fetches_per_uid: usize,
    /// An idle connection is closed after this long (MIT reconnects once on EPIPE, as it does
    /// with sssd-kcm).
    pub idle_timeout: Duration,
    /// A request must arrive whole this soon after its first byte.
    pub request_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            session_ttl: Duration::from_secs(2),
            connections_per_uid: 128,
            connections: 4096,
            fetches_per_uid: 8,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Backend fetches started.
    pub fetches: AtomicUsize,
    /// Retrievals that waited for a fetch another request started.
    pub shared_fetches: AtomicUsize,
    /// Requests that could not be parsed.
    pub bad_requests: AtomicUsize,
}

/// What is known of a uid's default session, and when it was learnt.
#[derive(Default)]
struct SessionState {
    checked: Option<Instant>,
    current: Option<DefaultSession>,
}

/// A fetch result every waiter gets: the ticket, or the KCM code to answer.
type FetchCell = Arc<OnceCell<Result<Arc<Credential>, i32>>>;

/// The uid, session and requested server of a fetch: requests with the same key share it.
type FetchKey = (u32, String, Principal);

/// The KCM server over a [`Backend`].
pub struct KcmServer<B: Backend> {
    backend: B,
    config: ServerConfig,
    store: Mutex<Store>,
    sessions: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<SessionState>>>>,
    inflight: Mutex<HashMap<FetchKey, FetchCell>>,
    fetch_slots: Mutex<HashMap<u32, Arc<Semaphore>>>,
    connections: Mutex<HashMap<u32, usize>>,
    stats: Stats,
}

impl<B: Backend> std::fmt::Debug for KcmServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KcmServer")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Takes a lock even if a thread panicked while holding it (the data stay consistent: every
/// critical section here is a few statements with no panicking call).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now32() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn time32(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// The uid a cache name belongs to, if it starts with one (`1000`, `1000:2`): a decimal number
/// without a leading zero, alone or before a colon.
pub fn name_owner(name: &str) -> Option<u32> {
    let head = name.split(':').next()?;
    let canonical =
        !head.is_empty() && head.bytes().all(|b| b.is_ascii_digit()) && (head == "0" || !head.starts_with('0'));
    if !canonical {
        return None;
    }
    head.parse().ok()
}

/// A credential reply (the v4 encoding).
fn cred_reply(cred: &Credential) -> Result<Reply, i32> {
    cred.to_bytes().map(Reply::ok).map_err(|_| code::KRB5_CC_FORMAT)
}

/// Counts a connection of a uid until dropped.
struct ConnectionSlot<'a> {
    counts: &'a Mutex<HashMap<u32, usize>>,
    uid: u32,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        let mut counts = lock(self.counts);
        if let Some(n) = counts.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.uid);
            }
        }
    }
}

impl<B: Backend> KcmServer<B> {
    /// A server over `backend`.
    pub fn new(backend: B, config: ServerConfig) -> Arc<Self> {
        Arc::new(KcmServer {
            backend,
            store: Mutex::new(Store::new(config.limits)),
            config,
            sessions: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            fetch_slots: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Serves `listener` until `shutdown` completes, each caller known by `SO_PEERCRED`.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, shutdown: impl Future<Output = ()>) {
        self.serve_with(listener, |s: &UnixStream| s.peer_cred().ok().map(|c| c.uid()), shutdown)
            .await;
    }

    /// Serves `listener`, each caller's uid given by `identify` (`None`: the connection is
    /// dropped). The daemon passes `SO_PEERCRED`; tests pass a fixed uid.
    async fn serve_with(
        self: Arc<Self>,
        listener: UnixListener,
        identify: impl Fn(&UnixStream) -> Option<u32>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: wait a little instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(uid) = identify(&stream) else {
                debug!("a connection without peer credentials; closed");
                continue;
            };
            if !self.admit(uid) {
                debug!(uid, "too many connections; closed");
                continue;
            }
            let server = self.clone();
            tokio::spawn(async move {
                let _slot = ConnectionSlot {
                    counts: &server.connections,
                    uid,
                };
                server.handle_connection(stream, uid).await;
            });
        }
    }

    /// Counts a new connection of `uid`, unless a limit says no.
    fn admit(&self, uid: u32) -> bool {
        let mut counts = lock(&self.connections);
        let total: usize = counts.values().sum();
        let mine = counts.get(&uid).copied().unwrap_or(0);
        if total >= self.config.connections || mine >= self.config.connections_per_uid {
            return false;
        }
        counts.insert(uid, mine + 1);
        true
    }

    /// Answers the requests of one connection, in order, until the peer closes it, it idles
    /// out, or it sends what cannot be framed.
    async fn handle_connection(&self, mut stream: UnixStream, uid: u32) {
        let span = tracing::debug_span!("kcm", uid);
        async {
            while let Some(body) = self.read_request(&mut stream).await {
                let reply = match Request::parse(&body) {
                    Ok(req) => {
                        trace!(op = req.op_name(), "request");
                        self.handle(uid, req).await
                    }
                    Err(e) => {
                        self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "malformed request");
                        Reply::error(e.code())
                    }
                };
                let frame = Zeroizing::new(reply.frame());
                if stream.write_all(&frame).await.is_err() {
                    break;
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// The next request body, or None when the connection should end.
    async fn read_request(&self, stream: &mut UnixStream) -> Option<Zeroizing<Vec<u8>>> {
        let mut len = [0u8; 4];
        match tokio::time::timeout(self.config.idle_timeout, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
            Err(_) => {
                debug!("idle connection closed");
                return None;
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_REQUEST_LEN {
            // The rest of the stream cannot be framed any more: say why, then close.
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            debug!(len, "request over the size limit; closing the connection");
            let _ = stream.write_all(&Reply::error(code::KRB5_CC_FORMAT).frame()).await;
            return None;
        }
        // The body may hold a session key (STORE): wiped when dropped.
        let mut body = Zeroizing::new(vec![0u8; len]);
        match tokio::time::timeout(self.config.request_timeout, stream.read_exact(&mut body)).await {
            Ok(Ok(_)) => Some(body),
            Ok(Err(_)) => None,
            Err(_) => {
                debug!("a request did not arrive whole in time; closing the connection");
                None
            }
        }
    }

    /// The answer to `req` from `caller`.
    pub async fn handle(&self, caller: u32, req: Request) -> Reply {
        let op = req.op_name();
        match self.answer(caller, req).await {
            Ok(reply) => reply,
            Err(code) => {
                trace!(op, code, "error reply");
                Reply::error(code)
            }
        }
    }

    async fn answer(&self, caller: u32, req: Request) -> Result<Reply, i32> {
        match req {
            Request::Noop => Ok(Reply::ok(Vec::new())),
            Request::GenNew => Ok(Reply::name(&lock(&self.store).gen_new(caller))),
            Request::GetDefaultCache => {
                self.refresh_session(caller).await;
                Ok(Reply::name(&lock(&self.store).default_name(caller)))
            }
            Request::SetDefaultCache { name } => {
                let owner = owner(caller, &name)?;
                lock(&self.store).set_default(owner, &name);
                Ok(Reply::ok(Vec::new()))
            }
            Request::GetCacheUuidList => {
                self.refresh_session(caller).await;
                Ok(Reply::ok(lock(&self.store).cache_uuids(caller).concat()))
            }
            Request::GetCacheByUuid { uuid } => {
                self.refresh_session(caller).await;
                let name = lock(&self.store).cache_name(caller, &uuid);
                name.map(|n| Reply::name(&n)).ok_or(code::KRB5_CC_END)
            }
            Request::Initialize { name, principal } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let r = lock(&self.store).initialize(owner, &name, principal);
                r.map_err(|e| store_error(owner, &name, e))?;
                Ok(Reply::ok(Vec::new()))
            }
            Request::Destroy { name } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let r = lock(&self.store).destroy(owner, &name);
                r.map_err(|e| store_error(owner, &name, e))?;
                Ok(Reply::ok(Vec::new()))
            }
            Request::Store { name, cred } => self.store_cred(caller, &name, *cred).await,
            Request::Retrieve { name, flags, tag } => self.retrieve(caller, &name, flags, &tag).await,
            Request::GetPrincipal { name } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let store = lock(&self.store);
                let p = store
                    .principal(owner, &name)
                    .map_err(|e| store_error(owner, &name, e))?;
                Ok(Reply::ok(p.to_bytes()))
            }
            Request::GetCredUuidList { name } => {
                let list = self.list(caller, &name).await?;
                Ok(Reply::ok(list.iter().flat_map(|(u, _)| *u).collect()))
            }
            Request::GetCredByUuid { name, uuid } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let found = lock(&self.store).credential(owner, &name, &uuid);
                let cred = found.map_err(|e| store_error(owner, &name, e))?;
                cred.map_or(Err(code::KRB5_CC_END), |c| cred_reply(&c))
            }
            Request::RemoveCred { name, flags, tag } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let removed = lock(&self.store).remove(owner, &name, flags, &tag);
                match removed.map_err(|e| store_error(owner, &name, e))? {
                    0 => Err(code::KRB5_CC_NOTFOUND),
                    _ => Ok(Reply::ok(Vec::new())),
                }
            }
            Request::GetKdcOffset { name } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let offset = lock(&self.store).kdc_offset(owner, &name);
                let offset = offset.map_err(|e| store_error(owner, &name, e))?;
                Ok(Reply::ok(offset.to_be_bytes().to_vec()))
            }
            Request::SetKdcOffset { name, offset } => {
                let owner = self.owner_refreshed(caller, &name).await?;
                let r = lock(&self.store).set_kdc_offset(owner, &name, offset);
                r.map_err(|e| store_error(owner, &name, e))?;
                Ok(Reply::ok(Vec::new()))
            }
            Request::GetCredList { name } => {
                let list = self.list(caller, &name).await?;
                cred_list_reply(&list)
            }
            Request::Replace {
                name,
                offset,
                principal,
                creds,
            } => {
                if let Some(tgt) = creds.iter().find(|c| c.is_tgt()) {
                    return Err(refuse_tgt(caller, &name, tgt));
                }
                let owner = self.owner_refreshed(caller, &name).await?;
                let r = lock(&self.store).replace(owner, &name, offset, principal, creds);
                r.map_err(|e| store_error(owner, &name, e))?;
                Ok(Reply::ok(Vec::new()))
            }
            Request::Unsupported(op) => {
                debug!(op, "unsupported opcode");
                Err(code::KRB5_FCC_INTERNAL)
            }
        }
    }

    /// The owner of cache `name` for `caller`, with that owner's session binding refreshed.
    async fn owner_refreshed(&self, caller: u32, name: &str) -> Result<u32, i32> {
        let owner = owner(caller, name)?;
        self.refresh_session(owner).await;
        Ok(owner)
    }

    async fn list(&self, caller: u32, name: &str) -> Result<Vec<([u8; 16], Arc<Credential>)>, i32> {
        let owner = self.owner_refreshed(caller, name).await?;
        let list = lock(&self.store).credentials(owner, name, now32());
        list.map_err(|e| store_error(owner, name, e))
    }

    async fn store_cred(&self, caller: u32, name: &str, cred: Credential) -> Result<Reply, i32> {
        if cred.is_tgt() {
            return Err(refuse_tgt(caller, name, &cred));
        }
        let owner = self.owner_refreshed(caller, name).await?;
        let r = lock(&self.store).store(owner, name, cred, Origin::Stored, now32());
        r.map_err(|e| store_error(owner, name, e))?;
        Ok(Reply::ok(Vec::new()))
    }

    /// `RETRIEVE`: from the cache, else (the uid's bound primary cache, a service of its
    /// session) from the backend.
    async fn retrieve(&self, caller: u32, name: &str, which: u32, tag: &MatchCred) -> Result<Reply, i32> {
        let owner = owner(caller, name)?;
        let Some(server) = tag.server.as_ref() else {
            return Err(code::KRB5_CC_NOTFOUND);
        };
        if server.is_tgs() {
            debug!(uid = owner, %server, "retrieval of a TGT refused: it stays in the enclave");
            return Err(code::KRB5_CC_NOTFOUND);
        }
        let session = self.refresh_session(owner).await;
        let bound = {
            let mut store = lock(&self.store);
            let found = store.find(owner, name, which, tag, now32());
            if let Some(cred) = found.map_err(|e| store_error(owner, name, e))? {
                return cred_reply(&cred);
            }
            store.bound_session(owner, name).map(str::to_string)
        };
        let Some(session) = session.filter(|s| bound.as_deref() == Some(s.session_id.as_str())) else {
            return Err(code::KRB5_CC_NOTFOUND);
        };
        if !fetchable(&session, which, tag, server) {
            return Err(code::KRB5_CC_NOTFOUND);
        }
        let cred = self.fetch(owner, &session, server, which, tag).await?;
        if !tag.matches(which, &cred) {
            debug!(uid = owner, %server, "the fetched ticket does not match what was asked");
            return Err(code::KRB5_CC_NOTFOUND);
        }
        cred_reply(&cred)
    }

    /// A ticket for `server` from the backend; concurrent callers with the same key share one
    /// call.
    async fn fetch(
        &self,
        owner: u32,
        session: &DefaultSession,
        server: &Principal,
        which: u32,
        tag: &MatchCred,
    ) -> Result<Arc<Credential>, i32> {
        let key: FetchKey = (owner, session.session_id.clone(), server.clone());
        let primary = Store::primary_name(owner);
        let cell = {
            // Under the in-flight lock: a fetch that finished stored its ticket before it left
            // the map, so this either finds the ticket or joins the fetch under way.
            let mut inflight = lock(&self.inflight);
            let cached = lock(&self.store).find(owner, &primary, which, tag, now32());
            if let Ok(Some(cred)) = cached {
                return Ok(cred);
            }
            match inflight.get(&key) {
                Some(cell) => {
                    self.stats.shared_fetches.fetch_add(1, Ordering::Relaxed);
                    cell.clone()
                }
                None => {
                    let cell = FetchCell::default();
                    inflight.insert(key.clone(), cell.clone());
                    cell
                }
            }
        };
        let result = cell
            .get_or_init(|| self.fetch_once(owner, session, server))
            .await
            .clone();
        let mut inflight = lock(&self.inflight);
        if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&key);
        }
        result
    }

    /// One backend call for `server`; the ticket is stored in `owner`'s primary cache (if still
    /// bound to the session) before the waiters see it.
    async fn fetch_once(
        &self,
        owner: u32,
        session: &DefaultSession,
        server: &Principal,
    ) -> Result<Arc<Credential>, i32> {
        let slots = {
            let mut all = lock(&self.fetch_slots);
            all.entry(owner)
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.fetches_per_uid.max(1))))
                .clone()
        };
        let _permit = slots.acquire().await.map_err(|_| code::KRB5_FCC_INTERNAL)?;
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let spn = server.spn();
        let bytes = self
            .backend
            .service_ticket(owner, &session.session_id, &spn)
            .await
            .map(Zeroizing::new)
            .map_err(|e| {
                info!(uid = owner, %spn, error = %e, "no service ticket from credguard");
                e.kcm_code()
            })?;
        let cred = Arc::new(ticket_from_ccache(owner, &bytes, server)?);
        let primary = Store::primary_name(owner);
        let mut store = lock(&self.store);
        if store.bound_session(owner, &primary) != Some(session.session_id.as_str()) {
            debug!(uid = owner, %spn, "the session changed during the fetch; ticket dropped");
            return Err(code::KRB5_CC_NOTFOUND);
        }
        if let Err(e) = store.store(owner, &primary, (*cred).clone(), Origin::Fetched, now32()) {
            debug!(uid = owner, %spn, error = %e, "fetched ticket not kept");
        }
        info!(uid = owner, server = %server, enctype = cred.key.enctype, "service ticket fetched");
        Ok(cred)
    }

    /// Brings `uid`'s binding up to date with its default session (at most once per
    /// `session_ttl`), and returns the session.
    async fn refresh_session(&self, uid: u32) -> Option<DefaultSession> {
        let state = lock(&self.sessions).entry(uid).or_default().clone();
        let mut state = state.lock().await;
        if state.checked.is_some_and(|t| t.elapsed() < self.config.session_ttl) {
            return state.current.clone();
        }
        match self.backend.default_session(uid).await {
            Ok(session) => {
                let view = session.as_ref().and_then(session_view);
                let mut store = lock(&self.store);
                match view {
                    Some(v) => store.bind(uid, v),
                    None => store.unbind(uid),
                }
                state.current = session.filter(|s| Principal::parse(&s.client_principal, NT_PRINCIPAL).is_some());
            }
            Err(e) => warn!(uid, error = %e, "cannot learn the default credguard session; keeping what is known"),
        }
        state.checked = Some(Instant::now());
        state.current.clone()
    }
}

/// The owner of cache `name` for `caller` (see the module documentation), or the refusal.
fn owner(caller: u32, name: &str) -> Result<u32, i32> {
    match name_owner(name) {
        Some(uid) if uid != caller && caller != 0 => {
            debug!(uid = caller, cache = name, "another uid's cache named; refused");
            Err(code::KRB5_FCC_PERM)
        }
        Some(uid) => Ok(uid),
        None => Ok(caller),
    }
}

/// The code for a store error, logged as fits it.
fn store_error(uid: u32, name: &str, e: StoreError) -> i32 {
    match &e {
        StoreError::NoCache(_) => trace!(uid, cache = name, "no such cache"),
        StoreError::Bound { .. } => info!(
            uid,
            cache = name,
            error = %e,
            "refused: this cache shows the default credguard session; use `credguardctl logon` to change it"
        ),
        _ => info!(uid, cache = name, error = %e, "refused: limit reached"),
    }
    e.code()
}

/// The refusal of a TGT a program tried to store.
fn refuse_tgt(uid: u32, name: &str, cred: &Credential) -> i32 {
    info!(
        uid,
        cache = name,
        server = %cred.server,
        "refused to store a TGT: credguard keeps TGTs in its enclave; use `credguardctl logon` instead of kinit"
    );
    code::KRB5_FCC_PERM
}

/// What the store binds for `session`: its principal and keyless TGT entry.
fn session_view(session: &DefaultSession) -> Option<SessionView> {
    let Some(principal) = Principal::parse(&session.client_principal, NT_PRINCIPAL) else {
        warn!(principal = %session.client_principal.escape_debug(), "the default session's principal is malformed");
        return None;
    };
    let tgt = session.tgt.and_then(|t| {
        // The entry's enctype must fit the encoding's 16 bits.
        i16::try_from(t.enctype).ok()?;
        let times = Times {
            authtime: time32(t.start),
            starttime: time32(t.start),
            endtime: time32(t.end),
            renew_till: time32(t.renew_till),
        };
        Some(Credential::keyless_tgt(&principal, &session.realm, t.enctype, times))
    });
    Some(SessionView {
        session_id: session.session_id.clone(),
        principal,
        tgt,
    })
}

/// Whether a retrieval that missed is one the session can answer: a service of its realm (or
/// of the referral realm ""), for its principal, not user-to-user or S4U2Proxy, no config entry.
fn fetchable(session: &DefaultSession, which: u32, tag: &MatchCred, server: &Principal) -> bool {
    if server.is_config() || server.components.is_empty() || server.components.iter().any(String::is_empty) {
        return false;
    }
    if !server.realm.is_empty() && !server.realm.eq_ignore_ascii_case(&session.realm) {
        debug!(%server, "another realm's service: cross-realm tickets are not fetched");
        return false;
    }
    let session_principal = Principal::parse(&session.client_principal, NT_PRINCIPAL);
    if tag
        .client
        .as_ref()
        .is_some_and(|c| Some(c) != session_principal.as_ref())
    {
        return false;
    }
    let user_to_user = which & flags::TC_MATCH_IS_SKEY != 0 && tag.is_skey;
    let second_ticket =
        which & flags::TC_MATCH_2ND_TKT != 0 && tag.second_ticket.as_ref().is_some_and(|t| !t.is_empty());
    !(user_to_user || second_ticket)
}

/// The service ticket in the backend's ccache file, under the server name it was asked for
/// (as MIT's `get_creds.c` stores a ticket it got itself), or the KCM code to answer.
fn ticket_from_ccache(uid: u32, bytes: &[u8], server: &Principal) -> Result<Credential, i32> {
    let file = CcacheFile::parse(bytes).map_err(|e| {
        warn!(uid, error = %e, "the ccache credguard returned is malformed");
        code::KRB5_CC_NOTFOUND
    })?;
    if file.credentials.iter().any(Credential::is_tgt) {
        // This daemon never holds a TGT, whoever sends one.
        warn!(uid, "credguard returned a TGT in a service ticket's ccache; refused");
        return Err(code::KRB5_CC_NOTFOUND);
    }
    let mut cred = file.credentials.into_iter().find(|c| !c.is_config()).ok_or_else(|| {
        warn!(uid, "the ccache credguard returned holds no ticket");
        code::KRB5_CC_NOTFOUND
    })?;
    cred.server = server.clone();
    Ok(cred)
}

/// `GET_CRED_LIST`'s payload: a count, then each credential behind its length.
fn cred_list_reply(list: &[([u8; 16], Arc<Credential>)]) -> Result<Reply, i32> {
    let mut payload = Zeroizing::new(Vec::new());
    payload.extend_from_slice(&u32::try_from(list.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (_, c) in list {
        let bytes = Zeroizing::new(c.to_bytes().map_err(|_| code::KRB5_CC_FORMAT)?);
        payload.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        payload.extend_from_slice(&bytes);
    }
    Ok(Reply::ok(std::mem::take(&mut *payload)))
}

/// The listening socket: the one systemd passed (`LISTEN_PID`/`LISTEN_FDS`, fd 3), if any.
pub fn activated_listener() -> Result<Option<UnixListener>, ServerError> {
    let mut fds = sd_notify::listen_fds().map_err(|e| ServerError::Activation(e.to_string()))?;
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.next().is_some() {
        return Err(ServerError::Activation(
            "more than one socket passed; credguard-kcm.socket has one".into(),
        ));
    }
    // SAFETY: LISTEN_PID names this process, so by the sd_listen_fds protocol fd 3 was opened
    // by the service manager for it alone, and nothing else in this process owns it; it is
    // taken once, here.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    // A socket of another family fails here (no Unix address).
    std_listener
        .local_addr()
        .map_err(|e| ServerError::Activation(format!("fd {fd} is not a Unix socket: {e}")))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| ServerError::Activation(e.to_string()))?;
    UnixListener::from_std(std_listener)
        .map(Some)
        .map_err(|e| ServerError::Activation(e.to_string()))
}

/// Binds the socket at `path` (its directory created; a stale socket replaced, a live one
/// refused), mode 0666: every local program may connect, and is told apart by its uid.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    let err = |what| {
        move |source| ServerError::Socket {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("cannot create the socket's directory"))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err("cannot remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(err("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err("cannot set permissions"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, TgtTimes};
    use crate::ccache::{NT_SRV_INST, Reader};
    use crate::protocol::{Opcode, RequestBuilder};
    use std::sync::atomic::AtomicBool;

    const REALM: &str = "EXAMPLE.TEST";

    /// A backend with sessions set by the test; tickets are built here (no enclave, no KDC: the
    /// server's logic is what these tests check; `tests/mit_clients.rs` runs MIT's programs).
    #[derive(Default)]
    struct FakeBackend {
        sessions: Mutex<HashMap<u32, DefaultSession>>,
        calls: Mutex<Vec<(u32, String, String)>>,
        hold: Mutex<Option<Arc<Semaphore>>>,
        return_tgt: AtomicBool,
        fail: Mutex<Option<BackendError>>,
    }

    impl FakeBackend {
        fn logon(&self, uid: u32, user: &str, session_id: &str) {
            lock(&self.sessions).insert(
                uid,
                DefaultSession {
                    session_id: session_id.into(),
                    client_principal: format!("{user}@{REALM}"),
                    realm: REALM.into(),
                    tgt: Some(TgtTimes {
                        start: 1_000,
                        end: i64::from(u32::MAX - 10),
                        renew_till: 0,
                        enctype: 18,
                    }),
                },
            );
        }

        fn logoff(&self, uid: u32) {
            lock(&self.sessions).remove(&uid);
        }

        fn calls(&self) -> usize {
            lock(&self.calls).len()
        }
    }

    impl Backend for Arc<FakeBackend> {
        async fn default_session(&self, uid: u32) -> Result<Option<DefaultSession>, BackendError> {
            Ok(lock(&self.sessions).get(&uid).cloned())
        }

        async fn service_ticket(&self, uid: u32, session_id: &str, spn: &str) -> Result<Vec<u8>, BackendError> {
            lock(&self.calls).push((uid, session_id.into(), spn.into()));
            let hold = lock(&self.hold).clone();
            if let Some(h) = hold {
                let _ = h.acquire().await;
            }
            if let Some(e) = lock(&self.fail).clone() {
                return Err(e);
            }
            let session = lock(&self.sessions).get(&uid).cloned();
            let Some(s) = session.filter(|s| s.session_id == session_id) else {
                return Err(BackendError::BadReply("no such session".into()));
            };
            let client = Principal::parse(&s.client_principal, NT_PRINCIPAL).unwrap();
            let mut server = Principal::parse(&format!("{spn}@{REALM}"), NT_SRV_INST).unwrap();
            if self.return_tgt.load(Ordering::Relaxed) {
                server = Principal::new(NT_SRV_INST, REALM, &["krbtgt", REALM]);
            }
            let mut cred = crate::ccache::tests::service_cred("x@R", "y@R", u32::MAX - 100);
            cred.client = client.clone();
            cred.server = server;
            // The ticket names the uid, so a test can tell whose ticket it got.
            cred.ticket = format!("ticket of uid {uid} for {spn}").into_bytes();
            Ok(CcacheFile {
                principal: client,
                credentials: vec![cred],
            }
            .to_bytes()
            .unwrap())
        }
    }

    fn config() -> ServerConfig {
        ServerConfig {
            // Every request sees the fake backend's current sessions.
            session_ttl: Duration::ZERO,
            ..ServerConfig::default()
        }
    }

    struct TestDir(PathBuf);
    impl TestDir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("credguard-kcm-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            TestDir(d)
        }
    }
    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Serves `server` on a socket in `dir` whose every caller is `uid` (the test seam: the test
    /// process has one real uid).
    fn serve_as(server: &Arc<KcmServer<Arc<FakeBackend>>>, dir: &TestDir, uid: u32) -> PathBuf {
        let path = dir.0.join(format!("kcm-{uid}.sock"));
        let listener = bind_socket(&path).unwrap();
        tokio::spawn(
            server
                .clone()
                .serve_with(listener, move |_| Some(uid), std::future::pending()),
        );
        path
    }

    async fn call_on(stream: &mut UnixStream, req: RequestBuilder) -> Reply {
        stream.write_all(&req.frame()).await.unwrap();
        read_reply(stream).await
    }

    async fn read_reply(stream: &mut UnixStream) -> Reply {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.unwrap();
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len];
        stream.read_exact(&mut rest).await.unwrap();
        let mut frame = head.to_vec();
        frame.extend(rest);
        Reply::parse_frame(&frame).unwrap()
    }

    async fn call(path: &Path, req: RequestBuilder) -> Reply {
        let mut s = UnixStream::connect(path).await.unwrap();
        call_on(&mut s, req).await
    }

    /// A RETRIEVE as MIT's `krb5_get_credentials` sends it (the ticket must last until now).
    fn retrieve(name: &str, client: Option<&str>, server: Principal) -> RequestBuilder {
        retrieve_with(name, client, server, flags::TC_MATCH_TIMES | flags::GC_CACHED)
    }

    fn retrieve_with(name: &str, client: Option<&str>, server: Principal, which: u32) -> RequestBuilder {
        let tag = MatchCred {
            client: client.map(|c| Principal::parse(c, NT_PRINCIPAL).unwrap()),
            server: Some(server),
            times: Times {
                endtime: now32(),
                ..Times::default()
            },
            ..MatchCred::default()
        };
        let mut mcred = Vec::new();
        tag.encode(&mut mcred);
        RequestBuilder::new(Opcode::Retrieve, Some(name))
            .u32(which)
            .bytes(&mcred)
    }

    fn svc(spn: &str) -> Principal {
        Principal::parse(&format!("{spn}@{REALM}"), NT_SRV_INST).unwrap()
    }

    fn creds_of(reply: &Reply) -> Vec<Credential> {
        assert_eq!(reply.code, 0, "{reply:?}");
        let mut r = Reader::new(&reply.payload);
        let n = r.u32("count").unwrap();
        (0..n)
            .map(|_| Credential::from_bytes(r.data("cred", 1 << 20).unwrap()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn klist_and_kvno_flow_for_a_uid_with_a_session() {
        let dir = TestDir::new("flow");
        let backend = Arc::new(FakeBackend::default());
        backend.logon(1000, "alice", "s1");
        let server = KcmServer::new(backend.clone(), config());
        let path = serve_as(&server, &dir, 1000);
        let mut conn = UnixStream::connect(&path).await.unwrap();

        // kvno: GET_DEFAULT_CACHE, GET_PRINCIPAL, RETRIEVE start_realm config, RETRIEVE service.
        let def = call_on(&mut conn, RequestBuilder::new(Opcode::GetDefaultCache, None)).await;
        assert_eq!(def, Reply::name("1000"));
        let p = call_on(&mut conn, RequestBuilder::new(Opcode::GetPrincipal, Some("1000"))).await;
        assert_eq!(p.payload, Principal::parse("alice@EXAMPLE.TEST", 1).unwrap().to_bytes());
        let conf = Principal::new(0, "X-CACHECONF:", &["krb5_ccache_conf_data", "start_realm"]);
        let r = call_on(&mut conn, retrieve("1000", Some("alice@EXAMPLE.TEST"), conf)).await;
        assert_eq!(r.code, code::KRB5_CC_NOTFOUND);
        assert_eq!(backend.calls(), 0, "config entries are never fetched");
        let r = call_on(&mut conn, retrieve("1000", Some("alice@EXAMPLE.TEST"), svc("HTTP/web"))).await;
        assert_eq!(r.code, 0);
        let cred = Credential::from_bytes(&r.payload).unwrap();
        assert_eq!(cred.server, svc("HTTP/web"));
        assert_eq!(cred.ticket, b"ticket of uid 1000 for HTTP/web");
        assert_eq!(*lock(&backend.calls), vec![(1000, "s1".into(), "HTTP/web".into())]);

        // Again: from the cache, no second fetch.
        let again = call_on(&mut conn, retrieve("1000", Some("alice@EXAMPLE.TEST"), svc("HTTP/web"))).await;
        assert_eq!(again, r);
        assert_eq!(backend.calls(), 1);

        // klist: GET_KDC_OFFSET, GET_CRED_LIST: the keyless TGT entry, then the ticket.
        let off = call_on(&mut conn, RequestBuilder::new(Opcode::GetKdcOffset, Some("1000"))).await;
        assert_eq!(off, Reply::ok(vec![0, 0, 0, 0]));
        let list = creds_of(&call_on(&mut conn, RequestBuilder::new(Opcode::GetCredList, Some("1000"))).await);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].server.to_string(), "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST");
        assert!(list[0].key.key.is_empty() && list[0].ticket.is_empty());
        assert_eq!((list[0].key.enctype, list[0].times.endtime), (18, u32::MAX - 10));
        assert_eq!(list[1].server, svc("HTTP/web"));

        // The UUID interface agrees.
        let uuids = call_on(&mut conn, RequestBuilder::new(Opcode::GetCredUuidList, Some("1000"))).await;
        assert_eq!(uuids.payload.len(), 32);
        let second = call_on(
            &mut conn,
            RequestBuilder::new(Opcode::GetCredByUuid, Some("1000")).bytes(&uuids.payload[16..]),
        )
        .await;
        assert_eq!(Credential::from_bytes(&second.payload).unwrap(), list[1]);
        let gone = call_on(
            &mut conn,
            RequestBuilder::new(Opcode::GetCredByUuid, Some("1000")).bytes(&[0; 16]),
        )
        .await;
        assert_eq!(gone.code, code::KRB5_CC_END);

        // The collection: one cache, named by its UUID.
        let caches = call_on(&mut conn, RequestBuilder::new(Opcode::GetCacheUuidList, None)).await;
        assert_eq!(caches.payload.len(), 16);
        let by_uuid = call_on(
            &mut conn,
            RequestBuilder::new(Opcode::GetCacheByUuid, None).bytes(&caches.payload),
        )
        .await;
        assert_eq!(by_uuid, Reply::name("1000"));

        // kdestroy: the tickets go, the session's entry stays.
        let d = call_on(&mut conn, RequestBuilder::new(Opcode::Destroy, Some("1000"))).await;
        assert_eq!(d.code, 0);
        let list = creds_of(&call_on(&mut conn, RequestBuilder::new(Opcode::GetCredList, Some("1000"))).await);
        assert_eq!(list.len(), 1);

        // Logoff: the cache is gone.
        backend.logoff(1000);
        let p = call_on(&mut conn, RequestBuilder::new(Opcode::GetPrincipal, Some("1000"))).await;
        assert_eq!(p.code, code::KRB5_FCC_NOFILE);
        let r = call_on(&mut conn, retrieve("1000", None, svc("HTTP/other"))).await;
        assert_eq!(r.code, code::KRB5_FCC_NOFILE);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test]
    async fn tgts_are_never_retrieved_nor_stored() {
        let dir = TestDir::new("tgt");
        let backend = Arc::new(FakeBackend::default());
        backend.logon(1000, "alice", "s1");
        let server = KcmServer::new(backend.clone(), config());
        let path = serve_as(&server, &dir, 1000);
        // kvno krbtgt/REALM: not found, whatever the case or realm; nothing asked of the backend.
        for tgs in [
            Principal::new(2, REALM, &["krbtgt", REALM]),
            Principal::new(2, REALM, &["KRBTGT", "OTHER.TEST"]),
            Principal::new(2, "", &["krbtgt", REALM]),
        ] {
            let r = call(&path, retrieve("1000", Some("alice@EXAMPLE.TEST"), tgs)).await;
            assert_eq!(r.code, code::KRB5_CC_NOTFOUND);
        }
        assert_eq!(backend.calls(), 0);
        // kinit into KCM: (INITIALIZE, then) REPLACE or STORE of a TGT: refused.
        let tgt = Credential::keyless_tgt(
            &Principal::parse("alice@EXAMPLE.TEST", 1).unwrap(),
            REALM,
            18,
            Times::default(),
        );
        let tgt_bytes = tgt.to_bytes().unwrap();
        let store = call(
            &path,
            RequestBuilder::new(Opcode::Store, Some("1000")).bytes(&tgt_bytes),
        )
        .await;
        assert_eq!(store.code, code::KRB5_FCC_PERM);
        let replace = RequestBuilder::new(Opcode::Replace, Some("1000:1"))
            .u32(0)
            .bytes(&tgt.client.to_bytes())
            .u32(1)
            .u32(tgt_bytes.len() as u32)
            .bytes(&tgt_bytes);
        assert_eq!(call(&path, replace).await.code, code::KRB5_FCC_PERM);
        assert_eq!(
            call(&path, RequestBuilder::new(Opcode::GetPrincipal, Some("1000:1")))
                .await
                .code,
            code::KRB5_FCC_NOFILE,
            "a refused REPLACE creates nothing"
        );
        // A backend that answers with a TGT is refused too: the daemon never holds one.
        backend.return_tgt.store(true, Ordering::Relaxed);
        let r = call(&path, retrieve("1000", None, svc("HTTP/web"))).await;
        assert_eq!(r.code, code::KRB5_CC_NOTFOUND);
        let list = creds_of(&call(&path, RequestBuilder::new(Opcode::GetCredList, Some("1000"))).await);
        assert_eq!(list.len(), 1, "only the keyless entry");
        assert!(list[0].key.key.is_empty());
    }

    #[tokio::test]
    async fn service_tickets_and_config_entries_can_be_stored() {
        let dir = TestDir::new("store");
        let backend = Arc::new(FakeBackend::default());
        let server = KcmServer::new(backend.clone(), config());
        let path = serve_as(&server, &dir, 1000);
        // A uid without a session: an ordinary KCM cache.
        let generated = call(&path, RequestBuilder::new(Opcode::GenNew, None)).await;
        let name = String::from_utf8(generated.payload[..generated.payload.len() - 1].to_vec()).unwrap();
        assert!(name.starts_with("1000:"), "{name}");
        let alice = Principal::parse("alice@EXAMPLE.TEST", 1).unwrap();
        let init = RequestBuilder::new(Opcode::Initialize, Some(&name)).bytes(&alice.to_bytes());
        assert_eq!(call(&path, init).await.code, 0);
        let mut conf = crate::ccache::tests::service_cred("alice@EXAMPLE.TEST", "x@R", 0);
        conf.server = Principal::new(0, "X-CACHECONF:", &["krb5_ccache_conf_data", "pa_type", "krbtgt/R@R"]);
        conf.ticket = b"2".to_vec();
        let svc_cred = crate::ccache::tests::service_cred("alice@EXAMPLE.TEST", "HTTP/web@EXAMPLE.TEST", u32::MAX);
        for c in [&conf, &svc_cred] {
            let store = RequestBuilder::new(Opcode::Store, Some(&name)).bytes(&c.to_bytes().unwrap());
            assert_eq!(call(&path, store).await.code, 0);
        }
        // krb5_cc_get_config retrieves with no flags (a config entry has no times).
        let r = call(&path, retrieve(&name, None, conf.server.clone())).await;
        assert_eq!(r.code, code::KRB5_CC_NOTFOUND);
        let r = call(&path, retrieve_with(&name, None, conf.server.clone(), flags::GC_CACHED)).await;
        assert_eq!(Credential::from_bytes(&r.payload).unwrap(), conf);
        let r = call(&path, retrieve(&name, None, svc("HTTP/web"))).await;
        assert_eq!(Credential::from_bytes(&r.payload).unwrap(), svc_cred);
        // No session: a miss is a miss, nothing fetched.
        let r = call(&path, retrieve(&name, None, svc("HTTP/none"))).await;
        assert_eq!(r.code, code::KRB5_CC_NOTFOUND);
        assert_eq!(backend.calls(), 0);
        // SET_DEFAULT_CACHE switches the collection's default (kswitch).
        assert_eq!(
            call(&path, RequestBuilder::new(Opcode::SetDefaultCache, Some(&name)))
                .await
                .code,
            0
        );
        assert_eq!(
            call(&path, RequestBuilder::new(Opcode::GetDefaultCache, None)).await,
            Reply::name(&name)
        );
        // REMOVE_CRED of the config entry (what krb5_cc_set_config does first).
        let mut mcred = Vec::new();
        MatchCred {
            server: Some(conf.server.clone()),
            ..MatchCred::default()
        }
        .encode(&mut mcred);
        let rm = RequestBuilder::new(Opcode::RemoveCred, Some(&name))
            .u32(0)
            .bytes(&mcred);
        assert_eq!(call(&path, rm).await.code, 0);
        let rm = RequestBuilder::new(Opcode::RemoveCred, Some(&name))
            .u32(0)
            .bytes(&mcred);
        assert_eq!(call(&path, rm).await.code, code::KRB5_CC_NOTFOUND);
        // An unsupported opcode: what MIT takes as "unsupported".
        assert_eq!(
            call(&path, RequestBuilder::new(Opcode::MoveCache, Some(&name)))
                .await
                .code,
            code::KRB5_FCC_INTERNAL
        );
    }

    #[tokio::test]
    async fn two_uids_never_see_each_others_caches() {
        let dir = TestDir::new("uids");
        let backend = Arc::new(FakeBackend::default());
        backend.logon(1000, "alice", "sa");
        backend.logon(1001, "bob", "sb");
        let server = KcmServer::new(backend.clone(), config());
        let alice = serve_as(&server, &dir, 1000);
        let bob = serve_as(&server, &dir, 1001);
        let root = serve_as(&server, &dir, 0);

        let r = call(&alice, retrieve("1000", None, svc("HTTP/web"))).await;
        assert_eq!(
            Credential::from_bytes(&r.payload).unwrap().ticket,
            b"ticket of uid 1000 for HTTP/web"
        );
        // Bob's default cache is his own, with his own principal and no ticket of Alice's.
        assert_eq!(
            call(&bob, RequestBuilder::new(Opcode::GetDefaultCache, None)).await,
            Reply::name("1001")
        );
        let list = creds_of(&call(&bob, RequestBuilder::new(Opcode::GetCredList, Some("1001"))).await);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].client.to_string(), "bob@EXAMPLE.TEST");
        // Naming Alice's cache is refused, for every opcode that names one.
        for op in [
            Opcode::GetPrincipal,
            Opcode::GetCredList,
            Opcode::GetCredUuidList,
            Opcode::Destroy,
            Opcode::GetKdcOffset,
            Opcode::SetDefaultCache,
        ] {
            let r = call(&bob, RequestBuilder::new(op, Some("1000"))).await;
            assert_eq!(r.code, code::KRB5_FCC_PERM, "{op:?}");
            let r = call(&bob, RequestBuilder::new(op, Some("1000:1"))).await;
            assert_eq!(r.code, code::KRB5_FCC_PERM, "{op:?}");
        }
        let r = call(&bob, retrieve("1000", None, svc("HTTP/web"))).await;
        assert_eq!(r.code, code::KRB5_FCC_PERM);
        // Bob's own retrieval gets Bob's ticket, fetched for uid 1001.
        let r = call(&bob, retrieve("1001", None, svc("HTTP/web"))).await;
        assert_eq!(
            Credential::from_bytes(&r.payload).unwrap().ticket,
            b"ticket of uid 1001 for HTTP/web"
        );
        // Alice's collection lists only her cache; Bob's cache UUID means nothing to her.
        let bob_caches = call(&bob, RequestBuilder::new(Opcode::GetCacheUuidList, None)).await;
        let r = call(
            &alice,
            RequestBuilder::new(Opcode::GetCacheByUuid, None).bytes(&bob_caches.payload),
        )
        .await;
        assert_eq!(r.code, code::KRB5_CC_END);
        // A plain name is per uid: "shared" of Alice is not Bob's.
        let p = Principal::parse("alice@EXAMPLE.TEST", 1).unwrap();
        let init = RequestBuilder::new(Opcode::Initialize, Some("shared")).bytes(&p.to_bytes());
        assert_eq!(call(&alice, init).await.code, 0);
        assert_eq!(
            call(&bob, RequestBuilder::new(Opcode::GetPrincipal, Some("shared")))
                .await
                .code,
            code::KRB5_FCC_NOFILE
        );
        // Root names Alice's cache (gssproxy's KCM:%U): her principal and tickets, and a fetch
        // made on her behalf, not root's.
        let list = creds_of(&call(&root, RequestBuilder::new(Opcode::GetCredList, Some("1000"))).await);
        assert_eq!(list.len(), 2);
        let r = call(&root, retrieve("1000", None, svc("cifs/files"))).await;
        assert_eq!(
            Credential::from_bytes(&r.payload).unwrap().ticket,
            b"ticket of uid 1000 for cifs/files"
        );
        assert_eq!(lock(&backend.calls).last().unwrap().0, 1000);
        // Root's own default is "0", with no session.
        assert_eq!(
            call(&root, RequestBuilder::new(Opcode::GetDefaultCache, None)).await,
            Reply::name("0")
        );
        assert_eq!(
            call(&root, RequestBuilder::new(Opcode::GetPrincipal, Some("0")))
                .await
                .code,
            code::KRB5_FCC_NOFILE
        );
    }

    #[tokio::test]
    async fn concurrent_retrievals_share_one_fetch() {
        let dir = TestDir::new("shared");
        let backend = Arc::new(FakeBackend::default());
        backend.logon(1000, "alice", "s1");
        let gate = Arc::new(Semaphore::new(0));
        *lock(&backend.hold) = Some(gate.clone());
        let server = KcmServer::new(backend.clone(), config());
        let path = serve_as(&server, &dir, 1000);
        const N: usize = 12;
        let mut tasks = Vec::new();
        for _ in 0..N {
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                call(&path, retrieve("1000", Some("alice@EXAMPLE.TEST"), svc("HTTP/web"))).await
            }));
        }
        // Another service meanwhile gets its own fetch.
        let other = {
            let path = path.clone();
            tokio::spawn(async move { call(&path, retrieve("1000", None, svc("ldap/dc"))).await })
        };
        // Wait (bounded) until every request joined a fetch, then let the backend answer.
        for _ in 0..3000 {
            if server.stats().shared_fetches.load(Ordering::Relaxed) == N - 1 && backend.calls() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(server.stats().shared_fetches.load(Ordering::Relaxed), N - 1);
        gate.add_permits(100);
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(Credential::from_bytes(&r.payload).unwrap().server, svc("HTTP/web"));
        }
        assert_eq!(other.await.unwrap().code, 0);
        assert_eq!(backend.calls(), 2, "one fetch per service");
        assert_eq!(server.stats().fetches.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn backend_failures_answer_codes_mit_prints() {
        let dir = TestDir::new("fail");
        let backend = Arc::new(FakeBackend::default());
        backend.logon(1000, "alice", "s1");
        *lock(&backend.fail) = Some(BackendError::Rpc {
            call: "KerberosGetServiceTicket",
            code: tonic::Code::NotFound,
            message: "KDC error 7 (KDC_ERR_S_PRINCIPAL_UNKNOWN) in the TGS exchange".into(),
        });
        let server = KcmServer::new(backend.clone(), config());
        let path = serve_as(&server, &dir, 1000);
        let r = call(&path, retrieve("1000", None, svc("HTTP/nosuch"))).await;
        assert_eq!(r.code, code::KDC_ERROR_BASE + 7);
        // Not cached: the next retrieval asks again.
        *lock(&backend.fail) = None;
        let r = call(&path, retrieve("1000", None, svc("HTTP/nosuch"))).await;
        assert_eq!(r.code, 0);
        assert_eq!(backend.calls(), 2);
        // Cross-realm and another client's tickets are not fetched.
        let foreign = Principal::new(2, "OTHER.TEST", &["HTTP", "web"]);
        assert_eq!(
            call(&path, retrieve("1000", None, foreign)).await.code,
            code::KRB5_CC_NOTFOUND
        );
        let r = call(&path, retrieve("1000", Some("mallory@EXAMPLE.TEST"), svc("HTTP/x"))).await;
        assert_eq!(r.code, code::KRB5_CC_NOTFOUND);
        // The referral realm "" is the session's.
        let referral = Principal::new(2, "", &["HTTP", "ref"]);
        let r = call(&path, retrieve("1000", None, referral.clone())).await;
        assert_eq!(Credential::from_bytes(&r.payload).unwrap().server, referral);
        assert_eq!(backend.calls(), 3);
    }

    #[tokio::test]
    async fn garbage_gets_errors_and_the_daemon_keeps_serving() {
        let dir = TestDir::new("garbage");
        let backend = Arc::new(FakeBackend::default());
        backend.logon(1000, "alice", "s1");
        let server = KcmServer::new(backend.clone(), config());
        let path = serve_as(&server, &dir, 1000);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut conn = UnixStream::connect(&path).await.unwrap();
        for i in 0..300 {
            let len = (next() % 200) as usize;
            let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && len >= 4 {
                // A valid header and a real opcode, then noise.
                body[0] = 2;
                body[1] = 0;
                let op = [3u16, 4, 5, 6, 7, 8, 9, 10, 11, 18, 19, 20, 21, 22, 23, 13001, 13002][i % 17];
                body[2..4].copy_from_slice(&op.to_be_bytes());
            }
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend(&body);
            conn.write_all(&frame).await.unwrap();
            // Every frame is answered (an error or, by luck, an answer).
            let _ = read_reply(&mut conn).await;
        }
        // A frame over the limit: an error, then the connection closes.
        conn.write_all(&((MAX_REQUEST_LEN as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        assert_eq!(read_reply(&mut conn).await.code, code::KRB5_CC_FORMAT);
        let mut byte = [0u8; 1];
        assert_eq!(conn.read(&mut byte).await.unwrap(), 0);
        // A half request then a hang-up.
        let mut half = UnixStream::connect(&path).await.unwrap();
        half.write_all(&[0, 0, 0, 50, 2, 0]).await.unwrap();
        drop(half);
        // Still serving.
        let r = call(&path, RequestBuilder::new(Opcode::GetPrincipal, Some("1000"))).await;
        assert_eq!(r.code, 0);
        assert!(server.stats().bad_requests.load(Ordering::Relaxed) > 100);
    }

    #[tokio::test]
    async fn connection_limits_per_uid() {
        let dir = TestDir::new("conns");
        let backend = Arc::new(FakeBackend::default());
        let server = KcmServer::new(
            backend,
            ServerConfig {
                connections_per_uid: 2,
                ..config()
            },
        );
        let a = serve_as(&server, &dir, 1000);
        let b = serve_as(&server, &dir, 1001);
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = UnixStream::connect(&a).await.unwrap();
            assert_eq!(call_on(&mut c, RequestBuilder::new(Opcode::Noop, None)).await.code, 0);
            held.push(c);
        }
        // The third of uid 1000 is closed unanswered; uid 1001 is still served.
        let mut third = UnixStream::connect(&a).await.unwrap();
        let _ = third.write_all(&RequestBuilder::new(Opcode::Noop, None).frame()).await;
        let mut byte = [0u8; 1];
        assert!(matches!(third.read(&mut byte).await, Ok(0) | Err(_)));
        assert_eq!(call(&b, RequestBuilder::new(Opcode::Noop, None)).await.code, 0);
        // Once one closes, uid 1000 may connect again.
        drop(held.pop());
        let mut ok = false;
        for _ in 0..500 {
            let mut c = UnixStream::connect(&a).await.unwrap();
            if c.write_all(&RequestBuilder::new(Opcode::Noop, None).frame())
                .await
                .is_ok()
            {
                let mut head = [0u8; 12];
                if c.read_exact(&mut head).await.is_ok() {
                    ok = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ok);
    }

    #[test]
    fn cache_names_and_owners() {
        assert_eq!(name_owner("1000"), Some(1000));
        assert_eq!(name_owner("1000:3"), Some(1000));
        assert_eq!(name_owner("0"), Some(0));
        assert_eq!(name_owner("01000"), None);
        assert_eq!(name_owner("abc"), None);
        assert_eq!(name_owner("99999999999"), None);
        assert_eq!(name_owner(":1"), None);
        assert_eq!(owner(1000, "1000:1"), Ok(1000));
        assert_eq!(owner(1000, "mine"), Ok(1000));
        assert_eq!(owner(1000, "1001"), Err(code::KRB5_FCC_PERM));
        assert_eq!(owner(0, "1001"), Ok(1001));
        assert_eq!(owner(0, "mine"), Ok(0));
    }
}
