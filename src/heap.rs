//! How the process's heap gives memory back to the system: the crate's
//! only calls into the C library (glibc has no safe bindings for them).
//! glibc's malloc serves the Rust heap of the long-lived processes (`serve`,
//! `sync --watch`: see [`crate::allocator`]) and, in every process, ONNX
//! Runtime's buffers.
//!
//! glibc's malloc keeps the pages a burst freed in its per-thread arenas, so
//! a server's memory stayed at its high-water mark long after the work was
//! done. The bursts here are few and known: a batch of forward passes (ONNX
//! Runtime's buffers come from malloc), and a sync that read the whole
//! registry to prime its state. Measured at 10,000 personas: a server that
//! had just embedded 500 kept 129 MiB of anonymous memory without a trim and
//! 119 MiB with it. And a long-lived server's malloc is set up so that a
//! burst's large buffers are not kept at all.

/// Returns the heap pages malloc holds free, once a burst is over, on
/// tokio's blocking pool: the trim walks every arena under its lock, which
/// must not stall an async worker.
pub fn return_freed_heap_after_burst() {
    tokio::task::spawn_blocking(return_freed_heap);
}

/// Settles how malloc holds memory for a process that lives long and serves
/// requests on a few threads: at most two arenas, and blocks of 128 KiB or
/// more in mappings of their own, so a burst's large buffers (a sync's
/// batches, the embedder's tensors) go back to the system when freed instead
/// of leaving holes in an arena. Measured by `bench http` at 10,000 personas:
/// the server's anonymous memory fell from 80.6 to 74.7 MiB with requests/s
/// unchanged; one arena cost a fifth of the pinned answers' throughput.
/// A `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the environment is
/// the operator's choice and is left to glibc. Call it before any thread
/// starts.
pub fn settle_malloc_for_a_server() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        set_malloc_option(MallocOption::ArenaMax, 2);
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        set_malloc_option(MallocOption::MmapThreshold, 128 * 1024);
    }
}

enum MallocOption {
    ArenaMax,
    MmapThreshold,
}

#[allow(unsafe_code)]
fn set_malloc_option(option: MallocOption, value: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let parameter = match option {
            MallocOption::ArenaMax => libc::M_ARENA_MAX,
            MallocOption::MmapThreshold => libc::M_MMAP_THRESHOLD,
        };
        // SAFETY: mallopt only changes glibc's allocation policy for later
        // calls; it is called before the runtime's threads exist.
        unsafe {
            libc::mallopt(parameter, value);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (option, value);
}

/// Returns the heap pages malloc holds free, on this thread, now.
#[allow(unsafe_code)]
pub fn return_freed_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks;
    // any thread may call it at any time.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}
