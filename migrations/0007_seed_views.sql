-- The seed documents' tables, as views for analysts: the seed's table and
-- column names and types, over the normalized rows the projection writes for
-- every version. `seed.<table>_versions` reads every version, with its
-- `version_no`; `seed.<table>` reads each live persona's current version.
-- Views, not tables: git stays the source of truth and the projection stays
-- the only writer, so nothing here can drift from what was committed.

CREATE SCHEMA seed;

-- Every version that has content (a deletion has none). `created_at` is the
-- time of the commit that first added the persona, as a UTC timestamp (the
-- seed's type); `committed_at` is this version's commit time.
CREATE VIEW seed.personas_versions AS
SELECT v.persona_id AS id,
       v.version_no,
       v.document->>'name' AS name,
       v.slug,
       (v.document->>'birth_date')::date AS birth_date,
       v.document->>'description' AS description,
       ARRAY(SELECT d.domain FROM persona_domains d WHERE d.version_id = v.id ORDER BY d.position) AS domain,
       (v.document->>'is_real')::boolean AS is_real,
       v.document->>'avatar_url' AS avatar_url,
       (p.created_at AT TIME ZONE 'UTC') AS created_at,
       v.commit_sha,
       (v.committed_at AT TIME ZONE 'UTC') AS committed_at,
       v.retracted
FROM persona_versions v
JOIN personas p ON p.id = v.persona_id
WHERE v.document IS NOT NULL;

-- The seed spells the Big Five's type "OCEAN"; persona files write the table
-- `[traits.ocean]`, so only that acronym is spelled the seed's way.
CREATE VIEW seed.persona_traits_versions AS
SELECT v.persona_id,
       v.version_no,
       t.trait_name,
       t.value,
       CASE WHEN t.trait_type = 'ocean' THEN 'OCEAN' ELSE t.trait_type END AS trait_type
FROM persona_traits t
JOIN persona_versions v ON v.id = t.version_id;

-- A belief's id is derived, never drawn, so every projection of the same
-- history gives the same ids: the MD5 of the persona's id and the belief's
-- text (unique within a persona: `check` refuses a repeated belief). A belief
-- keeps its id for as long as its text is unchanged, wherever it moves.
CREATE VIEW seed.persona_beliefs_versions AS
SELECT md5(v.persona_id::text || E'\n' || b.belief)::uuid AS id,
       v.persona_id,
       v.version_no,
       b.belief,
       b.source
FROM persona_beliefs b
JOIN persona_versions v ON v.id = b.version_id;

CREATE VIEW seed.persona_modes_versions AS
SELECT v.persona_id, v.version_no, m.mode, m.enabled
FROM persona_modes m
JOIN persona_versions v ON v.id = m.version_id;

CREATE VIEW seed.persona_config_versions AS
SELECT v.persona_id,
       v.version_no,
       c.humor_usage,
       c.emotional_style,
       c.voice_enabled,
       c.language_style,
       c.default_mode
FROM persona_config c
JOIN persona_versions v ON v.id = c.version_id;

-- The live personas' current versions, by (persona, version number).
CREATE VIEW seed.current_versions AS
SELECT p.id AS persona_id, v.version_no
FROM personas p
JOIN persona_versions v ON v.id = p.current_version_id
WHERE NOT p.deleted;

CREATE VIEW seed.personas AS
SELECT s.id, s.name, s.slug, s.birth_date, s.description, s.domain, s.is_real, s.avatar_url, s.created_at
FROM seed.personas_versions s
JOIN seed.current_versions c ON c.persona_id = s.id AND c.version_no = s.version_no;

CREATE VIEW seed.persona_traits AS
SELECT s.persona_id, s.trait_name, s.value, s.trait_type
FROM seed.persona_traits_versions s
JOIN seed.current_versions c USING (persona_id, version_no);

CREATE VIEW seed.persona_beliefs AS
SELECT s.id, s.persona_id, s.belief, s.source
FROM seed.persona_beliefs_versions s
JOIN seed.current_versions c USING (persona_id, version_no);

CREATE VIEW seed.persona_modes AS
SELECT s.persona_id, s.mode, s.enabled
FROM seed.persona_modes_versions s
JOIN seed.current_versions c USING (persona_id, version_no);

CREATE VIEW seed.persona_config AS
SELECT s.persona_id, s.humor_usage, s.emotional_style, s.voice_enabled, s.language_style, s.default_mode
FROM seed.persona_config_versions s
JOIN seed.current_versions c USING (persona_id, version_no);
