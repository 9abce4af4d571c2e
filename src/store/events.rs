//! Change notifications: the events the projection writes into
//! `change_events` in its own transaction, so exactly what was committed is
//! announced, and nothing for what was rolled back. Webhook delivery reads
//! them in `seq` order.
//!
//! Every payload is complete (no second request needed) and carries an id
//! derived from what it announces, so a projection rebuilt from git writes
//! the same ids and a consumer can deduplicate deliveries.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::git::history::CommitInfo;

/// The kinds of event, as stored and as sent in `X-Personas-Event`.
pub const KINDS: [&str; 5] = [
    "version.created",
    "persona.deleted",
    "version.retracted",
    "label.moved",
    "experiment.changed",
];

/// An event about to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: Uuid,
    pub kind: &'static str,
    pub commit_sha: String,
    pub persona_id: Option<Uuid>,
    pub payload: Value,
}

/// A stable id: the same announcement always gets the same id.
pub fn event_id(kind: &str, parts: &[&str]) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    for part in parts {
        hasher.update([0]);
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

pub fn commit_json(commit: &CommitInfo) -> Value {
    json!({
        "sha": commit.id,
        "author_name": commit.author_name,
        "author_email": commit.author_email,
        "committed_at": commit.committed_at.to_rfc3339(),
        "message": commit.message,
    })
}

/// The persona part of a payload.
pub fn persona_json(id: Uuid, slug: &str, name: Option<&str>) -> Value {
    json!({ "id": id, "slug": slug, "name": name })
}

impl NewEvent {
    /// An event whose payload is `body` plus its id and type.
    pub fn new(
        kind: &'static str,
        id_parts: &[&str],
        commit: &CommitInfo,
        persona_id: Option<Uuid>,
        body: Value,
    ) -> NewEvent {
        NewEvent::about(kind, id_parts, &commit.id, commit_json(commit), persona_id, body)
    }

    /// Like [`NewEvent::new`], with the commit part given as JSON.
    pub fn about(
        kind: &'static str,
        id_parts: &[&str],
        commit_sha: &str,
        commit: Value,
        persona_id: Option<Uuid>,
        mut body: Value,
    ) -> NewEvent {
        let id = event_id(kind, id_parts);
        if let Value::Object(fields) = &mut body {
            fields.insert("id".into(), json!(id));
            fields.insert("type".into(), json!(kind));
            fields.insert("commit".into(), commit);
        }
        NewEvent {
            id,
            kind,
            commit_sha: commit_sha.to_string(),
            persona_id,
            payload: body,
        }
    }
}

/// Appends `events` in order. An event already written (the same id: a
/// commit projected again after a force-push brought it back) is not
/// announced twice.
pub async fn insert_events(connection: &mut PgConnection, events: &[NewEvent]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    let kinds: Vec<&str> = events.iter().map(|event| event.kind).collect();
    let commits: Vec<&str> = events.iter().map(|event| event.commit_sha.as_str()).collect();
    let personas: Vec<Option<Uuid>> = events.iter().map(|event| event.persona_id).collect();
    let payloads: Vec<Value> = events.iter().map(|event| event.payload.clone()).collect();
    sqlx::query(
        "INSERT INTO change_events (event_id, kind, commit_sha, persona_id, payload)
         SELECT id, kind, commit_sha, persona_id, payload
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::jsonb[])
             WITH ORDINALITY AS event (id, kind, commit_sha, persona_id, payload, position)
         ORDER BY position
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&commits)
    .bind(&personas)
    .bind(&payloads)
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = event_id("version.created", &["p", "c"]);
        assert_eq!(a, event_id("version.created", &["p", "c"]));
        assert_ne!(a, event_id("version.created", &["pc", ""]));
        assert_ne!(a, event_id("persona.deleted", &["p", "c"]));
        assert_eq!(a.get_version_num(), 8);
    }
}
