//! The proxy's link to the enclave: one stream over the VMM's hybrid-vsock Unix socket, with many
//! calls in flight, reconnection with backoff, and a state every caller can see.
//!
//! While the link is down every call fails at once with UNAVAILABLE; a call in flight when the
//! link drops fails with UNAVAILABLE too (never a wrong answer: replies are matched by call id
//! and the pending calls of a dead connection are dropped with it). The number of calls waiting
//! for the enclave is bounded; past it callers get RESOURCE_EXHAUSTED instead of a growing queue.
//!
//! Every reply may carry the enclave's audit records of the secrets that call used; the link
//! writes each one to the log (tracing target `audit`) with the caller and the wall time, so no
//! caller can forget to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credguard_proto::enclave::{AsyncEnclaveClient, AuditRecord, Frame, StatusRequest};
use credguard_proto::framing::{FrameDecoder, encode_frame};
use credguard_proto::rpc::{AsyncTransport, RpcError};
use credguard_proto::vmm_status::{MAX_VMM_STATUS_LEN, VMM_STATUS_PORT, VmmStatus};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};
use zeroize::Zeroize;

use crate::config::EnclaveConfig;
use crate::error::LsaError;
use crate::sessions::{Caller, now_unix_ms};

/// What the proxy knows of the enclave it is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveInfo {
    /// Enclave kernel version.
    pub version: String,
    /// SHA-384 of the image the VMM booted.
    pub measurement: Vec<u8>,
    /// Random identifier of this boot of the enclave: sessions of another boot are gone.
    pub boot_id: Vec<u8>,
}

/// State of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; trying.
    Connecting {
        /// Why the last attempt failed (empty before the first).
        last_error: String,
    },
    /// Connected and answering.
    Ready(EnclaveInfo),
}

impl LinkState {
    /// `"ready"` or `"connecting"`, as `Status.state` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            LinkState::Connecting { .. } => "connecting",
            LinkState::Ready(_) => "ready",
        }
    }
}

type Pending = HashMap<u64, oneshot::Sender<Frame>>;

struct Shared {
    cfg: EnclaveConfig,
    state: watch::Sender<LinkState>,
    /// The current connection's writer queue and its pending calls, replaced on reconnection.
    conn: Mutex<Option<EnclaveConnection>>,
    next_call_id: AtomicU64,
}

/// One connection to the enclave's vsock port: where callers write their frames and the calls
/// waiting for a reply on it.
#[derive(Clone)]
struct EnclaveConnection {
    /// Callers write their own frames: no writer task, so no extra thread wake-up per call
    /// (each one costs tens of microseconds on the target machines).
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    /// Whole frames waiting for the writer. Whoever holds `writer` writes everything queued here
    /// in one go (flat combining): calls from many clients that arrive while a write is under way
    /// reach the VMM in one write, hence one device wake-up and one enclave notification.
    outbox: Arc<Mutex<Vec<u8>>>,
    /// Bounds the calls in flight; a caller that finds none free gets RESOURCE_EXHAUSTED.
    slots: Arc<tokio::sync::Semaphore>,
    pending: Arc<Mutex<Pending>>,
}

/// The link to the enclave. Cheap to clone.
#[derive(Clone)]
pub struct EnclaveLink {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EnclaveLink {
    /// Starts the link's background task, which connects and reconnects for as long as the
    /// runtime lives.
    pub fn start(cfg: EnclaveConfig) -> Self {
        let (state, _) = watch::channel(LinkState::Connecting {
            last_error: String::new(),
        });
        let link = EnclaveLink {
            shared: Arc::new(Shared {
                cfg,
                state,
                conn: Mutex::new(None),
                next_call_id: AtomicU64::new(1),
            }),
        };
        tokio::spawn(link.clone().supervise());
        link
    }

