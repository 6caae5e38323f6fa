//! The turns of a conversation: reading them, and recording a prompt's turn
//! (both messages and the conversation's totals) in one transaction.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::query_builder::{Query, QueryFragment};
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::prepared::{Keyed, execute_on_sqlite};
use super::schema::{conversations, messages, workspace_members};
use super::types::{DbJson, DbTime, DbUuid, SqlJson, SqlTime, SqlUuid, coalesce};
use super::{Conn, Store, StoreError};
use crate::domain::{Access, MessageRole};
use crate::with_conn;

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
}

/// A stored turn: the number (`seq`) of its user's message (the model's is
/// the next), and the conversation's version it left.
#[derive(Debug, Clone, Copy)]
pub struct TurnStored {
    pub seq: i64,
    pub version: Version,
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

    /// Records a prompt's turn: adds the usage to the conversation, titles it
    /// if untitled and takes the next two message numbers, in one UPDATE
    /// (which locks its row, so concurrent turns of one conversation queue
    /// here), then writes the two messages and the turn's usage. One
    /// statement on PostgreSQL ([`PG_TURN`]), one write transaction on
    /// SQLite. Returns what it stored, or nothing, writing nothing, if the
    /// conversation is gone or deleted.
    pub async fn record_turn(&self, turn: NewTurn) -> Result<Option<TurnStored>, StoreError> {
        if let Some(writer) = self.sqlite_writer() {
            return self
                .write_on(writer, move |c| turn_on_sqlite(c, &turn))
                .await;
        }
        self.run(move |conn| {
            async move {
                let Conn::Pg(c) = conn else {
                    return Err(StoreError::Internal("SQLite turns go to its writer".into()));
                };
                turn_on_postgres(c, &turn).await
            }
            .boxed()
        })
        .await
    }
}

/// Records a turn on SQLite's writer thread, inside its write transaction:
/// the totals UPDATE (which numbers the messages), both messages, its usage.
/// One job on one thread, where each statement was a hop to a blocking
/// thread and back.
fn turn_on_sqlite(
    c: &mut SqliteConnection,
    turn: &NewTurn,
) -> Result<Option<TurnStored>, StoreError> {
    use diesel::RunQueryDsl as Sync;
    let Some(row) = Sync::get_result::<TurnRow>(totals_update(turn), c).optional()? else {
        return Ok(None);
    };
    let stored = row.stored();
    let id = SqlUuid(turn.conversation_id);
    for (seq, m) in [(stored.seq, &turn.user), (stored.seq + 1, &turn.assistant)] {
        Sync::execute(
            diesel::insert_into(messages::table).values((
                messages::id.eq(SqlUuid(m.id)),
                messages::conversation_id.eq(id),
                messages::seq.eq(seq),
                messages::role.eq(m.role.as_str()),
                messages::content.eq(&m.content),
                messages::model.eq(&m.model),
                messages::token_count.eq(m.token_count),
                messages::metadata.eq(SqlJson(m.metadata.clone())),
                messages::created_at.eq(SqlTime(turn.at)),
            )),
            c,
        )?;
    }
    crate::write_usage!(&turn.usage, |q| execute_on_sqlite(q, c));
    Ok(Some(stored))
}

/// What a turn's write returns: the conversation's version it left and the
/// number of its last message (the model's).
#[derive(Queryable, QueryableByName)]
struct TurnRow {
    #[diesel(sql_type = DbTime)]
    last_updated_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    tokens_in: i64,
    #[diesel(sql_type = BigInt)]
    tokens_out: i64,
    #[diesel(sql_type = BigInt)]
    last_seq: i64,
}

impl TurnRow {
    fn stored(self) -> TurnStored {
        TurnStored {
            seq: self.last_seq - 1,
            version: Version {
                at: self.last_updated_at,
                tokens_in: self.tokens_in,
                tokens_out: self.tokens_out,
            },
        }
    }
}

/// The numbers a turn takes: the two after the conversation's `last_seq`,
/// or after its last message if that is further on. A message written
/// without moving `last_seq` (by a replica still running the code before
/// it, during a rolling upgrade, or by hand) is then never numbered over.
/// On PostgreSQL the same is in [`PG_TURN`].
const NEXT_TWO_SQLITE: &str = "max(last_seq, (SELECT coalesce(max(seq), 0) FROM messages \
     WHERE messages.conversation_id = conversations.id)) + 2";

