-- The registry's prompt template (registry/prompt.jinja), every version of
-- it: a row per commit that changed it, so a pinned persona version renders
-- with the template in force at its commit, forever. `source` NULL: the
-- commit removed the template. Rows of retracted commits are ignored by
-- joining sync_commits.
CREATE TABLE prompt_templates (
    commit_sha text PRIMARY KEY REFERENCES sync_commits (sha),
    source text,
    template_hash text
);

-- Projections made before this migration lack the templates: replay the
-- history once (idempotent for everything else).
DELETE FROM sync_state;
