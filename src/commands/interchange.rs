//! `personas export` and `personas import`: personas to and from Character
//! Cards and JSON files (the mapping itself lives in `crate::interchange`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::registry_files::{display_path, load_registry};
use crate::cli::Outcome;
use crate::git::replay::Replay;
use crate::interchange::{
    CardMeta, CardSpec, ImportOptions, Imported, MAX_IMPORT_BYTES, PersonaDocument, export_card, import_persona,
};
use crate::persona::settings::SETTINGS_FILE;
use crate::persona::snapshot::PERSONAS_DIR;
use crate::persona::{PersonaId, Slug};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Character Card V2 (`chara_card_v2`).
    CardV2,
    /// Character Card V3 (`chara_card_v3`), with belief citations in `source`.
    CardV3,
    /// The registry's canonical persona JSON with its id, version and content hash.
    Json,
}

pub struct ExportCommand<'a> {
    /// `SLUG`, `SLUG@3`, `SLUG@sha256:…`, or an id in place of the slug.
    pub reference: &'a str,
    pub format: ExportFormat,
    pub repository: &'a Path,
    pub out: Option<&'a Path>,
}

/// The revision export reads; pins name versions within its history.
const EXPORT_REVISION: &str = "HEAD";

pub fn export(command: ExportCommand<'_>) -> anyhow::Result<Outcome> {
    let replay = Replay::of(command.repository, EXPORT_REVISION)?;
    let (history, version) = replay.locate(command.repository, command.reference)?;
    let Some(persona) = version.persona.as_ref() else {
        bail!("{} names a deletion; there is nothing to export", command.reference);
    };
    let json = match command.format {
        ExportFormat::Json => PersonaDocument::new(persona, version.number).to_json(),
        ExportFormat::CardV2 | ExportFormat::CardV3 => {
            let spec = if command.format == ExportFormat::CardV2 {
                CardSpec::V2
            } else {
                CardSpec::V3
            };
            let meta = CardMeta {
                version: version.number,
                system_prompt: rendered_system_prompt(&replay, command.repository, command.reference)?,
                creator: Some(version.commit.author_name.clone()),
                created_at: history
                    .versions
                    .first()
                    .map(|first| first.commit.committed_at.timestamp()),
                modified_at: Some(version.commit.committed_at.timestamp()),
            };
            export_card(persona, spec, &meta)
        }
    };
    let mut text = serde_json::to_string_pretty(&json)?;
    text.push('\n');
    match command.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} ({} version {})",
                display_path(path),
                persona.slug,
                version.number
            );
        }
        None => print!("{text}"),
    }
    Ok(Outcome::Clean)
}

