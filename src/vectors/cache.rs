//! The embedding cache in PostgreSQL: vectors keyed by content hash, model
//! and text layout, so that no persona text is run through the model twice.

use std::collections::HashMap;

use sqlx::PgPool;

/// The cached vectors among `content_hashes`, by content hash.
pub async fn cached_vectors(
    pool: &PgPool,
    model_id: &str,
    text_format: &str,
    content_hashes: &[String],
) -> sqlx::Result<HashMap<String, Vec<f32>>> {
    let rows: Vec<(String, Vec<f32>)> = sqlx::query_as(
        "SELECT content_hash, vector FROM embeddings
         WHERE model_id = $1 AND text_format = $2 AND content_hash = ANY($3)",
    )
    .bind(model_id)
    .bind(text_format)
    .bind(content_hashes)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Stores freshly computed vectors (a concurrent writer's copy is equal, so
/// a conflict keeps the first).
pub async fn store_vectors(
    pool: &PgPool,
    model_id: &str,
    text_format: &str,
    vectors: &[(String, Vec<f32>)],
) -> sqlx::Result<()> {
    if vectors.is_empty() {
        return Ok(());
    }
    // real[][] cannot be bound through UNNEST (it would flatten), so the
    // vectors travel as one JSON array.
    let hashes: Vec<&str> = vectors.iter().map(|(hash, _)| hash.as_str()).collect();
    let values =
        serde_json::to_value(vectors.iter().map(|(_, vector)| vector).collect::<Vec<_>>()).expect("vectors serialize");
    // A connection keeps its write buffer at the largest message it sent, and
    // a drain step's vectors are about a megabyte of text: after indexing
    // 2,000 personas, three pooled connections held 8.3 MiB of a server's
    // memory that way (heaptrack). The connection that sends a large batch
    // is closed afterwards instead of going back to the pool.
    let mut connection = pool.acquire().await?;
    let floats: usize = vectors.iter().map(|(_, vector)| vector.len()).sum();
    if floats * JSON_BYTES_PER_FLOAT > LARGE_MESSAGE_BYTES {
        connection.close_on_drop();
    }
    sqlx::query(
        "INSERT INTO embeddings (content_hash, model_id, text_format, vector)
         SELECT hash, $1, $2, ARRAY(SELECT element::real FROM jsonb_array_elements_text(vector) WITH ORDINALITY AS e(element, i) ORDER BY i)
         FROM UNNEST($3::text[]) WITH ORDINALITY AS h(hash, n)
         JOIN jsonb_array_elements($4::jsonb) WITH ORDINALITY AS v(vector, n) USING (n)
         ON CONFLICT DO NOTHING",
    )
    .bind(model_id)
    .bind(text_format)
    .bind(&hashes)
    .bind(values)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// About how many bytes of JSON text one vector component takes (`-0.0123456`).
const JSON_BYTES_PER_FLOAT: usize = 11;

/// From this size, a message's buffer is not worth keeping in a pooled connection.
const LARGE_MESSAGE_BYTES: usize = 64 * 1024;

/// One cached vector, with what made it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CachedEmbedding {
    pub model_id: String,
    pub text_format: String,
    pub vector: Vec<f32>,
}

/// The cached vector of one content in `text_format`: the one
/// `preferred_model` made when it made one, else the newest. `None` when the
/// content was never embedded.
pub async fn cached_embedding(
    pool: &PgPool,
    content_hash: &str,
    text_format: &str,
    preferred_model: Option<&str>,
) -> sqlx::Result<Option<CachedEmbedding>> {
    sqlx::query_as(
        "SELECT model_id, text_format, vector FROM embeddings
         WHERE content_hash = $1 AND text_format = $2
         ORDER BY coalesce(model_id = $3, false) DESC, created_at DESC
         LIMIT 1",
    )
    .bind(content_hash)
    .bind(text_format)
    .bind(preferred_model)
    .fetch_optional(pool)
    .await
}

/// The length of the newest cached vector in `text_format`: the dimension
/// of the index those vectors went into, known without loading the model.
pub async fn cached_dimension(pool: &PgPool, text_format: &str) -> sqlx::Result<Option<usize>> {
    let length: Option<Option<i32>> = sqlx::query_scalar(
        "SELECT cardinality(vector) FROM embeddings WHERE text_format = $1 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(text_format)
    .fetch_optional(pool)
    .await?;
    Ok(length.flatten().and_then(|length| usize::try_from(length).ok()))
}
