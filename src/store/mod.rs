//! The store: one diesel schema over two backends, PostgreSQL (production) and
//! an embedded SQLite file (the default).
//!
//! Query code is written once. [`Conn`] is an enum of pooled connections and
//! the [`with_conn!`] / [`write_tx!`] macros expand the same diesel-async block
//! for each variant (generic `C: AsyncConnection` functions drown in trait
//! bounds; the macro does not). Writes on SQLite take the write lock up front
//! (`BEGIN IMMEDIATE`): deferred transactions lose concurrent writers to
//! "database is locked".
//!
//! Every operation runs on a spawned task ([`Store::run`]), or on SQLite's
//! writer thread ([`writer`]): a caller that goes away (a dropped HTTP
//! connection, a cancelled rpc) can never leave a transaction half-done on a
//! pooled connection.

pub mod admin;
pub mod auth;
pub mod budgets;
pub mod conversations;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod messages;
pub mod policies;
mod pool;
pub mod prepared;
pub mod providers;
pub mod replica;
mod run;
pub mod schema;
pub mod streams;
pub mod types;
pub mod usage;
pub mod webhooks;
pub mod writer;

pub use pool::sqlite_setup_sql;
use pool::{pg_pool, sqlite_pool};

use std::time::Duration;

use diesel::SqliteConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
/// The advisory lock replicas migrating PostgreSQL at once take turns at.
const MIGRATION_LOCK: i64 = 0x0063_6f6e_766d_6967; // "convmig"

/// The SQLite connection type: diesel's sync connection run on blocking threads.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// A pooled connection to either backend.
#[allow(
    clippy::large_enum_variant,
    reason = "one lives per operation, on its task; boxing would allocate per request"
)]
pub enum Conn {
    Pg(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteConn>, WriteGate),
}

/// SQLite allows one writer at a time. Writers take turns here, in order,
/// instead of polling the file lock with `busy_timeout` back-off sleeps (which
/// cost latency spikes of hundreds of milliseconds under load). Readers never
/// wait for it (WAL).
pub type WriteGate = std::sync::Arc<tokio::sync::Mutex<()>>;

impl Conn {
    /// Removes the connection from its pool for good.
    pub(crate) fn discard(self) {
        match self {
            Conn::Pg(c) => drop(Object::take(c)),
            Conn::Sqlite(c, _) => drop(Object::take(c)),
        }
    }
}

/// Runs the same diesel-async block on whichever backend `$conn` is:
/// `with_conn!(conn, |c| query.load(c).await)`.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::Conn::Pg($c) => $body,
            $crate::store::Conn::Sqlite($c, _) => $body,
        }
    };
}

/// Runs the same diesel-async block in a write transaction on whichever backend
/// `$conn` is (`BEGIN IMMEDIATE` on SQLite). The block returns
/// `Result<T, StoreError>` (diesel errors convert with `?`); any error rolls
/// everything back.
#[macro_export]
macro_rules! write_tx {
    ($conn:expr, |$c:ident| $body:expr) => {{
        use ::diesel_async::AsyncConnection as _;
        match $conn {
            $crate::store::Conn::Pg(conn) => {
                conn.transaction(async |$c| -> Result<_, $crate::store::StoreError> { $body })
                    .await
            }
            $crate::store::Conn::Sqlite(conn, gate) => {
                let _turn = gate.lock().await;
                conn.immediate_transaction(async |$c| -> Result<_, $crate::store::StoreError> {
                    $body
                })
                .await
            }
        }
    }};
}

