//! Page allocator for the DMA window: the only guest RAM the VMM's devices touch.
//!
//! Virtqueues (`dma_alloc`) and bounce buffers (`share`) both take whole pages from one bitmap, so
//! freed pages are reused and a long-running service never runs out. The window is small (512
//! pages) and in-flight buffers are few (8 receive buffers, a couple of transmit chains), so a
//! first-fit scan is plenty.

use credguard_proto::abi;

/// Pages in the DMA window.
pub const WINDOW_PAGES: usize = (abi::DMA_WINDOW_SIZE / abi::PAGE_SIZE) as usize;

const WORDS: usize = WINDOW_PAGES.div_ceil(64);

/// A first-fit allocator of contiguous page runs in [`abi::DMA_WINDOW_GPA`]..+[`abi::DMA_WINDOW_SIZE`].
#[derive(Debug, Clone)]
pub struct PageBitmap {
    used: [u64; WORDS],
}

impl Default for PageBitmap {
    fn default() -> Self {
        Self::new()
    }
}

/// Pages needed for `bytes` bytes (at least one).
pub const fn pages_for(bytes: usize) -> usize {
    if bytes == 0 {
        1
    } else {
        bytes.div_ceil(abi::PAGE_SIZE as usize)
    }
}

impl PageBitmap {
    /// All pages free.
    pub const fn new() -> Self {
        Self { used: [0; WORDS] }
    }

    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, page: usize, used: bool) {
        if used {
            self.used[page / 64] |= 1 << (page % 64);
        } else {
            self.used[page / 64] &= !(1 << (page % 64));
        }
    }

    /// Allocates `pages` contiguous pages; returns the guest-physical address of the first.
    pub fn alloc(&mut self, pages: usize) -> Option<u64> {
        if pages == 0 || pages > WINDOW_PAGES {
            return None;
        }
        let mut start = 0;
        while start + pages <= WINDOW_PAGES {
            match (start..start + pages).rev().find(|&p| self.is_used(p)) {
                Some(busy) => start = busy + 1,
                None => {
                    for p in start..start + pages {
                        self.set(p, true);
                    }
                    return Some(abi::DMA_WINDOW_GPA + (start as u64) * abi::PAGE_SIZE);
                }
            }
        }
        None
    }

    /// Frees `pages` pages at `gpa`, as returned by [`PageBitmap::alloc`]. Returns `false` (and
    /// changes nothing) if the range is not inside the window, not page-aligned, or not all allocated.
    pub fn free(&mut self, gpa: u64, pages: usize) -> bool {
        let Some(first) = Self::page_index(gpa) else {
            return false;
        };
        if pages == 0 || first + pages > WINDOW_PAGES || !(first..first + pages).all(|p| self.is_used(p)) {
            return false;
        }
        for p in first..first + pages {
            self.set(p, false);
        }
        true
    }

    /// Pages currently allocated.
    pub fn used_pages(&self) -> usize {
        self.used.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn page_index(gpa: u64) -> Option<usize> {
        let off = gpa.checked_sub(abi::DMA_WINDOW_GPA)?;
        if off % abi::PAGE_SIZE != 0 || off >= abi::DMA_WINDOW_SIZE {
            return None;
        }
        Some((off / abi::PAGE_SIZE) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = abi::DMA_WINDOW_GPA;
    const P: u64 = abi::PAGE_SIZE;

    #[test]
    fn first_fit_and_reuse() {
        let mut b = PageBitmap::new();
        assert_eq!(b.alloc(2), Some(BASE));
        assert_eq!(b.alloc(1), Some(BASE + 2 * P));
        assert_eq!(b.alloc(3), Some(BASE + 3 * P));
        assert!(b.free(BASE, 2));
        assert_eq!(b.alloc(3), Some(BASE + 6 * P), "a 2-page hole does not fit 3 pages");
        assert_eq!(b.alloc(2), Some(BASE));
        assert_eq!(b.used_pages(), 9);
    }

    #[test]
    fn exhaustion_and_bad_frees() {
        let mut b = PageBitmap::new();
        assert_eq!(b.alloc(WINDOW_PAGES), Some(BASE));
        assert_eq!(b.alloc(1), None);
        assert!(!b.free(BASE + 1, 1), "unaligned");
        assert!(!b.free(BASE - P, 1), "below the window");
        assert!(!b.free(BASE + abi::DMA_WINDOW_SIZE, 1), "above the window");
        assert!(b.free(BASE + P, 1));
        assert!(!b.free(BASE + P, 1), "double free");
        assert!(!b.free(BASE, 2), "partly free range");
        assert_eq!(b.alloc(2), None);
        assert_eq!(b.alloc(1), Some(BASE + P));
        assert_eq!(b.alloc(0), None);
        assert_eq!(b.alloc(WINDOW_PAGES + 1), None);
    }

    #[test]
    fn steady_state_never_leaks() {
        let mut b = PageBitmap::new();
        for i in 0..100_000usize {
            let n = 1 + i % 3;
            let a = b.alloc(n).unwrap();
            assert!(b.free(a, n));
        }
        assert_eq!(b.used_pages(), 0);
        assert_eq!(pages_for(0), 1);
        assert_eq!(pages_for(4096), 1);
        assert_eq!(pages_for(4097), 2);
    }
}
