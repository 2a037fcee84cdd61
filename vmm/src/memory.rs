//! Guest RAM: what backs it, and how little of it the VMM keeps mapped.
//!
//! Guest RAM is a `guest_memfd` (`KVM_CREATE_GUEST_MEMFD` with `MMAP | INIT_SHARED`) given to KVM
//! as one memory slot (`KVM_SET_USER_MEMORY_REGION2` with `KVM_MEM_GUEST_MEMFD`). The slot's
//! host-virtual range is a reservation of the whole RAM size, but only the pieces KVM itself must
//! reach through the VMM's page tables are mapped in it (see [`visible_ranges`]): the low pages
//! (page tables, GDT, IDT, TSS, boot info, report page, ring-0 stack), the enclave image (ring-0
//! code and the instruction bytes of every MMIO exit, which KVM emulates), and the DMA window (the
//! virtqueues and their buffers). The rest — the ring-3 heap and stack, where the credentials
//! live — stays a `PROT_NONE` reservation: the guest reaches it through the `guest_memfd`, the
//! VMM has no mapping of it (reads through `/proc/PID/mem` fail there) and, once the seccomp
//! filter is in force ([`crate::sandbox`]), cannot map it again.
//!
//! Whether the kernel has `guest_memfd` is asked of KVM (`KVM_CHECK_EXTENSION` with
//! `KVM_CAP_GUEST_MEMFD`), never assumed: hosts of the same kind differ. Where it has none, guest
//! RAM is anonymous memory that stays mapped whole (KVM needs a host mapping of every guest page
//! then), locked page by page as it is first touched (`mlock2(MLOCK_ONFAULT)`: a 16 MiB guest
//! that touches 3 MiB costs 3 MiB, not 16) and excluded from core dumps; the start-up log and
//! `Status` say so. `--require-hidden-memory` refuses that fallback ([`guest_memfd_supported`]).
//!
//! Every access of the VMM to guest memory goes through the bounds-checked `vm-memory` views this
//! module hands out ([`GuestRam::vmm_view`], [`GuestRam::window_view`]): they contain only mapped
//! pieces, so an address in the hidden part is an error, never a fault.

use std::fmt;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use credguard_proto::abi;
use kvm_bindings::{
    KVM_MEM_GUEST_MEMFD, kvm_create_guest_memfd, kvm_userspace_memory_region, kvm_userspace_memory_region2,
};
use kvm_ioctls::{Cap, VmFd};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// `GUEST_MEMFD_FLAG_MMAP`: the guest_memfd may be mapped by userspace.
const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
/// `GUEST_MEMFD_FLAG_INIT_SHARED`: its pages start out shared (host-accessible through a mapping).
const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;

/// The one memory slot of guest RAM.
const RAM_SLOT: u32 = 0;

/// Errors of guest memory setup.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The RAM size does not fit the host's address space.
    #[error("guest RAM of {0} bytes does not fit the address space")]
    Size(u64),
    /// A memory-management system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// KVM refused the memory slot.
    #[error("{what}: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A `vm-memory` view could not be built.
    #[error("guest memory view: {0}")]
    View(String),
    /// The image does not fit the layout (its end is past [`abi::IMAGE_LIMIT_GPA`]).
    #[error("enclave image ends at {0:#x}, past the image window")]
    ImageEnd(u64),
}

/// What backs guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A `guest_memfd`; the VMM maps only [`visible_ranges`] of it.
    GuestMemfd,
    /// Anonymous memory, mapped whole in the VMM (the kernel has no usable `guest_memfd`).
    Anonymous,
}

/// How the guest RAM the VMM maps is kept out of swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// `mlock`ed up front (the small mapped pieces of a `guest_memfd`).
    Locked,
    /// `mlock2(MLOCK_ONFAULT)`: each page is locked when it is first touched (anonymous RAM, of
    /// which the guest touches only part).
    OnFault,
    /// Not locked (the lock failed, e.g. `RLIMIT_MEMLOCK`; logged as a warning).
    Unlocked,
}

/// Whether KVM offers `guest_memfd` for `vm` (`KVM_CHECK_EXTENSION` with `KVM_CAP_GUEST_MEMFD`).
/// Without it guest RAM falls back to anonymous memory the VMM keeps mapped whole.
pub fn guest_memfd_supported(vm: &VmFd) -> bool {
    vm.check_extension(Cap::GuestMemfd)
}

