//! Labels and experiments in the projection: the sync's writes (each
//! commit's labels file resolved against the versions projected so far,
//! experiment revisions, and their events) and the reads the API, the pages
//! and assignment make. Rows of retracted commits are ignored throughout by
//! joining `sync_commits`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::events::{NewEvent, insert_events, persona_json};
use crate::git::history::CommitRecord;
use crate::persona::experiment::Experiment;
use crate::persona::labels::{KnownPersona, KnownVersion, LabelsFile, resolve};
use crate::persona::{ContentHash, Diagnostic, PersonaId};

/// Projects the labels and experiments of a run of commits, in order, after
/// their versions and `sync_commits` rows are written.
pub async fn project_labels_and_experiments(
    connection: &mut PgConnection,
    records: &[CommitRecord],
) -> sqlx::Result<()> {
    for record in records {
        if let Some(file) = &record.labels {
            project_labels(connection, record, file.as_ref()).await?;
        }
        for (name, experiment) in &record.experiments {
            project_experiment(connection, record, name, experiment.as_ref()).await?;
        }
    }
    Ok(())
}

async fn commit_seq(connection: &mut PgConnection, commit: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT seq FROM sync_commits WHERE sha = $1")
        .bind(commit)
        .fetch_one(connection)
        .await
}

/// The personas `references` name (slug, former slug or id), each with its
/// versions up to commit `seq`. A former slug that several personas bore
/// names the one that bears it now.
async fn known_personas(
    connection: &mut PgConnection,
    references: &[&str],
    seq: i64,
) -> sqlx::Result<HashMap<String, KnownPersona>> {
    let texts: Vec<String> = references.iter().map(|reference| reference.to_lowercase()).collect();
    let named: Vec<(String, Uuid, String)> = sqlx::query_as(
        "SELECT s.slug, p.id, p.slug FROM persona_slugs s JOIN personas p ON p.id = s.persona_id
         WHERE s.slug = ANY($1)
         UNION ALL
         SELECT p.id::text, p.id, p.slug FROM personas p WHERE p.id::text = ANY($1)
         ORDER BY 1",
    )
    .bind(&texts)
    .fetch_all(&mut *connection)
    .await?;
    let mut chosen: HashMap<String, (Uuid, String)> = HashMap::new();
    for (reference, id, slug) in named {
        let bears_it_now = slug == reference || id.to_string() == reference;
        match chosen.get(&reference) {
            Some((_, current)) if *current == reference && !bears_it_now => {}
            _ => {
                chosen.insert(reference, (id, slug));
            }
        }
    }
    let ids: Vec<Uuid> = chosen.values().map(|(id, _)| *id).collect();
    let rows: Vec<(Uuid, i32, Option<String>)> = sqlx::query_as(
        "SELECT v.persona_id, v.version_no, v.content_hash FROM persona_versions v
         JOIN sync_commits c ON c.sha = v.commit_sha
         WHERE v.persona_id = ANY($1) AND NOT v.retracted AND c.seq <= $2
         ORDER BY v.persona_id, v.version_no",
    )
    .bind(&ids)
    .bind(seq)
    .fetch_all(&mut *connection)
    .await?;
    let mut versions: HashMap<Uuid, Vec<KnownVersion>> = HashMap::new();
    for (id, number, hash) in rows {
        versions.entry(id).or_default().push(KnownVersion {
            number: number as u32,
            content_hash: hash.and_then(|hash| hash.parse::<ContentHash>().ok()),
        });
    }
    Ok(chosen
        .into_iter()
        .filter_map(|(reference, (id, slug))| {
            // Several keys may name one persona (its slug in one label, its id in another).
            let versions = versions.get(&id)?.clone();
            Some((
                reference,
                KnownPersona {
                    id: PersonaId(id),
                    slug,
                    versions,
                },
            ))
        })
        .collect())
}

/// Where each label pointed just before commit `seq` (on unretracted history).
async fn pointers_before(connection: &mut PgConnection, seq: i64) -> sqlx::Result<BTreeMap<(String, Uuid), i32>> {
    let rows: Vec<(String, Uuid, Option<i32>)> = sqlx::query_as(
        "SELECT DISTINCT ON (m.label, m.persona_id) m.label, m.persona_id, m.to_version_no
         FROM label_moves m JOIN sync_commits c ON c.sha = m.commit_sha
         WHERE NOT c.retracted AND c.seq < $1
         ORDER BY m.label, m.persona_id, c.seq DESC",
    )
    .bind(seq)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(label, persona, version)| Some(((label, persona), version?)))
        .collect())
}

