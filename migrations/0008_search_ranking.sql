-- Full-text search that ranks what a reader means first. Each live persona's
-- current version gets two weighted vectors: the name weighs most (A), then
-- description and domains (B), beliefs (C) and signature phrases (D).
-- `search_vector` is stemmed English, so "relations" finds "relation";
-- `exact_vector` keeps words as written (English stop words dropped), so a
-- persona holding the very word asked for ranks above one holding a word of
-- the same stem ("relativity" is not "relations", though both stem to "relat").

-- Unstemmed English: the simple parser and lower-casing, minus stop words.
CREATE TEXT SEARCH DICTIONARY personas_exact_words (TEMPLATE = simple, STOPWORDS = english);
CREATE TEXT SEARCH CONFIGURATION personas_exact (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION personas_exact
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart
    WITH personas_exact_words;

-- The weighted vector of one persona document in one text search configuration.
CREATE FUNCTION persona_search_vector(config regconfig, document jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT setweight(to_tsvector(config, coalesce(document->>'name', '')), 'A')
        || setweight(to_tsvector(config, concat_ws(' ',
               document->>'description',
               (SELECT string_agg(domain, ' ') FROM jsonb_array_elements_text(document->'domains') AS domain))), 'B')
        || setweight(to_tsvector(config, coalesce(
               (SELECT string_agg(belief->>'text', ' ') FROM jsonb_array_elements(document->'beliefs') AS belief), '')), 'C')
        || setweight(to_tsvector(config, coalesce(
               (SELECT string_agg(phrase, ' ') FROM jsonb_array_elements_text(document->'signature_phrases') AS phrase), '')), 'D')
$$;

ALTER TABLE personas ADD COLUMN search_vector tsvector NOT NULL DEFAULT ''::tsvector;
ALTER TABLE personas ADD COLUMN exact_vector tsvector NOT NULL DEFAULT ''::tsvector;
UPDATE personas p
SET search_vector = persona_search_vector('english', v.document),
    exact_vector = persona_search_vector('personas_exact', v.document)
FROM persona_versions v
WHERE v.id = p.current_version_id AND NOT p.deleted AND v.document IS NOT NULL;

-- The old index matched on the unweighted text; matching now uses the vector.
DROP INDEX personas_search;
CREATE INDEX personas_search_vector ON personas USING gin (search_vector);

-- The unweighted text the old index read is no longer needed: the vectors are
-- computed from the current version's document when a sync ends.
ALTER TABLE personas DROP COLUMN search_text;
ALTER TABLE persona_versions DROP COLUMN search_text;
