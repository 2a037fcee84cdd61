//! The boot ABI between `credguard-vmm` and the enclave kernel.
//!
//! The VMM prepares the whole boot state from this module (page tables, GDT, TSS, IDT, boot info)
//! and the enclave's ring-0 assembly uses the same constants, so the two cannot drift. The VMM
//! builds the descriptor tables rather than the guest because on the target machines guest ring-0
//! code is emulated instruction by instruction (thousands of times slower than native); every
//! table the guest would fill itself costs milliseconds of boot time. Ring 0 is left with the
//! parts only it can do: taking interrupts and faults, halting, and port I/O.
//!
//! # Guest physical layout (identity mapped)
//!
//! | GPA | what | mapping |
//! |---|---|---|
//! | `0x0000` | null page | not present |
//! | [`PML4_GPA`]..[`GDT_GPA`] | page tables | supervisor, RW, NX |
//! | [`GDT_GPA`], [`IDT_GPA`], [`TSS_GPA`] | descriptor tables | supervisor, RW, NX |
//! | [`BOOT_INFO_GPA`] | [`BootInfo`] | user, read-only, NX |
//! | [`REPORT_GPA`] | [`Report`] (fault record, benchmark results) | user, RW, NX |
//! | [`EXCHANGE_GPA`] | [`exchange`] page: vault key hand-over, attestation | user, RW, NX |
//! | [`PT_IMAGE_GPA`] | page tables of the image window above 2 MiB | supervisor, RW, NX |
//! | [`KERNEL_STACK_BOTTOM`]..[`KERNEL_STACK_TOP`] | ring-0 stack (TSS RSP0) | supervisor, RW, NX |
//! | [`RING0_CODE_GPA`] | the image's first segment: vector stubs and ring-0 code | supervisor, RX |
//! | ..[`IMAGE_LIMIT_GPA`] | the image's other segments, as their ELF flags say | user, RX, R or RW+NX |
//! | [`DMA_WINDOW_GPA`] | virtqueues and their buffers (shared with the VMM) | user, RW, NX |
//! | [`HEAP_GPA`]..user stack | ring-3 heap, then ring-3 stack up to the end of RAM | user, RW, NX |
//! | [`VSOCK_MMIO_GPA`] | virtio-mmio vsock registers | user, uncached, NX |
//! | [`DOORBELL_MMIO_GPA`] | benchmark doorbell (ioeventfd) | user, uncached, NX |
//! | [`LAPIC_GPA`] | local APIC | supervisor, uncached, NX |
//! | [`LAPIC_ALIAS_VA`] | the local APIC again, below 2 GiB: ring 0's EOI needs no register | supervisor, uncached, NX |
//!
//! The page tables are W^X (`boot_tables::page_table_entries`, built by the VMM): no page is both writable and executable,
//! only the image's code is executable, and ring-0 code is on supervisor pages (so CR4.SMEP can
//! be on). Pages of the image window that no segment covers are not mapped.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// Top-level page table.
pub const PML4_GPA: u64 = 0x1000;
/// Page-directory-pointer table, the only one (the guest lives below 4 GiB).
pub const PDPT_GPA: u64 = 0x2000;
/// Page directory for 0..1 GiB (RAM).
pub const PD_LOW_GPA: u64 = 0x3000;
/// Page table for 0..2 MiB in 4 KiB pages, so the low pages get their own permissions.
pub const PT_LOW_GPA: u64 = 0x4000;
/// Page directory for 3..4 GiB (MMIO).
pub const PD_MMIO_GPA: u64 = 0x5000;
/// Global descriptor table.
pub const GDT_GPA: u64 = 0x6000;
/// Interrupt descriptor table (256 gates).
pub const IDT_GPA: u64 = 0x7000;
/// Task state segment (RSP0 for interrupts taken in ring 3).
pub const TSS_GPA: u64 = 0x8000;
/// The [`BootInfo`] page, written by the VMM, read-only to the guest.
pub const BOOT_INFO_GPA: u64 = 0x9000;
/// The [`Report`] page: written by the guest, read by the VMM.
pub const REPORT_GPA: u64 = 0xA000;
/// The [`exchange`] page: the VMM hands the vault keys over here (the enclave copies them into
/// hidden memory and wipes them) and signs the enclave's attestation here.
pub const EXCHANGE_GPA: u64 = 0xB000;
/// Two page tables that map the image window from 2 MiB to [`IMAGE_LIMIT_GPA`] in 4 KiB pages
/// (below 2 MiB, [`PT_LOW_GPA`] does), so that each segment of the image gets its own permissions.
pub const PT_IMAGE_GPA: u64 = 0xC000;
/// Lowest address of the ring-0 stack (8 KiB: ring 0 nests at most a system call, an interrupt
/// and a fault, a few hundred bytes).
pub const KERNEL_STACK_BOTTOM: u64 = 0xE000;
/// Initial RSP of ring 0, and RSP0 in the TSS.
pub const KERNEL_STACK_TOP: u64 = 0x10000;

