//! The enclave's boot state: guest memory contents and the vCPU's registers at entry.
//!
//! Everything here comes from [`credguard_proto::abi`], which the enclave's ring-0 code is built
//! against too. The VMM writes the page tables and descriptor tables itself because guest ring-0
//! code is emulated (and thus very slow) on the target hosts; the guest starts directly in 64-bit
//! mode with paging on.

use std::io::Cursor;

use credguard_proto::abi::{self, BootInfo, Report};
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_fpu, kvm_regs, kvm_segment};
use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

const ELF_HEADER_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const PT_LOAD: u32 = 1;
const EM_X86_64: u16 = 62;
/// More program headers than any real enclave has; bounds the parsing work on hostile input.
const MAX_PHDRS: usize = 64;

/// Checks, before anything is written to guest memory, that every loadable segment of `image`
/// lies within [`abi::IMAGE_BASE_GPA`]..[`abi::IMAGE_LIMIT_GPA`] and that its entry point does
/// too. Returns the entry point.
///
/// linux-loader writes segments wherever their physical address says, so without this check a
/// (signed but faulty) image could overwrite the page tables or descriptor tables.
pub fn check_image(image: &[u8]) -> Result<u64, BootError> {
    check_image_layout(image).map(|(entry, _)| entry)
}

/// Where the image's loaded segments end (after the same checks as [`check_image`]): the VMM
/// keeps guest RAM mapped up to there (see [`crate::memory::visible_ranges`]).
pub fn image_end(image: &[u8]) -> Result<u64, BootError> {
    check_image_layout(image).map(|(_, end)| end)
}

