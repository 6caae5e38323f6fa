//! The usage ledger and its rollups: written in the transaction of what they
//! account for (a turn, a blocked turn's violations, a failed turn), and read
//! by the statistics.

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use diesel::pg::Pg;
use diesel::query_builder::{QueryFragment, QueryId};
use diesel::sqlite::Sqlite;

use super::prepared::Keyed;
use super::schema::{
    budget_reservations, budget_spend, usage_ledger, usage_rollups, workspace_members,
};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

/// One model call, for the ledger (serialized with its columns' names, as
/// PostgreSQL's turn statement reads it).
#[derive(Debug, Clone, Insertable, serde::Serialize)]
#[diesel(table_name = super::schema::usage_ledger)]
pub struct NewUsage {
    pub id: SqlUuid,
    pub org_id: SqlUuid,
    pub workspace_id: SqlUuid,
    pub repo_id: SqlUuid,
    pub conversation_id: SqlUuid,
    pub user_id: SqlUuid,
    /// Written as NULL, never `DEFAULT`, so that the INSERT has one text
    /// ([`Keyed`]).
    #[diesel(treat_none_as_default_value = false)]
    pub ai_llm_id: Option<SqlUuid>,
    /// `prompt` (the conversation's own call) or `judge`.
    pub kind: &'static str,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub policy_tokens: i64,
    pub latency_ms: i64,
    /// `completed`, `blocked`, `failed` or `cancelled`: the turn's fate.
    pub outcome: &'static str,
    pub created_at: SqlTime,
}

/// What one time bucket of one dimension set adds up to (a row of
/// `usage_rollups`; written as a delta, read as a total). Serialized with
/// its columns' names, as PostgreSQL's turn statement reads it.
#[derive(Debug, Clone, Default, Insertable, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = usage_rollups, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Rollup {
    pub grain: String,
    #[diesel(serialize_as = SqlTime)]
    pub bucket: DateTime<Utc>,
    #[diesel(serialize_as = SqlUuid)]
    pub org_id: Uuid,
    #[diesel(serialize_as = SqlUuid)]
    pub workspace_id: Uuid,
    #[diesel(serialize_as = SqlUuid)]
    pub repo_id: Uuid,
    #[diesel(serialize_as = SqlUuid)]
    pub conversation_id: Uuid,
    #[diesel(serialize_as = SqlUuid)]
    pub user_id: Uuid,
    /// The nil UUID for the operator's provider.
    #[diesel(serialize_as = SqlUuid)]
    pub ai_llm_id: Uuid,
    pub llm_type: String,
    pub llm_model: String,
    pub host: String,
    /// The conversation's own tokens (prompt calls).
    pub tokens_in: i64,
    pub tokens_out: i64,
    /// Every token the providers reported (prompt and judge calls).
    pub llm_tokens_in: i64,
    pub llm_tokens_out: i64,
    pub api_calls: i64,
    /// The calls' latencies, summed.
    pub latency_ms: i64,
    pub violations: i64,
    pub alerts: i64,
    pub blocks: i64,
    pub severity_low: i64,
    pub severity_medium: i64,
    pub severity_high: i64,
}

/// A budget reservation settled with a turn: its rows go, and what the turn
/// used is added to each budget's period.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub reservations: Vec<SqlUuid>,
    /// Each budget reserved against, and the period it was reserved in.
    pub spend: Vec<(SqlUuid, SqlTime)>,
    pub tokens: i64,
}

impl Settlement {
    /// The budget periods the turn's tokens are added to (none when it used
    /// none).
    pub fn spent(&self) -> &[(SqlUuid, SqlTime)] {
        if self.tokens > 0 { &self.spend } else { &[] }
    }
}

/// What a turn's end writes about its usage, with the turn or its violations.
#[derive(Debug, Clone, Default)]
pub struct UsageWrite {
    pub ledger: Vec<NewUsage>,
    pub rollups: Vec<Rollup>,
    pub settle: Option<Settlement>,
}

impl UsageWrite {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty() && self.rollups.is_empty() && self.settle.is_none()
    }
}

/// The key of [`ledger_insert`]'s statement.
pub(crate) enum LedgerInsert {}

