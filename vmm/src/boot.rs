//! The enclave's boot state: guest memory contents and the vCPU's registers at entry.
//!
//! Everything here comes from [`credguard_proto::abi`], which the enclave's ring-0 code is built
//! against too. The VMM writes the page tables and descriptor tables itself because guest ring-0
//! code is emulated (and thus very slow) on the target hosts; the guest starts directly in 64-bit
//! mode with paging on.

use std::io::Cursor;

use credguard_proto::abi::{self, BootInfo, Report};
use credguard_proto::boot_tables::{self, ImageSegment};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_fpu, kvm_regs, kvm_segment};
use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::elf::{
    EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_X86_64, Elf64_Ehdr, Elf64_Phdr, PF_W, PF_X, PT_LOAD,
};
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::{FromZeros, IntoBytes};

/// Errors while preparing the boot state.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The image is not a little-endian x86-64 ELF64 executable.
    #[error("enclave image is not an x86-64 ELF64 executable: {0}")]
    NotElf(&'static str),
    /// A loadable segment lies (partly) outside the image window.
    #[error(
        "enclave image segment {index} at {start:#x}..{end:#x} is outside the image window {:#x}..{:#x}",
        abi::IMAGE_BASE_GPA,
        abi::IMAGE_LIMIT_GPA
    )]
    SegmentOutOfBounds {
        /// Index of the program header.
        index: usize,
        /// First guest-physical address of the segment.
        start: u64,
        /// End (exclusive) of the segment in memory.
        end: u64,
    },
    /// A segment is malformed (file range outside the file, memory smaller than file size,
    /// virtual address not identity mapped).
    #[error("enclave image segment {index} is malformed: {reason}")]
    BadSegment {
        /// Index of the program header.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The image has no loadable segment.
    #[error("enclave image has no loadable segment")]
    NoSegments,
    /// The entry point is not inside the image window.
    #[error("enclave image entry point {0:#x} is outside the image window")]
    EntryOutOfBounds(u64),
    /// A segment is both writable and executable (the page tables are W^X).
    #[error("enclave image segment {0} is writable and executable (W^X)")]
    WritableCode(usize),
    /// The ring-0 segment (the one at [`abi::RING0_CODE_GPA`]) is missing or wrong.
    #[error("enclave image's ring-0 segment at {base:#x}: {0}", base = abi::RING0_CODE_GPA)]
    BadRing0Segment(&'static str),
    /// Two segments overlap, or share a page with different permissions (which page tables
    /// cannot give them).
    #[error("enclave image segments {0} and {1} overlap or share a page with different permissions")]
    SharedPage(usize, usize),
    /// linux-loader refused the image.
    #[error("loading the enclave image: {0}")]
    Load(#[from] linux_loader::loader::Error),
    /// A write to or read from guest memory failed.
    #[error("guest memory at {addr:#x}: {source}")]
    GuestMemory {
        /// Guest-physical address of the access.
        addr: u64,
        /// The error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> BootError {
    move |source| BootError::Kvm { what, source }
}

/// More program headers than any real enclave has; bounds the parsing work on hostile input.
const MAX_PHDRS: usize = 64;

/// Checks, before anything is written to guest memory, that every loadable segment of `image`
/// lies within [`abi::IMAGE_BASE_GPA`]..[`abi::IMAGE_LIMIT_GPA`] and can be mapped W^X (see
/// [`image_layout`]). Returns the entry point.
///
/// linux-loader writes segments wherever their physical address says, so without this check a
/// (signed but faulty) image could overwrite the page tables or descriptor tables.
pub fn check_image(image: &[u8]) -> Result<u64, BootError> {
    image_layout(image).map(|layout| layout.entry)
}

/// Where the image's loaded segments end (after the same checks as [`check_image`]): the VMM
/// keeps guest RAM mapped up to there (see [`crate::memory::visible_ranges`]).
pub fn image_end(image: &[u8]) -> Result<u64, BootError> {
    image_layout(image).map(|layout| layout.end)
}

/// What the page tables need to know of a checked image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    /// The entry point (in the ring-0 segment).
    pub entry: u64,
    /// The end of the loaded segments.
    pub end: u64,
    /// The loadable segments with their permissions, for [`boot_tables::page_table_entries`].
    pub segments: Vec<ImageSegment>,
}

/// The entry point, the end and the segments of `image`, checked: every segment inside the image
/// window and identity mapped; none both writable and executable; no two overlapping or sharing
/// a page with different permissions; the segment at [`abi::RING0_CODE_GPA`] (the ring-0 code,
/// mapped supervisor-only) executable and holding both vector-stub tables and the entry point.
///
/// The ELF structures are linux-loader's own (the ones [`Elf::load`] reads), so this check and
/// the loader agree on the layout.
pub fn image_layout(image: &[u8]) -> Result<ImageLayout, BootError> {
    let ehdr = elf_header(image)?;
    let mut segments = Vec::new();
    let mut indices = Vec::new();
    for index in 0..usize::from(ehdr.e_phnum) {
        let phdr = program_header(image, &ehdr, index)?;
        if phdr.p_type != PT_LOAD {
            continue;
        }
        segments.push(checked_segment(index, &phdr, image.len())?);
        indices.push(index);
    }
    if segments.is_empty() {
        return Err(BootError::NoSegments);
    }
    let entry = ehdr.e_entry;
    if !(abi::IMAGE_BASE_GPA..abi::IMAGE_LIMIT_GPA).contains(&entry) {
        return Err(BootError::EntryOutOfBounds(entry));
    }
    check_pages(&segments, &indices)?;
    check_ring0(&segments, entry)?;
    let end = segments.iter().map(|s| s.end).fold(abi::IMAGE_BASE_GPA, u64::max);
    Ok(ImageLayout { entry, end, segments })
}

/// Copies the `T` at `offset` out of `image`, or `None` where it would reach past the end. Every
/// ELF structure is read through here: a hostile offset or count cannot read out of bounds.
fn read_at<T: ByteValued>(image: &[u8], offset: u64) -> Option<T> {
    let start = usize::try_from(offset).ok()?;
    let bytes = image.get(start..start.checked_add(size_of::<T>())?)?;
    let mut value = T::zeroed();
    value.as_mut_slice().copy_from_slice(bytes);
    Some(value)
}

/// The ELF header of `image`, checked: a little-endian x86-64 ELF64 file (so its fields read
/// right on this little-endian host) with program headers of the size we read, not too many.
fn elf_header(image: &[u8]) -> Result<Elf64_Ehdr, BootError> {
    let ehdr: Elf64_Ehdr = read_at(image, 0).ok_or(BootError::NotElf("shorter than an ELF header"))?;
    if ehdr.e_ident[..ELFMAG.len()] != ELFMAG[..] {
        return Err(BootError::NotElf("bad magic"));
    }
    if ehdr.e_ident[EI_CLASS] != ELFCLASS64 || ehdr.e_ident[EI_DATA] != ELFDATA2LSB {
        return Err(BootError::NotElf("not ELF64 little-endian"));
    }
    if ehdr.e_machine != EM_X86_64 {
        return Err(BootError::NotElf("not x86-64"));
    }
    if usize::from(ehdr.e_phentsize) != size_of::<Elf64_Phdr>() {
        return Err(BootError::NotElf("unexpected program header size"));
    }
    if usize::from(ehdr.e_phnum) > MAX_PHDRS {
        return Err(BootError::NotElf("too many program headers"));
    }
    Ok(ehdr)
}

/// Program header `index` of `image`.
fn program_header(image: &[u8], ehdr: &Elf64_Ehdr, index: usize) -> Result<Elf64_Phdr, BootError> {
    (index as u64)
        .checked_mul(size_of::<Elf64_Phdr>() as u64)
        .and_then(|at| ehdr.e_phoff.checked_add(at))
        .and_then(|at| read_at(image, at))
        .ok_or(BootError::NotElf("program headers outside the file"))
}

/// The loadable segment of program header `index`, checked on its own: its file range inside
/// the `file_len` bytes of the image, identity mapped, inside the image window, not both
/// writable and executable.
fn checked_segment(index: usize, phdr: &Elf64_Phdr, file_len: usize) -> Result<ImageSegment, BootError> {
    let bad = |reason| BootError::BadSegment { index, reason };
    if phdr.p_memsz < phdr.p_filesz {
        return Err(bad("memory size smaller than file size"));
    }
    if phdr.p_vaddr != phdr.p_paddr {
        // The guest runs identity mapped: code linked elsewhere than it is loaded breaks.
        return Err(bad("virtual address differs from physical address"));
    }
    let file_end = phdr
        .p_offset
        .checked_add(phdr.p_filesz)
        .ok_or(bad("file range overflows"))?;
    if file_end > file_len as u64 {
        return Err(bad("file range outside the file"));
    }
    let start = phdr.p_paddr;
    let end = start.checked_add(phdr.p_memsz).ok_or(bad("memory range overflows"))?;
    if start < abi::IMAGE_BASE_GPA || end > abi::IMAGE_LIMIT_GPA {
        return Err(BootError::SegmentOutOfBounds { index, start, end });
    }
    let (writable, executable) = (phdr.p_flags & PF_W != 0, phdr.p_flags & PF_X != 0);
    if writable && executable {
        return Err(BootError::WritableCode(index));
    }
    Ok(ImageSegment {
        start,
        end,
        writable,
        executable,
        ring0: start == abi::RING0_CODE_GPA,
    })
}

/// No two segments overlap, and segments that share a page have the same permissions.
fn check_pages(segments: &[ImageSegment], indices: &[usize]) -> Result<(), BootError> {
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_by_key(|&i| segments[i].start);
    for pair in order.windows(2) {
        let (a, b) = (&segments[pair[0]], &segments[pair[1]]);
        let overlap = a.end > b.start;
        let share_page = a.end.next_multiple_of(abi::PAGE_SIZE) > b.start - b.start % abi::PAGE_SIZE
            && a.end > a.start
            && b.end > b.start;
        let same = (a.writable, a.executable, a.ring0) == (b.writable, b.executable, b.ring0);
        if overlap || (share_page && !same) {
            return Err(BootError::SharedPage(indices[pair[0]], indices[pair[1]]));
        }
    }
    Ok(())
}

/// The ring-0 segment exists, is code, and holds both stub tables and the entry point.
fn check_ring0(segments: &[ImageSegment], entry: u64) -> Result<(), BootError> {
    let ring0 = segments
        .iter()
        .find(|s| s.ring0)
        .ok_or(BootError::BadRing0Segment("missing"))?;
    if !ring0.executable {
        return Err(BootError::BadRing0Segment("not executable"));
    }
    if ring0.end < abi::VECTOR_STUBS_GPA + abi::VECTOR_STUBS_SIZE {
        return Err(BootError::BadRing0Segment("shorter than the two vector-stub tables"));
    }
    if !(ring0.start..ring0.end).contains(&entry) {
        return Err(BootError::BadRing0Segment("the entry point is not in it"));
    }
    Ok(())
}

/// Checks and loads the ELF `image` into `mem`; returns its entry point.
///
/// Memory past each segment's file size (`.bss`) is not written: guest RAM is freshly mapped
/// anonymous memory, hence zero.
pub fn load_image(mem: &GuestMemoryMmap, image: &[u8]) -> Result<u64, BootError> {
    let entry = check_image(image)?;
    let result = Elf::load(
        mem,
        None,
        &mut Cursor::new(image),
        Some(GuestAddress(abi::IMAGE_BASE_GPA)),
    )?;
    tracing::debug!("loaded enclave image: entry {entry:#x}, end {:#x}", result.kernel_end);
    Ok(entry)
}

fn write_bytes(mem: &GuestMemoryMmap, addr: u64, bytes: &[u8]) -> Result<(), BootError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| BootError::GuestMemory { addr, source })
}