/// Where the image is linked and loaded; its first bytes are the vector stubs.
pub const IMAGE_BASE_GPA: u64 = 0x10_0000;
/// The image's loadable segment that starts here is its ring-0 code (the vector stubs first, and
/// the entry point): mapped supervisor-only, so ring 3 can neither read nor run it and ring 0
/// never runs a ring-3 page. It must be readable and executable, not writable.
pub const RING0_CODE_GPA: u64 = IMAGE_BASE_GPA;
/// The image's loaded segments must end at or below this address.
pub const IMAGE_LIMIT_GPA: u64 = DMA_WINDOW_GPA;
/// Start of the DMA window: virtqueues and packet buffers, the only guest RAM the VMM's devices
/// touch after boot.
pub const DMA_WINDOW_GPA: u64 = 0x60_0000;
/// Size of the DMA window.
pub const DMA_WINDOW_SIZE: u64 = 0x20_0000;
/// Start of the ring-3 heap.
pub const HEAP_GPA: u64 = DMA_WINDOW_GPA + DMA_WINDOW_SIZE;
/// Size of the ring-3 stack, at the top of RAM.
pub const USER_STACK_SIZE: u64 = 0x8_0000;

/// Smallest guest RAM the layout fits in (leaves 3.5 MiB of heap).
pub const MIN_RAM_SIZE: u64 = 12 << 20;
/// Default guest RAM.
pub const DEFAULT_RAM_SIZE: u64 = 16 << 20;
/// Largest guest RAM the page tables map (one page directory).
pub const MAX_RAM_SIZE: u64 = 1 << 30;

/// Interrupt-vector stubs: vector `v`'s entry point is `VECTOR_STUBS_GPA + v * VECTOR_STUB_SIZE`.
/// The enclave's linker script puts them at the start of the image; the VMM points the IDT there.
pub const VECTOR_STUBS_GPA: u64 = IMAGE_BASE_GPA;
/// The same stubs for a guest with CR4.SMAP on, right after the first table: their handlers
/// bracket each ring-0 access to a ring-3 page with RFLAGS.AC (set by `popfq`: KVM's instruction
/// emulator, which runs guest ring 0 on the target machines, has no `stac`/`clac`). The VMM points
/// the IDT here when it turns SMAP on; otherwise the first table's handlers skip the brackets.
pub const SMAP_VECTOR_STUBS_GPA: u64 = VECTOR_STUBS_GPA + IDT_ENTRIES as u64 * VECTOR_STUB_SIZE;
/// Bytes of both stub tables, which must lie in the ring-0 segment.
pub const VECTOR_STUBS_SIZE: u64 = 2 * IDT_ENTRIES as u64 * VECTOR_STUB_SIZE;
/// Bytes per vector stub.
pub const VECTOR_STUB_SIZE: u64 = 32;
/// Number of IDT gates.
pub const IDT_ENTRIES: usize = 256;

/// Virtio-mmio register block of the vsock device.
pub const VSOCK_MMIO_GPA: u64 = 0xD000_0000;
/// Size of the vsock device's register block.
pub const VSOCK_MMIO_SIZE: u64 = 0x1000;
/// GSI (IOAPIC pin) of the vsock device's interrupt. Interrupts reach the guest through the
/// IOAPIC and the local APIC only: the VMM must mask both legacy PICs, or a GSI below 16 also
/// arrives as a PIC vector (e.g. GSI 6 as vector 6, a bogus #UD).
pub const VSOCK_GSI: u32 = 5;
/// Vector the vsock interrupt arrives on.
pub const VSOCK_VECTOR: u8 = 0x30;
/// A write here rings the benchmark doorbell (an ioeventfd; no exit to the VMM process).
pub const DOORBELL_MMIO_GPA: u64 = 0xD000_1000;
/// GSI the VMM answers the doorbell on.
pub const DOORBELL_GSI: u32 = 6;
/// Vector of the doorbell answer.
pub const DOORBELL_VECTOR: u8 = 0x31;
/// Local APIC base.
pub const LAPIC_GPA: u64 = 0xFEE0_0000;
/// Offset of the local APIC's end-of-interrupt register.
pub const LAPIC_EOI_OFFSET: u64 = 0xB0;
/// The 3..4 GiB MMIO range is mapped a second time, supervisor-only, this much lower (1..2 GiB).
pub const MMIO_ALIAS_OFFSET: u64 = 2 << 30;
/// Where ring 0 sees the local APIC: below 2 GiB, so `movl $0, ABS32` (a sign-extended 32-bit
/// absolute address) writes the EOI register without a general-purpose register, and ring 0
/// never has to save a ring-3 register on its stack (which the VMM maps) to do it.
pub const LAPIC_ALIAS_VA: u64 = LAPIC_GPA - MMIO_ALIAS_OFFSET;

