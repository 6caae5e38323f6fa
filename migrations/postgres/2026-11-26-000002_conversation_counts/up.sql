-- How many conversations each creator has in each workspace, live and
-- soft-deleted, kept by triggers in the same transaction as the change. Lists
-- answer `total` from these few rows instead of counting up to millions.
CREATE TABLE conversation_counts (
    org_id        uuid NOT NULL,
    workspace_id  uuid NOT NULL,
    created_by    uuid NOT NULL,
    live          bigint NOT NULL DEFAULT 0,
    deleted       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, workspace_id, created_by)
);
CREATE INDEX conversation_counts_creator_idx ON conversation_counts (created_by);

INSERT INTO conversation_counts (org_id, workspace_id, created_by, live, deleted)
SELECT org_id, workspace_id, created_by,
       count(*) FILTER (WHERE deleted_at IS NULL),
       count(*) FILTER (WHERE deleted_at IS NOT NULL)
FROM conversations
GROUP BY org_id, workspace_id, created_by;

CREATE FUNCTION conversation_counts_add(o uuid, w uuid, u uuid, dl bigint, dd bigint) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO conversation_counts AS c (org_id, workspace_id, created_by, live, deleted)
    VALUES (o, w, u, dl, dd)
    ON CONFLICT (org_id, workspace_id, created_by)
    DO UPDATE SET live = c.live + excluded.live, deleted = c.deleted + excluded.deleted;
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
