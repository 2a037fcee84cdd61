//! Drives the vsock device through its MMIO transport as a guest driver would, over a real
//! `GuestMemoryMmap`, with host clients on the Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::connection::{CONN_BUF_SIZE, HEADER_SIZE, Header};
use super::proto::*;
use super::*;
use crate::devices::virtio::mmio::MmioDevice;

const QSIZE: u16 = 16;
const MEM_SIZE: usize = 0x10_0000;
const RX_BUF_BASE: u64 = 0x2_0000;
const RX_BUF_SIZE: u32 = 0x1000;
const TX_BUF_BASE: u64 = 0x4_0000;
const TX_SLOTS: u16 = 8;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const GUEST_CID: u64 = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

fn desc_addr(q: u32) -> u64 {
    0x1_0000 + q as u64 * 0x1000
}
fn avail_addr(q: u32) -> u64 {
    desc_addr(q) + 0x400
}
fn used_addr(q: u32) -> u64 {
    desc_addr(q) + 0x800
}

fn socket_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "cg-vsock-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// A minimal split-ring guest driver.
struct Guest {
    mem: GuestMemoryMmap,
    dev: VirtioMmioVsock,
    avail_idx: [u16; 3],
    used_seen: [u16; 3],
    tx_slot: u16,
    // The full memory when the device sees only part of it: dropped after `dev`, whose view
    // points into it.
    _backing: Option<GuestMemoryMmap>,
}

fn ghdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

impl Guest {
    /// A device whose driver has not started yet.
    fn new() -> Self {
        Self::with_device_view(MEM_SIZE)
    }

    /// A device that sees only guest memory below `limit` (as the VMM's device sees only the DMA
    /// window), while the test's driver writes anywhere.
    fn with_device_view(limit: usize) -> Self {
        Self::build(limit, None)
    }

    /// A device whose host side answers `answered` itself.
    fn with_host_answered(answered: HostAnsweredPort) -> Self {
        Self::build(MEM_SIZE, Some(answered))
    }

