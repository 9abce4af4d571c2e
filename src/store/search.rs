//! Full-text search over each live persona's current version (name,
//! description, domains, beliefs), with the same filters as vector search.

use sqlx::PgPool;
use uuid::Uuid;

use super::queries::{FILTER, bind_filter};
use crate::persona::search_filter::SearchFilter;

/// One full-text match.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TextMatch {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domains: Vec<String>,
    pub is_real: bool,
    /// `ts_rank`, plus 1 when the query appears in the name: a reader typing
    /// part of a name wants that persona first.
    pub rank: f32,
}

/// Live personas matching `query` (web-search syntax: words, "phrases",
/// `-excluded`) or containing it in their name, best first.
pub async fn full_text_search(
    pool: &PgPool,
    query: &str,
    filter: &SearchFilter,
    limit: usize,
) -> sqlx::Result<Vec<TextMatch>> {
    let name_pattern = format!("%{}%", escape_like(query.trim()));
    let sql = format!(
        "SELECT p.id, p.slug, v.document->>'name' AS name,
                ARRAY(SELECT jsonb_array_elements_text(v.document->'domains')) AS domains,
                (v.document->>'is_real')::boolean AS is_real,
                (ts_rank(to_tsvector('english', p.search_text), q)
                 + CASE WHEN v.document->>'name' ILIKE $9 THEN 1 ELSE 0 END)::real AS rank
         FROM personas p
         JOIN persona_versions v ON v.id = p.current_version_id,
              websearch_to_tsquery('english', $8) AS q
         WHERE NOT p.deleted
           AND (to_tsvector('english', p.search_text) @@ q OR v.document->>'name' ILIKE $9 OR p.slug = $8)
           {FILTER}
         ORDER BY rank DESC, p.slug
         LIMIT $10"
    );
    bind_filter!(sqlx::query_as(&sql), filter)
        .bind(query)
        .bind(&name_pattern)
        .bind(limit as i64)
        .fetch_all(pool)
        .await
}

fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}
