-- The turns of a conversation. `seq` orders them; a prompt writes its user
-- and assistant messages as two consecutive numbers in one transaction (the
-- write lock held), so concurrent prompts never interleave.
CREATE TABLE messages (
    id               blob PRIMARY KEY CHECK (length(id) = 16),
    conversation_id  blob NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq              integer NOT NULL CHECK (seq > 0),
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    content          text NOT NULL,
    model            text NOT NULL,
    token_count      integer NOT NULL CHECK (token_count >= 0),
    metadata         text NOT NULL,
    created_at       text NOT NULL,
    UNIQUE (conversation_id, seq)
) STRICT;
