//! The entry point of the vsock device's fuzz target (`fuzz/`, run with `cargo afl`), in the crate
//! so that the regression tests replaying its corpus under `cargo test` run the same code.
//!
//! A guest owns its memory and its side of the MMIO registers: it can write anything into its
//! descriptor tables, rings and buffers, and any value into any register. The harness builds the
//! real device (transport, worker, Unix listener, one host client that has sent its `CONNECT`
//! line) without the worker thread, so that each input runs deterministically on the calling
//! thread, then lets the input play the guest.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::device::{Worker, WorkerFds};
use super::{NUM_QUEUES, VsockDevice};
use crate::devices::virtio::IrqTrigger;
use crate::devices::virtio::mmio::{MmioDevice, VirtioMmioRegisters};

/// Guest memory of the harness: rings at the start, buffers after them.
pub const MEM_SIZE: usize = 0x1_0000;
/// Entries per queue, as the harness's driver sets them up.
pub const QUEUE_SIZE: u16 = 16;
/// Where queue `q`'s descriptor table is; its avail ring is 0x100 and its used ring 0x200 after.
pub const fn queue_base(q: u64) -> u64 {
    q * 0x400
}
/// The guest CID of the harness's device.
pub const GUEST_CID: u64 = 3;
/// The port the harness's host client asks for in its `CONNECT` line.
pub const CLIENT_PORT: u32 = 1234;

/// The real device, driven by the caller instead of its thread.
struct Harness {
    mem: GuestMemoryMmap,
    worker: Worker,
    transport: VirtioMmioRegisters,
    client: UnixStream,
    path: PathBuf,
}

