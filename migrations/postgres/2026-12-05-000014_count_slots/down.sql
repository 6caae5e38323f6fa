LOCK TABLE conversations IN SHARE MODE;
SELECT fold_conversation_counts();
DROP FUNCTION recount_conversations();
DROP TABLE conversation_slot_counts;
ALTER TABLE conversation_count_deltas DROP COLUMN slot;
ALTER TABLE conversation_count_deltas ADD COLUMN hour bigint NOT NULL;
CREATE OR REPLACE FUNCTION conversation_counts_add(c conversations, dl bigint, dd bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_count_deltas (org_id, workspace_id, repo_id, created_by, hour, live, deleted)
    VALUES (c.org_id, c.workspace_id, c.repo_id, c.created_by,
            floor(extract(epoch FROM c.created_at) / 3600)::bigint, dl, dd);
$$;

CREATE OR REPLACE FUNCTION fold_conversation_counts() RETURNS bigint
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