    fn build(limit: usize, host_answered: Option<HostAnsweredPort>) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let view = if limit == MEM_SIZE {
            mem.clone()
        } else {
            let host = vm_memory::GuestMemoryBackend::find_region(&mem, GuestAddress(0))
                .unwrap()
                .as_ptr();
            // SAFETY: the first `limit` bytes of `mem`'s mapping, which `_backing` keeps alive
            // until after the device is dropped.
            let region = unsafe {
                vm_memory::MmapRegion::build_raw(
                    host,
                    limit,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                )
            }
            .unwrap();
            GuestMemoryMmap::from_regions(vec![vm_memory::GuestRegionMmap::new(region, GuestAddress(0)).unwrap()])
                .unwrap()
        };
        let backing = (limit != MEM_SIZE).then(|| mem.clone());
        let dev = create_vsock_device(
            view,
            VsockConfig {
                guest_cid: GUEST_CID,
                filter: None,
                uds_path: socket_path(),
                host_answered,
                placement: None,
            },
        )
        .unwrap();
        Guest {
            mem,
            dev,
            avail_idx: [0; 3],
            used_seen: [0; 3],
            tx_slot: 0,
            _backing: backing,
        }
    }

    /// A device set up by the driver, with rx buffers posted.
    fn ready() -> Self {
        let mut g = Guest::new();
        g.setup();
        g.post_rx_buffers();
        g
    }

    fn r(&self, off: u32) -> u32 {
        let mut b = [0u8; 4];
        self.dev.transport.lock().unwrap().read(off.into(), &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&self, off: u32, v: u32) {
        self.dev.transport.lock().unwrap().write(off.into(), &v.to_le_bytes());
    }

    fn negotiate(&self) {
        assert_eq!(self.r(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(self.r(VIRTIO_MMIO_VERSION), 2);
        assert_eq!(self.r(VIRTIO_MMIO_DEVICE_ID), 19);
        self.w(VIRTIO_MMIO_STATUS, 0);
        self.w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        self.w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        let high = self.r(VIRTIO_MMIO_DEVICE_FEATURES);
        self.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.w(VIRTIO_MMIO_DRIVER_FEATURES, high);
        self.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.w(VIRTIO_MMIO_DRIVER_FEATURES, 0);
        self.w(
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
        );
        assert_ne!(self.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    }

    fn setup_queue(&self, q: u32, desc: u64) {
        self.w(VIRTIO_MMIO_QUEUE_SEL, q);
        assert_eq!(self.r(VIRTIO_MMIO_QUEUE_NUM_MAX), QUEUE_MAX_SIZE as u32);
        self.w(VIRTIO_MMIO_QUEUE_NUM, QSIZE as u32);
        self.w(VIRTIO_MMIO_QUEUE_DESC_LOW, desc as u32);
        self.w(VIRTIO_MMIO_QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail_addr(q) as u32);
        self.w(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        self.w(VIRTIO_MMIO_QUEUE_USED_LOW, used_addr(q) as u32);
        self.w(VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        self.w(VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(self.r(VIRTIO_MMIO_QUEUE_READY), 1);
    }

    fn driver_ok(&self) {
        self.w(
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE
                | VIRTIO_CONFIG_S_DRIVER
                | VIRTIO_CONFIG_S_FEATURES_OK
                | VIRTIO_CONFIG_S_DRIVER_OK,
        );
    }

    fn setup(&self) {
        self.negotiate();
        for q in 0..3 {
            self.setup_queue(q, desc_addr(q));
        }
        self.driver_ok();
        assert!(self.dev.transport.lock().unwrap().is_activated());
    }

    fn write_desc(&self, q: u32, idx: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = GuestAddress(desc_addr(q) + idx as u64 * 16);
        self.mem.write_obj(addr, d).unwrap();
        self.mem.write_obj(len, GuestAddress(d.0 + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(d.0 + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(d.0 + 14)).unwrap();
    }

    fn push_avail(&mut self, q: u32, head: u16) {
        let slot = self.avail_idx[q as usize] % QSIZE;
        self.mem
            .write_obj(head, GuestAddress(avail_addr(q) + 4 + 2 * slot as u64))
            .unwrap();
        fence(Ordering::SeqCst);
        self.avail_idx[q as usize] = self.avail_idx[q as usize].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q as usize], GuestAddress(avail_addr(q) + 2))
            .unwrap();
        fence(Ordering::SeqCst);
    }

    fn kick(&self, q: u32) {
        self.dev.queue_notify_evts[q as usize].1.write(1).unwrap();
    }

    fn used_idx(&self, q: u32) -> u16 {
        self.mem.read_obj(GuestAddress(used_addr(q) + 2)).unwrap()
    }

    /// Waits for the next used element of queue `q`: `(id, len)`.
    fn wait_used(&mut self, q: u32, timeout: Duration) -> Option<(u32, u32)> {
        let start = Instant::now();
        while self.used_idx(q) == self.used_seen[q as usize] {
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        fence(Ordering::SeqCst);
        let slot = self.used_seen[q as usize] % QSIZE;
        let e = used_addr(q) + 4 + 8 * slot as u64;
        let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
        self.used_seen[q as usize] = self.used_seen[q as usize].wrapping_add(1);
        Some((id, len))
    }

    fn post_rx_buffers(&mut self) {
        for i in 0..QSIZE {
            self.write_desc(
                RX_QUEUE,
                i,
                RX_BUF_BASE + i as u64 * RX_BUF_SIZE as u64,
                RX_BUF_SIZE,
                F_WRITE,
                0,
            );
            self.push_avail(RX_QUEUE, i);
        }
        self.kick(RX_QUEUE);
    }

    /// The next packet the device put in the rx queue (the buffer is posted again).
    fn recv_timeout(&mut self, timeout: Duration) -> Option<(Header, Vec<u8>)> {
        let (id, len) = self.wait_used(RX_QUEUE, timeout)?;
        assert!(id < QSIZE as u32, "rx id {id}");
        let buf = RX_BUF_BASE + id as u64 * RX_BUF_SIZE as u64;
        assert!(len as usize >= HEADER_SIZE, "rx len {len}");
        let mut hb = [0u8; HEADER_SIZE];
        self.mem.read_slice(&mut hb, GuestAddress(buf)).unwrap();
        let h = Header::from_bytes(&hb);
        let mut data = vec![0u8; len as usize - HEADER_SIZE];
        self.mem
            .read_slice(&mut data, GuestAddress(buf + HEADER_SIZE as u64))
            .unwrap();
        assert_eq!(h.len as usize, data.len());
        self.push_avail(RX_QUEUE, id as u16);
        self.kick(RX_QUEUE);
        Some((h, data))
    }

    fn recv(&mut self) -> (Header, Vec<u8>) {
        self.recv_timeout(TIMEOUT).expect("no rx packet")
    }

    fn expect_no_rx(&mut self, ms: u64) {
        if let Some((h, d)) = self.recv_timeout(Duration::from_millis(ms)) {
            panic!("unexpected rx packet {h:?} with {} bytes", d.len());
        }
    }

    /// Sends a chain of `(addr, len, flags)` descriptors on tx and waits until it is used.
    fn send_chain(&mut self, descs: &[(u64, u32, u16)]) -> (u32, u32) {
        assert!(descs.len() <= 2);
        let slot = self.tx_slot % TX_SLOTS;
        self.tx_slot += 1;
        let first = slot * 2;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let next = if i + 1 < descs.len() { F_NEXT } else { 0 };
            self.write_desc(
                TX_QUEUE,
                first + i as u16,
                addr,
                len,
                flags | next,
                first + i as u16 + 1,
            );
        }
        self.push_avail(TX_QUEUE, first);
        self.kick(TX_QUEUE);
        let used = self.wait_used(TX_QUEUE, TIMEOUT).expect("tx chain not used");
        assert_eq!(used.0, first as u32);
        used
    }

    fn tx_buf(&self) -> u64 {
        TX_BUF_BASE + (self.tx_slot % TX_SLOTS) as u64 * 0x2000
    }

    /// Sends a packet as a header descriptor plus a data descriptor (virtio-drivers' layout).
    fn send(&mut self, mut h: Header, data: &[u8]) {
        h.len = data.len() as u32;
        let buf = self.tx_buf();
        self.mem.write_slice(&h.to_bytes(), GuestAddress(buf)).unwrap();
        if data.is_empty() {
            self.send_chain(&[(buf, HEADER_SIZE as u32, 0)]);
        } else {
            self.mem.write_slice(data, GuestAddress(buf + 0x1000)).unwrap();
            self.send_chain(&[(buf, HEADER_SIZE as u32, 0), (buf + 0x1000, data.len() as u32, 0)]);
        }
    }

    fn client(&self) -> UnixStream {
        let s = UnixStream::connect(self.dev.uds_path()).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    /// Connects a host client to guest `port`; returns the client and the host-side port.
    fn connect(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut c = self.client();
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let (req, _) = self.recv();
        assert_eq!(req.op, OP_REQUEST);
        assert_eq!((req.src_cid, req.dst_cid, req.dst_port), (HOST_CID, GUEST_CID, port));
        let mut resp = ghdr(OP_RESPONSE, port, req.src_port);
        resp.buf_alloc = buf_alloc;
        self.send(resp, &[]);
        assert_eq!(read_line(&mut c), format!("OK {port}\n"));
        (c, req.src_port)
    }
}

fn read_line(c: &mut UnixStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.last() != Some(&b'\n') {
        match c.read(&mut b) {
            Ok(1) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_exact_from(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    c.read_exact(&mut buf).unwrap();
    buf
}

fn assert_eof(c: &mut UnixStream) {
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, read {:?}", &b[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF: {e}"),
    }
}

#[test]
fn transport_identity_features_and_config() {
    let g = Guest::new();
    assert_eq!(g.r(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(g.r(VIRTIO_MMIO_VERSION), 2);
    assert_eq!(g.r(VIRTIO_MMIO_DEVICE_ID), 19);
    assert_ne!(g.r(VIRTIO_MMIO_VENDOR_ID), 0);
    g.w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    assert_eq!(g.r(VIRTIO_MMIO_DEVICE_FEATURES), 0);
    g.w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(g.r(VIRTIO_MMIO_DEVICE_FEATURES), 1, "VIRTIO_F_VERSION_1 only");
    g.w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_eq!(g.r(VIRTIO_MMIO_DEVICE_FEATURES), 0);

    // Config space: guest_cid, u64 LE, in any access size.
    let mut t = g.dev.transport.lock().unwrap();
    let mut b8 = [0u8; 8];
    t.read(0x100, &mut b8);
    assert_eq!(u64::from_le_bytes(b8), GUEST_CID);
    let mut b4 = [0u8; 4];
    t.read(0x104, &mut b4);
    assert_eq!(b4, [0; 4]);
    t.read(0x1fc, &mut b4);
    assert_eq!(b4, [0; 4]);
    // Bad accesses are ignored: wrong size, unaligned, unknown register.
    let mut b2 = [0xffu8; 2];
    t.read(VIRTIO_MMIO_MAGIC_VALUE.into(), &mut b2);
    assert_eq!(b2, [0; 2]);
    t.read(0x02, &mut b4);
    t.read(0xf0, &mut b4);
    assert_eq!(b4, [0; 4]);
    t.write(VIRTIO_MMIO_STATUS.into(), &[1, 2]);
    t.write(0x0f0, &[1, 2, 3, 4]);
    t.write(0x100, &[1, 2, 3, 4]);
    t.read(0x100, &mut b8);
    assert_eq!(u64::from_le_bytes(b8), GUEST_CID, "config is read-only");
    assert_eq!(t.status(), 0);
}

#[test]
fn transport_refuses_bad_setups() {
    let g = Guest::new();
    // Queue setup before FEATURES_OK is ignored.
    g.w(VIRTIO_MMIO_QUEUE_SEL, 0);
    g.w(VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(g.r(VIRTIO_MMIO_QUEUE_READY), 0);
    // Features without VERSION_1: FEATURES_OK refused.
    g.w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    g.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    g.w(VIRTIO_MMIO_DRIVER_FEATURES, 0);
    g.w(
        VIRTIO_MMIO_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    assert_eq!(g.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
    // Unknown features: refused too.
    g.w(VIRTIO_MMIO_STATUS, 0);
    g.w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    g.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    g.w(VIRTIO_MMIO_DRIVER_FEATURES, 1 | 2);
    g.w(
        VIRTIO_MMIO_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
    );
    assert_eq!(g.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK, 0);

    // A queue outside guest memory: DRIVER_OK does not activate, DEVICE_NEEDS_RESET is set.
    g.negotiate();
    g.setup_queue(0, desc_addr(0));
    g.setup_queue(1, 0x10_0000_0000);
    g.setup_queue(2, desc_addr(2));
    g.w(VIRTIO_MMIO_QUEUE_SEL, 7);
    assert_eq!(g.r(VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    g.w(VIRTIO_MMIO_QUEUE_NUM, 4);
    g.driver_ok();
    assert!(!g.dev.transport.lock().unwrap().is_activated());
    assert_ne!(g.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);

    // A bad queue size: the same.
    g.negotiate();
    g.setup_queue(0, desc_addr(0));
    g.setup_queue(1, desc_addr(1));
    g.setup_queue(2, desc_addr(2));
    g.w(VIRTIO_MMIO_QUEUE_SEL, 2);
    assert_eq!(g.r(VIRTIO_MMIO_QUEUE_READY), 1);
    g.driver_ok();
    assert!(g.dev.transport.lock().unwrap().is_activated());
    // Reset, then a size that is not a power of two.
    g.w(VIRTIO_MMIO_STATUS, 0);
    assert_eq!(g.r(VIRTIO_MMIO_STATUS), 0);
    assert!(!g.dev.transport.lock().unwrap().is_activated());
    g.negotiate();
    g.setup_queue(0, desc_addr(0));
    g.setup_queue(1, desc_addr(1));
    g.setup_queue(2, desc_addr(2));
    g.w(
        VIRTIO_MMIO_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
    );
    assert!(g.dev.transport.lock().unwrap().is_activated());
    g.w(VIRTIO_MMIO_STATUS, 0);
    g.negotiate();
    g.setup_queue(0, desc_addr(0));
    g.w(VIRTIO_MMIO_QUEUE_SEL, 0);
    // Ready queues cannot be reconfigured; the size written before READY counts.
    g.w(VIRTIO_MMIO_QUEUE_NUM, 3);
    g.setup_queue(1, desc_addr(1));
    g.w(VIRTIO_MMIO_QUEUE_SEL, 2);
    g.w(VIRTIO_MMIO_QUEUE_NUM, 3);
    g.w(VIRTIO_MMIO_QUEUE_READY, 1);
    g.driver_ok();
    assert!(!g.dev.transport.lock().unwrap().is_activated());
}

#[test]
fn host_connect_and_data_both_ways() {
    let mut g = Guest::ready();
    let (mut c, host_port) = g.connect(ENCLAVE_PORT, 64 * 1024);
    assert!(host_port >= device::FIRST_LOCAL_PORT);

    // The interrupt was raised for used buffers (the rest is in the interrupt test).
    assert_ne!(g.r(VIRTIO_MMIO_INTERRUPT_STATUS) & 1, 0);

    // Host to guest.
    c.write_all(b"hello").unwrap();
    let (h, data) = g.recv();
    assert_eq!(
        (h.op, h.src_port, h.dst_port, h.src_cid, h.dst_cid),
        (OP_RW, host_port, ENCLAVE_PORT, 2, 3)
    );
    assert_eq!(h.buf_alloc, CONN_BUF_SIZE);
    assert_eq!(data, b"hello");

    // Guest to host.
    g.send(ghdr(OP_RW, ENCLAVE_PORT, host_port), b"world!");
    assert_eq!(read_exact_from(&mut c, 6), b"world!");

    // Credit request: answered with our fwd_cnt.
    g.send(ghdr(OP_CREDIT_REQUEST, ENCLAVE_PORT, host_port), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.fwd_cnt, h.buf_alloc), (OP_CREDIT_UPDATE, 6, CONN_BUF_SIZE));

    // The client half-closes: the guest sees SHUTDOWN(SEND); the guest still writes, then closes.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    g.send(ghdr(OP_RW, ENCLAVE_PORT, host_port), b"bye");
    assert_eq!(read_exact_from(&mut c, 3), b"bye");
    let mut sd = ghdr(OP_SHUTDOWN, ENCLAVE_PORT, host_port);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(sd, &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, host_port, ENCLAVE_PORT));
    assert_eof(&mut c);
}

const ENCLAVE_PORT: u32 = 7000;

#[test]
fn the_vmm_answers_its_own_port_and_the_guest_never_hears_of_it() {
    let mut g = Guest::with_host_answered(HostAnsweredPort {
        port: 4242,
        answer: Arc::new(|| b"vmm facts".to_vec()),
    });
    g.setup();
    g.post_rx_buffers();
    let mut c = g.client();
    c.write_all(b"CONNECT 4242\nanything after the line is ignored")
        .unwrap();
    assert_eq!(read_line(&mut c), "OK 4242\n");
    assert_eq!(read_exact_from(&mut c, 9), b"vmm facts");
    assert_eof(&mut c);
    g.expect_no_rx(200);
    // Every other port still reaches the guest.
    let (mut c, host_port) = g.connect(ENCLAVE_PORT, 4096);
    c.write_all(b"x").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, h.src_port, data.as_slice()), (OP_RW, host_port, &b"x"[..]));
}

#[test]
fn client_connecting_before_the_driver_is_served_after_driver_ok() {
    let mut g = Guest::new();
    let mut c = g.client();
    c.write_all(b"CONNECT 7000\nearly").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    g.setup();
    g.post_rx_buffers();
    let (req, _) = g.recv();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 7000));
    g.send(ghdr(OP_RESPONSE, 7000, req.src_port), &[]);
    assert_eq!(read_line(&mut c), "OK 7000\n");
    // Bytes sent right after the line are delivered.
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (OP_RW, &b"early"[..]));
}

#[test]
fn half_closed_client_still_gets_its_reply() {
    let mut g = Guest::ready();
    let mut c = g.client();
    c.write_all(b"CONNECT 7000\nrequest").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (req, _) = g.recv();
    std::thread::sleep(Duration::from_millis(50));
    g.send(ghdr(OP_RESPONSE, 7000, req.src_port), &[]);
    assert_eq!(read_line(&mut c), "OK 7000\n");
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (OP_RW, &b"request"[..]));
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    g.send(ghdr(OP_RW, 7000, req.src_port), b"reply");
    assert_eq!(read_exact_from(&mut c, 5), b"reply");
}

#[test]
fn client_closing_while_connecting_is_reset() {
    let mut g = Guest::ready();
    let mut c = g.client();
    c.write_all(b"CONNECT 7000\n").unwrap();
    let (req, _) = g.recv();
    drop(c);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, req.src_port, 7000));
    // The late RESPONSE is for a stream that is gone: reset again.
    g.send(ghdr(OP_RESPONSE, 7000, req.src_port), &[]);
    assert_eq!(g.recv().0.op, OP_RST);
}

#[test]
fn guest_rst_closes_the_client() {
    let mut g = Guest::ready();
    let mut c = g.client();
    c.write_all(b"CONNECT 1234\n").unwrap();
    let (req, _) = g.recv();
    g.send(ghdr(OP_RST, 1234, req.src_port), &[]);
    assert_eof(&mut c);
    // An established stream reset by the guest closes the client too.
    let (mut c, hp) = g.connect(7000, 4096);
    g.send(ghdr(OP_RST, 7000, hp), &[]);
    assert_eof(&mut c);
    g.expect_no_rx(50);
}

#[test]
fn client_eof_and_hangups_reset_the_stream() {
    let mut g = Guest::ready();
    let (c, hp) = g.connect(7000, 4096);
    drop(c);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    // The guest writes to a closed client: the stream is reset.
    g.send(ghdr(OP_RW, 7000, hp), b"x");
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port), (OP_RST, hp));
}

#[test]
fn host_data_respects_guest_credit() {
    let mut g = Guest::ready();
    let (mut c, hp) = g.connect(7000, 4);
    c.write_all(b"abcdefghij").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, data.as_slice()), (OP_RW, &b"abcd"[..]));
    g.expect_no_rx(100);
    // The guest consumed 4 bytes: 4 more may come.
    let mut cu = ghdr(OP_CREDIT_UPDATE, 7000, hp);
    cu.buf_alloc = 4;
    cu.fwd_cnt = 4;
    g.send(cu, &[]);
    let (_, data) = g.recv();
    assert_eq!(data, b"efgh");
    g.expect_no_rx(100);
    // A bigger buffer lets the rest through.
    cu.buf_alloc = 1024;
    cu.fwd_cnt = 8;
    g.send(cu, &[]);
    let (_, data) = g.recv();
    assert_eq!(data, b"ij");
}

#[test]
fn large_host_writes_are_split_into_rx_buffers() {
    let mut g = Guest::ready();
    let (mut c, _) = g.connect(7000, 1 << 20);
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    c.write_all(&payload).unwrap();
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let (h, data) = g.recv();
        assert_eq!(h.op, OP_RW);
        assert!(data.len() <= RX_BUF_SIZE as usize - HEADER_SIZE);
        got.extend_from_slice(&data);
    }
    assert_eq!(got, payload);
}

