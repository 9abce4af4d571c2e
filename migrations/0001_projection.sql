-- The projection of the registry's git history. Git is the source of truth:
-- everything here can be rebuilt by syncing from the root commit.

CREATE TABLE personas (
    id uuid PRIMARY KEY,
    slug text NOT NULL,
    current_version_id bigint,
    -- Time of the commit that first added the persona.
    created_at timestamptz NOT NULL,
    deleted boolean NOT NULL DEFAULT false
);
-- Not unique: a rename swap inside one commit passes through a moment where
-- two rows share a slug; the history reader guarantees uniqueness per commit.
CREATE INDEX personas_slug ON personas (slug);

CREATE TABLE persona_versions (
    id bigserial PRIMARY KEY,
    persona_id uuid NOT NULL REFERENCES personas (id),
    version_no integer NOT NULL CHECK (version_no > 0),
    commit_sha text NOT NULL,
    author_name text NOT NULL,
    author_email text NOT NULL,
    authored_at timestamptz NOT NULL,
    committed_at timestamptz NOT NULL,
    message text NOT NULL,
    change_kind text NOT NULL CHECK (change_kind IN ('added', 'modified', 'renamed', 'deleted')),
    slug text NOT NULL,
    path text NOT NULL,
    -- NULL only for a deletion.
    content_hash text CHECK (content_hash IS NULL OR content_hash ~ '^sha256:[0-9a-f]{64}$'),
    document jsonb,
    -- Set when a force-push made the commit unreachable; never deleted.
    retracted boolean NOT NULL DEFAULT false,
    CHECK ((change_kind = 'deleted') = (document IS NULL)),
    CHECK ((document IS NULL) = (content_hash IS NULL)),
    UNIQUE (persona_id, version_no),
    -- A persona changes at most once per commit: this makes re-projecting a commit a no-op.
    UNIQUE (persona_id, commit_sha)
);
CREATE INDEX persona_versions_content_hash ON persona_versions (content_hash);
CREATE INDEX persona_versions_commit ON persona_versions (commit_sha text_pattern_ops);
CREATE INDEX persona_versions_committed_at ON persona_versions (committed_at DESC);
CREATE INDEX persona_versions_search ON persona_versions
    USING gin (jsonb_to_tsvector('english', document, '["string"]'));

ALTER TABLE personas
    ADD CONSTRAINT personas_current_version FOREIGN KEY (current_version_id) REFERENCES persona_versions (id);

-- Former and current slugs, so old links keep resolving after a rename.
CREATE TABLE persona_slugs (
    slug text NOT NULL,
    persona_id uuid NOT NULL REFERENCES personas (id),
    first_version_id bigint NOT NULL REFERENCES persona_versions (id),
    PRIMARY KEY (slug, persona_id)
);

-- Normalized rows per version: the seed's relational shape, kept for history.
CREATE TABLE persona_traits (
    version_id bigint NOT NULL REFERENCES persona_versions (id),
    trait_type text NOT NULL,
    trait_name text NOT NULL,
    value double precision NOT NULL CHECK (value >= 0 AND value <= 1),
    PRIMARY KEY (version_id, trait_type, trait_name)
);

CREATE TABLE persona_beliefs (
    version_id bigint NOT NULL REFERENCES persona_versions (id),
    position integer NOT NULL,
    belief text NOT NULL,
    source text,
    PRIMARY KEY (version_id, position)
);

CREATE TABLE persona_modes (
    version_id bigint NOT NULL REFERENCES persona_versions (id),
    mode text NOT NULL,
    enabled boolean NOT NULL,
    PRIMARY KEY (version_id, mode)
);

CREATE TABLE persona_config (
    version_id bigint PRIMARY KEY REFERENCES persona_versions (id),
    humor_usage text NOT NULL CHECK (humor_usage IN ('low', 'medium', 'high')),
    emotional_style text NOT NULL CHECK (emotional_style IN ('reserved', 'expressive')),
    language_style text NOT NULL CHECK (language_style IN ('verbose', 'concise')),
    voice_enabled boolean NOT NULL,
    default_mode text
);

CREATE TABLE persona_domains (
    version_id bigint NOT NULL REFERENCES persona_versions (id),
    position integer NOT NULL,
    domain text NOT NULL,
    PRIMARY KEY (version_id, position)
);
CREATE INDEX persona_domains_domain ON persona_domains (domain);

CREATE TABLE persona_phrases (
    version_id bigint NOT NULL REFERENCES persona_versions (id),
    position integer NOT NULL,
    phrase text NOT NULL,
    PRIMARY KEY (version_id, position)
);

-- One row per followed branch: the last commit fully projected.
CREATE TABLE sync_state (
    branch text PRIMARY KEY,
    last_commit text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Validation errors of files as of the last projected commit; a file's rows
-- are replaced whenever a commit touches the file.
CREATE TABLE sync_errors (
    id bigserial PRIMARY KEY,
    commit_sha text NOT NULL,
    path text NOT NULL,
    persona_id uuid,
    line integer NOT NULL,
    col integer NOT NULL,
    code text NOT NULL,
    message text NOT NULL
);
CREATE INDEX sync_errors_path ON sync_errors (path);

-- Vector index updates, written in the same transaction as the version so a
-- Qdrant outage delays them and never loses them.
CREATE TABLE vector_outbox (
    id bigserial PRIMARY KEY,
    persona_id uuid NOT NULL REFERENCES personas (id),
    version_id bigint REFERENCES persona_versions (id),
    op text NOT NULL CHECK (op IN ('upsert', 'delete')),
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