/// A ledger row's INSERT, kept prepared under one key.
pub(crate) fn ledger_insert(
    row: &NewUsage,
) -> Keyed<LedgerInsert, impl QueryFragment<Pg> + QueryFragment<Sqlite> + Send + '_> {
    Keyed::new(diesel::insert_into(usage_ledger::table).values(row))
}

/// The key of [`rollup_upsert`]'s statement.
pub(crate) enum RollupUpsert {}

/// A rollup added to its bucket's row (made if missing), kept prepared
/// under one key (diesel never keeps an upsert).
pub(crate) fn rollup_upsert(
    row: &Rollup,
) -> Keyed<RollupUpsert, impl QueryFragment<Pg> + QueryFragment<Sqlite> + Send + use<>> {
    use usage_rollups as r;
    Keyed::new(
        diesel::insert_into(r::table)
            .values(row.clone())
            .on_conflict((
                r::conversation_id,
                r::user_id,
                r::grain,
                r::bucket,
                r::ai_llm_id,
                r::llm_type,
                r::llm_model,
                r::host,
            ))
            .do_update()
            .set((
                r::tokens_in.eq(r::tokens_in + row.tokens_in),
                r::tokens_out.eq(r::tokens_out + row.tokens_out),
                r::llm_tokens_in.eq(r::llm_tokens_in + row.llm_tokens_in),
                r::llm_tokens_out.eq(r::llm_tokens_out + row.llm_tokens_out),
                r::api_calls.eq(r::api_calls + row.api_calls),
                r::latency_ms.eq(r::latency_ms + row.latency_ms),
                r::violations.eq(r::violations + row.violations),
                r::alerts.eq(r::alerts + row.alerts),
                r::blocks.eq(r::blocks + row.blocks),
                r::severity_low.eq(r::severity_low + row.severity_low),
                r::severity_medium.eq(r::severity_medium + row.severity_medium),
                r::severity_high.eq(r::severity_high + row.severity_high),
            )),
    )
}

/// A turn's hold on a budget, released.
pub(crate) fn release_hold(
    id: SqlUuid,
) -> impl QueryFragment<Pg> + QueryFragment<Sqlite> + QueryId + Send + use<> {
    diesel::delete(budget_reservations::table.filter(budget_reservations::id.eq(id)))
}

/// The key of [`spend_upsert`]'s statement.
pub(crate) enum SpendUpsert {}

/// What a turn used, added to a budget's period (made if missing), kept
/// prepared under one key.
pub(crate) fn spend_upsert(
    budget: SqlUuid,
    start: SqlTime,
    tokens: i64,
) -> Keyed<SpendUpsert, impl QueryFragment<Pg> + QueryFragment<Sqlite> + Send + use<>> {
    Keyed::new(
        diesel::insert_into(budget_spend::table)
            .values((
                budget_spend::budget_id.eq(budget),
                budget_spend::period_start.eq(start),
                budget_spend::used.eq(tokens),
            ))
            .on_conflict((budget_spend::budget_id, budget_spend::period_start))
            .do_update()
            .set(budget_spend::used.eq(budget_spend::used + tokens)),
    )
}

/// Writes a [`UsageWrite`] inside the caller's transaction: the ledger
/// rows, the rollups (added to), then the budget settlement (its
/// reservations go, what the turn used is added to each budget's period),
/// one statement at a time in the order given, so that concurrent turns
/// lock a budget's rows in one order. `$exec` runs the statement `$q`:
/// `write_usage!(&usage, |q| q.execute(c).await)` on diesel-async,
/// `write_usage!(&usage, |q| execute_on_sqlite(q, c))` on SQLite's
/// writer thread. PostgreSQL's turn writes the same in its one statement
/// (`store::messages::PG_TURN`).
#[macro_export]
macro_rules! write_usage {
    ($usage:expr, |$q:ident| $exec:expr) => {{
        use $crate::store::usage::{ledger_insert, release_hold, rollup_upsert, spend_upsert};
        let usage: &$crate::store::usage::UsageWrite = $usage;
        for row in &usage.ledger {
            let $q = ledger_insert(row);
            $exec?;
        }
        for row in &usage.rollups {
            let $q = rollup_upsert(row);
            $exec?;
        }
        if let Some(s) = &usage.settle {
            for id in &s.reservations {
                let $q = release_hold(*id);
                $exec?;
            }
            for (budget, start) in s.spent() {
                let $q = spend_upsert(*budget, *start, s.tokens);
                $exec?;
            }
        }
    }};
}

