//! One host client's stream to the guest: its state and the credit accounting of virtio spec
//! §5.10.6.3 in both directions.
//!
//! - Host to guest: bytes read from the client wait in `to_guest` and go out as `OP_RW` only
//!   within the guest's credit (`buf_alloc - (rx_cnt - fwd_cnt)` from the guest's latest header).
//!   We read from the client no more than that credit (and [`TO_GUEST_CAP`]) allows.
//! - Guest to host: we advertise [`CONN_BUF_SIZE`] as our `buf_alloc`, and our `fwd_cnt` counts
//!   the bytes written to the client. A guest that respects credit never has more than
//!   [`CONN_BUF_SIZE`] bytes buffered here.

use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use virtio_vsock::packet::PKT_HEADER_SIZE;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::HOST_CID;
use super::proto::*;
use super::unix::{self, ConnectLine, LineStatus};

/// Our receive buffer per connection (the `buf_alloc` we advertise to the guest), and the bound
/// on bytes buffered from the guest for a slow client.
pub const CONN_BUF_SIZE: u32 = 64 * 1024;
/// Most bytes read from a client and waiting for the guest.
pub const TO_GUEST_CAP: usize = 64 * 1024;
/// Send an unsolicited credit update once our `fwd_cnt` moved this far since the guest last
/// heard it.
pub const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 2;

/// How long a client may take to send its `CONNECT` line.
#[cfg(not(test))]
pub const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its `CONNECT` line (shortened for tests).
#[cfg(test)]
pub const CONNECT_LINE_TIMEOUT: Duration = Duration::from_millis(500);

/// A vsock packet header (virtio spec §5.10.6), laid out as on the wire: 44 bytes, no padding
/// (`packed(4)` keeps the CIDs 4-byte aligned, as the spec's packed struct has them), little-endian
/// (the VMM is x86-64 only). A field reference `&h.src_cid` does not compile (unaligned); copy it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C, packed(4))]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation.
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender consumed from its receive buffer.
    pub fwd_cnt: u32,
}

/// Size of the packet header on the wire.
pub const HEADER_SIZE: usize = size_of::<Header>();

const _: () = assert!(HEADER_SIZE == PKT_HEADER_SIZE && cfg!(target_endian = "little"));

