//! Writes of the projection: one commit's changes, problems and cursor in the
//! caller's transaction, plus retraction after rewritten history.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;
use uuid::Uuid;

use super::events::{NewEvent, insert_events, persona_json};
use super::labels::project_labels_and_experiments;
use super::profiles::record_profile_revision;
use crate::git::history::{ChangeKind, CommitRecord, PersonaChange};
use crate::persona::Persona;
use crate::persona::prompt::sha256;

/// What one projected commit added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    pub versions: u64,
    pub errors: u64,
}

/// Projects a run of consecutive commits: versions and their normalized rows,
/// head pointers, slug history, validation errors, outbox rows and the cursor,
/// with a fixed number of statements however many commits and personas the
/// run holds. The caller's transaction makes the run atomic, so the cursor
/// only ever names a commit whose changes, and all before it, are stored.
/// Re-projecting commits that are already there changes nothing.
///
/// With `rows_connection` (a catch-up), the versions' normalized rows
/// (traits, beliefs, modes, domains, phrases, config) are written there, in
/// that connection's own transaction, while `connection` writes the rest. They
/// are a quarter of a full sync's database time and nothing else in the run
/// depends on them. The caller commits the rows' transaction first: until the
/// versions commit, no read reaches the rows (every view and query joins them
/// through `persona_versions`), and if the versions then fail to commit, the
/// next writer removes the rows with [`remove_rows_of_unwritten_versions`]
/// before it writes.
#[tracing::instrument(skip_all, fields(commits = records.len()))]
pub async fn project_commits(
    connection: &mut PgConnection,
    rows_connection: Option<&mut PgConnection>,
    written_so_far: &mut WrittenSoFar,
    branch: &str,
    records: &[CommitRecord],
) -> sqlx::Result<CommitStats> {
    let Some(last) = records.last() else {
        return Ok(CommitStats::default());
    };
    let changes: Vec<(&CommitRecord, &PersonaChange)> = records
        .iter()
        .flat_map(|record| record.changes.iter().map(move |change| (record, change)))
        .collect();
    let mut stats = CommitStats::default();
    if !changes.is_empty() {
        stats.versions = project_changes(connection, rows_connection, written_so_far, &changes).await?;
    }
    stats.errors = replace_sync_errors(connection, records).await?;
    record_commits(connection, records).await?;
    record_registry_files(connection, records).await?;
    project_labels_and_experiments(connection, records).await?;
    set_cursor(connection, branch, &last.commit.id).await?;
    notify_change(&mut *connection).await?;
    Ok(stats)
}

/// The channel the writers notify on after a change to the projection
/// (servers drop the answers they keep in memory).
pub const CHANNEL: &str = "personas_projection";

/// Tells every listening server that the projection changed. Run inside the
/// writer's transaction, it is delivered when (and only if) that commits.
pub async fn notify_change<'c>(executor: impl sqlx::PgExecutor<'c>) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(executor)
        .await?;
    Ok(())
}

/// Appends the run's commits to `sync_commits` in order (a revived commit,
/// projected again after a force-push came back, is un-retracted).
async fn record_commits(connection: &mut PgConnection, records: &[CommitRecord]) -> sqlx::Result<()> {
    let shas: Vec<&str> = records.iter().map(|record| record.commit.id.as_str()).collect();
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> =
        records.iter().map(|record| record.commit.committed_at).collect();
    let author_names: Vec<&str> = records
        .iter()
        .map(|record| record.commit.author_name.as_str())
        .collect();
    let author_emails: Vec<&str> = records
        .iter()
        .map(|record| record.commit.author_email.as_str())
        .collect();
    let messages: Vec<&str> = records.iter().map(|record| record.commit.message.as_str()).collect();
    sqlx::query(
        "INSERT INTO sync_commits (sha, committed_at, author_name, author_email, message)
         SELECT sha, committed_at, author_name, author_email, message
         FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[])
             WITH ORDINALITY AS c(sha, committed_at, author_name, author_email, message, n)
         ORDER BY n
         ON CONFLICT (sha) DO UPDATE SET retracted = false, author_name = excluded.author_name,
             author_email = excluded.author_email, message = excluded.message",
    )
    .bind(&shas)
    .bind(&times)
    .bind(&author_names)
    .bind(&author_emails)
    .bind(&messages)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Keeps the registry's current settings and profiles (the last change in
