-- Governance policies at organization, workspace or repository scope
-- (a repository policy names its workspace too). Deleting one is soft.
-- `patterns` is a JSON array of regular expressions (our extension): a policy
-- with patterns is decided by them, one without by the judge model.
CREATE TABLE policies (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    workspace_id  uuid REFERENCES workspaces (id),
    repo_id       uuid REFERENCES repos (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    content       text NOT NULL,
    patterns      text NOT NULL,
    risk_type     text NOT NULL CHECK (risk_type IN ('LOW', 'MEDIUM', 'HIGH')),
    action_type   integer NOT NULL CHECK (action_type IN (0, 1, 2)),
    created_by    uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL,
    updated_by    uuid NOT NULL REFERENCES users (id),
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz,
    CHECK (repo_id IS NULL OR workspace_id IS NOT NULL),
    -- Judged by its content or decided by its patterns: one of them.
    CHECK (trim(content) <> '' OR patterns <> '[]')
);
CREATE INDEX policies_live_by_org ON policies (org_id, created_at) WHERE deleted_at IS NULL;

-- Every violation found, with who and what was judged and which provider
-- served (or would have served) the turn.
CREATE TABLE policy_violations (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id),
    workspace_id     uuid NOT NULL REFERENCES workspaces (id),
    repo_id          uuid NOT NULL REFERENCES repos (id),
    policy_id        uuid NOT NULL REFERENCES policies (id),
    conversation_id  uuid REFERENCES conversations (id) ON DELETE SET NULL,
    user_id          uuid NOT NULL REFERENCES users (id),
    stage            text NOT NULL CHECK (stage IN ('prompt', 'reply')),
    explanation      text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('LOW', 'MEDIUM', 'HIGH')),
    block            boolean NOT NULL,
    ai_llm_id        uuid,
    llm_type         text NOT NULL,
    llm_model        text NOT NULL,
    host             text NOT NULL,
    created_at       timestamptz NOT NULL
);
CREATE INDEX policy_violations_by_org ON policy_violations (org_id, created_at DESC, id DESC);
CREATE INDEX policy_violations_by_policy ON policy_violations (policy_id, created_at DESC, id DESC);

-- The alerts raised by violations of alerting (1) and blocking (2) policies.
CREATE TABLE policy_alerts (
    id            uuid PRIMARY KEY,
    violation_id  uuid NOT NULL UNIQUE REFERENCES policy_violations (id),
    message       text NOT NULL,
    created_at    timestamptz NOT NULL
);

-- An organization's webhook for alerts; its signing secret is sealed.
CREATE TABLE org_webhooks (
    org_id          uuid PRIMARY KEY REFERENCES organizations (id),
    url             text NOT NULL,
    secret_sealed   bytea NOT NULL,
    secrets_key_id  text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- The outbox: one row per alert to deliver, written with the alert, sent
-- at least once with retries and backoff.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id),
    alert_id         uuid NOT NULL REFERENCES policy_alerts (id),
    body             text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_org ON webhook_deliveries (org_id, created_at DESC);
