//! The turns of a conversation: reading them, and recording a prompt's turn
//! (both messages and the conversation's totals) in one transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::{conversations, messages, workspace_members};
use super::types::{SqlJson, SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::domain::{Access, MessageRole};
use crate::{with_conn, write_tx};

/// A stored message.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = messages, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct MessageRow {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub role: MessageRole,
    pub content: String,
    pub model: String,
    pub token_count: i64,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A message to store; its place (`seq`) is given when it is written.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub role: MessageRole,
    pub content: String,
    pub model: String,
    pub token_count: i64,
    pub metadata: serde_json::Value,
}

/// What a prompt adds to its conversation.
#[derive(Debug, Clone)]
pub struct NewTurn {
    pub conversation_id: Uuid,
    pub user: NewMessage,
    pub assistant: NewMessage,
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// Set as the title if the conversation has none.
    pub title: Option<String>,
    pub at: DateTime<Utc>,
    /// The turn's model calls, for the ledger and its rollups, and the
    /// settlement of its budget reservation.
    pub usage: super::usage::UsageWrite,
}

impl Store {
    /// A page of a conversation's messages, oldest first, and how many it has.
    pub async fn list_messages(
        &self,
        conversation_id: Uuid,
        take: i64,
        skip: i64,
    ) -> Result<(Vec<MessageRow>, i64), StoreError> {
        self.read(move |conn| {
            async move {
                let of = messages::conversation_id.eq(SqlUuid(conversation_id));
                let page = messages::table
                    .filter(of)
                    .order(messages::seq.asc())
                    .limit(take)
                    .offset(skip);
                let count = messages::table.filter(of).count();
                Ok(with_conn!(&mut *conn, |c| {
                    let rows = page.select(MessageRow::as_select()).load(c).await?;
                    let total = count.get_result::<i64>(c).await?;
                    diesel::QueryResult::Ok((rows, total))
                })?)
            }
            .boxed()
        })
        .await
    }

    /// The latest `n` messages of a conversation, oldest first: a prompt's
    /// context. One index walk backwards on `(conversation_id, seq)`, no count
    /// and no `OFFSET`, so a turn costs the same at 100,000 messages as at 10.
    pub async fn latest_messages(
        &self,
        conversation_id: Uuid,
        n: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        self.read(move |conn| {
            async move {
                let latest = messages::table
                    .filter(messages::conversation_id.eq(SqlUuid(conversation_id)))
                    .order(messages::seq.desc())
                    .limit(n);
                let mut rows = with_conn!(&mut *conn, |c| {
                    latest.select(MessageRow::as_select()).load(c).await
                })?;
                rows.reverse();
                Ok(rows)
            }
            .boxed()
        })
        .await
    }

    /// The caller's access level in a workspace, if a member.
    pub async fn membership(
        &self,
        workspace_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<Access>, StoreError> {
        self.run(move |conn| {
            async move {
                let query = workspace_members::table
                    .filter(workspace_members::workspace_id.eq(SqlUuid(workspace_id)))
                    .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                    .select(workspace_members::access);
                Ok(with_conn!(&mut *conn, |c| query
                    .first::<Access>(c)
                    .await
                    .optional())?)
            }
            .boxed()
        })
        .await
    }

    /// Records a prompt's turn: adds the usage to the conversation (which
    /// locks its row, so concurrent turns of one conversation queue here),
    /// titles it if untitled, and appends the two messages after its last
    /// one. Returns false, writing nothing, if the conversation is gone or
    /// deleted.
    pub async fn record_turn(&self, turn: NewTurn) -> Result<bool, StoreError> {
        self.run(move |conn| {
            async move {
                let id = SqlUuid(turn.conversation_id);
                let live = conversations::id
                    .eq(id)
                    .and(conversations::deleted_at.is_null());
                let totals = diesel::update(conversations::table.filter(live)).set((
                    conversations::tokens_in.eq(conversations::tokens_in + turn.tokens_in),
                    conversations::tokens_out.eq(conversations::tokens_out + turn.tokens_out),
                    conversations::last_updated_at.eq(SqlTime(turn.at)),
                ));
                let title = diesel::update(
                    conversations::table
                        .filter(conversations::id.eq(id))
                        .filter(conversations::title.is_null()),
                )
                .set(conversations::title.eq(turn.title.clone()));
                let last = messages::table
                    .filter(messages::conversation_id.eq(id))
                    .select(diesel::dsl::max(messages::seq));
                write_tx!(&mut *conn, |c| {
                    if totals.execute(c).await? == 0 {
                        return Ok(false);
                    }
                    if turn.title.is_some() {
                        title.execute(c).await?;
                    }
                    let seq = last.first::<Option<i64>>(c).await?.unwrap_or(0);
                    for (offset, m) in [(1, &turn.user), (2, &turn.assistant)] {
                        diesel::insert_into(messages::table)
                            .values((
                                messages::id.eq(SqlUuid(m.id)),
                                messages::conversation_id.eq(id),
                                messages::seq.eq(seq + offset),
                                messages::role.eq(m.role.as_str()),
                                messages::content.eq(&m.content),
                                messages::model.eq(&m.model),
                                messages::token_count.eq(m.token_count),
                                messages::metadata.eq(SqlJson(m.metadata.clone())),
                                messages::created_at.eq(SqlTime(turn.at)),
                            ))
                            .execute(c)
                            .await?;
                    }
                    crate::write_usage!(c, &turn.usage);
                    Ok(true)
                })
            }
            .boxed()
        })
        .await
    }
}