/// Writes the page tables (W^X, from `segments`: see [`boot_tables::page_table_entries`]), GDT, TSS,
/// IDT (pointing at the SMAP stubs if `cpu.smap`), boot info and an empty report page into `mem`.
pub fn write_boot_tables(
    mem: &GuestMemoryMmap,
    info: &BootInfo,
    segments: &[ImageSegment],
    cpu: CpuProtection,
) -> Result<(), BootError> {
    // The tables' pages must be zero wherever the ABI lists no entry (not present); the report
    // page must be zero so a stale value can never be mistaken for a fault record.
    let zero_page = [0u8; abi::PAGE_SIZE as usize];
    let mut page = abi::PML4_GPA;
    while page < abi::KERNEL_STACK_TOP {
        write_bytes(mem, page, &zero_page)?;
        page += abi::PAGE_SIZE;
    }

    for (gpa, entry) in boot_tables::page_table_entries(info.ram_size, segments) {
        write_bytes(mem, gpa, entry.as_bytes())?;
    }
    write_bytes(mem, abi::GDT_GPA, boot_tables::gdt().as_bytes())?;
    write_bytes(mem, abi::TSS_GPA, &boot_tables::tss())?;
    write_bytes(mem, abi::IDT_GPA, boot_tables::idt(cpu.smap).as_bytes())?;
    write_bytes(mem, abi::BOOT_INFO_GPA, info.as_bytes())
}

