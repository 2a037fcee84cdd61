//! The virtio-mmio transport, modern layout (version 2, virtio spec 1.x §4.2.2).
//!
//! The guest may write anything: a bad access (wrong size, unknown offset, a write in the wrong
//! state) is ignored with a debug log. Queue notifications normally never get here (KVM
//! ioeventfds on `QueueNotify` with a datamatch per queue signal the device thread directly); a
//! notification that does arrive through [`MmioDevice::write`] is forwarded to the same
//! [`EventFd`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{IrqTrigger, VIRTIO_F_VERSION_1, VirtioDevice, status};

/// A device on the MMIO bus. `offset` is relative to the start of the device's register block.
pub trait MmioDevice: Send {
    /// A guest read of `data.len()` bytes at `offset`; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// `MagicValue`: "virt".
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version` of the modern transport.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID` we report ("CGRD").
pub const MMIO_VENDOR_ID: u32 = u32::from_le_bytes(*b"CGRD");
/// Offset of the device configuration space.
pub const MMIO_CONFIG_OFFSET: u64 = 0x100;

/// Register offsets of the virtio-mmio transport.
pub mod regs {
    /// Magic value (R).
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version (R).
    pub const VERSION: u64 = 0x004;
    /// Device ID (R).
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor ID (R).
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features, 32 bits selected by `DEVICE_FEATURES_SEL` (R).
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Device features word selector (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, 32 bits selected by `DRIVER_FEATURES_SEL` (W).
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Driver features word selector (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Queue selector (W).
    pub const QUEUE_SEL: u64 = 0x030;
    /// Largest size of the selected queue (R).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue (W).
    pub const QUEUE_NUM: u64 = 0x038;
    /// Ready bit of the selected queue (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// Queue notifier (W).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status (R).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge (W).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status (RW).
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits (W).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Driver (available) ring address, low 32 bits (W).
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// Driver (available) ring address, high 32 bits (W).
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// Device (used) ring address, low 32 bits (W).
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// Device (used) ring address, high 32 bits (W).
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// Configuration atomicity value (R).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

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

/// The virtio-mmio register block of one device.
pub struct MmioTransport {
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
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device.device_type())
            .field("status", &self.status)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// A transport for `device`. `interrupt_status` is the `InterruptStatus` register shared
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
        MmioTransport {
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

    /// The device features offered: the device's own plus `VIRTIO_F_VERSION_1`.
    fn offered_features(&self) -> u64 {
        self.device.device_features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may be written only while the driver is setting up (after `DRIVER`
    /// and `FEATURES_OK`, before `DRIVER_OK`) and the selected queue is not ready.
    fn queue_config_allowed(&self) -> bool {
        self.status & status::FEATURES_OK != 0
            && self.status & (status::DRIVER_OK | status::FAILED) == 0
            && self.queues.get(self.queue_sel as usize).is_some_and(|q| !q.ready)
    }

    fn read_reg(&mut self, offset: u64) -> Option<u32> {
        use regs::*;
        Some(match offset {
            MAGIC_VALUE => MMIO_MAGIC,
            VERSION => MMIO_VERSION,
            DEVICE_ID => self.device.device_type(),
            VENDOR_ID => MMIO_VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| q.max_size as u32),
            QUEUE_READY => self.queues.get(self.queue_sel as usize).map_or(0, |q| q.ready as u32),
            INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            STATUS => self.status,
            CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        use regs::*;
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = v,
            DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            DRIVER_FEATURES => {
                if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
                    tracing::debug!("virtio-mmio: driver features written in status {:#x}", self.status);
                    return;
                }
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32),
                    sel => tracing::debug!("virtio-mmio: driver features word {sel} ignored"),
                }
            }
            QUEUE_SEL => self.queue_sel = v,
            QUEUE_NUM => {
                if !self.queue_config_allowed() {
                    tracing::debug!("virtio-mmio: QueueNum write ignored (status {:#x})", self.status);
                    return;
                }
                if let Some(q) = self.selected_queue() {
                    // A bad size is kept, and refused at activation.
                    q.size = v;
                }
            }
            QUEUE_READY => {
                if !self.queue_config_allowed() && v != 0 {
                    tracing::debug!("virtio-mmio: QueueReady write ignored (status {:#x})", self.status);
                    return;
                }
                if self.status & status::DRIVER_OK != 0 {
                    tracing::debug!("virtio-mmio: QueueReady write after DRIVER_OK ignored");
                    return;
                }
                if let Some(q) = self.selected_queue() {
                    q.ready = v == 1;
                }
            }
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW | QUEUE_DRIVER_HIGH | QUEUE_DEVICE_LOW
            | QUEUE_DEVICE_HIGH => {
                if !self.queue_config_allowed() {
                    tracing::debug!("virtio-mmio: queue address write ignored (status {:#x})", self.status);
                    return;
                }
                let Some(q) = self.selected_queue() else { return };
                match offset {
                    QUEUE_DESC_LOW => set_low(&mut q.desc, v),
                    QUEUE_DESC_HIGH => set_high(&mut q.desc, v),
                    QUEUE_DRIVER_LOW => set_low(&mut q.driver, v),
                    QUEUE_DRIVER_HIGH => set_high(&mut q.driver, v),
                    QUEUE_DEVICE_LOW => set_low(&mut q.device, v),
                    _ => set_high(&mut q.device, v),
                }
            }
            QUEUE_NOTIFY => {
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
            INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!v, Ordering::SeqCst);
            }
            STATUS => self.write_status(v),
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
        if added & status::FEATURES_OK != 0 {
            let offered = self.offered_features();
            if self.driver_features & !offered != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                tracing::debug!(
                    "virtio-mmio: driver features {:#x} not acceptable (offered {offered:#x}); FEATURES_OK refused",
                    self.driver_features
                );
                self.status = v & !status::FEATURES_OK & !status::DRIVER_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
        }
        if added & status::DRIVER_OK != 0 && !self.activated {
            if v & status::FEATURES_OK == 0 {
                tracing::debug!("virtio-mmio: DRIVER_OK without FEATURES_OK; ignored");
                self.status = v & !status::DRIVER_OK;
                return;
            }
            self.status = v;
            self.activate();
            return;
        }
        self.status = v;
    }

    fn activate(&mut self) {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, cfg) in self.queues.iter().enumerate() {
            match cfg.build(&self.mem) {
                Ok(q) => queues.push(q),
                Err(e) => {
                    tracing::warn!("virtio-mmio: DRIVER_OK with a bad queue {i}: {e}");
                    self.status |= status::DEVICE_NEEDS_RESET;
                    return;
                }
            }
        }
        match self.device.activate(self.mem.clone(), queues, self.irq.clone()) {
            Ok(()) => self.activated = true,
            Err(e) => {
                tracing::warn!("virtio-mmio: activation failed: {e}");
                self.status |= status::DEVICE_NEEDS_RESET;
            }
        }
    }

    fn reset(&mut self) {
        if self.activated && !self.device.reset() {
            tracing::warn!("virtio-mmio: device cannot be reset");
            self.status |= status::DEVICE_NEEDS_RESET;
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

impl MmioDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= MMIO_CONFIG_OFFSET {
            self.device.read_config(offset - MMIO_CONFIG_OFFSET, data);
            return;
        }
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
        if offset >= MMIO_CONFIG_OFFSET {
            self.device.write_config(offset - MMIO_CONFIG_OFFSET, data);
            return;
        }
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
