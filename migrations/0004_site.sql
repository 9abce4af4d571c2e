-- What the website and the read API need besides versions.
--
-- sync_commits: every projected commit of the branch, in projection order,
-- so a pin by commit resolves to "the version current at that commit" even
-- when the commit did not touch the persona. Retracted with its versions
-- when a force-push makes it unreachable.
CREATE TABLE sync_commits (
    seq bigserial PRIMARY KEY,
    sha text NOT NULL UNIQUE,
    committed_at timestamptz NOT NULL,
    retracted boolean NOT NULL DEFAULT false
);
CREATE INDEX sync_commits_sha_prefix ON sync_commits (sha text_pattern_ops);

-- The repository's tags (name → peeled commit), replaced on every sync.
CREATE TABLE git_tags (
    name text PRIMARY KEY,
    commit_sha text NOT NULL
);

-- The registry's current profiles and settings, as of the last projected commit.
CREATE TABLE registry_profiles (
    slug text PRIMARY KEY,
    document jsonb NOT NULL,
    commit_sha text NOT NULL
);
CREATE TABLE registry_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    document jsonb NOT NULL,
    commit_sha text NOT NULL
);

-- Projections made before this migration lack the tables above: replay the
-- history once. Re-projecting a commit is a no-op for its versions, so this
-- only fills the new tables.
DELETE FROM sync_state;
