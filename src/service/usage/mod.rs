//! Usage: what each turn's model calls cost, kept in a ledger and its rollups
//! in the same transaction as the turn (or its violations, or nothing else
//! when it failed); the statistics read from them; the budgets held against
//! them.
//!
//! A turn collects its calls in a [`TurnLedger`] (its judge calls as they
//! happen, its model call when it answered) and hands them to whatever write
//! ends the turn, with the turn's fate as their outcome.

pub mod budgets;
pub mod stats;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use uuid::Uuid;

use crate::service::policies::TurnFacts;
use crate::store::Store;
use crate::store::types::{SqlTime, SqlUuid, now};
use crate::store::usage::{NewUsage, Rollup, Settlement, UsageWrite};

/// How a turn ended, for its calls' ledger rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// A blocking policy stopped it.
    Blocked,
    /// The model, the judge or the store failed.
    Failed,
    /// The caller left (a stream), or the conversation went away.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Blocked => "blocked",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Which model call a ledger row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prompt,
    Judge,
}

/// One model call, as its provider reported it.
#[derive(Debug, Clone)]
struct Call {
    kind: Kind,
    tokens_in: u64,
    tokens_out: u64,
    latency: Duration,
}

/// What a turn holds on its budgets, settled once with the turn.
#[derive(Debug, Clone, Default)]
pub struct Reservation {
    pub ids: Vec<Uuid>,
    /// Each budget and the period reserved in.
    pub spend: Vec<(Uuid, DateTime<Utc>)>,
}

/// Violations to add to a bucket's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViolationCounts {
    pub violations: i64,
    pub alerts: i64,
    pub blocks: i64,
    pub low: i64,
    pub medium: i64,
    pub high: i64,
}

#[derive(Debug)]
struct LedgerState {
    calls: Vec<Call>,
    reservation: Option<Reservation>,
    blocked: bool,
}

/// A turn's model calls not yet written, and its budget reservation,
/// shared by the turn's parts.
#[derive(Clone)]
pub struct TurnLedger(Arc<Ledger>);

impl TurnLedger {
    pub fn new(facts: TurnFacts, store: Store) -> Self {
        Self(Arc::new(Ledger {
            facts,
            state: Mutex::new(LedgerState {
                calls: Vec::new(),
                reservation: None,
                blocked: false,
            }),
            store,
        }))
    }
}

impl std::ops::Deref for TurnLedger {
    type Target = Ledger;

    fn deref(&self) -> &Ledger {
        &self.0
    }
}

/// What a [`TurnLedger`] holds.
pub struct Ledger {
    facts: TurnFacts,
    state: Mutex<LedgerState>,
    store: Store,
}

impl Drop for Ledger {
    /// A turn dropped before it ended (its caller left a plain prompt while
    /// the model answered): what it used is written as `cancelled`, and its
    /// reservation released, on a task of its own.
    fn drop(&mut self) {
        let usage = self.take(Outcome::Cancelled, now());
        if usage.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move {
                if let Err(e) = store.record_usage(usage).await {
                    tracing::error!(error = %e, "failed to record a dropped turn's usage");
                }
            });
        }
    }
}