/// The 16550 serial console's I/O port (ring 0 only: ring-3 port I/O faults).
pub const SERIAL_PORT: u16 = 0x3f8;
/// A 32-bit `out` here ends the guest with an [`ExitCode`].
pub const EXIT_PORT: u16 = 0xf4;
/// A 32-bit `out` here asks the VMM to sign the attestation the guest put in the [`exchange`]
/// page (a hypercall, not a device). The VMM answers once per boot.
pub const ATTEST_PORT: u16 = 0xf6;

/// Interrupt vector of the system-call gate (DPL 3). A system call may clobber RCX, RDX, RSI and
/// RDI; RAX holds the result. Under nested PVM `int 0x80` from ring 3 arrives as #UD at the
/// `cd 80` bytes; the kernel's #UD handler recognises them and runs the call.
pub const SYSCALL_VECTOR: u8 = 0x80;
/// Spurious-interrupt vector of the local APIC (SVR's low byte); taken without an EOI.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// `int 0x80` with RAX = this, RDI = pointer, RSI = length: write bytes to the serial console.
pub const SYS_WRITE: u64 = 0;
/// `int 0x80` with RAX = this: sleep until an interrupt arrives (returns at once if one arrived
/// since the last wait).
pub const SYS_WAIT: u64 = 1;
/// `int 0x80` with RAX = this, RDI = [`ExitCode`]: stop the guest.
pub const SYS_EXIT: u64 = 2;
/// `int 0x80` with RAX = this: ask the VMM to sign the attestation in the [`exchange`] page
/// (an `out` to [`ATTEST_PORT`]); returns when the VMM has answered.
pub const SYS_ATTEST: u64 = 3;

/// Kernel 64-bit code selector.
pub const KERNEL_CS: u16 = 0x10;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x18;
/// User 64-bit code selector (RPL 3). It must equal the host's `__USER_CS` under PVM.
pub const USER_CS: u16 = 0x33;
/// User data selector (RPL 3). It must equal the host's `__USER_DS` under PVM.
pub const USER_DS: u16 = 0x2b;
/// TSS selector.
pub const TSS_SELECTOR: u16 = 0x40;

/// CR0 at entry: PE, MP, ET, NE, WP, PG.
pub const ENTRY_CR0: u64 = 1 | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31);
/// CR4 at entry: PAE, OSFXSR, OSXMMEXCPT (the Rust code uses SSE2); plus [`CR4_SMEP`] and
/// [`CR4_SMAP`] where KVM offers them.
pub const ENTRY_CR4: u64 = (1 << 5) | (1 << 9) | (1 << 10);
/// CR4.SMEP: ring 0 faults on fetching from a user page.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: ring 0 faults on touching a user page unless RFLAGS.AC is set.
pub const CR4_SMAP: u64 = 1 << 21;
/// RFLAGS.AC, which lets ring 0 touch user pages under SMAP.
pub const RFLAGS_AC: u64 = 1 << 18;
/// RFLAGS at entry: interrupts off, AC on (`_start` reads the boot info, a user page, and then
/// drops to ring 3 with RFLAGS 0x202, AC off).
pub const ENTRY_RFLAGS: u64 = 2 | RFLAGS_AC;
/// EFER at entry: LME, LMA, NXE.
pub const ENTRY_EFER: u64 = (1 << 8) | (1 << 10) | (1 << 11);
/// MXCSR at entry (all exceptions masked).
pub const ENTRY_MXCSR: u32 = 0x1f80;
/// x87 control word at entry.
pub const ENTRY_FCW: u16 = 0x37f;

/// vsock context id of the enclave.
pub const GUEST_CID: u64 = 3;
/// vsock port the enclave's service listens on.
pub const ENCLAVE_VSOCK_PORT: u32 = 7000;

