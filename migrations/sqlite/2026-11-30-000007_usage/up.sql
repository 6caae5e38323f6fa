-- The usage ledger: one row per model call (a prompt turn, or a judge call
-- on a turn's behalf), written in the transaction of what it accounts for.
-- `ai_llm_id` NULL is the operator's provider. Tokens are as the provider
-- reported them; a judge call's are also its `policy_tokens`.
CREATE TABLE usage_ledger (
    id               blob PRIMARY KEY CHECK (length(id) = 16),
    org_id           blob NOT NULL REFERENCES organizations (id),
    workspace_id     blob NOT NULL,
    repo_id          blob NOT NULL,
    conversation_id  blob NOT NULL,
    user_id          blob NOT NULL,
    ai_llm_id        blob,
    kind             text NOT NULL CHECK (kind IN ('prompt', 'judge')),
    llm_type         text NOT NULL,
    llm_model        text NOT NULL,
    host             text NOT NULL,
    tokens_in        integer NOT NULL CHECK (tokens_in >= 0),
    tokens_out       integer NOT NULL CHECK (tokens_out >= 0),
    policy_tokens    integer NOT NULL CHECK (policy_tokens >= 0),
    latency_ms       integer NOT NULL CHECK (latency_ms >= 0),
    outcome          text NOT NULL CHECK (outcome IN ('completed', 'blocked', 'failed', 'cancelled')),
    created_at       text NOT NULL
) STRICT;
CREATE INDEX usage_ledger_by_org ON usage_ledger (org_id, created_at);
CREATE INDEX usage_ledger_by_conversation ON usage_ledger (conversation_id, created_at);

-- The ledger and the violations summed per time bucket (`grain` 'day' or
-- 'minute', `bucket` its UTC start) and dimension set, kept in the same
-- transactions: statistics read these rows as they are. `ai_llm_id` is the
-- nil UUID for the operator's provider (a key column cannot be NULL).
CREATE TABLE usage_rollups (
    grain            text NOT NULL CHECK (grain IN ('day', 'minute')),
    bucket           text NOT NULL,
    org_id           blob NOT NULL,
    workspace_id     blob NOT NULL,
    repo_id          blob NOT NULL,
    conversation_id  blob NOT NULL,
    user_id          blob NOT NULL,
    ai_llm_id        blob NOT NULL,
    llm_type         text NOT NULL,
    llm_model        text NOT NULL,
    host             text NOT NULL,
    tokens_in        integer NOT NULL,
    tokens_out       integer NOT NULL,
    llm_tokens_in    integer NOT NULL,
    llm_tokens_out   integer NOT NULL,
    api_calls        integer NOT NULL,
    latency_ms       integer NOT NULL,
    violations       integer NOT NULL,
    alerts           integer NOT NULL,
    blocks           integer NOT NULL,
    severity_low     integer NOT NULL,
    severity_medium  integer NOT NULL,
    severity_high    integer NOT NULL,
    PRIMARY KEY (conversation_id, user_id, grain, bucket, ai_llm_id, llm_type, llm_model, host)
) STRICT;
CREATE INDEX usage_rollups_by_org ON usage_rollups (org_id, grain, bucket);
CREATE INDEX usage_rollups_by_workspace ON usage_rollups (workspace_id, grain, bucket);
CREATE INDEX usage_rollups_by_user ON usage_rollups (user_id, grain, bucket);
CREATE INDEX usage_rollups_by_ai_llm ON usage_rollups (ai_llm_id, grain);

-- Token budgets: an organization's (`scope_id` = org_id) or a workspace's
-- (`scope_id` = workspace_id), per UTC day or month.
CREATE TABLE budgets (
    id          blob PRIMARY KEY CHECK (length(id) = 16),
    org_id      blob NOT NULL REFERENCES organizations (id),
    scope       text NOT NULL CHECK (scope IN ('org', 'workspace')),
    scope_id    blob NOT NULL,
    period      text NOT NULL CHECK (period IN ('day', 'month')),
    tokens      integer NOT NULL CHECK (tokens > 0),
    updated_by  blob NOT NULL,
    created_at  text NOT NULL,
    updated_at  text NOT NULL,
    UNIQUE (scope_id, period)
) STRICT;
CREATE INDEX budgets_by_org ON budgets (org_id);

-- What each budget's period has spent (settled turns). No foreign key here
-- or below: a budget cleared while a turn is in flight must not fail the
-- turn's settlement; clearing a budget deletes its rows.
CREATE TABLE budget_spend (
    budget_id     blob NOT NULL,
    period_start  text NOT NULL,
    used          integer NOT NULL,
    PRIMARY KEY (budget_id, period_start)
) STRICT;

-- Tokens held for prompts in flight; settled (deleted) with their turn, and
-- ignored once expired (a replica that died mid-prompt holds nothing).
CREATE TABLE budget_reservations (
    id            blob PRIMARY KEY CHECK (length(id) = 16),
    budget_id     blob NOT NULL,
    period_start  text NOT NULL,
    tokens        integer NOT NULL CHECK (tokens >= 0),
    expires_at    text NOT NULL
) STRICT;
CREATE INDEX budget_reservations_by_budget ON budget_reservations (budget_id, period_start, expires_at);

-- Which events each user has read.
CREATE TABLE system_event_reads (
    user_id   blob NOT NULL,
    event_id  blob NOT NULL REFERENCES system_events (id) ON DELETE CASCADE,
    read_at   text NOT NULL,
    PRIMARY KEY (user_id, event_id)
) STRICT;
CREATE INDEX system_events_by_user ON system_events (user_id, created_at);
CREATE INDEX system_events_by_workspace ON system_events (workspace_id, created_at);
