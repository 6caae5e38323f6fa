-- Streamed prompts, resumable on any replica: each streamed turn, the
-- replica running it, and its events in order (seq 1, 2, ...; the last is
-- `done` or `error`). Kept until `expires_at` (while it runs: as long as a
-- turn may take; once finished: the retention window), then swept.
CREATE TABLE prompt_streams (
    turn_id          blob PRIMARY KEY CHECK (length(turn_id) = 16),
    conversation_id  blob NOT NULL,
    user_id          blob NOT NULL,
    replica_id       blob NOT NULL,
    started_at       text NOT NULL,
    finished_at      text,
    expires_at       text NOT NULL
) STRICT;
CREATE INDEX prompt_streams_by_expiry ON prompt_streams (expires_at);

CREATE TABLE prompt_stream_events (
    turn_id  blob NOT NULL REFERENCES prompt_streams (turn_id) ON DELETE CASCADE,
    seq      integer NOT NULL CHECK (seq > 0),
    kind     text NOT NULL CHECK (kind IN ('delta', 'done', 'error')),
    data     text NOT NULL,
    PRIMARY KEY (turn_id, seq)
) STRICT;
