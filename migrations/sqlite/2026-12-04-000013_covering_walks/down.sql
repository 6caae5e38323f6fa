DROP INDEX conversations_org_created_idx;
DROP INDEX conversations_workspace_created_idx;
DROP INDEX conversations_creator_created_idx;
DROP INDEX conversations_repo_created_idx;
CREATE INDEX conversations_org_created_idx ON conversations (org_id, created_at, id);
CREATE INDEX conversations_workspace_created_idx ON conversations (workspace_id, created_at, id);
CREATE INDEX conversations_creator_created_idx ON conversations (created_by, created_at, id);
CREATE INDEX conversations_repo_created_idx ON conversations (repo_id, created_at, id);
