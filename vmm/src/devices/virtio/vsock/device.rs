//! The vsock worker thread: one epoll loop over the queue-notify eventfds, the Unix listener,
//! each client, a command eventfd (activation, reset) and a stop eventfd.
//!
//! Each wake-up handles every ready event, then consumes the whole tx queue and fills as many
//! rx buffers as there are packets for the guest, and raises the interrupt once if any buffer
//! was used (whether or not the guest acknowledged the previous one), except for a queue on
//! which the driver set `VRING_AVAIL_F_NO_INTERRUPT`.
//!
//! A guest that sends beyond the credit we gave it, to a client that does not read, pauses the
//! whole tx queue (the chain stays in the ring) until that client drains: memory stays bounded
//! at about [`CONN_BUF_SIZE`] plus one packet per connection.
//!
//! Packets are parsed with `virtio-vsock`'s [`VsockPacket`] (header and data in one descriptor,
//! or a header descriptor followed by one data descriptor; each must lie in one guest memory
//! region). Chains in another shape are dropped (returned to the guest with length 0).

use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::connection::{
    CONN_BUF_SIZE, HEADER_SIZE, Header, ReadOutcome, State, VsockConnection, append_wiping, clear_wiping, wipe,
};
use super::proto::*;
use super::{Command, EVENT_QUEUE, HOST_CID, HostAnsweredPort, MAX_CONNECTIONS, RX_QUEUE, TX_QUEUE, VsockError, unix};
use crate::devices::virtio::IrqTrigger;

/// Largest packet payload accepted from the guest, and largest data buffer we fill.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Most pending connection-less replies (`OP_RST`s) kept for the guest.
pub const MAX_CTRL_BACKLOG: usize = 1024;
/// First host-side port given to a client.
pub const FIRST_LOCAL_PORT: u32 = 1 << 30;

const TOKEN_STOP: u64 = 0;
const TOKEN_COMMANDS: u64 = 1;
const TOKEN_NOTIFY_BASE: u64 = 2; // + queue index
const TOKEN_LISTENER: u64 = 8;
const TOKEN_CONN_BASE: u64 = 1 << 32; // + local port

/// The eventfds the worker waits on.
#[derive(Debug)]
pub(crate) struct WorkerFds {
    /// Ends the thread.
    pub stop: EventFd,
    /// A [`Command`] is waiting.
    pub commands: EventFd,
    /// Queue notifications (rx, tx, event).
    pub notify: [EventFd; 3],
}

/// The queues, once the driver activated the device.
struct Active {
    queues: Vec<Queue>,
    irq: Arc<IrqTrigger>,
}

/// What to do with a tx chain.
enum TxVerdict {
    /// Return it to the guest.
    Done,
    /// Leave it in the queue: its connection's host buffer is full.
    Stall(u32),
}

/// The vsock device's worker.
pub(crate) struct Worker {
    mem: GuestMemoryMmap,
    guest_cid: u64,
    listener: UnixListener,
    fds: WorkerFds,
    commands: mpsc::Receiver<Command>,
    epoll: Epoll,
    active: Option<Active>,
    conns: BTreeMap<u32, VsockConnection>,
    next_port: u32,
    ctrl: VecDeque<Header>,
    tx_stalled: Option<u32>,
    rr_last: u32,
    scratch: Vec<u8>,
    host_answered: Option<HostAnsweredPort>,
    /// Polling for the guest's reply instead of sleeping (see [`ReplySpin`]).
    spin: ReplySpin,
}

/// Adaptive polling for the guest's reply. After the worker hands the guest data, the reply
/// usually comes within tens of microseconds, less than a sleep and wake-up of this thread costs
/// here; but a long call (a password's string-to-key) would only burn a CPU that the guest or the
/// client needs (2 cores). So the worker polls for about twice as long as recent replies took,
/// within [`REPLY_SPIN_MIN`]..[`REPLY_SPIN_MAX`], and not at all while they take longer than
/// [`REPLY_SLOW`]. (Measured on 2 cores: a fixed 100 µs poll took `Status` over vsock from 1.6x
/// to 1.1x the bare doorbell and NTLM handshakes from ~3,800/s to ~4,700/s.)
/// It stops at the first packet from the guest, so the host side of the reply (the client
/// waking up) is not kept off a CPU either.
#[derive(Debug, Default)]
pub(crate) struct ReplySpin {
    /// Until when to poll, after the last data handed to the guest.
    until: Option<Instant>,
    /// When the guest was last handed data with no reply seen since.
    handed: Option<Instant>,
    /// Smoothed time from handing the guest data to its first packet back, µs (0: none seen).
    recent_us: u64,
}

