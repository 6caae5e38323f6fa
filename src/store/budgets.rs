//! Token budgets: setting and clearing them, what each has spent, and the
//! reservations prompts hold against them while the model answers.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::{budget_reservations, budget_spend, budgets, usage_rollups};
use super::types::{SqlTime, SqlUuid};
use super::{Store, StoreError};
use crate::{with_conn, write_tx};

/// A stored budget.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = budgets, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct BudgetRow {
    pub id: Uuid,
    pub org_id: Uuid,
    /// `org` or `workspace`.
    pub scope: String,
    /// The organization's or the workspace's id.
    pub scope_id: Uuid,
    /// `day` or `month`.
    pub period: String,
    pub tokens: i64,
    pub updated_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A budget with what its current period has used and holds.
#[derive(Debug, Clone)]
pub struct BudgetState {
    pub budget: BudgetRow,
    pub used: i64,
    pub reserved: i64,
}

/// A budget to set (created, or its limit replaced).
#[derive(Debug, Clone)]
pub struct SetBudget {
    pub id: Uuid,
    pub org_id: Uuid,
    pub scope: &'static str,
    pub scope_id: Uuid,
    pub period: &'static str,
    pub tokens: i64,
    pub user_id: Uuid,
    pub at: DateTime<Utc>,
}

/// A budget a prompt reserves against, in its current period.
#[derive(Debug, Clone)]
pub struct Claim {
    pub budget: BudgetRow,
    pub period_start: DateTime<Utc>,
}

/// How a reservation went.
#[derive(Debug, Clone)]
pub enum Reserved {
    /// Held: the reservation rows' ids, and each budget's use after it.
    Held(Vec<(Uuid, BudgetState)>),
    /// This budget has no room (nothing is held on any).
    Exceeded(BudgetState),
}

/// The tokens held on a budget's period by reservations not yet expired.
macro_rules! held {
    ($c:ident, $budget:expr, $start:expr, $now:expr) => {
        budget_reservations::table
            .filter(budget_reservations::budget_id.eq(SqlUuid($budget)))
            .filter(budget_reservations::period_start.eq(SqlTime($start)))
            .filter(budget_reservations::expires_at.gt(SqlTime($now)))
            .select(budget_reservations::tokens)
            .load::<i64>($c)
            .await?
            .into_iter()
            .sum::<i64>()
    };
}

/// What a budget's scope used from `$start` on, as the rollups recorded it
/// (a period's spend starts from this when its first prompt is held).
macro_rules! recorded {
    ($c:ident, $budget:expr, $start:expr) => {{
        let b: &BudgetRow = $budget;
        let mut recorded = usage_rollups::table
            .filter(usage_rollups::grain.eq("day"))
            .filter(usage_rollups::bucket.ge(SqlTime($start)))
            .select((usage_rollups::llm_tokens_in, usage_rollups::llm_tokens_out))
            .into_boxed();
        recorded = if b.scope == "org" {
            recorded.filter(usage_rollups::org_id.eq(SqlUuid(b.scope_id)))
        } else {
            recorded.filter(usage_rollups::workspace_id.eq(SqlUuid(b.scope_id)))
        };
        recorded
            .load::<(i64, i64)>($c)
            .await?
            .into_iter()
            .map(|(i, o)| i + o)
            .sum::<i64>()
    }};
}