impl Ledger {
    fn state(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A judge call on the turn's behalf (its tokens are policy tokens).
    pub fn judged(&self, tokens_in: u64, tokens_out: u64, latency: Duration) {
        self.state().calls.push(Call {
            kind: Kind::Judge,
            tokens_in,
            tokens_out,
            latency,
        });
    }

    /// The turn's model call (zeros when it reported nothing: it failed, or
    /// the stream was cut).
    pub fn answered(&self, tokens_in: u64, tokens_out: u64, latency: Duration) {
        self.state().calls.push(Call {
            kind: Kind::Prompt,
            tokens_in,
            tokens_out,
            latency,
        });
    }

    /// The budgets the turn holds tokens on.
    pub fn reserved(&self, reservation: Reservation) {
        self.state().reservation = Some(reservation);
    }

    /// A blocking policy stopped the turn: whatever is written for it from
    /// now on is `blocked`.
    pub fn block(&self) {
        self.state().blocked = true;
    }

    /// The calls not yet written, as ledger rows and rollups stamped `at`
    /// with the turn's outcome (`blocked` once a policy blocked it), and
    /// the budget reservation's settlement (the first time only).
    pub fn take(&self, outcome: Outcome, at: DateTime<Utc>) -> UsageWrite {
        let (calls, reservation, blocked) = {
            let mut state = self.state();
            (
                std::mem::take(&mut state.calls),
                state.reservation.take(),
                state.blocked,
            )
        };
        let outcome = if blocked { Outcome::Blocked } else { outcome };
        let f = &self.facts;
        let mut usage = UsageWrite::default();
        let mut sums = Sums::default();
        for call in &calls {
            let (tokens_in, tokens_out) = (clamp(call.tokens_in), clamp(call.tokens_out));
            let latency_ms = i64::try_from(call.latency.as_millis()).unwrap_or(i64::MAX);
            let judge = call.kind == Kind::Judge;
            sums.add(tokens_in, tokens_out, judge, latency_ms);
            usage.ledger.push(NewUsage {
                id: SqlUuid(Uuid::now_v7()),
                org_id: SqlUuid(f.org_id),
                workspace_id: SqlUuid(f.workspace_id),
                repo_id: SqlUuid(f.repo_id),
                conversation_id: SqlUuid(f.conversation_id),
                user_id: SqlUuid(f.user_id),
                ai_llm_id: f.ai_llm_id.map(SqlUuid),
                kind: if judge { "judge" } else { "prompt" },
                llm_type: f.llm_type.clone(),
                llm_model: f.llm_model.clone(),
                host: f.host.clone(),
                tokens_in,
                tokens_out,
                policy_tokens: if judge { tokens_in + tokens_out } else { 0 },
                latency_ms,
                outcome: outcome.as_str(),
                created_at: SqlTime(at),
            });
        }
        if !calls.is_empty() {
            usage.rollups = self.rollups(at, |r| sums.apply(r));
        }
        if let Some(reservation) = reservation {
            usage.settle = Some(Settlement {
                reservations: reservation.ids.into_iter().map(SqlUuid).collect(),
                spend: reservation
                    .spend
                    .into_iter()
                    .map(|(b, start)| (SqlUuid(b), SqlTime(start)))
                    .collect(),
                tokens: sums.llm_in + sums.llm_out,
            });
        }
        usage
    }

    /// The rollups that count `counts` violations found at `at`.
    pub fn violation_rollups(&self, counts: ViolationCounts, at: DateTime<Utc>) -> Vec<Rollup> {
        self.rollups(at, |r| {
            r.violations = counts.violations;
            r.alerts = counts.alerts;
            r.blocks = counts.blocks;
            r.severity_low = counts.low;
            r.severity_medium = counts.medium;
            r.severity_high = counts.high;
        })
    }

    /// A zero rollup of the turn's dimensions for the day and the minute of
    /// `at`, with `fill` applied.
    fn rollups(&self, at: DateTime<Utc>, fill: impl Fn(&mut Rollup)) -> Vec<Rollup> {
        [Grain::Day, Grain::Minute]
            .into_iter()
            .map(|grain| {
                let f = &self.facts;
                let mut r = Rollup {
                    grain: grain.as_str().into(),
                    bucket: grain.bucket(at),
                    org_id: f.org_id,
                    workspace_id: f.workspace_id,
                    repo_id: f.repo_id,
                    conversation_id: f.conversation_id,
                    user_id: f.user_id,
                    ai_llm_id: f.ai_llm_id.unwrap_or(Uuid::nil()),
                    llm_type: f.llm_type.clone(),
                    llm_model: f.llm_model.clone(),
                    host: f.host.clone(),
                    ..Rollup::default()
                };
                fill(&mut r);
                r
            })
            .collect()
    }
}

/// A batch of calls summed, for their rollups.
#[derive(Debug, Default)]
struct Sums {
    tokens_in: i64,
    tokens_out: i64,
    llm_in: i64,
    llm_out: i64,
    calls: i64,
    latency_ms: i64,
}

impl Sums {
    fn add(&mut self, tokens_in: i64, tokens_out: i64, judge: bool, latency_ms: i64) {
        if !judge {
            self.tokens_in += tokens_in;
            self.tokens_out += tokens_out;
        }
        self.llm_in += tokens_in;
        self.llm_out += tokens_out;
        self.calls += 1;
        self.latency_ms += latency_ms;
    }

    fn apply(&self, r: &mut Rollup) {
        r.tokens_in = self.tokens_in;
        r.tokens_out = self.tokens_out;
        r.llm_tokens_in = self.llm_in;
        r.llm_tokens_out = self.llm_out;
        r.api_calls = self.calls;
        r.latency_ms = self.latency_ms;
    }
}

fn clamp(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// A write that settled budgets moved their spend: the gauges follow.
pub fn settled(metrics: &crate::metrics::Metrics, usage: &UsageWrite) {
    if let Some(settle) = &usage.settle {
        for (budget, _) in &settle.spend {
            metrics.budget_spent(budget.0, settle.tokens);
        }
    }
}

/// The time buckets statistics come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Day,
    Minute,
}

impl Grain {
    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Minute => "minute",
        }
    }

    fn delta(self) -> TimeDelta {
        match self {
            Grain::Day => TimeDelta::days(1),
            Grain::Minute => TimeDelta::minutes(1),
        }
    }

    /// The start of the bucket `at` falls in (UTC).
    pub fn bucket(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.delta()).unwrap_or(at)
    }
}