    /// The current state.
    pub fn state(&self) -> LinkState {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every change of state.
    pub fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// Waits until the link is ready or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<EnclaveInfo, LsaError> {
        let mut rx = self.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| matches!(s, LinkState::Ready(_)))).await;
        match res {
            Ok(Ok(s)) => match &*s {
                LinkState::Ready(info) => Ok(info.clone()),
                LinkState::Connecting { .. } => Err(self.unavailable()),
            },
            _ => Err(self.unavailable()),
        }
    }

    fn unavailable(&self) -> LsaError {
        match &*self.shared.state.borrow() {
            LinkState::Connecting { last_error } if !last_error.is_empty() => {
                LsaError::Unavailable(format!("the enclave is not reachable ({last_error}); retry later"))
            }
            _ => LsaError::Unavailable("the enclave is not reachable; retry later".into()),
        }
    }

    /// A client of the enclave service (generated from `enclave.proto`) on behalf of `caller`:
    /// the audit records of its calls are logged with the caller's identity. Every call that may
    /// use a session's secret goes through one.
    pub fn client(&self, caller: Caller) -> AsyncEnclaveClient<CallerLink> {
        AsyncEnclaveClient::new(CallerLink {
            link: self.clone(),
            caller: Some(caller),
        })
    }

    /// A client for calls made on no client's behalf (`Status`, `Logoff`); audit records in
    /// their replies are still logged, with no caller.
    pub fn service_client(&self) -> AsyncEnclaveClient<CallerLink> {
        AsyncEnclaveClient::new(CallerLink {
            link: self.clone(),
            caller: None,
        })
    }

    /// Calls method `method_id` with an encoded request. The payload is wiped once written.
    /// Returns the reply frame, whatever its status.
    pub async fn call_frame(&self, method_id: u32, payload: Vec<u8>) -> Result<Frame, LsaError> {
        let mut payload = payload;
        let Some(conn) = lock(&self.shared.conn).clone() else {
            payload.zeroize();
            return Err(self.unavailable());
        };
        let Ok(_slot) = conn.slots.clone().try_acquire_owned() else {
            payload.zeroize();
            return Err(LsaError::ResourceExhausted(
                "the enclave's request queue is full; retry shortly".into(),
            ));
        };
        let call_id = self.shared.next_call_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&conn.pending).insert(call_id, reply_tx);
        let mut frame = Frame {
            call_id,
            method_id,
            payload,
            ..Default::default()
        };
        let mut buf = Vec::with_capacity(frame.payload.len() + 64);
        encode_frame(&frame, &mut buf);
        // The payload may be a logon's secret: wipe both copies once written.
        frame.payload.zeroize();
        // In its own task: if the caller goes away mid-write (its client hung up), the frame is
        // still written whole; a half-written frame would desynchronize the stream.
        let written = tokio::spawn(write_combined(conn.clone(), buf)).await;
        if !matches!(written, Ok(Ok(()))) {
            lock(&conn.pending).remove(&call_id);
            return Err(LsaError::Unavailable(
                "the connection to the enclave was lost during the call".into(),
            ));
        }
        let timeout = Duration::from_millis(self.shared.cfg.call_timeout_ms);
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(LsaError::Unavailable(
                "the connection to the enclave was lost during the call".into(),
            )),
            Err(_) => {
                lock(&conn.pending).remove(&call_id);
                Err(LsaError::Unavailable(format!(
                    "the enclave did not answer within {} ms",
                    timeout.as_millis()
                )))
            }
        }
    }

    async fn supervise(self) {
        let mut backoff = Duration::from_millis(50);
        let mut last_logged = String::new();
        loop {
            match self.run_connection().await {
                Ok(reason) => {
                    warn!(reason = %reason, "enclave link: lost; reconnecting");
                    self.set_state(LinkState::Connecting { last_error: reason });
                    backoff = Duration::from_millis(50);
                    last_logged.clear();
                }
                Err(e) => {
                    // One line per new reason, not one per attempt.
                    if e != last_logged {
                        warn!(error = %e, "enclave link: cannot connect; retrying with backoff");
                        last_logged = e.clone();
                    }
                    self.set_state(LinkState::Connecting { last_error: e });
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    fn set_state(&self, s: LinkState) {
        self.shared.state.send_if_modified(|cur| {
            if *cur != s {
                *cur = s;
                true
            } else {
                false
            }
        });
    }

    /// Runs one connection: `Err` if it could not be set up, `Ok(reason)` when it ends.
    async fn run_connection(&self) -> Result<String, String> {
        let cfg = &self.shared.cfg;
        let stream = tokio::time::timeout(Duration::from_secs(5), handshake(&cfg.vmm_socket, cfg.port))
            .await
            .map_err(|_| "the vsock handshake timed out".to_string())??;
        let (read_half, write_half) = stream.into_split();
        let pending = Arc::new(Mutex::new(Pending::new()));
        *lock(&self.shared.conn) = Some(EnclaveConnection {
            writer: Arc::new(tokio::sync::Mutex::new(write_half)),
            outbox: Arc::new(Mutex::new(Vec::new())),
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_queued_calls)),
            pending: pending.clone(),
        });
        let mut reader = tokio::spawn(read_loop(read_half, pending.clone()));

        // Learn who we are talking to before declaring the link ready.
        let status = tokio::select! {
            s = async { self.service_client().status(&StatusRequest {}).await } => s,
            r = &mut reader => Err(LsaError::Unavailable(r.unwrap_or_else(|e| e.to_string()))),
        };
        let reason = match status {
            Ok(s) => {
                let info = EnclaveInfo {
                    version: s.version,
                    measurement: s.measurement,
                    boot_id: s.boot_id,
                };
                info!(
                    version = %info.version,
                    measurement = %hex::encode(&info.measurement),
                    boot_id = %hex::encode(&info.boot_id),
                    "enclave link: ready"
                );
                self.set_state(LinkState::Ready(info));
                match reader.await {
                    Ok(reason) => reason,
                    Err(e) => e.to_string(),
                }
            }
            Err(e) => {
                reader.abort();
                format!("the enclave did not answer Status: {e}")
            }
        };
        // Dropping the pending senders fails every call still waiting on this connection.
        lock(&self.shared.conn).take();
        lock(&pending).clear();
        Ok(reason)
    }
}

/// Queues the encoded frame `buf` (wiped here) and writes the queue until it is empty: the
/// frames of calls that queued while another write was under way go out in one write. A frame
/// another caller wrote counts as written; if that write failed, the connection is lost and the
/// call fails when its pending reply is dropped.
async fn write_combined(conn: EnclaveConnection, mut buf: Vec<u8>) -> std::io::Result<()> {
    lock(&conn.outbox).extend_from_slice(&buf);
    buf.zeroize();
    let mut writer = conn.writer.lock().await;
    loop {
        let mut batch = std::mem::take(&mut *lock(&conn.outbox));
        if batch.is_empty() {
            return Ok(());
        }
        let written = writer.write_all(&batch).await;
        // Frames may carry a logon's secret.
        batch.zeroize();
        written?;
    }
}

/// How long the VMM may take to answer its status port.
const VMM_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

impl EnclaveLink {
    /// What the VMM itself says about the enclave boot it runs (protection, restarts, the
    /// attestation signature), asked on its status port over the same socket; the enclave never
    /// relays these.
    pub async fn vmm_status(&self) -> Result<VmmStatus, String> {
        let ask = async {
            let stream = handshake(&self.shared.cfg.vmm_socket, VMM_STATUS_PORT).await?;
            let mut bytes = Vec::new();
            stream
                .take(MAX_VMM_STATUS_LEN as u64 + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("VMM status: {e}"))?;
            if bytes.len() > MAX_VMM_STATUS_LEN {
                return Err("the VMM status is too long".to_string());
            }
            VmmStatus::decode(bytes.as_slice()).map_err(|_| "the VMM status does not decode".to_string())
        };
        tokio::time::timeout(VMM_STATUS_TIMEOUT, ask)
            .await
            .unwrap_or_else(|_| Err("the VMM did not answer its status port in time".into()))
    }
}

async fn handshake(path: &Path, port: u32) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| format!("vsock handshake: {e}"))?;
    // Byte by byte: nothing after the newline may be consumed, it belongs to the enclave stream.
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match stream.read(&mut byte).await {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(char::from(byte[0])),
            Err(e) => return Err(format!("vsock handshake: {e}")),
        }
    }
    if line.trim_end() != format!("OK {port}") {
        return Err(if line.is_empty() {
            format!("the enclave is not listening on vsock port {port} yet")
        } else {
            format!("unexpected vsock handshake answer {:?}", line.trim_end())
        });
    }
    Ok(stream)
}