/// The entry point and the end of the loaded segments of `image`, checked.
fn check_image_layout(image: &[u8]) -> Result<(u64, u64), BootError> {
    let window = abi::IMAGE_BASE_GPA..abi::IMAGE_LIMIT_GPA;
    let header = image
        .get(..ELF_HEADER_LEN)
        .ok_or(BootError::NotElf("shorter than an ELF header"))?;
    if header[..4] != *b"\x7fELF" {
        return Err(BootError::NotElf("bad magic"));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(BootError::NotElf("not ELF64 little-endian"));
    }
    if le16(header, 18) != EM_X86_64 {
        return Err(BootError::NotElf("not x86-64"));
    }
    let entry = le64(header, 24);
    let phoff = le64(header, 32);
    if usize::from(le16(header, 54)) != PHDR_LEN {
        return Err(BootError::NotElf("unexpected program header size"));
    }
    let phnum = usize::from(le16(header, 56));
    if phnum > MAX_PHDRS {
        return Err(BootError::NotElf("too many program headers"));
    }

    let mut loadable = 0;
    let mut image_end = window.start;
    for index in 0..phnum {
        let phdr = usize::try_from(phoff)
            .ok()
            .and_then(|off| off.checked_add(index * PHDR_LEN))
            .and_then(|start| image.get(start..start.checked_add(PHDR_LEN)?))
            .ok_or(BootError::NotElf("program headers outside the file"))?;
        if le32(phdr, 0) != PT_LOAD {
            continue;
        }
        loadable += 1;
        let (offset, vaddr, paddr, filesz, memsz) = (
            le64(phdr, 8),
            le64(phdr, 16),
            le64(phdr, 24),
            le64(phdr, 32),
            le64(phdr, 40),
        );
        let bad = |reason| BootError::BadSegment { index, reason };
        if memsz < filesz {
            return Err(bad("memory size smaller than file size"));
        }
        if vaddr != paddr {
            // The guest runs identity mapped: code linked elsewhere than it is loaded breaks.
            return Err(bad("virtual address differs from physical address"));
        }
        let file_end = offset.checked_add(filesz).ok_or(bad("file range overflows"))?;
        if file_end > image.len() as u64 {
            return Err(bad("file range outside the file"));
        }
        let end = paddr.checked_add(memsz).ok_or(bad("memory range overflows"))?;
        if paddr < window.start || end > window.end {
            return Err(BootError::SegmentOutOfBounds {
                index,
                start: paddr,
                end,
            });
        }
        image_end = image_end.max(end);
    }
    if loadable == 0 {
        return Err(BootError::NoSegments);
    }
    if !window.contains(&entry) {
        return Err(BootError::EntryOutOfBounds(entry));
    }
    Ok((entry, image_end))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
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

/// Writes the page tables, GDT, TSS, IDT, boot info and an empty report page into `mem`.
pub fn write_boot_tables(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), BootError> {
    // The tables' pages must be zero wherever the ABI lists no entry (not present); the report
    // page must be zero so a stale value can never be mistaken for a fault record.
    let zero_page = [0u8; abi::PAGE_SIZE as usize];
    let mut page = abi::PML4_GPA;
    while page < abi::KERNEL_STACK_TOP {
        write_bytes(mem, page, &zero_page)?;
        page += abi::PAGE_SIZE;
    }

    for (gpa, entry) in abi::page_table_entries(info.ram_size) {
        write_bytes(mem, gpa, &entry.to_le_bytes())?;
    }
    for (i, descriptor) in abi::gdt().iter().enumerate() {
        write_bytes(mem, abi::GDT_GPA + i as u64 * 8, &descriptor.to_le_bytes())?;
    }
    write_bytes(mem, abi::TSS_GPA, &abi::tss())?;
    for (v, gate) in abi::idt().iter().enumerate() {
        let at = abi::IDT_GPA + v as u64 * 16;
        write_bytes(mem, at, &gate[0].to_le_bytes())?;
        write_bytes(mem, at + 8, &gate[1].to_le_bytes())?;
    }
    write_bytes(mem, abi::BOOT_INFO_GPA, &info.to_bytes())?;
    Ok(())
}

/// Puts 32 secret bytes at the exchange page's sealing-secret field for the enclave, which
/// copies them into its hidden memory and zeroes the page's copy before it serves anything. The
/// VMM puts the image's vault key there (see [`hand_over_vault_keys`]), never the host secret.
pub fn hand_over_sealing_secret(
    mem: &GuestMemoryMmap,
    secret: &[u8; abi::exchange::SEALING_SECRET_LEN],
) -> Result<(), BootError> {
    use abi::exchange;
    write_bytes(mem, abi::EXCHANGE_GPA + exchange::SEALING_SECRET as u64, secret)?;
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
    hand_over_sealing_secret(mem, own)
}

/// Reads the [`Report`] page the guest fills before a fault or benchmark exit.
pub fn read_report(mem: &GuestMemoryMmap) -> Result<Report, BootError> {
    let mut bytes = [0u8; abi::REPORT_SIZE];
    mem.read_slice(&mut bytes, GuestAddress(abi::REPORT_GPA))
        .map_err(|source| BootError::GuestMemory {
            addr: abi::REPORT_GPA,
            source,
        })?;
    Ok(Report::from_bytes(&bytes))
}

/// The ring-0 64-bit code segment of [`abi::gdt`] at [`abi::KERNEL_CS`], as KVM loads it.
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

/// The ring-0 data segment of [`abi::gdt`] at [`abi::KERNEL_DS`].
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
        limit: abi::TSS_SIZE as u32 - 1,
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

/// Sets the vCPU's CPUID table to everything KVM supports. Under PVM this applies to ring 0 only
/// (ring 3 sees the host's CPUID), so there is nothing to hide or add.
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd) -> Result<(), BootError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))
}

