//! Benchmark: usage statistics over 10 M ledger rows. The ledger and the
//! rollups its turns leave are bulk-loaded (100 organizations, 10 workspaces
//! each, 500,000 conversations of 20 turns, 90 days), then the service's own
//! statistics queries (`Store::usage_stats`, as `/aistats/*` runs them)
//! answer an organization administrator's 30-day daily query, a member's
//! (their usage and their workspaces'), and a one-hour minute query, in
//! rounds. On PostgreSQL the queries run first with no statistics (the
//! machine's autovacuum is off: as after a bulk load) and again after
//! `ANALYZE`.
//!
//! Run with `cargo bench --bench usage` (`-- --rows N`, `--sqlite-only`,
//! `--postgres-only`). Prints median and p90 per query and the rows it read.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use conversation_service::store::usage::{StatsFilter, UsageScope};
use conversation_service::store::{Backend, Store, StoreOptions};
use uuid::Uuid;

mod support;
use support::BenchDb;

const ORGS: i64 = 100;
const WORKSPACES: i64 = 10;
const TURNS: i64 = 20;
const DAYS: i64 = 90;
const ITERATIONS: usize = 40;

/// The id of the `n`th thing of a kind (1 org, 2 workspace, 3 user, 4
/// conversation, 5 repository), the same in SQL and here.
fn id(kind: u128, n: i64) -> Uuid {
    Uuid::from_u128((kind << 96) | u128::try_from(n).expect("positive"))
}

/// SQL for the same id, from an integer expression.
fn sql_id(backend: Backend, kind: u32, n: &str) -> String {
    match backend {
        Backend::Postgres => {
            format!("(lpad(to_hex({kind}), 8, '0') || lpad(to_hex(({n})::bigint), 24, '0'))::uuid")
        }
        Backend::Sqlite => format!("unhex(printf('%08x%024x', {kind}, {n}))"),
    }
}

/// Loads `rows` ledger rows and their day and minute rollups. Row `i`
/// happens `i * 90 days / rows` ago, in organization `i % 100`; each block
/// of 2,000 rows holds 20 turns of one conversation per organization (78 s
/// apart at 10 M rows, so each turn has its own minute).
async fn load(db: &BenchDb, rows: i64) -> anyhow::Result<()> {
    let b = db.backend;
    let step = (DAYS * 86_400) as f64 / rows as f64;
    let conv = format!("((i % {ORGS}) + {ORGS} * (i / ({ORGS} * {TURNS})))");
    let org = sql_id(b, 1, &format!("i % {ORGS}"));
    // The conversation's block picks its workspace (and repository) and user.
    let block = format!("(i / ({ORGS} * {TURNS}))");
    let ws = sql_id(
        b,
        2,
        &format!("(i % {ORGS}) * {WORKSPACES} + ({block} % {WORKSPACES})"),
    );
    let repo = sql_id(
        b,
        5,
        &format!("(i % {ORGS}) * {WORKSPACES} + ({block} % {WORKSPACES})"),
    );
    let user = sql_id(b, 3, &format!("(i % {ORGS}) * 50 + ({block} % 50)"));
    let conversation = sql_id(b, 4, &conv);
    let llm = sql_id(b, 6, &format!("i % {ORGS}"));
    let (series, at, day, minute, first) = match b {
        Backend::Postgres => (
            format!("FROM generate_series(1, {rows}) AS i"),
            format!("now() - i * interval '{step} seconds'"),
            format!("date_trunc('day', now() - i * interval '{step} seconds')"),
            format!("date_trunc('minute', now() - i * interval '{step} seconds')"),
            "i % 2000 < 100",
        ),
        Backend::Sqlite => (
            format!(
                "FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) SELECT i FROM s)"
            ),
            format!(
                "strftime('%Y-%m-%dT%H:%M:%S.000000Z', 'now', '-' || (i * {step}) || ' seconds')"
            ),
            format!(
                "strftime('%Y-%m-%dT00:00:00.000000Z', 'now', '-' || (i * {step}) || ' seconds')"
            ),
            format!(
                "strftime('%Y-%m-%dT%H:%M:00.000000Z', 'now', '-' || (i * {step}) || ' seconds')"
            ),
            "i % 2000 < 100",
        ),
    };
    let (orgs, created) = match b {
        Backend::Postgres => (
            format!("FROM generate_series(0, {}) AS i", ORGS - 1),
            "now()".to_owned(),
        ),
        Backend::Sqlite => (
            format!(
                "FROM (WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s)",
                ORGS - 1
            ),
            "strftime('%Y-%m-%dT%H:%M:%S.000000Z', 'now')".to_owned(),
        ),
    };
    db.exec(&format!(
        "INSERT INTO organizations (id, name, created_at) SELECT {}, 'Org', {created} {orgs}",
        sql_id(b, 1, "i")
    ))
    .await?;
    let dims = format!(
        "{org}, {ws}, {repo}, {conversation}, {user}, {llm}, 'OPENAI', 'gpt-4o', 'api.openai.com'"
    );
    db.exec(&format!(
        "INSERT INTO usage_ledger (id, org_id, workspace_id, repo_id, conversation_id, user_id, ai_llm_id, llm_type, llm_model, host, kind, tokens_in, tokens_out, policy_tokens, latency_ms, outcome, created_at)
         SELECT {}, {dims}, 'prompt', 500, 200, 0, 900, 'completed', {at} {series}",
        sql_id(b, 7, "i")
    ))
    .await?;
    // A turn per minute bucket; a conversation's turns in its first turn's
    // day (each conversation spans under half an hour).
    db.exec(&format!(
        "INSERT INTO usage_rollups (grain, bucket, org_id, workspace_id, repo_id, conversation_id, user_id, ai_llm_id, llm_type, llm_model, host, tokens_in, tokens_out, llm_tokens_in, llm_tokens_out, api_calls, latency_ms, violations, alerts, blocks, severity_low, severity_medium, severity_high)
         SELECT 'minute', {minute}, {dims}, 500, 200, 500, 200, 1, 900, 0, 0, 0, 0, 0, 0 {series}"
    ))
    .await?;
    db.exec(&format!(
        "INSERT INTO usage_rollups (grain, bucket, org_id, workspace_id, repo_id, conversation_id, user_id, ai_llm_id, llm_type, llm_model, host, tokens_in, tokens_out, llm_tokens_in, llm_tokens_out, api_calls, latency_ms, violations, alerts, blocks, severity_low, severity_medium, severity_high)
         SELECT 'day', {day}, {dims}, 500 * {TURNS}, 200 * {TURNS}, 500 * {TURNS}, 200 * {TURNS}, {TURNS}, 900 * {TURNS}, 0, 0, 0, 0, 0, 0 {series} WHERE {first}"
    ))
    .await?;
    Ok(())
}