async fn read_loop(mut r: OwnedReadHalf, pending: Arc<Mutex<Pending>>) -> String {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => return "the enclave closed the connection".into(),
            Ok(n) => n,
            Err(e) => return format!("read from the enclave failed: {e}"),
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(tx) = lock(&pending).remove(&frame.call_id) {
                        let _ = tx.send(frame);
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("the enclave sent an invalid frame: {e}"),
            }
        }
    }
}

/// The link on behalf of one caller (or of none): the transport of the generated client.
#[derive(Clone)]
pub struct CallerLink {
    link: EnclaveLink,
    caller: Option<Caller>,
}

impl AsyncTransport for CallerLink {
    type Error = LsaError;

    async fn call(&self, method_id: u32, payload: Vec<u8>) -> Result<Vec<u8>, LsaError> {
        let reply = self.link.call_frame(method_id, payload).await?;
        log_audit(self.caller, &reply.audit);
        match RpcError::from_frame(&reply) {
            Some(e) => Err(e.into()),
            None => Ok(reply.payload),
        }
    }
}

/// Writes the enclave's audit records to the log: one line each, tracing target `audit`, with the
/// caller (uid, or vsock cid) and the wall time added here, since the enclave knows neither.
/// Records hold no secret (the session handle is the session id the proxy already logs).
fn log_audit(caller: Option<Caller>, records: &[AuditRecord]) {
    if records.is_empty() {
        return;
    }
    let unix_ms = now_unix_ms();
    for r in records {
        let (uid, cid) = match caller {
            Some(Caller::Uid(u)) => (Some(u), None),
            Some(Caller::VsockCid(c)) => (None, Some(c)),
            None => (None, None),
        };
        info!(
            target: "audit",
            operation = %r.operation,
            uid,
            vsock_cid = cid,
            session = %hex::encode(&r.session_handle),
            // Debug-formatted: the target may come from the network (an NTLM CHALLENGE).
            target_name = ?r.target,
            code = r.code,
            outcome = if r.code == 0 { "ok" } else { "refused" },
            unix_ms,
            enclave_time_ms = r.enclave_time_ms,
            "secret used"
        );
    }
}

/// Milliseconds since `t`, saturating.
pub fn millis_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
