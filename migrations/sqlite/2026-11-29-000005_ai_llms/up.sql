-- A workspace's connections to model providers. The API key (`secret`) and
-- the optional access key (`key`) are stored sealed (AES-256-GCM, see
-- src/secrets.rs) under the master key `secrets_key_id` names; never in plain text.
CREATE TABLE ai_llms (
    id              blob PRIMARY KEY CHECK (length(id) = 16),
    org_id          blob NOT NULL REFERENCES organizations (id),
    workspace_id    blob NOT NULL REFERENCES workspaces (id),
    created_by      blob NOT NULL REFERENCES users (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    ai_type         text NOT NULL CHECK (ai_type IN ('OPENAI', 'GOOGLE', 'ANTHROPIC', 'AWS', 'OTHER')),
    endpoint        text NOT NULL,
    key_sealed      blob,
    secret_sealed   blob NOT NULL,
    secrets_key_id  text NOT NULL,
    validated_at    text,
    created_at      text NOT NULL,
    updated_at      text NOT NULL,
    UNIQUE (workspace_id, name)
) STRICT;

-- Which repositories use which configuration; a prompt tries them in the
-- order they were attached.
CREATE TABLE ai_llm_repos (
    ai_llm_id    blob NOT NULL REFERENCES ai_llms (id),
    repo_id      blob NOT NULL REFERENCES repos (id),
    attached_at  text NOT NULL,
    PRIMARY KEY (ai_llm_id, repo_id)
) STRICT;
CREATE INDEX ai_llm_repos_by_repo ON ai_llm_repos (repo_id, attached_at);