/// The key of [`totals_update`]'s statement.
enum TotalsUpdate {}

/// A turn's usage added to its conversation (on SQLite), which is titled
/// if untitled and gives the turn's two messages their numbers: one UPDATE,
/// which holds the conversation's row until the turn commits, and returns
/// what [`TurnRow`] holds. Kept prepared under one key (diesel would
/// prepare an UPDATE anew every time).
fn totals_update(
    turn: &NewTurn,
) -> Keyed<
    TotalsUpdate,
    impl Query<SqlType = (DbTime, BigInt, BigInt, BigInt)> + QueryFragment<Sqlite> + Send + use<>,
> {
    let live = conversations::id
        .eq(SqlUuid(turn.conversation_id))
        .and(conversations::deleted_at.is_null());
    Keyed::new(
        diesel::update(conversations::table.filter(live))
            .set((
                conversations::tokens_in.eq(conversations::tokens_in + turn.tokens_in),
                conversations::tokens_out.eq(conversations::tokens_out + turn.tokens_out),
                conversations::last_updated_at.eq(SqlTime(turn.at)),
                conversations::title.eq(coalesce(conversations::title, turn.title.clone())),
                conversations::last_seq.eq(diesel::dsl::sql::<BigInt>(NEXT_TWO_SQLITE)),
            ))
            .returning((
                conversations::last_updated_at,
                conversations::tokens_in,
                conversations::tokens_out,
                conversations::last_seq,
            )),
    )
}

/// A whole turn on PostgreSQL in one statement (one round trip, atomic by
/// itself, no `BEGIN` or `COMMIT`): SQLite's [`totals_update`] (`turn`),
/// which holds the conversation's row and numbers the turn's
/// messages, then, only if it matched a live conversation, both messages,
/// the ledger rows, the rollups (added to), and the budgets' settlement (in
/// the order given, so concurrent turns lock a budget's rows in one order).
///
/// The messages are numbered from the row's `last_seq` as the UPDATE left
/// it, never from the messages table: a statement's snapshot is taken when
/// it starts, before the UPDATE may wait for a turn holding the row, so it
/// would not see that turn's messages. The ledger and rollup rows come as
/// JSON arrays whose keys are their columns (`jsonb_populate_recordset`), the
/// settlement as arrays, so one prepared text serves any number of each.
const PG_TURN: &str = "WITH turn AS (\
     UPDATE conversations SET tokens_in = tokens_in + $2, tokens_out = tokens_out + $3, \
     last_updated_at = $4, title = coalesce(title, $5), \
     last_seq = greatest(last_seq, (SELECT coalesce(max(seq), 0) FROM messages \
     WHERE conversation_id = $1)) + 2 \
     WHERE id = $1 AND deleted_at IS NULL \
     RETURNING last_updated_at, tokens_in, tokens_out, last_seq), \
   written AS (INSERT INTO messages \
     (id, conversation_id, seq, role, content, model, token_count, metadata, created_at) \
     SELECT $6, $1, turn.last_seq - 1, $7, $8, $9, $10, $11, $4 FROM turn \
     UNION ALL SELECT $12, $1, turn.last_seq, $13, $14, $15, $16, $17, $4 FROM turn), \
   ledger AS (INSERT INTO usage_ledger \
     SELECT r.* FROM turn, jsonb_populate_recordset(NULL::usage_ledger, $18) AS r), \
   rollups AS (INSERT INTO usage_rollups AS u \
     SELECT r.* FROM turn, jsonb_populate_recordset(NULL::usage_rollups, $19) AS r \
     ON CONFLICT (conversation_id, user_id, grain, bucket, ai_llm_id, llm_type, llm_model, host) \
     DO UPDATE SET tokens_in = u.tokens_in + excluded.tokens_in, \
     tokens_out = u.tokens_out + excluded.tokens_out, \
     llm_tokens_in = u.llm_tokens_in + excluded.llm_tokens_in, \
     llm_tokens_out = u.llm_tokens_out + excluded.llm_tokens_out, \
     api_calls = u.api_calls + excluded.api_calls, latency_ms = u.latency_ms + excluded.latency_ms, \
     violations = u.violations + excluded.violations, alerts = u.alerts + excluded.alerts, \
     blocks = u.blocks + excluded.blocks, severity_low = u.severity_low + excluded.severity_low, \
     severity_medium = u.severity_medium + excluded.severity_medium, \
     severity_high = u.severity_high + excluded.severity_high), \
   released AS (DELETE FROM budget_reservations WHERE id = ANY($20) AND EXISTS (SELECT FROM turn)), \
   spent AS (INSERT INTO budget_spend AS b (budget_id, period_start, used) \
     SELECT s.budget_id, s.period_start, $23 FROM turn, \
     unnest($21, $22) WITH ORDINALITY AS s(budget_id, period_start, n) ORDER BY s.n \
     ON CONFLICT (budget_id, period_start) DO UPDATE SET used = b.used + excluded.used) \
   SELECT last_updated_at, tokens_in, tokens_out, last_seq FROM turn";

