SELECT fold_conversation_counts();
DROP TRIGGER conversations_count ON conversations;
DROP FUNCTION conversations_count();
DROP FUNCTION fold_conversation_counts();
DROP FUNCTION conversation_counts_add(conversations, bigint, bigint);
DROP TABLE conversation_count_deltas;
DROP TABLE conversation_hour_counts;
DROP TABLE conversation_day_counts;
DROP TABLE conversation_counts;

CREATE TABLE conversation_counts (
    org_id        uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL DEFAULT 0,
    deleted       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, workspace_id, created_by)
);
CREATE INDEX conversation_counts_creator_idx ON conversation_counts (created_by);
CREATE TABLE conversation_count_deltas (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id        uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL,
    deleted       bigint NOT NULL
);
CREATE INDEX conversation_count_deltas_by_org ON conversation_count_deltas (org_id);
INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
SELECT org_id, workspace_id, created_by,
       count(*) FILTER (WHERE deleted_at IS NULL),
       count(*) FILTER (WHERE deleted_at IS NOT NULL)
FROM conversations
GROUP BY org_id, workspace_id, created_by;

CREATE FUNCTION conversation_counts_add(o uuid, w uuid, u uuid, dl bigint, dd bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_count_deltas (org_id, workspace_id, created_by, live, deleted)
    VALUES (o, w, u, dl, dd);
$$;

CREATE FUNCTION conversations_count() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM conversation_counts_add(OLD.org_id, OLD.workspace_id, OLD.created_by,
            CASE WHEN OLD.deleted_at IS NULL THEN -1 ELSE 0 END,
            CASE WHEN OLD.deleted_at IS NULL THEN 0 ELSE -1 END);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM conversation_counts_add(NEW.org_id, NEW.workspace_id, NEW.created_by,
            CASE WHEN NEW.deleted_at IS NULL THEN 1 ELSE 0 END,
            CASE WHEN NEW.deleted_at IS NULL THEN 0 ELSE 1 END);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER conversations_count
AFTER INSERT OR DELETE OR UPDATE OF org_id, workspace_id, created_by, deleted_at ON conversations
FOR EACH ROW EXECUTE FUNCTION conversations_count();

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
