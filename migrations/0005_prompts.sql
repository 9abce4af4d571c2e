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

-- A persona's former slugs are read on every persona page; the primary key
-- (slug, persona_id) cannot serve a lookup by persona.
CREATE INDEX persona_slugs_persona ON persona_slugs (persona_id);

-- Projections made before this migration lack the templates: replay the
-- history once (idempotent for everything else).
DELETE FROM sync_state;
