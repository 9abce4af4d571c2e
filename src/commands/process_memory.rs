//! A process's memory as the kernel counts it (`/proc/PID/status`,
//! `smaps` and `smaps_rollup`), for the benchmarks' memory lines.

use std::path::Path;

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

/// The process's proportional set size in KiB (`/proc/PID/smaps_rollup`):
/// a page mapped twice (qdrant-edge maps its vectors once for random and
/// once for sequential reads) or shared with another process counts once,
/// split between its mappings, where RSS counts it at every mapping.
pub fn proportional_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Resident memory in KiB by what is mapped (`/proc/PID/smaps`): each
/// mapped file by name (the binary, each shared library, the index's files
/// under one label per directory), and anonymous memory as one entry, largest
/// first. The status line says how much; this says where it is.
pub fn resident_by_mapping(pid: u32) -> Option<Vec<(String, u64)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut totals: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut current = String::from("anonymous");
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            // A mapping's header: address perms offset dev inode [path].
            let path = fields.nth(4).unwrap_or_default();
            current = mapping_label(path);
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|value| value.parse().ok()).unwrap_or(0);
            *totals.entry(current.clone()).or_default() += kib;
        }
    }
    let mut entries: Vec<(String, u64)> = totals.into_iter().filter(|(_, kib)| *kib > 0).collect();
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Some(entries)
}

/// A mapping's label: anonymous memory (heap, stacks, arenas) is one entry;
/// a shared library or the binary is its file name; other files (the
/// index's mmaps) are grouped by their directory's name.
fn mapping_label(path: &str) -> String {
    if path.is_empty() || (path.starts_with('[') && path != "[vdso]" && path != "[vvar]") {
        return "anonymous".into();
    }
    let file = Path::new(path);
    let name = file.file_name().and_then(|name| name.to_str()).unwrap_or(path);
    if name.contains(".so") || std::env::current_exe().is_ok_and(|exe| exe == file) {
        return name.to_string();
    }
    match file
        .parent()
        .and_then(|parent| parent.file_name())
        .and_then(|name| name.to_str())
    {
        Some(directory) => format!("files in {directory}/"),
        None => name.to_string(),
    }
}

/// KiB as MiB, for printing.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
