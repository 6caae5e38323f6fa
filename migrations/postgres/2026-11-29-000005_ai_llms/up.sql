-- A workspace's connections to model providers. The API key (`secret`) and
-- the optional access key (`key`) are stored sealed (AES-256-GCM, see
-- src/secrets.rs) under the master key `secrets_key_id` names; never in plain text.
CREATE TABLE ai_llms (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL REFERENCES organizations (id),
    workspace_id    uuid NOT NULL REFERENCES workspaces (id),
    created_by      uuid NOT NULL REFERENCES users (id),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    ai_type         text NOT NULL CHECK (ai_type IN ('OPENAI', 'GOOGLE', 'ANTHROPIC', 'AWS', 'OTHER')),
    endpoint        text NOT NULL,
    key_sealed      bytea,
    secret_sealed   bytea NOT NULL,
    secrets_key_id  text NOT NULL,
    validated_at    timestamptz,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (workspace_id, name)
);

-- Which repositories use which configuration; a prompt tries them in the
-- order they were attached.
CREATE TABLE ai_llm_repos (
    ai_llm_id    uuid NOT NULL REFERENCES ai_llms (id),
    repo_id      uuid NOT NULL REFERENCES repos (id),
    attached_at  timestamptz NOT NULL,
    PRIMARY KEY (ai_llm_id, repo_id)
);
CREATE INDEX ai_llm_repos_by_repo ON ai_llm_repos (repo_id, attached_at);