/// the run wins), and every profile's revisions.
async fn record_registry_files(connection: &mut PgConnection, records: &[CommitRecord]) -> sqlx::Result<()> {
    for record in records {
        if let Some(settings) = &record.settings {
            sqlx::query(
                "INSERT INTO registry_settings (document, commit_sha) VALUES ($1, $2)
                 ON CONFLICT (singleton) DO UPDATE SET document = excluded.document, commit_sha = excluded.commit_sha",
            )
            .bind(sqlx::types::Json(settings))
            .bind(&record.commit.id)
            .execute(&mut *connection)
            .await?;
        }
        if let Some(source) = &record.prompt_template {
            record_prompt_template(connection, &record.commit.id, source.as_deref()).await?;
        }
        for (slug, profile) in &record.profiles {
            record_profile_revision(&mut *connection, &record.commit.id, slug, profile.as_ref()).await?;
            match profile {
                Some(profile) => {
                    sqlx::query(
                        "INSERT INTO registry_profiles (slug, document, commit_sha) VALUES ($1, $2, $3)
                         ON CONFLICT (slug) DO UPDATE SET document = excluded.document, commit_sha = excluded.commit_sha",
                    )
                    .bind(slug)
                    .bind(sqlx::types::Json(profile))
                    .bind(&record.commit.id)
                    .execute(&mut *connection)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM registry_profiles WHERE slug = $1")
                        .bind(slug)
                        .execute(&mut *connection)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Records a template change. A walk resumed mid-history sees the template
/// as new again; a row is written only when the content differs from the
/// template in force, so each row names the commit that really changed it.
async fn record_prompt_template(connection: &mut PgConnection, commit: &str, source: Option<&str>) -> sqlx::Result<()> {
    let hash = source.map(|source| sha256(source.as_bytes()).to_string());
    sqlx::query(
        "INSERT INTO prompt_templates (commit_sha, source, template_hash)
         SELECT $1, $2, $3
         WHERE NOT EXISTS (
             SELECT 1 FROM (
                 SELECT t.template_hash FROM prompt_templates t JOIN sync_commits c ON c.sha = t.commit_sha
                 WHERE NOT c.retracted AND t.commit_sha <> $1 ORDER BY c.seq DESC LIMIT 1
             ) latest WHERE latest.template_hash IS NOT DISTINCT FROM $3)
         ON CONFLICT (commit_sha) DO UPDATE SET source = excluded.source, template_hash = excluded.template_hash",
    )
    .bind(commit)
    .bind(source)
    .bind(hash)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Replaces the recorded tags with the repository's current ones (`tags`
/// sorted by name). Unchanged tags write nothing and notify no server, so a
/// sync with nothing new leaves every server's answers in place.
pub async fn replace_tags(connection: &mut PgConnection, tags: &[(String, String)]) -> sqlx::Result<()> {
    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT name, commit_sha FROM git_tags ORDER BY name COLLATE \"C\"")
            .fetch_all(&mut *connection)
            .await?;
    if recorded == tags {
        return Ok(());
    }
    let (names, commits): (Vec<&str>, Vec<&str>) = tags
        .iter()
        .map(|(name, commit)| (name.as_str(), commit.as_str()))
        .unzip();
    sqlx::query("DELETE FROM git_tags").execute(&mut *connection).await?;
    sqlx::query("INSERT INTO git_tags (name, commit_sha) SELECT * FROM UNNEST($1::text[], $2::text[])")
        .bind(&names)
        .bind(&commits)
        .execute(&mut *connection)
        .await?;
    notify_change(&mut *connection).await
}

/// Marks every recorded commit that is not in `reachable` as retracted.
pub async fn retract_unreachable_commits(connection: &mut PgConnection, reachable: &[String]) -> sqlx::Result<u64> {
    let retracted = sqlx::query("UPDATE sync_commits SET retracted = true WHERE NOT retracted AND NOT (sha = ANY($1))")
        .bind(reachable)
        .execute(&mut *connection)
        .await?;
    notify_change(&mut *connection).await?;
    Ok(retracted.rows_affected())
}

/// The slug a change is filed under: the persona's own, or for a file that
/// never parsed, its file name.
fn slug_of(change: &PersonaChange) -> String {
    match (&change.persona, &change.previous) {
        (Some(persona), _) => persona.slug.to_string(),
        (None, Some(previous)) => previous.slug.clone(),
        (None, None) => slug_of_path(&change.path),
    }
}

/// Writes the version rows of `changes` (in commit order) and everything that
/// hangs off them; returns how many new versions were written.
async fn project_changes(
    connection: &mut PgConnection,
    rows_connection: Option<&mut PgConnection>,
    written_so_far: &mut WrittenSoFar,
    changes: &[(&CommitRecord, &PersonaChange)],
) -> sqlx::Result<u64> {
    let written = insert_versions(connection, written_so_far, changes).await?;
    let mut rows = NormalizedRows::default();
    for &index in &written.fresh.change_indexes {
        if let Some(persona) = &changes[index].1.persona {
            rows.push(written.version_ids[index], persona);
        }
    }
    match rows_connection {
        // The two connections' statements run at once: the rows are about a
        // quarter of a catch-up's database time.
        Some(rows_connection) => {
            let (rows_inserted, linked) = tokio::join!(
                rows.insert(rows_connection),
                link_versions(connection, written_so_far, changes, &written)
            );
            rows_inserted?;
            linked?;
        }
        None => {
            rows.insert(&mut *connection).await?;
            link_versions(connection, written_so_far, changes, &written).await?;
        }
    }
    Ok(written.inserted)
}

/// What one sync has written so far, so that its later runs need not ask the
/// database again (at 10,000 personas × 10, the version numbers' query and
/// the slugs already recorded were 1.5 s of a 19 s sync). It lives as long as
/// one sync, and a sync ends at its first failed run, so it never holds a
/// write that was rolled back.
#[derive(Default)]
pub struct WrittenSoFar {
    /// The personas this sync has seen (all stored), and the number each
    /// one's next version takes.
    next_numbers: HashMap<Uuid, i32>,
    /// The (slug, persona) pairs recorded in `persona_slugs`.
    slugs: HashSet<(String, Uuid)>,
}

/// The versions a run wrote (or revived), each field by change index.
struct WrittenVersions {
    slugs: Vec<String>,
    persona_ids: Vec<Uuid>,
    version_ids: Vec<i64>,
    fresh: NewVersions,
    inserted: u64,
}

/// The personas first seen in the run, and a version per change (a commit
/// seen before, after a force-push, revives its retracted version).
async fn insert_versions(
    connection: &mut PgConnection,
    written_so_far: &mut WrittenSoFar,
    changes: &[(&CommitRecord, &PersonaChange)],
) -> sqlx::Result<WrittenVersions> {
    let slugs: Vec<String> = changes.iter().map(|(_, change)| slug_of(change)).collect();

    // Personas seen for the first time: created at their first commit.
    let mut first_seen: HashMap<Uuid, usize> = HashMap::new();
    for (index, (_, change)) in changes.iter().enumerate() {
        first_seen.entry(change.persona_id.0).or_insert(index);
    }
    let mut new_ids = Vec::new();
    let mut new_slugs = Vec::new();
    let mut new_created = Vec::new();
    for (&id, &index) in &first_seen {
        if written_so_far.next_numbers.contains_key(&id) {
            continue;
        }
        new_ids.push(id);
        new_slugs.push(slugs[index].clone());
        new_created.push(changes[index].0.commit.committed_at);
    }
    sqlx::query(
        "INSERT INTO personas (id, slug, created_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&new_ids)
    .bind(&new_slugs)
    .bind(&new_created)
    .execute(&mut *connection)
    .await?;

    // A commit that reappears after a force-push revives its retracted
    // version instead of creating a second one.
    let keys_persona: Vec<Uuid> = changes.iter().map(|(_, change)| change.persona_id.0).collect();
    let keys_commit: Vec<&str> = changes.iter().map(|(record, _)| record.commit.id.as_str()).collect();
    let existing: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "UPDATE persona_versions v SET retracted = false
         FROM UNNEST($1::uuid[], $2::text[]) AS wanted (persona_id, commit_sha)
         WHERE v.persona_id = wanted.persona_id AND v.commit_sha = wanted.commit_sha
         RETURNING v.persona_id, v.commit_sha, v.id",
    )
    .bind(&keys_persona)
    .bind(&keys_commit)
    .fetch_all(&mut *connection)
    .await?;
    let mut stored_ids: HashMap<(Uuid, String), i64> = existing
        .into_iter()
        .map(|(persona, commit, id)| ((persona, commit), id))
        .collect();

    // Version numbers continue from each persona's newest stored version
    // (asked of the database for the personas this sync has not seen yet).
    let unseen: Vec<Uuid> = first_seen
        .keys()
        .filter(|id| !written_so_far.next_numbers.contains_key(id))
        .copied()
        .collect();
    let newest: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT persona_id, max(version_no) FROM persona_versions WHERE persona_id = ANY($1) GROUP BY persona_id",
    )
    .bind(&unseen)
    .fetch_all(&mut *connection)
    .await?;
    let next_number = &mut written_so_far.next_numbers;
    for id in unseen {
        next_number.insert(id, 1);
    }
    next_number.extend(newest.into_iter().map(|(id, number)| (id, number + 1)));

    let mut fresh = NewVersions::default();
    for (index, (record, change)) in changes.iter().enumerate() {
        let persona_id = change.persona_id.0;
        if stored_ids.contains_key(&(persona_id, record.commit.id.clone())) {
            continue;
        }
        let number = next_number.entry(persona_id).or_insert(1);
        fresh.push(index, *number, record, change, &slugs[index]);
        *number += 1;
    }
    let inserted_ids: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "INSERT INTO persona_versions
             (persona_id, version_no, commit_sha, author_name, author_email, authored_at, committed_at,
              message, change_kind, slug, path, content_hash, document, document_json)
         SELECT persona_id, version_no, commit_sha, author_name, author_email, authored_at, committed_at,
                message, change_kind, slug, path, content_hash, document_json::jsonb, document_json
         FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
              AS new (persona_id, version_no, commit_sha, author_name, author_email, authored_at, committed_at,
                      message, change_kind, slug, path, content_hash, document_json)
         RETURNING persona_id, commit_sha, id",
    )
    .bind(&fresh.persona_ids)
    .bind(&fresh.numbers)
    .bind(&fresh.commits)
    .bind(&fresh.author_names)
    .bind(&fresh.author_emails)
    .bind(&fresh.authored_at)
    .bind(&fresh.committed_at)
    .bind(&fresh.messages)
    .bind(&fresh.kinds)
    .bind(&fresh.slugs)
    .bind(&fresh.paths)
    .bind(&fresh.hashes)
    .bind(&fresh.documents)
    .fetch_all(&mut *connection)
    .await?;
    let inserted = inserted_ids.len() as u64;
    stored_ids.extend(
        inserted_ids
            .into_iter()
            .map(|(persona, commit, id)| ((persona, commit), id)),
    );
    let version_ids = changes
        .iter()
        .map(|(record, change)| stored_ids[&(change.persona_id.0, record.commit.id.clone())])
        .collect();
    Ok(WrittenVersions {
        slugs,
        persona_ids: keys_persona,
        version_ids,
        fresh,
        inserted,
    })
}

/// Everything that points at the run's versions: slug history, head
/// pointers, outbox rows and change events.
async fn link_versions(
    connection: &mut PgConnection,
    written_so_far: &mut WrittenSoFar,
    changes: &[(&CommitRecord, &PersonaChange)],
    written: &WrittenVersions,
) -> sqlx::Result<()> {
    let WrittenVersions {
        slugs,
        persona_ids,
        version_ids,
        fresh,
        ..
    } = written;
    let mut slug_rows: HashMap<(String, Uuid), i64> = HashMap::new();
    for &index in &fresh.change_indexes {
        if let Some(persona) = &changes[index].1.persona {
            let key = (slugs[index].clone(), persona.id.0);
            if !written_so_far.slugs.contains(&key) {
                slug_rows.entry(key).or_insert(version_ids[index]);
            }
        }
    }
    written_so_far.slugs.extend(slug_rows.keys().cloned());
    let (slug_names, (slug_personas, slug_versions)): (Vec<String>, (Vec<Uuid>, Vec<i64>)) = slug_rows
        .into_iter()
        .map(|((slug, persona), version)| (slug, (persona, version)))
        .unzip();
    sqlx::query(
        "INSERT INTO persona_slugs (slug, persona_id, first_version_id)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::int8[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&slug_names)
    .bind(&slug_personas)
    .bind(&slug_versions)
    .execute(&mut *connection)
    .await?;

    // Head pointers: each persona's last change in the run.
    let mut head: HashMap<Uuid, usize> = HashMap::new();
    for (index, (_, change)) in changes.iter().enumerate() {
        head.insert(change.persona_id.0, index);
    }
    let mut head_ids = Vec::new();
    let mut head_versions = Vec::new();
    let mut head_slugs = Vec::new();
    let mut head_deleted = Vec::new();
    for (&id, &index) in &head {
        head_ids.push(id);
        head_versions.push(version_ids[index]);
        head_slugs.push(slugs[index].clone());
        head_deleted.push(changes[index].1.kind == ChangeKind::Deleted);
    }
    sqlx::query(
        "UPDATE personas p SET current_version_id = head.version_id, slug = head.slug, deleted = head.deleted
         FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::bool[]) AS head (id, version_id, slug, deleted)
         WHERE p.id = head.id",
    )
    .bind(&head_ids)
    .bind(&head_versions)
    .bind(&head_slugs)
    .bind(&head_deleted)
    .execute(&mut *connection)
    .await?;

    // One outbox row per change, in commit order, so the vector index sees
    // the same sequence however the commits were grouped into runs.
    let outbox_ops: Vec<&str> = changes
        .iter()
        .map(|(_, change)| vector_op(change.kind == ChangeKind::Deleted))
        .collect();
    sqlx::query(
        "INSERT INTO vector_outbox (persona_id, version_id, op)
         SELECT persona, version, op FROM UNNEST($1::uuid[], $2::int8[], $3::text[])
             WITH ORDINALITY AS change (persona, version, op, position)
         ORDER BY position",
    )
    .bind(persona_ids)
    .bind(version_ids)
    .bind(&outbox_ops)
    .execute(&mut *connection)
    .await?;

    // Change notifications for the versions written just now (a version
    // projected before is not announced again).
    let events: Vec<NewEvent> = fresh
        .change_indexes
        .iter()
        .zip(&fresh.numbers)
        .map(|(&index, &number)| {
            let (record, change) = changes[index];
            version_event(record, change, number, &slugs[index])
        })
        .collect();
    insert_events(connection, &events).await?;
    Ok(())
}

/// `version.created` or `persona.deleted`, with everything a consumer needs.
fn version_event(record: &CommitRecord, change: &PersonaChange, number: i32, slug: &str) -> NewEvent {
    let deleted = change.kind == ChangeKind::Deleted;
    let name = match (&change.persona, &change.previous) {
        (Some(persona), _) => Some(persona.name.as_str()),
        (None, previous) => previous.as_ref().map(|previous| previous.name.as_str()),
    };
    let persona_id = change.persona_id.0;
    NewEvent::new(
        if deleted { "persona.deleted" } else { "version.created" },
        &[&persona_id.to_string(), &record.commit.id],
        &record.commit,
        Some(persona_id),
        serde_json::json!({
            "persona": persona_json(persona_id, slug, name),
            "version": {
                "number": number,
                "content_hash": change.content_hash.map(|hash| hash.to_string()),
                "change": change.kind.as_str(),
                "path": change.path,
                "previous_path": change.previous_path,
                "url": format!("/api/personas/{slug}@{number}"),
            },
        }),
    )
}

fn vector_op(deleted: bool) -> &'static str {
    if deleted { "delete" } else { "upsert" }
}

/// Column arrays of the version rows one run inserts.
#[derive(Default)]
struct NewVersions {
    /// Index into the run's changes of each row.
    change_indexes: Vec<usize>,
    persona_ids: Vec<Uuid>,
    numbers: Vec<i32>,
    commits: Vec<String>,
    author_names: Vec<String>,
    author_emails: Vec<String>,
    authored_at: Vec<chrono::DateTime<chrono::FixedOffset>>,
    committed_at: Vec<chrono::DateTime<chrono::FixedOffset>>,
    messages: Vec<String>,
    kinds: Vec<&'static str>,
    slugs: Vec<String>,
    paths: Vec<String>,
    hashes: Vec<Option<String>>,
    /// Each document as the API answers with it, stored as text beside
    /// the JSONB parsed from it.
    documents: Vec<Option<String>>,
}

impl NewVersions {
    fn push(&mut self, index: usize, number: i32, record: &CommitRecord, change: &PersonaChange, slug: &str) {
        let commit = &record.commit;
        self.change_indexes.push(index);
        self.persona_ids.push(change.persona_id.0);
        self.numbers.push(number);
        self.commits.push(commit.id.clone());
        self.author_names.push(commit.author_name.clone());
        self.author_emails.push(commit.author_email.clone());
        self.authored_at.push(commit.authored_at);
        self.committed_at.push(commit.committed_at);
        self.messages.push(commit.message.clone());
        self.kinds.push(change.kind.as_str());
        self.slugs.push(slug.to_string());
        self.paths.push(change.path.clone());
        self.hashes.push(change.content_hash.map(|hash| hash.to_string()));
        self.documents.push(change.persona.as_deref().map(document_text));
    }
}

/// A file's validation errors are those of the last commit in the run that
/// checked it: earlier rows for the file are replaced.
async fn replace_sync_errors(connection: &mut PgConnection, records: &[CommitRecord]) -> sqlx::Result<u64> {
    let mut last_check: HashMap<&str, usize> = HashMap::new();
    for (index, record) in records.iter().enumerate() {
        let problem_paths = record.problems.iter().map(|problem| problem.path.as_str());
        for path in record.checked_paths.iter().map(String::as_str).chain(problem_paths) {
            last_check.insert(path, index);
        }
    }
    let checked: Vec<&str> = last_check.keys().copied().collect();
    if !checked.is_empty() {
        sqlx::query("DELETE FROM sync_errors WHERE path = ANY($1)")
            .bind(&checked)
            .execute(&mut *connection)
            .await?;
    }
    let mut errors = ErrorRows::default();
    let mut count = 0;
    for (index, record) in records.iter().enumerate() {
        for problem in &record.problems {
            count += problem.diagnostics.len() as u64;
            if last_check[problem.path.as_str()] != index {
                continue;
            }
            for diagnostic in &problem.diagnostics {
                errors.commits.push(record.commit.id.as_str());
                errors.paths.push(diagnostic.file.as_str());
                errors.personas.push(problem.persona_id.map(|id| id.0));
                errors.lines.push(diagnostic.line as i32);
                errors.columns.push(diagnostic.column as i32);
                errors.codes.push(diagnostic.code.as_str());
                errors.messages.push(diagnostic.message.as_str());
            }
        }
    }
    if !errors.commits.is_empty() {
        sqlx::query(
            "INSERT INTO sync_errors (commit_sha, path, persona_id, line, col, code, message)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int4[], $5::int4[], $6::text[], $7::text[])",
        )
        .bind(&errors.commits)
        .bind(&errors.paths)
        .bind(&errors.personas)
        .bind(&errors.lines)
        .bind(&errors.columns)
        .bind(&errors.codes)
        .bind(&errors.messages)
        .execute(&mut *connection)
        .await?;
    }
    Ok(count)
}

#[derive(Default)]
struct ErrorRows<'a> {
    commits: Vec<&'a str>,
    paths: Vec<&'a str>,
    personas: Vec<Option<Uuid>>,
    lines: Vec<i32>,
    columns: Vec<i32>,
    codes: Vec<&'static str>,
    messages: Vec<&'a str>,
}

/// Deletes the normalized rows of versions that were never committed: rows
/// written beside a run whose own transaction then failed (see
/// [`project_commits`]). Versions are never deleted and their ids only grow, and
/// the single writer runs this under its lock before writing, so such rows
/// are exactly those above the newest stored version. Returns how many.
pub async fn remove_rows_of_unwritten_versions(connection: &mut PgConnection) -> sqlx::Result<i64> {
    // The newest id is bound as a value, not read by a subquery: given only
    // `version_id > (subquery)`, the planner guesses a third of each table
    // and scanned all of persona_traits, 51 ms of every followed commit at
    // 100,000 versions; with the value it walks each index from its end.
    let newest: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM persona_versions")
        .fetch_one(&mut *connection)
        .await?;
    sqlx::query_scalar(
        "WITH traits AS (DELETE FROM persona_traits WHERE version_id > $1 RETURNING 1),
              beliefs AS (DELETE FROM persona_beliefs WHERE version_id > $1 RETURNING 1),
              modes AS (DELETE FROM persona_modes WHERE version_id > $1 RETURNING 1),
              domains AS (DELETE FROM persona_domains WHERE version_id > $1 RETURNING 1),
              phrases AS (DELETE FROM persona_phrases WHERE version_id > $1 RETURNING 1),
              config AS (DELETE FROM persona_config WHERE version_id > $1 RETURNING 1)
         SELECT (SELECT count(*) FROM traits) + (SELECT count(*) FROM beliefs) + (SELECT count(*) FROM modes)
              + (SELECT count(*) FROM domains) + (SELECT count(*) FROM phrases) + (SELECT count(*) FROM config)",
    )
    .bind(newest)
    .fetch_one(connection)
    .await
}

/// A version's document as the API answers with it: what a pinned read by
/// id passes through.
fn document_text(persona: &Persona) -> String {
    serde_json::to_string(persona).expect("a persona always serializes to JSON")
}

/// Stores the answer text of the versions projected before it was stored
/// (migration 0012), so that their pinned reads pass it through too; each
/// is parsed from its JSONB and encoded as a new version's is. A partial
/// index finds them, so once none is left this costs one empty probe. A
/// document that no longer parses is left as it was (its reads parse the
/// JSONB and say why) and the rest are stored. Returns how many were.
pub async fn store_missing_document_texts(connection: &mut PgConnection) -> sqlx::Result<u64> {
    const BATCH: i64 = 2_000;
    let (mut stored, mut after) = (0, 0_i64);
    loop {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, document::text FROM persona_versions
             WHERE document_json IS NULL AND document IS NOT NULL AND id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(BATCH)
        .fetch_all(&mut *connection)
        .await?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(stored);
        };
        after = last;
        let (ids, texts): (Vec<i64>, Vec<String>) = rows
            .into_iter()
            .filter_map(|(id, jsonb)| match serde_json::from_str::<Persona>(&jsonb) {
                Ok(persona) => Some((id, document_text(&persona))),
                Err(error) => {
                    tracing::warn!(version_id = id, %error, "a stored document does not parse; its answer text is left unstored");
                    None
                }
            })
            .unzip();
        stored += sqlx::query(
            "UPDATE persona_versions v SET document_json = stored.text
             FROM unnest($1::int8[], $2::text[]) AS stored (id, text) WHERE v.id = stored.id",
        )
        .bind(&ids)
        .bind(&texts)
        .execute(&mut *connection)
        .await?
        .rows_affected();
    }
}