#[test]
fn guest_initiated_connections_are_refused() {
    let mut g = Guest::ready();
    g.send(ghdr(OP_REQUEST, 5555, 80), &[]);
    let (h, _) = g.recv();
    assert_eq!(
        (h.op, h.src_cid, h.dst_cid, h.src_port, h.dst_port),
        (OP_RST, HOST_CID, GUEST_CID, 80, 5555)
    );
    // Datagram-type packets too.
    let mut dgram = ghdr(OP_REQUEST, 5555, 80);
    dgram.type_ = 2;
    g.send(dgram, &[]);
    assert_eq!(g.recv().0.op, OP_RST);
}

#[test]
fn malformed_packets_and_descriptors_are_dropped() {
    let mut g = Guest::ready();
    let buf = g.tx_buf();
    // Header descriptor too short.
    assert_eq!(g.send_chain(&[(buf, 10, 0)]), (g.tx_slot as u32 * 2 - 2, 0));
    // Header outside guest memory, and straddling its end.
    g.send_chain(&[(0x10_0000_0000, 44, 0)]);
    g.send_chain(&[(MEM_SIZE as u64 - 20, 44, 0)]);
    // A device-writable header on tx.
    g.send_chain(&[(g.tx_buf(), 44, F_WRITE)]);
    // len beyond the data descriptor, and data outside memory.
    let mut h = ghdr(OP_RW, 1, 2);
    h.len = 100;
    let b = g.tx_buf();
    g.mem.write_slice(&h.to_bytes(), GuestAddress(b)).unwrap();
    g.send_chain(&[(b, 44, 0), (b + 0x1000, 10, 0)]);
    let b = g.tx_buf();
    g.mem.write_slice(&h.to_bytes(), GuestAddress(b)).unwrap();
    g.send_chain(&[(b, 44, 0), (u64::MAX - 50, 100, 0)]);
    // Enormous len.
    let mut h = ghdr(OP_RW, 1, 2);
    h.len = u32::MAX;
    let b = g.tx_buf();
    g.mem.write_slice(&h.to_bytes(), GuestAddress(b)).unwrap();
    g.send_chain(&[(b, 44, 0), (b + 0x1000, 100, 0)]);
    // Wrong CIDs: dropped without an answer.
    let mut h = ghdr(OP_REQUEST, 1, 2);
    h.src_cid = 7;
    g.send(h, &[]);
    let mut h = ghdr(OP_REQUEST, 1, 2);
    h.dst_cid = 1;
    g.send(h, &[]);
    // Unknown op to an unknown stream: dropped.
    g.send(ghdr(99, 1, 2), &[]);
    g.expect_no_rx(100);

    // Unknown op on a known stream: dropped, the stream lives on.
    let (mut c, hp) = g.connect(7000, 4096);
    g.send(ghdr(42, 7000, hp), &[]);
    g.send(ghdr(OP_RW, 7000, hp), b"still here");
    assert_eq!(read_exact_from(&mut c, 10), b"still here");
    // A RESPONSE on an established stream resets it.
    g.send(ghdr(OP_RESPONSE, 7000, hp), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port), (OP_RST, hp));
    assert_eof(&mut c);
}

