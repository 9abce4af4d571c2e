-- What A/B testers act on: labels, experiments and change notifications.
-- Like everything else here they are projections of registry files
-- (registry/labels.toml, registry/experiments/*.toml) and can be rebuilt
-- from git; rows of retracted commits are ignored by joining sync_commits.

-- Who made each commit: a label move or an experiment change is a commit
-- that may touch no persona, so its author is kept with the commit.
ALTER TABLE sync_commits ADD COLUMN author_name text NOT NULL DEFAULT '';
ALTER TABLE sync_commits ADD COLUMN author_email text NOT NULL DEFAULT '';
ALTER TABLE sync_commits ADD COLUMN message text NOT NULL DEFAULT '';

-- Every move of every label: one row per (commit, label, persona) whose
-- target changed. A label's current target is its newest move on the
-- branch; `to_version_no` NULL means the commit took the persona out of the
-- label (or removed the label).
CREATE TABLE label_moves (
    commit_sha text NOT NULL REFERENCES sync_commits (sha),
    label text NOT NULL,
    persona_id uuid NOT NULL REFERENCES personas (id),
    from_version_no integer,
    to_version_no integer,
    PRIMARY KEY (commit_sha, label, persona_id),
    CHECK (from_version_no IS DISTINCT FROM to_version_no)
);
CREATE INDEX label_moves_label ON label_moves (label);
CREATE INDEX label_moves_persona ON label_moves (persona_id);

-- Every revision of every experiment file; `document` NULL: the commit
-- removed it. Assignment at any past commit reads the revision in force then.
CREATE TABLE experiment_revisions (
    commit_sha text NOT NULL REFERENCES sync_commits (sha),
    name text NOT NULL,
    document jsonb,
    PRIMARY KEY (commit_sha, name)
);

-- Change notifications, written in the projection's transaction: exactly
-- what was committed is announced. `seq` orders them (commit order, and
-- within a commit the order of the changes); `event_id` is derived from
-- what the event is about, so a projection rebuilt from git announces the
-- same ids and consumers can deduplicate.
CREATE TABLE change_events (
    seq bigserial PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN
        ('version.created', 'persona.deleted', 'version.retracted', 'label.moved', 'experiment.changed')),
    commit_sha text NOT NULL,
    persona_id uuid,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Per configured webhook (by name): the last event handed over or skipped.
-- Events are delivered one at a time in `seq` order, so a consumer sees
-- each persona's changes in commit order.
CREATE TABLE webhook_cursors (
    webhook text PRIMARY KEY,
    last_seq bigint NOT NULL
);

-- The delivery log: one row per (webhook, event) tried.
CREATE TABLE webhook_deliveries (
    webhook text NOT NULL,
    event_seq bigint NOT NULL REFERENCES change_events (seq),
    attempts integer NOT NULL DEFAULT 0,
    state text NOT NULL CHECK (state IN ('pending', 'delivered', 'failing')),
    last_status integer,
    last_error text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook, event_seq)
);

-- Projections made before this migration lack labels and experiments:
-- replay the history once (idempotent for everything else).
DELETE FROM sync_state;
