//! Benchmark: the first page of `ListConversations` (`take` 50, `skip` 0 and
//! 1,000) for each tier of caller and each filter, on an almost empty
//! database and with 1,000,000 conversations in one repository (and 100,000
//! in another workspace's), on SQLite and on PostgreSQL, first with stale
//! planner statistics (`ANALYZE` ran before the bulk load, not after, as on a
//! machine whose autovacuum is off), then after `ANALYZE`. Run with
//! `cargo bench --bench list` (add `-- --rows N` to change the large size,
//! `-- --sqlite-only` / `--postgres-only` to pick a backend). PostgreSQL comes
//! from `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! a throwaway database is created and dropped.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use conversation_service::domain::{Access, OrgRole};
use conversation_service::store::admin::NewUser;
use conversation_service::store::conversations::{ConversationFilter, Visibility};
use conversation_service::store::{Backend, Store, StoreOptions};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

mod support;
use support::{BenchDb, Stats, bulk_conversations};

const CREATORS: usize = 100;
const RUNS: usize = 40;

struct Fixture {
    org: Uuid,
    w1: Uuid,
    r1: Uuid,
    ws_admin_user: Uuid,
    regular_user: Uuid,
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
        .unwrap_or(1_000_000);
    let sqlite = !args.iter().any(|a| a == "--postgres-only");
    let postgres = !args.iter().any(|a| a == "--sqlite-only");
    println!("# ListConversations, first page (take 50), median / p90 of {RUNS} runs");
    println!(
        "| backend | conversations | statistics | tier | filter | skip | total | median | p90 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let backends = [(sqlite, Backend::Sqlite), (postgres, Backend::Postgres)];
    for (_, backend) in backends.into_iter().filter(|(on, _)| *on) {
        for n in [1_000, rows] {
            let db = BenchDb::create(backend).await?;
            let result = run(&db, n).await;
            db.drop_db().await?;
            result?;
        }
    }
    Ok(())
}

async fn run(db: &BenchDb, rows: i64) -> anyhow::Result<()> {
    let (url, backend) = (db.url.as_str(), db.backend);
    let store = Store::open(url, &StoreOptions::default())?;
    store.migrate().await?;
    let started = Instant::now();
    let f = seed(&store, db, rows).await?;
    eprintln!(
        "{backend:?}: seeded {rows} conversations in {:.1?}",
        started.elapsed()
    );
    for stats in ["stale", "fresh"] {
        if stats == "fresh" {
            db.exec("ANALYZE").await?;
        }
        measure(&store, backend, rows, stats, &f).await?;
        if rows > 1_000 {
            explain(url, backend, stats, &f).await?;
        }
    }
    Ok(())
}

/// Every tier with every filter, at `skip` 0 and 1,000.
async fn measure(
    store: &Store,
    backend: Backend,
    rows: i64,
    stats: &str,
    f: &Fixture,
) -> anyhow::Result<()> {
    let tiers = [
        ("org admin", Visibility::Organization),
        (
            "workspace admin",
            Visibility::OwnAndAdministered {
                user_id: f.ws_admin_user,
            },
        ),
        (
            "regular user",
            Visibility::OwnAndAdministered {
                user_id: f.regular_user,
            },
        ),
    ];
    let now = Utc::now();
    type Narrow = fn(&mut ConversationFilter, &Fixture, chrono::DateTime<Utc>);
    let filters: [(&str, Narrow); 6] = [
        ("none", |_, _, _| {}),
        ("repoId", |q, f, _| q.repo_id = Some(f.r1)),
        ("workspaceId", |q, f, _| q.workspace_id = Some(f.w1)),
        ("userId", |q, f, _| q.created_by = Some(f.regular_user)),
        ("from (last 30 days)", |q, _, now| {
            q.from = Some(now - TimeDelta::days(30));
        }),
        ("from/to (a day, a week ago)", |q, _, now| {
            q.from = Some(now - TimeDelta::days(8) + TimeDelta::minutes(17));
            q.until = Some(now - TimeDelta::days(7) + TimeDelta::minutes(17));
        }),
    ];
    for (tier, visibility) in tiers {
        for (name, narrow) in filters {
            for skip in [0, 1_000] {
                let mut filter = ConversationFilter::visible(f.org, visibility);
                narrow(&mut filter, f, now);
                let mut times = Vec::with_capacity(RUNS);
                let mut total = 0;
                for _ in 0..RUNS {
                    let t = Instant::now();
                    let (_, n) = store.list_conversations(filter.clone(), 50, skip).await?;
                    times.push(t.elapsed());
                    total = n;
                }
                times.sort();
                println!(
                    "| {backend:?} | {rows} | {stats} | {tier} | {name} | {skip} | {total} | {} | {} |",
                    ms(times[RUNS / 2]),
                    ms(times[RUNS * 9 / 10])
                );
            }
        }
    }
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct PgPlan {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(diesel::QueryableByName)]
struct SqlitePlan {
    #[diesel(sql_type = diesel::sql_types::Text)]
    detail: String,
}

/// Prints the plans of the queries a first page runs, as the store writes them.
async fn explain(url: &str, backend: Backend, stats: &str, f: &Fixture) -> anyhow::Result<()> {
    use diesel_async::RunQueryDsl;
    let lit = |id: Uuid| match backend {
        Backend::Postgres => format!("'{id}'::uuid"),
        Backend::Sqlite => format!("X'{}'", id.simple()),
    };
    let page = |source: String| {
        format!(
            "SELECT c.id, c.created_at, r.name, u.email FROM conversations c \
             INNER JOIN repos r ON c.repo_id = r.id INNER JOIN users u ON c.created_by = u.id \
             WHERE c.org_id = {} AND c.deleted_at IS NULL{source} \
             ORDER BY c.created_at DESC, c.id DESC LIMIT 50",
            lit(f.org)
        )
    };
    let queries = [
        ("org admin: the organization's page", page(String::new())),
        (
            "regular user: their own page",
            page(format!(" AND c.created_by = {}", lit(f.regular_user))),
        ),
        (
            "workspace admin: an administered workspace's page",
            page(format!(" AND c.workspace_id = {}", lit(f.w1))),
        ),
        (
            "org admin: a repository's page",
            page(format!(" AND c.repo_id = {}", lit(f.r1))),
        ),
        (
            "workspace admin: the total",
            format!(
                "SELECT live, deleted FROM conversation_counts WHERE org_id = {} AND (created_by = {} OR workspace_id IN \
                 (SELECT workspace_id FROM workspace_members WHERE user_id = {} AND access = 'admin'))",
                lit(f.org),
                lit(f.ws_admin_user),
                lit(f.ws_admin_user)
            ),
        ),
    ];
    println!("\n## Plans, {backend:?}, large database, {stats} statistics\n");
    for (what, sql) in queries {
        println!("{what}:\n```");
        match backend {
            Backend::Postgres => {
                let mut c = AsyncPgConnection::establish(url).await?;
                let plan =
                    diesel::sql_query(format!("EXPLAIN (ANALYZE, COSTS OFF, SUMMARY ON) {sql}"))
                        .load::<PgPlan>(&mut c)
                        .await?;
                plan.iter().for_each(|p| println!("{}", p.line));
            }
            Backend::Sqlite => {
                let path = url.strip_prefix("sqlite://").expect("sqlite url");
                let mut c = diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                    diesel::SqliteConnection,
                >::establish(path)
                .await?;
                let plan = diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                    .load::<SqlitePlan>(&mut c)
                    .await?;
                plan.iter().for_each(|p| println!("{}", p.detail));
            }
        }
        println!("```");
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// One organization, two workspaces with a repository each (`rows`
/// conversations in the first, a tenth as many in the second), 100 creators;
/// the workspace admin administers the first workspace.
async fn seed(store: &Store, db: &BenchDb, rows: i64) -> anyhow::Result<Fixture> {
    let org = store.create_org("Bench".into()).await?;
    let w1 = store.create_workspace(org, "one".into()).await?;
    let w2 = store.create_workspace(org, "two".into()).await?;
    let r1 = store.create_repo(org, "one".into(), Some(w1)).await?;
    let r2 = store.create_repo(org, "two".into(), Some(w2)).await?;
    let mut users = Vec::new();
    for i in 0..CREATORS {
        let id = store
            .create_user(NewUser {
                org_id: org,
                email: format!("u{i}@bench.test"),
                name: None,
                last_name: None,
                role: if i == 0 {
                    OrgRole::Admin
                } else {
                    OrgRole::User
                },
            })
            .await?;
        store.grant(w1, id, Access::Read).await?;
        store.grant(w2, id, Access::Read).await?;
        users.push(id);
    }
    store.grant(w1, users[1], Access::Admin).await?;
    bulk_conversations(db, org, &[(w2, r2)], &users, rows / 10, Stats::Stale).await?;
    bulk_conversations(db, org, &[(w1, r1)], &users, rows, Stats::Stale).await?;
    Ok(Fixture {
        org,
        w1,
        r1,
        ws_admin_user: users[1],
        regular_user: users[2],
    })
}