impl Header {
    /// The wire form.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        zerocopy::transmute!(*self)
    }

    /// Parses the wire form.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        zerocopy::transmute!(*b)
    }

    /// An `OP_RST` answering `h` (ports and CIDs swapped, no credit).
    pub fn rst_reply(h: &Header) -> Header {
        Header {
            src_cid: h.dst_cid,
            dst_cid: h.src_cid,
            src_port: h.dst_port,
            dst_port: h.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Default::default()
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub enum State {
    /// Reading the client's `CONNECT` line.
    AwaitingLine(ConnectLine),
    /// The line named a guest port; the `OP_REQUEST` is not sent yet (maybe the driver is not
    /// ready).
    Connecting,
    /// `OP_REQUEST` sent, waiting for `OP_RESPONSE` or `OP_RST`.
    RequestSent,
    /// Data flows.
    Established,
}

/// What happened when reading from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Nothing (would block, or nothing wanted).
    Nothing,
    /// Progress (bytes read, or the line completed).
    Progress,
    /// The client closed before the connection was established, or failed: drop it.
    Gone,
    /// The client sent a bad `CONNECT` line: this `ERR` reply was written (best effort); drop it.
    BadLine,
}

/// One host client and the vsock stream it is bridged to in the guest (the host side of a
/// hybrid vsock connection).
#[derive(Debug)]
pub struct VsockConnection {
    /// The client's socket (non-blocking).
    pub stream: UnixStream,
    /// Our (host-side) port.
    pub local_port: u32,
    /// The guest port from the `CONNECT` line.
    pub guest_port: u32,
    /// The state.
    pub state: State,
    /// Bytes from the client waiting for guest credit and rx buffers.
    pub to_guest: Vec<u8>,
    /// Bytes sent to the guest (`OP_RW` payloads).
    pub rx_cnt: Wrapping<u32>,
    /// The guest's `buf_alloc`, from its latest header.
    pub peer_buf_alloc: u32,
    /// The guest's `fwd_cnt`, from its latest header.
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Bytes to write to the client: first `uncounted` bytes of our own (the `OK` line), then
    /// guest data.
    pub host_out: Vec<u8>,
    /// Leading bytes of `host_out` that are not guest data (do not count in `fwd_cnt`).
    pub uncounted: usize,
    /// Guest bytes written to the client.
    pub fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    pub last_fwd_cnt_sent: Wrapping<u32>,
    /// An `OP_CREDIT_UPDATE` should go out.
    pub need_credit_update: bool,
    /// The client sent EOF (or half-closed).
    pub host_eof: bool,
    /// We told the guest we will send no more (`OP_SHUTDOWN` sent).
    pub shutdown_sent: bool,
    /// `OP_SHUTDOWN` flags received from the guest.
    pub guest_shutdown: u32,
    /// We shut down the write side of the client's stream.
    pub write_shut: bool,
    /// Epoll interest currently registered (0 = not registered).
    pub registered: u32,
    /// The `CONNECT` line must be complete by then, or the client is dropped.
    pub line_deadline: Option<Instant>,
}

impl VsockConnection {
    /// A fresh client on `local_port`, about to send its `CONNECT` line.
    pub fn new(stream: UnixStream, local_port: u32) -> Self {
        VsockConnection {
            stream,
            local_port,
            guest_port: 0,
            state: State::AwaitingLine(ConnectLine::default()),
            to_guest: Vec::new(),
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            host_out: Vec::new(),
            uncounted: 0,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            need_credit_update: false,
            host_eof: false,
            shutdown_sent: false,
            guest_shutdown: 0,
            write_shut: false,
            registered: 0,
            line_deadline: Some(Instant::now() + CONNECT_LINE_TIMEOUT),
        }
    }

    /// Whether the guest knows this connection (an `OP_RST` is due when it goes away).
    pub fn guest_knows(&self) -> bool {
        matches!(self.state, State::RequestSent | State::Established)
    }

    /// Records the guest's credit from one of its headers.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = Wrapping(h.fwd_cnt);
    }

    /// Bytes the guest can still take.
    pub fn peer_free(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// How many bytes we may read from the client now.
    pub fn read_budget(&self) -> usize {
        if !matches!(self.state, State::Established) || self.host_eof || self.guest_shutdown & SHUTDOWN_RCV != 0 {
            return 0;
        }
        let credit = (self.peer_free() as usize).saturating_sub(self.to_guest.len());
        credit.min(TO_GUEST_CAP.saturating_sub(self.to_guest.len()))
    }

    /// Guest data bytes waiting for the client.
    pub fn buffered_from_guest(&self) -> usize {
        self.host_out.len() - self.uncounted
    }

    /// The epoll events this connection wants (`libc::EPOLL*` bits).
    pub fn interest(&self) -> u32 {
        let mut ev = 0;
        match self.state {
            State::AwaitingLine(_) => ev |= libc::EPOLLIN as u32,
            // Registered for nothing but the always-reported EPOLLHUP/EPOLLERR (edge-triggered so
            // they fire once): a full close of the client. A half-close (EPOLLRDHUP) is kept for
            // later: the client may still read the reply.
            State::Connecting | State::RequestSent => ev |= libc::EPOLLET as u32,
            State::Established => {
                if self.read_budget() > 0 {
                    ev |= libc::EPOLLIN as u32;
                }
                if !self.host_out.is_empty() {
                    ev |= libc::EPOLLOUT as u32;
                }
            }
        }
        ev
    }

    /// Reads what the connection wants from the client: the `CONNECT` line, or data within
    /// the guest's credit. `scratch` is a reusable buffer.
    pub fn read_client(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        match &mut self.state {
            State::AwaitingLine(line) => {
                let room = line.room().min(scratch.len());
                let n = match self.stream.read(&mut scratch[..room]) {
                    Ok(0) => return ReadOutcome::Gone,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                        return ReadOutcome::Nothing;
                    }
                    Err(_) => return ReadOutcome::Gone,
                };
                let fed = line.feed(&scratch[..n]);
                wipe(&mut scratch[..n]);
                match fed {
                    Ok(LineStatus::Incomplete) => ReadOutcome::Progress,
                    Ok(LineStatus::Connect { port, rest }) => {
                        self.line_deadline = None;
                        self.guest_port = port;
                        self.to_guest = rest;
                        self.state = State::Connecting;
                        ReadOutcome::Progress
                    }
                    Err(e) => {
                        tracing::debug!("vsock: client {} sent a bad CONNECT line: {e}", self.local_port);
                        let _ = self.stream.write(&unix::err_line(&e));
                        ReadOutcome::BadLine
                    }
                }
            }
            State::Connecting | State::RequestSent => {
                // Only EPOLLHUP/EPOLLERR are reported in these states: the client went away.
                ReadOutcome::Gone
            }
            State::Established => {
                let budget = self.read_budget().min(scratch.len());
                if budget == 0 {
                    return ReadOutcome::Nothing;
                }
                match self.stream.read(&mut scratch[..budget]) {
                    Ok(0) => {
                        self.host_eof = true;
                        ReadOutcome::Progress
                    }
                    Ok(n) => {
                        append_wiping(&mut self.to_guest, &scratch[..n]);
                        wipe(&mut scratch[..n]);
                        ReadOutcome::Progress
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                        ReadOutcome::Nothing
                    }
                    Err(e) => {
                        tracing::debug!("vsock: reading client {}: {e}", self.local_port);
                        ReadOutcome::Gone
                    }
                }
            }
        }
    }

    /// Writes what it can of `host_out` to the client. `Err` if the client is gone.
    pub fn flush(&mut self) -> std::io::Result<()> {
        while !self.host_out.is_empty() {
            match self.stream.write(&self.host_out) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let own = n.min(self.uncounted);
                    self.uncounted -= own;
                    self.fwd_cnt += Wrapping((n - own) as u32);
                    consume_front(&mut self.host_out, n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.need_credit_update = true;
        }
        if self.host_out.is_empty() && self.guest_shutdown & SHUTDOWN_SEND != 0 && !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    /// Whether both directions are finished and everything was delivered: time to reset the
    /// stream and forget it.
    pub fn finished(&self) -> bool {
        if !matches!(self.state, State::Established) || !self.host_out.is_empty() {
            return false;
        }
        let guest_done = self.guest_shutdown & SHUTDOWN_SEND != 0;
        let host_done = self.guest_shutdown & SHUTDOWN_RCV != 0 || (self.host_eof && self.shutdown_sent);
        guest_done && host_done
    }

    /// Whether the connection has a packet for the guest's rx queue.
    pub fn has_rx_work(&self) -> bool {
        match self.state {
            State::Connecting => true,
            State::Established => {
                (!self.to_guest.is_empty() && self.peer_free() > 0)
                    || self.need_credit_update
                    || (self.host_eof && self.to_guest.is_empty() && !self.shutdown_sent)
            }
            _ => false,
        }
    }

    /// A header from us to the guest on this connection.
    pub fn header(&self, guest_cid: u64, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.guest_port,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
    }

    /// The next packet for the guest, if any: its header, and for `OP_RW` how many bytes of
    /// `to_guest` it carries (at most `room`). The caller copies the payload out with
    /// [`Self::take_payload`].
    pub fn next_rx(&mut self, guest_cid: u64, room: usize) -> Option<Header> {
        let h = match self.state {
            State::Connecting => {
                self.state = State::RequestSent;
                self.header(guest_cid, OP_REQUEST)
            }
            State::Established => {
                let n = self.to_guest.len().min(self.peer_free() as usize).min(room);
                if n > 0 {
                    let mut h = self.header(guest_cid, OP_RW);
                    h.len = n as u32;
                    h
                } else if self.need_credit_update {
                    self.header(guest_cid, OP_CREDIT_UPDATE)
                } else if self.host_eof && self.to_guest.is_empty() && !self.shutdown_sent {
                    self.shutdown_sent = true;
                    let mut h = self.header(guest_cid, OP_SHUTDOWN);
                    h.flags = SHUTDOWN_SEND;
                    h
                } else {
                    return None;
                }
            }
            _ => return None,
        };
        self.need_credit_update = false;
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Some(h)
    }

    /// Removes the first `n` bytes of `to_guest` (sent in an `OP_RW`), counting them.
    pub fn take_payload(&mut self, n: usize) {
        consume_front(&mut self.to_guest, n);
        self.rx_cnt += Wrapping(n as u32);
    }
}

impl Drop for VsockConnection {
    fn drop(&mut self) {
        wipe(&mut self.to_guest);
        wipe(&mut self.host_out);
    }
}

// The bytes relayed between the client and the guest are the enclave's requests and replies, a
// logon's password among them: the buffers that held them are wiped, never just freed or
// shifted, so no copy stays behind in the VMM's heap (the isolation test scans it).

/// Overwrites `buf` with zeros (kept by the optimiser: the buffer is observed afterwards).
pub fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&*buf);
}

