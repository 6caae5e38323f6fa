//! The turns of a conversation: reading them, and recording a prompt's turn
//! (both messages and the conversation's totals) in one transaction.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::prepared::Prepared;
use super::schema::{conversations, messages, workspace_members};
use super::types::{DbJson, DbTime, DbUuid, SqlJson, SqlTime, SqlUuid, coalesce};
use super::usage::pipelined_usage;
use super::{Conn, Store, StoreError};
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

/// What every turn of a conversation changes: when it was last updated
/// and its token totals. A context read at one version is the
/// conversation's at that version (`service::messages::context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub at: DateTime<Utc>,
    pub tokens_in: i64,
    pub tokens_out: i64,
}

impl Version {
    /// The version of a conversation as read.
    pub fn of(row: &super::conversations::ConversationRow) -> Version {
        Version {
            at: row.last_updated_at,
            tokens_in: row.tokens_in,
            tokens_out: row.tokens_out,
        }
    }

    fn from_row((at, tokens_in, tokens_out): (DateTime<Utc>, i64, i64)) -> Version {
        Version {
            at,
            tokens_in,
            tokens_out,
        }
    }
}

/// A stored turn: the number (`seq`) of its user's message (the model's is
/// the next), and the conversation's version it left.
#[derive(Debug, Clone, Copy)]
pub struct TurnStored {
    pub seq: i64,
    pub version: Version,
}

