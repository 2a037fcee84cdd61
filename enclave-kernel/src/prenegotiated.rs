//! A `virtio-drivers` [`Transport`] for the vsock device the VMM pre-negotiated (boot ABI 4,
//! [`VsockPreset`]): the driver's device setup is answered from the boot info instead of the
//! virtio-mmio registers.
//!
//! On the target machines every register access from ring 3 is a 25 µs exit to the VMM, and the
//! driver's setup makes about sixty of them. The VMM starts the device already negotiated (its
//! features accepted, `DRIVER_OK`, the queues at [`abi::vsock_preset_queue`]), so this transport
//! answers the driver's reads from the preset and checks its setup writes against it: a driver
//! that asks for other features, queue sizes or addresses than agreed makes the enclave refuse to
//! start (a panic at boot, before any request), rather than run with a device that looks elsewhere.
//! What still reaches the device: `QueueNotify` (an ioeventfd doorbell, no exit to the VMM
//! process), and the rare paths that must act on it: a reset (status 0, also how queues are
//! unset) and acknowledging an interrupt.
//!
//! The registers are behind [`Registers`] so that the checks run as host unit tests.

use core::mem::size_of;

use credguard_proto::abi::{self, VsockPreset};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// `QueueNotify` (virtio-mmio, offset from the register block).
pub const QUEUE_NOTIFY: usize = 0x50;
/// `InterruptStatus`.
pub const INTERRUPT_STATUS: usize = 0x60;
/// `InterruptACK`.
pub const INTERRUPT_ACK: usize = 0x64;
/// `Status`.
pub const STATUS: usize = 0x70;

/// The device's register block, 32-bit accesses at byte offsets.
pub trait Registers {
    /// Reads the register at `offset`.
    fn read(&mut self, offset: usize) -> u32;
    /// Writes `value` to the register at `offset`.
    fn write(&mut self, offset: usize, value: u32);
}

/// Why the enclave refuses the VMM's [`VsockPreset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    /// The features lack `VIRTIO_F_VERSION_1` or have bits the driver does not accept.
    #[error("pre-negotiated vsock features {0:#x} are not a virtio 1.x subset of {driver:#x}", driver = abi::VSOCK_DRIVER_FEATURES)]
    Features(u64),
    /// The CID is reserved (0, 1, 2) or does not fit 32 bits.
    #[error("pre-negotiated guest CID {0} is not usable")]
    GuestCid(u64),
    /// A queue is not where the ABI fixes it.
    #[error("pre-negotiated vsock queue {0} is not the ABI's (size {size}, rings at the start of the DMA window)", size = abi::VSOCK_QUEUE_SIZE)]
    Queue(usize),
}

/// Checks the VMM's preset: everything but the feature subset and the CID is the ABI's own.
pub fn check_preset(preset: &VsockPreset) -> Result<(), PresetError> {
    let f = preset.features;
    if f & abi::VIRTIO_F_VERSION_1 == 0 || f & !abi::VSOCK_DRIVER_FEATURES != 0 {
        return Err(PresetError::Features(f));
    }
    if preset.guest_cid <= 2 || preset.guest_cid >= u64::from(u32::MAX) {
        return Err(PresetError::GuestCid(preset.guest_cid));
    }
    for (i, q) in preset.queues.iter().enumerate() {
        if *q != abi::vsock_preset_queue(i) || preset.queue_size != abi::VSOCK_QUEUE_SIZE {
            return Err(PresetError::Queue(i));
        }
    }
    Ok(())
}

/// The initialisation the driver goes through (virtio 1.x §3.1.1), as the device already has.
const ACK_DRIVER: DeviceStatus = DeviceStatus::ACKNOWLEDGE.union(DeviceStatus::DRIVER);
const FEATURES_OK: DeviceStatus = ACK_DRIVER.union(DeviceStatus::FEATURES_OK);
const DRIVER_OK: DeviceStatus = FEATURES_OK.union(DeviceStatus::DRIVER_OK);

/// The transport; see the module documentation.
#[derive(Debug)]
pub struct PreNegotiated<R: Registers> {
    regs: R,
    preset: VsockPreset,
    /// What the driver believes the status is; the device itself is at `DRIVER_OK` throughout.
    status: DeviceStatus,
    /// Queues the driver has set (bit per queue).
    queues_set: u8,
    /// The device was reset (the driver unset a queue): the preset no longer holds.
    reset: bool,
}

