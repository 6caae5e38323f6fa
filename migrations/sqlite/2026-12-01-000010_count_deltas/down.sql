DROP TABLE conversation_count_deltas;