/// Puts the image's own vault key `key` in the exchange page (its `SEALING_SECRET` field, the
/// ABI's name) for the enclave, which copies it into its hidden memory and zeroes the page's copy
/// before it serves anything. Never the vault's root secret (see [`hand_over_vault_keys`]).
pub fn hand_over_own_vault_key(
    mem: &GuestMemoryMmap,
    key: &[u8; abi::exchange::SEALING_SECRET_LEN],
) -> Result<(), BootError> {
    use abi::exchange;
    write_bytes(mem, abi::EXCHANGE_GPA + exchange::SEALING_SECRET as u64, key)?;
    write_bytes(
        mem,
        abi::EXCHANGE_GPA + exchange::SEALING_SECRET_PRESENT as u64,
        &1u64.to_le_bytes(),
    )
}

/// Hands the enclave its vault key `own` and, in the order of `BootInfo::upgrade_from`, the vault
/// keys of the earlier images its signed manifest allows (at most [`abi::MAX_UPGRADE_FROM`]),
/// through the exchange page, which the enclave wipes after copying.
pub fn hand_over_vault_keys(
    mem: &GuestMemoryMmap,
    own: &[u8; abi::exchange::SEALING_SECRET_LEN],
    upgrade: &[zeroize::Zeroizing<[u8; abi::exchange::SEALING_SECRET_LEN]>],
) -> Result<(), BootError> {
    use abi::exchange;
    for (i, key) in upgrade.iter().take(abi::MAX_UPGRADE_FROM).enumerate() {
        let at = exchange::UPGRADE_VAULT_KEYS + i * exchange::SEALING_SECRET_LEN;
        write_bytes(mem, abi::EXCHANGE_GPA + at as u64, &key[..])?;
    }
    hand_over_own_vault_key(mem, own)
}