impl Store {
    /// The budgets of an organization, or only those of one scope.
    pub async fn list_budgets(
        &self,
        org_id: Uuid,
        scope_id: Option<Uuid>,
        now: DateTime<Utc>,
        period_start: fn(&str, DateTime<Utc>) -> DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    let mut query = budgets::table
                        .filter(budgets::org_id.eq(SqlUuid(org_id)))
                        .order((budgets::scope.asc(), budgets::created_at.asc()))
                        .select(BudgetRow::as_select())
                        .into_boxed();
                    if let Some(scope_id) = scope_id {
                        query = query.filter(budgets::scope_id.eq(SqlUuid(scope_id)));
                    }
                    let rows = query.load(c).await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for budget in rows {
                        let start = period_start(&budget.period, now);
                        let spent = budget_spend::table
                            .filter(budget_spend::budget_id.eq(SqlUuid(budget.id)))
                            .filter(budget_spend::period_start.eq(SqlTime(start)))
                            .select(budget_spend::used)
                            .first::<i64>(c)
                            .await
                            .optional()?;
                        // No prompt held yet this period: what was recorded.
                        let used = match spent {
                            Some(used) => used,
                            None => recorded!(c, &budget, start),
                        };
                        let reserved = held!(c, budget.id, start, now);
                        out.push(BudgetState {
                            budget,
                            used,
                            reserved,
                        });
                    }
                    diesel::QueryResult::Ok(out)
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Creates the budget of `(scope_id, period)`, or replaces its limit.
    pub async fn set_budget(&self, set: SetBudget) -> Result<BudgetRow, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    diesel::insert_into(budgets::table)
                        .values((
                            budgets::id.eq(SqlUuid(set.id)),
                            budgets::org_id.eq(SqlUuid(set.org_id)),
                            budgets::scope.eq(set.scope),
                            budgets::scope_id.eq(SqlUuid(set.scope_id)),
                            budgets::period.eq(set.period),
                            budgets::tokens.eq(set.tokens),
                            budgets::updated_by.eq(SqlUuid(set.user_id)),
                            budgets::created_at.eq(SqlTime(set.at)),
                            budgets::updated_at.eq(SqlTime(set.at)),
                        ))
                        .on_conflict((budgets::scope_id, budgets::period))
                        .do_update()
                        .set((
                            budgets::tokens.eq(set.tokens),
                            budgets::updated_by.eq(SqlUuid(set.user_id)),
                            budgets::updated_at.eq(SqlTime(set.at)),
                        ))
                        .execute(c)
                        .await?;
                    Ok(budgets::table
                        .filter(budgets::scope_id.eq(SqlUuid(set.scope_id)))
                        .filter(budgets::period.eq(set.period))
                        .select(BudgetRow::as_select())
                        .first(c)
                        .await?)
                })
            }
            .boxed()
        })
        .await
    }

    /// Deletes a budget of `org_id` with what it spent and holds; the
    /// deleted row, if there was one.
    pub async fn clear_budget(
        &self,
        org_id: Uuid,
        scope_id: Uuid,
        period: &'static str,
    ) -> Result<Option<BudgetRow>, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let Some(row) = budgets::table
                        .filter(budgets::org_id.eq(SqlUuid(org_id)))
                        .filter(budgets::scope_id.eq(SqlUuid(scope_id)))
                        .filter(budgets::period.eq(period))
                        .select(BudgetRow::as_select())
                        .first(c)
                        .await
                        .optional()?
                    else {
                        return Ok(None);
                    };
                    let id = SqlUuid(row.id);
                    diesel::delete(budget_spend::table.filter(budget_spend::budget_id.eq(id)))
                        .execute(c)
                        .await?;
                    diesel::delete(
                        budget_reservations::table.filter(budget_reservations::budget_id.eq(id)),
                    )
                    .execute(c)
                    .await?;
                    diesel::delete(budgets::table.filter(budgets::id.eq(id)))
                        .execute(c)
                        .await?;
                    Ok(Some(row))
                })
            }
            .boxed()
        })
        .await
    }

    /// The budgets that apply to a workspace of an organization: the
    /// organization's and the workspace's.
    pub async fn applicable_budgets(
        &self,
        org_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Vec<BudgetRow>, StoreError> {
        self.run(move |conn| {
            async move {
                Ok(with_conn!(&mut *conn, |c| {
                    budgets::table
                        .filter(
                            budgets::scope_id
                                .eq(SqlUuid(org_id))
                                .or(budgets::scope_id.eq(SqlUuid(workspace_id))),
                        )
                        .filter(budgets::org_id.eq(SqlUuid(org_id)))
                        .order(budgets::id.asc())
                        .select(BudgetRow::as_select())
                        .load(c)
                        .await
                })?)
            }
            .boxed()
        })
        .await
    }

    /// Reserves `tokens` on every claimed budget at once, or on none: each
    /// budget's period row is locked (in id order, so concurrent prompts
    /// never deadlock), and the reservation is refused if what the period
    /// used, what others hold and `tokens` would pass the limit. A period's
    /// first reservation starts its spend from the usage already recorded in
    /// it (a budget set mid-period counts what came before). Expired
    /// reservations are swept on the way.
    pub async fn reserve_budgets(
        &self,
        claims: Vec<Claim>,
        tokens: i64,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Reserved, StoreError> {
        self.run(move |conn| {
            async move {
                write_tx!(&mut *conn, |c| {
                    let mut held = Vec::with_capacity(claims.len());
                    for claim in &claims {
                        let b = &claim.budget;
                        let (id, start) = (SqlUuid(b.id), SqlTime(claim.period_start));
                        let exists = budget_spend::table
                            .filter(budget_spend::budget_id.eq(id))
                            .filter(budget_spend::period_start.eq(start))
                            .count()
                            .get_result::<i64>(c)
                            .await?
                            > 0;
                        if !exists {
                            let used = recorded!(c, b, claim.period_start);
                            diesel::insert_into(budget_spend::table)
                                .values((
                                    budget_spend::budget_id.eq(id),
                                    budget_spend::period_start.eq(start),
                                    budget_spend::used.eq(used),
                                ))
                                .on_conflict_do_nothing()
                                .execute(c)
                                .await?;
                        }
                        // Locks the period's row until commit (PostgreSQL; a
                        // SQLite write transaction is alone anyway).
                        let used = diesel::update(
                            budget_spend::table
                                .filter(budget_spend::budget_id.eq(id))
                                .filter(budget_spend::period_start.eq(start)),
                        )
                        .set(budget_spend::used.eq(budget_spend::used))
                        .returning(budget_spend::used)
                        .get_result::<i64>(c)
                        .await?;
                        diesel::delete(
                            budget_reservations::table
                                .filter(budget_reservations::budget_id.eq(id))
                                .filter(budget_reservations::expires_at.le(SqlTime(now))),
                        )
                        .execute(c)
                        .await?;
                        let reserved = held!(c, b.id, claim.period_start, now);
                        let state = BudgetState {
                            budget: b.clone(),
                            used,
                            reserved,
                        };
                        if used.saturating_add(reserved).saturating_add(tokens) > b.tokens {
                            return Err(Exceeded(state).into());
                        }
                        held.push(state);
                    }
                    let mut out = Vec::with_capacity(held.len());
                    for (claim, mut state) in claims.iter().zip(held) {
                        let reservation = Uuid::now_v7();
                        diesel::insert_into(budget_reservations::table)
                            .values((
                                budget_reservations::id.eq(SqlUuid(reservation)),
                                budget_reservations::budget_id.eq(SqlUuid(claim.budget.id)),
                                budget_reservations::period_start.eq(SqlTime(claim.period_start)),
                                budget_reservations::tokens.eq(tokens),
                                budget_reservations::expires_at.eq(SqlTime(expires_at)),
                            ))
                            .execute(c)
                            .await?;
                        state.reserved += tokens;
                        out.push((reservation, state));
                    }
                    Ok(Reserved::Held(out))
                })
            }
            .boxed()
        })
        .await
        .or_else(|e| match e {
            StoreError::BudgetExceeded(state) => Ok(Reserved::Exceeded(*state)),
            other => Err(other),
        })
    }
}

/// A budget without room, carried out of the transaction (which it rolls
/// back) as a store error.
struct Exceeded(BudgetState);

impl From<Exceeded> for StoreError {
    fn from(e: Exceeded) -> Self {
        StoreError::BudgetExceeded(Box::new(e.0))
    }
}
