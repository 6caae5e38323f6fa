DROP TRIGGER conversations_count_insert;
DROP TRIGGER conversations_count_delete;
DROP TRIGGER conversations_count_update;
DROP TABLE conversation_count_deltas;
DROP TABLE conversation_hour_counts;
DROP TABLE conversation_day_counts;
DROP TABLE conversation_counts;
CREATE TABLE conversation_counts (
    org_id        blob NOT NULL,
    workspace_id  blob NOT NULL,
    created_by    blob NOT NULL,
    live          integer NOT NULL DEFAULT 0,
    deleted       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, workspace_id, created_by)
) STRICT, WITHOUT ROWID;
CREATE INDEX conversation_counts_creator_idx ON conversation_counts (created_by);

INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
SELECT org_id, workspace_id, created_by,
       sum(deleted_at IS NULL), sum(deleted_at IS NOT NULL)
FROM conversations
GROUP BY org_id, workspace_id, created_by;

CREATE TABLE conversation_count_deltas (
    id            integer PRIMARY KEY,
    org_id        blob NOT NULL,
    workspace_id  blob NOT NULL,
    created_by    blob NOT NULL,
    live          integer NOT NULL,
    deleted       integer NOT NULL
) STRICT;
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);

CREATE TRIGGER conversations_count_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
    VALUES (NEW.org_id, NEW.workspace_id, NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, workspace_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
END;

CREATE TRIGGER conversations_count_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
    VALUES (OLD.org_id, OLD.workspace_id, OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, workspace_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
END;

CREATE TRIGGER conversations_count_update
AFTER UPDATE OF org_id, workspace_id, created_by, deleted_at ON conversations BEGIN
    INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
    VALUES (OLD.org_id, OLD.workspace_id, OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, workspace_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
    VALUES (NEW.org_id, NEW.workspace_id, NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, workspace_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
END;