/// Which database engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Tuning of the pool and connections; the defaults suit a small service.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections kept at most (PostgreSQL). SQLite uses at most this many too.
    pub pool_size: usize,
    /// How long a request waits for a free connection before answering 503.
    pub acquire_timeout: Duration,
    /// How long opening a new connection may take.
    pub connect_timeout: Duration,
    /// How long a SQLite writer waits for the write lock (busy_timeout).
    pub sqlite_busy_timeout: Duration,
    /// Longest time one SQL statement may run on PostgreSQL.
    pub statement_timeout: Duration,
    /// What stands between the service and PostgreSQL.
    pub pooler: Pooler,
    /// A PostgreSQL streaming replica that serves reads (a direct URL).
    pub read_url: Option<String>,
    /// How far behind the primary the replica may be and still serve reads.
    pub read_max_lag: Duration,
}

/// A connection pooler in front of PostgreSQL, as the service must treat it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooler {
    /// None, or one in session mode: a connection is the service's alone.
    #[default]
    None,
    /// PgBouncer (or another pooler) in transaction mode: a server connection
    /// is the service's for one transaction only. So no statement is
    /// prepared to be reused (named statements do not follow a client from
    /// one server to another), every operation runs in one transaction (its
    /// statements are prepared and run on the same server), and no session
    /// setting is made (`statement_timeout` is set per transaction).
    Transaction,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            pooler: Pooler::None,
            read_url: None,
            read_max_lag: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
enum Pools {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>, writer::Writer),
}

/// The shared, cloneable handle to the database.
#[derive(Clone)]
pub struct Store {
    pools: Pools,
    /// The database file, on SQLite.
    sqlite_path: Option<std::path::PathBuf>,
    /// Whether writes fail for want of disk space; this replica's id.
    health: std::sync::Arc<health::WriteHealth>,
    /// On PostgreSQL behind a transaction-mode pooler: what opens the
    /// transaction every operation runs in (`BEGIN` and its settings).
    pooled_begin: Option<std::sync::Arc<str>>,
    /// The streaming replica reads may go to.
    replica: Option<std::sync::Arc<replica::ReadReplica>>,
}

/// What went wrong in the store, sorted by what the caller should be told.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, is locked, or no connection was free in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row with the same unique key exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// A referenced row does not exist.
    #[error("referenced row missing: {0}")]
    MissingReference(String),
    /// A row named by id does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the data (e.g. entities of different organizations).
    #[error("{0}")]
    Invalid(String),
    /// A budget has no room for a reservation (which rolled back).
    #[error("the budget {} has no room", .0.budget.id)]
    BudgetExceeded(Box<budgets::BudgetState>),
    /// Anything else: a bug, a broken schema, bad data.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(kind, info) => {
                let msg = info.message();
                match kind {
                    DatabaseErrorKind::UniqueViolation => StoreError::Conflict(msg.to_owned()),
                    DatabaseErrorKind::ForeignKeyViolation => {
                        StoreError::MissingReference(msg.to_owned())
                    }
                    DatabaseErrorKind::ClosedConnection => StoreError::Unavailable(msg.to_owned()),
                    _ if is_unavailable_message(msg) => StoreError::Unavailable(msg.to_owned()),
                    _ => StoreError::Internal(e.to_string()),
                }
            }
            DieselError::BrokenTransactionManager => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// Messages with which the backends report that the database, not the query,
/// is the problem: SQLite's lock timeouts and unreadable files, PostgreSQL's
/// shutdowns, dropped connections and exhausted connection slots, and either's
/// full disk.
fn is_unavailable_message(msg: &str) -> bool {
    if health::is_disk_full(msg) {
        return true;
    }
    const MARKERS: [&str; 10] = [
        "database is locked",
        "database is busy",
        "unable to open database",
        "disk I/O error",
        "attempt to write a readonly database",
        "terminating connection",
        "connection closed",
        "server closed the connection",
        "the database system is",
        "too many clients",
    ];
    MARKERS.iter().any(|m| msg.contains(m))
}