/// Brings the full-text index of current versions up to date: personas
/// whose current version changed since their text was last indexed. Run at
/// the end of every sync (and so after a crash, by the next one), it
/// tokenizes each persona once however many versions the sync wrote. With a
/// `helper` connection, half the personas are tokenized there at the same
/// time (each statement commits on its own, and the halves share no row).
pub async fn refresh_search(connection: &mut PgConnection, helper: Option<&mut PgConnection>) -> sqlx::Result<u64> {
    // The stale personas first, then only those by id: in one statement the
    // planner cannot tell that few are stale (after a followed commit, one),
    // and hashes every version of the registry to find theirs.
    let stale: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM personas WHERE search_version_id IS DISTINCT FROM current_version_id")
            .fetch_all(&mut *connection)
            .await?;
    match helper {
        Some(helper) if stale.len() >= 2 => {
            let (first, second) = stale.split_at(stale.len() / 2);
            let (first, second) = tokio::join!(refresh_search_of(connection, first), refresh_search_of(helper, second));
            Ok(first? + second?)
        }
        _ => refresh_search_of(connection, &stale).await,
    }
}

async fn refresh_search_of(connection: &mut PgConnection, personas: &[Uuid]) -> sqlx::Result<u64> {
    if personas.is_empty() {
        return Ok(0);
    }
    let result = sqlx::query(
        "UPDATE personas p SET search_vector = CASE WHEN p.deleted OR v.document IS NULL THEN ''::tsvector
                                               ELSE persona_search_vector('english', v.document) END,
                               exact_vector = CASE WHEN p.deleted OR v.document IS NULL THEN ''::tsvector
                                              ELSE persona_search_vector('personas_exact', v.document) END,
                               search_version_id = v.id
         FROM persona_versions v
         WHERE p.id = ANY($1) AND v.id = p.current_version_id
           AND p.search_version_id IS DISTINCT FROM p.current_version_id",
    )
    .bind(personas)
    .execute(connection)
    .await?;
    Ok(result.rows_affected())
}

