//! `BootMode::Service`: the enclave service on virtio-vsock.
//!
//! The driver is `virtio-drivers`' `VsockConnectionManager`, all in ring 3, over the transport of
//! the device the VMM pre-negotiated (`credguard_enclave::prenegotiated`, boot ABI 4): its setup
//! is answered from the boot info, so booting costs no register exit. The loop polls the receive
//! queue until it is drained and answers every whole request frame; after some work it watches for
//! the next interrupt from ring 3 for [`SPIN_US`], then sleeps in `SYS_WAIT` until the next vsock
//! interrupt.
//!
//! What the driver needs from the VMM's device: virtio-mmio version 2, started as
//! `BootInfo::vsock` says (`VIRTIO_F_VERSION_1` accepted; `EVENT_IDX` and `INDIRECT_DESC` are used
//! if agreed, not needed; queues 0-2 of 8 entries at `abi::vsock_preset_queue`), receive buffers
//! of [`RX_BUFFER_SIZE`] bytes in one descriptor (header and payload together), transmit chains
//! of header + payload. The driver waits for transmit completions by polling the used ring, so
//! the device must complete transmit buffers on its own (never wait for the guest to take receive
//! buffers first); only used receive buffers need an interrupt. `InterruptStatus` is never read or
//! acknowledged: the interrupt must be edge-triggered. The event queue is never serviced. Every
//! address the driver gives the device lies in the DMA window (see `hal`).
//!
//! Nothing goes to the serial console on a good boot (25 µs a character): the enclave's boot facts
//! go to the exchange page with its attestation request, and the VMM logs them.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use credguard_enclave::prenegotiated::{PreNegotiated, Registers};
use credguard_enclave::rng::HwRng;
use credguard_enclave::service::{BootFacts, Identity, RequestStream, Service};
use credguard_enclave::vault::VaultKey;
use credguard_proto::abi::{self, BootInfo};
use virtio_drivers::Error as VirtioError;
use virtio_drivers::device::socket::{
    SocketError, VirtIOSocket, VsockAddr, VsockConnectionManager, VsockEvent, VsockEventType,
};

use crate::hal::EnclaveHal;
use crate::ring0::IRQ_PENDING;
use crate::sys::{self, kprintln};

/// Bytes per receive buffer (header included): one DMA page. The VMM must not put more than
/// `RX_BUFFER_SIZE - 44` payload bytes in one packet.
pub const RX_BUFFER_SIZE: usize = 4096;
/// Receive buffer per connection (what we advertise as `buf_alloc`).
pub const CONNECTION_BUFFER: u32 = 64 << 10;
/// Open connections at most; more are refused (each may buffer up to a 1 MiB frame).
pub const MAX_CONNECTIONS: usize = 4;
/// Largest payload per transmitted packet.
const TX_CHUNK: usize = 4096;
/// Polls that find nothing in a row before the receive queue is known to be drained: `poll`
/// also returns nothing for packets it handles internally (credit requests, stray packets), and at
/// most the 8 receive buffers can be waiting.
const IDLE_POLLS: u32 = 9;
/// How long to poll for more work after handling some, before sleeping.
const SPIN_US: u64 = 200;
/// Device errors logged at most (each log line costs milliseconds of serial output).
const MAX_LOGGED_ERRORS: u32 = 8;

type Manager = VsockConnectionManager<EnclaveHal, PreNegotiated<VsockRegisters>, RX_BUFFER_SIZE>;

/// The vsock device's virtio-mmio register block at `abi::VSOCK_MMIO_GPA`.
struct VsockRegisters;

impl VsockRegisters {
    fn at(offset: usize) -> *mut u32 {
        // Offsets are the transport's register constants, inside the block and 4-byte aligned.
        debug_assert!(offset < abi::VSOCK_MMIO_SIZE as usize && offset.is_multiple_of(4));
        (abi::VSOCK_MMIO_GPA as usize + offset) as *mut u32
    }
}

impl Registers for VsockRegisters {
    fn read(&mut self, offset: usize) -> u32 {
        // SAFETY: the VMM maps the vsock register block at VSOCK_MMIO_GPA, user-accessible and
        // uncached; only this transport touches it, with aligned 32-bit accesses.
        unsafe { core::ptr::read_volatile(Self::at(offset)) }
    }

    fn write(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(Self::at(offset), value) }
    }
}

struct Stream {
    peer: VsockAddr,
    port: u32,
    conn: RequestStream,
    /// Framed replies not yet accepted by the device.
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    sent: usize,
    /// Bytes consumed since we last told the peer about our free space.
    unreported: usize,
}

