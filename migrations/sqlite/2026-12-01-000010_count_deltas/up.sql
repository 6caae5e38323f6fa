-- The same table as on PostgreSQL, always empty here: SQLite admits one
-- writer at a time, so its triggers keep updating `conversation_counts` in
-- place (no create waits on another's row lock there), and totals read the
-- (empty) deltas as PostgreSQL's do.
CREATE TABLE conversation_count_deltas (
    id            integer PRIMARY KEY,
    org_id        blob NOT NULL,
    workspace_id  blob NOT NULL,
    created_by    blob NOT NULL,
    live          integer NOT NULL,
    deleted       integer NOT NULL
) STRICT;
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);