/// Shortest poll: a reply seldom comes sooner, whatever the average.
pub(crate) const REPLY_SPIN_MIN: Duration = Duration::from_micros(50);
/// Longest poll.
pub(crate) const REPLY_SPIN_MAX: Duration = Duration::from_micros(150);
/// Replies slower than this on average (a password's string-to-key) are waited for asleep. Under
/// many clients' load replies queue up to a few hundred microseconds, and polling still pays.
pub(crate) const REPLY_SLOW: Duration = Duration::from_micros(500);

impl ReplySpin {
    /// The guest was handed data at `now`.
    pub(crate) fn handed(&mut self, now: Instant) {
        self.handed.get_or_insert(now);
        self.until = self.budget().map(|b| now + b);
    }

    /// The guest sent a packet at `now`: stop polling, and learn how long it took.
    pub(crate) fn replied(&mut self, now: Instant) {
        self.until = None;
        if let Some(t) = self.handed.take() {
            let took = u64::try_from(now.saturating_duration_since(t).as_micros()).unwrap_or(u64::MAX);
            // An exponential average over about 8 replies.
            self.recent_us = if self.recent_us == 0 {
                took
            } else {
                (self.recent_us * 7 + took) / 8
            };
        }
    }

    /// How long to poll now: twice the recent reply time, within the bounds; none while replies
    /// take longer than [`REPLY_SLOW`].
    pub(crate) fn budget(&self) -> Option<Duration> {
        match self.recent_us {
            0 => Some(REPLY_SPIN_MAX),
            r if r > REPLY_SLOW.as_micros() as u64 => None,
            r => Some(Duration::from_micros(r.saturating_mul(2)).clamp(REPLY_SPIN_MIN, REPLY_SPIN_MAX)),
        }
    }