/// The system prompt a card carries: the registry's template rendered for
/// this version in its default mode (see `personas prompt`).
fn rendered_system_prompt(replay: &Replay, repository: &Path, reference: &str) -> anyhow::Result<Option<String>> {
    match super::prompt::render(replay, repository, reference, None, None) {
        Ok(record) => Ok(Some(record.prompt)),
        // A registry without a template still exports; the card then leaves
        // the prompt to the front-end, as the card specs allow.
        Err(error) if error.is::<super::prompt::NoTemplate>() => {
            eprintln!("note: {error}; the card's system_prompt is empty");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

pub struct ImportCommand<'a> {
    /// Files, or directories whose `*.json` and `*.png` files are imported.
    pub inputs: &'a [PathBuf],
    pub slug: Option<&'a str>,
    pub registry: &'a Path,
    /// Overwrite an existing file of the same slug.
    pub force: bool,
}

pub fn import(command: ImportCommand<'_>) -> anyhow::Result<Outcome> {
    if !command.registry.join(SETTINGS_FILE).is_file() {
        bail!(
            "{} is not a registry: it has no {SETTINGS_FILE} (pass --registry DIR)",
            command.registry.display()
        );
    }
    let mut failures = 0usize;
    let mut files: Vec<PathBuf> = Vec::new();
    for input in command.inputs {
        match expand(input) {
            Ok(found) => files.extend(found),
            Err(error) => {
                eprintln!("error: {error:#}");
                failures += 1;
            }
        }
    }
    let options = ImportOptions {
        slug: match command.slug {
            Some(text) => {
                if files.len() + failures != 1 {
                    bail!(
                        "--slug names one persona, but {} files were given",
                        files.len() + failures
                    );
                }
                Some(text.parse::<Slug>()?)
            }
            None => None,
        },
    };
    let snapshot = load_registry(command.registry)?;
    let settings = snapshot
        .settings
        .clone()
        .unwrap_or_else(crate::persona::RegistrySettings::permissive);
    // Which file holds each id, so an import cannot give a second file the same id.
    let mut claims: BTreeMap<PersonaId, String> = snapshot
        .personas
        .iter()
        .filter_map(|parsed| parsed.id.map(|id| (id, parsed.file.clone())))
        .collect();
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut imported = 0usize;
    for file in &files {
        let shown = display_path(file);
        let result = read_bounded(file).and_then(|bytes| {
            let import = import_persona(&shown, &bytes, &options, &settings)?;
            let target = write_target(command.registry, &import, &claims, &written, command.force)?;
            Ok((import, target))
        });
        match result {
            Ok((import, target)) => {
                let how = if import.restored { ", lossless" } else { "" };
                let container = if import.from_png { " in a PNG" } else { "" };
                println!("{shown} → {target} ({}{container}{how})", import.format);
                for note in &import.notes {
                    println!("  note: {note}");
                }
                claims.insert(import.persona.id, target.clone());
                written.insert(target);
                imported += 1;
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                failures += 1;
            }
        }
    }
    eprintln!(
        "imported {imported} of {} file{}",
        imported + failures,
        if imported + failures == 1 { "" } else { "s" }
    );
    Ok(if failures == 0 {
        Outcome::Clean
    } else {
        Outcome::Invalid
    })
}

/// A directory stands for its `*.json` and `*.png` files (not recursively), in name order.
fn expand(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !input.is_dir() {
        if !input.exists() {
            bail!("{} does not exist", input.display());
        }
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("cannot list {}", input.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", input.display()))?;
    files.retain(|path| {
        let importable = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| extension.eq_ignore_ascii_case("json") || extension.eq_ignore_ascii_case("png"));
        importable && path.is_file()
    });
    files.sort();
    if files.is_empty() {
        bail!("{} has no .json or .png files to import", input.display());
    }
    Ok(files)
}

/// Reads at most one byte past the limit, so an oversized file is refused
/// by `import_persona` without being read whole.
fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_IMPORT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// Writes the persona's file unless that would overwrite one (without
/// `--force`), replace one written earlier in this run, or give a second
/// file an id another already has. Returns the path written.
fn write_target(
    registry: &Path,
    import: &Imported,
    claims: &BTreeMap<PersonaId, String>,
    written: &BTreeSet<String>,
    force: bool,
) -> anyhow::Result<String> {
    let path = registry
        .join(PERSONAS_DIR)
        .join(format!("{}.toml", import.persona.slug));
    let target = display_path(&path);
    if written.contains(&target) {
        bail!("{target} was written from another file in this import; give this one its own --slug");
    }
    if let Some(owner) = claims.get(&import.persona.id)
        && *owner != target
    {
        bail!(
            "id {} already belongs to {owner}; importing it as {target} would give two files one persona \
             (import it under that file's slug with --force to replace it)",
            import.persona.id
        );
    }
    if path.exists() && !force {
        bail!("{target} exists; pass --force to overwrite it");
    }
    std::fs::create_dir_all(registry.join(PERSONAS_DIR))
        .with_context(|| format!("cannot create {}", registry.join(PERSONAS_DIR).display()))?;
    let mut file = if force {
        File::create(&path)
    } else {
        OpenOptions::new().write(true).create_new(true).open(&path)
    }
    .with_context(|| format!("cannot create {target}"))?;
    file.write_all(import.toml.as_bytes())
        .with_context(|| format!("cannot write {target}"))?;
    Ok(target)
}