struct Measured {
    median: Duration,
    p90: Duration,
    rows: usize,
}

async fn measure(store: &Store, filter: &StatsFilter) -> anyhow::Result<Measured> {
    let mut times = Vec::with_capacity(ITERATIONS);
    let mut rows = 0;
    for _ in 0..ITERATIONS {
        let started = Instant::now();
        rows = store.usage_stats(filter.clone()).await?.len();
        times.push(started.elapsed());
    }
    times.sort();
    Ok(Measured {
        median: times[ITERATIONS / 2],
        p90: times[ITERATIONS * 9 / 10],
        rows,
    })
}

fn queries(org: i64) -> Vec<(&'static str, StatsFilter)> {
    let now = Utc::now();
    let filter = |grain: &'static str, scope: UsageScope, span: TimeDelta| StatsFilter {
        grain,
        org_id: id(1, org),
        scope,
        from: now - span,
        to: now,
        repo_ids: Vec::new(),
        ai_llm_ids: Vec::new(),
        hosts: Vec::new(),
        llm_types: Vec::new(),
        llm_models: Vec::new(),
        user_ids: Vec::new(),
        conversation_ids: Vec::new(),
    };
    vec![
        (
            "daily, 30 days, organization administrator",
            filter("day", UsageScope::Org, TimeDelta::days(30)),
        ),
        (
            "daily, 30 days, a member (own usage)",
            filter(
                "day",
                UsageScope::Member(id(3, org * 50 + 7)),
                TimeDelta::days(30),
            ),
        ),
        (
            "minute, 1 hour, organization administrator",
            filter("minute", UsageScope::Org, TimeDelta::hours(1)),
        ),
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rows: i64 = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let mut backends = Vec::new();
    if !args.iter().any(|a| a == "--postgres-only") {
        backends.push(Backend::Sqlite);
    }
    if !args.iter().any(|a| a == "--sqlite-only") {
        backends.push(Backend::Postgres);
    }
    println!("# Usage statistics over {rows} ledger rows, median / p90 of {ITERATIONS} queries");
    println!("| backend | statistics | query | rows returned | median | p90 |");
    println!("|---|---|---|---|---|---|");
    for backend in backends {
        let db = BenchDb::create(backend).await?;
        let store = Store::open(&db.url, &StoreOptions::default())?;
        store.migrate().await?;
        let started = Instant::now();
        load(&db, rows).await?;
        eprintln!("{backend:?}: loaded in {:.0?}", started.elapsed());
        let phases: &[&str] = match backend {
            Backend::Postgres => &["none (stale)", "after ANALYZE"],
            Backend::Sqlite => &["after ANALYZE"],
        };
        for phase in phases {
            if phase.starts_with("after") {
                db.exec("ANALYZE").await?;
            }
            for (name, filter) in queries(42) {
                let m = measure(&store, &filter).await?;
                println!(
                    "| {backend:?} | {phase} | {name} | {} | {:.2?} | {:.2?} |",
                    m.rows, m.median, m.p90
                );
            }
        }
        drop(store);
        if std::env::var_os("BENCH_KEEP").is_some() {
            eprintln!("kept: {}", db.url);
        } else {
            db.drop_db().await?;
        }
    }
    Ok(())
}