/// Whether this host's KVM offers `guest_memfd` (opens `/dev/kvm` and makes a throwaway VM to
/// ask, as the enclave's VM would be asked), for checks before anything is set up.
pub fn host_has_guest_memfd() -> Result<bool, kvm_ioctls::Error> {
    let vm = kvm_ioctls::Kvm::new()?.create_vm()?;
    Ok(guest_memfd_supported(&vm))
}

/// The guest-physical ranges the VMM keeps mapped for an image ending at `image_end`: the low
/// pages up to the ring-0 stack top, the image (page-aligned), and the DMA window. Sorted, disjoint.
pub fn visible_ranges(image_end: u64) -> [Range<u64>; 3] {
    let image_end = image_end.div_ceil(abi::PAGE_SIZE) * abi::PAGE_SIZE;
    [
        0..abi::KERNEL_STACK_TOP,
        abi::IMAGE_BASE_GPA..image_end.clamp(abi::IMAGE_BASE_GPA + abi::PAGE_SIZE, abi::IMAGE_LIMIT_GPA),
        abi::DMA_WINDOW_GPA..abi::DMA_WINDOW_GPA + abi::DMA_WINDOW_SIZE,
    ]
}

/// Guest RAM: the host-virtual reservation, the `guest_memfd` (if any), and what is mapped.
///
/// It must outlive every `vm-memory` view made from it and the VM whose memory slot points into
/// it: [`crate::RunningEnclave`] drops it last, after the threads that hold views are joined.
pub struct GuestRam {
    backing: Backing,
    base: *mut u8,
    size: usize,
    mapped: Vec<Range<u64>>,
    locking: Locking,
    dontdump: bool,
    // Kept open for the VM's lifetime: a memory slot alone does not keep a guest_memfd alive.
    _gmem: Option<OwnedFd>,
}

// SAFETY: `base` is the address of a mapping this struct owns; it is never dereferenced through
// this struct (only handed to vm-memory and KVM), so sharing the struct between threads is safe.
unsafe impl Send for GuestRam {}
// SAFETY: as above; no method mutates through `base`.
unsafe impl Sync for GuestRam {}

impl fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestRam")
            .field("backing", &self.backing)
            .field("size", &self.size)
            .field("mapped", &self.mapped)
            .field("locking", &self.locking)
            .finish_non_exhaustive()
    }
}

fn sys_err(what: &'static str) -> MemoryError {
    MemoryError::Sys {
        what,
        source: io::Error::last_os_error(),
    }
}

impl GuestRam {
    /// Allocates `ram_size` bytes of guest RAM for `vm`, registers it as the VM's memory slot,
    /// and maps in the VMM only what [`visible_ranges`] lists for an image ending at `image_end`
    /// (everything, if KVM offers no `guest_memfd`: see [`guest_memfd_supported`]). The mapped
    /// part is locked against swapping ([`Locking`]; a failure, e.g. a low `RLIMIT_MEMLOCK`, is
    /// logged as a warning and reported by [`GuestRam::locking`]) and excluded from core dumps.
    pub fn new(vm: &VmFd, ram_size: u64, image_end: u64) -> Result<Self, MemoryError> {
        let prefer = if guest_memfd_supported(vm) {
            Backing::GuestMemfd
        } else {
            tracing::warn!(
                "guest_memfd unavailable (KVM_CAP_GUEST_MEMFD is 0 on this host): guest RAM is anonymous memory \
                 the VMM keeps mapped whole, locked as it is touched (--require-hidden-memory refuses this)"
            );
            Backing::Anonymous
        };
        Self::with_backing(vm, ram_size, image_end, prefer)
    }

