//! The virtio-vsock device (virtio spec §5.10), emulated in userspace, with host sockets in the
//! "hybrid vsock" scheme: a Unix listener on the host.
//!
//! A host client connects to the listener and writes `CONNECT <port>\n`. The device opens a
//! stream to the guest's `<port>` (an `OP_REQUEST` from the host, CID 2, on a fresh local port).
//! When the guest accepts (`OP_RESPONSE`), the client reads `OK <port>\n` — `<port>` is the port
//! the client asked for (the project contract's literal reply), not the host-side local port —
//! and then bytes flow both ways. If the guest refuses (`OP_RST`), the client is closed. A
//! malformed `CONNECT` line gets `ERR <reason>\n` and the client is closed.
//!
//! Only stream sockets are supported, only the host connects (a guest `OP_REQUEST` gets
//! `OP_RST`), and at most [`MAX_CONNECTIONS`] host clients are served at once.
//!
//! The listener is bound and served from [`create_vsock_device`] on: a client may connect before
//! the guest driver is ready; its `CONNECT` waits until the driver sets `DRIVER_OK`.
//!
//! Layout: [`device`] is the worker thread (epoll loop, queue processing), [`connection`] the
//! per-stream state and credit accounting, [`unix`] the host side (`CONNECT` line).

pub mod connection;
pub mod device;
pub mod fuzz;
pub mod unix;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::mmio::VirtioMmioRegisters;
use super::{ActivateError, IrqTrigger, VirtioDevice};

/// Number of queues: rx, tx, event.
pub const NUM_QUEUES: usize = 3;
/// Index of the rx queue (device to driver).
pub const RX_QUEUE: u32 = 0;
/// Index of the tx queue (driver to device).
pub const TX_QUEUE: u32 = 1;
/// Index of the event queue (unused: we never send transport events).
pub const EVENT_QUEUE: u32 = 2;
/// Largest size of each queue.
pub const QUEUE_MAX_SIZE: u16 = 256;

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Most host connections served at once (including ones still sending their `CONNECT` line).
pub const MAX_CONNECTIONS: usize = 64;

/// Packet header constants (virtio spec §5.10.6).
pub mod proto {
    /// `VIRTIO_VSOCK_TYPE_STREAM`.
    pub const TYPE_STREAM: u16 = 1;
    /// Connection request.
    pub const OP_REQUEST: u16 = 1;
    /// Connection accepted.
    pub const OP_RESPONSE: u16 = 2;
    /// Connection reset (or refused).
    pub const OP_RST: u16 = 3;
    /// A side stops sending and/or receiving (see the flags).
    pub const OP_SHUTDOWN: u16 = 4;
    /// Data.
    pub const OP_RW: u16 = 5;
    /// Credit information, unsolicited or answering a request.
    pub const OP_CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for an `OP_CREDIT_UPDATE`.
    pub const OP_CREDIT_REQUEST: u16 = 7;
    /// `OP_SHUTDOWN` flag: the sender will receive no more data.
    pub const SHUTDOWN_RCV: u32 = 1;
    /// `OP_SHUTDOWN` flag: the sender will send no more data.
    pub const SHUTDOWN_SEND: u32 = 2;
}

/// Configuration of the vsock device.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    /// The guest's CID (the config space value), normally `credguard_proto::abi::GUEST_CID`.
    pub guest_cid: u64,
    /// Where to bind the host Unix listener. An existing socket file there is replaced.
    pub uds_path: PathBuf,
    /// The worker thread's seccomp allow-list, installed before its event loop (`None`: none).
    pub filter: Option<crate::sandbox::ThreadFilter>,
    /// A port the VMM answers itself (its status port), if any.
    pub host_answered: Option<HostAnsweredPort>,
    /// The CPUs of the worker thread (kept off the vCPU's; `None`: wherever it is scheduled).
    pub placement: Option<crate::placement::Placement>,
}

/// A port the VMM answers itself on the host side of the socket, never forwarded to the guest (so
/// the guest cannot answer in its place): a client that sends `CONNECT <port>` reads `OK <port>`,
/// the bytes `answer` returns, and end of stream. Nothing the client sends is read beyond the
/// line. Used for the VMM's status (`credguard_proto::vmm_status::VMM_STATUS_PORT`).
#[derive(Clone)]
pub struct HostAnsweredPort {
    /// The port.
    pub port: u32,
    /// What a client reads after the `OK` line: small (it is written at once, without waiting
    /// for the client to read).
    pub answer: Arc<dyn Fn() -> Vec<u8> + Send + Sync>,
}