/// `BootInfo::magic`: "CGBOOT01".
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"CGBOOT01");
/// Version of this ABI; the enclave refuses a boot info of another version.
///
/// 2: W^X page tables with ring-0 code supervisor-only, the LAPIC alias below 2 GiB, the SMAP
/// stub table, an 8 KiB ring-0 stack, the image's signed policy in the boot info and the
/// enclave's build flags in the exchange page (issue 13). An image of version 2 under a VMM of
/// version 1 would take its first interrupt through an unmapped alias; it refuses to start
/// instead.
///
/// 3: the VMM's own facts (protection, restarts) and its attestation signature leave the boot
/// info and the exchange page: the VMM serves them to host clients itself (issue 14).
///
/// 4: the vsock device is pre-negotiated ([`BootInfo::vsock`], [`VsockPreset`]): the VMM starts
/// it with its features accepted, `DRIVER_OK` set and the queues at [`vsock_preset_queue`], so
/// the enclave's driver makes no register access at boot; and the enclave's boot facts go to the
/// exchange page ([`exchange::BOOT_FACTS_VERSION`]) instead of the serial console (issue 19). An
/// image of version 4 under a VMM of version 3 would drive a device nobody set up; it refuses to
/// start instead.
pub const ABI_VERSION: u64 = 4;
/// Length of a SHA-384 measurement.
pub const MEASUREMENT_LEN: usize = 48;

/// Why the guest stopped, as written to [`EXIT_PORT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// The guest finished on purpose.
    Clean = 0,
    /// A Rust panic; its message went to the serial console first.
    Panic = 1,
    /// A CPU exception; the [`Report`] page holds the fault record.
    Fault = 2,
    /// The doorbell benchmark is done; the [`Report`] page holds its results.
    BenchDone = 3,
}

impl ExitCode {
    /// The code for a raw value written to [`EXIT_PORT`].
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => ExitCode::Clean,
            1 => ExitCode::Panic,
            2 => ExitCode::Fault,
            3 => ExitCode::BenchDone,
            _ => return None,
        })
    }
}

/// What the guest should do after boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum BootMode {
    /// Serve the enclave service on vsock.
    Service = 0,
    /// Ring the doorbell `mode_arg` times and report the round-trip times, then exit.
    DoorbellBench = 1,
    /// Panic on purpose right after boot (tests that a panic is reported, not a hang).
    PanicSelfTest = 2,
    /// Fault injection: serve like [`BootMode::Service`], then panic while handling the request
    /// after the first `mode_arg` ones (before its reply goes out). Tests the VMM's restart.
    ServicePanicAfter = 3,
    /// Fault injection: serve like [`BootMode::Service`], then spin forever in ring 3 while
    /// handling the request after the first `mode_arg` ones. Tests the VMM's watchdog.
    ServiceHangAfter = 4,
    /// Write to the enclave's own code right after boot: on W^X page tables it faults (#PF,
    /// reported through the fault record); should it not, the enclave panics saying so.
    WriteCodeSelfTest = 5,
}

impl BootMode {
    /// The mode for a raw [`BootInfo::boot_mode`].
    pub fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => BootMode::Service,
            1 => BootMode::DoorbellBench,
            2 => BootMode::PanicSelfTest,
            3 => BootMode::ServicePanicAfter,
            4 => BootMode::ServiceHangAfter,
            5 => BootMode::WriteCodeSelfTest,
            _ => return None,
        })
    }
}

/// Handed to the enclave at [`BOOT_INFO_GPA`]; RDI points here at entry. The VMM writes its
/// `repr(C)` bytes ([`IntoBytes::as_bytes`]; x86-64, so little-endian) and the enclave reads them
/// as this struct: every field is an integer or a byte array, with no padding (zerocopy checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u64,
    /// Guest RAM in bytes, from GPA 0.
    pub ram_size: u64,
    /// TSC frequency in kHz, for uptime.
    pub tsc_khz: u64,
    /// A [`BootMode`].
    pub boot_mode: u64,
    /// Argument of the boot mode (iterations of the doorbell benchmark).
    pub mode_arg: u64,
    /// Start of the ring-3 heap.
    pub heap_start: u64,
    /// Size of the ring-3 heap.
    pub heap_size: u64,
    /// Initial ring-3 stack pointer (16-byte aligned; the kernel enters with it minus 8).
    pub user_stack_top: u64,
    /// Size in bytes of the signed image file.
    pub image_size: u64,
    /// SHA-384 of the signed image file, as the VMM verified it before boot.
    pub measurement: [u8; MEASUREMENT_LEN],
    /// Fingerprint of the key whose signature over the image the VMM verified (first 16 bytes of
    /// the SHA-256 of the Ed25519 public key).
    pub signer: [u8; SIGNER_LEN],
    /// How many entries of [`BootInfo::upgrade_from`] are valid.
    pub upgrade_from_count: u64,
    /// Measurements of earlier images whose vault this image may open (a controlled upgrade the
    /// image's signed manifest allows); the enclave re-seals what it opens under its own key.
    pub upgrade_from: [[u8; MEASUREMENT_LEN]; MAX_UPGRADE_FROM],
    /// The image's signed [`policy`] bits, from the manifest the VMM verified (0: the defaults,
    /// the strictest).
    pub policy: u64,
    /// The vsock device as the VMM pre-negotiated it (all zero: no vsock device).
    pub vsock: VsockPreset,
}

