//! The boot-time tables the VMM builds from the layout in [`crate::abi`]: the W^X page tables,
//! the GDT, TSS and IDT, and the RAM sizes the layout accepts. Host side only: the enclave relies
//! on the layout's constants (selectors, addresses, vectors), which stay in `abi`, and never
//! builds these tables itself, so they are not part of what it links.

use alloc::vec;
use alloc::vec::Vec;

use crate::abi::*;

/// Why a RAM size does not fit the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRamSize;

/// Accepts RAM sizes that are a multiple of 2 MiB within [`MIN_RAM_SIZE`]..=[`MAX_RAM_SIZE`].
pub fn check_ram_size(ram_size: u64) -> Result<(), BadRamSize> {
    if (MIN_RAM_SIZE..=MAX_RAM_SIZE).contains(&ram_size) && ram_size.is_multiple_of(LARGE_PAGE_SIZE) {
        Ok(())
    } else {
        Err(BadRamSize)
    }
}

/// Page-table entry bits.
pub mod pte {
    /// Present.
    pub const PRESENT: u64 = 1;
    /// Writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// Reachable from ring 3.
    pub const USER: u64 = 1 << 2;
    /// Write-through.
    pub const WRITE_THROUGH: u64 = 1 << 3;
    /// Cache disabled.
    pub const NO_CACHE: u64 = 1 << 4;
    /// 2 MiB page (in a page directory).
    pub const HUGE: u64 = 1 << 7;
    /// Not executable.
    pub const NO_EXECUTE: u64 = 1 << 63;
}

/// A loadable segment of the enclave image, as the page tables map it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSegment {
    /// First guest-physical (= virtual) address.
    pub start: u64,
    /// End (exclusive) in memory.
    pub end: u64,
    /// `PF_W`: writable (never together with `executable` in a bootable image).
    pub writable: bool,
    /// `PF_X`: executable.
    pub executable: bool,
    /// Ring-0 code (the segment at [`RING0_CODE_GPA`]): supervisor-only.
    pub ring0: bool,
}

/// The leaf flags of the image page at `page`: the segments that cover it decide (a page shared
/// by segments is writable if any is, executable only if none of them is writable and one is
/// executable, supervisor-only if any is ring 0), or `None` if none covers it. So no page is
/// ever both writable and executable, whatever the segments say; the VMM refuses images whose
/// segments share a page with different permissions before it gets here.
fn image_page_flags(page: u64, image: &[ImageSegment]) -> Option<u64> {
    use pte::*;
    if !(IMAGE_BASE_GPA..IMAGE_LIMIT_GPA).contains(&page) {
        return None;
    }
    let covering = image.iter().filter(|s| s.start < page + PAGE_SIZE && page < s.end);
    let (mut any, mut writable, mut executable, mut ring0) = (false, false, false, false);
    for s in covering {
        any = true;
        writable |= s.writable;
        executable |= s.executable;
        ring0 |= s.ring0;
    }
    if !any {
        return None;
    }
    let mut flags = PRESENT;
    if writable {
        flags |= WRITABLE;
    }
    if writable || !executable {
        flags |= NO_EXECUTE;
    }
    if !ring0 {
        flags |= USER;
    }
    Some(flags)
}