/// The key of [`PG_TURN`], prepared.
enum PgTurn {}

/// Records a turn with [`PG_TURN`]; nothing if the conversation is gone.
async fn turn_on_postgres(
    c: &mut AsyncPgConnection,
    turn: &NewTurn,
) -> Result<Option<TurnStored>, StoreError> {
    let (user, assistant) = (&turn.user, &turn.assistant);
    let usage = &turn.usage;
    let json = |rows: serde_json::Result<serde_json::Value>| {
        rows.map(SqlJson)
            .map_err(|e| StoreError::Internal(format!("a turn's usage as JSON: {e}")))
    };
    let (ledger, rollups) = (
        json(serde_json::to_value(&usage.ledger))?,
        json(serde_json::to_value(&usage.rollups))?,
    );
    let (reservations, spent, tokens) = match &usage.settle {
        Some(s) => (s.reservations.clone(), s.spent().to_vec(), s.tokens),
        None => (Vec::new(), Vec::new(), 0),
    };
    let (budgets, periods): (Vec<SqlUuid>, Vec<SqlTime>) = spent.into_iter().unzip();
    Ok(Keyed::<PgTurn, _>::new(
        diesel::sql_query(PG_TURN)
            .bind::<DbUuid, _>(SqlUuid(turn.conversation_id))
            .bind::<BigInt, _>(turn.tokens_in)
            .bind::<BigInt, _>(turn.tokens_out)
            .bind::<DbTime, _>(SqlTime(turn.at))
            .bind::<Nullable<Text>, _>(turn.title.as_deref())
            .bind::<DbUuid, _>(SqlUuid(user.id))
            .bind::<Text, _>(user.role.as_str())
            .bind::<Text, _>(&user.content)
            .bind::<Text, _>(&user.model)
            .bind::<BigInt, _>(user.token_count)
            .bind::<DbJson, _>(SqlJson(user.metadata.clone()))
            .bind::<DbUuid, _>(SqlUuid(assistant.id))
            .bind::<Text, _>(assistant.role.as_str())
            .bind::<Text, _>(&assistant.content)
            .bind::<Text, _>(&assistant.model)
            .bind::<BigInt, _>(assistant.token_count)
            .bind::<DbJson, _>(SqlJson(assistant.metadata.clone()))
            .bind::<DbJson, _>(ledger)
            .bind::<DbJson, _>(rollups)
            .bind::<Array<DbUuid>, _>(reservations)
            .bind::<Array<DbUuid>, _>(budgets)
            .bind::<Array<DbTime>, _>(periods)
            .bind::<BigInt, _>(tokens),
    )
    .get_result::<TurnRow>(c)
    .await
    .optional()?
    .map(TurnRow::stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prepared::sql_text;

    fn turn(title: Option<&str>, tokens: i64) -> NewTurn {
        let message = |role| NewMessage {
            id: Uuid::now_v7(),
            role,
            content: "text".into(),
            model: "m".into(),
            token_count: tokens,
            metadata: serde_json::json!({}),
        };
        NewTurn {
            conversation_id: Uuid::now_v7(),
            user: message(MessageRole::User),
            assistant: message(MessageRole::Assistant),
            tokens_in: tokens,
            tokens_out: tokens,
            title: title.map(str::to_owned),
            at: Utc::now(),
            usage: Default::default(),
        }
    }

    /// SQLite's turn UPDATE, kept under one key, has one text whether the
    /// turn titles its conversation or not.
    #[test]
    fn the_totals_update_has_one_text() {
        let titled = sql_text::<Sqlite, _>(&totals_update(&turn(Some("a title"), 1)));
        assert_eq!(
            titled,
            sql_text::<Sqlite, _>(&totals_update(&turn(None, 2)))
        );
        assert!(titled.contains("coalesce"), "{titled}");
    }
}