#[test]
fn packets_outside_the_device_view_are_dropped_not_faulted() {
    // The device sees the rings and rx buffers, not the tx buffers (as in the VMM, where it sees
    // the DMA window only).
    let mut g = Guest::with_device_view(TX_BUF_BASE as usize);
    g.setup();
    g.post_rx_buffers();
    // A request to a port nobody serves: in view it would get an RST; out of view it is dropped.
    g.send(ghdr(OP_REQUEST, 1, 2), &[]);
    g.expect_no_rx(100);
    // The device lives on: a host client's connection reaches the guest.
    let mut c = UnixStream::connect(g.dev.uds_path()).unwrap();
    c.write_all(b"CONNECT 7000\n").unwrap();
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_REQUEST);
}

#[test]
fn bad_rx_buffers_are_returned_empty() {
    let mut g = Guest::new();
    g.setup();
    // Only bad buffers first: outside memory, read-only, header-only.
    g.write_desc(RX_QUEUE, 0, 0x10_0000_0000, RX_BUF_SIZE, F_WRITE, 0);
    g.write_desc(RX_QUEUE, 1, RX_BUF_BASE, RX_BUF_SIZE, 0, 0);
    g.write_desc(RX_QUEUE, 2, RX_BUF_BASE, 44, F_WRITE, 0);
    g.write_desc(RX_QUEUE, 3, RX_BUF_BASE + 0x1000, RX_BUF_SIZE, F_WRITE, 0);
    for i in 0..4 {
        g.push_avail(RX_QUEUE, i);
    }
    g.kick(RX_QUEUE);
    g.send(ghdr(OP_REQUEST, 5, 6), &[]);
    for bad in 0..3 {
        assert_eq!(g.wait_used(RX_QUEUE, TIMEOUT), Some((bad, 0)));
    }
    let (id, len) = g.wait_used(RX_QUEUE, TIMEOUT).unwrap();
    assert_eq!((id, len), (3, 44));
    let mut hb = [0u8; 44];
    g.mem.read_slice(&mut hb, GuestAddress(RX_BUF_BASE + 0x1000)).unwrap();
    assert_eq!(Header::from_bytes(&hb).op, OP_RST);
}

