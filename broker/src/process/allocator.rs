//! The broker's memory allocator: the system's, except that allocations of 1 GiB and more
//! are mapped lazily (`MAP_NORESERVE`), so only the pages written take memory.
//!
//! Why: the Kafka protocol's message decoders (the `kafka-protocol` crate) size a list by
//! the element count a request declares before reading an element, so a request of a few
//! bytes that declares two billion elements asks for hundreds of gigabytes. The system
//! allocator refuses that and the process aborts, taking every client down. Mapped lazily,
//! the reservation costs nothing; the decoder then runs out of bytes, fails, and frees it,
//! and the broker closes that one connection. (Fixes that bound the count by the bytes
//! left are proposed upstream; this guard can go once a release has one.) Legitimate
//! allocations this large do not occur in a broker.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations this large or larger are mapped lazily.
const LAZY_FROM: usize = 1 << 30;
/// mmap's alignment.
const PAGE: usize = 4096;

/// The system allocator, with lazy mappings for huge allocations (see the module).
#[derive(Debug)]
pub struct Allocator;

fn lazy(layout: Layout) -> bool {
    layout.size() >= LAZY_FROM && layout.align() <= PAGE
}

#[allow(unsafe_code)]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
    // no existing memory; failure is reported as MAP_FAILED, turned into null below.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address.cast()
    }
}

// SAFETY: every block comes from the system allocator or from `map`, and goes back the same
// way: which one is decided by the layout alone (`lazy`), which the caller passes unchanged
// to dealloc and realloc, as GlobalAlloc requires. Mappings are page-aligned, and only
// layouts aligned to a page or less are mapped; their pages start zeroed.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(layout) {
            // SAFETY: `ptr` is a mapping of exactly `layout.size()` bytes made by `map`.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size, with the old alignment, is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (lazy(layout), lazy(new_layout)) {
            (false, false) => {
                // SAFETY: forwarded with the caller's guarantees.
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            (true, true) => {
                // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `map`; the
                // kernel moves its pages (none copied) to a mapping of `new_size`.
                let moved = unsafe {
                    libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE)
                };
                return if moved == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    moved.cast()
                };
            }
            _ => {}
        }
        // Across the threshold: a fresh block of the new layout, the old contents copied up
        // to the smaller size (below the threshold), and the old block freed the way it was
        // made.
        // SAFETY: as said.
        unsafe {
            let new = self.alloc(new_layout);
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
    #![allow(unsafe_code)]
    use super::*;

    #[test]
    fn a_huge_allocation_is_reserved_lazily_and_small_ones_are_the_systems() {
        // 256 GiB, more than the machine has: the system allocator would refuse it.
        let huge = Layout::from_size_align(256 << 30, 8).unwrap();
        // SAFETY: the layout is non-zero; the block is written inside its bounds and freed
        // with the same layout.
        unsafe {
            let block = Allocator.alloc(huge);
            assert!(!block.is_null());
            *block = 7;
            *block.add(huge.size() - 1) = 9;
            assert_eq!((*block, *block.add(huge.size() - 1)), (7, 9));
            let grown = Allocator.realloc(block, huge, huge.size() + PAGE);
            assert_eq!(*grown, 7);
            Allocator.dealloc(
                grown,
                Layout::from_size_align(huge.size() + PAGE, 8).unwrap(),
            );

            let small = Layout::from_size_align(64, 8).unwrap();
            let block = Allocator.alloc(small);
            *block = 1;
            let moved = Allocator.realloc(block, small, LAZY_FROM);
            assert_eq!(*moved, 1, "growing across the threshold keeps the contents");
            let back = Allocator.realloc(moved, Layout::from_size_align(LAZY_FROM, 8).unwrap(), 64);
            assert_eq!(*back, 1, "and so does shrinking back");
            Allocator.dealloc(back, small);
        }
    }

    #[test]
    fn a_vec_sized_by_a_made_up_count_does_not_abort() {
        // What a decoder does with a request declaring 2^31 elements of 96 bytes.
        #[derive(Clone, Copy)]
        #[allow(dead_code)]
        struct Element([u64; 12]);
        let layout = Layout::array::<Element>(1 << 31).unwrap();
        // SAFETY: as above.
        unsafe {
            let block = Allocator.alloc(layout);
            assert!(!block.is_null());
            Allocator.dealloc(block, layout);
        }
    }
}
