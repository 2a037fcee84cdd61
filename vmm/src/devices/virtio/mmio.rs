//! The virtio-mmio transport, modern layout (version 2, virtio spec 1.x §4.2.2), device side:
//! [`VirtioMmioRegisters`] is the register block the VMM emulates for one device (the guest's
//! driver side is virtio-drivers' `MmioTransport`, in the enclave).
//!
//! The guest may write anything: a bad access (wrong size, unknown offset, a write in the wrong
//! state) is ignored with a debug log.
//!
//! The VMM may also start the device already negotiated ([`VirtioMmioRegisters::start_negotiated`],
//! boot ABI 4): features accepted, queues at addresses the boot ABI fixes, `DRIVER_OK` set, so
//! that the guest's driver makes none of the register accesses of a negotiation (each a 25 µs
//! exit from ring 3 on the target machines). The agreed queues are checked exactly as
//! register-written ones are at `DRIVER_OK`; a guest that writes the registers anyway meets a
//! device at `DRIVER_OK` (setup writes are ignored, a status of 0 resets it for a fresh
//! negotiation). Queue notifications normally never get here (KVM
//! ioeventfds on `QueueNotify` with a datamatch per queue signal the device thread directly); a
//! notification that does arrive through [`MmioDevice::write`] is forwarded to the same
//! [`EventFd`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use credguard_proto::abi::PresetQueue;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{IrqTrigger, VirtioDevice};

/// A device on the MMIO bus. `offset` is relative to the start of the device's register block.
pub trait MmioDevice: Send {
    /// A guest read of `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// Guest accesses so far (each one an exit to the VMM).
    fn accesses(&self) -> u64;
}

/// `MagicValue`: "virt".
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version` of the modern transport.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` we report ("CGRD").
pub const MMIO_VENDOR_ID: u32 = u32::from_le_bytes(*b"CGRD");
/// `VIRTIO_F_VERSION_1` as a feature mask: the device complies with virtio 1.x (the only mode we
/// offer).
const F_VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;

/// What the driver wrote for one queue; turned into a [`Queue`] at `DRIVER_OK`.
#[derive(Debug, Clone, Default)]
struct QueueConfig {
    max_size: u16,
    size: u32,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        QueueConfig {
            max_size,
            size: max_size as u32,
            ..Default::default()
        }
    }

    /// The queue the driver described, if it is well formed and fits in `mem`.
    fn build(&self, mem: &GuestMemoryMmap) -> Result<Queue, String> {
        let mut q = Queue::new(self.max_size).map_err(|e| format!("max size {}: {e}", self.max_size))?;
        let size = u16::try_from(self.size).map_err(|_| format!("size {}", self.size))?;
        q.try_set_size(size).map_err(|e| format!("size {size}: {e}"))?;
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .map_err(|e| format!("descriptor table {:#x}: {e}", self.desc))?;
        q.try_set_avail_ring_address(GuestAddress(self.driver))
            .map_err(|e| format!("driver ring {:#x}: {e}", self.driver))?;
        q.try_set_used_ring_address(GuestAddress(self.device))
            .map_err(|e| format!("device ring {:#x}: {e}", self.device))?;
        q.set_ready(self.ready);
        if !self.ready {
            return Err("not ready".into());
        }
        if !q.is_valid(mem) {
            return Err("rings outside guest memory".into());
        }
        Ok(q)
    }
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | low as u64;
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | ((high as u64) << 32);
}

/// The virtio-mmio register block of one device, as the VMM emulates it on the MMIO bus: the
/// driver's feature and queue configuration, handed to the device at `DRIVER_OK`.
pub struct VirtioMmioRegisters {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    irq: Arc<IrqTrigger>,
    interrupt_status: Arc<AtomicU32>,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
    /// Guest register accesses (each an exit to the VMM), for the boot's exit count.
    accesses: u64,
}

