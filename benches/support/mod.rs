//! Shared by the benchmarks and the load generator: throwaway databases and
//! bulk loading of existing conversations.

#![allow(dead_code)]

use conversation_service::store::Backend;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use uuid::Uuid;

/// The PostgreSQL server benchmarks create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that lives for one measurement.
pub struct BenchDb {
    pub url: String,
    pub backend: Backend,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    pub async fn create(backend: Backend) -> anyhow::Result<BenchDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Ok(BenchDb {
                    url,
                    backend,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("cs_bench_{}", Uuid::now_v7().simple());
                AsyncPgConnection::establish(&admin)
                    .await?
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await?;
                let (base, _) = admin.rsplit_once('/').expect("database in URL");
                Ok(BenchDb {
                    url: format!("{base}/{name}"),
                    backend,
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }

    /// Drops a PostgreSQL database (an SQLite folder goes with the value).
    pub async fn drop_db(self) -> anyhow::Result<()> {
        if let Some(name) = &self.pg_name {
            AsyncPgConnection::establish(&pg_admin_url())
                .await?
                .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .await?;
        }
        Ok(())
    }

    /// Runs SQL statements (separated by `;` and a newline) one by one.
    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        match self.backend {
            Backend::Postgres => {
                let mut c = AsyncPgConnection::establish(&self.url).await?;
                for statement in sql.split(";\n") {
                    c.batch_execute(statement).await?;
                }
            }
            Backend::Sqlite => {
                let path = self.url.strip_prefix("sqlite://").expect("sqlite url");
                diesel_async::sync_connection_wrapper::SyncConnectionWrapper::<
                    diesel::SqliteConnection,
                >::establish(path)
                .await?
                .batch_execute(sql)
                .await?
            }
        }
        Ok(())
    }

    pub fn uuid(&self, id: Uuid) -> String {
        match self.backend {
            Backend::Postgres => format!("'{id}'::uuid"),
            Backend::Sqlite => format!("X'{}'", id.simple()),
        }
    }
}

/// The planner's statistics after a bulk load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stats {
    /// `ANALYZE` after the load.
    Fresh,
    /// `ANALYZE` before the load, not after: the statistics describe an
    /// almost empty table (as after a bulk load with autovacuum off).
    Stale,
}

/// Inserts `rows` conversations (one per second back in time) spread over
/// `places` (workspace, repo) and `creators`, keeping `conversation_counts`
/// right. On PostgreSQL the counting trigger is off during the load and the
/// counts are made once (`recount_conversations()`, the migration's
/// backfill).
pub async fn bulk_conversations(
    db: &BenchDb,
    org: Uuid,
    places: &[(Uuid, Uuid)],
    creators: &[Uuid],
    rows: i64,
    stats: Stats,
) -> anyhow::Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let (before, analyze) = match stats {
        Stats::Fresh => ("", "ANALYZE"),
        Stats::Stale => ("ANALYZE;", ""),
    };
    let pick = |values: Vec<String>, modulus: &str| {
        let arms: String = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!(" WHEN {i} THEN {v}"))
            .collect();
        format!("CASE {modulus}{arms} END")
    };
    let n_places = places.len();
    let n_creators = creators.len();
    let ws = pick(
        places.iter().map(|p| db.uuid(p.0)).collect(),
        &format!("i % {n_places}"),
    );
    let repo = pick(
        places.iter().map(|p| db.uuid(p.1)).collect(),
        &format!("i % {n_places}"),
    );
    let creator = pick(
        creators.iter().map(|c| db.uuid(*c)).collect(),
        &format!("i % {n_creators}"),
    );
    let org = db.uuid(org);
    let sql = match db.backend {
        Backend::Postgres => format!(
            "{before}
             ALTER TABLE conversations DISABLE TRIGGER conversations_count;
             INSERT INTO conversations (id, org_id, workspace_id, repo_id, created_by, created_at, last_updated_at)
             SELECT gen_random_uuid(), {org}, {ws}, {repo}, {creator},
                    now() - i * interval '1 second', now() - i * interval '1 second'
             FROM generate_series(1, {rows}) AS i;
             ALTER TABLE conversations ENABLE TRIGGER conversations_count;
             SELECT recount_conversations();
             {analyze}"
        ),
        Backend::Sqlite => format!(
            "{before}
             WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {rows})
             INSERT INTO conversations (id, org_id, workspace_id, repo_id, created_by, tokens_in, tokens_out, created_at, last_updated_at)
             SELECT randomblob(16), {org}, {ws}, {repo}, {creator}, 0, 0,
                    strftime('%Y-%m-%dT%H:%M:%f', 'now', '-' || i || ' seconds') || '000Z',
                    strftime('%Y-%m-%dT%H:%M:%f', 'now', '-' || i || ' seconds') || '000Z'
             FROM seq;
             {analyze};"
        ),
    };
    db.exec(&sql).await
}
