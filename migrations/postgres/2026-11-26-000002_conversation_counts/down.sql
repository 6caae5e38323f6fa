DROP TRIGGER conversations_count ON conversations;
DROP FUNCTION conversations_count();
DROP FUNCTION conversation_counts_add(uuid, uuid, uuid, bigint, bigint);
DROP TABLE conversation_counts;
