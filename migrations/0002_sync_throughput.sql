-- Faster syncing of large histories.
--
-- Full-text search over what readers search for (name, description, domains,
-- beliefs) rather than every string of the document: the narrower index
-- costs a fraction as much to maintain while a large history is synced.
DROP INDEX persona_versions_search;
ALTER TABLE persona_versions ADD COLUMN search_text text NOT NULL DEFAULT '';
UPDATE persona_versions SET search_text = concat_ws(' ',
    document->>'name',
    document->>'description',
    (SELECT string_agg(domain, ' ') FROM jsonb_array_elements_text(document->'domains') AS domain),
    (SELECT string_agg(belief->>'text', ' ') FROM jsonb_array_elements(document->'beliefs') AS belief))
WHERE document IS NOT NULL;
CREATE INDEX persona_versions_search ON persona_versions USING gin (to_tsvector('english', search_text));

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
