//! `virtio-drivers`' `Hal` for the enclave: identity mapping, and every byte the device touches
//! inside the DMA window (`abi::DMA_WINDOW_GPA`, the only guest RAM the VMM's devices may access).
//!
//! `dma_alloc` (virtqueue rings) takes zeroed pages from the window; `share` copies a driver buffer
//! into freshly allocated window pages (a bounce buffer) and `unshare` copies device-written data
//! back and frees them. So the host never sees the heap or stack, and data the driver reads from
//! the device is private once copied out (no double-fetch from shared memory).

use core::ptr::{self, NonNull};

use credguard_enclave::dma::{PageBitmap, pages_for};
use credguard_proto::abi;
use spinning_top::Spinlock;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

static WINDOW: Spinlock<PageBitmap> = Spinlock::new(PageBitmap::new());

/// The enclave's `Hal`.
pub struct EnclaveHal;

// SAFETY: pages come from the identity-mapped DMA window, which nothing else in the enclave uses;
// the bitmap hands each page out at most once until it is freed.
unsafe impl Hal for EnclaveHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match WINDOW.lock().alloc(pages) {
            Some(gpa) => {
                // SAFETY: the pages are in the mapped DMA window and now ours alone.
                unsafe { ptr::write_bytes(gpa as *mut u8, 0, pages * abi::PAGE_SIZE as usize) };
                (gpa, NonNull::new(gpa as *mut u8).expect("window is not at 0"))
            }
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        if WINDOW.lock().free(paddr, pages) { 0 } else { -1 }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO is not at 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let Some(gpa) = WINDOW.lock().alloc(pages_for(len)) else {
            // In-flight buffers are bounded (8 receive buffers, one transmit chain at a time), so
            // this means a driver bug, not host input.
            panic!("DMA window exhausted ({len} bytes to share)");
        };
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller guarantees the buffer is valid; the bounce pages are ours.
            unsafe { ptr::copy_nonoverlapping(buffer.as_ptr() as *const u8, gpa as *mut u8, len) };
        }
        gpa
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce buffer `share` made for this buffer, of `len` bytes.
            unsafe { ptr::copy_nonoverlapping(paddr as *const u8, buffer.as_ptr() as *mut u8, len) };
        }
        // The VMM can read the window: wipe what the bounce pages carried (a logon's password, a
        // reply) before they go back to the pool, in both directions.
        for i in 0..len {
            // SAFETY: the bounce pages are ours until freed just below; volatile so the wipe of
            // memory about to be freed is not elided.
            unsafe { ptr::write_volatile((paddr as *mut u8).add(i), 0) };
        }
        let freed = WINDOW.lock().free(paddr, pages_for(len));
        debug_assert!(freed, "unshare of a buffer that was not shared");
    }
}
