//! Prometheus metrics, served at `GET /metrics` (on the HTTP port, or on
//! `--metrics-addr`) in the OpenMetrics text format, which Prometheus scrapes
//! natively.
//!
//! - `conversation_service_requests_total{transport, method, code}`: every
//!   finished request. REST: `method` is the HTTP method and route template
//!   (`POST /conversation`), `code` the HTTP status. gRPC: `method` is the
//!   full rpc path, `code` the gRPC status name. Unknown routes and rpcs are
//!   counted as `other` (REST: also methods outside the standard ones), so a
//!   scanner cannot grow the label set.
//! - `conversation_service_request_duration_seconds{transport, method}`:
//!   latency histogram, until the response head is sent.
//! - `conversation_service_db_pool_connections{state="in_use"|"idle"}`,
//!   `conversation_service_db_pool_waiting`, `conversation_service_db_pool_max`:
//!   the database pool, read at scrape time.
//! - `conversation_service_db_reads_total{state="replica"|"primary"}`: with
//!   a read replica, the reads it could serve and where each went;
//!   `conversation_service_db_replica_usable` 1 while it is up and within
//!   its lag.
//! - `conversation_service_sqlite_writer_jobs_total`,
//!   `conversation_service_sqlite_writer_commits_total`: on SQLite, the
//!   writes its writer thread ran (creates, turns, stream logs) and the
//!   commits that wrote them; jobs waiting together commit together, so
//!   their ratio is the mean group.
//!   `conversation_service_sqlite_writer_checkpoints_total`: the WAL copied
//!   into the database file by the checkpointer's thread.
//! - `conversation_service_conversations_created_total`.
//! - `conversation_service_requests_in_flight`: API requests being served.
//! - `conversation_service_provider_failures_total{ai_type, operation, reason}`:
//!   model provider calls that failed. `ai_type` is the configuration's type
//!   (`operator` for the operator's provider); `operation` one of `models`,
//!   `prompt`, `validate`, `connect` (endpoint refused, secret unreadable);
//!   `reason` a fixed name (`timeout`, `failed`, `unknown_model`, ...).
//! - `conversation_service_policy_tokens_total`: tokens the policy judge spent.
//! - `conversation_service_policy_judge_failures_total{outcome}`: judge calls
//!   that failed; `fail_closed` (a blocking policy applied: the turn got 503)
//!   or `fail_open` (log and alert policies only: the turn went on).
//! - `conversation_service_budget_limit_tokens{budget, scope, period}`,
//!   `conversation_service_budget_used_tokens{...}` and
//!   `conversation_service_budget_reserved_tokens{...}`: each budget's limit,
//!   what its current period spent and what prompts in flight hold, as this
//!   replica last saw them (at each reservation, and as its turns settle).
//! - `conversation_service_budget_refusals_total{budget}`: prompts refused
//!   (429) because the budget had no room.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Store;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    transport: &'static str,
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    transport: &'static str,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    ai_type: &'static str,
    operation: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: String,
    scope: &'static str,
    period: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetIdLabels {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// The service's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    pool: Family<PoolLabels, Gauge>,
    pool_waiting: Gauge,
    pool_max: Gauge,
    replica_reads: Family<PoolLabels, Counter>,
    replica_usable: Gauge,
    writer_jobs: Counter,
    writer_commits: Counter,
    writer_checkpoints: Counter,
    created: Counter,
    in_flight: Gauge,
    provider_failures: Family<ProviderLabels, Counter>,
    policy_tokens: Counter,
    judge_failures: Family<OutcomeLabels, Counter>,
    budget_limit: Family<BudgetLabels, Gauge>,
    budget_used: Family<BudgetLabels, Gauge>,
    budget_reserved: Family<BudgetLabels, Gauge>,
    /// Each budget's labels, as last seen (to move its gauges by id).
    budget_labels: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, BudgetLabels>>,
    budget_refusals: Family<BudgetIdLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("conversation_service");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests finished, by transport, method and code",
            requests.clone(),
        );
        // 0.5 ms to ~16 s.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response head, by transport and method",
            latency.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Open database connections, in use or idle",
            pool.clone(),
        );
        let pool_waiting = Gauge::default();
        registry.register(
            "db_pool_waiting",
            "Requests waiting for a database connection",
            pool_waiting.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "db_pool_max",
            "Most database connections the pool opens",
            pool_max.clone(),
        );
        let replica_reads = Family::<PoolLabels, Counter>::default();
        registry.register(
            "db_reads",
            "Reads that could go to the read replica, by where they went (state: replica or primary)",
            replica_reads.clone(),
        );
        let replica_usable = Gauge::default();
        registry.register(
            "db_replica_usable",
            "1 while the read replica is up and within its lag, else 0",
            replica_usable.clone(),
        );
        let writer_jobs = Counter::default();
        registry.register(
            "sqlite_writer_jobs",
            "Writes SQLite's writer thread ran",
            writer_jobs.clone(),
        );
        let writer_commits = Counter::default();
        registry.register(
            "sqlite_writer_commits",
            "Commits of SQLite's writer thread (writes waiting together commit together)",
            writer_commits.clone(),
        );
        let writer_checkpoints = Counter::default();
        registry.register(
            "sqlite_writer_checkpoints",
            "Checkpoints of the writer's commits, made off its thread",
            writer_checkpoints.clone(),
        );
        let created = Counter::default();
        registry.register(
            "conversations_created",
            "Conversations created",
            created.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "API requests being served now, both transports (limited by --max-concurrent-requests)",
            in_flight.clone(),
        );
        let provider_failures = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_failures",
            "Model provider calls that failed, by configuration type, operation and reason",
            provider_failures.clone(),
        );
        let policy_tokens = Counter::default();
        registry.register(
            "policy_tokens",
            "Tokens the policy judge spent (never counted in conversations' totals)",
            policy_tokens.clone(),
        );
        let judge_failures = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "policy_judge_failures",
            "Judge calls that failed, by outcome: fail_closed (a blocking policy: the turn stopped) or fail_open",
            judge_failures.clone(),
        );
        let budget_limit = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_limit_tokens",
            "Each token budget's limit",
            budget_limit.clone(),
        );
        let budget_used = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_used_tokens",
            "Tokens each budget's current period spent, as this replica last saw it",
            budget_used.clone(),
        );
        let budget_reserved = Family::<BudgetLabels, Gauge>::default();
        registry.register(
            "budget_reserved_tokens",
            "Tokens prompts in flight hold on each budget, as this replica last saw it",
            budget_reserved.clone(),
        );
        let budget_refusals = Family::<BudgetIdLabels, Counter>::default();
        registry.register(
            "budget_refusals",
            "Prompts refused because a budget had no room",
            budget_refusals.clone(),
        );
        Self {
            registry,
            budget_limit,
            budget_used,
            budget_reserved,
            budget_labels: Default::default(),
            budget_refusals,
            provider_failures,
            policy_tokens,
            judge_failures,
            requests,
            latency,
            pool,
            pool_waiting,
            pool_max,
            replica_reads,
            replica_usable,
            writer_jobs,
            writer_commits,
            writer_checkpoints,
            created,
            in_flight,
        }
    }

    /// Records one finished request.
    pub fn request(&self, transport: &'static str, method: &str, code: &str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                transport,
                method: method.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                transport,
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The gauge of API requests in flight, kept by the admission limit.
    pub fn in_flight(&self) -> Gauge {
        self.in_flight.clone()
    }

    /// Records a model provider call that failed.
    pub fn provider_failed(
        &self,
        ai_type: &'static str,
        operation: &'static str,
        reason: &'static str,
    ) {
        self.provider_failures
            .get_or_create(&ProviderLabels {
                ai_type,
                operation,
                reason,
            })
            .inc();
    }

    /// A budget as just read: its limit, spend and holds.
    pub fn budget(&self, view: &crate::service::usage::budgets::BudgetView) {
        let labels = BudgetLabels {
            budget: view.id.to_string(),
            scope: if view.workspace_id.is_some() {
                "workspace"
            } else {
                "org"
            },
            period: view.period.as_str(),
        };
        self.budget_limit.get_or_create(&labels).set(view.tokens);
        self.budget_used.get_or_create(&labels).set(view.used);
        self.budget_reserved
            .get_or_create(&labels)
            .set(view.reserved);
        self.budget_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(view.id, labels);
    }

    /// A turn settled `tokens` on a budget.
    pub fn budget_spent(&self, id: uuid::Uuid, tokens: i64) {
        let labels = self
            .budget_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        if let Some(labels) = labels {
            self.budget_used.get_or_create(&labels).inc_by(tokens);
        }
    }

    /// A prompt refused for want of room in a budget.
    pub fn budget_refused(&self, id: uuid::Uuid) {
        self.budget_refusals
            .get_or_create(&BudgetIdLabels {
                budget: id.to_string(),
            })
            .inc();
    }

    /// A budget is gone: its gauges go too.
    pub fn budget_cleared(&self, id: uuid::Uuid) {
        let labels = self
            .budget_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(labels) = labels {
            self.budget_limit.remove(&labels);
            self.budget_used.remove(&labels);
            self.budget_reserved.remove(&labels);
        }
    }

    /// Records tokens the policy judge spent.
    pub fn policy_tokens(&self, tokens: u64) {
        self.policy_tokens.inc_by(tokens);
    }

    /// Records a failed judge call and what it did to the turn.
    pub fn policy_judge_failed(&self, outcome: &'static str) {
        self.judge_failures
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records a conversation created.
    pub fn conversation_created(&self) {
        self.created.inc();
    }

    /// Every metric in the OpenMetrics text format, the pool read now.
    pub fn render(&self, store: &Store) -> String {
        let status = store.pool_status();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(gauge(status.size.saturating_sub(status.available)));
        self.pool
            .get_or_create(&PoolLabels { state: "idle" })
            .set(gauge(status.available));
        self.pool_waiting.set(gauge(status.waiting));
        self.pool_max.set(gauge(status.max_size));
        if let Some(replica) = store.read_replica() {
            let (on_replica, on_primary, usable) = replica.counts();
            for (state, now) in [("replica", on_replica), ("primary", on_primary)] {
                let counter = self.replica_reads.get_or_create(&PoolLabels { state });
                counter.inc_by(now.saturating_sub(counter.get()));
            }
            self.replica_usable.set(i64::from(usable));
        }
        if let Some(writer) = store.sqlite_writer() {
            let (jobs, commits, checkpoints) = writer.done();
            for (counter, now) in [
                (&self.writer_jobs, jobs),
                (&self.writer_commits, commits),
                (&self.writer_checkpoints, checkpoints),
            ] {
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