impl std::fmt::Debug for HostAnsweredPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostAnsweredPort")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Errors of the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved (0, 1, 2 or `u32::MAX`) or does not fit 32 bits.
    #[error("invalid guest CID {0}")]
    InvalidCid(u64),
    /// Binding the Unix listener failed.
    #[error("cannot bind {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating an eventfd or the epoll instance failed.
    #[error("cannot create {what}: {source}")]
    Sys {
        /// What was being created.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Spawning the worker thread failed.
    #[error("cannot spawn the vsock thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The device could not be started pre-negotiated.
    #[error("cannot start the vsock device pre-negotiated: {0}")]
    Preset(String),
}

/// Commands from the transport side to the worker thread.
#[derive(Debug)]
pub(crate) enum Command {
    /// The driver set `DRIVER_OK`: serve these queues.
    Activate {
        /// rx, tx, event.
        queues: Vec<Queue>,
        /// Interrupt to raise on used buffers.
        irq: Arc<IrqTrigger>,
    },
    /// The driver reset the device: drop the queues and every connection to the guest.
    Reset,
}

/// The transport-facing half of the vsock device: it forwards activation and reset to the
/// worker thread.
#[derive(Debug)]
pub struct VsockDevice {
    guest_cid: u64,
    acked_features: u64,
    commands: mpsc::Sender<Command>,
    wake: EventFd,
}

impl VsockDevice {
    fn send(&self, cmd: Command) -> Result<(), ActivateError> {
        self.commands.send(cmd).map_err(|_| ActivateError::WorkerGone)?;
        self.wake.write(1).map_err(ActivateError::EventFd)
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_MAX_SIZE; NUM_QUEUES]
    }

    fn device_features(&self) -> u64 {
        // VIRTIO_F_VERSION_1 is added by the transport; stream sockets need no feature bit.
        0
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.guest_cid.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| config.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        irq: Arc<IrqTrigger>,
    ) -> Result<(), ActivateError> {
        if queues.len() != NUM_QUEUES {
            return Err(ActivateError::BadQueues(format!(
                "{} queues, need {NUM_QUEUES}",
                queues.len()
            )));
        }
        self.send(Command::Activate { queues, irq })
    }

    fn reset(&mut self) -> bool {
        self.send(Command::Reset).is_ok()
    }
}

/// A vsock device on a virtio-mmio transport, with its worker thread running.
///
/// The VMM maps `transport` on the MMIO bus at `VSOCK_MMIO_GPA`, registers each of
/// `queue_notify_evts` as a KVM ioeventfd on `VSOCK_MMIO_GPA + 0x50` (4 bytes) with datamatch
/// = the queue index, and `irq_evt` as a KVM irqfd on `VSOCK_GSI`. Dropping it (or [`stop`])
/// stops the thread and removes the socket file.
///
/// [`stop`]: VirtioMmioVsock::stop
#[derive(Debug)]
pub struct VirtioMmioVsock {
    /// The register block, for the MMIO bus.
    pub transport: Arc<Mutex<VirtioMmioRegisters>>,
    /// `(queue index, eventfd)` for KVM ioeventfds on `QueueNotify` (rx 0, tx 1, event 2).
    pub queue_notify_evts: Vec<(u32, EventFd)>,
    /// The interrupt eventfd, for a KVM irqfd on `VSOCK_GSI`.
    pub irq_evt: EventFd,
    stop_evt: EventFd,
    thread: Option<JoinHandle<()>>,
    uds_path: PathBuf,
}

impl VirtioMmioVsock {
    /// Stops the worker thread (closing every host client) and removes the socket file.
    /// Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(e) = self.stop_evt.write(1) {
                tracing::error!("vsock: cannot signal the worker to stop: {e}");
            } else if thread.join().is_err() {
                tracing::error!("vsock: the worker thread panicked");
            }
            if let Err(e) = std::fs::remove_file(&self.uds_path) {
                tracing::debug!("vsock: removing {}: {e}", self.uds_path.display());
            }
        }
    }

    /// Starts the device pre-negotiated (see [`VirtioMmioRegisters::start_negotiated`]).
    pub fn start_negotiated(
        &self,
        features: u64,
        queues: &[credguard_proto::abi::PresetQueue],
    ) -> Result<(), VsockError> {
        let mut transport = self
            .transport
            .lock()
            .map_err(|_| VsockError::Preset("transport lock poisoned".into()))?;
        transport.start_negotiated(features, queues).map_err(VsockError::Preset)
    }

    /// The feature bits the device offers (`VIRTIO_F_VERSION_1` included).
    pub fn offered_features(&self) -> u64 {
        // A poisoned lock still holds a whole register block.
        self.transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offered_features()
    }

    /// Guest accesses to the register block so far.
    pub fn register_accesses(&self) -> u64 {
        self.transport
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register_accesses()
    }

    /// The path of the host Unix listener.
    pub fn uds_path(&self) -> &std::path::Path {
        &self.uds_path
    }
}

