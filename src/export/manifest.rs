//! The record a build leaves in the copy (`.personas-site.json`): what every
//! page depends on, and for each persona what its files were made from,
//! what its "similar personas" list showed and which files are its. A
//! rebuild of the same directory compares it with the registry now and
//! renders only the personas whose inputs changed (plus the pages whose
//! similar list changed, and the registry-wide pages), so that the result
//! is the full build's, at the cost of the change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::persona::profile::Profile;
use crate::search::Found;
use crate::store::labels::LabelPointer;
use crate::store::queries::VersionStamp;

pub const MANIFEST_FILE: &str = ".personas-site.json";

/// Bumped when the manifest's meaning changes: an older one is ignored.
/// 2: the profiles digest (copies of format 1 have no pages per profile).
const FORMAT: u32 = 2;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// What every file depends on (see [`site_inputs`]); a rebuild whose
    /// site inputs differ renders everything.
    pub site: String,
    /// A digest of the registry's profiles (see [`profiles_digest`]): every
    /// persona page lists them, and every live persona has a page per profile.
    pub profiles: String,
    /// Files no persona owns: the index pages, the feed, the search index…
    pub shared_files: BTreeSet<String>,
    /// By slug (every persona that ever had the slug shares its files).
    pub personas: BTreeMap<String, PersonaEntry>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaEntry {
    /// A digest of everything the slug's files are made from but the similar list.
    pub inputs: String,
    /// The similar personas as the page shows them.
    pub similar: Vec<ShownSimilar>,
    pub files: BTreeSet<String>,
}

/// One entry of a page's "similar personas", exactly as the page draws it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownSimilar {
    pub slug: String,
    pub name: String,
    /// Two decimals, as on the page.
    pub score: String,
}

impl ShownSimilar {
    pub fn list(found: &[Found]) -> Vec<ShownSimilar> {
        found
            .iter()
            .map(|found| ShownSimilar {
                slug: found.slug.clone(),
                name: found.name.clone(),
                score: format!("{:.2}", found.score),
            })
            .collect()
    }
}

impl Manifest {
    pub fn new(site: String, profiles: String) -> Manifest {
        Manifest {
            format: FORMAT,
            site,
            profiles,
            ..Manifest::default()
        }
    }

    /// The manifest of a copy, when it has a readable one of this format.
    pub fn read(directory: &Path) -> Option<Manifest> {
        let bytes = std::fs::read(directory.join(MANIFEST_FILE)).ok()?;
        let manifest: Manifest = serde_json::from_slice(&bytes).ok()?;
        (manifest.format == FORMAT).then_some(manifest)
    }

    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec(self).context("encoding the site manifest")?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Every file the manifest lists.
    pub fn files(&self) -> impl Iterator<Item = &String> {
        self.shared_files
            .iter()
            .chain(self.personas.values().flat_map(|entry| entry.files.iter()))
    }
}

/// The slug whose files `file` is one of, or `None` for a shared file.
pub fn owner(file: &str) -> Option<&str> {
    if let Some(rest) = file.strip_prefix("p/") {
        return rest.split_once('/').map(|(slug, _)| slug);
    }
    let rest = file.strip_prefix("api/personas/")?;
    let name = rest.split('/').next()?;
    let name = name.strip_suffix(".json").unwrap_or(name);
    Some(name.split('@').next().unwrap_or(name))
}

/// A digest of what every file depends on: the program that renders them
/// (a new build of `personas` may draw any page differently), the options,
/// the former slugs the links are rewritten through, and the prompt
/// templates' history.
pub fn site_inputs(parts: &[&str]) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    let program = std::env::current_exe().context("finding the running program")?;
    let mut file = std::fs::File::open(&program).with_context(|| format!("reading {}", program.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).context("reading the running program")?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A digest of the registry's current profiles, as a persona's pages show
/// and apply them.
pub fn profiles_digest(profiles: &[Profile]) -> anyhow::Result<String> {
    let bytes = serde_json::to_vec(profiles).context("encoding the profiles")?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// The files of a persona's pages with a profile applied (`/p/{slug}/profile/{name}`).
pub fn applied_prefix(slug: &str) -> String {
    format!("p/{slug}/profile/")
}

/// A digest of what one slug's files are made from, but for "similar
/// personas": every version of every persona with the slug (versions are
/// immutable, so their commit, content and retraction stand for them), its
/// slugs and the labels pointing at it.
pub fn persona_inputs(
    versions: &[VersionStamp],
    slugs: &HashMap<uuid::Uuid, Vec<String>>,
    labels: &HashMap<uuid::Uuid, Vec<LabelPointer>>,
) -> String {
    let mut hasher = Sha256::new();
    let mut add = |text: &str| {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    };
    let mut personas = BTreeSet::new();
    for version in versions {
        personas.insert(version.persona_id);
        add(&format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}",
            version.persona_id,
            version.persona_slug,
            version.deleted,
            version.version,
            version.change,
            version.slug,
            version.path,
            version.commit,
            version.content_hash,
            version.retracted,
            version.current
        ));
    }
    for persona in personas {
        for slug in slugs.get(&persona).into_iter().flatten() {
            add(&format!("slug|{slug}"));
        }
        for pointer in labels.get(&persona).into_iter().flatten() {
            add(&format!(
                "label|{}|{}|{}",
                pointer.label, pointer.version, pointer.commit
            ));
        }
    }
    format!("{:x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn files_belong_to_the_slug_in_their_path() {
        assert_eq!(owner("p/ada/index.html"), Some("ada"));
        assert_eq!(owner("p/ada/v/3/index.html"), Some("ada"));
        assert_eq!(owner("api/personas/ada.json"), Some("ada"));
        assert_eq!(owner("api/personas/ada@3.json"), Some("ada"));
        assert_eq!(owner("api/personas/ada@3/card.json"), Some("ada"));
        assert_eq!(owner("api/personas/ada/versions.json"), Some("ada"));
        assert_eq!(owner("p/ada/profile/debate-ready/index.html"), Some("ada"));
        assert_eq!(owner("profiles/debate-ready/index.html"), None);
        assert_eq!(owner("api/profiles/debate-ready.json"), None);
        assert_eq!(owner("api/personas.json"), None);
        assert_eq!(owner("index.html"), None);
        assert_eq!(owner("page/2/index.html"), None);
        assert_eq!(owner("labels/production/index.html"), None);
    }
}