impl std::fmt::Debug for VirtioMmioRegisters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioMmioRegisters")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl VirtioMmioRegisters {
    /// The register block of `device`. `interrupt_status` is the `InterruptStatus` register shared
    /// with `irq`; `queue_evts[i]` is signalled when the driver notifies queue `i` through an MMIO
    /// write (must have one per queue of the device, else such notifications are dropped).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: Arc<IrqTrigger>,
        interrupt_status: Arc<AtomicU32>,
        queue_evts: Vec<EventFd>,
    ) -> Self {
        let queues = Self::fresh_queues(device.as_ref());
        VirtioMmioRegisters {
            device,
            mem,
            irq,
            interrupt_status,
            queue_evts,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            activated: false,
            accesses: 0,
        }
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<QueueConfig> {
        device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueConfig::new(max))
            .collect()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device was activated (the driver set `DRIVER_OK` with valid queues).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Guest register accesses so far (reads and writes through [`MmioDevice`]; queue
    /// notifications that KVM's ioeventfds take never get here).
    pub fn register_accesses(&self) -> u64 {
        self.accesses
    }

    /// Starts the device as if the driver had accepted `features` and set up `queues` (index
    /// order, all of the device's) through the registers and then set `DRIVER_OK`: the boot
    /// ABI's pre-negotiation, done before the guest runs. Checked as the register path checks:
    /// the features must be offered and include `VIRTIO_F_VERSION_1`, and each queue's size and
    /// rings must be valid in the device's memory (the DMA window). On error the device is left
    /// reset, as the guest first finds it.
    pub fn start_negotiated(&mut self, features: u64, queues: &[PresetQueue]) -> Result<(), String> {
        if self.status != 0 || self.activated {
            return Err(format!("the device is not fresh (status {:#x})", self.status));
        }
        if queues.len() != self.queues.len() {
            return Err(format!("{} queues for a device of {}", queues.len(), self.queues.len()));
        }
        let offered = self.offered_features();
        if features & !offered != 0 || features & F_VERSION_1 == 0 {
            return Err(format!("features {features:#x} not acceptable (offered {offered:#x})"));
        }
        for (cfg, q) in self.queues.iter_mut().zip(queues) {
            // A size that does not fit is refused by `build`, as a bad QueueNum would be.
            cfg.size = u32::try_from(q.size).unwrap_or(u32::MAX);
            (cfg.desc, cfg.driver, cfg.device, cfg.ready) = (q.desc, q.driver, q.device, true);
        }
        self.driver_features = features;
        self.device.ack_features(features);
        self.status = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        let activated = self.activate();
        if activated.is_err() {
            self.reset();
        }
        activated
    }

    /// The device features offered: the device's own plus `VIRTIO_F_VERSION_1`.
    pub fn offered_features(&self) -> u64 {
        self.device.device_features() | F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may be written only while the driver is setting up (after `DRIVER`
    /// and `FEATURES_OK`, before `DRIVER_OK`) and the selected queue is not ready.
    fn queue_config_allowed(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & (VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FAILED) == 0
            && self.queues.get(self.queue_sel as usize).is_some_and(|q| !q.ready)
    }

    fn read_reg(&mut self, offset: u32) -> Option<u32> {
        Some(match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => MMIO_VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| q.max_size as u32),
            VIRTIO_MMIO_QUEUE_READY => self.queues.get(self.queue_sel as usize).map_or(0, |q| q.ready as u32),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    fn write_reg(&mut self, offset: u32, v: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES => {
                if self.status & VIRTIO_CONFIG_S_DRIVER == 0 || self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
                    tracing::debug!("virtio-mmio: driver features written in status {:#x}", self.status);
                    return;
                }
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32),
                    sel => tracing::debug!("virtio-mmio: driver features word {sel} ignored"),
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM => {
                if !self.queue_config_allowed() {
                    tracing::debug!("virtio-mmio: QueueNum write ignored (status {:#x})", self.status);
                    return;
                }
                if let Some(q) = self.selected_queue() {
                    // A bad size is kept, and refused at activation.
                    q.size = v;
                }
            }
            VIRTIO_MMIO_QUEUE_READY => {
                if !self.queue_config_allowed() && v != 0 {
                    tracing::debug!("virtio-mmio: QueueReady write ignored (status {:#x})", self.status);
                    return;
                }
                if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
                    tracing::debug!("virtio-mmio: QueueReady write after DRIVER_OK ignored");
                    return;
                }
                if let Some(q) = self.selected_queue() {
                    q.ready = v == 1;
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW
            | VIRTIO_MMIO_QUEUE_DESC_HIGH
            | VIRTIO_MMIO_QUEUE_AVAIL_LOW
            | VIRTIO_MMIO_QUEUE_AVAIL_HIGH
            | VIRTIO_MMIO_QUEUE_USED_LOW
            | VIRTIO_MMIO_QUEUE_USED_HIGH => {
                if !self.queue_config_allowed() {
                    tracing::debug!("virtio-mmio: queue address write ignored (status {:#x})", self.status);
                    return;
                }
                let Some(q) = self.selected_queue() else { return };
                match offset {
                    VIRTIO_MMIO_QUEUE_DESC_LOW => set_low(&mut q.desc, v),
                    VIRTIO_MMIO_QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
                    VIRTIO_MMIO_QUEUE_AVAIL_LOW => set_low(&mut q.driver, v),
                    VIRTIO_MMIO_QUEUE_AVAIL_HIGH => set_high(&mut q.driver, v),
                    VIRTIO_MMIO_QUEUE_USED_LOW => set_low(&mut q.device, v),
                    _ => set_high(&mut q.device, v),
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => {
                if !self.activated {
                    tracing::debug!("virtio-mmio: notify of queue {v} before activation");
                }
                match self.queue_evts.get(v as usize) {
                    Some(evt) => {
                        if let Err(e) = evt.write(1) {
                            tracing::warn!("virtio-mmio: cannot forward notify of queue {v}: {e}");
                        }
                    }
                    None => tracing::debug!("virtio-mmio: notify of unknown queue {v}"),
                }
            }
            VIRTIO_MMIO_INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!v, Ordering::SeqCst);
            }
            VIRTIO_MMIO_STATUS => self.write_status(v),
            _ => tracing::debug!("virtio-mmio: write to unknown register {offset:#x}"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver only ever adds bits (until a reset).
        if v & old != old {
            tracing::debug!("virtio-mmio: status {v:#x} clears bits of {old:#x}; ignored");
            return;
        }
        let added = v & !old;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.offered_features();
            if self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0 {
                tracing::debug!(
                    "virtio-mmio: driver features {:#x} not acceptable (offered {offered:#x}); FEATURES_OK refused",
                    self.driver_features
                );
                self.status = v & !VIRTIO_CONFIG_S_FEATURES_OK & !VIRTIO_CONFIG_S_DRIVER_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
        }
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 && !self.activated {
            if v & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
                tracing::debug!("virtio-mmio: DRIVER_OK without FEATURES_OK; ignored");
                self.status = v & !VIRTIO_CONFIG_S_DRIVER_OK;
                return;
            }
            self.status = v;
            if let Err(e) = self.activate() {
                tracing::warn!("virtio-mmio: DRIVER_OK refused: {e}");
            }
            return;
        }
        self.status = v;
    }

    /// Hands the configured queues to the device; on a bad queue or a failed activation, sets
    /// `DEVICE_NEEDS_RESET` and says why.
    fn activate(&mut self) -> Result<(), String> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, cfg) in self.queues.iter().enumerate() {
            match cfg.build(&self.mem) {
                Ok(q) => queues.push(q),
                Err(e) => {
                    self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                    return Err(format!("bad queue {i}: {e}"));
                }
            }
        }
        match self.device.activate(self.mem.clone(), queues, self.irq.clone()) {
            Ok(()) => {
                self.activated = true;
                Ok(())
            }
            Err(e) => {
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                Err(format!("activation failed: {e}"))
            }
        }
    }

    fn reset(&mut self) {
        if self.activated && !self.device.reset() {
            tracing::warn!("virtio-mmio: device cannot be reset");
            self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
            return;
        }
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt_status.store(0, Ordering::SeqCst);
        self.queues = Self::fresh_queues(self.device.as_ref());
    }
}

/// The register at `offset`, or `None` past the registers (in the device configuration space).
fn register(offset: u64) -> Option<u32> {
    u32::try_from(offset).ok().filter(|&o| o < VIRTIO_MMIO_CONFIG)
}

impl MmioDevice for VirtioMmioRegisters {
    fn accesses(&self) -> u64 {
        self.accesses
    }

    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.accesses = self.accesses.saturating_add(1);
        let Some(offset) = register(offset) else {
            self.device.read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        };
        data.fill(0);
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::debug!("virtio-mmio: read of {} bytes at {offset:#x} ignored", data.len());
            return;
        }
        match self.read_reg(offset) {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => tracing::debug!("virtio-mmio: read of unknown register {offset:#x}"),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.accesses = self.accesses.saturating_add(1);
        let Some(offset) = register(offset) else {
            self.device.write_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        };
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::debug!("virtio-mmio: write of {} bytes at {offset:#x} ignored", data.len());
            return;
        };
        if !offset.is_multiple_of(4) {
            tracing::debug!("virtio-mmio: unaligned write at {offset:#x} ignored");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}
