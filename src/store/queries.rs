//! Reads of the projection: everything the website and the read API show.
//! The web server only ever reads; the sync is the one writer.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::persona::Persona;
use crate::persona::pin::Pin;
use crate::persona::profile::Profile;
use crate::persona::search_filter::SearchFilter;
use crate::persona::settings::RegistrySettings;

/// Binds a [`SearchFilter`] as $1..$7 of a query that uses [`FILTER`].
macro_rules! bind_filter {
    ($query:expr, $filter:expr) => {{
        let filter: &$crate::persona::search_filter::SearchFilter = $filter;
        let (trait_types, trait_names, minimums, maximums) = $crate::store::queries::trait_bounds(filter);
        $query
            .bind(filter.domain.clone())
            .bind(filter.mode.clone())
            .bind(filter.is_real)
            .bind(trait_types)
            .bind(trait_names)
            .bind(minimums)
            .bind(maximums)
    }};
}
pub(crate) use bind_filter;

/// One row of the persona list.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PersonaSummary {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub domains: Vec<String>,
    pub is_real: bool,
    /// Enabled modes.
    pub modes: Vec<String>,
    pub version: i32,
    pub content_hash: String,
    /// When the commit that first added the persona was made.
    pub created_at: DateTime<Utc>,
    /// When the commit that made the current version was made.
    pub updated_at: DateTime<Utc>,
}

/// One version of one persona, with the commit that made it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct VersionRecord {
    pub persona_id: Uuid,
    pub version: i32,
    pub slug: String,
    pub path: String,
    /// `added`, `modified`, `renamed` or `deleted`.
    pub change: String,
    pub commit: String,
    pub author_name: String,
    pub author_email: String,
    pub authored_at: DateTime<Utc>,
    pub committed_at: DateTime<Utc>,
    pub message: String,
    /// `None` for a deletion.
    pub content_hash: Option<String>,
    /// Set when a force-push made the commit unreachable.
    pub retracted: bool,
    /// The full document (`None` for a deletion).
    #[schema(value_type = Option<Object>)]
    pub persona: Option<Persona>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    persona_id: Uuid,
    version_no: i32,
    slug: String,
    path: String,
    change_kind: String,
    commit_sha: String,
    author_name: String,
    author_email: String,
    authored_at: DateTime<Utc>,
    committed_at: DateTime<Utc>,
    message: String,
    content_hash: Option<String>,
    retracted: bool,
    document: Option<StoredDocument>,
}

/// A version's document decoded from JSON text: the text the sync stored
/// (`document_json`), or the JSONB's for versions projected before it had
/// (see [`VERSION_COLUMNS`]). PostgreSQL sends stored text as it is, where
/// a JSONB is printed anew on every read, and a static build reads every
/// version.
struct StoredDocument(Persona);

impl sqlx::Type<sqlx::Postgres> for StoredDocument {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <String as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(found: &sqlx::postgres::PgTypeInfo) -> bool {
        <String as sqlx::Type<sqlx::Postgres>>::compatible(found)
    }
}

impl<'row> sqlx::Decode<'row, sqlx::Postgres> for StoredDocument {
    fn decode(value: sqlx::postgres::PgValueRef<'row>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(StoredDocument(serde_json::from_str(text)?))
    }
}

impl From<VersionRow> for VersionRecord {
    fn from(row: VersionRow) -> Self {
        VersionRecord {
            persona_id: row.persona_id,
            version: row.version_no,
            slug: row.slug,
            path: row.path,
            change: row.change_kind,
            commit: row.commit_sha,
            author_name: row.author_name,
            author_email: row.author_email,
            authored_at: row.authored_at,
            committed_at: row.committed_at,
            message: row.message,
            content_hash: row.content_hash,
            retracted: row.retracted,
            persona: row.document.map(|document| document.0),
        }
    }
}

/// A version's columns but its document.
macro_rules! version_fields {
    () => {
        "v.persona_id, v.version_no, v.slug, v.path, v.change_kind, v.commit_sha, v.author_name,
         v.author_email, v.authored_at, v.committed_at, v.message, v.content_hash, v.retracted"
    };
}
/// A version's columns, its document as text (see [`StoredDocument`]).
const VERSION_COLUMNS: &str = concat!(
    version_fields!(),
    ", COALESCE(v.document_json, v.document::text) AS document"
);

