//! Full-text search over each live persona's current version (name,
//! description, domains, beliefs, signature phrases), ranked by field and
//! by exact words, with the same filters as vector search.

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
    /// See [`full_text_search`]: comparable within one result list only.
    pub rank: f32,
}

/// Weights of the fields, in the order PostgreSQL takes them: signature
/// phrases (D), beliefs (C), description and domains (B), name (A). A word
/// in the name or description outweighs the same word deep in a belief.
const FIELD_WEIGHTS: &str = "'{0.1, 0.2, 0.5, 1.0}'";

/// Cover density (`ts_rank_cd`) rewards the query's words close together;
/// normalization 1 divides by the log of the document's length, so a persona
/// with many beliefs does not win by volume.
const NORMALIZATION: i32 = 1;

/// Live personas matching `query` (web-search syntax: words, "phrases",
/// `-excluded`) or containing it in their name, best first. The rank adds:
/// the stemmed match weighted by field; twice over, the match of the words as
/// written (so an exact word outranks a word that only shares its stem); and
/// 1 when the query is part of the name, since a reader typing part of a
/// name wants that persona first.
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
                (ts_rank_cd({FIELD_WEIGHTS}, p.search_vector, stemmed, {NORMALIZATION})
                 + 2 * ts_rank_cd({FIELD_WEIGHTS}, p.exact_vector, exact, {NORMALIZATION})
                 + CASE WHEN v.document->>'name' ILIKE $9 THEN 1 ELSE 0 END)::real AS rank
         FROM personas p
         JOIN persona_versions v ON v.id = p.current_version_id,
              websearch_to_tsquery('english', $8) AS stemmed,
              websearch_to_tsquery('personas_exact', $8) AS exact
         WHERE NOT p.deleted
           AND (p.search_vector @@ stemmed OR v.document->>'name' ILIKE $9 OR p.slug = $8)
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
