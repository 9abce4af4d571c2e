//! `personas check`: validate registries or single files.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::registry_files::{display_path, find_registry_root, load_registry, read_limited};
use crate::cli::Outcome;
use crate::persona::diagnostic::render;
use crate::persona::prompt::{PROMPT_FILE, check_template};
use crate::persona::settings::SETTINGS_FILE;
use crate::persona::{Diagnostic, OutputFormat, RegistrySettings, validate_persona};

pub fn run(paths: &[PathBuf], format: OutputFormat) -> anyhow::Result<Outcome> {
    let default = [PathBuf::from("registry")];
    let paths = if paths.is_empty() { &default[..] } else { paths };
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut files_checked = 0usize;
    for path in paths {
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        let (found, count) = check_path(path)?;
        diagnostics.extend(found);
        files_checked += count;
    }
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    diagnostics.dedup();
    print!("{}", render(&diagnostics, format));
    if format == OutputFormat::Human {
        let files = if files_checked == 1 { "file" } else { "files" };
        match diagnostics.len() {
            0 => eprintln!("checked {files_checked} {files}: no problems"),
            count => eprintln!(
                "checked {files_checked} {files}: {count} problem{}",
                if count == 1 { "" } else { "s" }
            ),
        }
    }
    Ok(if diagnostics.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Invalid
    })
}

/// Diagnostics for one path, and how many files were read for it.
fn check_path(path: &Path) -> anyhow::Result<(Vec<Diagnostic>, usize)> {
    match find_registry_root(path) {
        Some(root) => {
            // Cross-file rules need the whole registry, even when one file is asked about.
            let snapshot = load_registry(&root)?;
            let scope = normalize(path);
            let in_scope_file = |file: &str| normalize(Path::new(file)).starts_with(&scope);
            let mut all = snapshot.all_diagnostics();
            // The prompt template must parse and render every valid persona in every enabled mode.
            let template_path = root.join(PROMPT_FILE);
            let template_checked = template_path.is_file() && in_scope_file(&display_path(&template_path));
            if template_checked {
                let shown = display_path(&template_path);
                match String::from_utf8(read_limited(&template_path)?) {
                    Ok(source) => all.extend(check_template(
                        &shown,
                        &source,
                        snapshot.personas.iter().filter_map(|parsed| parsed.persona.as_ref()),
                    )),
                    Err(_) => bail!("{shown} is not UTF-8 text"),
                }
            }
            // Labels and experiments name versions: checked against git history.
            let (acting, acting_files) = super::check_labels::check(&root, &snapshot)?;
            all.extend(acting);
            let in_scope: Vec<Diagnostic> = all
                .into_iter()
                .filter(|diagnostic| in_scope_file(&diagnostic.file))
                .collect();
            let count = snapshot
                .personas
                .iter()
                .filter(|parsed| in_scope_file(&parsed.file))
                .count()
                + snapshot
                    .profiles
                    .iter()
                    .filter(|parsed| in_scope_file(&parsed.file))
                    .count()
                + usize::from(in_scope_file(&display_path(&root.join(SETTINGS_FILE))))
                + usize::from(template_checked)
                + acting_files;
            Ok((in_scope, count))
        }
        None if path.is_file() => {
            eprintln!(
                "note: {} is not inside a registry (no registry.toml above it); mode vocabulary and policy are not checked",
                path.display()
            );
            let bytes = read_limited(path)?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parsed = validate_persona(&display_path(path), &bytes, &stem, &RegistrySettings::permissive());
            Ok((parsed.diagnostics, 1))
        }
        None => bail!(
            "{} is not a registry: no registry.toml in it or above it",
            path.display()
        ),
    }
}

/// An absolute path with `.` and `..` resolved lexically, so that two
/// spellings of one file compare equal without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normalized = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}
