//! Token budgets per organization and per workspace, per UTC day or month:
//! set, listed and cleared by organization administrators, and held against
//! by every prompt before its model call.

use std::sync::Arc;

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Utc};
use uuid::Uuid;

use super::Reservation;
use crate::domain::Caller;
use crate::error::ApiError;
use crate::service::Service;
use crate::store::budgets::{BudgetRow, BudgetState, Claim, Reserved, SetBudget};
use crate::store::types::now;

/// The largest budget accepted: beyond it a limit means nothing.
pub const MAX_BUDGET_TOKENS: i64 = 1_000_000_000_000_000;

/// How long a budget's spend runs before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Result<Period, ApiError> {
        match text {
            "day" => Ok(Period::Day),
            "month" => Ok(Period::Month),
            _ => Err(ApiError::InvalidArgument(
                "period must be \"day\" or \"month\"".into(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// The start of the period `at` falls in (UTC midnight).
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let first = match self {
            Period::Day => day,
            Period::Month => day.with_day(1).unwrap_or(day),
        };
        Utc.from_utc_datetime(&first.and_time(chrono::NaiveTime::MIN))
    }

    /// The end of the period `at` falls in (the next one's start).
    pub fn end(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(at);
        match self {
            Period::Day => start + TimeDelta::days(1),
            Period::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(start + TimeDelta::days(31)),
        }
    }
}

/// The start of a stored budget's current period.
fn period_start(period: &str, at: DateTime<Utc>) -> DateTime<Utc> {
    Period::parse(period).unwrap_or(Period::Day).start(at)
}

/// Whose budget: the caller's organization, or one of its workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Org,
    Workspace(Uuid),
}

/// A budget as callers see it.
#[derive(Debug, Clone)]
pub struct BudgetView {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Option<Uuid>,
    pub period: Period,
    pub tokens: i64,
    /// What the current period spent, and what prompts in flight hold.
    pub used: i64,
    pub reserved: i64,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl BudgetView {
    fn of(state: BudgetState, at: DateTime<Utc>) -> BudgetView {
        let b = state.budget;
        let period = Period::parse(&b.period).unwrap_or(Period::Day);
        BudgetView {
            id: b.id,
            org_id: b.org_id,
            workspace_id: (b.scope == "workspace").then_some(b.scope_id),
            period,
            tokens: b.tokens,
            used: state.used,
            reserved: state.reserved,
            period_start: period.start(at),
            period_end: period.end(at),
            updated_at: b.updated_at,
        }
    }

    /// How people name it: "the organization's daily budget of 1000 tokens".
    fn name(&self) -> String {
        let whose = match self.workspace_id {
            Some(w) => format!("workspace {w}"),
            None => format!("organization {}", self.org_id),
        };
        let period = match self.period {
            Period::Day => "daily",
            Period::Month => "monthly",
        };
        format!(
            "the {period} token budget of {whose} ({} tokens)",
            self.tokens
        )
    }
}

/// Only organization administrators set, read and clear budgets.
pub fn may_manage_budgets(caller: &Caller) -> Result<(), ApiError> {
    if caller.role.is_org_admin() {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            "Only organization administrators manage budgets".into(),
        ))
    }
}

/// A budget's limit: a positive number of tokens, not absurdly large.
pub fn budget_tokens(tokens: i64) -> Result<i64, ApiError> {
    if (1..=MAX_BUDGET_TOKENS).contains(&tokens) {
        Ok(tokens)
    } else {
        Err(ApiError::InvalidArgument(format!(
            "tokens must be between 1 and {MAX_BUDGET_TOKENS}"
        )))
    }
}

const BUDGET_FAILED: &str = "Failed to manage budgets";

impl Service {
    /// The scope's id, once it is known to be the caller's organization's.
    async fn budget_scope_id(&self, caller: &Caller, scope: BudgetScope) -> Result<Uuid, ApiError> {
        match scope {
            BudgetScope::Org => Ok(caller.org_id),
            BudgetScope::Workspace(id) => {
                let workspace = self
                    .store
                    .find_workspace(id)
                    .await
                    .map_err(ApiError::from_store(BUDGET_FAILED))?;
                match workspace {
                    Some(w) if w.org_id == caller.org_id && w.deleted_at.is_none() => Ok(id),
                    _ => Err(ApiError::NotFound("Workspace not found".into())),
                }
            }
        }
    }

