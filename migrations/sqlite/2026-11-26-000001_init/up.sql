-- The platform's entities, as in migrations/postgres. Ids are 16-byte BLOBs,
-- times RFC 3339 UTC text with 6 fractional digits and `Z` (sorts as text).
CREATE TABLE organizations (
    id          blob PRIMARY KEY CHECK (length(id) = 16),
    name        text NOT NULL CHECK (length(name) > 0),
    created_at  text NOT NULL
) STRICT;

CREATE TABLE users (
    id           blob PRIMARY KEY CHECK (length(id) = 16),
    org_id       blob NOT NULL REFERENCES organizations (id),
    email        text NOT NULL UNIQUE CHECK (length(email) > 0),
    name         text,
    last_name    text,
    org_role     text NOT NULL CHECK (org_role IN ('user', 'billing', 'workspaces', 'admin', 'owner')),
    disabled_at  text,
    created_at   text NOT NULL
) STRICT;
CREATE INDEX users_org_id_idx ON users (org_id);

CREATE TABLE workspaces (
    id          blob PRIMARY KEY CHECK (length(id) = 16),
    org_id      blob NOT NULL REFERENCES organizations (id),
    name        text NOT NULL CHECK (length(name) > 0),
    deleted_at  text,
    created_at  text NOT NULL
) STRICT;
CREATE INDEX workspaces_org_id_idx ON workspaces (org_id);

CREATE TABLE workspace_members (
    workspace_id  blob NOT NULL REFERENCES workspaces (id),
    user_id       blob NOT NULL REFERENCES users (id),
    access        text NOT NULL CHECK (access IN ('read', 'write', 'admin')),
    created_at    text NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
) STRICT;
CREATE INDEX workspace_members_user_id_idx ON workspace_members (user_id);

CREATE TABLE repos (
    id            blob PRIMARY KEY CHECK (length(id) = 16),
    org_id        blob NOT NULL REFERENCES organizations (id),
    workspace_id  blob REFERENCES workspaces (id),
    name          text NOT NULL CHECK (length(name) > 0),
    disabled_at   text,
    deleted_at    text,
    created_at    text NOT NULL
) STRICT;
CREATE INDEX repos_org_id_idx ON repos (org_id);
CREATE INDEX repos_workspace_id_idx ON repos (workspace_id);

CREATE TABLE api_tokens (
    id            blob PRIMARY KEY CHECK (length(id) = 16),
    user_id       blob NOT NULL REFERENCES users (id),
    name          text NOT NULL,
    token_hash    blob NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    expires_at    text,
    revoked_at    text,
    last_used_at  text,
    created_at    text NOT NULL
) STRICT;
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE TABLE conversations (
    id               blob PRIMARY KEY CHECK (length(id) = 16),
    org_id           blob NOT NULL REFERENCES organizations (id),
    workspace_id     blob NOT NULL REFERENCES workspaces (id),
    repo_id          blob NOT NULL REFERENCES repos (id),
    created_by       blob NOT NULL REFERENCES users (id),
    title            text,
    tokens_in        integer NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out       integer NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    created_at       text NOT NULL,
    last_updated_at  text NOT NULL,
    deleted_at       text
) STRICT;
CREATE INDEX conversations_org_created_idx ON conversations (org_id, created_at, id);
CREATE INDEX conversations_workspace_created_idx ON conversations (workspace_id, created_at, id);
CREATE INDEX conversations_creator_created_idx ON conversations (created_by, created_at, id);
CREATE INDEX conversations_repo_created_idx ON conversations (repo_id, created_at, id);

-- The audit trail. No foreign key on context_id: events outlive what they describe.
CREATE TABLE system_events (
    id            blob PRIMARY KEY CHECK (length(id) = 16),
    org_id        blob NOT NULL REFERENCES organizations (id),
    workspace_id  blob,
    user_id       blob,
    context       text NOT NULL,
    context_id    blob,
    event         text NOT NULL,
    json_data     text,
    created_at    text NOT NULL
) STRICT;
CREATE INDEX system_events_org_created_idx ON system_events (org_id, created_at);
CREATE INDEX system_events_context_idx ON system_events (context, context_id);
