//! A global allocator that wipes every block before it is freed or moved.
//!
//! The proxy relays secrets (a logon's password or NT hash) through buffers it does not own:
//! hyper's and h2's read buffers, prost's decoded messages, tonic's frames. The proxy wipes the
//! copies it holds itself, but the others are freed with their contents intact, and freed heap
//! memory stays readable (a core dump, `/proc/PID/mem`, a later bug) until reused. With this
//! allocator nothing that was freed keeps its bytes: `dealloc` zeroes the block, and `realloc`
//! moves through a fresh block so the old one is zeroed too. The cost is a `memset` per free.
//!
//! Install it with `#[global_allocator]` in each binary that runs the proxy: `credguard-lsa-proxy`.

use std::alloc::{GlobalAlloc, Layout, System};

/// The wiping allocator (over the system allocator).
#[derive(Debug, Default, Clone, Copy)]
pub struct WipingAllocator;

/// Zeroes `len` bytes at `ptr` in a way the compiler cannot drop as a dead store before `free`.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: per the caller.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    // The pointer escapes: the stores above must happen.
    std::hint::black_box(ptr);
}

// SAFETY: every method forwards to `System` with the same layouts; `dealloc` and `realloc` only
// add writes to memory the caller owns and is giving back.
unsafe impl GlobalAlloc for WipingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller owns the block of `layout.size()` bytes at `ptr` and gives it back.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to `layout.align()`, does not
        // overflow isize (GlobalAlloc::realloc's contract), so the layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block; on success the old one is copied out, then wiped and freed.
        unsafe {
            let new = System.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_grow() {
        let a = WipingAllocator;
        let layout = Layout::from_size_align(64, 16).unwrap();
        // SAFETY: plain allocator calls with matching layouts.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(0xab, 64);
            let q = a.realloc(p, layout, 4096);
            assert!(!q.is_null());
            assert_eq!(*q.add(63), 0xab);
            a.dealloc(q, Layout::from_size_align(4096, 16).unwrap());
        }
    }
}