/// Reads the [`Report`] page the guest fills before a fault or benchmark exit.
pub fn read_report(mem: &GuestMemoryMmap) -> Result<Report, BootError> {
    let mut report = Report::new_zeroed();
    mem.read_slice(report.as_mut_bytes(), GuestAddress(abi::REPORT_GPA))
        .map_err(|source| BootError::GuestMemory {
            addr: abi::REPORT_GPA,
            source,
        })?;
    Ok(report)
}

/// The ring-0 64-bit code segment of [`boot_tables::gdt`] at [`abi::KERNEL_CS`], as KVM loads it.
fn kernel_code_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: abi::KERNEL_CS,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    }
}

/// The ring-0 data segment of [`boot_tables::gdt`] at [`abi::KERNEL_DS`].
fn kernel_data_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: abi::KERNEL_DS,
        type_: 3, // read/write, accessed
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        ..Default::default()
    }
}

/// The task register: loaded as if by `ltr`, hence busy.
fn task_segment() -> kvm_segment {
    kvm_segment {
        base: abi::TSS_GPA,
        limit: boot_tables::TSS_SIZE as u32 - 1,
        selector: abi::TSS_SELECTOR,
        type_: 11, // busy 64-bit TSS
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        ..Default::default()
    }
}

/// Which of the CPU's protections of ring 0 against ring-3 pages the guest runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuProtection {
    /// CR4.SMEP: ring 0 cannot execute ring-3 pages.
    pub smep: bool,
    /// CR4.SMAP: ring 0 touches ring-3 pages only with RFLAGS.AC set.
    pub smap: bool,
}

/// CPUID.(EAX=7,ECX=0):EBX bit of SMEP.
const CPUID_7_EBX_SMEP: u32 = 1 << 7;
/// CPUID.(EAX=7,ECX=0):EBX bit of SMAP.
const CPUID_7_EBX_SMAP: u32 = 1 << 20;

impl CpuProtection {
    /// What a CPUID table (KVM's supported one) offers.
    pub fn offered_by(cpuid: &CpuId) -> Self {
        let ebx = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 7 && e.index == 0)
            .map_or(0, |e| e.ebx);
        CpuProtection {
            smep: ebx & CPUID_7_EBX_SMEP != 0,
            smap: ebx & CPUID_7_EBX_SMAP != 0,
        }
    }

    /// The CR4 bits to set.
    pub fn cr4_bits(self) -> u64 {
        (if self.smep { abi::CR4_SMEP } else { 0 }) | (if self.smap { abi::CR4_SMAP } else { 0 })
    }
}

/// Sets the vCPU's CPUID table to everything KVM supports, and returns which of SMEP and SMAP
/// the guest gets: those KVM offers (`KVM_GET_SUPPORTED_CPUID`, leaf 7), or both if `force`
/// (tests only: see [`crate::EnclaveConfig::force_smep_smap`]), which adds them to the table.
/// Under PVM the table applies to ring 0 only (ring 3 sees the host's CPUID).
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd, force: bool) -> Result<CpuProtection, BootError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut cpu = CpuProtection::offered_by(&cpuid);
    if force
        && let Some(leaf) = cpuid
            .as_mut_slice()
            .iter_mut()
            .find(|e| e.function == 7 && e.index == 0)
    {
        leaf.ebx |= CPUID_7_EBX_SMEP | CPUID_7_EBX_SMAP;
        cpu = CpuProtection { smep: true, smap: true };
    }
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    Ok(cpu)
}