#[derive(sqlx::FromRow)]
struct ListRow {
    #[sqlx(flatten)]
    summary: PersonaSummary,
    total: i64,
}

/// How a list is ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    #[default]
    Name,
    Updated,
    Created,
}

impl Sort {
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Updated => "updated",
            Sort::Created => "created",
        }
    }
}

/// Live personas meeting `filter`, one page of them, and how many there are in all.
pub async fn list_personas(
    pool: &PgPool,
    filter: &SearchFilter,
    sort: Sort,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<PersonaSummary>, i64)> {
    let order = match sort {
        Sort::Name => "lower(v.document->>'name'), p.slug",
        Sort::Updated => "v.committed_at DESC, p.slug",
        Sort::Created => "p.created_at DESC, p.slug",
    };
    let sql = format!(
        "SELECT p.id, p.slug, v.document->>'name' AS name,
                coalesce(v.document->>'description', '') AS description,
                ARRAY(SELECT jsonb_array_elements_text(v.document->'domains')) AS domains,
                (v.document->>'is_real')::boolean AS is_real,
                ARRAY(SELECT m.key FROM jsonb_each(v.document->'modes') m
                      WHERE m.value = 'true'::jsonb ORDER BY m.key) AS modes,
                v.version_no AS version, v.content_hash, p.created_at, v.committed_at AS updated_at,
                count(*) OVER () AS total
         FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
         WHERE NOT p.deleted {FILTER}
         ORDER BY {order}
         LIMIT $8 OFFSET $9"
    );
    let rows: Vec<ListRow> = bind_filter!(sqlx::query_as(&sql), filter)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let total = rows.first().map_or(0, |row| row.total);
    let total = if rows.is_empty() && offset > 0 {
        count_personas(pool, filter).await?
    } else {
        total
    };
    Ok((rows.into_iter().map(|row| row.summary).collect(), total))
}

/// A [`SearchFilter`] as SQL over `v.document`, bound as $1 domain, $2 mode,
/// $3 is_real and $4..$7 the trait ranges (see [`trait_bounds`]).
pub(crate) const FILTER: &str = "
           AND ($1::text IS NULL OR v.document->'domains' ? $1)
           AND ($2::text IS NULL OR coalesce((v.document->'modes'->>$2)::boolean, false))
           AND ($3::boolean IS NULL OR (v.document->>'is_real')::boolean = $3)
           AND NOT EXISTS (
               SELECT 1 FROM UNNEST($4::text[], $5::text[], $6::float8[], $7::float8[]) AS r(kind, name, low, high)
               WHERE (v.document->'traits'->r.kind->>r.name) IS NULL
                  OR (v.document->'traits'->r.kind->>r.name)::float8 < coalesce(r.low, '-infinity')
                  OR (v.document->'traits'->r.kind->>r.name)::float8 > coalesce(r.high, 'infinity'))";

pub(crate) type TraitBounds = (Vec<String>, Vec<String>, Vec<Option<f64>>, Vec<Option<f64>>);

/// The trait ranges as four parallel arrays: types, names, minimums, maximums.
pub(crate) fn trait_bounds(filter: &SearchFilter) -> TraitBounds {
    let mut bounds: TraitBounds = Default::default();
    for range in &filter.traits {
        let (kind, name) = range.path.split_once('.').unwrap_or((range.path.as_str(), ""));
        bounds.0.push(kind.to_string());
        bounds.1.push(name.to_string());
        bounds.2.push(range.min);
        bounds.3.push(range.max);
    }
    bounds
}

async fn count_personas(pool: &PgPool, filter: &SearchFilter) -> sqlx::Result<i64> {
    let sql = format!(
        "SELECT count(*) FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
             WHERE NOT p.deleted {FILTER}"
    );
    bind_filter!(sqlx::query_scalar(&sql), filter).fetch_one(pool).await
}

/// How many live personas have one domain or mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FacetCount {
    pub value: String,
    pub count: i64,
}

/// Counts for the index page's facets.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Facets {
    pub domains: Vec<FacetCount>,
    pub modes: Vec<FacetCount>,
    pub real: i64,
    pub fictional: i64,
}

