-- Every revision of every profile file (registry/profiles/<slug>.toml), one
-- row per commit that changed it, so `/api/profiles/{name}` and the profile
-- pages can show when and by whom a profile was added, changed or deleted.
-- `document` NULL: the commit removed the profile (or left it failing
-- validation, which takes it out of the registry as well). Rows of
-- retracted commits are ignored by joining sync_commits.
CREATE TABLE profile_revisions (
    commit_sha text NOT NULL REFERENCES sync_commits (sha),
    slug text NOT NULL,
    document jsonb,
    PRIMARY KEY (commit_sha, slug)
);
CREATE INDEX profile_revisions_slug ON profile_revisions (slug);

-- A projection made before this migration answers at once: each current
-- profile's revision is the one registry_profiles holds (the commit that
-- last wrote it). The replay below then fills in the full history; readers
-- only count a revision whose document differs from the one before it, so
-- this seed row never shows as a change of its own.
INSERT INTO profile_revisions (commit_sha, slug, document)
SELECT p.commit_sha, p.slug, p.document
FROM registry_profiles p JOIN sync_commits c ON c.sha = p.commit_sha;

-- Replay the history once (idempotent for everything else) so every
-- earlier revision is recorded too.
DELETE FROM sync_state;