impl From<diesel_async::pooled_connection::deadpool::PoolError> for StoreError {
    fn from(e: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

impl Store {
    /// Opens a pool on `database_url`: `postgres://...` / `postgresql://...`, or
    /// `sqlite://relative/path.db` / `sqlite:///absolute/path.db` (the parent
    /// folder is created). Connections are opened lazily.
    pub fn open(database_url: &str, opts: &StoreOptions) -> anyhow::Result<Store> {
        let mut sqlite_path = None;
        let mut pooled_begin = None;
        let health = health::WriteHealth::new();
        let pools = match parse_url(database_url)? {
            (Backend::Postgres, url) => {
                if opts.pooler == Pooler::Transaction {
                    pooled_begin = Some(
                        format!(
                            "BEGIN; SET LOCAL statement_timeout = {}; SET LOCAL TIME ZONE 'UTC'",
                            opts.statement_timeout.as_millis()
                        )
                        .into(),
                    );
                }
                Pools::Pg(pg_pool(url, opts)?)
            }
            (Backend::Sqlite, path) => {
                if let Some(parent) = std::path::Path::new(&path).parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        anyhow::anyhow!("cannot create the folder {}: {e}", parent.display())
                    })?;
                }
                sqlite_path = Some(std::path::PathBuf::from(&path));
                let setup_sql = sqlite_setup_sql(opts);
                let writer = writer::Writer::start(
                    path.clone(),
                    setup_sql.clone(),
                    WriteGate::default(),
                    health.clone(),
                )?;
                Pools::Sqlite(sqlite_pool(path, setup_sql, opts)?, writer)
            }
        };
        let replica = match &opts.read_url {
            None => None,
            Some(url) => {
                let (Backend::Postgres, url) = parse_url(url)? else {
                    anyhow::bail!("the read replica's URL must be a postgres:// URL");
                };
                anyhow::ensure!(
                    matches!(pools, Pools::Pg(_)),
                    "a read replica needs PostgreSQL as the database"
                );
                let direct = StoreOptions {
                    pooler: Pooler::None,
                    ..opts.clone()
                };
                let pool = pg_pool(url, &direct)?;
                Some(std::sync::Arc::new(replica::ReadReplica::new(
                    pool,
                    opts.read_max_lag,
                )))
            }
        };
        Ok(Store {
            pools,
            sqlite_path,
            health,
            pooled_begin,
            replica,
        })
    }

    /// A connection from the pool, waiting at most the acquire timeout.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match &self.pools {
            Pools::Pg(p) => Conn::Pg(p.get().await?),
            Pools::Sqlite(p, writer) => Conn::Sqlite(p.get().await?, writer.gate().clone()),
        })
    }

    /// Applies every pending migration; returns how many ran.
    /// Needs the multi-thread tokio runtime. On PostgreSQL, replicas starting together take turns (an advisory
    /// lock held while migrating); behind a transaction-mode pooler, which
    /// cannot hold it, migrations are refused (run `migrate` on a direct URL).
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        anyhow::ensure!(
            !self.behind_transaction_pooler(),
            "migrations need a connection of their own: run `conversation-service migrate` with a \
             --database-url that reaches PostgreSQL itself, not the transaction-mode pooler"
        );
        let ran = match self.conn().await? {
            Conn::Pg(mut c) => {
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                    .await?;
                let (mut c, ran) = tokio::task::block_in_place(|| {
                    let mut harness = AsyncMigrationHarness::new(c);
                    let ran = harness
                        .run_pending_migrations(PG_MIGRATIONS)
                        .map(|v| v.len());
                    (harness.into_inner(), ran)
                });
                let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
                if ran.is_err() || c.batch_execute(&unlock).await.is_err() {
                    // Closing the session is what surely releases the lock.
                    drop(Object::take(c));
                }
                ran
            }
            Conn::Sqlite(c, _) => tokio::task::block_in_place(|| {
                AsyncMigrationHarness::new(c)
                    .run_pending_migrations(SQLITE_MIGRATIONS)
                    .map(|v| v.len())
            }),
        }
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        Ok(ran)
    }

    /// Whether PostgreSQL is reached through a transaction-mode pooler.
    pub fn behind_transaction_pooler(&self) -> bool {
        self.pooled_begin.is_some()
    }

    /// The database file, if this store is on SQLite.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.sqlite_path.as_deref()
    }

    /// SQLite's writer thread, if this store is on SQLite.
    pub fn sqlite_writer(&self) -> Option<&writer::Writer> {
        match &self.pools {
            Pools::Pg(_) => None,
            Pools::Sqlite(_, writer) => Some(writer),
        }
    }

    /// The connection pool right now, for metrics.
    pub fn pool_status(&self) -> deadpool::Status {
        match &self.pools {
            Pools::Pg(p) => p.status(),
            Pools::Sqlite(p, _) => p.status(),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        with_conn!(&mut conn, |c| c.batch_execute("SELECT 1").await)?;
        Ok(())
    }
}