/// A message's number, as `RETURNING` gives it.
#[derive(QueryableByName)]
struct Numbered {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

impl Store {
    /// A page of a conversation's messages, oldest first, and how many it has.
    ///
    /// A turn numbers its two messages after the conversation's last one while
    /// holding the conversation's row, and messages are only ever removed with
    /// their conversation, so `seq` runs 1, 2, ... without gaps: the total is
    /// the last `seq` and a page is the range after `skip`. Both are index
    /// lookups on `(conversation_id, seq)`, so a page costs the same at the
    /// end of 100,000 messages as at the start of ten (no count, no `OFFSET`).
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
                    .filter(messages::seq.gt(skip))
                    .order(messages::seq.asc())
                    .limit(take);
                let last = messages::table
                    .filter(of)
                    .select(diesel::dsl::max(messages::seq));
                Ok(with_conn!(&mut *conn, |c| {
                    let rows = page.select(MessageRow::as_select()).load(c).await?;
                    let total = last.first::<Option<i64>>(c).await?.unwrap_or(0);
                    diesel::QueryResult::Ok((rows, total))
                })?)
            }
            .boxed()
        })
        .await
    }

    /// The latest `n` messages of a conversation, oldest first, as a prompt's
    /// context needs them: each one's number, who said what. One index walk
    /// backwards on `(conversation_id, seq)`, no count and no `OFFSET`, so a
    /// turn costs the same at 100,000 messages as at 10; and only these
    /// columns sent (a message's metadata, JSON, would be read and parsed
    /// for nothing).
    pub async fn latest_messages(
        &self,
        conversation_id: Uuid,
        n: i64,
    ) -> Result<Vec<(i64, MessageRole, String)>, StoreError> {
        self.read(move |conn| {
            async move {
                let latest = messages::table
                    .filter(messages::conversation_id.eq(SqlUuid(conversation_id)))
                    .order(messages::seq.desc())
                    .limit(n)
                    .select((messages::seq, messages::role, messages::content));
                let mut rows = with_conn!(&mut *conn, |c| {
                    latest.load::<(i64, MessageRole, String)>(c).await
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

    /// Records a prompt's turn: adds the usage to the conversation and titles
    /// it if untitled, in one UPDATE (which locks its row, so concurrent
    /// turns of one conversation queue here), and appends the two messages
    /// after its last one. Returns what it stored, or nothing, writing
    /// nothing, if the conversation is gone or deleted.
    pub async fn record_turn(&self, turn: NewTurn) -> Result<Option<TurnStored>, StoreError> {
        if self.sqlite_writer().is_none() {
            let begin = std::sync::Arc::<str>::from(self.begin_sql());
            return self
                .run_in_own_transaction(move |conn| {
                    async move {
                        let Conn::Pg(pg) = conn else {
                            return Err(StoreError::Internal("not a PostgreSQL connection".into()));
                        };
                        turn_on_postgres(pg, &begin, &turn).await
                    }
                    .boxed()
                })
                .await;
        }
        self.run(move |conn| {
            async move {
                let id = SqlUuid(turn.conversation_id);
                let last = messages::table
                    .filter(messages::conversation_id.eq(id))
                    .select(diesel::dsl::max(messages::seq));
                write_tx!(&mut *conn, |c| {
                    let Some(version) = totals_update(&turn)
                        .get_result::<(DateTime<Utc>, i64, i64)>(c)
                        .await
                        .optional()?
                    else {
                        return Ok(None);
                    };
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
                    Ok(Some(TurnStored {
                        seq: seq + 1,
                        version: Version::from_row(version),
                    }))
                })
            }
            .boxed()
        })
        .await
    }
}

/// A turn's usage added to its conversation, which is titled if untitled:
/// one UPDATE, which holds the conversation's row until the turn commits,
/// and returns the conversation's new [`Version`]. Kept prepared (diesel
/// would prepare an UPDATE anew every time).
fn totals_update(
    turn: &NewTurn,
) -> Prepared<
    impl Query<SqlType = (DbTime, BigInt, BigInt)>
    + QueryFragment<Pg>
    + QueryFragment<Sqlite>
    + QueryId
    + Send
    + use<>,
> {
    let live = conversations::id
        .eq(SqlUuid(turn.conversation_id))
        .and(conversations::deleted_at.is_null());
    Prepared(
        diesel::update(conversations::table.filter(live))
            .set((
                conversations::tokens_in.eq(conversations::tokens_in + turn.tokens_in),
                conversations::tokens_out.eq(conversations::tokens_out + turn.tokens_out),
                conversations::last_updated_at.eq(SqlTime(turn.at)),
                conversations::title.eq(coalesce(conversations::title, turn.title.clone())),
            ))
            .returning((
                conversations::last_updated_at,
                conversations::tokens_in,
                conversations::tokens_out,
            )),
    )
}

/// Both messages of a turn in one statement on PostgreSQL, numbered after
/// the conversation's last. It runs once the turn's UPDATE holds the
/// conversation's row, so it sees every message of a turn that held the row
/// before (a statement's snapshot starts with it), and no other turn can
/// number in between.
const PG_MESSAGES: &str = "WITH last AS (SELECT coalesce(max(seq), 0) AS seq FROM messages \
     WHERE conversation_id = $1) \
     INSERT INTO messages (id, conversation_id, seq, role, content, model, token_count, metadata, created_at) \
     SELECT $2, $1, last.seq + 1, $3, $4, $5, $6, $7, $8 FROM last \
     UNION ALL SELECT $9, $1, last.seq + 2, $10, $11, $12, $13, $14, $8 FROM last \
     RETURNING seq";

/// A turn on PostgreSQL, in a transaction opened by hand, in two round
/// trips where a statement at a time took nine: `BEGIN`, the UPDATE, both
/// messages, the ledger rows, the rollups and the budgets' settlement are
/// sent at once (pipelined: the connection runs them in the order sent, so
/// the messages are numbered once the UPDATE holds the row, and budgets
/// are settled in their order); then `COMMIT`, or `ROLLBACK` if the
/// conversation is gone (the UPDATE matched nothing) or a statement failed.
///
/// The `COMMIT` waits for the replies rather than going with the rest: on a
/// connection's first turn its statements are prepared first (a round trip
/// each, in the order sent), and a `COMMIT` sent along would overtake them
/// (tried: concurrent turns then numbered their messages outside the lock).
async fn turn_on_postgres(
    c: &mut AsyncPgConnection,
    begin: &str,
    turn: &NewTurn,
) -> Result<Option<TurnStored>, StoreError> {
    let c: &AsyncPgConnection = c;
    let (user, assistant) = (&turn.user, &turn.assistant);
    let both = Prepared(
        diesel::sql_query(PG_MESSAGES)
            .bind::<DbUuid, _>(SqlUuid(turn.conversation_id))
            .bind::<DbUuid, _>(SqlUuid(user.id))
            .bind::<Text, _>(user.role.as_str())
            .bind::<Text, _>(&user.content)
            .bind::<Text, _>(&user.model)
            .bind::<BigInt, _>(user.token_count)
            .bind::<DbJson, _>(SqlJson(user.metadata.clone()))
            .bind::<DbTime, _>(SqlTime(turn.at))
            .bind::<DbUuid, _>(SqlUuid(assistant.id))
            .bind::<Text, _>(assistant.role.as_str())
            .bind::<Text, _>(&assistant.content)
            .bind::<Text, _>(&assistant.model)
            .bind::<BigInt, _>(assistant.token_count)
            .bind::<DbJson, _>(SqlJson(assistant.metadata.clone())),
    );
    let update = async {
        totals_update(turn)
            .get_result::<(DateTime<Utc>, i64, i64)>(&mut &*c)
            .await
            .optional()
    };
    let insert = async { both.load::<Numbered>(&mut &*c).await };
    let usage = futures_util::future::join_all(pipelined_usage(c, &turn.usage));
    let begun = async { (&mut &*c).batch_execute(begin).await };
    let (begun, updated, numbered, usage) = tokio::join!(biased; begun, update, insert, usage);
    let written = begun.map_err(StoreError::from).and_then(|()| {
        // Gone: what follows the UPDATE (even its errors) is rolled back.
        let Some(version) = updated? else {
            return Ok(None);
        };
        let seq = numbered?.iter().map(|n| n.seq).min();
        usage.into_iter().try_for_each(|r| r.map(drop))?;
        let seq =
            seq.ok_or_else(|| StoreError::Internal("a turn's messages were not numbered".into()))?;
        Ok(Some(TurnStored {
            seq,
            version: Version::from_row(version),
        }))
    });
    let keep = matches!(written, Ok(Some(_)));
    super::end_transaction(c, written, keep).await
}