pub async fn set_cursor(connection: &mut PgConnection, branch: &str, commit: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sync_state (branch, last_commit, updated_at) VALUES ($1, $2, now())
         ON CONFLICT (branch) DO UPDATE SET last_commit = excluded.last_commit, updated_at = now()",
    )
    .bind(branch)
    .bind(commit)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn cursor(connection: &mut PgConnection, branch: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT last_commit FROM sync_state WHERE branch = $1")
        .bind(branch)
        .fetch_optional(connection)
        .await
}

fn slug_of_path(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".toml").unwrap_or(name).to_string()
}

/// The seed's relational rows for a run of versions, as column arrays so each
/// table takes one statement.
#[derive(Default)]
struct NormalizedRows {
    trait_versions: Vec<i64>,
    trait_types: Vec<String>,
    trait_names: Vec<String>,
    trait_values: Vec<f64>,
    belief_versions: Vec<i64>,
    belief_positions: Vec<i32>,
    beliefs: Vec<String>,
    belief_sources: Vec<Option<String>>,
    mode_versions: Vec<i64>,
    modes: Vec<String>,
    mode_enabled: Vec<bool>,
    domain_versions: Vec<i64>,
    domain_positions: Vec<i32>,
    domains: Vec<String>,
    phrase_versions: Vec<i64>,
    phrase_positions: Vec<i32>,
    phrases: Vec<String>,
    config_versions: Vec<i64>,
    humor: Vec<String>,
    emotion: Vec<String>,
    language: Vec<String>,
    voice: Vec<bool>,
    default_mode: Vec<Option<String>>,
}