impl Drop for VirtioMmioVsock {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sys<T>(what: &'static str, r: std::io::Result<T>) -> Result<T, VsockError> {
    r.map_err(|source| VsockError::Sys { what, source })
}

/// Creates the vsock device: binds the Unix listener at `config.uds_path` (replacing a stale
/// socket file), starts the worker thread, and returns the transport and the eventfds to wire
/// into KVM.
pub fn create_vsock_device(mem: GuestMemoryMmap, config: VsockConfig) -> Result<VirtioMmioVsock, VsockError> {
    let cid = config.guest_cid;
    if cid <= HOST_CID || cid >= u32::MAX as u64 {
        return Err(VsockError::InvalidCid(cid));
    }
    let path = config.uds_path.clone();
    if std::fs::symlink_metadata(&path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|source| VsockError::Bind {
        path: path.clone(),
        source,
    })?;
    match start(mem, cid, listener, path.clone(), config) {
        Ok(dev) => Ok(dev),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// The rest of [`create_vsock_device`] once the listener is bound.
fn start(
    mem: GuestMemoryMmap,
    cid: u64,
    listener: UnixListener,
    path: PathBuf,
    config: VsockConfig,
) -> Result<VirtioMmioVsock, VsockError> {
    let VsockConfig {
        filter,
        host_answered,
        placement,
        ..
    } = config;
    sys("listener", listener.set_nonblocking(true))?;
    let irq_evt = sys("irq eventfd", EventFd::new(EFD_NONBLOCK))?;
    let stop_evt = sys("stop eventfd", EventFd::new(EFD_NONBLOCK))?;
    let wake = sys("command eventfd", EventFd::new(EFD_NONBLOCK))?;
    let mut notify = Vec::with_capacity(NUM_QUEUES);
    for _ in 0..NUM_QUEUES {
        notify.push(sys("queue eventfd", EventFd::new(EFD_NONBLOCK))?);
    }
    let dup = |e: &EventFd| sys("eventfd clone", e.try_clone());

    let interrupt_status = Arc::new(AtomicU32::new(0));
    let irq = Arc::new(IrqTrigger::new(interrupt_status.clone(), dup(&irq_evt)?));
    let (tx, rx) = mpsc::channel();
    let worker = device::Worker::new(
        mem.clone(),
        cid,
        listener,
        device::WorkerFds {
            stop: dup(&stop_evt)?,
            commands: dup(&wake)?,
            notify: [dup(&notify[0])?, dup(&notify[1])?, dup(&notify[2])?],
        },
        rx,
        host_answered,
    )?;
    let mmio_evts = notify.iter().map(dup).collect::<Result<Vec<_>, _>>()?;
    let thread = std::thread::Builder::new()
        .name("vsock".into())
        .spawn(move || {
            if let Some(placement) = placement {
                placement.pin_io_thread();
            }
            if let Some(filter) = filter
                && let Err(e) = filter.apply()
            {
                // Fail closed: no device rather than an unfiltered one.
                tracing::error!("vsock: {e}; the device stays dead");
                return;
            }
            worker.run()
        })
        .map_err(VsockError::Spawn)?;

    let device = VsockDevice {
        guest_cid: cid,
        acked_features: 0,
        commands: tx,
        wake,
    };
    let transport = VirtioMmioRegisters::new(Box::new(device), mem, irq, interrupt_status, mmio_evts);
    Ok(VirtioMmioVsock {
        transport: Arc::new(Mutex::new(transport)),
        queue_notify_evts: notify.into_iter().enumerate().map(|(i, e)| (i as u32, e)).collect(),
        irq_evt,
        stop_evt,
        thread: Some(thread),
        uds_path: path,
    })
}

#[cfg(test)]
mod tests;