/// Whose usage a statistics query may see, within one organization.
#[derive(Debug, Clone)]
pub enum UsageScope {
    /// The whole organization (its administrators).
    Org,
    /// The caller's own usage and that of the workspaces they administer.
    Member(Uuid),
}

/// Which rollups a statistics query reads.
#[derive(Debug, Clone)]
pub struct StatsFilter {
    pub grain: &'static str,
    pub org_id: Uuid,
    pub scope: UsageScope,
    /// Buckets starting at or after `from` and before `to`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub repo_ids: Vec<Uuid>,
    pub ai_llm_ids: Vec<Uuid>,
    pub hosts: Vec<String>,
    pub llm_types: Vec<String>,
    pub llm_models: Vec<String>,
    pub user_ids: Vec<Uuid>,
    pub conversation_ids: Vec<Uuid>,
}

fn sql_ids(ids: &[Uuid]) -> Vec<SqlUuid> {
    ids.iter().copied().map(SqlUuid).collect()
}

/// The rollups a [`StatsFilter`] selects, as a boxed query.
macro_rules! rollups_query {
    ($f:expr) => {{
        let f: &StatsFilter = $f;
        let mut q = usage_rollups::table
            .filter(usage_rollups::org_id.eq(SqlUuid(f.org_id)))
            .filter(usage_rollups::grain.eq(f.grain))
            .filter(usage_rollups::bucket.ge(SqlTime(f.from)))
            .filter(usage_rollups::bucket.lt(SqlTime(f.to)))
            .into_boxed();
        if let UsageScope::Member(user_id) = f.scope {
            let administered = workspace_members::table
                .filter(workspace_members::user_id.eq(SqlUuid(user_id)))
                .filter(workspace_members::access.eq("admin"))
                .select(workspace_members::workspace_id);
            q = q.filter(
                usage_rollups::user_id
                    .eq(SqlUuid(user_id))
                    .or(usage_rollups::workspace_id.eq_any(administered)),
            );
        }
        if !f.repo_ids.is_empty() {
            q = q.filter(usage_rollups::repo_id.eq_any(sql_ids(&f.repo_ids)));
        }
        if !f.ai_llm_ids.is_empty() {
            q = q.filter(usage_rollups::ai_llm_id.eq_any(sql_ids(&f.ai_llm_ids)));
        }
        if !f.user_ids.is_empty() {
            q = q.filter(usage_rollups::user_id.eq_any(sql_ids(&f.user_ids)));
        }
        if !f.conversation_ids.is_empty() {
            q = q.filter(usage_rollups::conversation_id.eq_any(sql_ids(&f.conversation_ids)));
        }
        if !f.hosts.is_empty() {
            q = q.filter(usage_rollups::host.eq_any(f.hosts.clone()));
        }
        if !f.llm_types.is_empty() {
            q = q.filter(usage_rollups::llm_type.eq_any(f.llm_types.clone()));
        }
        if !f.llm_models.is_empty() {
            q = q.filter(usage_rollups::llm_model.eq_any(f.llm_models.clone()));
        }
        q
    }};
}

/// A provider configuration's usage, all time.
#[derive(Debug, Clone, Queryable)]
pub struct AiLlmTotals {
    pub ai_llm_id: Uuid,
    pub api_calls: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub llm_tokens_in: i64,
    pub llm_tokens_out: i64,
    pub violations: i64,
    pub alerts: i64,
    pub blocks: i64,
}

/// `SUM(column)` as a 64-bit integer on both backends (PostgreSQL sums
/// bigints into numerics).
fn total(column: &'static str) -> diesel::expression::SqlLiteral<BigInt> {
    sql::<BigInt>(&format!("CAST(COALESCE(SUM({column}), 0) AS BIGINT)"))
}

