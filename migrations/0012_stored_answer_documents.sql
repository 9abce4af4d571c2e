-- Each version's document also as the JSON text the API answers with (the
-- persona as the sync serialized it), so that a pinned read by id passes it
-- through instead of parsing the JSONB into a persona and encoding it again:
-- that round trip, with its copies, was a fifth of a replica's CPU per
-- answer. The JSONB stays for the queries that look inside documents.
-- Versions projected before this column existed keep NULL here and are
-- answered through the JSONB, with the same bytes.
ALTER TABLE persona_versions ADD COLUMN document_json text;
ALTER TABLE persona_versions
    ADD CONSTRAINT persona_versions_document_json_has_document CHECK (document_json IS NULL OR document IS NOT NULL);
-- With both, a version row passes 2 kB, where PostgreSQL would start
-- compressing its documents on every insert and decompressing them on every
-- read; rows are kept whole up to a page.
ALTER TABLE persona_versions SET (toast_tuple_target = 8160);
-- The versions still without it (all of them, right after this migration):
-- the sync stores their text before it projects anything new, and once it
-- has, this index is empty and finding none is one probe.
CREATE INDEX persona_versions_without_document_json ON persona_versions (id)
    WHERE document_json IS NULL AND document IS NOT NULL;
