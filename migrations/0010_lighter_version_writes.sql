-- Cheaper writes of versions, the largest statement of a sync.
--
-- No query looks a content hash up across personas: a pin by content hash
-- (`@sha256:…`) names its persona, whose few versions the
-- (persona_id, version_no) index finds. The global index cost every insert
-- a random b-tree descent on a 71-byte key.
DROP INDEX persona_versions_content_hash;

-- The same rule as before (`sha256:` and 64 lowercase hex digits), checked
-- with string functions instead of a regular expression: the regex was 2.4%
-- of a full sync's CPU samples.
ALTER TABLE persona_versions DROP CONSTRAINT persona_versions_content_hash_check;
ALTER TABLE persona_versions ADD CONSTRAINT persona_versions_content_hash_check CHECK (
    content_hash IS NULL
    OR (octet_length(content_hash) = 71
        AND starts_with(content_hash, 'sha256:')
        AND translate(substr(content_hash, 8), '0123456789abcdef', '') = '')
);

-- Every run of a sync moves its personas' current version. Those updates
-- change no indexed column, so with room left on the page they are HOT
-- updates that touch no index (the GIN index over search_vector included);
-- on full pages 91% of them were not.
ALTER TABLE personas SET (fillfactor = 50);