    /// Whether to poll (not sleep) at `now`.
    pub(crate) fn polling(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

impl Worker {
    /// A worker serving `listener`; nothing runs until [`Worker::run`].
    pub(crate) fn new(
        mem: GuestMemoryMmap,
        guest_cid: u64,
        listener: UnixListener,
        fds: WorkerFds,
        commands: mpsc::Receiver<Command>,
        host_answered: Option<HostAnsweredPort>,
    ) -> Result<Self, VsockError> {
        let sys = |what, source| VsockError::Sys { what, source };
        let epoll = Epoll::new().map_err(|e| sys("epoll", e))?;
        let add = |fd: i32, token: u64| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, token))
                .map_err(|e| sys("epoll registration", e))
        };
        add(fds.stop.as_raw_fd(), TOKEN_STOP)?;
        add(fds.commands.as_raw_fd(), TOKEN_COMMANDS)?;
        for (i, evt) in fds.notify.iter().enumerate() {
            add(evt.as_raw_fd(), TOKEN_NOTIFY_BASE + i as u64)?;
        }
        add(listener.as_raw_fd(), TOKEN_LISTENER)?;
        Ok(Worker {
            mem,
            guest_cid,
            listener,
            fds,
            commands,
            epoll,
            active: None,
            conns: BTreeMap::new(),
            next_port: FIRST_LOCAL_PORT,
            ctrl: VecDeque::new(),
            tx_stalled: None,
            rr_last: 0,
            scratch: vec![0; MAX_PKT_DATA as usize],
            host_answered,
            spin: ReplySpin::default(),
        })
    }

    /// The event loop; returns when the stop eventfd is signalled.
    pub(crate) fn run(mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        loop {
            let timeout = if self.spin.polling(Instant::now()) {
                0
            } else {
                self.next_timeout_ms()
            };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("vsock: epoll_wait failed, stopping: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => {
                        tracing::debug!("vsock: worker stopping");
                        return;
                    }
                    TOKEN_COMMANDS => {
                        let _ = self.fds.commands.read();
                        self.handle_commands();
                    }
                    t if (TOKEN_NOTIFY_BASE..TOKEN_NOTIFY_BASE + 3).contains(&t) => {
                        // The work is found by scanning the queues below.
                        let _ = self.fds.notify[(t - TOKEN_NOTIFY_BASE) as usize].read();
                        if t - TOKEN_NOTIFY_BASE == EVENT_QUEUE as u64 {
                            tracing::trace!("vsock: event queue notified");
                        }
                    }
                    TOKEN_LISTENER => self.accept_clients(),
                    t if t >= TOKEN_CONN_BASE => self.handle_client((t - TOKEN_CONN_BASE) as u32, ev.events()),
                    t => tracing::debug!("vsock: unknown epoll token {t}"),
                }
            }
            self.reap_slow_clients();
            self.process_queues();
            self.update_interests();
        }
    }

    /// One round of [`Worker::run`]'s work without waiting for events: commands, new clients,
    /// every client's input, the queues. For the fuzz harness (`super::fuzz`), which must run each
    /// input on its own thread, deterministically.
    pub(crate) fn poll_once(&mut self) {
        self.handle_commands();
        self.accept_clients();
        let ports: Vec<u32> = self.conns.keys().copied().collect();
        for port in ports {
            self.handle_client(port, (libc::EPOLLIN | libc::EPOLLOUT) as u32);
        }
        self.process_queues();
    }

    fn handle_commands(&mut self) {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Activate { queues, irq }) => {
                    tracing::debug!("vsock: activated");
                    self.active = Some(Active { queues, irq });
                }
                Ok(Command::Reset) => {
                    tracing::debug!("vsock: reset by the driver");
                    self.active = None;
                    self.ctrl.clear();
                    self.tx_stalled = None;
                    // Streams the guest knew are gone with it; clients still waiting for the
                    // driver keep waiting.
                    let known: Vec<u32> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| c.guest_knows())
                        .map(|(&p, _)| p)
                        .collect();
                    for port in known {
                        self.drop_conn(port, false);
                    }
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }

    /// Milliseconds until the earliest `CONNECT` line deadline (-1: none).
    fn next_timeout_ms(&self) -> i32 {
        let now = Instant::now();
        self.conns
            .values()
            .filter_map(|c| c.line_deadline)
            .min()
            .map_or(-1, |d| {
                d.saturating_duration_since(now).as_millis().min(i32::MAX as u128) as i32 + 1
            })
    }

    /// Drops clients that did not send their `CONNECT` line in time.
    fn reap_slow_clients(&mut self) {
        let now = Instant::now();
        let late: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.line_deadline.is_some_and(|d| d <= now))
            .map(|(&p, _)| p)
            .collect();
        for port in late {
            if let Some(conn) = self.conns.get(&port) {
                tracing::debug!("vsock: client {port} sent no CONNECT line in time");
                let _ = std::io::Write::write(&mut &conn.stream, &unix::err_line(&"timeout"));
            }
            self.drop_conn(port, false);
        }
    }

    fn accept_clients(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("vsock: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                tracing::debug!("vsock: refusing a client: {MAX_CONNECTIONS} connections open");
                let _ = stream.set_nonblocking(true);
                let _ = std::io::Write::write(&mut &stream, &unix::err_line(&"too many connections"));
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::warn!("vsock: client socket: {e}");
                continue;
            }
            let Some(port) = self.alloc_port() else {
                continue;
            };
            tracing::debug!("vsock: client connected, host port {port}");
            self.conns.insert(port, VsockConnection::new(stream, port));
        }
    }

    fn alloc_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }

    fn handle_client(&mut self, port: u32, events: u32) {
        let Some(conn) = self.conns.get_mut(&port) else { return };
        // On a hang-up too: the failing write is how a closed client is noticed while we are
        // not reading from it.
        let out_events = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if events & out_events != 0 && !conn.host_out.is_empty() && conn.flush().is_err() {
            self.drop_conn(port, true);
            return;
        }
        let Some(conn) = self.conns.get_mut(&port) else { return };
        let waiting = matches!(conn.state, State::Connecting | State::RequestSent);
        if waiting && events & (libc::EPOLLHUP | libc::EPOLLERR) as u32 == 0 {
            return;
        }
        if events & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            match conn.read_client(&mut self.scratch) {
                ReadOutcome::Nothing | ReadOutcome::Progress => {
                    if self.answer_host_port(port) {
                        return;
                    }
                }
                ReadOutcome::Gone | ReadOutcome::BadLine => self.drop_conn(port, true),
            }
        }
        self.after_flush(port);
    }

    /// Answers a client whose `CONNECT` line named the port the VMM answers itself, and closes
    /// it; true if it did. The guest never hears of the connection.
    fn answer_host_port(&mut self, port: u32) -> bool {
        let Some(answered) = &self.host_answered else {
            return false;
        };
        let Some(conn) = self.conns.get(&port) else {
            return false;
        };
        if !matches!(conn.state, State::Connecting) || conn.guest_port != answered.port {
            return false;
        }
        let mut reply = unix::ok_line(answered.port);
        reply.extend((answered.answer)());
        // A fresh socket's send buffer takes the small reply whole; a client that does not read
        // it loses only its own answer.
        if let Err(e) = std::io::Write::write_all(&mut &conn.stream, &reply) {
            tracing::debug!("vsock: client {port}: cannot answer port {}: {e}", answered.port);
        }
        self.drop_conn(port, false);
        true
    }

    /// Drops a connection; if the guest knows it and `rst`, tells the guest with an `OP_RST`.
    fn drop_conn(&mut self, port: u32, rst: bool) {
        let Some(conn) = self.conns.remove(&port) else { return };
        tracing::debug!("vsock: closing host port {port}");
        if conn.registered != 0 {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, conn.stream.as_raw_fd(), EpollEvent::default());
        }
        if rst && conn.guest_knows() {
            let mut h = conn.header(self.guest_cid, OP_RST);
            h.buf_alloc = 0;
            self.push_ctrl(h);
        }
        if self.tx_stalled == Some(port) {
            self.tx_stalled = None;
        }
    }

    fn push_ctrl(&mut self, h: Header) {
        if self.ctrl.len() >= MAX_CTRL_BACKLOG {
            tracing::debug!(
                "vsock: control backlog full, dropping op {} to port {}",
                h.op,
                h.dst_port
            );
            return;
        }
        self.ctrl.push_back(h);
    }

    /// Closes the connection if both directions are done; unstalls tx if its buffer drained.
    fn after_flush(&mut self, port: u32) {
        let Some(conn) = self.conns.get(&port) else { return };
        if conn.finished() {
            self.drop_conn(port, true);
            return;
        }
        if self.tx_stalled == Some(port) && conn.buffered_from_guest() < CONN_BUF_SIZE as usize {
            self.tx_stalled = None;
        }
    }

    fn update_interests(&mut self) {
        for conn in self.conns.values_mut() {
            let want = conn.interest();
            if want == conn.registered {
                continue;
            }
            let fd = conn.stream.as_raw_fd();
            let token = TOKEN_CONN_BASE + conn.local_port as u64;
            let event = EpollEvent::new(EventSet::from_bits_truncate(want), token);
            let op = match (conn.registered, want) {
                (0, _) => ControlOperation::Add,
                (_, 0) => ControlOperation::Delete,
                _ => ControlOperation::Modify,
            };
            match self.epoll.ctl(op, fd, event) {
                Ok(()) => conn.registered = want,
                Err(e) => tracing::warn!("vsock: epoll update for port {}: {e}", conn.local_port),
            }
        }
    }

    fn process_queues(&mut self) {
        let Some(mut active) = self.active.take() else { return };
        let tx_used = self.process_tx(&mut active.queues[TX_QUEUE as usize]);
        let rx_used = self.process_rx(&mut active.queues[RX_QUEUE as usize]);
        if tx_used {
            self.spin.replied(Instant::now());
        }
        if rx_used {
            self.spin.handed(Instant::now());
        }
        let wants = |q: &Queue| !self.interrupt_suppressed(q);
        if (tx_used && wants(&active.queues[TX_QUEUE as usize]))
            || (rx_used && wants(&active.queues[RX_QUEUE as usize]))
        {
            active.irq.trigger_used();
        }
        self.active = Some(active);
    }

    /// Whether the driver set `VRING_AVAIL_F_NO_INTERRUPT` on `q` (virtio spec §2.7.7: the
    /// device should then not interrupt for it; `virtio-queue` does not implement this).
    fn interrupt_suppressed(&self, q: &Queue) -> bool {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .read_obj::<u16>(GuestAddress(q.avail_ring()))
            .is_ok_and(|flags| u32::from(flags) & VRING_AVAIL_F_NO_INTERRUPT != 0)
    }

    fn process_tx(&mut self, txq: &mut Queue) -> bool {
        let mem = self.mem.clone();
        let mut used = false;
        while self.tx_stalled.is_none() {
            let Some(mut chain) = txq.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let verdict = match VsockPacket::from_tx_virtq_chain(&mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => self.handle_tx_packet(&pkt),
                Err(e) => {
                    tracing::debug!("vsock: dropping a malformed tx chain (or one outside the DMA window): {e}");
                    TxVerdict::Done
                }
            };
            match verdict {
                TxVerdict::Done => {
                    if let Err(e) = txq.add_used(&mem, head, 0) {
                        tracing::debug!("vsock: tx add_used: {e}");
                    }
                    used = true;
                }
                TxVerdict::Stall(port) => {
                    tracing::debug!("vsock: host port {port} buffer full; tx paused");
                    txq.set_next_avail(txq.next_avail().wrapping_sub(1));
                    self.tx_stalled = Some(port);
                }
            }
        }
        used
    }

    /// Handles one packet from the guest: drops or refuses what is not addressed to a stream
    /// the host opened, then steps that stream's state.
    fn handle_tx_packet(&mut self, pkt: &VsockPacket<'_, ()>) -> TxVerdict {
        let h = packet_header(pkt);
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            let (src, dst) = (h.src_cid, h.dst_cid);
            tracing::debug!("vsock: dropping a packet from cid {src} to cid {dst}");
            return TxVerdict::Done;
        }
        if h.type_ != TYPE_STREAM {
            tracing::debug!("vsock: packet of socket type {} refused", h.type_);
            if h.op != OP_RST {
                self.push_ctrl(Header::rst_reply(&h));
            }
            return TxVerdict::Done;
        }
        let port = h.dst_port;
        // A stream is the guest's only once we sent its `OP_REQUEST`, and only from the guest
        // port the client asked for.
        let connecting = match self.conns.get(&port) {
            Some(c) if c.guest_knows() && c.guest_port == h.src_port => matches!(c.state, State::RequestSent),
            _ => {
                self.refuse_unknown_stream(&h);
                return TxVerdict::Done;
            }
        };
        if connecting {
            self.handle_connect_reply(port, &h);
            return TxVerdict::Done;
        }
        self.handle_established(port, &h, pkt)
    }

    /// A packet for no stream the guest knows: the guest opening one (only the host connects),
    /// or a stale or forged stream; either way answered with an `OP_RST` (an `OP_RST` itself is
    /// not answered, so two sides cannot bounce resets forever).
    fn refuse_unknown_stream(&mut self, h: &Header) {
        match h.op {
            OP_RST => {}
            OP_REQUEST => {
                tracing::debug!("vsock: guest connect to host port {} refused", h.dst_port);
                self.push_ctrl(Header::rst_reply(h));
            }
            op @ (OP_RESPONSE | OP_SHUTDOWN | OP_RW | OP_CREDIT_UPDATE | OP_CREDIT_REQUEST) => {
                tracing::debug!("vsock: op {op} for unknown stream {}->{}", h.src_port, h.dst_port);
                self.push_ctrl(Header::rst_reply(h));
            }
            op => tracing::debug!("vsock: unknown op {op} dropped"),
        }
    }

    /// The guest's answer to our `OP_REQUEST` on host port `port`: `OP_RESPONSE` establishes the
    /// stream and tells the client `OK <port>`; `OP_RST` refuses it (the client is closed); any
    /// other op is a protocol error that resets the stream.
    fn handle_connect_reply(&mut self, port: u32, h: &Header) {
        let Some(conn) = self.conns.get_mut(&port) else { return };
        match h.op {
            OP_RESPONSE => {
                conn.update_peer_credit(h);
                conn.state = State::Established;
                let ok = unix::ok_line(conn.guest_port);
                // The `OK` line is ours, not guest data: it does not count in `fwd_cnt`.
                conn.uncounted = ok.len();
                clear_wiping(&mut conn.host_out);
                append_wiping(&mut conn.host_out, &ok);
                tracing::debug!("vsock: host port {port} connected to guest port {}", conn.guest_port);
                self.flush_to_client(port);
            }
            OP_RST => {
                tracing::debug!("vsock: guest refused host port {port} (guest port {})", conn.guest_port);
                self.drop_conn(port, false);
            }
            op => {
                tracing::debug!("vsock: op {op} while connecting host port {port}; resetting");
                self.drop_conn(port, true);
            }
        }
    }

    /// A packet on the established stream of host port `port`.
    fn handle_established(&mut self, port: u32, h: &Header, pkt: &VsockPacket<'_, ()>) -> TxVerdict {
        let Some(conn) = self.conns.get_mut(&port) else {
            return TxVerdict::Done;
        };
        match h.op {
            OP_RW => return self.receive_guest_data(port, h, pkt),
            OP_SHUTDOWN => self.receive_guest_shutdown(port, h),
            OP_CREDIT_UPDATE => {
                conn.update_peer_credit(h);
                self.after_flush(port);
            }
            OP_CREDIT_REQUEST => {
                conn.update_peer_credit(h);
                conn.need_credit_update = true;
                self.after_flush(port);
            }
            OP_RST => self.drop_conn(port, false),
            op @ (OP_REQUEST | OP_RESPONSE) => {
                tracing::debug!("vsock: op {op} on established host port {port}; resetting");
                self.drop_conn(port, true);
            }
            op => tracing::debug!("vsock: unknown op {op} on host port {port} dropped"),
        }
        TxVerdict::Done
    }

    /// An `OP_RW`: queues its payload for the client and writes what the client takes now. A
    /// guest sending beyond our credit stalls the tx queue until the client drains, so that a
    /// client that does not read cannot make the VMM buffer without bound.
    fn receive_guest_data(&mut self, port: u32, h: &Header, pkt: &VsockPacket<'_, ()>) -> TxVerdict {
        let Some(conn) = self.conns.get_mut(&port) else {
            return TxVerdict::Done;
        };
        if conn.guest_shutdown & SHUTDOWN_SEND != 0 {
            tracing::debug!("vsock: data after the guest's shutdown on host port {port}; dropped");
            return TxVerdict::Done;
        }
        let len = h.len as usize;
        if len > 0 && conn.buffered_from_guest() + len > CONN_BUF_SIZE as usize && conn.buffered_from_guest() > 0 {
            // Over our credit: wait for the client to drain rather than grow.
            return TxVerdict::Stall(port);
        }
        conn.update_peer_credit(h);
        if let Some(data) = pkt.data_slice() {
            // Copied through the scratch buffer, which is wiped: the payload may be a secret.
            let len = data.len().min(self.scratch.len());
            let copied = data.copy_to(&mut self.scratch[..len]);
            append_wiping(&mut conn.host_out, &self.scratch[..copied]);
            wipe(&mut self.scratch[..copied]);
        }
        if self.flush_to_client(port) {
            self.after_flush(port);
        }
        TxVerdict::Done
    }

    /// An `OP_SHUTDOWN`: records which directions the guest closed; a guest that will receive
    /// no more loses what still waits for it. The client's write side is shut once the guest's
    /// data is delivered (see [`VsockConnection::flush`]).
    fn receive_guest_shutdown(&mut self, port: u32, h: &Header) {
        let Some(conn) = self.conns.get_mut(&port) else { return };
        conn.update_peer_credit(h);
        conn.guest_shutdown |= h.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
        if conn.guest_shutdown & SHUTDOWN_RCV != 0 {
            clear_wiping(&mut conn.to_guest);
        }
        if self.flush_to_client(port) {
            self.after_flush(port);
        }
    }

    /// Writes what the client of host port `port` takes now; a client that is gone is dropped
    /// (and the guest told with an `OP_RST`). Whether the connection is still there.
    fn flush_to_client(&mut self, port: u32) -> bool {
        let Some(conn) = self.conns.get_mut(&port) else {
            return false;
        };
        if conn.flush().is_ok() {
            return true;
        }
        self.drop_conn(port, true);
        false
    }

    fn has_rx_work(&self) -> bool {
        !self.ctrl.is_empty() || self.conns.values().any(VsockConnection::has_rx_work)
    }

    fn process_rx(&mut self, rxq: &mut Queue) -> bool {
        let mem = self.mem.clone();
        let mut used = false;
        while self.has_rx_work() {
            let Some(mut chain) = rxq.pop_descriptor_chain(&mem) else {
                break;
            };
            let head = chain.head_index();
            let mut pkt = match VsockPacket::from_rx_virtq_chain(&mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => pkt,
                Err(e) => {
                    tracing::debug!("vsock: dropping a malformed rx chain (or one outside the DMA window): {e}");
                    if let Err(e) = rxq.add_used(&mem, head, 0) {
                        tracing::debug!("vsock: rx add_used: {e}");
                    }
                    used = true;
                    continue;
                }
            };
            match self.fill_rx(&mut pkt) {
                Some(len) => {
                    if let Err(e) = rxq.add_used(&mem, head, HEADER_SIZE as u32 + len) {
                        tracing::debug!("vsock: rx add_used: {e}");
                    }
                    used = true;
                }
                None => {
                    rxq.set_next_avail(rxq.next_avail().wrapping_sub(1));
                    break;
                }
            }
        }
        used
    }

    /// Writes the next packet for the guest into `pkt`; returns its payload length.
    fn fill_rx(&mut self, pkt: &mut VsockPacket<'_, ()>) -> Option<u32> {
        if let Some(h) = self.ctrl.pop_front() {
            return write_header(pkt, &h).then_some(0);
        }
        let room = pkt.data_slice().map_or(0, |s| s.len());
        let ports: Vec<u32> = self
            .conns
            .range(self.rr_last.wrapping_add(1)..)
            .chain(self.conns.range(..=self.rr_last))
            .filter(|(_, c)| c.has_rx_work())
            .map(|(&p, _)| p)
            .collect();
        for port in ports {
            let Some(conn) = self.conns.get_mut(&port) else {
                continue;
            };
            let Some(h) = conn.next_rx(self.guest_cid, room) else {
                continue;
            };
            self.rr_last = port;
            let n = h.len as usize;
            if n > 0 {
                if let Some(data) = pkt.data_slice() {
                    data.copy_from(&conn.to_guest[..n]);
                }
                conn.take_payload(n);
            }
            return write_header(pkt, &h).then_some(h.len);
        }
        None
    }
}