#[test]
fn garbage_connect_lines_get_an_error_and_close() {
    let g = Guest::ready();
    for (line, reply) in [
        (&b"CONNECT abc\n"[..], "ERR bad port\n"),
        (b"CONNECT 99999999999\n", "ERR bad port\n"),
        (b"HELLO 1\n", "ERR expected CONNECT <port>\n"),
        (&[b'C'; 100][..], "ERR line too long\n"),
    ] {
        let mut c = g.client();
        let _ = c.write_all(line);
        assert_eq!(read_line(&mut c), reply);
        assert_eof(&mut c);
    }
}

#[test]
fn connections_are_bounded() {
    let mut g = Guest::new();
    let clients: Vec<UnixStream> = (0..MAX_CONNECTIONS).map(|_| g.client()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = g.client();
    assert_eq!(read_line(&mut extra), "ERR too many connections\n");
    assert_eof(&mut extra);
    drop(clients);
    // Slots free up once the clients are gone (wait until the worker noticed).
    g.setup();
    g.post_rx_buffers();
    let start = Instant::now();
    let mut c = loop {
        let mut c = g.client();
        c.write_all(b"CONNECT 7000\n").unwrap();
        if g.recv_timeout(Duration::from_millis(100))
            .is_some_and(|(h, _)| h.op == OP_REQUEST)
        {
            break c;
        }
        assert_eq!(read_line(&mut c), "ERR too many connections\n");
        assert!(start.elapsed() < TIMEOUT, "slots never freed");
    };
    let _ = c.flush();
}

#[test]
fn notify_through_the_mmio_path_and_reset() {
    let mut g = Guest::ready();
    let mut c = g.client();
    c.write_all(b"CONNECT 7000\n").unwrap();
    let (req, _) = g.recv();
    // Notify tx by a QueueNotify write instead of the ioeventfd.
    let b = g.tx_buf();
    g.mem
        .write_slice(&ghdr(OP_RESPONSE, 7000, req.src_port).to_bytes(), GuestAddress(b))
        .unwrap();
    let first = (g.tx_slot % TX_SLOTS) * 2;
    g.tx_slot += 1;
    g.write_desc(TX_QUEUE, first, b, 44, 0, 0);
    g.push_avail(TX_QUEUE, first);
    g.w(VIRTIO_MMIO_QUEUE_NOTIFY, TX_QUEUE);
    assert_eq!(read_line(&mut c), "OK 7000\n");
    // A driver reset closes the guest's streams.
    g.w(VIRTIO_MMIO_STATUS, 0);
    assert_eof(&mut c);
}

#[test]
fn credit_updates_follow_forwarded_bytes() {
    let mut g = Guest::ready();
    let (mut c, hp) = g.connect(7000, 4096);
    // The guest fills our buffer (within our credit).
    let chunk = vec![5u8; 3000];
    let mut sent = 0usize;
    while sent + chunk.len() <= CONN_BUF_SIZE as usize {
        g.send(ghdr(OP_RW, 7000, hp), &chunk);
        sent += chunk.len();
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 8192];
    while got < sent {
        got += c.read(&mut buf).unwrap();
    }
    // The host's fwd_cnt went past half the buffer: an unsolicited credit update came.
    let mut saw_update = false;
    while let Some((h, _)) = g.recv_timeout(Duration::from_millis(200)) {
        if h.op == OP_CREDIT_UPDATE {
            saw_update = true;
            assert!(h.fwd_cnt as usize >= CONN_BUF_SIZE as usize / 2);
        }
    }
    assert!(saw_update);
}

#[test]
fn stop_removes_the_socket() {
    let mut g = Guest::ready();
    let path = g.dev.uds_path().to_path_buf();
    assert!(path.exists());
    g.dev.stop();
    assert!(!path.exists());
    g.dev.stop();
}

#[test]
fn guest_ignoring_credit_is_paused_not_buffered() {
    let mut g = Guest::ready();
    let (mut c, hp) = g.connect(7000, 4096);
    // Eight 60 000-byte packets while the client does not read: far beyond our credit and the
    // socket's buffer.
    const PKT: usize = 60_000;
    let data_base = 0x8_0000u64;
    let before = g.used_idx(TX_QUEUE);
    for i in 0..8u16 {
        let hdr_addr = TX_BUF_BASE + i as u64 * 0x2000;
        let mut h = ghdr(OP_RW, 7000, hp);
        h.len = PKT as u32;
        g.mem.write_slice(&h.to_bytes(), GuestAddress(hdr_addr)).unwrap();
        let data_addr = data_base + i as u64 * PKT as u64;
        g.mem
            .write_slice(&vec![i as u8 + 1; PKT], GuestAddress(data_addr))
            .unwrap();
        g.write_desc(TX_QUEUE, 2 * i, hdr_addr, 44, F_NEXT, 2 * i + 1);
        g.write_desc(TX_QUEUE, 2 * i + 1, data_addr, PKT as u32, 0, 0);
        g.push_avail(TX_QUEUE, 2 * i);
    }
    g.kick(TX_QUEUE);
    std::thread::sleep(Duration::from_millis(200));
    let used = g.used_idx(TX_QUEUE).wrapping_sub(before);
    assert!(
        used < 8,
        "all {used} packets were taken while the client was not reading"
    );
    // The client drains: every packet goes through, in order.
    let mut got = vec![0u8; 8 * PKT];
    c.read_exact(&mut got).unwrap();
    let start = Instant::now();
    while g.used_idx(TX_QUEUE).wrapping_sub(before) != 8 {
        assert!(start.elapsed() < TIMEOUT);
        std::thread::sleep(Duration::from_millis(1));
    }
    for (i, chunk) in got.chunks(PKT).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == i as u8 + 1),
            "packet {i} corrupted or reordered"
        );
    }
}