/// Every page-table entry of the layout for a guest of `ram_size` bytes running `image`, as
/// `(gpa of the entry, value)`. Entries not listed are zero (not present); the tables' pages must
/// be zeroed first.
///
/// W^X: the image's pages get the permissions of their segments (code read-only and executable,
/// read-only data, writable data, each not executable unless it is code), ring-0 code is
/// supervisor-only, and every other page (boot tables, the DMA window, the heap, the stack, MMIO)
/// is not executable. The MMIO range is mapped a second time at 1..2 GiB for ring 0 only (see
/// [`LAPIC_ALIAS_VA`]).
pub fn page_table_entries(ram_size: u64, image: &[ImageSegment]) -> Vec<(u64, u64)> {
    use pte::*;
    let table = PRESENT | WRITABLE | USER;
    let mut out = vec![
        (PML4_GPA, PDPT_GPA | table),
        (PDPT_GPA, PD_LOW_GPA | table),
        // The MMIO alias: supervisor-only and not executable for everything below it.
        (
            PDPT_GPA + (MMIO_ALIAS_VA_BASE >> 30) * 8,
            PD_MMIO_GPA | PRESENT | WRITABLE | NO_EXECUTE,
        ),
        (PDPT_GPA + 3 * 8, PD_MMIO_GPA | table),
        (PD_LOW_GPA, PT_LOW_GPA | table),
    ];
    for i in 0..IMAGE_PAGE_TABLES {
        let pt = PT_IMAGE_GPA + i * PAGE_SIZE;
        out.push((PD_LOW_GPA + (i + 1) * 8, pt | table));
    }

    // The low 2 MiB and the image window, page by page.
    let mut page = PAGE_SIZE;
    while page < IMAGE_LIMIT_GPA {
        let flags = if page < BOOT_INFO_GPA {
            Some(PRESENT | WRITABLE | NO_EXECUTE)
        } else if page == BOOT_INFO_GPA {
            Some(PRESENT | USER | NO_EXECUTE)
        } else if page == REPORT_GPA || page == EXCHANGE_GPA {
            Some(PRESENT | WRITABLE | USER | NO_EXECUTE)
        } else if page < KERNEL_STACK_TOP {
            Some(PRESENT | WRITABLE | NO_EXECUTE)
        } else if page >= IMAGE_BASE_GPA {
            image_page_flags(page, image)
        } else {
            None
        };
        if let Some(flags) = flags {
            // PT_LOW, then the image tables, are consecutive in the layout's index space.
            let at = if page < LARGE_PAGE_SIZE {
                PT_LOW_GPA + (page / PAGE_SIZE) * 8
            } else {
                PT_IMAGE_GPA + (page - LARGE_PAGE_SIZE) / PAGE_SIZE * 8
            };
            out.push((at, page | flags));
        }
        page += PAGE_SIZE;
    }

    // The rest of RAM (DMA window, heap, stack) in 2 MiB pages: data, never code.
    let mut addr = IMAGE_LIMIT_GPA;
    while addr < ram_size {
        let flags = PRESENT | WRITABLE | USER | HUGE | NO_EXECUTE;
        out.push((PD_LOW_GPA + (addr / LARGE_PAGE_SIZE) * 8, addr | flags));
        addr += LARGE_PAGE_SIZE;
    }

    // MMIO, uncached. The vsock and doorbell registers share one 2 MiB page.
    let mmio = |gpa: u64| PD_MMIO_GPA + ((gpa - (3 << 30)) / LARGE_PAGE_SIZE) * 8;
    let uncached = PRESENT | WRITABLE | HUGE | WRITE_THROUGH | NO_CACHE | NO_EXECUTE;
    out.push((
        mmio(VSOCK_MMIO_GPA),
        (VSOCK_MMIO_GPA & !(LARGE_PAGE_SIZE - 1)) | uncached | USER,
    ));
    out.push((mmio(LAPIC_GPA), LAPIC_GPA | uncached));
    out
}

/// What the MMU makes of a virtual address (see [`translate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address.
    pub phys: u64,
    /// Writable (every level allows it).
    pub writable: bool,
    /// Reachable from ring 3 (every level allows it).
    pub user: bool,
    /// Executable (no level sets NX).
    pub executable: bool,
}

/// Walks the 4-level page tables rooted at [`PML4_GPA`] for `va` as the MMU does, reading each
/// entry with `entry(gpa)` (0 where nothing was written): `None` if `va` is not mapped. For
/// checking the tables [`page_table_entries`] makes, on either side.
pub fn translate(entry: impl Fn(u64) -> u64, va: u64) -> Option<Translation> {
    use pte::*;
    const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
    let mut table = PML4_GPA;
    let (mut writable, mut user, mut executable) = (true, true, true);
    for level in 0..4u32 {
        let shift = 39 - 9 * level;
        let e = entry(table + ((va >> shift) & 511) * 8);
        if e & PRESENT == 0 {
            return None;
        }
        writable &= e & WRITABLE != 0;
        user &= e & USER != 0;
        executable &= e & NO_EXECUTE == 0;
        let leaf = level == 3 || (level == 2 && e & HUGE != 0);
        if leaf {
            let offset = va & ((1u64 << shift) - 1);
            return Some(Translation {
                phys: (e & ADDRESS & !((1u64 << shift) - 1)) | offset,
                writable,
                user,
                executable,
            });
        }
        table = e & ADDRESS;
    }
    None
}

/// Page tables at [`PT_IMAGE_GPA`]: the image window from 2 MiB to its end.
const IMAGE_PAGE_TABLES: u64 = (IMAGE_LIMIT_GPA - LARGE_PAGE_SIZE) / LARGE_PAGE_SIZE;
/// Where the MMIO alias starts: 3 GiB minus [`MMIO_ALIAS_OFFSET`].
const MMIO_ALIAS_VA_BASE: u64 = (3 << 30) - MMIO_ALIAS_OFFSET;