async fn project_labels(
    connection: &mut PgConnection,
    record: &CommitRecord,
    file: Option<&LabelsFile>,
) -> sqlx::Result<()> {
    let commit = &record.commit.id;
    let seq = commit_seq(&mut *connection, commit).await?;
    let (resolved, problems) = match file {
        Some(file) => {
            let references: Vec<&str> = file
                .labels
                .iter()
                .flat_map(|label| label.entries.iter().map(|entry| entry.persona.as_str()))
                .collect();
            let known = known_personas(&mut *connection, &references, seq).await?;
            let tags: Vec<String> = sqlx::query_scalar("SELECT name FROM git_tags")
                .fetch_all(&mut *connection)
                .await?;
            resolve(
                file,
                |reference| known.get(&reference.to_lowercase()).cloned(),
                |name| tags.iter().any(|tag| tag == name),
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    record_label_problems(&mut *connection, commit, file, &problems).await?;

    let before = pointers_before(&mut *connection, seq).await?;
    let slugs: HashMap<Uuid, String> = resolved
        .iter()
        .map(|label| (label.persona_id.0, label.slug.clone()))
        .collect();
    let after: BTreeMap<(String, Uuid), i32> = resolved
        .into_iter()
        .map(|label| ((label.label, label.persona_id.0), label.version as i32))
        .collect();
    let mut moves: Vec<(String, Uuid, Option<i32>, Option<i32>)> = Vec::new();
    for (key, to) in &after {
        let from = before.get(key).copied();
        if from != Some(*to) {
            moves.push((key.0.clone(), key.1, from, Some(*to)));
        }
    }
    for (key, from) in &before {
        if !after.contains_key(key) {
            moves.push((key.0.clone(), key.1, Some(*from), None));
        }
    }
    if moves.is_empty() {
        return Ok(());
    }
    let missing: Vec<Uuid> = moves
        .iter()
        .map(|(_, persona, _, _)| *persona)
        .filter(|persona| !slugs.contains_key(persona))
        .collect();
    let mut slugs = slugs;
    let found: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, slug FROM personas WHERE id = ANY($1)")
        .bind(&missing)
        .fetch_all(&mut *connection)
        .await?;
    slugs.extend(found);
    let mut events = Vec::new();
    for (label, persona, from, to) in &moves {
        sqlx::query(
            "INSERT INTO label_moves (commit_sha, label, persona_id, from_version_no, to_version_no)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(commit)
        .bind(label)
        .bind(persona)
        .bind(from)
        .bind(to)
        .execute(&mut *connection)
        .await?;
        let slug = slugs.get(persona).map(String::as_str).unwrap_or_default();
        let hashes: Vec<(i32, Option<String>)> = sqlx::query_as(
            "SELECT version_no, content_hash FROM persona_versions
             WHERE persona_id = $1 AND version_no = ANY($2) AND NOT retracted",
        )
        .bind(persona)
        .bind([from.unwrap_or(0), to.unwrap_or(0)])
        .fetch_all(&mut *connection)
        .await?;
        let hash_of = |number: Option<i32>| {
            number.and_then(|number| {
                hashes
                    .iter()
                    .find(|(version, _)| *version == number)
                    .and_then(|(_, hash)| hash.clone())
            })
        };
        events.push(NewEvent::new(
            "label.moved",
            &[commit, label, &persona.to_string()],
            &record.commit,
            Some(*persona),
            json!({
                "persona": persona_json(*persona, slug, None),
                "label": {
                    "name": label,
                    "from_version": from,
                    "to_version": to,
                    "from_content_hash": hash_of(*from),
                    "to_content_hash": hash_of(*to),
                    "url": format!("/api/personas/{slug}@{label}"),
                },
            }),
        ));
    }
    insert_events(connection, &events).await
}

/// Entries that do not resolve are the labels file's problems on `/status`
/// (its shape problems were recorded by the walk already).
async fn record_label_problems(
    connection: &mut PgConnection,
    commit: &str,
    file: Option<&LabelsFile>,
    problems: &[Diagnostic],
) -> sqlx::Result<()> {
    let Some(file) = file else { return Ok(()) };
    sqlx::query("DELETE FROM sync_errors WHERE path = $1")
        .bind(&file.path)
        .execute(&mut *connection)
        .await?;
    for problem in problems {
        sqlx::query(
            "INSERT INTO sync_errors (commit_sha, path, persona_id, line, col, code, message)
             VALUES ($1, $2, NULL, $3, $4, $5, $6)",
        )
        .bind(commit)
        .bind(&problem.file)
        .bind(problem.line as i32)
        .bind(problem.column as i32)
        .bind(problem.code.as_str())
        .bind(&problem.message)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

async fn project_experiment(
    connection: &mut PgConnection,
    record: &CommitRecord,
    name: &str,
    experiment: Option<&Experiment>,
) -> sqlx::Result<()> {
    let commit = &record.commit.id;
    let document = experiment.map(|experiment| serde_json::to_value(experiment).unwrap_or_default());
    // A walk resumed mid-history, or new registry settings, present an
    // unchanged experiment again: only real changes are revisions.
    let latest: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT r.document FROM experiment_revisions r JOIN sync_commits c ON c.sha = r.commit_sha
         WHERE r.name = $1 AND NOT c.retracted AND r.commit_sha <> $2 ORDER BY c.seq DESC LIMIT 1",
    )
    .bind(name)
    .bind(commit)
    .fetch_optional(&mut *connection)
    .await?;
    let unchanged = match &latest {
        Some(previous) => *previous == document,
        None => document.is_none(),
    };
    if unchanged {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO experiment_revisions (commit_sha, name, document) VALUES ($1, $2, $3)
         ON CONFLICT (commit_sha, name) DO UPDATE SET document = excluded.document",
    )
    .bind(commit)
    .bind(name)
    .bind(&document)
    .execute(&mut *connection)
    .await?;
    let status = experiment.map_or("removed", |experiment| experiment.status.as_str());
    let event = NewEvent::new(
        "experiment.changed",
        &[commit, name],
        &record.commit,
        None,
        json!({
            "experiment": {
                "name": name,
                "status": status,
                "url": format!("/api/experiments/{name}"),
                "definition": document,
            },
        }),
    );
    insert_events(connection, &[event]).await
}

// ---- reads ----

/// The position of a projected commit on the branch.
pub async fn commit_seq_of(pool: &PgPool, commit: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT seq FROM sync_commits WHERE sha = $1")
        .bind(commit)
        .fetch_optional(pool)
        .await
}

/// Where one label points for one persona.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LabelPointer {
    pub label: String,
    pub persona_id: Uuid,
    pub slug: String,
    pub version: i32,
    pub content_hash: Option<String>,
    /// The commit that last moved the label for this persona.
    pub commit: String,
    pub moved_at: DateTime<Utc>,
}

/// The labels in force at commit `seq` (`None`: now), optionally of one
/// persona or one label.
pub async fn label_pointers(
    pool: &PgPool,
    seq: Option<i64>,
    persona: Option<Uuid>,
    label: Option<&str>,
) -> sqlx::Result<Vec<LabelPointer>> {
    sqlx::query_as(
        "SELECT l.label, l.persona_id, p.slug, l.to_version_no AS version, v.content_hash, l.commit_sha AS commit,
                l.committed_at AS moved_at
         FROM (
             SELECT DISTINCT ON (m.label, m.persona_id) m.label, m.persona_id, m.to_version_no, m.commit_sha,
                    c.committed_at
             FROM label_moves m JOIN sync_commits c ON c.sha = m.commit_sha
             WHERE NOT c.retracted AND ($1::bigint IS NULL OR c.seq <= $1)
               AND ($2::uuid IS NULL OR m.persona_id = $2) AND ($3::text IS NULL OR m.label = $3)
             ORDER BY m.label, m.persona_id, c.seq DESC
         ) l
         JOIN personas p ON p.id = l.persona_id
         LEFT JOIN persona_versions v ON v.persona_id = l.persona_id AND v.version_no = l.to_version_no
         WHERE l.to_version_no IS NOT NULL
         ORDER BY l.label, p.slug",
    )
    .bind(seq)
    .bind(persona)
    .bind(label)
    .fetch_all(pool)
    .await
}

/// Whether the registry has a label of that name now (it points somewhere).
pub async fn label_exists(pool: &PgPool, label: &str) -> sqlx::Result<bool> {
    // Existence only: no row of the label's pointers leaves the database.
    sqlx::query_scalar(
        "SELECT EXISTS (
             SELECT 1 FROM (
                 SELECT DISTINCT ON (m.persona_id) m.to_version_no
                 FROM label_moves m JOIN sync_commits c ON c.sha = m.commit_sha
                 WHERE m.label = $1 AND NOT c.retracted
                 ORDER BY m.persona_id, c.seq DESC
             ) latest
             WHERE latest.to_version_no IS NOT NULL
         )",
    )
    .bind(label)
    .fetch_one(pool)
    .await
}

/// One move of a label, for its history.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LabelMove {
    pub label: String,
    pub persona_id: Uuid,
    pub slug: String,
    /// `None`: the label did not cover the persona before.
    pub from_version: Option<i32>,
    /// `None`: the commit took the persona out of the label.
    pub to_version: Option<i32>,
    pub commit: String,
    pub author_name: String,
    pub author_email: String,
    pub committed_at: DateTime<Utc>,
    pub message: String,
    pub retracted: bool,
}

/// Every move of `label` (or of every label), newest first; `persona` narrows it.
pub async fn label_moves(pool: &PgPool, label: Option<&str>, persona: Option<Uuid>) -> sqlx::Result<Vec<LabelMove>> {
    sqlx::query_as(
        "SELECT m.label, m.persona_id, p.slug, m.from_version_no AS from_version, m.to_version_no AS to_version,
                m.commit_sha AS commit, c.author_name, c.author_email, c.committed_at, c.message, c.retracted
         FROM label_moves m
         JOIN sync_commits c ON c.sha = m.commit_sha
         JOIN personas p ON p.id = m.persona_id
         WHERE ($1::text IS NULL OR m.label = $1) AND ($2::uuid IS NULL OR m.persona_id = $2)
         ORDER BY c.seq DESC, m.label, p.slug",
    )
    .bind(label)
    .bind(persona)
    .fetch_all(pool)
    .await
}

/// An experiment as one revision defines it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ExperimentRevision {
    pub name: String,
    /// `None`: this commit removed the experiment.
    #[schema(value_type = Option<Object>)]
    pub experiment: Option<Experiment>,
    pub commit: String,
    pub author_name: String,
    pub committed_at: DateTime<Utc>,
    pub message: String,
    pub retracted: bool,
}

type RevisionRow = (
    String,
    Option<sqlx::types::Json<Experiment>>,
    String,
    String,
    DateTime<Utc>,
    String,
    bool,
);

fn revision(row: RevisionRow) -> ExperimentRevision {
    let (name, document, commit, author_name, committed_at, message, retracted) = row;
    ExperimentRevision {
        name,
        experiment: document.map(|document| document.0),
        commit,
        author_name,
        committed_at,
        message,
        retracted,
    }
}

const REVISION_COLUMNS: &str =
    "r.name, r.document, r.commit_sha, c.author_name, c.committed_at, c.message, c.retracted";

/// Each experiment's revision in force at commit `seq` (`None`: now); removed ones left out.
pub async fn experiments_at(
    pool: &PgPool,
    seq: Option<i64>,
    name: Option<&str>,
) -> sqlx::Result<Vec<ExperimentRevision>> {
    let rows: Vec<RevisionRow> = sqlx::query_as(&format!(
        "SELECT * FROM (
             SELECT DISTINCT ON (r.name) {REVISION_COLUMNS}
             FROM experiment_revisions r JOIN sync_commits c ON c.sha = r.commit_sha
             WHERE NOT c.retracted AND ($1::bigint IS NULL OR c.seq <= $1) AND ($2::text IS NULL OR r.name = $2)
             ORDER BY r.name, c.seq DESC
         ) latest WHERE latest.document IS NOT NULL ORDER BY latest.name"
    ))
    .bind(seq)
    .bind(name)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(revision).collect())
}

/// Every revision of one experiment, newest first.
pub async fn experiment_history(pool: &PgPool, name: &str) -> sqlx::Result<Vec<ExperimentRevision>> {
    let rows: Vec<RevisionRow> = sqlx::query_as(&format!(
        "SELECT {REVISION_COLUMNS}
         FROM experiment_revisions r JOIN sync_commits c ON c.sha = r.commit_sha
         WHERE r.name = $1 ORDER BY c.seq DESC"
    ))
    .bind(name)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(revision).collect())
}