pub async fn facets(pool: &PgPool) -> sqlx::Result<Facets> {
    let domains: Vec<FacetCount> = sqlx::query_as(
        "SELECT d.domain AS value, count(*) AS count FROM personas p JOIN persona_versions v ON v.id = p.current_version_id,
                jsonb_array_elements_text(v.document->'domains') AS d(domain)
         WHERE NOT p.deleted GROUP BY d.domain ORDER BY count(*) DESC, d.domain",
    )
    .fetch_all(pool)
    .await?;
    let modes: Vec<FacetCount> = sqlx::query_as(
        "SELECT m.key AS value, count(*) AS count FROM personas p JOIN persona_versions v ON v.id = p.current_version_id,
                jsonb_each(v.document->'modes') AS m
         WHERE NOT p.deleted AND m.value = 'true'::jsonb GROUP BY m.key ORDER BY count(*) DESC, m.key",
    )
    .fetch_all(pool)
    .await?;
    let (real, fictional): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE (v.document->>'is_real')::boolean),
                count(*) FILTER (WHERE NOT (v.document->>'is_real')::boolean)
         FROM personas p JOIN persona_versions v ON v.id = p.current_version_id WHERE NOT p.deleted",
    )
    .fetch_one(pool)
    .await?;
    Ok(Facets {
        domains,
        modes,
        real,
        fictional,
    })
}

/// How a reference to a persona resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonaRef {
    pub id: Uuid,
    /// The current slug (differs from the reference for a former slug or an id).
    pub slug: String,
    pub deleted: bool,
    /// When the commit that first added the persona was made.
    pub created_at: DateTime<Utc>,
}

/// The one persona an id ($1), a current slug or a former slug ($2)
/// names: an id first, then a live persona of the slug before a deleted
/// one, the newest first, then a former slug.
const PERSONA_BY_REFERENCE: &str = "SELECT id, slug, deleted, created_at FROM (
         SELECT id, slug, deleted, created_at, 0 AS rank FROM personas WHERE id = $1
         UNION ALL
         SELECT id, slug, deleted, created_at, 1 FROM personas WHERE slug = $2
         UNION ALL
         SELECT p.id, p.slug, p.deleted, p.created_at, 2
         FROM persona_slugs s JOIN personas p ON p.id = s.persona_id WHERE s.slug = $2
     ) candidates
     ORDER BY rank, deleted, created_at DESC
     LIMIT 1";

/// The persona an id, a current slug or a former slug names (deleted ones too).
pub async fn find_persona(pool: &PgPool, reference: &str) -> sqlx::Result<Option<PersonaRef>> {
    let by_id = reference.parse::<Uuid>().ok();
    // Three indexed lookups rather than one OR, which PostgreSQL can only
    // answer by scanning every persona: this runs on every request.
    let found: Option<(Uuid, String, bool, DateTime<Utc>)> = sqlx::query_as(PERSONA_BY_REFERENCE)
        .bind(by_id)
        .bind(reference)
        .fetch_optional(pool)
        .await?;
    Ok(found.map(|(id, slug, deleted, created_at)| PersonaRef {
        id,
        slug,
        deleted,
        created_at,
    }))
}

/// The slugs a persona had before `current`, alphabetically.
pub async fn former_slugs(pool: &PgPool, persona: Uuid, current: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT slug FROM persona_slugs WHERE persona_id = $1 AND slug <> $2 ORDER BY slug")
        .bind(persona)
        .bind(current)
        .fetch_all(pool)
        .await
}

/// The persona's current version.
pub async fn current_version(pool: &PgPool, persona: Uuid) -> sqlx::Result<Option<VersionRecord>> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
         WHERE p.id = $1"
    ))
    .bind(persona)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(VersionRecord::from))
}

/// Every version of a persona, newest first, retracted ones included.
pub async fn versions(pool: &PgPool, persona: Uuid) -> sqlx::Result<Vec<VersionRecord>> {
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM persona_versions v WHERE v.persona_id = $1 ORDER BY v.version_no DESC"
    ))
    .bind(persona)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(VersionRecord::from).collect())
}

