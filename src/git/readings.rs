//! The readings of a registry's persona files, saved on disk by a process
//! that walked the history, for the next process that must prime a walk at
//! a commit: `build-site` and `sync` after one new commit would otherwise
//! read and validate every file of the registry first (0.7 s of a build
//! after one commit, at 10,000 personas).
//!
//! A reading is a function of the file's path, its blob, the registry's
//! settings and the program that validated it, so a saved one is reused only
//! when all four are the same; anything else (another program, a file that
//! cannot be read, other settings, another blob) is read afresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gix::ObjectId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::history::{KnownReadings, ResumePoint, TrackedFile, ValidFile};
use crate::persona::ContentHash;
use crate::persona::settings::RegistrySettings;
use crate::persona::validate::FileReading;

/// Where a data directory keeps the readings this program makes: a file
/// named by the program, so that whether there are any is one look at the
/// directory. `None` when the program cannot tell what it is.
pub fn location(data_dir: &Path) -> Option<PathBuf> {
    let digest = Sha256::digest(program_identity()?.as_bytes());
    let name: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    Some(data_dir.join(DIRECTORY).join(format!("{name}.json")))
}

const DIRECTORY: &str = "file-readings";

/// Bumped when the saved form changes meaning.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SavedReadings {
    format: u32,
    program: String,
    settings: RegistrySettings,
    files: Vec<SavedFile>,
}

#[derive(Serialize, Deserialize)]
struct SavedFile {
    path: String,
    blob: String,
    reading: FileReading,
    valid: Option<SavedValid>,
}

#[derive(Serialize, Deserialize)]
struct SavedValid {
    hash: ContentHash,
    slug: String,
    name: String,
}

/// The running program, as far as its validation goes: a rebuilt or another
/// binary may validate differently, and its file differs in size or time.
fn program_identity() -> Option<String> {
    let program = std::env::current_exe().ok()?;
    let metadata = std::fs::metadata(&program).ok()?;
    let modified = metadata.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!(
        "{} {} {} {}",
        env!("CARGO_PKG_VERSION"),
        program.display(),
        metadata.len(),
        modified.as_nanos()
    ))
}

/// The readings saved at `path`, if there are any this program can trust.
pub fn load(path: &Path) -> Option<KnownReadings> {
    let bytes = std::fs::read(path).ok()?;
    let saved: SavedReadings = match serde_json::from_slice(&bytes) {
        Ok(saved) => saved,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring unreadable saved file readings");
            return None;
        }
    };
    if saved.format != FORMAT || Some(saved.program) != program_identity() {
        return None;
    }
    let mut files = HashMap::with_capacity(saved.files.len());
    for file in saved.files {
        let Ok(blob) = ObjectId::from_hex(file.blob.as_bytes()) else {
            tracing::warn!(path = %path.display(), "ignoring saved file readings with a malformed blob id");
            return None;
        };
        let valid = file.valid.map(|valid| ValidFile {
            hash: valid.hash,
            slug: Arc::from(valid.slug),
            name: Arc::from(valid.name),
        });
        let tracked = TrackedFile {
            reading: file.reading,
            blob: Some(blob),
            valid,
        };
        files.insert(file.path, tracked);
    }
    Some(KnownReadings {
        settings: saved.settings,
        files,
    })
}

/// Saves the readings of the registry at `point` to `path` (through a
/// rename, so a concurrent reader sees the old file or the new one).
pub fn save(path: &Path, point: &ResumePoint) -> std::io::Result<()> {
    let Some(program) = program_identity() else {
        return Ok(());
    };
    let (settings, tracked) = point.readings();
    let files = tracked
        .filter_map(|(path, file)| {
            // Links and submodules have no blob to key them by; they are cheap to refuse again.
            let blob = file.blob?;
            Some(SavedFile {
                path: path.to_string(),
                blob: blob.to_string(),
                reading: file.reading.clone(),
                valid: file.valid.as_ref().map(|valid| SavedValid {
                    hash: valid.hash,
                    slug: valid.slug.to_string(),
                    name: valid.name.to_string(),
                }),
            })
        })
        .collect();
    let saved = SavedReadings {
        format: FORMAT,
        program,
        settings: settings.clone(),
        files,
    };
    let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)?;
    // Those of other programs (earlier builds) would never be read again.
    if let Some(directory) = path.parent() {
        for entry in std::fs::read_dir(directory)?.flatten() {
            if entry.path() != path {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}