/// Puts the vCPU in 64-bit ring 0 at `entry` with the ABI's control registers (plus SMEP and
/// SMAP as `cpu` says), descriptor tables, stack and boot-info pointer.
pub fn setup_registers(vcpu: &VcpuFd, entry: u64, cpu: CpuProtection) -> Result<(), BootError> {
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    let data = kernel_data_segment();
    sregs.cs = kernel_code_segment();
    sregs.ds = data;
    sregs.es = data;
    sregs.ss = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.tr = task_segment();
    sregs.gdt.base = abi::GDT_GPA;
    sregs.gdt.limit = (boot_tables::gdt().len() * 8 - 1) as u16;
    sregs.idt.base = abi::IDT_GPA;
    sregs.idt.limit = (abi::IDT_ENTRIES * 16 - 1) as u16;
    sregs.cr0 = abi::ENTRY_CR0;
    sregs.cr3 = abi::PML4_GPA;
    sregs.cr4 = abi::ENTRY_CR4 | cpu.cr4_bits();
    sregs.efer = abi::ENTRY_EFER;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rip: entry,
        rsp: abi::KERNEL_STACK_TOP,
        rdi: abi::BOOT_INFO_GPA,
        // Interrupts off until the kernel is ready; AC on for its one read of the boot info.
        rflags: abi::ENTRY_RFLAGS,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;

    let fpu = kvm_fpu {
        fcw: abi::ENTRY_FCW,
        mxcsr: abi::ENTRY_MXCSR,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))
}

#[cfg(test)]
pub(crate) mod test_elf {
    //! Builds minimal ELF64 images for tests.

    use super::*;

    use linux_loader::elf::{EI_NIDENT, EI_VERSION, ET_EXEC, EV_CURRENT, PF_R};

    /// File offset of the first segment's contents.
    pub const SEGMENT_OFFSET: usize = 0x1000;
    /// `p_flags` of code: read and execute.
    pub const RX: u32 = PF_R | PF_X;
    /// `p_flags` of read-only data.
    pub const R: u32 = PF_R;
    /// `p_flags` of writable data.
    pub const RW: u32 = PF_R | PF_W;
    /// `p_flags` of writable code (refused).
    pub const RWX: u32 = PF_R | PF_W | PF_X;

    /// An ELF64 x86-64 executable with one segment per `(load address, flags, contents)`, each
    /// at its own page-aligned file offset.
    pub fn build_segments(segments: &[(u64, u32, &[u8])], entry: u64) -> Vec<u8> {
        let mut e_ident = [0u8; EI_NIDENT];
        e_ident[..ELFMAG.len()].copy_from_slice(ELFMAG);
        e_ident[EI_CLASS] = ELFCLASS64;
        e_ident[EI_DATA] = ELFDATA2LSB;
        e_ident[EI_VERSION] = EV_CURRENT;
        let ehdr = Elf64_Ehdr {
            e_ident,
            e_type: ET_EXEC,
            e_machine: EM_X86_64,
            e_version: EV_CURRENT.into(),
            e_entry: entry,
            e_phoff: size_of::<Elf64_Ehdr>() as u64,
            e_ehsize: size_of::<Elf64_Ehdr>() as u16,
            e_phentsize: size_of::<Elf64_Phdr>() as u16,
            e_phnum: segments.len() as u16,
            ..Default::default()
        };
        let mut elf = vec![0u8; SEGMENT_OFFSET];
        elf[..size_of::<Elf64_Ehdr>()].copy_from_slice(ehdr.as_slice());
        for (i, &(load_addr, flags, contents)) in segments.iter().enumerate() {
            let phdr = Elf64_Phdr {
                p_type: PT_LOAD,
                p_flags: flags,
                p_offset: elf.len() as u64,
                p_vaddr: load_addr,
                p_paddr: load_addr,
                p_filesz: contents.len() as u64,
                p_memsz: contents.len() as u64,
                p_align: 0x1000,
            };
            let at = size_of::<Elf64_Ehdr>() + i * size_of::<Elf64_Phdr>();
            elf[at..at + size_of::<Elf64_Phdr>()].copy_from_slice(phdr.as_slice());
            elf.extend_from_slice(contents);
            elf.resize(elf.len().next_multiple_of(SEGMENT_OFFSET), 0);
        }
        elf
    }

    /// `elf` with its ELF header changed by `edit`.
    pub fn edit_header(mut elf: Vec<u8>, edit: impl FnOnce(&mut Elf64_Ehdr)) -> Vec<u8> {
        let mut ehdr: Elf64_Ehdr = read_at(&elf, 0).expect("an ELF header");
        edit(&mut ehdr);
        elf[..size_of::<Elf64_Ehdr>()].copy_from_slice(ehdr.as_slice());
        elf
    }

    /// `elf` with program header `index` (of a [`build_segments`] image) changed by `edit`.
    pub fn edit_program_header(mut elf: Vec<u8>, index: usize, edit: impl FnOnce(&mut Elf64_Phdr)) -> Vec<u8> {
        let at = size_of::<Elf64_Ehdr>() + index * size_of::<Elf64_Phdr>();
        let mut phdr: Elf64_Phdr = read_at(&elf, at as u64).expect("a program header");
        edit(&mut phdr);
        elf[at..at + size_of::<Elf64_Phdr>()].copy_from_slice(phdr.as_slice());
        elf
    }

