-- The platform's entities. Ids are UUIDs (new ones UUIDv7), times timestamptz.
CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) > 0),
    created_at  timestamptz NOT NULL
);

CREATE TABLE users (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id),
    email        text NOT NULL UNIQUE CHECK (length(email) > 0),
    name         text,
    last_name    text,
    org_role     text NOT NULL CHECK (org_role IN ('user', 'billing', 'workspaces', 'admin', 'owner')),
    disabled_at  timestamptz,
    created_at   timestamptz NOT NULL
);
CREATE INDEX users_org_id_idx ON users (org_id);

CREATE TABLE workspaces (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id),
    name        text NOT NULL CHECK (length(name) > 0),
    deleted_at  timestamptz,
    created_at  timestamptz NOT NULL
);
CREATE INDEX workspaces_org_id_idx ON workspaces (org_id);

CREATE TABLE workspace_members (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id),
    user_id       uuid NOT NULL REFERENCES users (id),
    access        text NOT NULL CHECK (access IN ('read', 'write', 'admin')),
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_id_idx ON workspace_members (user_id);

CREATE TABLE repos (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    workspace_id  uuid REFERENCES workspaces (id),
    name          text NOT NULL CHECK (length(name) > 0),
    disabled_at   timestamptz,
    deleted_at    timestamptz,
    created_at    timestamptz NOT NULL
);
CREATE INDEX repos_org_id_idx ON repos (org_id);
CREATE INDEX repos_workspace_id_idx ON repos (workspace_id);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id),
    name          text NOT NULL,
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    created_at    timestamptz NOT NULL
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE conversations (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id),
    workspace_id     uuid NOT NULL REFERENCES workspaces (id),
    repo_id          uuid NOT NULL REFERENCES repos (id),
    created_by       uuid NOT NULL REFERENCES users (id),
    title            text,
    tokens_in        bigint NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out       bigint NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    created_at       timestamptz NOT NULL,
    last_updated_at  timestamptz NOT NULL,
    deleted_at       timestamptz
);
CREATE INDEX conversations_org_created_idx ON conversations (org_id, created_at, id);
CREATE INDEX conversations_workspace_created_idx ON conversations (workspace_id, created_at, id);
CREATE INDEX conversations_creator_created_idx ON conversations (created_by, created_at, id);
CREATE INDEX conversations_repo_created_idx ON conversations (repo_id, created_at, id);

-- The audit trail. No foreign key on context_id: events outlive what they describe.
CREATE TABLE system_events (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    workspace_id  uuid,
    user_id       uuid,
    context       text NOT NULL,
    context_id    uuid,
    event         text NOT NULL,
    json_data     jsonb,
    created_at    timestamptz NOT NULL
);
CREATE INDEX system_events_org_created_idx ON system_events (org_id, created_at);
CREATE INDEX system_events_context_idx ON system_events (context, context_id);
