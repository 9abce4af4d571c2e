//! The projection reads the per-persona pages and answers make, answered
//! from a [`SiteSnapshot`] when `build-site` loaded one, and from the
//! database otherwise. A static build renders tens of files per persona;
//! through the database that is several indexed queries per file, through
//! the snapshot a few set queries per batch of personas. The snapshot holds
//! the very records those queries return (loaded by set queries with the
//! same columns and order), so the router renders the same bytes either way,
//! and anything the snapshot does not hold (an id, a former slug, a pin
//! other than a version number) falls through to the database.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use sqlx::PgPool;
use uuid::Uuid;

use super::error::WebError;
use super::{Resolved, Shared, parse_pin};
use crate::persona::pin::Pin;
use crate::persona::profile::Profile;
use crate::persona::search_filter::SearchFilter;
use crate::search::Found;
use crate::store::labels::{LabelPointer, label_pointers};
use crate::store::pinned_reads::PinnedRead;
use crate::store::queries::{self, Facets, PersonaRef, PersonaSummary, Sort, StoredTemplate, VersionRecord};

/// Every live persona in one order, and how many there are.
type ListedPersonas = (Vec<PersonaSummary>, i64);

/// What a static build knows of the whole registry, plus the versions of
/// the batch of personas it is rendering now.
pub struct SiteSnapshot {
    /// The persona each current slug names, as `find_persona` ranks them.
    by_slug: HashMap<String, PersonaRef>,
    /// Every slug each persona ever had, in the database's order.
    slugs: HashMap<Uuid, Vec<String>>,
    /// The labels in force, per persona, in `label_pointers`' order.
    labels: HashMap<Uuid, Vec<LabelPointer>>,
    stamp: Option<String>,
    /// Prompt templates by commit, looked up once each (a version's
    /// template never changes once the version exists).
    templates: Mutex<HashMap<Option<String>, Option<StoredTemplate>>>,
    /// The index pages' facets and unfiltered lists, read once: every one
    /// of a large registry's index pages shows them, and each read is a
    /// pass over the whole registry.
    facets: tokio::sync::OnceCell<Facets>,
    lists: Mutex<HashMap<Sort, Arc<tokio::sync::OnceCell<ListedPersonas>>>>,
    /// The current profiles, read once: every persona page lists them and
    /// every page of a persona with a profile applied reads one.
    profiles: tokio::sync::OnceCell<Vec<Profile>>,
    batch: RwLock<Arc<Batch>>,
}

/// The versions (newest first) and "similar personas" of the personas being rendered.
#[derive(Default)]
pub struct Batch {
    /// Shared, not copied, with each page that reads them: a persona's
    /// pinned pages read one version each, and copying all its versions
    /// (documents included) for every one of them was a tenth of a full
    /// build's time.
    versions: HashMap<Uuid, Arc<[VersionRecord]>>,
    current: HashMap<Uuid, i32>,
    similar: HashMap<Uuid, Vec<Found>>,
}

impl Batch {
    /// The commits that made the batch's versions.
    pub fn commits(&self) -> BTreeSet<&str> {
        self.versions
            .values()
            .flat_map(|versions| versions.iter().map(|version| version.commit.as_str()))
            .collect()
    }

    /// The versions of `personas`, and the similar lists the build computed for them.
    pub async fn load(pool: &PgPool, personas: &[Uuid], similar: HashMap<Uuid, Vec<Found>>) -> sqlx::Result<Batch> {
        let mut batch = Batch {
            similar,
            ..Batch::default()
        };
        let mut versions: HashMap<Uuid, Vec<VersionRecord>> = HashMap::new();
        for (version, is_current) in queries::versions_of(pool, personas).await? {
            if is_current {
                batch.current.insert(version.persona_id, version.version);
            }
            versions.entry(version.persona_id).or_default().push(version);
        }
        batch.versions = versions
            .into_iter()
            .map(|(persona, versions)| (persona, versions.into()))
            .collect();
        Ok(batch)
    }
}

