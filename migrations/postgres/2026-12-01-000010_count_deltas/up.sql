-- No hot rows: a create no longer updates its creator's count row in place
-- (one creator's concurrent creates queued on that row's lock until each
-- commit). Each change appends a delta row, which waits on nothing; a fold
-- (`fold_conversation_counts()`, which every replica runs each second) moves
-- the deltas into `conversation_counts` in one statement. A total is the
-- counts plus the deltas not folded yet, read in one statement (one
-- snapshot), so it stays exact.
CREATE TABLE conversation_count_deltas (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id        uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL,
    deleted       bigint NOT NULL
);
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);

CREATE OR REPLACE FUNCTION conversation_counts_add(o uuid, w uuid, u uuid, dl bigint, dd bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_count_deltas (org_id, workspace_id, created_by, live, deleted)
    VALUES (o, w, u, dl, dd);
$$;

-- Moves every delta it sees into the counts; returns how many. Folds running
-- at once each take the rows they deleted (a row is deleted once), in key
-- order (so that their upserts cannot deadlock).
CREATE FUNCTION fold_conversation_counts() RETURNS bigint
LANGUAGE sql AS $$
    WITH moved AS (
        DELETE FROM conversation_count_deltas
        RETURNING org_id, workspace_id, created_by, live, deleted
    ), summed AS (
        SELECT org_id, workspace_id, created_by, sum(live)::bigint AS live,
               sum(deleted)::bigint AS deleted, count(*) AS n
        FROM moved GROUP BY org_id, workspace_id, created_by
    ), folded AS (
        INSERT INTO conversation_counts AS c (org_id, workspace_id, created_by, live, deleted)
        SELECT org_id, workspace_id, created_by, live, deleted FROM summed
        ORDER BY org_id, workspace_id, created_by
        ON CONFLICT (org_id, workspace_id, created_by)
        DO UPDATE SET live = c.live + excluded.live, deleted = c.deleted + excluded.deleted
        RETURNING 1
    )
    SELECT coalesce(sum(n), 0)::bigint FROM summed;
$$;