// The layout the page tables rely on; fail the build if it moves.
const _: () = {
    assert!(IMAGE_LIMIT_GPA.is_multiple_of(LARGE_PAGE_SIZE) && IMAGE_LIMIT_GPA > LARGE_PAGE_SIZE);
    assert!(PT_IMAGE_GPA >= EXCHANGE_GPA + PAGE_SIZE);
    assert!(PT_IMAGE_GPA + IMAGE_PAGE_TABLES * PAGE_SIZE <= KERNEL_STACK_BOTTOM);
    assert!(KERNEL_STACK_BOTTOM < KERNEL_STACK_TOP && KERNEL_STACK_TOP <= IMAGE_BASE_GPA);
    assert!(
        MAX_RAM_SIZE <= MMIO_ALIAS_VA_BASE,
        "RAM and the MMIO alias must not share a PDPT entry"
    );
    assert!(MMIO_ALIAS_VA_BASE.is_multiple_of(1 << 30));
    assert!(
        LAPIC_ALIAS_VA + LAPIC_EOI_OFFSET < 0x8000_0000,
        "the EOI alias must fit a disp32"
    );
    assert!(VECTOR_STUBS_GPA == RING0_CODE_GPA);
};

/// The GDT, in Linux's layout (PVM requires the user selectors to match the host's).
pub fn gdt() -> [u64; 10] {
    let (tss_low, tss_high) = tss_descriptor(TSS_GPA, TSS_SIZE as u32 - 1);
    [
        0,
        0,
        0x00af_9b00_0000_ffff, // 0x10 kernel code, 64-bit
        0x00cf_9300_0000_ffff, // 0x18 kernel data
        0x00cf_fb00_0000_ffff, // 0x20 user code, 32-bit (unused, keeps Linux's numbering)
        0x00cf_f300_0000_ffff, // 0x28 user data
        0x00af_fb00_0000_ffff, // 0x30 user code, 64-bit
        0,
        tss_low, // 0x40 TSS, 16 bytes
        tss_high,
    ]
}

/// Bytes of the 64-bit TSS (no I/O bitmap).
pub const TSS_SIZE: usize = 104;

fn tss_descriptor(base: u64, limit: u32) -> (u64, u64) {
    let low = (limit as u64 & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89 << 40) // present, available 64-bit TSS
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (low, base >> 32)
}

/// The TSS: RSP0 is the ring-0 stack; the I/O map base points past the segment (no port access
/// from ring 3).
pub fn tss() -> [u8; TSS_SIZE] {
    let mut t = [0u8; TSS_SIZE];
    t[4..12].copy_from_slice(&KERNEL_STACK_TOP.to_le_bytes());
    t[102..104].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    t
}

