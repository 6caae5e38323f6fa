//! The log of streamed prompts (`prompt_streams`, `prompt_stream_events`):
//! what lets a client that lost its stream pick it up on any replica. The
//! replica running a turn appends its events in order, in batches; a
//! resumer reads those after the last it has, then polls for the rest.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::prepared::{Keyed, execute_on_sqlite};
use super::schema::{prompt_stream_events, prompt_streams, service_replicas};
use super::types::{DbTime, DbUuid, SqlTime, SqlUuid};
use super::{Conn, Store, StoreError};
use crate::{with_conn, write_tx};

/// A streamed turn as logged.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = prompt_streams, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct StreamRow {
    pub turn_id: Uuid,
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub replica_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

/// One logged event: its place, `delta`, `done` or `error`, and its data.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = prompt_stream_events, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct StreamEventRow {
    pub seq: i64,
    pub kind: String,
    pub data: String,
}

/// What a resumer reads: the turn, the events after the asked place, and
/// when the replica running the turn last wrote its heartbeat.
#[derive(Debug, Clone)]
pub struct StreamRead {
    pub stream: StreamRow,
    pub events: Vec<StreamEventRow>,
    pub owner_seen_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Logs the start of a streamed turn: one INSERT (on PostgreSQL on its
    /// own, without a transaction around it; on SQLite, a job of its writer
    /// thread).
    pub async fn start_stream(&self, row: StreamRow) -> Result<(), StoreError> {
        let insert = diesel::insert_into(prompt_streams::table).values((
            prompt_streams::turn_id.eq(SqlUuid(row.turn_id)),
            prompt_streams::conversation_id.eq(SqlUuid(row.conversation_id)),
            prompt_streams::user_id.eq(SqlUuid(row.user_id)),
            prompt_streams::replica_id.eq(SqlUuid(row.replica_id)),
            prompt_streams::started_at.eq(SqlTime(row.started_at)),
            prompt_streams::expires_at.eq(SqlTime(row.expires_at)),
        ));
        if let Some(writer) = self.sqlite_writer() {
            let insert = move |c: &mut _| Ok(diesel::RunQueryDsl::execute(insert, c).map(drop)?);
            return self.write_on(writer, insert).await;
        }
        self.run(move |conn| {
            async move {
                let Conn::Pg(c) = conn else {
                    return Err(StoreError::Internal("SQLite logs go to its writer".into()));
                };
                insert.execute(c).await?;
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// Appends events (in order, after those logged); with `finished`, the
    /// turn is over (at, and kept until). On PostgreSQL that is one
    /// statement whatever the number of events (their columns as arrays,
    /// unnested), so one round trip and one prepared statement; on SQLite,
    /// a row at a time in one transaction, a job of its writer thread.
    pub async fn append_stream(
        &self,
        turn_id: Uuid,
        events: Vec<StreamEventRow>,
        finished: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        if let Some(writer) = self.sqlite_writer() {
            let append = move |c: &mut _| append_on_sqlite(c, turn_id, &events, finished);
            return self.write_on(writer, append).await;
        }
        self.run(move |conn| {
            async move {
                let Conn::Pg(c) = conn else {
                    return Err(StoreError::Internal("SQLite logs go to its writer".into()));
                };
                append_on_postgres(c, turn_id, &events, finished).await
            }
            .boxed()
        })
        .await
    }

    /// The turn (if logged and not expired at `now`) and up to `limit` of
    /// its events after `after`. Read on the primary: a resumer wants the
    /// latest.
    pub async fn read_stream(
        &self,
        turn_id: Uuid,
        after: i64,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<StreamRead>, StoreError> {
        self.run(move |conn| {
            async move {
                with_conn!(&mut *conn, |c| {
                    let Some(stream) = prompt_streams::table
                        .filter(prompt_streams::turn_id.eq(SqlUuid(turn_id)))
                        .filter(prompt_streams::expires_at.gt(SqlTime(now)))
                        .select(StreamRow::as_select())
                        .first(c)
                        .await
                        .optional()?
                    else {
                        return Ok(None);
                    };
                    let events = prompt_stream_events::table
                        .filter(prompt_stream_events::turn_id.eq(SqlUuid(turn_id)))
                        .filter(prompt_stream_events::seq.gt(after))
                        .order(prompt_stream_events::seq.asc())
                        .limit(limit)
                        .select(StreamEventRow::as_select())
                        .load(c)
                        .await?;
                    let owner_seen_at = service_replicas::table
                        .filter(service_replicas::id.eq(SqlUuid(stream.replica_id)))
                        .select(service_replicas::seen_at)
                        .first::<DateTime<Utc>>(c)
                        .await
                        .optional()?;
                    Ok(Some(StreamRead {
                        stream,
                        events,
                        owner_seen_at,
                    }))
                })
            }
            .boxed()
        })
        .await
    }

    /// Deletes the turns (and their events) kept until before `now`;
    /// returns how many.
    pub async fn sweep_streams(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let expired = prompt_streams::table
                        .filter(prompt_streams::expires_at.le(SqlTime(now)))
                        .select(prompt_streams::turn_id);
                    diesel::delete(
                        prompt_stream_events::table
                            .filter(prompt_stream_events::turn_id.eq_any(expired)),
                    )
                    .execute(c)
                    .await?;
                    Ok(diesel::delete(
                        prompt_streams::table.filter(prompt_streams::expires_at.le(SqlTime(now))),
                    )
                    .execute(c)
                    .await?)
                })
            }
            .boxed()
        })
        .await
    }
}

/// The events of a stream as one PostgreSQL statement (their columns as
/// arrays, unnested); with its end, the same inside a data-modifying `WITH`.
macro_rules! pg_append {
    () => {
        "INSERT INTO prompt_stream_events (turn_id, seq, kind, data) \
         SELECT $1, e.seq, e.kind, e.data \
         FROM unnest($2::bigint[], $3::text[], $4::text[]) AS e(seq, kind, data)"
    };
}
const PG_APPEND: &str = pg_append!();
const PG_APPEND_FINISH: &str = concat!(
    "WITH appended AS (",
    pg_append!(),
    ") UPDATE prompt_streams SET finished_at = $5, expires_at = $6 WHERE turn_id = $1"
);

/// The key of [`PG_APPEND`], prepared.
enum PgAppend {}

/// The key of [`PG_APPEND_FINISH`], prepared.
enum PgAppendFinish {}

/// The key of the UPDATE that marks a stream finished on SQLite.
enum StreamFinish {}

/// [`Store::append_stream`] on SQLite's writer thread, inside its write
/// transaction.
fn append_on_sqlite(
    c: &mut diesel::SqliteConnection,
    turn_id: Uuid,
    events: &[StreamEventRow],
    finished: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<(), StoreError> {
    use diesel::RunQueryDsl as Sync;
    for e in events {
        Sync::execute(
            diesel::insert_into(prompt_stream_events::table).values((
                prompt_stream_events::turn_id.eq(SqlUuid(turn_id)),
                prompt_stream_events::seq.eq(e.seq),
                prompt_stream_events::kind.eq(&e.kind),
                prompt_stream_events::data.eq(&e.data),
            )),
            c,
        )?;
    }
    if let Some((at, until)) = finished {
        let finish = diesel::update(
            prompt_streams::table.filter(prompt_streams::turn_id.eq(SqlUuid(turn_id))),
        )
        .set((
            prompt_streams::finished_at.eq(Some(SqlTime(at))),
            prompt_streams::expires_at.eq(SqlTime(until)),
        ));
        execute_on_sqlite(Keyed::<StreamFinish, _>::new(finish), c)?;
    }
    Ok(())
}

async fn append_on_postgres(
    c: &mut AsyncPgConnection,
    turn_id: Uuid,
    events: &[StreamEventRow],
    finished: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> Result<(), StoreError> {
    use diesel::sql_types::{Array, BigInt, Text};
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    let append = |sql: &'static str| {
        diesel::sql_query(sql)
            .bind::<DbUuid, _>(SqlUuid(turn_id))
            .bind::<Array<BigInt>, _>(seqs)
            .bind::<Array<Text>, _>(kinds)
            .bind::<Array<Text>, _>(data)
    };
    match finished {
        None => {
            Keyed::<PgAppend, _>::new(append(PG_APPEND))
                .execute(c)
                .await?
        }
        Some((at, until)) => {
            Keyed::<PgAppendFinish, _>::new(
                append(PG_APPEND_FINISH)
                    .bind::<DbTime, _>(SqlTime(at))
                    .bind::<DbTime, _>(SqlTime(until)),
            )
            .execute(c)
            .await?
        }
    };
    Ok(())
}
