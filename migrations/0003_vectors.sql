-- The vector projection: retry scheduling for the outbox, and a cache of
-- embeddings so that the model runs once per distinct persona text.

-- A failed update waits before it is tried again (exponential backoff);
-- new rows are due at once.
ALTER TABLE vector_outbox ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT '-infinity';
-- The worker coalesces rows per persona.
CREATE INDEX vector_outbox_persona ON vector_outbox (persona_id, id);

-- One vector per (content, model, text layout). The model is the only
-- costly step of indexing (tens of milliseconds per persona on a CPU), so a
-- re-sync, a rebuilt index or a reverted edit reuses what was computed.
CREATE TABLE embeddings (
    content_hash text NOT NULL,
    model_id text NOT NULL,
    text_format text NOT NULL,
    vector real[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (content_hash, model_id, text_format)
);
