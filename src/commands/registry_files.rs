//! Reading a registry directory from the file system into memory.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::persona::settings::SETTINGS_FILE;
use crate::persona::snapshot::{PERSONAS_DIR, PROFILES_DIR};
use crate::persona::source::MAX_FILE_BYTES;
use crate::persona::{Snapshot, SourceFile};

/// Reads at most one byte more than the limit for registry files, so an
/// oversized file is recognised without being read whole.
pub fn read_limited(path: &Path) -> anyhow::Result<Vec<u8>> {
    read_up_to(path, MAX_FILE_BYTES)
}

/// [`read_limited`] with the limit of a file that has its own (the labels file).
pub fn read_up_to(path: &Path, limit: usize) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// A path as the user would type it: `registry/personas/x.toml`, not `./registry//personas/x.toml`.
pub fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    let mut cleaned: Vec<&str> = Vec::new();
    for part in text.split('/') {
        if part == "." && !cleaned.is_empty() {
            continue;
        }
        if part.is_empty() && !cleaned.is_empty() {
            continue;
        }
        cleaned.push(part);
    }
    let joined = cleaned.join("/");
    joined.strip_prefix("./").map(str::to_string).unwrap_or(joined)
}

/// The nearest directory at or above `start` that holds a `registry.toml`,
/// spelled relative to `start` where possible so diagnostics keep the user's paths.
pub fn find_registry_root(start: &Path) -> Option<PathBuf> {
    let start = if start.is_file() { start.parent()? } else { start };
    let start = if start.as_os_str().is_empty() {
        Path::new(".")
    } else {
        start
    };
    for directory in start.ancestors() {
        let directory = if directory.as_os_str().is_empty() {
            Path::new(".")
        } else {
            directory
        };
        if directory.join(SETTINGS_FILE).is_file() {
            return Some(directory.to_path_buf());
        }
    }
    let absolute = std::path::absolute(start).ok()?;
    absolute
        .ancestors()
        .find(|directory| directory.join(SETTINGS_FILE).is_file())
        .map(Path::to_path_buf)
}

/// Loads and validates the whole registry rooted at `root`.
pub fn load_registry(root: &Path) -> anyhow::Result<Snapshot> {
    let mut files = Vec::new();
    let settings = root.join(SETTINGS_FILE);
    if settings.is_file() {
        files.push(source_file(&settings, SETTINGS_FILE.to_string())?);
    }
    for directory in [PERSONAS_DIR, PROFILES_DIR] {
        let path = root.join(directory);
        if !path.is_dir() {
            continue;
        }
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", path.display()))?;
        entries.sort();
        for entry in entries {
            let is_toml = entry.extension().is_some_and(|extension| extension == "toml");
            if is_toml && entry.is_file() {
                let name = entry
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.push(source_file(&entry, format!("{directory}/{name}"))?);
            }
        }
    }
    Ok(Snapshot::build(files, &display_path(&settings)))
}

fn source_file(path: &Path, relative_path: String) -> anyhow::Result<SourceFile> {
    Ok(SourceFile {
        display_path: display_path(path),
        relative_path,
        bytes: read_limited(path)?,
    })
}