struct Server {
    mgr: Manager,
    svc: Service<HwRng>,
    streams: Vec<Stream>,
    errors: u32,
    rx: [u8; 4096],
    fault: Option<Fault>,
}

/// An injected fault (`BootMode::ServicePanicAfter` / `ServiceHangAfter`): what to do once more
/// than the given number of requests have been handled, before the reply to the last one is sent,
/// so that the caller sees its request die in flight.
#[cfg(feature = "test-modes")]
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Panic (the VMM sees a guest panic and restarts the enclave).
    PanicAfter(u64),
    /// Spin forever in ring 3 (only the VMM's watchdog can notice).
    HangAfter(u64),
}

/// A production image injects no faults: there is no value of this type.
#[cfg(not(feature = "test-modes"))]
#[derive(Clone, Copy, Debug)]
pub enum Fault {}

fn service(boot: &BootInfo, start_tsc: u64, guest_cid: u64) -> Service<HwRng> {
    // main() already refused to start without a working RDRAND.
    let Some(rng) = HwRng::new() else { panic!("no RDRAND") };
    let identity = Identity {
        measurement: boot.measurement,
        signer: boot.signer,
    };
    let mut svc = match Service::new(identity, boot.tsc_khz, start_tsc, rng) {
        Ok(s) => s,
        Err(_) => panic!("the hardware random source failed at start-up"),
    };
    svc.set_boot_facts(BootFacts {
        policy_bits: boot.policy,
    });
    svc.set_free_heap(sys::free_heap);
    attest(&mut svc, guest_cid);
    if let Some((own, upgrade)) = take_vault_keys(boot) {
        svc.set_vault(credguard_enclave::vault::Vault::new(own, boot.measurement, upgrade));
    }
    svc
}

pub fn run(boot: &BootInfo, start_tsc: u64, fault: Option<Fault>) -> ! {
    let transport = match PreNegotiated::new(VsockRegisters, boot.vsock) {
        Ok(t) => t,
        Err(e) => panic!("refusing to start: {e}"),
    };
    // The rings must be the DMA window's first pages (abi::vsock_preset_queue): nothing may take
    // a page from it before the driver; the transport refuses to start should anything have.
    let driver = match VirtIOSocket::<EnclaveHal, _, RX_BUFFER_SIZE>::new(transport) {
        Ok(d) => d,
        Err(e) => panic!("vsock device setup failed: {e}"),
    };
    let mut mgr = VsockConnectionManager::new_with_capacity(driver, CONNECTION_BUFFER);
    mgr.listen(abi::ENCLAVE_VSOCK_PORT);
    let guest_cid = mgr.guest_cid();

    let mut server = Server {
        mgr,
        svc: service(boot, start_tsc, guest_cid),
        streams: Vec::new(),
        errors: 0,
        rx: [0; 4096],
        fault,
    };
    // Adaptive polling: after handling something, watch for the next interrupt from ring 3 for a
    // short while before sleeping; an interrupt that comes meanwhile saves the SYS_WAIT system
    // call and the halt/wake-up in ring 0 (emulated, ~15 µs a round trip on the target machines).
    let spin_cycles = boot.tsc_khz.saturating_mul(SPIN_US) / 1000;
    loop {
        if server.drain() && irq_within(spin_cycles) {
            continue;
        }
        sys::wait();
    }
}

/// Spins up to `cycles` TSC cycles for an interrupt; consumes it (as `SYS_WAIT` would) if one came.
fn irq_within(cycles: u64) -> bool {
    let start = sys::rdtsc();
    loop {
        // Ring 3 may clear the flag itself: the interrupt handler only ever sets it, and a set that
        // lands after this swap is seen by the next swap or by SYS_WAIT.
        if IRQ_PENDING.swap(0, Ordering::Relaxed) != 0 {
            return true;
        }
        if sys::rdtsc().wrapping_sub(start) >= cycles {
            return false;
        }
        core::hint::spin_loop();
    }
}

impl Server {
    /// Handles every packet waiting in the receive queue; returns whether there was any.
    fn drain(&mut self) -> bool {
        let mut idle = 0;
        let mut handled = false;
        while idle < IDLE_POLLS {
            match self.mgr.poll() {
                Ok(Some(event)) => {
                    idle = 0;
                    handled = true;
                    self.on_event(event);
                }
                Ok(None) => idle += 1,
                Err(e) => {
                    self.log_error("poll", e);
                    // The queue may be wedged on a bad buffer; wait for the next interrupt
                    // rather than spin.
                    return false;
                }
            }
        }
        handled
    }