/// A persona with one of its versions, as the pinned reads return them.
#[derive(sqlx::FromRow)]
struct PersonaVersionRow {
    current_slug: String,
    deleted: bool,
    created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    version: VersionRow,
}

impl From<PersonaVersionRow> for (PersonaRef, VersionRecord) {
    fn from(row: PersonaVersionRow) -> Self {
        let persona = PersonaRef {
            id: row.version.persona_id,
            slug: row.current_slug,
            deleted: row.deleted,
            created_at: row.created_at,
        };
        (persona, VersionRecord::from(row.version))
    }
}

/// The persona `reference` names (as [`find_persona`] ranks them) with its
/// version `number`, in one round trip; `None` when either is missing.
pub async fn numbered_version(
    pool: &PgPool,
    reference: &str,
    number: i32,
) -> sqlx::Result<Option<(PersonaRef, VersionRecord)>> {
    let by_id = reference.parse::<Uuid>().ok();
    let row: Option<PersonaVersionRow> = sqlx::query_as(&format!(
        "WITH persona AS ({PERSONA_BY_REFERENCE})
         SELECT p.slug AS current_slug, p.deleted, p.created_at, {VERSION_COLUMNS}
         FROM persona p JOIN persona_versions v ON v.persona_id = p.id AND v.version_no = $3"
    ))
    .bind(by_id)
    .bind(reference)
    .bind(number)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// A version as a pinned read by id finds it. Its document comes as the
/// JSON text the sync stored beside the JSONB, which is what the API
/// answers with, so the hot path passes it through without parsing it;
/// a version projected before that text was stored (migration 0012) comes
/// parsed instead, in `version.persona`.
#[derive(Clone)]
pub struct PinnedVersion {
    pub persona: PersonaRef,
    /// `persona` is `None` here whenever `document_json` is set.
    pub version: VersionRecord,
    pub document_json: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PinnedVersionRow {
    #[sqlx(flatten)]
    row: PersonaVersionRow,
    document_json: Option<String>,
}

/// Each of `pins` (a persona id and a version number) that exists, with its
/// persona, in one round trip; the missing ones are left out. An id outranks
/// every slug, so what this finds is what [`numbered_version`] would.
pub async fn numbered_versions_by_id(
    executor: impl sqlx::PgExecutor<'_>,
    pins: &[(Uuid, i32)],
) -> sqlx::Result<Vec<PinnedVersion>> {
    let (ids, numbers): (Vec<Uuid>, Vec<i32>) = pins.iter().copied().unzip();
    let rows: Vec<PinnedVersionRow> = sqlx::query_as(concat!(
        "SELECT p.slug AS current_slug, p.deleted, p.created_at, ",
        version_fields!(),
        ", v.document_json, CASE WHEN v.document_json IS NULL THEN v.document::text END AS document
         FROM unnest($1::uuid[], $2::int4[]) AS pin(id, version_no)
         JOIN personas p ON p.id = pin.id
         JOIN persona_versions v ON v.persona_id = p.id AND v.version_no = pin.version_no"
    ))
    .bind(ids)
    .bind(numbers)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|PinnedVersionRow { row, document_json }| {
            let (persona, version) = row.into();
            PinnedVersion {
                persona,
                version,
                document_json,
            }
        })
        .collect())
}

/// Every version of each of `personas` (newest first per persona), each
/// with whether it is the persona's current one: a static build's batch.
pub async fn versions_of(pool: &PgPool, personas: &[Uuid]) -> sqlx::Result<Vec<(VersionRecord, bool)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        is_current: bool,
        #[sqlx(flatten)]
        version: VersionRow,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT COALESCE(v.id = p.current_version_id, false) AS is_current, {VERSION_COLUMNS}
         FROM persona_versions v JOIN personas p ON p.id = v.persona_id
         WHERE v.persona_id = ANY($1)
         ORDER BY v.persona_id, v.version_no DESC"
    ))
    .bind(personas)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (VersionRecord::from(row.version), row.is_current))
        .collect())
}

/// Every persona, each slug's personas in the order [`find_persona`] prefers them.
pub async fn personas_by_slug_rank(pool: &PgPool) -> sqlx::Result<Vec<PersonaRef>> {
    let rows: Vec<(Uuid, String, bool, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, slug, deleted, created_at FROM personas ORDER BY slug, deleted, created_at DESC")
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, slug, deleted, created_at)| PersonaRef {
            id,
            slug,
            deleted,
            created_at,
        })
        .collect())
}