/// Ends a transaction opened by hand on `c` (its `BEGIN` sent with its
/// first statement, saving a round trip): COMMIT if `keep`, else ROLLBACK.
/// A failed COMMIT ends the transaction too and is the error; a failed
/// ROLLBACK leaves the connection's state unknown, which is reported as
/// unavailability so that [`Store::run`] drops the connection.
pub(crate) async fn end_transaction<T>(
    c: &AsyncPgConnection,
    written: Result<T, StoreError>,
    keep: bool,
) -> Result<T, StoreError> {
    let end = if keep { "COMMIT" } else { "ROLLBACK" };
    match (written, (&mut &*c).batch_execute(end).await) {
        (Ok(outcome), Ok(())) => Ok(outcome),
        (Ok(_), Err(e)) if keep => Err(e.into()),
        (_, Err(e)) => Err(StoreError::Unavailable(e.to_string())),
        (Err(e), Ok(())) => Err(e),
    }
}

/// Splits a database URL into its engine and what the driver needs.
pub fn parse_url(url: &str) -> anyhow::Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, url.to_owned()))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        anyhow::ensure!(!path.is_empty(), "the SQLite URL {url:?} names no file");
        Ok((Backend::Sqlite, path.to_owned()))
    } else {
        anyhow::bail!(
            "unsupported database URL (expected postgres://..., sqlite://relative.db or sqlite:///absolute.db)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_is_not_pooled_again_after_a_panic() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url, &StoreOptions::default()).expect("open");
        store.run(|_| async { Ok(()) }.boxed()).await.expect("runs");
        assert_eq!(store.pool_status().size, 1, "the connection was pooled");
        let failed: Result<(), StoreError> = store
            .run(|_| async { panic!("a bug mid-transaction") }.boxed())
            .await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        assert_eq!(store.pool_status().size, 0, "and was dropped, not pooled");
    }

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            parse_url("sqlite://./data/c.db").expect("ok"),
            (Backend::Sqlite, "./data/c.db".into())
        );
        assert_eq!(
            parse_url("sqlite:///tmp/c.db").expect("ok"),
            (Backend::Sqlite, "/tmp/c.db".into())
        );
        assert_eq!(
            parse_url("postgres://u@h/db").expect("ok").0,
            Backend::Postgres
        );
        assert_eq!(
            parse_url("postgresql://u@h/db").expect("ok").0,
            Backend::Postgres
        );
        assert!(parse_url("mysql://x").is_err());
        assert!(parse_url("sqlite://").is_err());
    }

    #[test]
    fn store_errors_are_sorted_by_what_the_caller_should_hear() {
        let locked = DieselError::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("database is locked".to_owned()),
        );
        assert!(matches!(
            StoreError::from(locked),
            StoreError::Unavailable(_)
        ));
        let unique = DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            Box::new("duplicate".to_owned()),
        );
        assert!(matches!(StoreError::from(unique), StoreError::Conflict(_)));
        assert!(matches!(
            StoreError::from(DieselError::NotFound),
            StoreError::Internal(_)
        ));
    }
}
