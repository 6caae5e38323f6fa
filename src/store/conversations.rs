//! The queries behind the conversation rpcs: who holds a token, what a caller
//! may do with a repository, and writing a conversation with its audit event.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::schema::{
    api_tokens, conversations, repos, system_events, users, workspace_members, workspaces,
};
use super::types::{SqlJson, SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

/// An API token and the user it belongs to, as found by the token's hash.
#[derive(Debug, Clone, Queryable)]
pub struct TokenOwner {
    pub token_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub org_role: String,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A repository with its workspace's state and the caller's membership in it.
#[derive(Debug, Clone, Queryable)]
pub struct RepoAccess {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub name: String,
    pub disabled_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub workspace_deleted_at: Option<DateTime<Utc>>,
    /// The caller's access level in the repo's workspace, if a member.
    pub access: Option<String>,
}

/// A row of `conversations` to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = conversations)]
pub struct NewConversation {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: SqlUuid,
    pub repo_id: SqlUuid,
    pub created_by: SqlUuid,
    pub title: Option<String>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub created_at: SqlTime,
    pub last_updated_at: SqlTime,
}

/// A row of `system_events` to insert.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = system_events)]
pub struct NewEvent {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: Option<SqlUuid>,
    pub user_id: Option<SqlUuid>,
    pub context: String,
    pub context_id: Option<SqlUuid>,
    pub event: String,
    pub json_data: Option<SqlJson>,
    pub created_at: SqlTime,
}

impl Store {
    /// The token whose SHA-256 is `hash`, with its user; one indexed lookup.
    pub async fn find_token(&self, hash: [u8; 32]) -> Result<Option<TokenOwner>, StoreError> {
        self.run(move |mut conn| async move {
            let query = api_tokens::table
                .inner_join(users::table)
                .filter(api_tokens::token_hash.eq(hash.to_vec()))
                .select((
                    api_tokens::id,
                    api_tokens::expires_at,
                    api_tokens::revoked_at,
                    api_tokens::last_used_at,
                    users::id,
                    users::org_id,
                    users::email,
                    users::name,
                    users::last_name,
                    users::org_role,
                    users::disabled_at,
                ));
            Ok(with_conn!(&mut conn, |c| query
                .first::<TokenOwner>(c)
                .await
                .optional())?)
        })
        .await
    }

    /// Records that a token was used (kept coarse by the caller: this is a write).
    pub async fn touch_token(&self, token_id: Uuid, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.run(move |mut conn| async move {
            let query =
                diesel::update(api_tokens::table.filter(api_tokens::id.eq(SqlUuid(token_id))))
                    .set(api_tokens::last_used_at.eq(SqlTime(at)));
            with_conn!(&mut conn, |c| query.execute(c).await)?;
            Ok(())
        })
        .await
    }

    /// The repository `repo_id` with its workspace's state and `user_id`'s
    /// membership of that workspace; one query.
    pub async fn repo_access(
        &self,
        repo_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<RepoAccess>, StoreError> {
        self.run(move |mut conn| async move {
            let query = repos::table
                .left_join(workspaces::table.on(repos::workspace_id.eq(workspaces::id.nullable())))
                .left_join(
                    workspace_members::table.on(workspace_members::workspace_id
                        .nullable()
                        .eq(repos::workspace_id)
                        .and(workspace_members::user_id.eq(SqlUuid(user_id)))),
                )
                .filter(repos::id.eq(SqlUuid(repo_id)))
                .select((
                    repos::id,
                    repos::org_id,
                    repos::workspace_id,
                    repos::name,
                    repos::disabled_at,
                    repos::deleted_at,
                    workspaces::deleted_at.nullable(),
                    workspace_members::access.nullable(),
                ));
            Ok(with_conn!(&mut conn, |c| query
                .first::<RepoAccess>(c)
                .await
                .optional())?)
        })
        .await
    }

    /// Writes a conversation and its audit event in one transaction: both or neither.
    pub async fn insert_conversation(
        &self,
        conversation: NewConversation,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        self.run(move |mut conn| async move {
            write_tx!(&mut conn, |c| {
                diesel::insert_into(conversations::table)
                    .values(&conversation)
                    .execute(c)
                    .await?;
                diesel::insert_into(system_events::table)
                    .values(&event)
                    .execute(c)
                    .await?;
                Ok(())
            })?;
            Ok(())
        })
        .await
    }
}
