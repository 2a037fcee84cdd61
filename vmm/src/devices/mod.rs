//! Devices the enclave sees: the serial console (port I/O) and the virtio-mmio vsock device.
//!
//! The vCPU thread dispatches each I/O exit to one of these by address; see [`crate::vcpu`].

pub mod serial;
pub mod virtio;

/// A device behind a block of guest-physical MMIO addresses, called from the vCPU thread's MMIO
/// exits with offsets relative to the start of the device's block.
///
/// Defined next to the virtio-mmio transport, its only implementor; re-exported here so the
/// vCPU's dispatch does not depend on virtio.
pub use virtio::mmio::MmioDevice;