    /// Sets (creates or replaces) a budget of the caller's organization.
    pub async fn set_budget(
        &self,
        caller: &Caller,
        scope: BudgetScope,
        period: Period,
        tokens: i64,
    ) -> Result<BudgetView, ApiError> {
        may_manage_budgets(caller)?;
        let tokens = budget_tokens(tokens)?;
        let scope_id = self.budget_scope_id(caller, scope).await?;
        self.set_budget_of(
            caller.org_id,
            scope,
            scope_id,
            period,
            tokens,
            caller.user_id,
        )
        .await
    }

    /// Sets a budget of `org_id` (the API's and the command line's).
    pub async fn set_budget_of(
        &self,
        org_id: Uuid,
        scope: BudgetScope,
        scope_id: Uuid,
        period: Period,
        tokens: i64,
        user_id: Uuid,
    ) -> Result<BudgetView, ApiError> {
        let at = now();
        let row = self
            .store
            .set_budget(SetBudget {
                id: Uuid::now_v7(),
                org_id,
                scope: match scope {
                    BudgetScope::Org => "org",
                    BudgetScope::Workspace(_) => "workspace",
                },
                scope_id,
                period: period.as_str(),
                tokens,
                user_id,
                at,
            })
            .await
            .map_err(ApiError::from_store(BUDGET_FAILED))?;
        self.budget_cache.changed();
        let views = self.budgets_of(org_id, Some(row.scope_id)).await?;
        views
            .into_iter()
            .find(|v| v.id == row.id)
            .ok_or_else(|| ApiError::Internal {
                public: BUDGET_FAILED,
                detail: "a budget set is not found".into(),
            })
    }

    /// The budgets of the caller's organization (or of one workspace).
    pub async fn list_budgets(
        &self,
        caller: &Caller,
        scope: Option<BudgetScope>,
    ) -> Result<Vec<BudgetView>, ApiError> {
        may_manage_budgets(caller)?;
        let scope_id = match scope {
            Some(scope) => Some(self.budget_scope_id(caller, scope).await?),
            None => None,
        };
        self.budgets_of(caller.org_id, scope_id).await
    }

    /// The budgets of `org_id` (or of one scope), with their spend.
    pub async fn budgets_of(
        &self,
        org_id: Uuid,
        scope_id: Option<Uuid>,
    ) -> Result<Vec<BudgetView>, ApiError> {
        let at = now();
        let states = self
            .store
            .list_budgets(org_id, scope_id, at, period_start)
            .await
            .map_err(ApiError::from_store(BUDGET_FAILED))?;
        Ok(states.into_iter().map(|s| BudgetView::of(s, at)).collect())
    }

    /// Clears a budget of the caller's organization.
    pub async fn clear_budget(
        &self,
        caller: &Caller,
        scope: BudgetScope,
        period: Period,
    ) -> Result<(), ApiError> {
        may_manage_budgets(caller)?;
        let scope_id = self.budget_scope_id(caller, scope).await?;
        self.clear_budget_of(caller.org_id, scope_id, period).await
    }

    /// Clears a budget of `org_id`; 404 if there is none.
    pub async fn clear_budget_of(
        &self,
        org_id: Uuid,
        scope_id: Uuid,
        period: Period,
    ) -> Result<(), ApiError> {
        let cleared = self
            .store
            .clear_budget(org_id, scope_id, period.as_str())
            .await
            .map_err(ApiError::from_store(BUDGET_FAILED))?;
        self.budget_cache.changed();
        match cleared {
            Some(row) => {
                self.metrics.budget_cleared(row.id);
                Ok(())
            }
            None => Err(ApiError::NotFound("Budget not found".into())),
        }
    }