    /// An ELF64 x86-64 executable with one code segment (read and execute) holding `contents`
    /// at `load_addr`.
    pub fn build(load_addr: u64, contents: &[u8], entry: u64) -> Vec<u8> {
        build_segments(&[(load_addr, RX, contents)], entry)
    }

    /// A bootable ring-0 segment: `hlt` filling both vector-stub tables, then `code`. Returns
    /// the contents and the address of `code`.
    pub fn ring0(code: &[u8]) -> (Vec<u8>, u64) {
        let mut contents = vec![0xf4; abi::VECTOR_STUBS_SIZE as usize];
        contents.extend_from_slice(code);
        (contents, abi::RING0_CODE_GPA + abi::VECTOR_STUBS_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), abi::DEFAULT_RAM_SIZE as usize)]).unwrap()
    }

    /// A valid image: the ring-0 segment with `code` as its entry, plus `more` segments.
    fn image_with(code: &[u8], more: &[(u64, u32, &[u8])]) -> Vec<u8> {
        let (ring0, entry) = test_elf::ring0(code);
        let mut segments = vec![(abi::RING0_CODE_GPA, test_elf::RX, ring0.as_slice())];
        segments.extend_from_slice(more);
        test_elf::build_segments(&segments, entry)
    }

    #[test]
    fn accepts_image_inside_window() {
        let elf = image_with(&[0x90; 64], &[]);
        let entry = abi::RING0_CODE_GPA + abi::VECTOR_STUBS_SIZE;
        assert_eq!(check_image(&elf).unwrap(), entry);
        let mem = guest_memory();
        assert_eq!(load_image(&mem, &elf).unwrap(), entry);
        let mut back = [0u8; 64];
        mem.read_slice(&mut back, GuestAddress(entry)).unwrap();
        assert_eq!(back, [0x90; 64]);
    }

    #[test]
    fn refuses_segment_over_the_page_tables() {
        let elf = image_with(&[0x90], &[(abi::PML4_GPA, test_elf::RW, &[0xff; 16])]);
        let err = check_image(&elf).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::SegmentOutOfBounds {
                    index: 1,
                    start: abi::PML4_GPA,
                    ..
                }
            ),
            "{err}"
        );
        // Nothing may be written when the check fails.
        let mem = guest_memory();
        assert!(load_image(&mem, &elf).is_err());
        let mut back = [0u8; 16];
        mem.read_slice(&mut back, GuestAddress(abi::PML4_GPA)).unwrap();
        assert_eq!(back, [0; 16]);
    }

    #[test]
    fn refuses_segment_crossing_the_limit() {
        let start = abi::IMAGE_LIMIT_GPA - 8;
        let elf = image_with(&[0x90], &[(start, test_elf::R, &[0; 16])]);
        assert!(matches!(check_image(&elf), Err(BootError::SegmentOutOfBounds { .. })));
        // Exactly up to the limit is fine.
        let elf = image_with(&[0x90], &[(abi::IMAGE_LIMIT_GPA - 16, test_elf::R, &[0; 16])]);
        assert!(check_image(&elf).is_ok());
    }

    #[test]
    fn refuses_entry_outside_window_and_garbage() {
        let (ring0, _) = test_elf::ring0(&[0x90]);
        let elf = test_elf::build(abi::RING0_CODE_GPA, &ring0, 0x1000);
        assert!(matches!(check_image(&elf), Err(BootError::EntryOutOfBounds(0x1000))));
        assert!(matches!(check_image(b"not an elf"), Err(BootError::NotElf(_))));
        let mut truncated = image_with(&[0x90], &[]);
        truncated.truncate(test_elf::SEGMENT_OFFSET + 4);
        assert!(matches!(check_image(&truncated), Err(BootError::BadSegment { .. })));
    }

    #[test]
    fn refuses_malformed_elf_structures_with_their_reason() {
        // Each field the check reads, broken on its own in an otherwise valid image: this pins
        // every check to the field of linux-loader's structures it is meant to read.
        let valid = image_with(&[0x90], &[(abi::RING0_CODE_GPA + 0x5000, test_elf::R, &[0; 16])]);
        assert!(check_image(&valid).is_ok());
        let len = valid.len() as u64;
        let header = |edit: &dyn Fn(&mut Elf64_Ehdr)| check_image(&test_elf::edit_header(valid.clone(), edit));
        let segment =
            |edit: &dyn Fn(&mut Elf64_Phdr)| check_image(&test_elf::edit_program_header(valid.clone(), 1, edit));
        // BootError holds I/O errors, so it has no PartialEq: compare the debug forms.
        let refused = |got: Result<u64, BootError>, want: BootError| {
            assert_eq!(format!("{got:?}"), format!("{:?}", Err::<u64, _>(want)));
        };
        let not_elf = BootError::NotElf;
        let bad = |reason| BootError::BadSegment { index: 1, reason };

        refused(check_image(&valid[..63]), not_elf("shorter than an ELF header"));
        refused(header(&|h| h.e_ident[3] = b'G'), not_elf("bad magic"));
        refused(header(&|h| h.e_ident[EI_CLASS] = 1), not_elf("not ELF64 little-endian"));
        refused(header(&|h| h.e_ident[EI_DATA] = 2), not_elf("not ELF64 little-endian"));
        refused(header(&|h| h.e_machine = 3), not_elf("not x86-64"));
        refused(
            header(&|h| h.e_phentsize = 32),
            not_elf("unexpected program header size"),
        );
        refused(
            header(&|h| h.e_phnum = MAX_PHDRS as u16 + 1),
            not_elf("too many program headers"),
        );
        refused(
            header(&|h| h.e_phoff = len - 8),
            not_elf("program headers outside the file"),
        );
        refused(
            header(&|h| h.e_phoff = u64::MAX - 8),
            not_elf("program headers outside the file"),
        );
        refused(header(&|h| h.e_phnum = 0), BootError::NoSegments);

        refused(segment(&|p| p.p_memsz = 8), bad("memory size smaller than file size"));
        refused(
            segment(&|p| p.p_vaddr += 0x1000),
            bad("virtual address differs from physical address"),
        );
        refused(segment(&|p| p.p_offset = u64::MAX - 8), bad("file range overflows"));
        refused(segment(&|p| p.p_offset = len - 8), bad("file range outside the file"));
        let wrap = |p: &mut Elf64_Phdr| (p.p_paddr, p.p_vaddr) = (u64::MAX - 8, u64::MAX - 8);
        refused(segment(&wrap), bad("memory range overflows"));
        // Only PT_LOAD headers are segments: the same header as a note, over the page tables, is
        // skipped.
        let note = test_elf::edit_program_header(valid.clone(), 1, |p| {
            p.p_type = linux_loader::elf::PT_NOTE;
            (p.p_paddr, p.p_vaddr) = (abi::PML4_GPA, abi::PML4_GPA);
        });
        assert_eq!(image_layout(&note).unwrap().segments.len(), 1);
    }

    #[test]
    fn refuses_images_that_cannot_be_mapped_w_xor_x() {
        let (ring0, entry) = test_elf::ring0(&[0x90]);
        let page = abi::RING0_CODE_GPA + 0x5000;
        // A writable and executable segment.
        let elf = image_with(&[0x90], &[(page, test_elf::RWX, &[0; 16])]);
        assert!(
            matches!(check_image(&elf), Err(BootError::WritableCode(1))),
            "{:?}",
            check_image(&elf)
        );
        // Code and data on one page; overlapping segments.
        let elf = image_with(
            &[0x90],
            &[(page, test_elf::RX, &[0; 16]), (page + 0x800, test_elf::RW, &[0; 16])],
        );
        assert!(
            matches!(check_image(&elf), Err(BootError::SharedPage(1, 2))),
            "{:?}",
            check_image(&elf)
        );
        let elf = image_with(
            &[0x90],
            &[(page, test_elf::R, &[0; 0x100]), (page + 0x80, test_elf::R, &[0; 16])],
        );
        assert!(matches!(check_image(&elf), Err(BootError::SharedPage(1, 2))));
        // Read-only data may share a page with read-only data.
        let elf = image_with(
            &[0x90],
            &[(page, test_elf::R, &[0; 16]), (page + 0x800, test_elf::R, &[0; 16])],
        );
        assert!(check_image(&elf).is_ok());
        // Ring-0 code on a page with ring-3 code.
        let after_ring0 = abi::RING0_CODE_GPA + ring0.len() as u64;
        let elf = image_with(&[0x90], &[(after_ring0, test_elf::RX, &[0; 16])]);
        assert!(matches!(check_image(&elf), Err(BootError::SharedPage(0, 1))));
        // The ring-0 segment: missing, writable data, too short, or without the entry point.
        let elf = test_elf::build_segments(&[(page, test_elf::RX, &[0x90; 16])], page);
        assert!(matches!(check_image(&elf), Err(BootError::BadRing0Segment("missing"))));
        let elf = test_elf::build_segments(&[(abi::RING0_CODE_GPA, test_elf::RW, &ring0)], entry);
        assert!(matches!(check_image(&elf), Err(BootError::BadRing0Segment(_))));
        let elf = test_elf::build(abi::RING0_CODE_GPA, &[0x90; 64], abi::RING0_CODE_GPA);
        assert!(matches!(check_image(&elf), Err(BootError::BadRing0Segment(_))));
        let elf = image_with(&[0x90], &[(page, test_elf::RX, &[0x90; 16])]);
        let moved = test_elf::edit_header(elf, |h| h.e_entry = page);
        assert!(matches!(check_image(&moved), Err(BootError::BadRing0Segment(_))));
    }

    #[test]
    fn the_enclave_image_maps_w_xor_x() {
        // The real, dev-built enclave: its segments as the VMM reads them, and the page tables
        // built from them, walked page by page.
        let dev = credguard_image::dev::ensure_enclave_built().expect("building the enclave");
        let signed = dev.verify().expect("the dev image verifies");
        let layout = image_layout(signed.bytes()).expect("the enclave image is accepted");
        let ring0: Vec<_> = layout.segments.iter().filter(|s| s.ring0).collect();
        assert_eq!(ring0.len(), 1);
        assert!(ring0[0].executable && !ring0[0].writable);
        assert!((ring0[0].start..ring0[0].end).contains(&layout.entry));
        assert!(layout.segments.iter().any(|s| !s.ring0 && s.executable), "ring-3 code");
        assert!(layout.segments.iter().any(|s| s.writable), "data");
        let mem = guest_memory();
        let info = BootInfo::new(abi::DEFAULT_RAM_SIZE, 1_000_000, abi::BootMode::Service, 0, 4, [9; 48]);
        write_boot_tables(&mem, &info, &layout.segments, CpuProtection::default()).unwrap();
        let entry = |gpa: u64| mem.read_obj::<u64>(GuestAddress(gpa)).unwrap();
        let mut code = 0;
        for va in (0..abi::DEFAULT_RAM_SIZE).step_by(abi::PAGE_SIZE as usize) {
            let Some(t) = boot_tables::translate(entry, va) else {
                continue;
            };
            assert!(!(t.writable && t.executable), "{va:#x}: {t:?}");
            let seg = layout.segments.iter().find(|s| s.start <= va && va < s.end);
            if t.executable {
                code += 1;
                let seg = seg.unwrap_or_else(|| panic!("{va:#x} is executable outside the image"));
                assert!(seg.executable && t.user != seg.ring0, "{va:#x}: {t:?} {seg:?}");
            }
            if let Some(seg) = seg {
                assert_eq!(t.writable, seg.writable, "{va:#x}: {t:?} {seg:?}");
                assert_eq!(t.user, !seg.ring0, "{va:#x}: {t:?} {seg:?}");
            }
        }
        assert!(code > 0);
    }

    #[test]
    fn smep_and_smap_are_what_the_cpuid_offers() {
        let leaf7 = |ebx| kvm_bindings::kvm_cpuid_entry2 {
            function: 7,
            index: 0,
            ebx,
            ..Default::default()
        };
        let table = |entries: &[kvm_bindings::kvm_cpuid_entry2]| CpuId::from_entries(entries).unwrap();
        assert_eq!(CpuProtection::offered_by(&table(&[])), CpuProtection::default());
        assert_eq!(
            CpuProtection::offered_by(&table(&[leaf7(0x0180_0002)])),
            CpuProtection::default(),
            "this host's KVM (nested PVM) offers neither"
        );
        let both = CpuProtection::offered_by(&table(&[leaf7(CPUID_7_EBX_SMEP | CPUID_7_EBX_SMAP)]));
        assert_eq!(both, CpuProtection { smep: true, smap: true });
        assert_eq!(both.cr4_bits(), abi::CR4_SMEP | abi::CR4_SMAP);
        let smep = CpuProtection::offered_by(&table(&[leaf7(CPUID_7_EBX_SMEP)]));
        assert_eq!(smep.cr4_bits(), abi::CR4_SMEP);
        // Another subleaf of 7 does not count.
        let mut other = leaf7(CPUID_7_EBX_SMAP);
        other.index = 1;
        assert_eq!(CpuProtection::offered_by(&table(&[other])), CpuProtection::default());
    }

    #[test]
    fn boot_tables_match_the_abi() {
        let mem = guest_memory();
        let info = BootInfo::new(abi::DEFAULT_RAM_SIZE, 1_000_000, abi::BootMode::Service, 0, 4, [9; 48]);
        let layout = image_layout(&image_with(&[0x90], &[])).unwrap();
        write_boot_tables(&mem, &info, &layout.segments, CpuProtection::default()).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(abi::PML4_GPA)).unwrap();
        assert_eq!(pml4 & !0xfff, abi::PDPT_GPA);
        let cs: u64 = mem
            .read_obj(GuestAddress(abi::GDT_GPA + u64::from(abi::KERNEL_CS)))
            .unwrap();
        assert_eq!(cs, boot_tables::gdt()[2]);
        let mut bi = [0u8; abi::BOOT_INFO_SIZE];
        mem.read_slice(&mut bi, GuestAddress(abi::BOOT_INFO_GPA)).unwrap();
        assert_eq!(bi, info.as_bytes());
        assert_eq!(read_report(&mem).unwrap(), Report::default());
    }
}
