DROP TABLE conversation_count_deltas;
CREATE TABLE conversation_count_deltas (
    id            integer PRIMARY KEY,
    org_id        blob NOT NULL,
    workspace_id  blob NOT NULL,
    repo_id       blob NOT NULL,
    created_by    blob NOT NULL,
    hour          integer NOT NULL,
    live          integer NOT NULL,
    deleted       integer NOT NULL
) STRICT;
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);
