-- The number of the conversation's last message (0 before its first). A
-- turn takes the next two in the UPDATE that holds the conversation's row,
-- so it numbers its messages without reading them: on PostgreSQL the whole
-- turn is one statement, whose snapshot could not see the messages of a turn
-- that held the row before it.
ALTER TABLE conversations ADD COLUMN last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0);
UPDATE conversations AS c SET last_seq = m.seq
FROM (SELECT conversation_id, max(seq) AS seq FROM messages GROUP BY conversation_id) AS m
WHERE m.conversation_id = c.id;