/// The header of a packet from the guest, as our [`Header`].
fn packet_header(pkt: &VsockPacket<'_, ()>) -> Header {
    Header {
        src_cid: pkt.src_cid(),
        dst_cid: pkt.dst_cid(),
        src_port: pkt.src_port(),
        dst_port: pkt.dst_port(),
        len: pkt.len(),
        type_: pkt.type_(),
        op: pkt.op(),
        flags: pkt.flags(),
        buf_alloc: pkt.buf_alloc(),
        fwd_cnt: pkt.fwd_cnt(),
    }
}

fn write_header(pkt: &mut VsockPacket<'_, ()>, h: &Header) -> bool {
    match pkt.set_header_from_raw(&h.to_bytes()) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("vsock: cannot write an rx header: {e}");
            false
        }
    }
}

#[cfg(test)]
mod reply_spin_tests {
    use super::*;

    #[test]
    fn the_poll_follows_recent_replies_and_stops_for_slow_ones() {
        let t0 = Instant::now();
        let mut spin = ReplySpin::default();
        assert_eq!(
            spin.budget(),
            Some(REPLY_SPIN_MAX),
            "before any reply: the longest poll"
        );
        spin.handed(t0);
        assert!(spin.polling(t0) && !spin.polling(t0 + REPLY_SPIN_MAX));
        spin.replied(t0 + Duration::from_micros(40));
        assert!(
            !spin.polling(t0 + Duration::from_micros(41)),
            "the first packet back ends the poll"
        );
        assert_eq!(spin.budget(), Some(Duration::from_micros(80)), "twice the reply time");
        // Fast replies: never below the shortest poll.
        for i in 0..20 {
            let t = t0 + Duration::from_millis(i + 1);
            spin.handed(t);
            spin.replied(t + Duration::from_micros(5));
        }
        assert_eq!(spin.budget(), Some(REPLY_SPIN_MIN));
        // Slow replies (string-to-key): the worker sleeps instead.
        for i in 0..30 {
            let t = t0 + Duration::from_millis(100 + i * 10);
            spin.handed(t);
            spin.replied(t + Duration::from_millis(2));
            assert!(i < 20 || spin.budget().is_none());
        }
        assert_eq!(spin.budget(), None);
        let t = t0 + Duration::from_secs(1);
        spin.handed(t);
        assert!(!spin.polling(t));
    }

    #[test]
    fn data_handed_twice_before_a_reply_times_the_reply_from_the_first() {
        let t0 = Instant::now();
        let mut spin = ReplySpin::default();
        spin.handed(t0);
        spin.handed(t0 + Duration::from_micros(50));
        spin.replied(t0 + Duration::from_micros(100));
        assert_eq!(spin.budget(), Some(REPLY_SPIN_MAX), "100 us * 2, capped");
        spin.replied(t0 + Duration::from_micros(500));
        assert_eq!(
            spin.budget(),
            Some(REPLY_SPIN_MAX),
            "a packet with nothing handed teaches nothing"
        );
    }
}
