-- The turns of a conversation. `seq` orders them; a prompt writes its user
-- and assistant messages as two consecutive numbers in one transaction (after
-- locking the conversation row), so concurrent prompts never interleave.
CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              bigint NOT NULL CHECK (seq > 0),
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    content          text NOT NULL,
    model            text NOT NULL,
    token_count      bigint NOT NULL CHECK (token_count >= 0),
    metadata         jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    UNIQUE (conversation_id, seq)
);
