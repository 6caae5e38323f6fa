-- PostgreSQL's deltas carry the ten-minute slot of creation now (see its
-- migration `count_slots`); this table, always empty here (SQLite's triggers
-- update the counts in place), keeps the same columns. SQLite keeps no slot
-- counts: its walk indexes carry every column a time filter's ends compare,
-- and a fourth upsert in its triggers would cost every create.
DROP TABLE conversation_count_deltas;
CREATE TABLE conversation_count_deltas (
    id            integer PRIMARY KEY,
    org_id        blob NOT NULL,
    workspace_id  blob NOT NULL,
    repo_id       blob NOT NULL,
    created_by    blob NOT NULL,
    slot          integer NOT NULL,
    live          integer NOT NULL,
    deleted       integer NOT NULL
) STRICT;
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);
