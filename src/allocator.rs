//! Which allocator serves the Rust heap: glibc's malloc for a process that
//! lives long, mimalloc for a batch command, chosen once at start.
//!
//! Measured at 10,000 personas on the 2-core machine:
//! - A full `build-site` makes and drops millions of small strings and
//!   buffers on both cores. With glibc it spent about a fifth of its CPU in
//!   malloc's bins (`_int_malloc`, `malloc_consolidate`): 83.7 to 85.4 s of
//!   user time against 56.7 to 64.3 s with mimalloc, and `bench site`'s full
//!   build took 58.5 s, 1.3× its copy floor, against 72.3 s, 1.7×.
//! - A server after `bench http` on kept data held 143.2 MiB with glibc (set
//!   up by [`crate::heap::settle_malloc_for_a_server`]) and 168.0 MiB with
//!   mimalloc (157.3 MiB with its purge delay at 0), at equal requests/s.
//!
//! So `serve` and `sync --watch` keep glibc, and the batch commands switch.
//! Blocks allocated before the switch stay glibc's: a free asks mimalloc
//! whether it owns the block (one page-map lookup) and hands the rest back
//! to glibc.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// The global allocator of the `personas` binary (see the module's docs).
pub struct PerCommandAllocator;

/// Set once, never cleared: a block mimalloc handed out is only ever freed
/// after the switch, so a free that sees `false` holds a glibc block.
static MIMALLOC_CHOSEN: AtomicBool = AtomicBool::new(false);

/// Serves the rest of this process's allocations from mimalloc. Called by a
/// batch command before its threads start.
pub fn choose_mimalloc_for_batch_work() {
    MIMALLOC_CHOSEN.store(true, Ordering::Relaxed);
}

fn mimalloc_chosen() -> bool {
    MIMALLOC_CHOSEN.load(Ordering::Relaxed)
}

#[allow(unsafe_code)]
fn owned_by_mimalloc(block: *mut u8) -> bool {
    // SAFETY: a read-only lookup in mimalloc's page map, made for any
    // pointer (mimalloc's own malloc override asks it of foreign blocks).
    unsafe { libmimalloc_sys::mi_is_in_heap_region(block.cast()) }
}

// SAFETY: every block goes back to the allocator that made it: mimalloc
// recognises its own blocks, and any other block came from glibc.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for PerCommandAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe {
            if mimalloc_chosen() {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if mimalloc_chosen() {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: `block` goes back to the allocator that made it.
        unsafe {
            if mimalloc_chosen() && owned_by_mimalloc(block) {
                MiMalloc.dealloc(block, layout)
            } else {
                System.dealloc(block, layout)
            }
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `block` is resized by the allocator that made it.
        unsafe {
            if mimalloc_chosen() && owned_by_mimalloc(block) {
                MiMalloc.realloc(block, layout, new_size)
            } else {
                System.realloc(block, layout, new_size)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_from_either_allocator_are_recognised_and_freed_by_their_own() {
        let layout = Layout::from_size_align(4096, 16).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: each block is allocated, checked and freed once, by its own allocator.
        unsafe {
            let from_glibc = System.alloc(layout);
            let from_mimalloc = MiMalloc.alloc(layout);
            assert!(!from_glibc.is_null() && !from_mimalloc.is_null());
            assert!(owned_by_mimalloc(from_mimalloc));
            assert!(!owned_by_mimalloc(from_glibc));
            // What the global allocator does with each after the switch.
            choose_mimalloc_for_batch_work();
            PerCommandAllocator.dealloc(from_glibc, layout);
            PerCommandAllocator.dealloc(from_mimalloc, layout);
        }
    }
}
