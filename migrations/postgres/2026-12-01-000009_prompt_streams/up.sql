-- Streamed prompts, resumable on any replica: each streamed turn, the
-- replica running it, and its events in order (seq 1, 2, ...; the last is
-- `done` or `error`). Kept until `expires_at` (while it runs: as long as a
-- turn may take; once finished: the retention window), then swept.
CREATE TABLE prompt_streams (
    turn_id          uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    replica_id       uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    expires_at       timestamptz NOT NULL
);
CREATE INDEX prompt_streams_by_expiry ON prompt_streams (expires_at);

CREATE TABLE prompt_stream_events (
    turn_id  uuid NOT NULL REFERENCES prompt_streams (turn_id) ON DELETE CASCADE,
    seq      bigint NOT NULL CHECK (seq > 0),
    kind     text NOT NULL CHECK (kind IN ('delta', 'done', 'error')),
    data     text NOT NULL,
    PRIMARY KEY (turn_id, seq)
);