    /// [`GuestRam::new`], with `Backing::Anonymous` skipping the guest_memfd (for tests of the
    /// fallback).
    fn with_backing(vm: &VmFd, ram_size: u64, image_end: u64, prefer: Backing) -> Result<Self, MemoryError> {
        let size = usize::try_from(ram_size).map_err(|_| MemoryError::Size(ram_size))?;
        if image_end > abi::IMAGE_LIMIT_GPA {
            return Err(MemoryError::ImageEnd(image_end));
        }
        let gmem = match prefer {
            Backing::GuestMemfd => vm.create_guest_memfd(kvm_create_guest_memfd {
                size: ram_size,
                flags: GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
                reserved: [0; 6],
            }),
            Backing::Anonymous => Err(kvm_ioctls::Error::new(libc::ENOTTY)),
        };
        let mut ram = match gmem {
            Ok(fd) => {
                // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new fd that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                Self::on_guest_memfd(fd, size, image_end)?
            }
            Err(e) => {
                if prefer == Backing::GuestMemfd {
                    // KVM says it has guest_memfd but refused one: say why, then fall back.
                    tracing::warn!(
                        "KVM_CREATE_GUEST_MEMFD failed ({e}): guest RAM is anonymous memory the VMM keeps \
                         mapped whole, locked as it is touched"
                    );
                }
                Self::anonymous(size)?
            }
        };
        ram.lock_and_exclude();
        ram.register(vm)?;
        Ok(ram)
    }

    fn on_guest_memfd(fd: OwnedFd, size: usize, image_end: u64) -> Result<Self, MemoryError> {
        // SAFETY: a fresh anonymous reservation; no existing mapping is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(sys_err("reserving guest address space"));
        }
        let mut ram = GuestRam {
            backing: Backing::GuestMemfd,
            base: base.cast(),
            size,
            mapped: Vec::new(),
            locking: Locking::Unlocked,
            dontdump: false,
            _gmem: None,
        };
        for range in visible_ranges(image_end) {
            let (start, len) = (range.start as usize, (range.end - range.start) as usize);
            if range.end as usize > size {
                return Err(MemoryError::Size(range.end));
            }
            // SAFETY: `base + start .. + len` lies inside the reservation this struct owns
            // (checked above), so MAP_FIXED replaces only our own PROT_NONE pages; the fd is a
            // guest_memfd of `size` bytes created with GUEST_MEMFD_FLAG_MMAP.
            let addr = unsafe {
                libc::mmap(
                    ram.base.add(start).cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd.as_raw_fd(),
                    start as libc::off_t,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(sys_err("mapping guest_memfd"));
            }
            ram.mapped.push(range);
        }
        ram._gmem = Some(fd);
        Ok(ram)
    }