/// Virtqueues of the vsock device: rx, tx, event.
pub const VSOCK_QUEUES: usize = 3;
/// Size of each vsock virtqueue: the size the enclave's driver uses (`virtio-drivers`' vsock
/// `QUEUE_SIZE`).
pub const VSOCK_QUEUE_SIZE: u64 = 8;
/// `VIRTIO_F_VERSION_1` (virtio 1.x): every pre-negotiated feature set has it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// The feature bits the enclave's vsock driver accepts (`virtio-drivers`' `SUPPORTED_FEATURES`:
/// `VIRTIO_F_VERSION_1`, `VIRTIO_RING_F_EVENT_IDX`, `VIRTIO_RING_F_INDIRECT_DESC`). The VMM
/// pre-accepts what its device offers of these.
pub const VSOCK_DRIVER_FEATURES: u64 = VIRTIO_F_VERSION_1 | (1 << 29) | (1 << 28);

/// One virtqueue as the ABI fixes it: guest-physical addresses of its three areas and its size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PresetQueue {
    /// Number of descriptors.
    pub size: u64,
    /// Descriptor table.
    pub desc: u64,
    /// Driver area (available ring).
    pub driver: u64,
    /// Device area (used ring).
    pub device: u64,
}

/// Where vsock queue `index` lives: the first six pages of the DMA window, in the order the
/// enclave's driver allocates its rings (for each of rx, tx, event: a page holding the descriptor
/// table and the available ring, then a page holding the used ring). The enclave's DMA allocator
/// hands those pages out first, so the driver asks for exactly these; the enclave checks it does.
pub const fn vsock_preset_queue(index: usize) -> PresetQueue {
    let desc = DMA_WINDOW_GPA + 2 * index as u64 * PAGE_SIZE;
    PresetQueue {
        size: VSOCK_QUEUE_SIZE,
        desc,
        // 16 bytes per descriptor.
        driver: desc + 16 * VSOCK_QUEUE_SIZE,
        device: desc + PAGE_SIZE,
    }
}

/// The vsock device as the VMM pre-negotiated it (section of [`BootInfo`] since ABI 4): what the
/// enclave's driver would otherwise read through a few dozen virtio-mmio register accesses, each a
/// 25 µs exit from ring 3 on the target machines. The VMM starts its device in this state (features
/// accepted, `DRIVER_OK`, queues at these addresses, checked to lie in the DMA window exactly as
/// register-written ones are); the enclave answers its driver from here and refuses to start if
/// the driver asks for anything else. Queue notifications still go through the real `QueueNotify`
/// doorbell (an ioeventfd), and a guest that resets the device through its registers afterwards
/// gets the plain register protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VsockPreset {
    /// The feature bits the device offers and has already accepted: the device's offer masked
    /// with [`VSOCK_DRIVER_FEATURES`]; always has [`VIRTIO_F_VERSION_1`].
    pub features: u64,
    /// The guest's CID (the device's configuration space).
    pub guest_cid: u64,
    /// The size of every queue, [`VSOCK_QUEUE_SIZE`].
    pub queue_size: u64,
    /// The queues, at [`vsock_preset_queue`].
    pub queues: [PresetQueue; VSOCK_QUEUES],
}

impl VsockPreset {
    /// The preset for a device offering `offered` features, for guest CID `guest_cid`.
    pub const fn agreed(offered: u64, guest_cid: u64) -> Self {
        VsockPreset {
            features: offered & VSOCK_DRIVER_FEATURES,
            guest_cid,
            queue_size: VSOCK_QUEUE_SIZE,
            queues: [vsock_preset_queue(0), vsock_preset_queue(1), vsock_preset_queue(2)],
        }
    }
}