impl NormalizedRows {
    fn push(&mut self, version_id: i64, persona: &Persona) {
        for (trait_type, traits) in &persona.traits {
            for (name, value) in traits {
                self.trait_versions.push(version_id);
                self.trait_types.push(trait_type.clone());
                self.trait_names.push(name.clone());
                self.trait_values.push(*value);
            }
        }
        for (position, belief) in persona.beliefs.iter().enumerate() {
            self.belief_versions.push(version_id);
            self.belief_positions.push(position as i32);
            self.beliefs.push(belief.text.clone());
            self.belief_sources.push(belief.source.clone());
        }
        for (mode, enabled) in &persona.modes {
            self.mode_versions.push(version_id);
            self.modes.push(mode.clone());
            self.mode_enabled.push(*enabled);
        }
        for (position, domain) in persona.domains.iter().enumerate() {
            self.domain_versions.push(version_id);
            self.domain_positions.push(position as i32);
            self.domains.push(domain.clone());
        }
        for (position, phrase) in persona.signature_phrases.iter().enumerate() {
            self.phrase_versions.push(version_id);
            self.phrase_positions.push(position as i32);
            self.phrases.push(phrase.clone());
        }
        let config = &persona.config;
        self.config_versions.push(version_id);
        self.humor.push(config.humor_usage.to_string());
        self.emotion.push(config.emotional_style.to_string());
        self.language.push(config.language_style.to_string());
        self.voice.push(config.voice_enabled);
        self.default_mode.push(persona.default_mode.clone());
    }

