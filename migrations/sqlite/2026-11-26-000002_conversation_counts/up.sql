-- How many conversations each creator has in each workspace, live and
-- soft-deleted, kept by triggers in the same transaction as the change. Lists
-- answer `total` from these few rows instead of counting up to millions.
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