    fn find(&self, peer: VsockAddr, port: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.peer == peer && s.port == port)
    }

    fn on_event(&mut self, event: VsockEvent) {
        let peer = event.source;
        let port = event.destination.port;
        match event.event_type {
            VsockEventType::ConnectionRequest => self.on_connect(peer, port),
            VsockEventType::Received { .. } => self.on_data(peer, port),
            VsockEventType::Disconnected { .. } => {
                // Let the manager finish a shutdown whose data we had not read; the peer is gone,
                // so there is no one to answer.
                while matches!(self.mgr.recv(peer, port, &mut self.rx), Ok(n) if n > 0) {}
                if let Some(i) = self.find(peer, port) {
                    self.streams.swap_remove(i);
                }
            }
            VsockEventType::CreditUpdate => {
                if let Some(i) = self.find(peer, port) {
                    self.flush(i);
                }
            }
            VsockEventType::Connected | VsockEventType::CreditRequest => {}
        }
    }

    fn on_connect(&mut self, peer: VsockAddr, port: u32) {
        // The manager has accepted it (we listen on one port only).
        if let Some(i) = self.find(peer, port) {
            // The peer reused an address whose connection we thought open: start afresh.
            self.streams.swap_remove(i);
        }
        // Forget streams the manager has closed on its own.
        let mgr = &mut self.mgr;
        self.streams
            .retain(|s| mgr.recv_buffer_available_bytes(s.peer, s.port).is_ok());
        if self.streams.len() >= MAX_CONNECTIONS {
            kprintln!(
                "vsock: refusing {}:{}, {} connections open",
                peer.cid,
                peer.port,
                MAX_CONNECTIONS
            );
            let _ = self.mgr.force_close(peer, port);
            return;
        }
        self.streams.push(Stream {
            peer,
            port,
            conn: RequestStream::new(),
            out: Vec::new(),
            sent: 0,
            unreported: 0,
        });
    }

    fn on_data(&mut self, peer: VsockAddr, port: u32) {
        let Some(i) = self.find(peer, port) else {
            // Data on a connection we refused or forgot: drop it.
            let _ = self.mgr.force_close(peer, port);
            return;
        };
        loop {
            let n = match self.mgr.recv(peer, port, &mut self.rx) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => {
                    // The manager closed it (the peer had shut down and we drained the rest).
                    self.streams.swap_remove(i);
                    return;
                }
            };
            let now = sys::rdtsc();
            let stream = &mut self.streams[i];
            stream.unreported += n;
            if let Err(e) = self.svc.on_bytes(&mut stream.conn, &self.rx[..n], now, &mut stream.out) {
                kprintln!("vsock: closing {}:{}: {e}", peer.cid, peer.port);
                let _ = self.mgr.force_close(peer, port);
                self.streams.swap_remove(i);
                return;
            }
        }
        self.inject_fault();
        self.flush(i);
        let stream = &mut self.streams[i];
        if stream.unreported >= CONNECTION_BUFFER as usize / 2 {
            // We consumed a lot without sending (every packet we send carries our credit): tell
            // the peer it may send more.
            stream.unreported = 0;
            let _ = self.mgr.update_credit(peer, port);
        }
    }

    /// Sends what the device will take of stream `i`'s pending replies.
    fn flush(&mut self, i: usize) {
        let stream = &mut self.streams[i];
        while stream.sent < stream.out.len() {
            let end = stream.out.len().min(stream.sent + TX_CHUNK);
            match self.mgr.send(stream.peer, stream.port, &stream.out[stream.sent..end]) {
                Ok(()) => {
                    stream.sent = end;
                    stream.unreported = 0;
                }
                // The peer's buffer is full; the manager has asked for a credit update and we
                // resume on the CreditUpdate event.
                Err(VirtioError::SocketDeviceError(SocketError::InsufficientBufferSpaceInPeer)) => return,
                Err(e) => {
                    let (peer, port) = (stream.peer, stream.port);
                    self.log_error("send", e);
                    let _ = self.mgr.force_close(peer, port);
                    self.streams.swap_remove(i);
                    return;
                }
            }
        }
        stream.out.clear();
        stream.sent = 0;
        if stream.out.capacity() > 4 * TX_CHUNK {
            stream.out.shrink_to(TX_CHUNK);
        }
    }

    /// Ends the service as the injected fault says once its request budget is spent.
    #[cfg(not(feature = "test-modes"))]
    fn inject_fault(&self) {
        if let Some(fault) = self.fault {
            match fault {}
        }
    }

    /// Ends the service as the injected fault says once its request budget is spent.
    #[cfg(feature = "test-modes")]
    fn inject_fault(&self) {
        let served = self.svc.requests_served();
        match self.fault {
            Some(Fault::PanicAfter(n)) if served > n => {
                panic!("injected fault: panic after {n} requests")
            }
            Some(Fault::HangAfter(n)) if served > n => {
                kprintln!("injected fault: hanging after {n} requests");
                loop {
                    core::hint::spin_loop();
                }
            }
            _ => {}
        }
    }

    fn log_error(&mut self, what: &str, e: VirtioError) {
        self.errors = self.errors.saturating_add(1);
        if self.errors <= MAX_LOGGED_ERRORS {
            kprintln!("vsock: {what} error: {e}");
        }
    }
}