/// Bits of [`BootInfo::policy`]: rules of the image's signed configuration (its manifest, signed
/// with the image by the same key), which no request can change.
pub mod policy {
    /// rc4-hmac may be used by logons that ask for it (off by default: RC4 is weak).
    pub const ALLOW_RC4: u64 = 1 << 0;
    /// Every bit defined here; a manifest with another bit set is refused.
    pub const ALL: u64 = ALLOW_RC4;
}

/// Bits the enclave reports about its own build in the exchange page
/// ([`exchange::ATTEST_ENCLAVE_FLAGS`]), which the VMM's attestation covers.
pub mod enclave_flags {
    /// A test build: fault injection, benchmark modes and fuzz entry points are compiled in. Never
    /// signed by the installer; a client should refuse to seal a secret to it.
    pub const TEST_BUILD: u64 = 1 << 0;
}

/// Most entries of [`BootInfo::upgrade_from`].
pub const MAX_UPGRADE_FROM: usize = 4;

/// The exchange page at [`EXCHANGE_GPA`]: byte offsets of its fields.
///
/// The VMM writes the image's vault keys (derived from the host sealing secret, which itself
/// never enters the guest) before boot; the enclave copies them into its hidden memory and zeroes
/// them here at once. For the attestation the enclave writes its boot id and X25519
/// public key and build flags, makes [`SYS_ATTEST`], and reads back the VMM's answer
/// ([`AttestState`]); the signature itself the VMM serves to host clients (`vmm_status`).
pub mod exchange {
    /// 32 bytes (VMM → enclave, wiped by the enclave after copying): this image's vault key,
    /// which the VMM derives from the host sealing secret and the measurement it verified (see
    /// [`VAULT_KEY_SALT`](super::VAULT_KEY_SALT)); the host secret itself never enters the guest.
    pub const SEALING_SECRET: usize = 0;
    /// Length of the sealing secret and of each vault key.
    pub const SEALING_SECRET_LEN: usize = 32;
    /// `u64`: 1 when [`SEALING_SECRET`] holds a key (the enclave zeroes it too).
    pub const SEALING_SECRET_PRESENT: usize = 32;
    /// The vault keys of the earlier images in `BootInfo::upgrade_from`, in the same order,
    /// [`SEALING_SECRET_LEN`] bytes each (VMM → enclave, wiped by the enclave after copying).
    pub const UPGRADE_VAULT_KEYS: usize = 256;
    /// 16-byte boot id (enclave → VMM).
    pub const ATTEST_BOOT_ID: usize = 64;
    /// 32-byte X25519 public key (enclave → VMM).
    pub const ATTEST_PUBLIC_KEY: usize = 80;
    // 128..192: the VMM's signature until ABI 3 (the VMM now serves it itself); since ABI 4 the
    // enclave's boot facts, which it used to print on the serial console (25 µs a character):
    /// 32 bytes (enclave → VMM): the enclave's version, ASCII, NUL-padded. Written before
    /// [`super::SYS_ATTEST`]; the VMM logs it with its "enclave up" line.
    pub const BOOT_FACTS_VERSION: usize = 128;
    /// Length of [`BOOT_FACTS_VERSION`].
    pub const BOOT_FACTS_VERSION_LEN: usize = 32;
    /// `u64` (enclave → VMM): the vsock port the enclave's service listens on.
    pub const BOOT_FACTS_VSOCK_PORT: usize = 160;
    /// `u64` (enclave → VMM): the guest CID the enclave's vsock driver was given.
    pub const BOOT_FACTS_GUEST_CID: usize = 168;
    /// `u64` [`super::AttestState`] (VMM → enclave).
    pub const ATTEST_STATE: usize = 192;
    /// `u64` [`super::enclave_flags`] bits (enclave → VMM), covered by the attestation.
    pub const ATTEST_ENCLAVE_FLAGS: usize = 200;
    /// Bytes of the page in use.
    pub const USED: usize = UPGRADE_VAULT_KEYS + super::MAX_UPGRADE_FROM * SEALING_SECRET_LEN;
}

/// HKDF-SHA256 salt of vault keys: vault key = HKDF-SHA256(salt, host sealing secret, info =
/// the image's measurement), 32 bytes. Derived by the VMM for the image it verified (and for the
/// earlier images its signed manifest allows), so the guest never holds the host secret.
pub const VAULT_KEY_SALT: &[u8] = b"credguard vault key v1";