/// Every slug of every persona, current ones included, ordered as
/// [`former_slugs`] orders one persona's.
pub async fn all_persona_slugs(pool: &PgPool) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as("SELECT persona_id, slug FROM persona_slugs ORDER BY persona_id, slug")
        .fetch_all(pool)
        .await
}

/// What identifies one version, without its document: enough to tell
/// whether anything a persona's pages show has changed since a build.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionStamp {
    pub persona_id: Uuid,
    pub persona_slug: String,
    pub deleted: bool,
    pub version: i32,
    pub change: String,
    pub slug: String,
    pub path: String,
    pub commit: String,
    pub content_hash: Option<String>,
    pub retracted: bool,
    pub current: bool,
}

/// Every version of every persona, by the persona's current slug.
pub async fn version_stamps(pool: &PgPool) -> sqlx::Result<Vec<VersionStamp>> {
    sqlx::query_as(
        "SELECT p.id AS persona_id, p.slug AS persona_slug, p.deleted, v.version_no AS version,
                v.change_kind AS change, v.slug, v.path, v.commit_sha AS commit, v.content_hash, v.retracted,
                COALESCE(v.id = p.current_version_id, false) AS current
         FROM personas p JOIN persona_versions v ON v.persona_id = p.id
         ORDER BY p.slug COLLATE \"C\", p.id, v.version_no",
    )
    .fetch_all(pool)
    .await
}

/// Why a pin named no version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("{0}")]
    NotFound(String),
    #[error("commit prefix {prefix:?} is ambiguous: it matches {matches} commits; give more digits")]
    Ambiguous { prefix: String, matches: i64 },
}

/// The version a pin names. Pins by commit or tag name the version current
/// at that commit: the newest version made at or before it on the branch.
pub async fn pinned_version(pool: &PgPool, persona: Uuid, pin: &Pin) -> Result<VersionRecord, PinLookupError> {
    let row: Option<VersionRow> = match pin {
        Pin::Number(number) => {
            sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM persona_versions v WHERE v.persona_id = $1 AND v.version_no = $2"
            ))
            .bind(persona)
            .bind(number)
            .fetch_optional(pool)
            .await?
        }
        Pin::Content(hash) => {
            // The same content can recur (an edit reverted): the pin names the
            // first version with it, so it names the same version forever.
            sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM persona_versions v WHERE v.persona_id = $1 AND v.content_hash = $2
                 ORDER BY v.version_no LIMIT 1"
            ))
            .bind(persona)
            .bind(hash.to_string())
            .fetch_optional(pool)
            .await?
        }
        Pin::Commit(prefix) => {
            let commit = commit_by_prefix(pool, prefix).await?;
            version_at_commit(pool, persona, &commit).await?
        }
        Pin::Label(label) => labelled_version(pool, persona, label).await?,
        // A label wins over a tag of the same name; the persona's own pointer
        // is looked up first, so the common case is one indexed read.
        Pin::Name(name) => match pointed_version(pool, persona, name).await? {
            Some(row) => Some(row),
            None if super::labels::label_exists(pool, name).await? => {
                return Err(PinError::NotFound(format!(
                    "label {name:?} does not point at any version of this persona"
                ))
                .into());
            }
            None => tagged_version(pool, persona, pin, name).await?,
        },
        Pin::Tag(tag) => tagged_version(pool, persona, pin, tag).await?,
    };
    row.map(VersionRecord::from)
        .ok_or_else(|| PinLookupError::Pin(PinError::NotFound(format!("the persona has no version {pin}"))))
}

/// The version current at the commit `tag` names.
async fn tagged_version(
    pool: &PgPool,
    persona: Uuid,
    pin: &Pin,
    tag: &str,
) -> Result<Option<VersionRow>, PinLookupError> {
    let commit: Option<String> = sqlx::query_scalar("SELECT commit_sha FROM git_tags WHERE name = $1")
        .bind(tag)
        .fetch_optional(pool)
        .await?;
    let commit = commit.ok_or_else(|| match pin {
        Pin::Name(_) => PinError::NotFound(format!("no label or tag is named {tag:?}")),
        _ => PinError::NotFound(format!("no tag named {tag:?}")),
    })?;
    version_at_commit(pool, persona, &commit).await
}