impl<R: Registers> PreNegotiated<R> {
    /// The transport for the device behind `regs`, which the VMM set up as `preset` says.
    pub fn new(regs: R, preset: VsockPreset) -> Result<Self, PresetError> {
        check_preset(&preset)?;
        Ok(PreNegotiated {
            regs,
            preset,
            status: DeviceStatus::empty(),
            queues_set: 0,
            reset: false,
        })
    }

    /// The device configuration space (virtio spec §5.10.4: `guest_cid`, 64 bits).
    fn config(&self) -> [u8; 8] {
        self.preset.guest_cid.to_le_bytes()
    }
}

impl<R: Registers> Transport for PreNegotiated<R> {
    fn device_type(&self) -> DeviceType {
        DeviceType::Socket
    }

    fn read_device_features(&mut self) -> u64 {
        self.preset.features
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        if driver_features != self.preset.features {
            panic!(
                "vsock driver accepts features {driver_features:#x}, the VMM pre-negotiated {:#x}",
                self.preset.features
            );
        }
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        match self.preset.queues.get(usize::from(queue)) {
            // check_preset: the ABI's size, which fits.
            Some(q) => q.size as u32,
            None => 0,
        }
    }

    fn notify(&mut self, queue: u16) {
        self.regs.write(QUEUE_NOTIFY, u32::from(queue));
    }

    fn get_status(&self) -> DeviceStatus {
        self.status
    }

    fn set_status(&mut self, status: DeviceStatus) {
        // The only sequence virtio-drivers' init writes: reset, ACKNOWLEDGE | DRIVER, FEATURES_OK,
        // DRIVER_OK, each step once, in order.
        let expected = match self.status {
            s if s.is_empty() && status.is_empty() => DeviceStatus::empty(),
            s if s.is_empty() => ACK_DRIVER,
            s if s == ACK_DRIVER => FEATURES_OK,
            s if s == FEATURES_OK => DRIVER_OK,
            _ => DeviceStatus::from_bits_retain(u32::MAX),
        };
        if status != expected || self.reset {
            panic!(
                "vsock driver sets status {status:?} after {:?}; the device was pre-negotiated",
                self.status
            );
        }
        if status == DRIVER_OK && self.queues_set != (1 << abi::VSOCK_QUEUES) - 1 {
            panic!(
                "vsock driver sets DRIVER_OK with queues {:#b} of the pre-negotiated three set",
                self.queues_set
            );
        }
        self.status = status;
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {
        // Legacy devices only; this one is virtio-mmio version 2.
    }

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        let index = usize::from(queue);
        let agreed = self.preset.queues.get(index).copied();
        let asked = abi::PresetQueue {
            size: u64::from(size),
            desc: descriptors,
            driver: driver_area,
            device: device_area,
        };
        if agreed != Some(asked) || self.status != FEATURES_OK || self.queues_set & (1 << index) != 0 {
            panic!("vsock driver sets queue {queue} as {asked:x?}; the VMM pre-negotiated {agreed:x?}");
        }
        self.queues_set |= 1 << index;
    }

    fn queue_unset(&mut self, _queue: u16) {
        // The driver is letting go of its rings (they are about to be freed): stop the device
        // from touching them. A reset stops every queue; the VMM then waits for a fresh register
        // negotiation, which this transport never makes.
        if !self.reset {
            self.regs.write(STATUS, 0);
            self.reset = true;
        }
        self.queues_set = 0;
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        queue < 8 && self.queues_set & (1 << queue) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let pending = self.regs.read(INTERRUPT_STATUS);
        if pending != 0 {
            self.regs.write(INTERRUPT_ACK, pending);
        }
        InterruptStatus::from_bits_truncate(pending)
    }

    fn read_config_generation(&self) -> u32 {
        // The configuration (the CID) never changes.
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        let config = self.config();
        let end = offset.checked_add(size_of::<T>()).ok_or(Error::ConfigSpaceTooSmall)?;
        let bytes = config.get(offset..end).ok_or(Error::ConfigSpaceTooSmall)?;
        T::read_from_bytes(bytes).map_err(|_| Error::ConfigSpaceTooSmall)
    }

    fn write_config_space<T: IntoBytes + Immutable>(&mut self, _offset: usize, _value: T) -> Result<(), Error> {
        // The vsock configuration is read-only.
        Err(Error::Unsupported)
    }
}

#[cfg(test)]
mod tests;
