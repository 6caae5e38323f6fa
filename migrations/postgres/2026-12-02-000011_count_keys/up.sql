-- Lists never count rows: `conversation_counts` is keyed by repository too
-- (a `repoId` filter's total was counted row by row), and
-- `conversation_day_counts` / `conversation_hour_counts` keep the same counts
-- per day and per hour of creation (since the Unix epoch), so that a `from` /
-- `to` filter's total sums the whole days it covers, the whole hours of its
-- partial days, and counts rows only in the partial hours at its two ends. A
-- change still appends one delta row (no hot rows); the fold moves the deltas
-- into the three tables in one statement.
SELECT fold_conversation_counts();
DROP TRIGGER conversations_count ON conversations;
DROP FUNCTION conversations_count();
DROP FUNCTION fold_conversation_counts();
DROP FUNCTION conversation_counts_add(uuid, uuid, uuid, bigint, bigint);
DROP TABLE conversation_count_deltas;
DROP TABLE conversation_counts;

CREATE TABLE conversation_counts (
    org_id        uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    repo_id       uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL DEFAULT 0,
    deleted       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, workspace_id, repo_id, created_by)
);
CREATE INDEX conversation_counts_creator_idx ON conversation_counts (created_by);

CREATE TABLE conversation_hour_counts (
    org_id        uuid NOT NULL,
    hour          bigint NOT NULL,
    workspace_id  uuid NOT NULL,
    repo_id       uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL DEFAULT 0,
    deleted       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, hour, workspace_id, repo_id, created_by)
);

CREATE TABLE conversation_day_counts (
    org_id        uuid NOT NULL,
    day           bigint NOT NULL,
    workspace_id  uuid NOT NULL,
    repo_id       uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL DEFAULT 0,
    deleted       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, day, workspace_id, repo_id, created_by)
);

CREATE TABLE conversation_count_deltas (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id        uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    repo_id       uuid NOT NULL,
    created_by    uuid NOT NULL,
    hour          bigint NOT NULL,
    live          bigint NOT NULL,
    deleted       bigint NOT NULL
);
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);

INSERT INTO conversation_counts (org_id, workspace_id, repo_id, created_by, live, deleted)
SELECT org_id, workspace_id, repo_id, created_by,
       count(*) FILTER (WHERE deleted_at IS NULL),
       count(*) FILTER (WHERE deleted_at IS NOT NULL)
FROM conversations
GROUP BY org_id, workspace_id, repo_id, created_by;

INSERT INTO conversation_hour_counts (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
SELECT org_id, floor(extract(epoch FROM created_at) / 3600)::bigint, workspace_id, repo_id, created_by,
       count(*) FILTER (WHERE deleted_at IS NULL),
       count(*) FILTER (WHERE deleted_at IS NOT NULL)
FROM conversations
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO conversation_day_counts (org_id, day, workspace_id, repo_id, created_by, live, deleted)
SELECT org_id, floor(extract(epoch FROM created_at) / 86400)::bigint, workspace_id, repo_id, created_by,
       count(*) FILTER (WHERE deleted_at IS NULL),
       count(*) FILTER (WHERE deleted_at IS NOT NULL)
FROM conversations
GROUP BY 1, 2, 3, 4, 5;

CREATE FUNCTION conversation_counts_add(c conversations, dl bigint, dd bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_count_deltas (org_id, workspace_id, repo_id, created_by, hour, live, deleted)
    VALUES (c.org_id, c.workspace_id, c.repo_id, c.created_by,
            floor(extract(epoch FROM c.created_at) / 3600)::bigint, dl, dd);
$$;

CREATE FUNCTION conversations_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM conversation_counts_add(OLD,
            CASE WHEN OLD.deleted_at IS NULL THEN -1 ELSE 0 END,
            CASE WHEN OLD.deleted_at IS NULL THEN 0 ELSE -1 END);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM conversation_counts_add(NEW,
            CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE 0 END,
            CASE WHEN NEW.deleted_at IS NULL THEN 0 ELSE 1 END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER conversations_count
AFTER INSERT OR DELETE
    OR UPDATE OF org_id, workspace_id, repo_id, created_by, created_at, deleted_at ON conversations
FOR EACH ROW EXECUTE FUNCTION conversations_count();

-- Moves every delta it sees into the three tables; returns how many. Folds
-- running at once each take the rows they deleted (a row is deleted once),
-- in key order (so that their upserts cannot deadlock).
CREATE FUNCTION fold_conversation_counts() RETURNS bigint
LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM conversation_count_deltas
        RETURNING org_id, workspace_id, repo_id, created_by, hour, live, deleted
    ), by_hour AS (
        SELECT org_id, hour, workspace_id, repo_id, created_by, sum(live)::bigint AS live,
               sum(deleted)::bigint AS deleted, count(*) AS n
        FROM moved GROUP BY org_id, hour, workspace_id, repo_id, created_by
    ), by_day AS (
        SELECT org_id, floor(hour / 24.0)::bigint AS day, workspace_id, repo_id, created_by,
               sum(live)::bigint AS live, sum(deleted)::bigint AS deleted
        FROM by_hour GROUP BY 1, 2, 3, 4, 5
    ), by_key AS (
        SELECT org_id, workspace_id, repo_id, created_by, sum(live)::bigint AS live,
               sum(deleted)::bigint AS deleted
        FROM by_hour GROUP BY org_id, workspace_id, repo_id, created_by
    ), hours AS (
        INSERT INTO conversation_hour_counts AS c (org_id, hour, workspace_id, repo_id, created_by, live, deleted)
        SELECT org_id, hour, workspace_id, repo_id, created_by, live, deleted FROM by_hour
        ORDER BY org_id, hour, workspace_id, repo_id, created_by
        ON CONFLICT (org_id, hour, workspace_id, repo_id, created_by)
        DO UPDATE SET live = c.live + excluded.live, deleted = c.deleted + excluded.deleted
        RETURNING 1
    ), days AS (
        INSERT INTO conversation_day_counts AS c (org_id, day, workspace_id, repo_id, created_by, live, deleted)
        SELECT org_id, day, workspace_id, repo_id, created_by, live, deleted FROM by_day
        ORDER BY org_id, day, workspace_id, repo_id, created_by
        ON CONFLICT (org_id, day, workspace_id, repo_id, created_by)
        DO UPDATE SET live = c.live + excluded.live, deleted = c.deleted + excluded.deleted
        RETURNING 1
    ), keys AS (
        INSERT INTO conversation_counts AS c (org_id, workspace_id, repo_id, created_by, live, deleted)
        SELECT org_id, workspace_id, repo_id, created_by, live, deleted FROM by_key
        ORDER BY org_id, workspace_id, repo_id, created_by
        ON CONFLICT (org_id, workspace_id, repo_id, created_by)
        DO UPDATE SET live = c.live + excluded.live, deleted = c.deleted + excluded.deleted
        RETURNING 1
    )
    SELECT coalesce(sum(n), 0)::bigint FROM by_hour;
$$;