impl Harness {
    fn new() -> Option<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let path = std::env::temp_dir().join(format!(
            "cg-vsock-fuzz-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).ok()?;
        listener.set_nonblocking(true).ok()?;
        let evt = || EventFd::new(EFD_NONBLOCK).ok();
        let (irq_evt, stop, wake) = (evt()?, evt()?, evt()?);
        let notify = [evt()?, evt()?, evt()?];
        let interrupt_status = Arc::new(AtomicU32::new(0));
        let irq = Arc::new(IrqTrigger::new(interrupt_status.clone(), irq_evt));
        let (tx, rx) = mpsc::channel();
        let worker = Worker::new(
            mem.clone(),
            GUEST_CID,
            listener,
            WorkerFds {
                stop,
                commands: wake.try_clone().ok()?,
                notify: [
                    notify[0].try_clone().ok()?,
                    notify[1].try_clone().ok()?,
                    notify[2].try_clone().ok()?,
                ],
            },
            rx,
            None,
        )
        .ok()?;
        let device = VsockDevice {
            guest_cid: GUEST_CID,
            acked_features: 0,
            commands: tx,
            wake,
        };
        let transport = VirtioMmioRegisters::new(Box::new(device), mem.clone(), irq, interrupt_status, notify.into());
        let client = UnixStream::connect(&path).ok()?;
        client.set_nonblocking(true).ok()?;
        Some(Harness {
            mem,
            worker,
            transport,
            client,
            path,
        })
    }

    fn w(&mut self, offset: u32, value: u32) {
        self.transport.write(offset.into(), &value.to_le_bytes());
    }

    /// What a well-behaved driver does: features, three queues, DRIVER_OK.
    fn setup_driver(&mut self) {
        use VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE;
        use VIRTIO_CONFIG_S_DRIVER as DRIVER;
        use VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK;
        use VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK;
        self.w(VIRTIO_MMIO_STATUS, 0);
        self.w(VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER);
        self.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.w(VIRTIO_MMIO_DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1
        self.w(VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        for q in 0..NUM_QUEUES as u64 {
            let base = queue_base(q);
            self.w(VIRTIO_MMIO_QUEUE_SEL, q as u32);
            self.w(VIRTIO_MMIO_QUEUE_NUM, u32::from(QUEUE_SIZE));
            self.w(VIRTIO_MMIO_QUEUE_DESC_LOW, base as u32);
            self.w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, (base + 0x100) as u32);
            self.w(VIRTIO_MMIO_QUEUE_USED_LOW, (base + 0x200) as u32);
            self.w(VIRTIO_MMIO_QUEUE_READY, 1);
        }
        self.w(VIRTIO_MMIO_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    /// One round of the worker's loop, with the host client's side kept moving.
    fn round(&mut self) {
        self.worker.poll_once();
        let mut sink = [0u8; 4096];
        while matches!(self.client.read(&mut sink), Ok(n) if n > 0) {}
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Plays the guest with `data`. The first byte chooses how:
/// - even: after a correct driver setup and a host client's `CONNECT`, the rest is copied over
///   guest memory from address 0 (descriptor tables, avail and used rings, buffers: see
///   [`queue_base`]) and the device processes its queues, three times, with host traffic between;
/// - odd: the rest is a sequence of 5-byte MMIO register accesses (offset / 4, then a
///   little-endian value; an odd offset byte reads instead), with queue processing after each.
pub fn guest_rings(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(mut h) = Harness::new() else { return };
    if mode & 1 == 0 {
        h.setup_driver();
        let _ = h.client.write_all(format!("CONNECT {CLIENT_PORT}\n").as_bytes());
        h.round();
        let len = rest.len().min(MEM_SIZE);
        let _ = h.mem.write_slice(&rest[..len], GuestAddress(0));
        for _ in 0..3 {
            h.round();
            let _ = h.client.write_all(b"host data");
        }
    } else {
        for op in rest.chunks_exact(5) {
            let offset = u32::from(op[0] & !1) * 2;
            let value = u32::from_le_bytes([op[1], op[2], op[3], op[4]]);
            if op[0] & 1 == 0 {
                h.w(offset, value);
            } else {
                let mut b = [0u8; 4];
                h.transport.read(offset.into(), &mut b);
            }
            h.round();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fuzz target's seed and regression corpora (`fuzz/corpus/vsock_queues/`,
    //! `fuzz/regressions/vsock_queues/`), replayed on every `cargo test`, and short property
    //! tests.

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vsock_queues_corpus_replays() {
        let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("vsock_queues")) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let bytes = std::fs::read(&path).unwrap();
                let r = std::panic::catch_unwind(|| guest_rings(&bytes));
                assert!(r.is_ok(), "vsock_queues: {} panics", path.display());
                n += 1;
            }
        }
        assert!(n > 0, "no corpus for vsock_queues under {}", fuzz.display());
    }

    /// The harness really reaches the device: the host client's connection request is put in a
    /// receive buffer the guest posted.
    #[test]
    fn harness_delivers_the_connection_request() {
        let mut h = Harness::new().unwrap();
        h.setup_driver();
        let rx = queue_base(0);
        h.mem.write_obj(0x1000u64, GuestAddress(rx)).unwrap(); // desc 0: addr
        h.mem.write_obj(0x1000u32, GuestAddress(rx + 8)).unwrap(); // len
        h.mem.write_obj(2u16, GuestAddress(rx + 12)).unwrap(); // VIRTQ_DESC_F_WRITE
        h.mem.write_obj(0u16, GuestAddress(rx + 0x100 + 4)).unwrap(); // avail ring[0] = 0
        h.mem.write_obj(1u16, GuestAddress(rx + 0x100 + 2)).unwrap(); // avail idx = 1
        h.client
            .write_all(format!("CONNECT {CLIENT_PORT}\n").as_bytes())
            .unwrap();
        h.round();
        h.round();
        let used_idx: u16 = h.mem.read_obj(GuestAddress(rx + 0x200 + 2)).unwrap();
        assert_eq!(used_idx, 1, "the request went into the guest's buffer");
        let op: u16 = h.mem.read_obj(GuestAddress(0x1000 + 30)).unwrap();
        assert_eq!(op, super::super::proto::OP_REQUEST);
        let dst_port: u32 = h.mem.read_obj(GuestAddress(0x1000 + 20)).unwrap();
        assert_eq!(dst_port, CLIENT_PORT);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_rings_are_survived(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut input = vec![0u8];
            input.extend_from_slice(&data);
            guest_rings(&input);
        }

        #[test]
        fn any_register_writes_are_survived(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut input = vec![1u8];
            input.extend_from_slice(&data);
            guest_rings(&input);
        }
    }
}