/// The version `label` points at now for `persona`, or why there is none.
async fn labelled_version(pool: &PgPool, persona: Uuid, label: &str) -> Result<Option<VersionRow>, PinLookupError> {
    if let Some(row) = pointed_version(pool, persona, label).await? {
        return Ok(Some(row));
    }
    let exists = super::labels::label_exists(pool, label).await?;
    Err(PinError::NotFound(if exists {
        format!("label {label:?} does not point at any version of this persona")
    } else {
        format!("the registry has no label {label:?}")
    })
    .into())
}

/// The version `label` points at now for `persona`, if it covers the persona.
async fn pointed_version(pool: &PgPool, persona: Uuid, label: &str) -> sqlx::Result<Option<VersionRow>> {
    let pointers = super::labels::label_pointers(pool, None, Some(persona), Some(label)).await?;
    let Some(pointer) = pointers.first() else {
        return Ok(None);
    };
    sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM persona_versions v WHERE v.persona_id = $1 AND v.version_no = $2"
    ))
    .bind(persona)
    .bind(pointer.version)
    .fetch_optional(pool)
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum PinLookupError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The one projected commit `prefix` names.
pub async fn commit_by_prefix(pool: &PgPool, prefix: &str) -> Result<String, PinLookupError> {
    let pattern = format!("{prefix}%");
    let matches: Vec<String> = sqlx::query_scalar("SELECT sha FROM sync_commits WHERE sha LIKE $1 LIMIT 2")
        .bind(&pattern)
        .fetch_all(pool)
        .await?;
    match matches.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(PinError::NotFound(format!("no projected commit starts with {prefix}")).into()),
        _ => {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_commits WHERE sha LIKE $1")
                .bind(&pattern)
                .fetch_one(pool)
                .await?;
            Err(PinError::Ambiguous {
                prefix: prefix.to_string(),
                matches: count,
            }
            .into())
        }
    }
}

/// The persona's newest version made at or before `commit` on the branch. For
/// a commit that a force-push retracted, retracted versions count too: that
/// is the history the commit belonged to.
async fn version_at_commit(pool: &PgPool, persona: Uuid, commit: &str) -> Result<Option<VersionRow>, PinLookupError> {
    let position: Option<(i64, bool)> = sqlx::query_as("SELECT seq, retracted FROM sync_commits WHERE sha = $1")
        .bind(commit)
        .fetch_optional(pool)
        .await?;
    let (seq, retracted) = position.ok_or_else(|| PinError::NotFound(format!("commit {commit} is not projected")))?;
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM persona_versions v JOIN sync_commits c ON c.sha = v.commit_sha
         WHERE v.persona_id = $1 AND c.seq <= $2 AND ($3 OR NOT v.retracted)
         ORDER BY c.seq DESC LIMIT 1"
    ))
    .bind(persona)
    .bind(seq)
    .bind(retracted)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) if row.change_kind == "deleted" => Err(PinError::NotFound(format!(
            "the persona was deleted at or before commit {}",
            &commit[..commit.len().min(12)]
        ))
        .into()),
        Some(row) => Ok(Some(row)),
        None => Err(PinError::NotFound(format!(
            "the persona did not exist yet at commit {}",
            &commit[..commit.len().min(12)]
        ))
        .into()),
    }
}

/// One entry of the registry-wide change feed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ChangeRecord {
    pub persona_id: Uuid,
    /// The persona's slug at that version.
    pub slug: String,
    pub name: Option<String>,
    pub version: i32,
    pub change: String,
    pub commit: String,
    pub author_name: String,
    pub committed_at: DateTime<Utc>,
    pub message: String,
    pub retracted: bool,
}

