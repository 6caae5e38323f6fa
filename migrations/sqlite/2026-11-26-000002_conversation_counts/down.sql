DROP TRIGGER conversations_count_update;
DROP TRIGGER conversations_count_delete;
DROP TRIGGER conversations_count_insert;
DROP TABLE conversation_counts;
