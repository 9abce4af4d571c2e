-- Faster syncing of large histories.
--
-- Full-text search covers what readers search for (name, description,
-- domains, beliefs) of each persona's current version. Tokenizing costs
-- about 65 µs a document, so it is done once per persona at the end of a
-- sync rather than for every historical version while catching up:
-- `persona_versions.search_text` keeps the text of every version, and
-- `personas.search_text` / `search_version_id` the indexed copy of the
-- current one (refreshed where `search_version_id` lags `current_version_id`).
DROP INDEX persona_versions_search;
ALTER TABLE persona_versions ADD COLUMN search_text text NOT NULL DEFAULT '';
UPDATE persona_versions SET search_text = concat_ws(' ',
    document->>'name',
    document->>'description',
    (SELECT string_agg(domain, ' ') FROM jsonb_array_elements_text(document->'domains') AS domain),
    (SELECT string_agg(belief->>'text', ' ') FROM jsonb_array_elements(document->'beliefs') AS belief))
WHERE document IS NOT NULL;
ALTER TABLE personas ADD COLUMN search_text text NOT NULL DEFAULT '';
ALTER TABLE personas ADD COLUMN search_version_id bigint;
UPDATE personas p SET search_text = v.search_text, search_version_id = v.id
FROM persona_versions v WHERE v.id = p.current_version_id;
CREATE INDEX personas_search ON personas USING gin (to_tsvector('english', search_text));

-- The normalized rows are written only by the sync, in the same transaction
-- and statement sequence as their version, which never changes or goes away.
-- A per-row foreign-key check there cost more than the insert itself (about
-- 9 µs a row, millions of rows on a large history), so these tables rely on
-- that single writer instead; the sync tests check that every row has its
-- version.
ALTER TABLE persona_traits DROP CONSTRAINT persona_traits_version_id_fkey;
ALTER TABLE persona_beliefs DROP CONSTRAINT persona_beliefs_version_id_fkey;
ALTER TABLE persona_modes DROP CONSTRAINT persona_modes_version_id_fkey;
ALTER TABLE persona_config DROP CONSTRAINT persona_config_version_id_fkey;
ALTER TABLE persona_domains DROP CONSTRAINT persona_domains_version_id_fkey;
ALTER TABLE persona_phrases DROP CONSTRAINT persona_phrases_version_id_fkey;
-- Outbox rows are consumed and deleted by the vector worker, which skips a
-- row whose version it cannot find; two foreign-key checks per change were a
-- tenth of the sync's database time.
ALTER TABLE vector_outbox DROP CONSTRAINT vector_outbox_persona_id_fkey;
ALTER TABLE vector_outbox DROP CONSTRAINT vector_outbox_version_id_fkey;
