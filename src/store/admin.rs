//! Administration of the platform's entities (organizations, users, workspaces,
//! memberships, repositories, API tokens) and reading the audit trail. Used by
//! the admin CLI and by `serve --demo`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::{
    api_tokens, organizations, repos, system_events, users, workspace_members, workspaces,
};
use super::types::{SqlTime, SqlUuid, now};
use super::{Store, StoreError};
use crate::auth::NewToken;
use crate::domain::{Access, OrgRole};
use crate::{with_conn, write_tx};

/// One row of the audit trail.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = system_events, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct EventRow {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub context: String,
    pub context_id: Option<Uuid>,
    pub event: String,
    pub json_data: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// A new user's details.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub org_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub role: OrgRole,
}

fn not_found(what: &str, id: Uuid) -> StoreError {
    StoreError::NotFound(format!("{what} {id} not found"))
}

/// The organization of a row of `$table`, or NotFound. A macro because it is
/// written once for several tables (a function generic over diesel tables
/// would need a bound per clause).
macro_rules! org_of {
    ($c:expr, $table:ident, $id:expr) => {
        $table::table
            .filter($table::id.eq(SqlUuid($id)))
            .select($table::org_id)
            .first::<Uuid>($c)
            .await
            .optional()?
    };
}

impl Store {
    /// Creates an organization; returns its id.
    pub async fn create_org(&self, name: String) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        self.run(move |conn| {
            async move {
                let insert = diesel::insert_into(organizations::table).values((
                    organizations::id.eq(SqlUuid(id)),
                    organizations::name.eq(name),
                    organizations::created_at.eq(SqlTime(now())),
                ));
                with_conn!(&mut *conn, |c| insert.execute(c).await)?;
                Ok(id)
            }
            .boxed()
        })
        .await
    }

    /// Creates a user in an organization; returns its id. Emails are unique.
    pub async fn create_user(&self, user: NewUser) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        self.run(move |conn| {
            async move {
                let org_id = user.org_id;
                let insert = diesel::insert_into(users::table).values((
                    users::id.eq(SqlUuid(id)),
                    users::org_id.eq(SqlUuid(user.org_id)),
                    users::email.eq(user.email),
                    users::name.eq(user.name),
                    users::last_name.eq(user.last_name),
                    users::org_role.eq(user.role.as_str()),
                    users::created_at.eq(SqlTime(now())),
                ));
                with_conn!(&mut *conn, |c| insert.execute(c).await).map_err(|e| {
                    match StoreError::from(e) {
                        StoreError::MissingReference(_) => not_found("organization", org_id),
                        StoreError::Conflict(_) => {
                            StoreError::Conflict("a user with this email already exists".into())
                        }
                        other => other,
                    }
                })?;
                Ok(id)
            }
            .boxed()
        })
        .await
    }

    /// Disables a user: their tokens stop working at once. Idempotent.
    pub async fn disable_user(&self, user_id: Uuid) -> Result<(), StoreError> {
        self.stamp_once(Stamp::UserDisabled, user_id).await
    }

    /// Creates a workspace in an organization; returns its id.
    pub async fn create_workspace(&self, org_id: Uuid, name: String) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        self.run(move |conn| {
            async move {
                let insert = diesel::insert_into(workspaces::table).values((
                    workspaces::id.eq(SqlUuid(id)),
                    workspaces::org_id.eq(SqlUuid(org_id)),
                    workspaces::name.eq(name),
                    workspaces::created_at.eq(SqlTime(now())),
                ));
                with_conn!(&mut *conn, |c| insert.execute(c).await).map_err(|e| {
                    match StoreError::from(e) {
                        StoreError::MissingReference(_) => not_found("organization", org_id),
                        other => other,
                    }
                })?;
                Ok(id)
            }
            .boxed()
        })
        .await
    }

    /// Gives a user an access level in a workspace of their organization
    /// (replacing any level they had).
    pub async fn grant(
        &self,
        workspace_id: Uuid,
        user_id: Uuid,
        access: Access,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let ws_org = org_of!(c, workspaces, workspace_id)
                        .ok_or_else(|| not_found("workspace", workspace_id))?;
                    let user_org =
                        org_of!(c, users, user_id).ok_or_else(|| not_found("user", user_id))?;
                    if ws_org != user_org {
                        return Err(StoreError::Invalid(
                            "the user and the workspace belong to different organizations".into(),
                        ));
                    }
                    diesel::insert_into(workspace_members::table)
                        .values((
                            workspace_members::workspace_id.eq(SqlUuid(workspace_id)),
                            workspace_members::user_id.eq(SqlUuid(user_id)),
                            workspace_members::access.eq(access.as_str()),
                            workspace_members::created_at.eq(SqlTime(now())),
                        ))
                        .on_conflict((workspace_members::workspace_id, workspace_members::user_id))
                        .do_update()
                        .set(workspace_members::access.eq(access.as_str()))
                        .execute(c)
                        .await?;
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }

    /// Soft-deletes a workspace: its repositories can no longer be reached. Idempotent.
    pub async fn delete_workspace(&self, workspace_id: Uuid) -> Result<(), StoreError> {
        self.stamp_once(Stamp::WorkspaceDeleted, workspace_id).await
    }

    /// Creates a repository, in a workspace of the same organization or
    /// orphaned; returns its id.
    pub async fn create_repo(
        &self,
        org_id: Uuid,
        name: String,
        workspace_id: Option<Uuid>,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    if let Some(ws) = workspace_id {
                        let ws_org =
                            org_of!(c, workspaces, ws).ok_or_else(|| not_found("workspace", ws))?;
                        if ws_org != org_id {
                            return Err(StoreError::Invalid(
                                "the workspace belongs to another organization".into(),
                            ));
                        }
                    }
                    diesel::insert_into(repos::table)
                        .values((
                            repos::id.eq(SqlUuid(id)),
                            repos::org_id.eq(SqlUuid(org_id)),
                            repos::workspace_id.eq(workspace_id.map(SqlUuid)),
                            repos::name.eq(name),
                            repos::created_at.eq(SqlTime(now())),
                        ))
                        .execute(c)
                        .await
                        .map_err(|e| match StoreError::from(e) {
                            StoreError::MissingReference(_) => not_found("organization", org_id),
                            other => other,
                        })?;
                    Ok(id)
                })
            }
            .boxed()
        })
        .await
    }

    /// Disables a repository: no new conversations on it. Idempotent.
    pub async fn disable_repo(&self, repo_id: Uuid) -> Result<(), StoreError> {
        self.stamp_once(Stamp::RepoDisabled, repo_id).await
    }

    /// Stores a new API token for a user; returns the token's id.
    pub async fn create_token(
        &self,
        user_id: Uuid,
        name: String,
        token: &NewToken,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::now_v7();
        let hash = token.hash.to_vec();
        self.run(move |conn| {
            async move {
                let insert = diesel::insert_into(api_tokens::table).values((
                    api_tokens::id.eq(SqlUuid(id)),
                    api_tokens::user_id.eq(SqlUuid(user_id)),
                    api_tokens::name.eq(name),
                    api_tokens::token_hash.eq(hash),
                    api_tokens::expires_at.eq(expires_at.map(SqlTime)),
                    api_tokens::created_at.eq(SqlTime(now())),
                ));
                with_conn!(&mut *conn, |c| insert.execute(c).await).map_err(|e| {
                    match StoreError::from(e) {
                        StoreError::MissingReference(_) => not_found("user", user_id),
                        other => other,
                    }
                })?;
                Ok(id)
            }
            .boxed()
        })
        .await
    }

    /// Revokes the token with this hash (the secret's) or this id. Idempotent.
    pub async fn revoke_token(&self, token: TokenRef) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                let at = SqlTime(now());
                let id = match token {
                    TokenRef::Id(id) => Some(id),
                    TokenRef::Hash(hash) => {
                        let query = api_tokens::table
                            .filter(api_tokens::token_hash.eq(hash.to_vec()))
                            .select(api_tokens::id);
                        with_conn!(&mut *conn, |c| query.first::<Uuid>(c).await.optional())?
                    }
                };
                let Some(id) = id else {
                    return Err(StoreError::NotFound("token not found".into()));
                };
                let update = diesel::update(
                    api_tokens::table
                        .filter(api_tokens::id.eq(SqlUuid(id)))
                        .filter(api_tokens::revoked_at.is_null()),
                )
                .set(api_tokens::revoked_at.eq(at));
                let changed = with_conn!(&mut *conn, |c| update.execute(c).await)?;
                if changed == 0 {
                    let exists = api_tokens::table
                        .filter(api_tokens::id.eq(SqlUuid(id)))
                        .select(api_tokens::id);
                    let found =
                        with_conn!(&mut *conn, |c| exists.first::<Uuid>(c).await.optional())?;
                    if found.is_none() {
                        return Err(not_found("token", id));
                    }
                }
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// The newest `limit` events of an organization, newest first.
    pub async fn list_events(&self, org_id: Uuid, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        let filter = super::events::ExportFilter {
            org_id,
            since: None,
            until: None,
            context: None,
            after: None,
            oldest_first: false,
        };
        self.export_page(filter, limit).await
    }

    /// Whether an organization exists.
    pub async fn org_exists(&self, org_id: Uuid) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                let query = organizations::table
                    .filter(organizations::id.eq(SqlUuid(org_id)))
                    .select(organizations::id);
                Ok(with_conn!(&mut *conn, |c| query.first::<Uuid>(c).await.optional())?.is_some())
            }
            .boxed()
        })
        .await
    }

    /// Sets a "happened at" column once: a row already stamped keeps its time.
    async fn stamp_once(&self, stamp: Stamp, id: Uuid) -> Result<(), StoreError> {
        self.run(move |conn| {
            async move {
                let at = SqlTime(now());
                let key = SqlUuid(id);
                // Once per table with its column: a macro, for the reason
                // `org_of!` is one.
                macro_rules! stamp {
                    ($table:ident, $col:ident) => {{
                        let update = diesel::update(
                            $table::table
                                .filter($table::id.eq(key))
                                .filter($table::$col.is_null()),
                        )
                        .set($table::$col.eq(at));
                        let exists = $table::table.filter($table::id.eq(key)).select($table::id);
                        with_conn!(&mut *conn, |c| {
                            let changed = update.execute(c).await?;
                            if changed > 0 {
                                Ok(true)
                            } else {
                                exists
                                    .first::<Uuid>(c)
                                    .await
                                    .optional()
                                    .map(|f| f.is_some())
                            }
                        })
                    }};
                }
                let (found, what) = match stamp {
                    Stamp::UserDisabled => (stamp!(users, disabled_at)?, "user"),
                    Stamp::WorkspaceDeleted => (stamp!(workspaces, deleted_at)?, "workspace"),
                    Stamp::RepoDisabled => (stamp!(repos, disabled_at)?, "repository"),
                };
                if found {
                    Ok(())
                } else {
                    Err(not_found(what, id))
                }
            }
            .boxed()
        })
        .await
    }
}

/// Which column [`Store::stamp_once`] sets.
#[derive(Debug, Clone, Copy)]
enum Stamp {
    UserDisabled,
    WorkspaceDeleted,
    RepoDisabled,
}

/// A token named by its secret (looked up by hash) or by its id.
#[derive(Debug, Clone, Copy)]
pub enum TokenRef {
    Hash([u8; 32]),
    Id(Uuid),
}