    /// The budgets of an organization and one of its workspaces, to hold a
    /// turn's tokens on ([`Service::reserve_tokens`]).
    pub(crate) async fn turn_budgets(
        &self,
        org_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<Arc<Vec<BudgetRow>>, ApiError> {
        let store = &self.store;
        self.budget_cache
            .get_or_load((org_id, workspace_id), || async move {
                store
                    .applicable_budgets(org_id, workspace_id)
                    .await
                    .map(Arc::new)
                    .map_err(ApiError::from_store(RESERVE_FAILED))
            })
            .await
    }

    /// Holds `tokens` on each of `budgets` (a turn's, from
    /// [`Service::turn_budgets`]), or refuses the prompt (429 until the period
    /// of the budget without room ends). No budget: nothing is held.
    pub(crate) async fn reserve_tokens(
        &self,
        budgets: &[BudgetRow],
        tokens: i64,
    ) -> Result<Option<Reservation>, ApiError> {
        if budgets.is_empty() {
            return Ok(None);
        }
        let at = now();
        let claims = budgets
            .iter()
            .cloned()
            .map(|budget| Claim {
                period_start: period_start(&budget.period, at),
                budget,
            })
            .collect();
        let expires =
            at + TimeDelta::from_std(self.budget_config.hold).unwrap_or(TimeDelta::hours(1));
        match self
            .store
            .reserve_budgets(claims, tokens, at, expires)
            .await
            .map_err(ApiError::from_store(RESERVE_FAILED))?
        {
            Reserved::Held(held) => {
                let mut reservation = Reservation::default();
                for (id, state) in held {
                    let view = BudgetView::of(state, at);
                    self.metrics.budget(&view);
                    reservation.ids.push(id);
                    reservation.spend.push((view.id, view.period_start));
                }
                Ok(Some(reservation))
            }
            Reserved::Exceeded(state) => {
                let view = BudgetView::of(state, at);
                self.metrics.budget(&view);
                self.metrics.budget_refused(view.id);
                let retry_after_secs =
                    u64::try_from((view.period_end - at).num_seconds().max(1)).unwrap_or(1);
                Err(ApiError::ResourceExhausted {
                    message: format!(
                        "Token budget exceeded: {} has {} used and {} held by prompts in flight; \
                         this prompt needs about {tokens}",
                        view.name(),
                        view.used,
                        view.reserved
                    ),
                    retry_after_secs,
                })
            }
        }
    }
}

/// What a failure to read or hold a turn's budgets says.
const RESERVE_FAILED: &str = "Failed to check the token budget";

/// How budgets are held (`serve`'s `--budget-*` flags).
#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Tokens a prompt reserves for the model's reply (its completion
    /// limit), beside its estimated prompt and context.
    pub reply_tokens: i64,
    /// How long a reservation is held at most (a turn that never settles,
    /// its replica gone, stops holding after this).
    pub hold: std::time::Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            reply_tokens: 4096,
            hold: std::time::Duration::from_secs(600),
        }
    }
}

/// The tokens a prompt is expected to use: about one per four bytes of its
/// messages, a few per message for the chat format, and the reply's limit.
pub fn expected_tokens(messages: &[crate::provider::ChatMessage], reply_tokens: i64) -> i64 {
    let text: usize = messages
        .iter()
        .map(|m| m.content.len().div_ceil(4) + 4)
        .sum();
    i64::try_from(text)
        .unwrap_or(i64::MAX)
        .saturating_add(reply_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("a valid time")
    }

    #[test]
    fn periods_run_from_utc_midnight_to_the_next() {
        let at = utc(2026, 12, 31, 23, 59, 59);
        assert_eq!(Period::Day.start(at), utc(2026, 12, 31, 0, 0, 0));
        assert_eq!(Period::Day.end(at), utc(2027, 1, 1, 0, 0, 0));
        assert_eq!(Period::Month.start(at), utc(2026, 12, 1, 0, 0, 0));
        assert_eq!(Period::Month.end(at), utc(2027, 1, 1, 0, 0, 0));
        let feb = utc(2028, 2, 29, 12, 0, 0);
        assert_eq!(Period::Month.end(feb), utc(2028, 3, 1, 0, 0, 0));
    }

    #[test]
    fn budgets_are_positive_and_bounded() {
        assert!(budget_tokens(0).is_err());
        assert!(budget_tokens(-5).is_err());
        assert!(budget_tokens(MAX_BUDGET_TOKENS + 1).is_err());
        assert_eq!(budget_tokens(1000).expect("valid"), 1000);
    }
}
