//! `personas export` and `personas import`: personas to and from Character
//! Cards and JSON files (the mapping itself lives in `crate::interchange`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::registry_files::{display_path, load_registry};
use crate::cli::Outcome;
use crate::git::replay::{PersonaHistory, Replay, Version};
use crate::interchange::{
    CardMeta, CardSpec, ImportOptions, Imported, MAX_IMPORT_BYTES, PersonaDocument, export_card, import_persona,
};
use crate::persona::pin::Pin;
use crate::persona::settings::SETTINGS_FILE;
use crate::persona::snapshot::PERSONAS_DIR;
use crate::persona::{Persona, PersonaId, Slug};

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
    let (name, pin) = match command.reference.split_once('@') {
        Some((name, pin)) => (name, Some(pin.parse::<Pin>()?)),
        None => (command.reference, None),
    };
    let replay = Replay::of(command.repository, EXPORT_REVISION)?;
    let history = find_history(&replay, name)?;
    let version = pick_version(history, pin.as_ref(), name)?;
    let Some(persona) = version.persona.as_ref() else {
        bail!(
            "version {} of {name} is its deletion (commit {}); there is nothing to export",
            version.number,
            version.commit.short_id()
        );
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
                system_prompt: rendered_system_prompt(command.repository, persona, version)?,
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

/// The system prompt a card carries, rendered from the registry's prompt
/// template for this version. The renderer is not part of this build yet,
/// so cards carry an empty `system_prompt` (which the card specs define as
/// "use the front-end's own"); plug the renderer in here.
fn rendered_system_prompt(
    _repository: &Path,
    _persona: &Persona,
    _version: &Version,
) -> anyhow::Result<Option<String>> {
    Ok(None)
}

/// The persona a slug (current or former) or id names. A slug can have
/// named different personas over time; the one that bears it now wins.
fn find_history<'a>(replay: &'a Replay, name: &str) -> anyhow::Result<&'a PersonaHistory> {
    let known: Vec<&PersonaHistory> = replay
        .sorted()
        .into_iter()
        .filter(|history| history.is_known_as(name))
        .collect();
    let current: Vec<&PersonaHistory> = known
        .iter()
        .copied()
        .filter(|history| history.latest_slug() == Some(name) || history.id.to_string() == name.to_lowercase())
        .collect();
    match (known.as_slice(), current.as_slice()) {
        ([], _) => bail!("no persona with slug or id {name:?} in the history of {EXPORT_REVISION}"),
        ([only], _) | (_, [only]) => Ok(only),
        (several, _) => {
            let ids: Vec<String> = several.iter().map(|history| history.id.to_string()).collect();
            bail!(
                "{name:?} was the slug of several personas ({}); export one by its id",
                ids.join(", ")
            )
        }
    }
}

fn pick_version<'a>(history: &'a PersonaHistory, pin: Option<&Pin>, name: &str) -> anyhow::Result<&'a Version> {
    let versions = &history.versions;
    let version = match pin {
        None => {
            let last = versions.last().context("a persona history has at least one version")?;
            if last.persona.is_none() {
                let hint = match last.number {
                    1 => String::new(),
                    number => format!("; export an earlier version, e.g. {name}@{}", number - 1),
                };
                bail!(
                    "{name} was deleted in commit {} (version {}){hint}",
                    last.commit.short_id(),
                    last.number
                );
            }
            last
        }
        Some(Pin::Number(number)) => usize::try_from(*number)
            .ok()
            .and_then(|number| number.checked_sub(1))
            .and_then(|index| versions.get(index))
            .with_context(|| match versions.len() {
                1 => format!("{name} has only version 1; there is no version {number}"),
                count => format!("{name} has versions 1 to {count}; there is no version {number}"),
            })?,
        Some(Pin::Content(hash)) => versions
            .iter()
            .find(|version| version.content_hash.as_ref() == Some(hash))
            .with_context(|| format!("no version of {name} has the content hash {hash}"))?,
        Some(pin @ (Pin::Commit(_) | Pin::Tag(_))) => bail!(
            "export pins a version by number or sha256: content hash, and {pin} is a commit or tag; \
             `personas log {name}` lists the version numbers"
        ),
    };
    Ok(version)
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
