//! `personas new`: scaffold a persona file to edit. A fictional persona passes
//! `check` as written; a real one needs its belief sources filled in first.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use uuid::Uuid;

use super::registry_files::{display_path, load_registry};
use crate::cli::Outcome;
use crate::persona::Slug;

/// "Grace Hopper" → "grace-hopper"; characters outside a-z0-9 become separators.
pub fn slugify(name: &str) -> String {
    let lowered: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    lowered
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

pub fn run(name: &str, slug: Option<&str>, registry: &Path, real: bool) -> anyhow::Result<Outcome> {
    let slug_text = slug.map(str::to_string).unwrap_or_else(|| slugify(name));
    let slug: Slug = slug_text
        .parse()
        .with_context(|| format!("cannot derive a slug from {name:?}; pass --slug"))?;
    let snapshot = load_registry(registry)?;
    let settings = snapshot
        .settings
        .clone()
        .unwrap_or_else(crate::persona::RegistrySettings::permissive);
    let Some(first_mode) = settings.modes.as_ref().and_then(|modes| modes.first()) else {
        bail!(
            "{} has no registry.toml with a mode vocabulary; create one first",
            registry.display()
        );
    };
    let path = registry.join("personas").join(format!("{slug}.toml"));
    let escaped_name = name.replace('\\', "\\\\").replace('"', "\\\"");
    let source_line = if real {
        // Left for the author: `check` refuses the file until a real source is given.
        "# source = \"https://...\"  (required: every belief of a real person needs a source)\n"
    } else {
        ""
    };
    let text = format!(
        r#"schema = 1
id = "{id}"
name = "{escaped_name}"
description = "Describe {escaped_name} in one or two sentences."
domains = ["general"]
is_real = {real}
default_mode = "{first_mode}"

[traits.ocean]
openness = 0.5
conscientiousness = 0.5
extraversion = 0.5
agreeableness = 0.5
neuroticism = 0.5

[[beliefs]]
text = "A belief this persona holds."
{source_line}
[modes]
{first_mode} = true

[config]
humor_usage = "medium"
emotional_style = "reserved"
language_style = "concise"
voice_enabled = false
"#,
        id = Uuid::new_v4(),
    );
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create {} (does it exist already?)", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", display_path(&path));
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn names_become_slugs() {
        assert_eq!(slugify("Grace Hopper"), "grace-hopper");
        assert_eq!(slugify("  SABLE-9 "), "sable-9");
        assert_eq!(slugify("Dr. Inés Okafor"), "dr-in-s-okafor");
    }
}
