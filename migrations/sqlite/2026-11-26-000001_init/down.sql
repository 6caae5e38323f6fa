DROP TABLE system_events;
DROP TABLE conversations;
DROP TABLE api_tokens;
DROP TABLE repos;
DROP TABLE workspace_members;
DROP TABLE workspaces;
DROP TABLE users;
DROP TABLE organizations;