impl SiteSnapshot {
    /// The registry-wide part; batches are loaded with [`SiteSnapshot::set_batch`].
    pub async fn load(pool: &PgPool) -> sqlx::Result<SiteSnapshot> {
        let mut by_slug = HashMap::new();
        // Ordered as `find_persona` ranks one slug's personas: live first, newest first.
        for persona in queries::personas_by_slug_rank(pool).await? {
            by_slug.entry(persona.slug.clone()).or_insert(persona);
        }
        let mut slugs: HashMap<Uuid, Vec<String>> = HashMap::new();
        for (persona, slug) in queries::all_persona_slugs(pool).await? {
            slugs.entry(persona).or_default().push(slug);
        }
        let mut labels: HashMap<Uuid, Vec<LabelPointer>> = HashMap::new();
        for pointer in label_pointers(pool, None, None, None).await? {
            labels.entry(pointer.persona_id).or_default().push(pointer);
        }
        Ok(SiteSnapshot {
            by_slug,
            slugs,
            labels,
            stamp: queries::projection_stamp(pool).await?,
            templates: Mutex::new(HashMap::new()),
            facets: tokio::sync::OnceCell::new(),
            lists: Mutex::new(HashMap::new()),
            profiles: tokio::sync::OnceCell::new(),
            batch: RwLock::new(Arc::new(Batch::default())),
        })
    }

