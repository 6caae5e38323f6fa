-- Idempotency keys of successful creates, per caller: a retry with the same
-- key replays `reply` instead of creating again. The primary key makes two
-- racing requests (on any replica) agree: the second insert fails and reads
-- the first's row.
CREATE TABLE idempotency_keys (
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of the request, to tell a retry from a different request.
    fingerprint      bytea NOT NULL CHECK (length(fingerprint) = 32),
    conversation_id  uuid NOT NULL,
    -- The encoded CreateConversationResponse first sent.
    reply            bytea NOT NULL,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