    async fn insert(&self, connection: &mut PgConnection) -> sqlx::Result<()> {
        if self.config_versions.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO persona_traits (version_id, trait_type, trait_name, value)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::float8[])",
        )
        .bind(&self.trait_versions)
        .bind(&self.trait_types)
        .bind(&self.trait_names)
        .bind(&self.trait_values)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO persona_beliefs (version_id, position, belief, source)
             SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::text[], $4::text[])",
        )
        .bind(&self.belief_versions)
        .bind(&self.belief_positions)
        .bind(&self.beliefs)
        .bind(&self.belief_sources)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO persona_modes (version_id, mode, enabled)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::bool[])",
        )
        .bind(&self.mode_versions)
        .bind(&self.modes)
        .bind(&self.mode_enabled)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO persona_domains (version_id, position, domain)
             SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::text[])",
        )
        .bind(&self.domain_versions)
        .bind(&self.domain_positions)
        .bind(&self.domains)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO persona_phrases (version_id, position, phrase)
             SELECT * FROM UNNEST($1::int8[], $2::int4[], $3::text[])",
        )
        .bind(&self.phrase_versions)
        .bind(&self.phrase_positions)
        .bind(&self.phrases)
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO persona_config (version_id, humor_usage, emotional_style, language_style, voice_enabled, default_mode)
             SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[])",
        )
        .bind(&self.config_versions)
        .bind(&self.humor)
        .bind(&self.emotion)
        .bind(&self.language)
        .bind(&self.voice)
        .bind(&self.default_mode)
        .execute(&mut *connection)
        .await?;
        Ok(())
    }
}

