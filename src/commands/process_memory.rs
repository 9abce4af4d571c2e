//! A process's memory as the kernel counts it (`/proc/PID/status`), for the
//! benchmarks' RSS lines.

use serde::{Deserialize, Serialize};

/// Resident memory in KiB: all of it, its peak, and the anonymous part
/// (heap and arenas, as opposed to mapped files such as the binary).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcessMemory {
    pub rss_kib: u64,
    pub peak_kib: u64,
    pub anonymous_kib: u64,
}

impl ProcessMemory {
    pub fn of(pid: u32) -> Option<ProcessMemory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.split_whitespace().next()?.parse().ok())
        };
        Some(ProcessMemory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            anonymous_kib: field("RssAnon:")?,
        })
    }

    pub fn of_this_process() -> Option<ProcessMemory> {
        ProcessMemory::of(std::process::id())
    }
}

/// KiB as MiB, for printing.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