/// What the VMM made of an attestation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum AttestState {
    /// No answer yet.
    None = 0,
    /// Signed (the VMM serves the signature on its status port).
    Signed = 1,
    /// The VMM has no attestation key: no signature.
    NoKey = 2,
    /// Refused (a second request in the same boot).
    Refused = 3,
}

impl AttestState {
    /// The state for a raw value.
    pub fn from_raw(raw: u64) -> Self {
        match raw {
            1 => AttestState::Signed,
            2 => AttestState::NoKey,
            3 => AttestState::Refused,
            _ => AttestState::None,
        }
    }
}

/// Length of [`BootInfo::signer`].
pub const SIGNER_LEN: usize = 16;

/// Size of [`BootInfo`] in bytes.
pub const BOOT_INFO_SIZE: usize = core::mem::size_of::<BootInfo>();

impl BootInfo {
    /// The boot info for a guest of `ram_size` bytes (which `boot_tables::check_ram_size` accepts).
    pub fn new(
        ram_size: u64,
        tsc_khz: u64,
        boot_mode: BootMode,
        mode_arg: u64,
        image_size: u64,
        measurement: [u8; MEASUREMENT_LEN],
    ) -> Self {
        let user_stack_top = ram_size;
        BootInfo {
            magic: BOOT_MAGIC,
            abi_version: ABI_VERSION,
            ram_size,
            tsc_khz,
            boot_mode: boot_mode as u64,
            mode_arg,
            heap_start: HEAP_GPA,
            heap_size: ram_size - USER_STACK_SIZE - HEAP_GPA,
            user_stack_top,
            image_size,
            measurement,
            signer: [0; SIGNER_LEN],
            upgrade_from_count: 0,
            upgrade_from: [[0; MEASUREMENT_LEN]; MAX_UPGRADE_FROM],
            policy: 0,
            vsock: VsockPreset::default(),
        }
    }

    /// The same boot info, with the vsock device pre-negotiated as `preset` says.
    pub fn with_vsock(mut self, preset: VsockPreset) -> Self {
        self.vsock = preset;
        self
    }

    /// The same boot info with the image's signed [`policy`] bits.
    pub fn with_policy(mut self, bits: u64) -> Self {
        self.policy = bits & policy::ALL;
        self
    }

    /// The same boot info, allowing the vaults of these earlier measurements to be opened (at
    /// most [`MAX_UPGRADE_FROM`]; more are ignored).
    pub fn with_upgrade_from(mut self, measurements: &[[u8; MEASUREMENT_LEN]]) -> Self {
        let n = measurements.len().min(MAX_UPGRADE_FROM);
        self.upgrade_from = [[0; MEASUREMENT_LEN]; MAX_UPGRADE_FROM];
        self.upgrade_from[..n].copy_from_slice(&measurements[..n]);
        self.upgrade_from_count = n as u64;
        self
    }

    /// The valid entries of [`BootInfo::upgrade_from`].
    pub fn upgrade_from(&self) -> &[[u8; MEASUREMENT_LEN]] {
        let n = (self.upgrade_from_count as usize).min(MAX_UPGRADE_FROM);
        &self.upgrade_from[..n]
    }

    /// The same boot info, naming the key that signed the image.
    pub fn with_signer(mut self, signer: [u8; SIGNER_LEN]) -> Self {
        self.signer = signer;
        self
    }
}