#[test]
fn silent_clients_time_out() {
    let g = Guest::new();
    let mut c = g.client();
    c.write_all(b"CONNECT 70").unwrap();
    let start = Instant::now();
    assert_eq!(read_line(&mut c), "ERR timeout\n");
    assert_eof(&mut c);
    assert!(start.elapsed() >= super::connection::CONNECT_LINE_TIMEOUT / 2);
}

/// 1 once in 500 calls, else 0: a head index past the table (the queue then stalls until a reset).
fn rare_extra(rng: &mut Rng) -> u64 {
    u64::from(rng.below(500) == 0)
}

/// xorshift64*: deterministic noise for the fuzz-style tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

impl Guest {
    /// Resets the device and sets it up again on clean rings.
    fn reinit(&mut self) {
        self.w(VIRTIO_MMIO_STATUS, 0);
        self.mem
            .write_slice(&vec![0u8; 0x3000], GuestAddress(desc_addr(0)))
            .unwrap();
        self.avail_idx = [0; 3];
        self.used_seen = [0; 3];
        self.tx_slot = 0;
        self.setup();
        self.post_rx_buffers();
    }

    /// Waits (briefly) until queue `q` has room for one more chain without overrunning the ring.
    fn has_room(&self, q: u32) -> bool {
        let start = Instant::now();
        while self.avail_idx[q as usize].wrapping_sub(self.used_idx(q)) >= QSIZE {
            if start.elapsed() > Duration::from_millis(200) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// Checks the device still works end to end.
    fn check_alive(&mut self) {
        let (mut c, hp) = self.connect(7000, 4096);
        c.write_all(b"ping").unwrap();
        let (h, data) = self.recv();
        assert_eq!((h.op, data.as_slice()), (OP_RW, &b"ping"[..]));
        self.send(ghdr(OP_RW, 7000, hp), b"pong");
        assert_eq!(read_exact_from(&mut c, 4), b"pong");
    }
}

#[test]
fn random_rings_and_packets_never_break_the_device() {
    let mut used = (0u64, 0u64);
    for seed in 1..=4u64 {
        let (tx, rx) = fuzz_rings(seed.wrapping_mul(0x1234_5678_9abc_def1));
        used = (used.0 + tx as u64, used.1 + rx as u64);
    }
    // The noise reached the device (not only jammed rings).
    assert!(used.0 > 500 && used.1 > 100, "used {used:?}");
}

/// Returns the used counts of tx and rx.
fn fuzz_rings(seed: u64) -> (u16, u16) {
    let mut g = Guest::ready();
    let (mut c, hp) = g.connect(7000, 4096);
    c.set_nonblocking(true).unwrap();
    let mut rng = Rng(seed);
    // A tx ring the noise jammed (a bad head stalls it until a reset) gets no more chains.
    let mut stuck = [false; 2];
    let pick_addr = |rng: &mut Rng| match rng.below(4) {
        0 => rng.next(),
        1 => MEM_SIZE as u64 - rng.below(64),
        _ => 0x8_0000 + rng.below(0x7_0000),
    };
    for round in 0..3000 {
        match rng.below(6) {
            0 => {
                // Random descriptors on tx, random head.
                for _ in 0..rng.below(4) {
                    let idx = rng.below(QSIZE as u64) as u16;
                    let (addr, len) = (pick_addr(&mut rng), rng.below(0x2_0000) as u32);
                    g.write_desc(TX_QUEUE, idx, addr, len, rng.below(8) as u16, rng.below(20) as u16);
                }
                // Rarely a head past the table (the queue then stalls until a reset).
                let extra = rare_extra(&mut rng);
                let head = rng.below(QSIZE as u64 + extra) as u16;
                if stuck[1] || !g.has_room(TX_QUEUE) {
                    stuck[1] = true;
                    continue;
                }
                g.push_avail(TX_QUEUE, head);
                g.kick(TX_QUEUE);
            }
            1 => {
                // A well-formed chain with a random header, often aimed at the live stream.
                let mut h = ghdr(rng.below(10) as u16, 7000, hp);
                if rng.below(3) == 0 {
                    h.src_port = rng.next() as u32;
                    h.dst_port = rng.next() as u32;
                }
                if rng.below(8) == 0 {
                    h.type_ = rng.next() as u16;
                }
                h.flags = rng.next() as u32;
                h.buf_alloc = rng.next() as u32;
                h.fwd_cnt = rng.next() as u32;
                let slot = rng.below(TX_SLOTS as u64) as u16;
                let buf = TX_BUF_BASE + slot as u64 * 0x2000;
                h.len = rng.below(0x1800) as u32;
                g.mem.write_slice(&h.to_bytes(), GuestAddress(buf)).unwrap();
                g.write_desc(TX_QUEUE, slot * 2, buf, 44, F_NEXT, slot * 2 + 1);
                g.write_desc(TX_QUEUE, slot * 2 + 1, buf + 0x1000, rng.below(0x1000) as u32, 0, 0);
                if stuck[1] || !g.has_room(TX_QUEUE) {
                    stuck[1] = true;
                    continue;
                }
                g.push_avail(TX_QUEUE, slot * 2);
                g.kick(TX_QUEUE);
            }
            2 => {
                // Random rx descriptors.
                let idx = rng.below(QSIZE as u64) as u16;
                g.write_desc(
                    RX_QUEUE,
                    idx,
                    pick_addr(&mut rng),
                    rng.below(0x2000) as u32,
                    rng.below(8) as u16,
                    rng.below(20) as u16,
                );
                let extra = rare_extra(&mut rng);
                // A full rx ring is normal (the device uses buffers only when it has packets).
                if g.avail_idx[0].wrapping_sub(g.used_idx(RX_QUEUE)) >= QSIZE {
                    continue;
                }
                g.push_avail(RX_QUEUE, rng.below(QSIZE as u64 + extra) as u16);
                g.kick(RX_QUEUE);
            }
            3 => {
                let n = rng.below(3000) as usize;
                let _ = c.write(&vec![rng.next() as u8; n]);
            }
            4 => {
                let mut b = [0u8; 4096];
                let _ = c.read(&mut b);
            }
            _ => {
                // A random avail index or used ring scribble.
                if rng.below(100) == 0 {
                    let q = rng.below(3) as u32;
                    g.mem
                        .write_obj(rng.next() as u16, GuestAddress(avail_addr(q) + 2))
                        .unwrap();
                    g.kick(q);
                }
            }
        }
        if round % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let used = (g.used_idx(TX_QUEUE), g.used_idx(RX_QUEUE));
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    g.reinit();
    g.check_alive();
    used
}

#[test]
fn random_register_accesses_never_break_the_transport() {
    let mut g = Guest::new();
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    for _ in 0..20_000 {
        let off = if rng.below(2) == 0 {
            rng.below(0x30) * 4
        } else {
            rng.below(0x1000)
        };
        let len = [1usize, 2, 4, 8, 3][rng.below(5) as usize];
        let mut t = g.dev.transport.lock().unwrap();
        if rng.below(2) == 0 {
            let mut b = vec![0u8; len];
            t.read(off, &mut b);
        } else {
            let v = rng.next().to_le_bytes();
            // Avoid notifying through the transport thousands of times for nothing.
            t.write(off, &v[..len]);
        }
    }
    g.reinit();
    g.check_alive();
}

#[test]
fn interrupts_follow_used_buffers_unless_suppressed() {
    let mut g = Guest::ready();
    let irq_count = |g: &Guest| g.dev.irq_evt.read().unwrap_or(0);
    // The signal follows the used-ring update by a moment.
    let wait_irq = |g: &Guest| {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            if irq_count(g) > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    };
    assert_eq!(irq_count(&g), 0, "posting buffers raises nothing");
    // An RST for an unknown stream uses a tx buffer and answers nothing.
    g.send(ghdr(OP_RST, 1, 2), &[]);
    assert!(wait_irq(&g));
    assert_eq!(g.r(VIRTIO_MMIO_INTERRUPT_STATUS), 1);
    g.w(VIRTIO_MMIO_INTERRUPT_ACK, 1);
    assert_eq!(g.r(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    // The guest does not ack: the next used buffer still signals.
    g.send(ghdr(OP_RST, 1, 2), &[]);
    assert!(wait_irq(&g));
    // VRING_AVAIL_F_NO_INTERRUPT on tx: no signal for tx buffers.
    g.mem.write_obj(1u16, GuestAddress(avail_addr(TX_QUEUE))).unwrap();
    g.send(ghdr(OP_RST, 1, 2), &[]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(irq_count(&g), 0);
    // ...but rx buffers still do.
    g.send(ghdr(OP_REQUEST, 1, 2), &[]);
    assert_eq!(g.recv().0.op, OP_RST);
    assert!(wait_irq(&g));
}

/// The queues of the test layout, as a boot ABI would agree them.
fn agreed_queues(size: u16) -> Vec<credguard_proto::abi::PresetQueue> {
    (0..3)
        .map(|q| credguard_proto::abi::PresetQueue {
            size: size.into(),
            desc: desc_addr(q),
            driver: avail_addr(q),
            device: used_addr(q),
        })
        .collect()
}

const F_VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
const DRIVER_OK_STATUS: u32 =
    VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

#[test]
fn a_pre_negotiated_device_serves_with_no_register_access() {
    let mut g = Guest::new();
    assert_eq!(g.dev.offered_features(), F_VERSION_1);
    g.dev.start_negotiated(F_VERSION_1, &agreed_queues(QSIZE)).unwrap();
    assert!(g.dev.transport.lock().unwrap().is_activated());
    g.post_rx_buffers();
    let (mut c, host_port) = g.connect(ENCLAVE_PORT, 64 * 1024);
    c.write_all(b"ping").unwrap();
    assert_eq!(g.recv().1, b"ping");
    g.send(ghdr(OP_RW, ENCLAVE_PORT, host_port), b"pong");
    assert_eq!(read_exact_from(&mut c, 4), b"pong");
    assert_eq!(g.dev.register_accesses(), 0, "the driver needed no register");
    // Once is all: the device is no longer fresh.
    assert!(g.dev.start_negotiated(F_VERSION_1, &agreed_queues(QSIZE)).is_err());
}

#[test]
fn a_guest_writing_registers_after_pre_negotiation_changes_nothing_until_it_resets() {
    let mut g = Guest::new();
    g.dev.start_negotiated(F_VERSION_1, &agreed_queues(QSIZE)).unwrap();
    g.post_rx_buffers();
    // A driver that negotiates anyway, without a reset first: every setup write is refused.
    g.w(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    g.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    g.w(VIRTIO_MMIO_DRIVER_FEATURES, 0xffff_ffff);
    for q in 0..3 {
        g.w(VIRTIO_MMIO_QUEUE_SEL, q);
        g.w(VIRTIO_MMIO_QUEUE_READY, 0);
        g.w(VIRTIO_MMIO_QUEUE_NUM, 2);
        g.w(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x9_0000);
        g.w(VIRTIO_MMIO_QUEUE_USED_HIGH, 0xffff_ffff);
        assert_eq!(g.r(VIRTIO_MMIO_QUEUE_READY), 1);
    }
    assert_eq!(g.r(VIRTIO_MMIO_STATUS), DRIVER_OK_STATUS);
    // The device still serves the agreed rings.
    let (mut c, host_port) = g.connect(ENCLAVE_PORT, 64 * 1024);
    g.send(ghdr(OP_RW, ENCLAVE_PORT, host_port), b"still here");
    assert_eq!(read_exact_from(&mut c, 10), b"still here");
    assert!(g.dev.register_accesses() > 0);
    // A reset drops the agreement (and the guest's streams); a plain negotiation works after it.
    g.w(VIRTIO_MMIO_STATUS, 0);
    assert_eof(&mut c);
    assert_eq!(g.r(VIRTIO_MMIO_STATUS), 0);
    g.setup();
}

#[test]
fn hostile_agreed_queues_are_refused_as_register_written_ones_are() {
    // The device sees guest memory below 0x3_0000 only, as the VMM's device sees the DMA window.
    let view: u64 = 0x3_0000;
    let g = Guest::with_device_view(view as usize);
    let with = |q: usize, f: &dyn Fn(&mut credguard_proto::abi::PresetQueue)| {
        let mut queues = agreed_queues(QSIZE);
        f(&mut queues[q]);
        queues
    };
    let hostile: Vec<(&str, u64, Vec<credguard_proto::abi::PresetQueue>)> = vec![
        ("descriptors outside the view", F_VERSION_1, with(0, &|q| q.desc = view)),
        (
            "descriptors in guest RAM the device does not see",
            F_VERSION_1,
            with(1, &|q| q.desc = 0x8_0000),
        ),
        (
            "used ring across the view's end",
            F_VERSION_1,
            with(2, &|q| q.device = view - 8),
        ),
        (
            "driver ring at the top of the address space",
            F_VERSION_1,
            with(1, &|q| q.driver = u64::MAX - 1),
        ),
        ("unaligned descriptors", F_VERSION_1, with(0, &|q| q.desc += 1)),
        ("size 0", F_VERSION_1, with(0, &|q| q.size = 0)),
        ("size not a power of two", F_VERSION_1, with(1, &|q| q.size = 12)),
        ("size above the maximum", F_VERSION_1, with(2, &|q| q.size = 512)),
        ("size beyond 32 bits", F_VERSION_1, with(2, &|q| q.size = 1 << 40 | 16)),
        ("two queues", F_VERSION_1, agreed_queues(QSIZE)[..2].to_vec()),
        (
            "four queues",
            F_VERSION_1,
            [agreed_queues(QSIZE), agreed_queues(QSIZE)].concat()[..4].to_vec(),
        ),
        ("no VIRTIO_F_VERSION_1", 0, agreed_queues(QSIZE)),
        ("a feature not offered", F_VERSION_1 | 1 << 29, agreed_queues(QSIZE)),
    ];
    for (what, features, queues) in hostile {
        assert!(g.dev.start_negotiated(features, &queues).is_err(), "{what}");
        let t = g.dev.transport.lock().unwrap();
        assert!(!t.is_activated() && t.status() == 0, "{what}: left as fresh");
    }
    // The same device then starts with good queues.
    g.dev.start_negotiated(F_VERSION_1, &agreed_queues(QSIZE)).unwrap();
    assert_eq!(g.r(VIRTIO_MMIO_STATUS), DRIVER_OK_STATUS);
}
