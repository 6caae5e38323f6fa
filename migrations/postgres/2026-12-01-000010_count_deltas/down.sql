SELECT fold_conversation_counts();
CREATE OR REPLACE FUNCTION conversation_counts_add(o uuid, w uuid, u uuid, dl bigint, dd bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_counts AS c (org_id, workspace_id, created_by, live, deleted)
    VALUES (o, w, u, dl, dd)
    ON CONFLICT (org_id, workspace_id, created_by)
    DO UPDATE SET live = c.live + excluded.live, deleted = c.deleted + excluded.deleted;
$$;
DROP FUNCTION fold_conversation_counts();
DROP TABLE conversation_count_deltas;