    fn anonymous(size: usize) -> Result<Self, MemoryError> {
        // SAFETY: a fresh anonymous mapping; no existing mapping is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(sys_err("allocating guest memory"));
        }
        Ok(GuestRam {
            backing: Backing::Anonymous,
            base: base.cast(),
            size,
            mapped: std::iter::once(0..size as u64).collect(),
            locking: Locking::Unlocked,
            dontdump: false,
            _gmem: None,
        })
    }

    /// `MADV_DONTDUMP` and a lock against swapping on the mapped pieces: `mlock` for the few
    /// pieces of a `guest_memfd` (faulted in now), `mlock2(MLOCK_ONFAULT)` for anonymous RAM, so
    /// that only the pages the guest (or the loader) touches are ever faulted in, each locked as
    /// it comes.
    fn lock_and_exclude(&mut self) {
        let mut locking = match self.backing {
            Backing::GuestMemfd => Locking::Locked,
            Backing::Anonymous => Locking::OnFault,
        };
        let mut dontdump = true;
        for range in &self.mapped {
            // SAFETY: the range lies inside the mapping this struct owns (built above).
            let addr = unsafe { self.base.add(range.start as usize) }.cast::<libc::c_void>();
            let len = (range.end - range.start) as usize;
            // SAFETY: madvise and mlock on our own mapping change no memory contents.
            if unsafe { libc::madvise(addr, len, libc::MADV_DONTDUMP) } != 0 {
                tracing::warn!(
                    "MADV_DONTDUMP on guest memory failed: {}; a core dump could hold guest memory",
                    io::Error::last_os_error()
                );
                dontdump = false;
            }
            let rc = match locking {
                // SAFETY: as above.
                Locking::Locked => unsafe { libc::mlock(addr, len) },
                // SAFETY: as above; MLOCK_ONFAULT locks pages as they are faulted in.
                Locking::OnFault => unsafe { libc::mlock2(addr, len, libc::MLOCK_ONFAULT) },
                Locking::Unlocked => 0,
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                tracing::warn!(
                    "cannot mlock guest memory ({e}; RLIMIT_MEMLOCK is {}): it may be swapped out. \
                     Raise LimitMEMLOCK (the systemd unit sets 64M) or grant CAP_IPC_LOCK",
                    memlock_limit()
                );
                locking = Locking::Unlocked;
            }
        }
        if self.backing == Backing::GuestMemfd {
            // The hidden part: no pages here, but keep it out of dumps whatever happens.
            // SAFETY: madvise on our own reservation.
            unsafe { libc::madvise(self.base.cast(), self.size, libc::MADV_DONTDUMP) };
        }
        self.locking = locking;
        self.dontdump = dontdump;
    }

    fn register(&self, vm: &VmFd) -> Result<(), MemoryError> {
        let kvm = |what| move |source| MemoryError::Kvm { what, source };
        match (&self._gmem, self.backing) {
            (Some(fd), Backing::GuestMemfd) => {
                let region = kvm_userspace_memory_region2 {
                    slot: RAM_SLOT,
                    flags: KVM_MEM_GUEST_MEMFD,
                    guest_phys_addr: 0,
                    memory_size: self.size as u64,
                    userspace_addr: self.base as u64,
                    guest_memfd_offset: 0,
                    guest_memfd: fd.as_raw_fd() as u32,
                    ..Default::default()
                };
                // SAFETY: the host range is a reservation of exactly `memory_size` bytes owned by
                // `self`, which outlives the VM (see the struct's documentation); the guest_memfd
                // is `size` bytes and stays open as long as `self`.
                unsafe { vm.set_user_memory_region2(region) }.map_err(kvm("KVM_SET_USER_MEMORY_REGION2"))
            }
            _ => {
                let region = kvm_userspace_memory_region {
                    slot: RAM_SLOT,
                    flags: 0,
                    guest_phys_addr: 0,
                    memory_size: self.size as u64,
                    userspace_addr: self.base as u64,
                };
                // SAFETY: as above: a live mapping of exactly `memory_size` bytes that outlives
                // the VM.
                unsafe { vm.set_user_memory_region(region) }.map_err(kvm("KVM_SET_USER_MEMORY_REGION"))
            }
        }
    }

    fn view_of(&self, ranges: &[Range<u64>]) -> Result<GuestMemoryMmap, MemoryError> {
        let mut regions = Vec::with_capacity(ranges.len());
        for range in ranges {
            if !self.mapped.iter().any(|m| m.start <= range.start && range.end <= m.end) {
                return Err(MemoryError::View(format!("{range:#x?} is not mapped")));
            }
            let len = (range.end - range.start) as usize;
            let flags = match self.backing {
                Backing::GuestMemfd => libc::MAP_SHARED | libc::MAP_FIXED,
                Backing::Anonymous => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            };
            // SAFETY: the range lies in a piece this struct mapped read-write (checked above),
            // which stays mapped until `self` drops; callers keep `self` alive longer than any
            // view (see the struct's documentation).
            let region = unsafe {
                MmapRegion::build_raw(
                    self.base.add(range.start as usize),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                )
            }
            .map_err(|e| MemoryError::View(e.to_string()))?;
            let region = GuestRegionMmap::new(region, GuestAddress(range.start))
                .ok_or_else(|| MemoryError::View(format!("{range:#x?} overflows")))?;
            regions.push(region);
        }
        GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::View(e.to_string()))
    }

    /// The VMM's view: every mapped piece (what loading and the report page need).
    pub fn vmm_view(&self) -> Result<GuestMemoryMmap, MemoryError> {
        match self.backing {
            Backing::GuestMemfd => self.view_of(&self.mapped.clone()),
            // The whole RAM is mapped, but the VMM itself needs no more than the same pieces.
            Backing::Anonymous => {
                let image_end = abi::IMAGE_LIMIT_GPA;
                self.view_of(&visible_ranges(image_end))
            }
        }
    }

    /// The devices' view: the DMA window only. A descriptor pointing anywhere else is an
    /// out-of-bounds error in the device, whatever backs guest RAM.
    pub fn window_view(&self) -> Result<GuestMemoryMmap, MemoryError> {
        let window = abi::DMA_WINDOW_GPA..abi::DMA_WINDOW_GPA + abi::DMA_WINDOW_SIZE;
        self.view_of(std::slice::from_ref(&window))
    }

    /// What backs guest RAM.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Bytes of guest RAM mapped in the VMM.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped.iter().map(|r| r.end - r.start).sum()
    }

    /// Guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.size as u64
    }

    /// How the mapped part is kept out of swap.
    pub fn locking(&self) -> Locking {
        self.locking
    }

    /// Whether the mapped part is excluded from core dumps.
    pub fn dontdump(&self) -> bool {
        self.dontdump
    }

    /// The host-virtual range of guest RAM (mapped or reserved), for the seccomp filter that
    /// forbids remapping it.
    pub fn host_range(&self) -> Range<u64> {
        self.base as u64..self.base as u64 + self.size as u64
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: the reservation (with the pieces mapped over it) is ours; every view and the VM
        // are gone by now (see the struct's documentation).
        if unsafe { libc::munmap(self.base.cast(), self.size) } != 0 {
            tracing::warn!("unmapping guest memory: {}", io::Error::last_os_error());
        }
    }
}

