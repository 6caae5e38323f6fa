-- The number of the conversation's last message (0 before its first): a
-- turn takes the next two in the UPDATE that holds the conversation's row,
-- so it numbers its messages without reading them.
ALTER TABLE conversations ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0 CHECK (last_seq >= 0);
UPDATE conversations
SET last_seq = (SELECT max(seq) FROM messages WHERE messages.conversation_id = conversations.id)
WHERE EXISTS (SELECT 1 FROM messages WHERE messages.conversation_id = conversations.id);