/// Removes the first `n` bytes of `v`, wiping the bytes the shift leaves behind.
pub fn consume_front(v: &mut Vec<u8>, n: usize) {
    let n = n.min(v.len());
    v.copy_within(n.., 0);
    let len = v.len() - n;
    wipe(&mut v[len..]);
    v.truncate(len);
}

/// Appends `data` to `v`; a reallocation wipes the old buffer before freeing it.
pub fn append_wiping(v: &mut Vec<u8>, data: &[u8]) {
    if v.capacity() - v.len() < data.len() {
        let mut bigger = Vec::with_capacity((v.len() + data.len()).next_power_of_two());
        bigger.extend_from_slice(v);
        wipe(v);
        *v = bigger;
    }
    v.extend_from_slice(data);
}

/// Empties `v`, wiping its contents.
pub fn clear_wiping(v: &mut Vec<u8>) {
    wipe(v);
    v.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            src_cid: 2,
            dst_cid: 3,
            src_port: 1,
            dst_port: 7000,
            len: 5,
            type_: 1,
            op: 5,
            flags: 0,
            buf_alloc: 100,
            fwd_cnt: 7,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        // The spec's offsets, little-endian.
        let b = h.to_bytes();
        assert_eq!((b[0], b[8], b[20], b[21], b[30], b[40]), (2, 3, 0x58, 0x1b, 5, 7));
    }

    #[test]
    fn peer_credit_accounts_in_flight_bytes() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = VsockConnection::new(a, 1);
        c.state = State::Established;
        c.update_peer_credit(&Header {
            buf_alloc: 10,
            fwd_cnt: 0,
            ..Default::default()
        });
        assert_eq!(c.peer_free(), 10);
        c.to_guest = vec![0; 20];
        assert_eq!(c.read_budget(), 0);
        let h = c.next_rx(3, 100).unwrap();
        assert_eq!(h.len, 10);
        c.take_payload(10);
        assert_eq!(c.peer_free(), 0);
        assert!(c.next_rx(3, 100).is_none());
        c.update_peer_credit(&Header {
            buf_alloc: 10,
            fwd_cnt: 4,
            ..Default::default()
        });
        assert_eq!(c.peer_free(), 4);
        // Counters wrap.
        c.rx_cnt = Wrapping(u32::MAX - 1);
        c.peer_fwd_cnt = Wrapping(u32::MAX - 3);
        assert_eq!(c.peer_free(), 8);
    }
}