/// Where the guest reports to the VMM, at [`REPORT_GPA`]: `u64` fields (little-endian: x86-64),
/// the fault fields written by the ring-0 assembly at their `offset_of!`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Report {
    /// Vector of the CPU exception that stopped the guest.
    pub fault_vector: u64,
    /// Its error code (0 if the exception has none).
    pub fault_error_code: u64,
    /// RIP at the fault.
    pub fault_rip: u64,
    /// CS at the fault (its low two bits are the ring).
    pub fault_cs: u64,
    /// RFLAGS at the fault.
    pub fault_rflags: u64,
    /// RSP at the fault.
    pub fault_rsp: u64,
    /// CR2 at the fault (the address of a page fault).
    pub fault_cr2: u64,
    /// Doorbell round trips measured.
    pub bench_iterations: u64,
    /// Median doorbell round trip, in TSC cycles.
    pub bench_median_cycles: u64,
    /// 99th percentile doorbell round trip, in TSC cycles.
    pub bench_p99_cycles: u64,
    /// Smallest doorbell round trip, in TSC cycles.
    pub bench_min_cycles: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_info_bytes_match_repr_c() {
        let info = BootInfo::new(DEFAULT_RAM_SIZE, 2_000_000, BootMode::Service, 0, 1234, [7; 48])
            .with_signer([9; 16])
            .with_upgrade_from(&[[1; 48], [2; 48]])
            .with_policy(policy::ALLOW_RC4 | (1 << 40));
        assert_eq!(info.policy, policy::ALLOW_RC4, "unknown policy bits are dropped");
        assert_eq!(
            BOOT_INFO_SIZE,
            10 * 8 + 48 + 16 + 8 + MAX_UPGRADE_FROM * 48 + 8 + (3 + 4 * VSOCK_QUEUES) * 8
        );
        assert!(BOOT_INFO_SIZE <= PAGE_SIZE as usize);
        // The bytes the VMM writes are the enclave's struct, little-endian.
        let bytes = info.as_bytes();
        assert_eq!(&bytes[..8], b"CGBOOT01");
        assert_eq!(
            bytes[BOOT_INFO_SIZE - 8 - size_of::<VsockPreset>()],
            policy::ALLOW_RC4 as u8
        );
        let back = BootInfo::read_from_bytes(bytes).unwrap();
        assert_eq!(back, info);
        assert_eq!(back.upgrade_from(), &[[1; 48], [2; 48]]);
    }

    #[test]
    fn exchange_fields_fit_and_do_not_overlap() {
        use exchange::*;
        const {
            assert!(SEALING_SECRET + SEALING_SECRET_LEN <= SEALING_SECRET_PRESENT);
            assert!(SEALING_SECRET_PRESENT + 8 <= ATTEST_BOOT_ID);
            assert!(ATTEST_BOOT_ID + 16 <= ATTEST_PUBLIC_KEY);
            assert!(ATTEST_PUBLIC_KEY + 32 <= BOOT_FACTS_VERSION);
            assert!(BOOT_FACTS_VERSION + BOOT_FACTS_VERSION_LEN <= BOOT_FACTS_VSOCK_PORT);
            assert!(BOOT_FACTS_VSOCK_PORT + 8 <= BOOT_FACTS_GUEST_CID);
            assert!(BOOT_FACTS_GUEST_CID + 8 <= ATTEST_STATE);
            assert!(ATTEST_STATE + 8 <= ATTEST_ENCLAVE_FLAGS);
            assert!(ATTEST_ENCLAVE_FLAGS + 8 <= UPGRADE_VAULT_KEYS);
            assert!(ATTEST_STATE + 8 <= USED && USED <= PAGE_SIZE as usize);
            assert!(EXCHANGE_GPA + PAGE_SIZE <= PT_IMAGE_GPA);
        }
    }

    #[test]
    fn preset_queues_are_the_first_pages_of_the_dma_window() {
        let preset = VsockPreset::agreed(VIRTIO_F_VERSION_1 | (1 << 29) | (1 << 40), GUEST_CID);
        assert_eq!(
            preset.features,
            VIRTIO_F_VERSION_1 | (1 << 29),
            "only what the driver accepts"
        );
        let mut pages = Vec::new();
        for q in preset.queues {
            assert_eq!(q.size, VSOCK_QUEUE_SIZE);
            // Descriptor table, then the available ring (flags, idx, ring, used_event) on its page.
            assert_eq!(q.driver, q.desc + 16 * q.size);
            assert!(q.driver + 6 + 2 * q.size <= q.desc + PAGE_SIZE);
            pages.extend([q.desc, q.device]);
        }
        let expected: Vec<u64> = (0..6).map(|i| DMA_WINDOW_GPA + i * PAGE_SIZE).collect();
        assert_eq!(pages, expected);
        const { assert!(6 * PAGE_SIZE <= DMA_WINDOW_SIZE) };
        let info = BootInfo::new(DEFAULT_RAM_SIZE, 1, BootMode::Service, 0, 1, [0; 48]);
        assert_eq!(info.vsock, VsockPreset::default(), "no device until the VMM says so");
        assert_eq!(info.with_vsock(preset).vsock, preset);
    }

    #[test]
    fn report_is_eleven_little_endian_words() {
        let words: Vec<u8> = (0..11u64).flat_map(u64::to_le_bytes).collect();
        let report = Report::read_from_bytes(&words).unwrap();
        assert_eq!(
            (report.fault_vector, report.fault_cr2, report.bench_min_cycles),
            (0, 6, 10)
        );
        assert_eq!(report.as_bytes(), words);
    }
}
