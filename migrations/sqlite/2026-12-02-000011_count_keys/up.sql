-- Lists never count rows: `conversation_counts` is keyed by repository too
-- (a `repoId` filter's total was counted row by row), and
-- `conversation_day_counts` / `conversation_hour_counts` keep the same counts
-- per day and per hour of creation (since the Unix epoch), so that a `from` /
-- `to` filter's total sums the whole days it covers, the whole hours of its
-- partial days, and counts rows only in the partial hours at its two ends. SQLite's triggers keep the three in place (one writer at a time: no
-- hot rows to avoid); the deltas table stays empty, as before.
DROP TRIGGER conversations_count_insert;
DROP TRIGGER conversations_count_delete;
DROP TRIGGER conversations_count_update;
DROP TABLE conversation_count_deltas;
DROP TABLE conversation_counts;

CREATE TABLE conversation_counts (
    org_id        blob NOT NULL,
    workspace_id  blob NOT NULL,
    repo_id       blob NOT NULL,
    created_by    blob NOT NULL,
    live          integer NOT NULL DEFAULT 0,
    deleted       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, workspace_id, repo_id, created_by)
) STRICT, WITHOUT ROWID;
CREATE INDEX conversation_counts_creator_idx ON conversation_counts (created_by);

CREATE TABLE conversation_hour_counts (
    org_id        blob NOT NULL,
    hour          integer NOT NULL,
    workspace_id  blob NOT NULL,
    repo_id       blob NOT NULL,
    created_by    blob NOT NULL,
    live          integer NOT NULL DEFAULT 0,
    deleted       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, hour, workspace_id, repo_id, created_by)
) STRICT, WITHOUT ROWID;

CREATE TABLE conversation_day_counts (
    org_id        blob NOT NULL,
    day           integer NOT NULL,
    workspace_id  blob NOT NULL,
    repo_id       blob NOT NULL,
    created_by    blob NOT NULL,
    live          integer NOT NULL DEFAULT 0,
    deleted       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, workspace_id, repo_id, created_by)
) STRICT, WITHOUT ROWID;

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

INSERT INTO conversation_counts (org_id, workspace_id, repo_id, created_by, live, deleted)
SELECT org_id, workspace_id, repo_id, created_by,
       sum(deleted_at IS NULL), sum(deleted_at IS NOT NULL)
FROM conversations
GROUP BY org_id, workspace_id, repo_id, created_by;

INSERT INTO conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
SELECT org_id, CAST(strftime('%s', created_at) AS INTEGER) / 3600, workspace_id, repo_id, created_by,
       sum(deleted_at IS NULL), sum(deleted_at IS NOT NULL)
FROM conversations
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO conversation_day_counts (org_id, day, workspace_id, repo_id, created_by, live, deleted)
SELECT org_id, CAST(strftime('%s', created_at) AS INTEGER) / 86400, workspace_id, repo_id, created_by,
       sum(deleted_at IS NULL), sum(deleted_at IS NOT NULL)
FROM conversations
GROUP BY 1, 2, 3, 4, 5;

CREATE TRIGGER conversations_count_insert AFTER INSERT ON conversations BEGIN
    INSERT INTO conversation_counts (org_id, workspace_id, repo_id, created_by, live, deleted)
    VALUES (NEW.org_id, NEW.workspace_id, NEW.repo_id, NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
    VALUES (NEW.org_id, CAST(strftime('%s', NEW.created_at) AS INTEGER) / 3600, NEW.workspace_id, NEW.repo_id,
            NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, hour, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_day_counts (org_id, day, workspace_id, repo_id, created_by, live, deleted)
    VALUES (NEW.org_id, CAST(strftime('%s', NEW.created_at) AS INTEGER) / 86400, NEW.workspace_id, NEW.repo_id,
            NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, day, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
END;

CREATE TRIGGER conversations_count_delete AFTER DELETE ON conversations BEGIN
    INSERT INTO conversation_counts (org_id, workspace_id, repo_id, created_by, live, deleted)
    VALUES (OLD.org_id, OLD.workspace_id, OLD.repo_id, OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
    VALUES (OLD.org_id, CAST(strftime('%s', OLD.created_at) AS INTEGER) / 3600, OLD.workspace_id, OLD.repo_id,
            OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, hour, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_day_counts (org_id, day, workspace_id, repo_id, created_by, live, deleted)
    VALUES (OLD.org_id, CAST(strftime('%s', OLD.created_at) AS INTEGER) / 86400, OLD.workspace_id, OLD.repo_id,
            OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, day, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
END;

CREATE TRIGGER conversations_count_update
AFTER UPDATE OF org_id, workspace_id, repo_id, created_by, created_at, deleted_at ON conversations BEGIN
    INSERT INTO conversation_counts (org_id, workspace_id, repo_id, created_by, live, deleted)
    VALUES (OLD.org_id, OLD.workspace_id, OLD.repo_id, OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_counts (org_id, workspace_id, repo_id, created_by, live, deleted)
    VALUES (NEW.org_id, NEW.workspace_id, NEW.repo_id, NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
    VALUES (OLD.org_id, CAST(strftime('%s', OLD.created_at) AS INTEGER) / 3600, OLD.workspace_id, OLD.repo_id,
            OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, hour, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_day_counts (org_id, day, workspace_id, repo_id, created_by, live, deleted)
    VALUES (OLD.org_id, CAST(strftime('%s', OLD.created_at) AS INTEGER) / 86400, OLD.workspace_id, OLD.repo_id,
            OLD.created_by, -(OLD.deleted_at IS NULL), -(OLD.deleted_at IS NOT NULL))
    ON CONFLICT (org_id, day, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
    VALUES (NEW.org_id, CAST(strftime('%s', NEW.created_at) AS INTEGER) / 3600, NEW.workspace_id, NEW.repo_id,
            NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, hour, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
    INSERT INTO conversation_day_counts (org_id, day, workspace_id, repo_id, created_by, live, deleted)
    VALUES (NEW.org_id, CAST(strftime('%s', NEW.created_at) AS INTEGER) / 86400, NEW.workspace_id, NEW.repo_id,
            NEW.created_by, NEW.deleted_at IS NULL, NEW.deleted_at IS NOT NULL)
    ON CONFLICT (org_id, day, workspace_id, repo_id, created_by)
    DO UPDATE SET live = live + excluded.live, deleted = deleted + excluded.deleted;
END;