    /// Reads the prompt template in force at each of `commits` not known
    /// yet, in one query (the pages of a batch then find them here).
    pub async fn read_templates(&self, pool: &PgPool, commits: BTreeSet<&str>) -> sqlx::Result<()> {
        let unknown: Vec<Option<&str>> = {
            let known = self.templates.lock().unwrap_or_else(PoisonError::into_inner);
            commits
                .into_iter()
                .filter(|commit| !known.contains_key(&Some((*commit).to_string())))
                .map(Some)
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let templates = queries::prompt_templates_at(pool, &unknown).await?;
        let mut known = self.templates.lock().unwrap_or_else(PoisonError::into_inner);
        for (commit, template) in unknown.into_iter().zip(templates) {
            known.insert(commit.map(str::to_string), template);
        }
        Ok(())
    }

    pub fn set_batch(&self, batch: Batch) {
        *self.batch.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(batch);
    }

    fn batch(&self) -> Arc<Batch> {
        Arc::clone(&self.batch.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn slugs(&self) -> &HashMap<Uuid, Vec<String>> {
        &self.slugs
    }

    pub fn labels(&self) -> &HashMap<Uuid, Vec<LabelPointer>> {
        &self.labels
    }

    /// The personas a slug names, when it is a current slug.
    pub fn persona(&self, slug: &str) -> Option<&PersonaRef> {
        self.by_slug.get(slug)
    }
}

/// The persona `reference` names (id, slug or former slug).
pub async fn find_persona(state: &Shared, reference: &str) -> sqlx::Result<Option<PersonaRef>> {
    if let Some(found) = state
        .snapshot
        .as_ref()
        .and_then(|snapshot| snapshot.by_slug.get(reference))
        && reference.parse::<Uuid>().is_err()
    {
        return Ok(Some(found.clone()));
    }
    queries::find_persona(&state.pool, reference).await
}

/// Every version of a persona, newest first.
pub async fn versions(state: &Shared, persona: Uuid) -> sqlx::Result<Arc<[VersionRecord]>> {
    match versions_in_snapshot(state, persona) {
        Some(versions) => Ok(versions),
        None => Ok(queries::versions(&state.pool, persona).await?.into()),
    }
}

/// The persona's current version.
pub async fn current_version(state: &Shared, persona: Uuid) -> sqlx::Result<Option<VersionRecord>> {
    if let Some(snapshot) = &state.snapshot {
        let batch = snapshot.batch();
        if let Some(versions) = batch.versions.get(&persona) {
            let current = batch.current.get(&persona);
            return Ok(versions
                .iter()
                .find(|version| Some(&version.version) == current)
                .cloned());
        }
    }
    queries::current_version(&state.pool, persona).await
}

/// The slugs a persona had before `current`.
pub async fn former_slugs(state: &Shared, persona: Uuid, current: &str) -> sqlx::Result<Vec<String>> {
    if let Some(snapshot) = &state.snapshot {
        return Ok(snapshot
            .slugs
            .get(&persona)
            .into_iter()
            .flatten()
            .filter(|slug| slug.as_str() != current)
            .cloned()
            .collect());
    }
    queries::former_slugs(&state.pool, persona, current).await
}

/// The labels in force that point at one of the persona's versions.
pub async fn labels_of(state: &Shared, persona: Uuid) -> sqlx::Result<Vec<LabelPointer>> {
    if let Some(snapshot) = &state.snapshot {
        return Ok(snapshot.labels.get(&persona).cloned().unwrap_or_default());
    }
    label_pointers(&state.pool, None, Some(persona), None).await
}

pub async fn projection_stamp(state: &Shared) -> sqlx::Result<Option<String>> {
    if let Some(snapshot) = &state.snapshot {
        return Ok(snapshot.stamp.clone());
    }
    queries::projection_stamp(&state.pool).await
}

/// The prompt template in force at `commit` (the current one for `None`).
pub async fn prompt_template(state: &Shared, commit: Option<&str>) -> sqlx::Result<Option<StoredTemplate>> {
    let Some(snapshot) = &state.snapshot else {
        return queries::prompt_template(&state.pool, commit).await;
    };
    let key = commit.map(str::to_string);
    if let Some(known) = snapshot
        .templates
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(known.clone());
    }
    let template = queries::prompt_template(&state.pool, commit).await?;
    snapshot
        .templates
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, template.clone());
    Ok(template)
}

/// The index pages' facet counts.
pub async fn facets(state: &Shared) -> sqlx::Result<Facets> {
    match &state.snapshot {
        Some(snapshot) => snapshot
            .facets
            .get_or_try_init(|| queries::facets(&state.pool))
            .await
            .cloned(),
        None => queries::facets(&state.pool).await,
    }
}

/// The registry's current profiles, by slug.
pub async fn profiles(state: &Shared) -> sqlx::Result<Vec<Profile>> {
    profiles_through(&state.pool, state.snapshot.as_deref()).await
}

/// The registry's current profiles, read once into `snapshot` when there is one.
pub async fn profiles_through(pool: &PgPool, snapshot: Option<&SiteSnapshot>) -> sqlx::Result<Vec<Profile>> {
    match snapshot {
        Some(snapshot) => snapshot
            .profiles
            .get_or_try_init(|| queries::profiles(pool))
            .await
            .cloned(),
        None => queries::profiles(pool).await,
    }
}

/// The current profile `slug`, if the registry has one of that name.
pub async fn profile(state: &Shared, slug: &str) -> sqlx::Result<Option<Profile>> {
    match &state.snapshot {
        Some(_) => Ok(profiles(state)
            .await?
            .into_iter()
            .find(|profile| profile.slug.as_str() == slug)),
        None => queries::profile(&state.pool, slug).await,
    }
}

/// One page of live personas meeting `filter`, and how many there are.
pub async fn list_personas(
    state: &Shared,
    filter: &SearchFilter,
    sort: Sort,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<PersonaSummary>, i64)> {
    let Some(snapshot) = state.snapshot.as_ref().filter(|_| *filter == SearchFilter::default()) else {
        return queries::list_personas(&state.pool, filter, sort, limit, offset).await;
    };
    // One cell per sort, so that pages asking at once wait for one read
    // instead of each making its own pass over the registry.
    let cell = Arc::clone(
        snapshot
            .lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(sort)
            .or_default(),
    );
    let (all, total) = cell
        .get_or_try_init(|| queries::list_personas(&state.pool, filter, sort, i64::MAX, 0))
        .await?;
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(all.len());
    let end = start.saturating_add(usize::try_from(limit).unwrap_or(0)).min(all.len());
    Ok((all[start..end].to_vec(), *total))
}

/// The "similar personas" the build computed for a persona of the batch.
pub fn similar_in_snapshot(state: &Shared, persona: Uuid) -> Option<Vec<Found>> {
    state.snapshot.as_ref()?.batch().similar.get(&persona).cloned()
}

/// Finds the persona `reference` names and the version `pin` names (its
/// current version when `None`).
pub async fn resolve(state: &Shared, reference: &str, pin: Option<&str>) -> Result<Resolved, WebError> {
    let (mut resolved, document_json) = resolve_stored(state, reference, pin).await?;
    if let Some(json) = document_json {
        resolved.version.persona = Some(
            serde_json::from_str(&json)
                .map_err(|error| WebError::unavailable("reading the stored document", &error))?,
        );
    }
    Ok(resolved)
}

/// [`resolve`], but a version found by the pinned reads by id may keep its
/// document as the stored JSON text (returned beside it, with
/// `version.persona` then `None`), for an answer that passes it through.
pub async fn resolve_stored(
    state: &Shared,
    reference: &str,
    pin: Option<&str>,
) -> Result<(Resolved, Option<String>), WebError> {
    let pin = pin.map(parse_pin).transpose()?;
    let immutable = pin.as_ref().is_some_and(Pin::is_immutable);
    if let Some(Pin::Number(number)) = &pin
        && state.snapshot.is_none()
    {
        // The A/B tester's hot path, `{id}@3`: the persona and its version in
        // one round trip, shared with the other pins asked for meanwhile. A
        // miss takes the path below, which says why (and finds a persona
        // whose slug merely looks like an id).
        let found = match reference.parse::<Uuid>() {
            Ok(id) => match state.pinned_reads.read(id, *number).await {
                PinnedRead::Found(found) => Some(((found.persona, found.version), found.document_json)),
                PinnedRead::Missing => None,
                PinnedRead::Failed => queries::numbered_version(&state.pool, reference, *number)
                    .await?
                    .map(|found| (found, None)),
            },
            Err(_) => queries::numbered_version(&state.pool, reference, *number)
                .await?
                .map(|found| (found, None)),
        };
        if let Some(((persona, version), document_json)) = found {
            let resolved = Resolved {
                persona,
                version,
                pinned: true,
                immutable,
            };
            return Ok((resolved, document_json));
        }
    }
    let persona = find_persona(state, reference)
        .await?
        .ok_or_else(|| WebError::no_persona(reference))?;
    let version = match &pin {
        Some(Pin::Number(number)) => match versions_in_snapshot(state, persona.id) {
            Some(versions) => versions
                .iter()
                .find(|version| version.version == *number)
                .cloned()
                .ok_or_else(|| {
                    queries::PinLookupError::Pin(queries::PinError::NotFound(format!(
                        "the persona has no version {number}"
                    )))
                })?,
            None => queries::pinned_version(&state.pool, persona.id, &Pin::Number(*number)).await?,
        },
        Some(pin) => queries::pinned_version(&state.pool, persona.id, pin).await?,
        None => {
            if persona.deleted {
                return Err(WebError::new(
                    axum::http::StatusCode::GONE,
                    "deleted",
                    format!(
                        "persona {:?} was deleted; its earlier versions stay readable by pin",
                        persona.slug
                    ),
                ));
            }
            current_version(state, persona.id)
                .await?
                .ok_or_else(|| WebError::no_persona(reference))?
        }
    };
    let resolved = Resolved {
        persona,
        version,
        pinned: pin.is_some(),
        immutable,
    };
    Ok((resolved, None))
}

fn versions_in_snapshot(state: &Shared, persona: Uuid) -> Option<Arc<[VersionRecord]>> {
    state.snapshot.as_ref()?.batch().versions.get(&persona).map(Arc::clone)
}