/// The newest versions across the registry (retracted ones left out).
pub async fn recent_changes(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<ChangeRecord>> {
    sqlx::query_as(
        "SELECT v.persona_id, v.slug, coalesce(v.document->>'name',
                    (SELECT w.document->>'name' FROM persona_versions w
                     WHERE w.persona_id = v.persona_id AND w.document IS NOT NULL
                     ORDER BY w.version_no DESC LIMIT 1)) AS name,
                v.version_no AS version, v.change_kind AS change, v.commit_sha AS commit, v.author_name,
                v.committed_at, v.message, v.retracted
         FROM persona_versions v WHERE NOT v.retracted
         ORDER BY v.committed_at DESC, v.id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A file's validation problem as of the last projected commit.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FileError {
    pub path: String,
    pub line: i32,
    pub column: i32,
    pub code: String,
    pub message: String,
    pub commit: String,
}

/// The state of the projection.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyncStatus {
    pub branch: Option<String>,
    pub last_commit: Option<String>,
    pub last_commit_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
    pub personas: i64,
    pub versions: i64,
    pub outbox_depth: i64,
    pub errors: Vec<FileError>,
}

/// The sync cursor: branch, last commit, when it was written, that commit's time.
type CursorRow = (String, String, DateTime<Utc>, Option<DateTime<Utc>>);

pub async fn sync_status(pool: &PgPool) -> sqlx::Result<SyncStatus> {
    let cursor: Option<CursorRow> = sqlx::query_as(
        "SELECT s.branch, s.last_commit, s.updated_at, c.committed_at
         FROM sync_state s LEFT JOIN sync_commits c ON c.sha = s.last_commit
         ORDER BY s.updated_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let (personas, versions, outbox_depth): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM personas WHERE NOT deleted),
                (SELECT count(*) FROM persona_versions WHERE NOT retracted),
                (SELECT count(*) FROM vector_outbox)",
    )
    .fetch_one(pool)
    .await?;
    let errors: Vec<FileError> = sqlx::query_as(
        "SELECT path, line, col AS column, code, message, commit_sha AS commit FROM sync_errors ORDER BY path, line, col",
    )
    .fetch_all(pool)
    .await?;
    let (branch, last_commit, synced_at, last_commit_at) = match cursor {
        Some((branch, commit, synced, committed)) => (Some(branch), Some(commit), Some(synced), committed),
        None => (None, None, None, None),
    };
    Ok(SyncStatus {
        branch,
        last_commit,
        last_commit_at,
        synced_at,
        personas,
        versions,
        outbox_depth,
        errors,
    })
}

pub async fn profile(pool: &PgPool, slug: &str) -> sqlx::Result<Option<Profile>> {
    let document: Option<sqlx::types::Json<Profile>> =
        sqlx::query_scalar("SELECT document FROM registry_profiles WHERE slug = $1")
            .bind(slug)
            .fetch_optional(pool)
            .await?;
    Ok(document.map(|document| document.0))
}

pub async fn profiles(pool: &PgPool) -> sqlx::Result<Vec<Profile>> {
    let documents: Vec<sqlx::types::Json<Profile>> =
        sqlx::query_scalar("SELECT document FROM registry_profiles ORDER BY slug")
            .fetch_all(pool)
            .await?;
    Ok(documents.into_iter().map(|document| document.0).collect())
}

pub async fn settings(pool: &PgPool) -> sqlx::Result<Option<RegistrySettings>> {
    let document: Option<sqlx::types::Json<RegistrySettings>> =
        sqlx::query_scalar("SELECT document FROM registry_settings")
            .fetch_optional(pool)
            .await?;
    Ok(document.map(|document| document.0))
}

/// The newest projected commit id: what caches of unpinned answers key on.
pub async fn projection_stamp(pool: &PgPool) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT last_commit FROM sync_state ORDER BY updated_at DESC LIMIT 1")
        .fetch_optional(pool)
        .await
}

/// A version of the prompt template and the commit that made it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredTemplate {
    pub commit_sha: String,
    pub source: String,
}

/// The prompt template in force at `commit` (its newest change at or before
/// it), or the current one when `commit` is `None`. As with pins, a
/// retracted commit sees the retracted history it belonged to. A version
/// older than the registry's first template renders with that first one:
/// like the one in force, it never changes once it exists.
pub async fn prompt_template(pool: &PgPool, commit: Option<&str>) -> sqlx::Result<Option<StoredTemplate>> {
    Ok(prompt_templates_at(pool, &[commit]).await?.pop().flatten())
}

