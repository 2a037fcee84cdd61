//! Virtio devices of the VMM: a virtio-mmio transport ([`mmio`]) and the vsock device ([`vsock`]).
//!
//! The split follows the usual VMM shape: the transport owns the register block and the queue
//! configuration the driver writes, and hands the queues to a transport-independent
//! [`VirtioDevice`] when the driver sets `DRIVER_OK`. The device then works on its own thread,
//! woken by the queue-notify [`EventFd`]s (KVM ioeventfds) and answering by an [`IrqTrigger`]
//! (a KVM irqfd).
//!
//! The virtio constants (device ids, feature and status bits, MMIO registers, ring flags) are
//! the Linux headers' names, from `virtio-bindings`.

pub mod mmio;
pub mod vsock;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use mmio::{MmioDevice, VirtioMmioRegisters};
pub use vsock::{HostAnsweredPort, VirtioMmioVsock, VsockConfig, VsockError, create_vsock_device};

/// Raises the device's interrupt: sets a bit of the transport's `InterruptStatus` register and
/// signals the irq [`EventFd`] (a KVM irqfd, edge-triggered).
#[derive(Debug)]
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    evt: EventFd,
}

impl IrqTrigger {
    /// A trigger that sets bits of `status` and writes `evt`.
    pub fn new(status: Arc<AtomicU32>, evt: EventFd) -> Self {
        IrqTrigger { status, evt }
    }

    /// Signals used buffers: sets `VIRTIO_MMIO_INT_VRING` and writes the irq eventfd.
    pub fn trigger_used(&self) {
        self.trigger(VIRTIO_MMIO_INT_VRING);
    }

    /// Sets `bits` in `InterruptStatus` and writes the irq eventfd.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        if let Err(e) = self.evt.write(1) {
            tracing::warn!("virtio: cannot signal the irq eventfd: {e}");
        }
    }

    /// The current `InterruptStatus` value.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up fewer queues than the device needs, or invalid ones.
    #[error("bad queue configuration: {0}")]
    BadQueues(String),
    /// The device's worker is gone.
    #[error("the device worker is not running")]
    WorkerGone,
    /// Duplicating an eventfd failed.
    #[error("eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// The device side of a virtio device, independent of the transport.
pub trait VirtioDevice: Send {
    /// The virtio device type (e.g. `VIRTIO_ID_VSOCK`).
    fn device_type(&self) -> u32;

    /// The largest size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// The feature bits the device offers.
    fn device_features(&self) -> u64;

    /// The driver accepted `features` (a subset of [`Self::device_features`]) with `FEATURES_OK`.
    fn ack_features(&mut self, features: u64);

    /// Reads device configuration space at `offset` (from the start of config space). Bytes
    /// past the end of the configuration read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device configuration space. The default ignores writes (read-only config).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!("virtio: ignored config write of {} bytes at {offset:#x}", data.len());
    }

    /// Starts the device with the queues the driver set up (index order), the guest memory, and
    /// the interrupt to raise when buffers are used.
    fn activate(&mut self, mem: GuestMemoryMmap, queues: Vec<Queue>, irq: Arc<IrqTrigger>)
    -> Result<(), ActivateError>;

    /// Stops using the queues after a driver reset (status 0). Returns `false` if the device
    /// cannot be reset (the transport then sets `DEVICE_NEEDS_RESET`).
    fn reset(&mut self) -> bool;
}