/// Puts the vCPU in 64-bit ring 0 at `entry` with the ABI's control registers, descriptor
/// tables, stack and boot-info pointer.
pub fn setup_registers(vcpu: &VcpuFd, entry: u64) -> Result<(), BootError> {
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
    sregs.gdt.limit = (abi::gdt().len() * 8 - 1) as u16;
    sregs.idt.base = abi::IDT_GPA;
    sregs.idt.limit = (abi::IDT_ENTRIES * 16 - 1) as u16;
    sregs.cr0 = abi::ENTRY_CR0;
    sregs.cr3 = abi::PML4_GPA;
    sregs.cr4 = abi::ENTRY_CR4;
    sregs.efer = abi::ENTRY_EFER;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rip: entry,
        rsp: abi::KERNEL_STACK_TOP,
        rdi: abi::BOOT_INFO_GPA,
        rflags: 2, // only the always-one bit: interrupts off until the kernel is ready
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

    /// File offset of the single segment's contents.
    pub const SEGMENT_OFFSET: usize = 0x1000;

    /// An ELF64 x86-64 executable with one RWX segment holding `contents` at `load_addr`.
    pub fn build(load_addr: u64, contents: &[u8], entry: u64) -> Vec<u8> {
        let mut elf = vec![0u8; SEGMENT_OFFSET];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // little-endian
        elf[6] = 1; // EV_CURRENT
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&entry.to_le_bytes());
        elf[32..40].copy_from_slice(&(ELF_HEADER_LEN as u64).to_le_bytes()); // e_phoff
        elf[52..54].copy_from_slice(&(ELF_HEADER_LEN as u16).to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut elf[ELF_HEADER_LEN..ELF_HEADER_LEN + PHDR_LEN];
        ph[0..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        ph[4..8].copy_from_slice(&7u32.to_le_bytes()); // RWX
        ph[8..16].copy_from_slice(&(SEGMENT_OFFSET as u64).to_le_bytes());
        ph[16..24].copy_from_slice(&load_addr.to_le_bytes());
        ph[24..32].copy_from_slice(&load_addr.to_le_bytes());
        ph[32..40].copy_from_slice(&(contents.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(contents.len() as u64).to_le_bytes());
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        elf.extend_from_slice(contents);
        elf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), abi::DEFAULT_RAM_SIZE as usize)]).unwrap()
    }

    #[test]
    fn accepts_image_inside_window() {
        let elf = test_elf::build(abi::IMAGE_BASE_GPA, &[0x90; 64], abi::IMAGE_BASE_GPA + 8);
        assert_eq!(check_image(&elf).unwrap(), abi::IMAGE_BASE_GPA + 8);
        let mem = guest_memory();
        assert_eq!(load_image(&mem, &elf).unwrap(), abi::IMAGE_BASE_GPA + 8);
        let mut back = [0u8; 64];
        mem.read_slice(&mut back, GuestAddress(abi::IMAGE_BASE_GPA)).unwrap();
        assert_eq!(back, [0x90; 64]);
    }

    #[test]
    fn refuses_segment_over_the_page_tables() {
        let elf = test_elf::build(abi::PML4_GPA, &[0xff; 16], abi::IMAGE_BASE_GPA);
        let err = check_image(&elf).unwrap_err();
        assert!(
            matches!(
                err,
                BootError::SegmentOutOfBounds {
                    index: 0,
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
        let elf = test_elf::build(start, &[0; 16], abi::IMAGE_BASE_GPA);
        assert!(matches!(check_image(&elf), Err(BootError::SegmentOutOfBounds { .. })));
        // Exactly up to the limit is fine.
        let elf = test_elf::build(abi::IMAGE_LIMIT_GPA - 16, &[0; 16], abi::IMAGE_BASE_GPA);
        assert!(check_image(&elf).is_ok());
    }

    #[test]
    fn refuses_entry_outside_window_and_garbage() {
        let elf = test_elf::build(abi::IMAGE_BASE_GPA, &[0; 16], 0x1000);
        assert!(matches!(check_image(&elf), Err(BootError::EntryOutOfBounds(0x1000))));
        assert!(matches!(check_image(b"not an elf"), Err(BootError::NotElf(_))));
        let mut truncated = test_elf::build(abi::IMAGE_BASE_GPA, &[0; 16], abi::IMAGE_BASE_GPA);
        truncated.truncate(test_elf::SEGMENT_OFFSET + 4);
        assert!(matches!(check_image(&truncated), Err(BootError::BadSegment { .. })));
    }

    #[test]
    fn boot_tables_match_the_abi() {
        let mem = guest_memory();
        let info = BootInfo::new(abi::DEFAULT_RAM_SIZE, 1_000_000, abi::BootMode::Service, 0, 4, [9; 48]);
        write_boot_tables(&mem, &info).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(abi::PML4_GPA)).unwrap();
        assert_eq!(pml4 & !0xfff, abi::PDPT_GPA);
        let cs: u64 = mem
            .read_obj(GuestAddress(abi::GDT_GPA + u64::from(abi::KERNEL_CS)))
            .unwrap();
        assert_eq!(cs, abi::gdt()[2]);
        let mut bi = [0u8; abi::BOOT_INFO_SIZE];
        mem.read_slice(&mut bi, GuestAddress(abi::BOOT_INFO_GPA)).unwrap();
        assert_eq!(bi, info.to_bytes());
        assert_eq!(read_report(&mem).unwrap(), Report::default());
    }
}