/// Marks the versions of commits that are no longer reachable as retracted,
/// and points each affected persona back at its newest surviving version.
/// Returns how many versions were retracted.
pub async fn retract_commits(connection: &mut PgConnection, commits: &[String]) -> sqlx::Result<u64> {
    type Retracted = (
        Uuid,
        i32,
        String,
        String,
        Option<String>,
        String,
        String,
        chrono::DateTime<chrono::Utc>,
    );
    let retracted: Vec<Retracted> = sqlx::query_as(
        "UPDATE persona_versions SET retracted = true
         WHERE commit_sha = ANY($1) AND NOT retracted
         RETURNING persona_id, version_no, slug, commit_sha, content_hash, author_name, author_email, committed_at",
    )
    .bind(commits)
    .fetch_all(&mut *connection)
    .await?;
    let count = retracted.len() as u64;
    // Announced with the tip that dropped them, so a version retracted,
    // revived and retracted again is announced each time.
    let tip: Option<String> = sqlx::query_scalar("SELECT last_commit FROM sync_state LIMIT 1")
        .fetch_optional(&mut *connection)
        .await?;
    let events: Vec<NewEvent> = retracted
        .iter()
        .map(
            |(persona, number, slug, commit, hash, author_name, author_email, committed_at)| {
                NewEvent::about(
                    "version.retracted",
                    &[&persona.to_string(), commit, tip.as_deref().unwrap_or_default()],
                    commit,
                    serde_json::json!({
                        "sha": commit,
                        "author_name": author_name,
                        "author_email": author_email,
                        "committed_at": committed_at.to_rfc3339(),
                    }),
                    Some(*persona),
                    serde_json::json!({
                        "persona": persona_json(*persona, slug, None),
                        "version": {"number": number, "content_hash": hash, "retracted": true},
                        "reason": "the commit is no longer on the followed branch (history was rewritten)",
                    }),
                )
            },
        )
        .collect();
    insert_events(connection, &events).await?;
    let mut personas: Vec<Uuid> = retracted.iter().map(|row| row.0).collect();
    personas.sort();
    personas.dedup();
    for persona_id in personas {
        // With no surviving version the persona never existed on this history: hide it.
        let (current, deleted): (Option<i64>, bool) = sqlx::query_as(
            "UPDATE personas p SET
                 current_version_id = latest.id,
                 slug = coalesce(latest.slug, p.slug),
                 deleted = coalesce(latest.change_kind = 'deleted', true)
             FROM (SELECT $1::uuid AS persona_id) target
             LEFT JOIN LATERAL (
                 SELECT id, slug, change_kind FROM persona_versions
                 WHERE persona_id = $1 AND NOT retracted
                 ORDER BY version_no DESC LIMIT 1
             ) latest ON true
             WHERE p.id = target.persona_id
             RETURNING p.current_version_id, p.deleted",
        )
        .bind(persona_id)
        .fetch_one(&mut *connection)
        .await?;
        sqlx::query("INSERT INTO vector_outbox (persona_id, version_id, op) VALUES ($1, $2, $3)")
            .bind(persona_id)
            .bind(current)
            .bind(vector_op(deleted))
            .execute(&mut *connection)
            .await?;
    }
    Ok(count)
}