/// Has the VMM sign this boot's sealing public key (with the measurement it verified) through the
/// exchange page; the VMM serves the signature to clients itself. The same request carries the
/// boot facts the VMM logs for the admin (version, vsock address). Nothing here is secret.
fn attest<R: rand_core::TryCryptoRng>(svc: &mut Service<R>, guest_cid: u64) {
    use credguard_proto::abi::{AttestState, exchange};
    let page = abi::EXCHANGE_GPA as usize;
    let write = |offset: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: the exchange page is mapped user-writable at EXCHANGE_GPA (abi layout), and
            // the offsets are the ABI's, within the page.
            unsafe { core::ptr::write_volatile((page + offset + i) as *mut u8, *b) };
        }
    };
    write(exchange::ATTEST_BOOT_ID, &svc.boot_id());
    write(exchange::ATTEST_PUBLIC_KEY, &svc.sealing_public_key());
    write(
        exchange::ATTEST_ENCLAVE_FLAGS,
        &credguard_enclave::service::ENCLAVE_FLAGS.to_le_bytes(),
    );
    let mut version = [0u8; exchange::BOOT_FACTS_VERSION_LEN];
    let v = credguard_enclave::VERSION.as_bytes();
    let n = v.len().min(version.len());
    version[..n].copy_from_slice(&v[..n]);
    write(exchange::BOOT_FACTS_VERSION, &version);
    write(
        exchange::BOOT_FACTS_VSOCK_PORT,
        &u64::from(abi::ENCLAVE_VSOCK_PORT).to_le_bytes(),
    );
    write(exchange::BOOT_FACTS_GUEST_CID, &guest_cid.to_le_bytes());
    sys::attest();
    // SAFETY: as above; ATTEST_STATE is an aligned u64 of the page.
    let state = unsafe { core::ptr::read_volatile((page + exchange::ATTEST_STATE) as *const u64) };
    // The VMM logs the outcome itself; only the unexpected one is worth the console's time.
    if let AttestState::None | AttestState::Refused = AttestState::from_raw(state) {
        kprintln!("the VMM did not attest this boot");
    }
}

/// An earlier image's measurement and its vault key.
type UpgradeKey = ([u8; abi::MEASUREMENT_LEN], VaultKey);

/// Copies the vault keys out of the exchange page into the (hidden) heap and zeroes the page's
/// copies, which the VMM keeps mapped: this image's key, and those of the earlier images in
/// `boot.upgrade_from()` (same order). `None` if the VMM handed over none (no sealing secret).
/// Runs before the service answers anything, so no request can observe the page's copies.
fn take_vault_keys(boot: &BootInfo) -> Option<(VaultKey, Vec<UpgradeKey>)> {
    use credguard_proto::abi::exchange;
    let page = abi::EXCHANGE_GPA as usize;
    let take = |offset: usize| {
        let mut key = zeroize::Zeroizing::new([0u8; exchange::SEALING_SECRET_LEN]);
        for (i, b) in key.iter_mut().enumerate() {
            let at = (page + offset + i) as *mut u8;
            // SAFETY: the exchange page is identity-mapped user read-write at EXCHANGE_GPA (abi
            // layout), and the ABI's key fields lie within it. Volatile, so that the zeroing is
            // not optimised away as a dead store.
            unsafe {
                *b = core::ptr::read_volatile(at);
                core::ptr::write_volatile(at, 0);
            }
        }
        key
    };
    let present_at = (page + exchange::SEALING_SECRET_PRESENT) as *mut u64;
    // SAFETY: as above; SEALING_SECRET_PRESENT is an aligned u64 of the page.
    let present = unsafe { core::ptr::read_volatile(present_at) };
    let own = take(exchange::SEALING_SECRET);
    let upgrade: Vec<_> = (0..abi::MAX_UPGRADE_FROM)
        .map(|i| take(exchange::UPGRADE_VAULT_KEYS + i * exchange::SEALING_SECRET_LEN))
        .collect();
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(present_at, 0) };
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    if present != 1 {
        return None;
    }
    let upgrade = boot.upgrade_from().iter().copied().zip(upgrade).collect();
    Some((own, upgrade))
}