/// One 64-bit interrupt gate to `handler`.
pub fn idt_gate(handler: u64, dpl: u8) -> [u64; 2] {
    let type_attr = 0x8e_u64 | ((dpl as u64 & 3) << 5); // present, interrupt gate
    let low = (handler & 0xffff) | ((KERNEL_CS as u64) << 16) | (type_attr << 40) | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// The IDT: every vector to its stub, in the SMAP table ([`SMAP_VECTOR_STUBS_GPA`]) if `smap`
/// (CR4.SMAP is on); only the system-call gate is reachable from ring 3.
pub fn idt(smap: bool) -> [[u64; 2]; IDT_ENTRIES] {
    let stubs = if smap { SMAP_VECTOR_STUBS_GPA } else { VECTOR_STUBS_GPA };
    let mut idt = [[0u64; 2]; IDT_ENTRIES];
    for (v, gate) in idt.iter_mut().enumerate() {
        let dpl = if v == SYSCALL_VECTOR as usize { 3 } else { 0 };
        *gate = idt_gate(stubs + v as u64 * VECTOR_STUB_SIZE, dpl);
    }
    idt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_regions_do_not_overlap() {
        const {
            assert!(KERNEL_STACK_TOP <= IMAGE_BASE_GPA);
            assert!(IMAGE_LIMIT_GPA <= DMA_WINDOW_GPA);
            assert!(DMA_WINDOW_GPA + DMA_WINDOW_SIZE <= HEAP_GPA);
            assert!(HEAP_GPA + USER_STACK_SIZE < MIN_RAM_SIZE);
        }
        assert!(check_ram_size(DEFAULT_RAM_SIZE).is_ok());
        assert!(check_ram_size(MIN_RAM_SIZE - LARGE_PAGE_SIZE).is_err());
        assert!(check_ram_size(DEFAULT_RAM_SIZE + 4096).is_err());
    }

    /// An image shaped like the enclave's: ring-0 code, ring-3 code, read-only data across the
    /// 2 MiB boundary, writable data and bss.
    fn sample_image() -> [ImageSegment; 4] {
        let seg = |start, end, writable, executable, ring0| ImageSegment {
            start,
            end,
            writable,
            executable,
            ring0,
        };
        [
            seg(RING0_CODE_GPA, RING0_CODE_GPA + 0x4800, false, true, true),
            seg(0x10_5000, 0x1f_f000, false, true, false),
            seg(0x1f_f000, 0x23_0123, false, false, false),
            seg(0x23_1000, 0x23_2200, true, false, false),
        ]
    }

    fn walker(entries: &[(u64, u64)]) -> impl Fn(u64) -> Option<Translation> + '_ {
        let table: alloc::collections::BTreeMap<u64, u64> = entries.iter().copied().collect();
        move |va| translate(|gpa| table.get(&gpa).copied().unwrap_or(0), va)
    }

    #[test]
    fn page_tables_are_w_xor_x_and_keep_ring0_code_supervisor_only() {
        let image = sample_image();
        let entries = page_table_entries(DEFAULT_RAM_SIZE, &image);
        let entry_gpas: Vec<u64> = entries.iter().map(|&(gpa, _)| gpa).collect();
        let mut sorted = entry_gpas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), entry_gpas.len(), "an entry is written twice");
        let walk = walker(&entries);
        let in_seg = |i: usize, va: u64| image[i].start <= va && va < image[i].end.next_multiple_of(PAGE_SIZE);
        // Every page of RAM, MMIO and the MMIO alias.
        let pages = (0..DEFAULT_RAM_SIZE)
            .step_by(PAGE_SIZE as usize)
            .chain(((1u64 << 30)..(4u64 << 30)).step_by(LARGE_PAGE_SIZE as usize));
        let mut executable_pages = 0;
        for va in pages {
            let Some(t) = walk(va) else { continue };
            assert!(
                !(t.writable && t.executable),
                "{va:#x} is writable and executable: {t:?}"
            );
            if va < (1 << 30) {
                assert_eq!(t.phys, va, "RAM is identity mapped");
            }
            if t.executable {
                executable_pages += 1;
                assert!(
                    in_seg(0, va) || in_seg(1, va),
                    "{va:#x} is executable outside the code: {t:?}"
                );
            }
            if in_seg(0, va) {
                assert!(!t.user && !t.writable && t.executable, "ring-0 code at {va:#x}: {t:?}");
            } else if in_seg(1, va) {
                assert!(t.user && !t.writable && t.executable, "text at {va:#x}: {t:?}");
            } else if in_seg(2, va) {
                assert!(t.user && !t.writable && !t.executable, "rodata at {va:#x}: {t:?}");
            } else if in_seg(3, va) {
                assert!(t.user && t.writable && !t.executable, "data at {va:#x}: {t:?}");
            } else if (IMAGE_BASE_GPA..IMAGE_LIMIT_GPA).contains(&va) {
                panic!("{va:#x} in the image window but in no segment is mapped: {t:?}");
            }
        }
        let code_pages = (image[0].end.next_multiple_of(PAGE_SIZE) - image[0].start
            + image[1].end.next_multiple_of(PAGE_SIZE)
            - image[1].start)
            / PAGE_SIZE;
        assert_eq!(executable_pages, code_pages);
        // Data pages: the window, the heap, the stack are user, writable, never executable.
        for va in [DMA_WINDOW_GPA, HEAP_GPA, DEFAULT_RAM_SIZE - 8] {
            let t = walk(va).unwrap();
            assert!(t.user && t.writable && !t.executable, "{va:#x}: {t:?}");
        }
        // The null page, the gap below the image, past the image, past RAM: not mapped.
        for va in [
            0,
            0x8,
            KERNEL_STACK_TOP,
            IMAGE_BASE_GPA - 8,
            0x23_3000,
            0x5f_f000,
            DEFAULT_RAM_SIZE,
        ] {
            assert_eq!(walk(va), None, "{va:#x} is mapped");
        }
        // The tables themselves and the ring-0 stack are supervisor; the boot info read-only.
        for va in [
            PML4_GPA,
            PT_IMAGE_GPA,
            PT_IMAGE_GPA + PAGE_SIZE,
            GDT_GPA,
            KERNEL_STACK_BOTTOM,
        ] {
            let t = walk(va).unwrap();
            assert!(!t.user && t.writable && !t.executable, "{va:#x}: {t:?}");
        }
        let boot_info = walk(BOOT_INFO_GPA).unwrap();
        assert!(boot_info.user && !boot_info.writable, "{boot_info:?}");
    }

    #[test]
    fn the_lapic_alias_is_below_2_gib_and_ring0_only() {
        let entries = page_table_entries(DEFAULT_RAM_SIZE, &sample_image());
        let walk = walker(&entries);
        let eoi = walk(LAPIC_ALIAS_VA + LAPIC_EOI_OFFSET).unwrap();
        assert_eq!(eoi.phys, LAPIC_GPA + LAPIC_EOI_OFFSET);
        assert!(eoi.writable && !eoi.user && !eoi.executable, "{eoi:?}");
        // The vsock registers: user at their address, ring 0 only in the alias.
        assert!(walk(VSOCK_MMIO_GPA).unwrap().user);
        let alias = walk(VSOCK_MMIO_GPA - MMIO_ALIAS_OFFSET).unwrap();
        assert!(!alias.user && alias.phys == VSOCK_MMIO_GPA, "{alias:?}");
        let lapic = walk(LAPIC_GPA).unwrap();
        assert!(!lapic.user && lapic.phys == LAPIC_GPA, "{lapic:?}");
    }

    #[test]
    fn no_page_is_writable_and_executable_whatever_the_segments_say() {
        let seg = |start, end, writable, executable, ring0| ImageSegment {
            start,
            end,
            writable,
            executable,
            ring0,
        };
        // A W+X segment, and code sharing a page with data: never a W+X page.
        let image = [
            seg(RING0_CODE_GPA, RING0_CODE_GPA + 0x1000, true, true, true),
            seg(0x10_1000, 0x10_1800, false, true, false),
            seg(0x10_1800, 0x10_2000, true, false, false),
            // Outside the window: ignored.
            seg(DMA_WINDOW_GPA, DMA_WINDOW_GPA + 0x1000, false, true, false),
        ];
        let entries = page_table_entries(DEFAULT_RAM_SIZE, &image);
        let walk = walker(&entries);
        for va in [RING0_CODE_GPA, 0x10_1000, DMA_WINDOW_GPA] {
            let t = walk(va).unwrap();
            assert!(!t.executable, "{va:#x}: {t:?}");
        }
    }

    #[test]
    fn page_tables_map_ram_and_guard_null() {
        let entries = page_table_entries(DEFAULT_RAM_SIZE, &sample_image());
        assert!(
            !entries.iter().any(|&(gpa, _)| gpa == PT_LOW_GPA),
            "page 0 must stay unmapped"
        );
        let pd = |a: u64| {
            entries
                .iter()
                .find(|&&(gpa, _)| gpa == PD_LOW_GPA + (a / LARGE_PAGE_SIZE) * 8)
        };
        assert!(pd(DEFAULT_RAM_SIZE - LARGE_PAGE_SIZE).is_some());
        assert!(pd(DEFAULT_RAM_SIZE).is_none());
        let heap = pd(HEAP_GPA).unwrap().1;
        assert_ne!(heap & pte::NO_EXECUTE, 0);
        assert_ne!(heap & pte::USER, 0);
        let max = page_table_entries(MAX_RAM_SIZE, &sample_image());
        assert!(walker(&max)(MAX_RAM_SIZE - 8).is_some_and(|t| !t.executable));
    }

    #[test]
    fn gdt_selectors_match_linux() {
        let g = gdt();
        assert_eq!(g[(USER_CS >> 3) as usize], 0x00af_fb00_0000_ffff);
        assert_eq!(g[(USER_DS >> 3) as usize], 0x00cf_f300_0000_ffff);
        assert_eq!(g[(KERNEL_CS >> 3) as usize] >> 40 & 0xff, 0x9b);
        assert_eq!(g[(TSS_SELECTOR >> 3) as usize] >> 40 & 0xff, 0x89);
    }

    #[test]
    fn syscall_gate_is_user_reachable() {
        for (smap, stubs) in [(false, VECTOR_STUBS_GPA), (true, SMAP_VECTOR_STUBS_GPA)] {
            let idt = idt(smap);
            let dpl = |v: usize| (idt[v][0] >> 45) & 3;
            assert_eq!(dpl(SYSCALL_VECTOR as usize), 3);
            assert_eq!(dpl(14), 0);
            let handler = |v: usize| (idt[v][0] & 0xffff) | ((idt[v][0] >> 48) << 16) | (idt[v][1] << 32);
            assert_eq!(handler(1), stubs + VECTOR_STUB_SIZE);
            assert_eq!(handler(255), stubs + 255 * VECTOR_STUB_SIZE);
            assert!(handler(255) + VECTOR_STUB_SIZE <= VECTOR_STUBS_GPA + VECTOR_STUBS_SIZE);
        }
    }
}
