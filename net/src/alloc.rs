//! A global allocator that turns absurd allocations into lazy reservations.
//!
//! Why: `kafka-protocol` 0.18 decodes an array by calling `Vec::with_capacity(n)` with `n` read
//! straight off the wire (upstream PRs #152/#161/#200 fix it but are not released). Eight bytes
//! claiming two billion elements ask for tens of GiB up front; the kernel refuses, and Rust aborts
//! the whole broker. Oxbow caps every request at `kafka_frame_bytes_max` (far below
//! [`RESERVE_ABOVE_BYTES`]), so no legitimate allocation is that large. Allocations above it are
//! served by `mmap(MAP_NORESERVE)`: address space only, no memory is committed until touched.
//! The decoder then fails on the missing bytes, the vector is dropped and unmapped, and the
//! connection gets a clear error instead of the process dying. This is a mitigation: once the
//! decoder rejects impossible lengths itself, it becomes dead weight.
//!
//! Install it in a binary with `#[global_allocator] static A: ReservingAllocator = ReservingAllocator;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are lazy reservations (see the module docs).
pub const RESERVE_ABOVE_BYTES: usize = 1 << 30;

/// The system allocator, except that huge allocations are `MAP_NORESERVE` mappings.
pub struct ReservingAllocator;

const PAGE_BYTES: usize = 4096;

// SAFETY: small allocations are delegated to `System` unchanged; large ones are fresh anonymous
// mappings, page-aligned (so any alignment up to a page is honoured), returned null on failure
// and unmapped with the same length on dealloc. Larger alignments go to `System`.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < RESERVE_ABOVE_BYTES || layout.align() > PAGE_BYTES {
            return unsafe { System.alloc(layout) };
        }
        let mapped = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            mapped.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < RESERVE_ABOVE_BYTES || layout.align() > PAGE_BYTES {
            return unsafe { System.dealloc(ptr, layout) };
        }
        unsafe {
            libc::munmap(ptr.cast(), layout.size());
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < RESERVE_ABOVE_BYTES || layout.align() > PAGE_BYTES {
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Fresh anonymous mappings are zero-filled.
        unsafe { self.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let small = |size: usize| size < RESERVE_ABOVE_BYTES || layout.align() > PAGE_BYTES;
        if small(layout.size()) && small(new_size) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Hands freed heap memory back to the kernel. glibc keeps what a burst of connections freed in
/// its arenas; after a flood that would stay resident for the life of the process. Called when
/// a shard's last connection closes (cheap when there is nothing to give back).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