/// [`prompt_template`] at each of `commits`, in their order, in one query: a
/// static build asks it of every commit that made a version, and planning
/// the statement once per commit was most of the database's work there.
pub async fn prompt_templates_at(pool: &PgPool, commits: &[Option<&str>]) -> sqlx::Result<Vec<Option<StoredTemplate>>> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        // The template changes are few: gathered once, then each commit
        // picks from them (joined per commit, they cost a scan each).
        "WITH changes AS MATERIALIZED (
             SELECT t.commit_sha, t.source, c.seq, c.retracted
             FROM prompt_templates t JOIN sync_commits c ON c.sha = t.commit_sha
         )
         SELECT chosen.commit_sha, chosen.source
         FROM unnest($1::text[]) WITH ORDINALITY AS wanted(sha, position)
         LEFT JOIN sync_commits bound ON bound.sha = wanted.sha
         LEFT JOIN LATERAL (
             SELECT commit_sha, source FROM (
                 SELECT commit_sha, source, 0 AS preference, -seq AS position FROM changes
                 WHERE (wanted.sha IS NULL AND NOT retracted)
                    OR (wanted.sha IS NOT NULL AND seq <= bound.seq AND (bound.retracted OR NOT retracted))
                 UNION ALL
                 SELECT commit_sha, source, 1, seq FROM changes
                 WHERE wanted.sha IS NOT NULL AND NOT retracted AND source IS NOT NULL
             ) candidates
             ORDER BY preference, position LIMIT 1
         ) chosen ON true
         ORDER BY wanted.position",
    )
    .bind(commits)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(commit_sha, source)| {
            Some(StoredTemplate {
                commit_sha: commit_sha?,
                source: source?,
            })
        })
        .collect())
}

/// Every change of the prompt template, with its commit's retraction state
/// and template hash: what the pages' prompts depend on beside the personas.
pub async fn prompt_template_history(pool: &PgPool) -> sqlx::Result<Vec<(String, bool, Option<String>)>> {
    sqlx::query_as(
        "SELECT t.commit_sha, c.retracted, t.template_hash
         FROM prompt_templates t JOIN sync_commits c ON c.sha = t.commit_sha
         ORDER BY c.seq",
    )
    .fetch_all(pool)
    .await
}

/// One persona as a static copy of the site enumerates it.
#[derive(Debug, Clone)]
pub struct InventoryEntry {
    pub id: Uuid,
    pub slug: String,
    pub deleted: bool,
    /// Version numbers with content (not deletions, not retracted), oldest first.
    pub versions: Vec<i32>,
    /// The current content, for the prebuilt search index (`None` when deleted).
    pub current: Option<Persona>,
}

/// Every persona with its versions, sorted by slug, plus each former slug
/// and the persona it now belongs to.
pub async fn site_inventory(pool: &PgPool) -> sqlx::Result<(Vec<InventoryEntry>, Vec<(String, Uuid)>)> {
    /// id, slug, deleted, version number, and the document of the current version.
    type Row = (Uuid, String, bool, i32, Option<sqlx::types::Json<Persona>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.id, p.slug, p.deleted, v.version_no,
                CASE WHEN v.id = p.current_version_id THEN v.document END
         FROM personas p JOIN persona_versions v ON v.persona_id = p.id
         WHERE NOT v.retracted AND v.change_kind <> 'deleted'
         ORDER BY p.slug COLLATE \"C\", p.id, v.version_no",
    )
    .fetch_all(pool)
    .await?;
    let mut entries: Vec<InventoryEntry> = Vec::new();
    for (id, slug, deleted, version, document) in rows {
        if entries.last().is_none_or(|entry| entry.id != id) {
            entries.push(InventoryEntry {
                id,
                slug,
                deleted,
                versions: Vec::new(),
                current: None,
            });
        }
        if let Some(entry) = entries.last_mut() {
            entry.versions.push(version);
            if let Some(sqlx::types::Json(persona)) = document {
                entry.current = Some(persona);
            }
        }
    }
    let former: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT s.slug, s.persona_id FROM persona_slugs s JOIN personas p ON p.id = s.persona_id
         WHERE s.slug <> p.slug ORDER BY s.slug COLLATE \"C\"",
    )
    .fetch_all(pool)
    .await?;
    Ok((entries, former))
}
