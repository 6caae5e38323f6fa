-- A list walks one of these indexes newest first and compares the rest of
-- its filter (organization, workspace, repository, creator, deletion) on
-- each entry. With those columns in the index the walk reads nothing else:
-- past the first page a walk passes `skip + take` entries, and fetching each
-- one's row from the table (scattered across it for a creator's or a
-- workspace's conversations) was most of a page's time. SQLite has no
-- INCLUDE, so they trail the key.
DROP INDEX conversations_org_created_idx;
DROP INDEX conversations_workspace_created_idx;
DROP INDEX conversations_creator_created_idx;
DROP INDEX conversations_repo_created_idx;
CREATE INDEX conversations_org_created_idx
    ON conversations (org_id, created_at, id, workspace_id, repo_id, created_by, deleted_at);
CREATE INDEX conversations_workspace_created_idx
    ON conversations (workspace_id, created_at, id, org_id, repo_id, created_by, deleted_at);
CREATE INDEX conversations_creator_created_idx
    ON conversations (created_by, created_at, id, org_id, workspace_id, repo_id, deleted_at);
CREATE INDEX conversations_repo_created_idx
    ON conversations (repo_id, created_at, id, org_id, workspace_id, created_by, deleted_at);
