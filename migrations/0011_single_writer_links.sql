-- The links between personas, their versions and their slugs are written
-- only by the sync, under its lock, in the same transaction as the rows they
-- join, and no row they point at is ever deleted (versions are retracted,
-- personas marked deleted). Each foreign-key check locked the row it found
-- (FOR KEY SHARE): a random index descent and a heap write-and-WAL of that
-- row's header for every version, head move and slug. Dropping the four
-- checks made a full sync 7% faster at 10,000 personas × 10 (14.97 and
-- 15.20 s against 14.09 and 13.92 s) and 8% at 100,000 × 2 (36.03 and
-- 35.51 s against 32.52 and 33.41 s). As for the normalized rows (0002),
-- the sync tests check after every sync that each link holds, and more
-- strictly than the keys did: a head is a version of its own persona.
ALTER TABLE persona_versions DROP CONSTRAINT persona_versions_persona_id_fkey;
ALTER TABLE personas DROP CONSTRAINT personas_current_version;
ALTER TABLE persona_slugs DROP CONSTRAINT persona_slugs_persona_id_fkey;
ALTER TABLE persona_slugs DROP CONSTRAINT persona_slugs_first_version_id_fkey;
