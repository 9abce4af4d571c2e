//! Profiles in the projection: the revision the sync records for each
//! commit that changes a profile file, and the history read back from those
//! rows. Where a profile stands now is `registry_profiles` (what a read with
//! `?profile=` applies); this is how it got there.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::persona::profile::Profile;

/// Records the profile `slug` as commit `commit` leaves it (`None`: removed,
/// or no longer valid). A walk resumed mid-history, or new registry
/// settings, present an unchanged profile again: a row is written only when
/// the document differs from the revision in force before this commit, so
/// each row names a commit that really changed the profile.
pub async fn record_profile_revision(
    connection: &mut PgConnection,
    commit: &str,
    slug: &str,
    profile: Option<&Profile>,
) -> sqlx::Result<()> {
    let document = profile.map(sqlx::types::Json);
    sqlx::query(
        "INSERT INTO profile_revisions (commit_sha, slug, document)
         SELECT $1, $2, $3
         WHERE (
             SELECT r.document FROM profile_revisions r JOIN sync_commits c ON c.sha = r.commit_sha
             WHERE r.slug = $2 AND NOT c.retracted
               AND c.seq < (SELECT seq FROM sync_commits WHERE sha = $1)
             ORDER BY c.seq DESC LIMIT 1
         ) IS DISTINCT FROM $3::jsonb
         ON CONFLICT (commit_sha, slug) DO UPDATE SET document = excluded.document",
    )
    .bind(commit)
    .bind(slug)
    .bind(document)
    .execute(connection)
    .await?;
    Ok(())
}

/// What a revision did to the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProfileChange {
    Added,
    Modified,
    Deleted,
}

impl ProfileChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileChange::Added => "added",
            ProfileChange::Modified => "modified",
            ProfileChange::Deleted => "deleted",
        }
    }
}

/// One commit that changed a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRevision {
    pub change: ProfileChange,
    /// The profile as the commit left it; `None` when it deleted it.
    pub profile: Option<Profile>,
    pub commit: String,
    pub author_name: String,
    pub author_email: String,
    pub committed_at: DateTime<Utc>,
    pub message: String,
    /// The commit is no longer on the followed branch (history was rewritten).
    pub retracted: bool,
}

type HistoryRow = (
    Option<sqlx::types::Json<Profile>>,
    String,
    String,
    String,
    DateTime<Utc>,
    String,
    bool,
);

/// Every change of the profile `slug`, newest first; empty when no profile
/// of that name was ever projected. A row whose document equals the one in
/// force before it is no change (the rows a migration seeds from the
/// current profiles, before a replay fills in what came earlier) and is
/// left out. Retracted commits are listed and marked, and are not what
/// later rows are compared with.
pub async fn profile_history(pool: &PgPool, slug: &str) -> sqlx::Result<Vec<ProfileRevision>> {
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT r.document, r.commit_sha, c.author_name, c.author_email, c.committed_at, c.message, c.retracted
         FROM profile_revisions r JOIN sync_commits c ON c.sha = r.commit_sha
         WHERE r.slug = $1 ORDER BY c.seq",
    )
    .bind(slug)
    .fetch_all(pool)
    .await?;
    let mut in_force: Option<Profile> = None;
    let mut history = Vec::new();
    for (document, commit, author_name, author_email, committed_at, message, retracted) in rows {
        let profile = document.map(|document| document.0);
        let change = match (&in_force, &profile) {
            (None, Some(_)) => ProfileChange::Added,
            (Some(before), Some(after)) if before != after => ProfileChange::Modified,
            (Some(_), None) => ProfileChange::Deleted,
            _ => continue,
        };
        if !retracted {
            in_force = profile.clone();
        }
        history.push(ProfileRevision {
            change,
            profile,
            commit,
            author_name,
            author_email,
            committed_at,
            message,
            retracted,
        });
    }
    history.reverse();
    Ok(history)
}