impl Store {
    /// The rollups of one grain that match, oldest bucket first.
    pub async fn usage_stats(&self, filter: StatsFilter) -> Result<Vec<Rollup>, StoreError> {
        self.read(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    rollups_query!(&filter)
                        .order((usage_rollups::bucket.asc(), usage_rollups::conversation_id))
                        .select(Rollup::as_select())
                        .load(c)
                        .await
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Each of `ai_llm_ids`' usage, all time (configurations never used are
    /// left out).
    pub async fn ai_llm_totals(
        &self,
        ai_llm_ids: Vec<Uuid>,
    ) -> Result<Vec<AiLlmTotals>, StoreError> {
        self.read(move |conn| {
            async move {
                let query = usage_rollups::table
                    .filter(usage_rollups::ai_llm_id.eq_any(sql_ids(&ai_llm_ids)))
                    .filter(usage_rollups::grain.eq("day"))
                    .group_by(usage_rollups::ai_llm_id)
                    .select((
                        usage_rollups::ai_llm_id,
                        total("api_calls"),
                        total("tokens_in"),
                        total("tokens_out"),
                        total("llm_tokens_in"),
                        total("llm_tokens_out"),
                        total("violations"),
                        total("alerts"),
                        total("blocks"),
                    ));
                Ok(with_conn!(&mut *conn, |c| query
                    .load::<AiLlmTotals>(c)
                    .await)?)
            }
            .boxed()
        })
        .await
    }

    /// Writes usage on its own (a turn that failed or was cancelled, so
    /// nothing else is written).
    pub async fn record_usage(&self, usage: UsageWrite) -> Result<(), StoreError> {
        if usage.is_empty() {
            return Ok(());
        }
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    crate::write_usage!(&usage, |q| q.execute(c).await);
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prepared::sql_text;

    fn ledger_row(ai_llm_id: Option<Uuid>, tokens: i64) -> NewUsage {
        let id = SqlUuid(Uuid::now_v7());
        NewUsage {
            id,
            org_id: id,
            workspace_id: id,
            repo_id: id,
            conversation_id: id,
            user_id: id,
            ai_llm_id: ai_llm_id.map(SqlUuid),
            kind: "prompt",
            llm_type: "OPENAI".into(),
            llm_model: "gpt".into(),
            host: String::new(),
            tokens_in: tokens,
            tokens_out: tokens,
            policy_tokens: 0,
            latency_ms: tokens,
            outcome: "completed",
            created_at: SqlTime(Utc::now()),
        }
    }

    fn rollup(grain: &str, tokens: i64) -> Rollup {
        Rollup {
            grain: grain.into(),
            bucket: Utc::now(),
            conversation_id: Uuid::now_v7(),
            tokens_in: tokens,
            api_calls: 1,
            ..Rollup::default()
        }
    }

    /// Each statement kept under one key ([`Keyed`]) has one SQL text per
    /// backend, whatever its values: a ledger row with and without its
    /// configuration, rollups and spend of any size.
    #[test]
    fn keyed_statements_have_one_text() {
        let (with, without) = (ledger_row(Some(Uuid::now_v7()), 1), ledger_row(None, 2));
        let (day, minute) = (rollup("day", 3), rollup("minute", 0));
        let at = SqlTime(Utc::now());
        let budget = SqlUuid(Uuid::now_v7());
        macro_rules! one_text {
            ($db:ty) => {{
                let ledger = sql_text::<$db, _>(&ledger_insert(&with));
                assert_eq!(ledger, sql_text::<$db, _>(&ledger_insert(&without)));
                assert!(!ledger.contains("DEFAULT"), "{ledger}");
                assert!(ledger.contains("ai_llm_id"), "{ledger}");
                assert_eq!(
                    sql_text::<$db, _>(&rollup_upsert(&day)),
                    sql_text::<$db, _>(&rollup_upsert(&minute))
                );
                assert_eq!(
                    sql_text::<$db, _>(&spend_upsert(budget, at, 0)),
                    sql_text::<$db, _>(&spend_upsert(budget, at, 7))
                );
            }};
        }
        one_text!(Sqlite);
        one_text!(Pg);
    }
}