/// The soft `RLIMIT_MEMLOCK`, for messages.
fn memlock_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".into();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", lim.rlim_cur / 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn vm() -> Option<VmFd> {
        if !std::path::Path::new("/dev/kvm").exists() {
            assert_ne!(
                std::env::var("CREDGUARD_REQUIRE_KVM").as_deref(),
                Ok("1"),
                "CREDGUARD_REQUIRE_KVM=1 but /dev/kvm does not exist"
            );
            return None;
        }
        Some(kvm_ioctls::Kvm::new().unwrap().create_vm().unwrap())
    }

    /// Whether the guest_memfd tests can run: KVM offers guest_memfd. Without it: one loud
    /// `SKIPPED` line, or a failure when CREDGUARD_REQUIRE_GUEST_MEMFD=1.
    fn guest_memfd_or_skip(vm: &VmFd) -> bool {
        if guest_memfd_supported(vm) {
            return true;
        }
        assert_ne!(
            std::env::var("CREDGUARD_REQUIRE_GUEST_MEMFD").as_deref(),
            Ok("1"),
            "CREDGUARD_REQUIRE_GUEST_MEMFD=1 but KVM_CAP_GUEST_MEMFD is 0 on this host"
        );
        // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED: no guest_memfd on this host\n");
        false
    }

    /// The smaps block of the mapping that starts at `start` in this process: its `Rss` and
    /// `Locked` in KiB, and its `VmFlags`.
    fn smaps_of(start: u64) -> (u64, u64, Vec<String>) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|l| {
            l.split_once('-')
                .and_then(|(a, _)| u64::from_str_radix(a, 16).ok())
                .is_none_or(|a| a != start)
        });
        assert!(lines.next().is_some(), "no mapping at {start:#x}");
        let (mut rss, mut locked, mut flags) = (None, None, Vec::new());
        for line in lines {
            let kib = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
            if line.starts_with("Rss:") {
                rss = kib();
            } else if line.starts_with("Locked:") {
                locked = kib();
            } else if let Some(f) = line.strip_prefix("VmFlags:") {
                flags = f.split_whitespace().map(str::to_owned).collect();
                break;
            }
        }
        (rss.unwrap(), locked.unwrap(), flags)
    }

    #[test]
    fn guest_memfd_ram_maps_only_the_visible_pieces() {
        let Some(vm) = vm() else { return };
        if !guest_memfd_or_skip(&vm) {
            return;
        }
        let ram = GuestRam::new(&vm, abi::DEFAULT_RAM_SIZE, abi::IMAGE_BASE_GPA + 0x5_0000).unwrap();
        assert_eq!(ram.backing(), Backing::GuestMemfd, "KVM offers guest_memfd");
        assert_eq!(ram.mapped_bytes(), 0x1_0000 + 0x5_0000 + abi::DMA_WINDOW_SIZE);
        assert_eq!(ram.locking(), Locking::Locked);
        assert!(ram.dontdump());
        let view = ram.vmm_view().unwrap();
        view.write_obj(0x1234_u64, GuestAddress(abi::BOOT_INFO_GPA)).unwrap();
        // The heap and the stack are not in any view: an error, not a fault.
        assert!(view.read_obj::<u64>(GuestAddress(abi::HEAP_GPA)).is_err());
        assert!(view.read_obj::<u64>(GuestAddress(abi::DEFAULT_RAM_SIZE - 8)).is_err());
        let window = ram.window_view().unwrap();
        assert!(window.read_obj::<u64>(GuestAddress(abi::BOOT_INFO_GPA)).is_err());
        window.write_obj(7_u64, GuestAddress(abi::DMA_WINDOW_GPA)).unwrap();
        assert_eq!(view.read_obj::<u64>(GuestAddress(abi::DMA_WINDOW_GPA)).unwrap(), 7);
        // The hidden part of the host range is not accessible memory.
        let hidden = ram.host_range().start + abi::HEAP_GPA;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| {
                let (a, b) = l.split_once(' ').unwrap().0.split_once('-').unwrap();
                let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
                (a..b).contains(&hidden)
            })
            .expect("the reservation is in the maps");
        assert!(line.contains(" ---p "), "the hidden part is mapped: {line}");
    }

    #[test]
    fn anonymous_fallback_maps_everything_and_says_so() {
        let Some(vm) = vm() else { return };
        let ram = GuestRam::with_backing(
            &vm,
            abi::DEFAULT_RAM_SIZE,
            abi::IMAGE_BASE_GPA + 0x5_0000,
            Backing::Anonymous,
        )
        .unwrap();
        assert_eq!(ram.backing(), Backing::Anonymous);
        assert_eq!(ram.mapped_bytes(), abi::DEFAULT_RAM_SIZE);
        // The devices still see only the window.
        let window = ram.window_view().unwrap();
        assert!(window.read_obj::<u64>(GuestAddress(abi::HEAP_GPA)).is_err());
        assert!(window.read_obj::<u64>(GuestAddress(abi::DMA_WINDOW_GPA)).is_ok());
    }

    #[test]
    fn anonymous_fallback_is_locked_as_it_is_touched() {
        let Some(vm) = vm() else { return };
        let ram = GuestRam::with_backing(
            &vm,
            abi::DEFAULT_RAM_SIZE,
            abi::IMAGE_BASE_GPA + 0x5_0000,
            Backing::Anonymous,
        )
        .unwrap();
        // Root (CAP_IPC_LOCK) or a unit with LimitMEMLOCK=64M can lock 16 MiB; a lower limit is
        // the documented "not mlocked" case, which this test cannot check.
        if ram.locking() == Locking::Unlocked {
            assert_ne!(
                std::env::var("CREDGUARD_REQUIRE_KVM").as_deref(),
                Ok("1"),
                "mlock2 failed (RLIMIT_MEMLOCK {})",
                memlock_limit()
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED: RLIMIT_MEMLOCK too low\n");
            return;
        }
        assert_eq!(ram.locking(), Locking::OnFault);
        let start = ram.host_range().start;
        let (rss, locked, flags) = smaps_of(start);
        // Locked on fault ("lf"), locked ("lo"), and out of core dumps ("dd").
        for flag in ["lo", "lf", "dd"] {
            assert!(flags.iter().any(|f| f == flag), "no {flag} in {flags:?}");
        }
        assert_eq!((rss, locked), (0, 0), "nothing is faulted in before it is touched");
        let view = ram.vmm_view().unwrap();
        for gpa in [abi::BOOT_INFO_GPA, abi::IMAGE_BASE_GPA, abi::DMA_WINDOW_GPA] {
            view.write_obj(1_u64, GuestAddress(gpa)).unwrap();
        }
        let (rss, locked, _) = smaps_of(start);
        assert!(rss >= 3 * 4, "three touched pages are resident: {rss} KiB");
        assert_eq!(locked, rss, "every resident page is locked");
        assert!(
            rss < abi::DEFAULT_RAM_SIZE / 1024 / 2,
            "touching three pages faulted in {rss} KiB of a 16 MiB guest"
        );
    }

    #[test]
    fn visible_ranges_cover_tables_image_and_window_only() {
        let r = visible_ranges(0x11_7090);
        assert_eq!(r[0], 0..abi::KERNEL_STACK_TOP);
        assert_eq!(r[1], abi::IMAGE_BASE_GPA..0x11_8000);
        assert_eq!(r[2].start, abi::DMA_WINDOW_GPA);
        assert!(r[2].end <= abi::HEAP_GPA, "the heap must be hidden");
        let mapped: u64 = r.iter().map(|r| r.end - r.start).sum();
        assert!(mapped < abi::DEFAULT_RAM_SIZE / 4);
    }
}
