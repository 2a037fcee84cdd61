//! Checks of the [`BootInfo`] the VMM hands over before anything relies on it.

use credguard_proto::abi::{self, BootInfo, BootMode};

/// Why the enclave refuses a boot info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BootInfoError {
    /// `magic` is not [`abi::BOOT_MAGIC`].
    #[error("boot info magic {0:#018x} is not {magic:#018x} (\"CGBOOT01\")", magic = abi::BOOT_MAGIC)]
    BadMagic(u64),
    /// `abi_version` is not [`abi::ABI_VERSION`].
    #[error("boot ABI version {0} is not the version {ours} this enclave was built for", ours = abi::ABI_VERSION)]
    BadVersion(u64),
    /// `boot_mode` is no [`BootMode`].
    #[error("unknown boot mode {0}")]
    BadMode(u64),
    /// The heap overlaps the image, the DMA window or the stack, or lies outside RAM.
    #[error("heap {start:#x}+{size:#x} does not fit the guest layout")]
    BadHeap {
        /// `heap_start`.
        start: u64,
        /// `heap_size`.
        size: u64,
    },
    /// The user stack top is outside RAM or not 16-byte aligned.
    #[error("user stack top {0:#x} is not usable")]
    BadStack(u64),
}

/// Smallest heap the enclave accepts.
pub const MIN_HEAP_SIZE: u64 = 256 << 10;

/// Checks `info` and returns its boot mode.
pub fn check(info: &BootInfo) -> Result<BootMode, BootInfoError> {
    if info.magic != abi::BOOT_MAGIC {
        return Err(BootInfoError::BadMagic(info.magic));
    }
    if info.abi_version != abi::ABI_VERSION {
        return Err(BootInfoError::BadVersion(info.abi_version));
    }
    let mode = BootMode::from_raw(info.boot_mode).ok_or(BootInfoError::BadMode(info.boot_mode))?;
    let stack_top = info.user_stack_top;
    if !stack_top.is_multiple_of(16) || stack_top > info.ram_size || stack_top < abi::HEAP_GPA + abi::USER_STACK_SIZE {
        return Err(BootInfoError::BadStack(stack_top));
    }
    let heap_end = info.heap_start.checked_add(info.heap_size);
    let heap_ok = info.heap_start >= abi::DMA_WINDOW_GPA + abi::DMA_WINDOW_SIZE
        && info.heap_size >= MIN_HEAP_SIZE
        && heap_end.is_some_and(|end| end <= stack_top - abi::USER_STACK_SIZE);
    if !heap_ok {
        return Err(BootInfoError::BadHeap {
            start: info.heap_start,
            size: info.heap_size,
        });
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn good() -> BootInfo {
        BootInfo::new(abi::DEFAULT_RAM_SIZE, 2_000_000, BootMode::Service, 0, 1, [0; 48])
    }

    #[test]
    fn accepts_what_the_abi_builds() {
        assert_eq!(check(&good()), Ok(BootMode::Service));
        let min = BootInfo::new(abi::MIN_RAM_SIZE, 1, BootMode::DoorbellBench, 9, 1, [0; 48]);
        assert_eq!(check(&min), Ok(BootMode::DoorbellBench));
    }

    #[test]
    fn refuses_wrong_magic_version_mode() {
        let mut i = good();
        i.magic = 1;
        assert_eq!(check(&i), Err(BootInfoError::BadMagic(1)));
        assert!(check(&i).unwrap_err().to_string().contains("CGBOOT01"));
        let mut i = good();
        i.abi_version = abi::ABI_VERSION - 1;
        assert_eq!(check(&i), Err(BootInfoError::BadVersion(abi::ABI_VERSION - 1)));
        i.abi_version = abi::ABI_VERSION + 1;
        assert_eq!(check(&i), Err(BootInfoError::BadVersion(abi::ABI_VERSION + 1)));
        let mut i = good();
        i.boot_mode = 9;
        assert_eq!(check(&i), Err(BootInfoError::BadMode(9)));
    }

    #[test]
    fn refuses_overlapping_heap() {
        let mut i = good();
        i.heap_start = abi::DMA_WINDOW_GPA;
        assert!(matches!(check(&i), Err(BootInfoError::BadHeap { .. })));
        let mut i = good();
        i.heap_size += 4096;
        assert!(matches!(check(&i), Err(BootInfoError::BadHeap { .. })));
        let mut i = good();
        i.heap_size = u64::MAX;
        assert!(matches!(check(&i), Err(BootInfoError::BadHeap { .. })));
        let mut i = good();
        i.user_stack_top += 8;
        assert!(matches!(check(&i), Err(BootInfoError::BadStack(_))));
    }
}
