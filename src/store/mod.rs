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
pub mod idempotency;
pub mod messages;
pub mod policies;
pub mod providers;
pub mod schema;
pub mod types;
pub mod usage;
pub mod webhooks;
pub mod writer;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use diesel::SqliteConnection;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{
    AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, SimpleAsyncConnection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

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
    fn discard(self) {
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
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
/// shutdowns and dropped connections.
fn is_unavailable_message(msg: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "database is locked",
        "database is busy",
        "unable to open database",
        "disk I/O error",
        "attempt to write a readonly database",
        "terminating connection",
        "connection closed",
        "server closed the connection",
        "the database system is",
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
        let pools = match parse_url(database_url)? {
            (Backend::Postgres, url) => Pools::Pg(pg_pool(url, opts)?),
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
                let writer =
                    writer::Writer::start(path.clone(), setup_sql.clone(), WriteGate::default())?;
                Pools::Sqlite(sqlite_pool(path, setup_sql, opts)?, writer)
            }
        };
        Ok(Store { pools, sqlite_path })
    }

    /// A connection from the pool, waiting at most the acquire timeout.
    pub async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match &self.pools {
            Pools::Pg(p) => Conn::Pg(p.get().await?),
            Pools::Sqlite(p, writer) => Conn::Sqlite(p.get().await?, writer.gate().clone()),
        })
    }

    /// Runs `op` with a pooled connection on a task of its own, so that it runs
    /// to completion (commit or rollback) even if the caller stops waiting.
    pub async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let mut conn = store.conn().await?;
            // A panic mid-operation may leave a transaction open (a create on
            // PostgreSQL opens its own): that connection never goes back.
            let result = match AssertUnwindSafe(op(&mut conn)).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    conn.discard();
                    std::panic::resume_unwind(panic)
                }
            };
            // Connections are recycled without a test query (that would cost a
            // round trip per request), so one that failed for want of the
            // server is thrown away here instead of going back to the pool.
            if let (Err(StoreError::Unavailable(_)), Conn::Pg(_)) = (&result, &conn) {
                conn.discard();
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Internal(format!("store task failed: {e}"))))
    }

    /// Applies every pending migration; returns how many ran.
    /// Needs the multi-thread tokio runtime.
    pub async fn migrate(&self) -> anyhow::Result<usize> {
        let conn = self.conn().await?;
        let ran = tokio::task::block_in_place(|| match conn {
            Conn::Pg(c) => AsyncMigrationHarness::new(c)
                .run_pending_migrations(PG_MIGRATIONS)
                .map(|v| v.len()),
            Conn::Sqlite(c, _) => AsyncMigrationHarness::new(c)
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.len()),
        })
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        Ok(ran)
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

fn pool_builder_defaults<C>(
    mgr: AsyncDieselConnectionManager<C>,
    opts: &StoreOptions,
) -> deadpool::managed::PoolBuilder<AsyncDieselConnectionManager<C>>
where
    C: diesel_async::pooled_connection::PoolableConnection + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    Pool::builder(mgr)
        .max_size(opts.pool_size.max(1))
        .wait_timeout(Some(opts.acquire_timeout))
        .create_timeout(Some(opts.connect_timeout))
        .recycle_timeout(Some(opts.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
}

fn pg_pool(url: String, opts: &StoreOptions) -> anyhow::Result<Pool<AsyncPgConnection>> {
    let setup_sql = format!(
        "SET application_name = 'conversation-service'; SET statement_timeout = {};",
        opts.statement_timeout.as_millis()
    );
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let setup_sql = setup_sql.clone();
        let url = url.to_owned();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute(&setup_sql)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let mgr = AsyncDieselConnectionManager::new_with_config(url, config);
    Ok(pool_builder_defaults(mgr, opts).build()?)
}

/// What every SQLite connection runs first (the load generator's ceiling too).
pub fn sqlite_setup_sql(opts: &StoreOptions) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
        opts.sqlite_busy_timeout.as_millis()
    )
}

fn sqlite_pool(
    path: String,
    setup_sql: String,
    opts: &StoreOptions,
) -> anyhow::Result<Pool<SqliteConn>> {
    let mut config = ManagerConfig::<SqliteConn>::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |path| {
        let setup_sql = setup_sql.clone();
        let path = path.to_owned();
        async move {
            let mut conn = SqliteConn::establish(&path).await?;
            conn.batch_execute(&setup_sql)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let mgr = AsyncDieselConnectionManager::new_with_config(path, config);
    Ok(pool_builder_defaults(mgr, opts).build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
