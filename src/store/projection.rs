//! Writes of the projection: one commit's changes, problems and cursor in the
//! caller's transaction, plus retraction after rewritten history.

use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::git::history::{ChangeKind, CommitRecord, PersonaChange};
use crate::persona::{Persona, canonical};

/// What one projected commit added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    pub versions: u64,
    pub errors: u64,
}

/// Projects one commit: versions and their normalized rows, head pointers,
/// slug history, validation errors, outbox rows and the cursor. Re-projecting
/// a commit that is already there changes nothing.
#[tracing::instrument(skip_all, fields(commit = %record.commit.id))]
pub async fn project_commit(
    connection: &mut PgConnection,
    branch: &str,
    record: &CommitRecord,
) -> sqlx::Result<CommitStats> {
    let mut stats = CommitStats::default();
    for change in &record.changes {
        if project_change(connection, record, change).await? {
            stats.versions += 1;
        }
    }
    if !record.checked_paths.is_empty() {
        sqlx::query("DELETE FROM sync_errors WHERE path = ANY($1)")
            .bind(&record.checked_paths)
            .execute(&mut *connection)
            .await?;
    }
    for problem in &record.problems {
        for diagnostic in &problem.diagnostics {
            sqlx::query(
                "INSERT INTO sync_errors (commit_sha, path, persona_id, line, col, code, message)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&record.commit.id)
            .bind(&diagnostic.file)
            .bind(problem.persona_id.map(|id| id.0))
            .bind(diagnostic.line as i32)
            .bind(diagnostic.column as i32)
            .bind(diagnostic.code.as_str())
            .bind(&diagnostic.message)
            .execute(&mut *connection)
            .await?;
            stats.errors += 1;
        }
    }
    set_cursor(connection, branch, &record.commit.id).await?;
    Ok(stats)
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

/// Returns whether a new version row was written.
async fn project_change(
    connection: &mut PgConnection,
    record: &CommitRecord,
    change: &PersonaChange,
) -> sqlx::Result<bool> {
    let persona_id: Uuid = change.persona_id.0;
    let commit = &record.commit;
    let slug = change
        .persona
        .as_ref()
        .or(change.previous.as_ref())
        .map(|persona| persona.slug.to_string())
        .unwrap_or_else(|| slug_of_path(&change.path));
    sqlx::query(
        "INSERT INTO personas (id, slug, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(persona_id)
    .bind(&slug)
    .bind(commit.committed_at)
    .execute(&mut *connection)
    .await?;

    let document = change.persona.as_ref().map(canonical::canonical_value);
    let hash = change.content_hash.map(|hash| hash.to_string());
    // A commit that reappears after a force-push revives its retracted
    // version instead of creating a second one.
    let row = sqlx::query(
        "INSERT INTO persona_versions
             (persona_id, version_no, commit_sha, author_name, author_email, authored_at, committed_at,
              message, change_kind, slug, path, content_hash, document)
         VALUES ($1,
                 (SELECT coalesce(max(version_no), 0) + 1 FROM persona_versions WHERE persona_id = $1),
                 $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (persona_id, commit_sha) DO UPDATE SET retracted = false
         RETURNING id, (xmax = 0) AS inserted",
    )
    .bind(persona_id)
    .bind(&commit.id)
    .bind(&commit.author_name)
    .bind(&commit.author_email)
    .bind(commit.authored_at)
    .bind(commit.committed_at)
    .bind(&commit.message)
    .bind(change.kind.as_str())
    .bind(&slug)
    .bind(&change.path)
    .bind(&hash)
    .bind(&document)
    .fetch_one(&mut *connection)
    .await?;
    let version_id: i64 = row.get("id");
    let inserted: bool = row.get("inserted");

    if inserted && let Some(persona) = &change.persona {
        insert_normalized(connection, version_id, persona).await?;
        sqlx::query(
            "INSERT INTO persona_slugs (slug, persona_id, first_version_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(&slug)
        .bind(persona_id)
        .bind(version_id)
        .execute(&mut *connection)
        .await?;
    }
    let deleted = change.kind == ChangeKind::Deleted;
    sqlx::query("UPDATE personas SET current_version_id = $2, slug = $3, deleted = $4 WHERE id = $1")
        .bind(persona_id)
        .bind(version_id)
        .bind(&slug)
        .bind(deleted)
        .execute(&mut *connection)
        .await?;
    enqueue_vector_update(connection, persona_id, version_id, deleted).await?;
    Ok(inserted)
}

async fn enqueue_vector_update(
    connection: &mut PgConnection,
    persona_id: Uuid,
    version_id: i64,
    deleted: bool,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO vector_outbox (persona_id, version_id, op) VALUES ($1, $2, $3)")
        .bind(persona_id)
        .bind(version_id)
        .bind(if deleted { "delete" } else { "upsert" })
        .execute(connection)
        .await?;
    Ok(())
}

fn slug_of_path(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".toml").unwrap_or(name).to_string()
}

/// The seed's relational rows for one version, written with one statement per table.
async fn insert_normalized(connection: &mut PgConnection, version_id: i64, persona: &Persona) -> sqlx::Result<()> {
    let (mut types, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (trait_type, traits) in &persona.traits {
        for (name, value) in traits {
            types.push(trait_type.clone());
            names.push(name.clone());
            values.push(*value);
        }
    }
    sqlx::query(
        "INSERT INTO persona_traits (version_id, trait_type, trait_name, value)
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::float8[])",
    )
    .bind(version_id)
    .bind(&types)
    .bind(&names)
    .bind(&values)
    .execute(&mut *connection)
    .await?;

    let positions = |count: usize| (0..count as i32).collect::<Vec<i32>>();
    let beliefs: Vec<&str> = persona.beliefs.iter().map(|b| b.text.as_str()).collect();
    let sources: Vec<Option<&str>> = persona.beliefs.iter().map(|b| b.source.as_deref()).collect();
    sqlx::query(
        "INSERT INTO persona_beliefs (version_id, position, belief, source)
         SELECT $1, * FROM UNNEST($2::int4[], $3::text[], $4::text[])",
    )
    .bind(version_id)
    .bind(positions(beliefs.len()))
    .bind(&beliefs)
    .bind(&sources)
    .execute(&mut *connection)
    .await?;

    let modes: Vec<&str> = persona.modes.keys().map(String::as_str).collect();
    let enabled: Vec<bool> = persona.modes.values().copied().collect();
    sqlx::query(
        "INSERT INTO persona_modes (version_id, mode, enabled)
         SELECT $1, * FROM UNNEST($2::text[], $3::bool[])",
    )
    .bind(version_id)
    .bind(&modes)
    .bind(&enabled)
    .execute(&mut *connection)
    .await?;

    sqlx::query(
        "INSERT INTO persona_domains (version_id, position, domain)
         SELECT $1, * FROM UNNEST($2::int4[], $3::text[])",
    )
    .bind(version_id)
    .bind(positions(persona.domains.len()))
    .bind(&persona.domains)
    .execute(&mut *connection)
    .await?;

    sqlx::query(
        "INSERT INTO persona_phrases (version_id, position, phrase)
         SELECT $1, * FROM UNNEST($2::int4[], $3::text[])",
    )
    .bind(version_id)
    .bind(positions(persona.signature_phrases.len()))
    .bind(&persona.signature_phrases)
    .execute(&mut *connection)
    .await?;

    let config = &persona.config;
    sqlx::query(
        "INSERT INTO persona_config (version_id, humor_usage, emotional_style, language_style, voice_enabled, default_mode)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(version_id)
    .bind(config.humor_usage.to_string())
    .bind(config.emotional_style.to_string())
    .bind(config.language_style.to_string())
    .bind(config.voice_enabled)
    .bind(&persona.default_mode)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Marks the versions of commits that are no longer reachable as retracted,
/// and points each affected persona back at its newest surviving version.
/// Returns how many versions were retracted.
pub async fn retract_commits(connection: &mut PgConnection, commits: &[String]) -> sqlx::Result<u64> {
    let affected: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE persona_versions SET retracted = true
         WHERE commit_sha = ANY($1) AND NOT retracted
         RETURNING persona_id",
    )
    .bind(commits)
    .fetch_all(&mut *connection)
    .await?;
    let count = affected.len() as u64;
    let mut personas = affected;
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
            .bind(if deleted { "delete" } else { "upsert" })
            .execute(&mut *connection)
            .await?;
    }
    Ok(count)
}
