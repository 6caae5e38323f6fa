//! Building the pools, and what a connection runs first: PostgreSQL's (its
//! session settings, or behind a transaction-mode pooler none, and a setup
//! inside a rolled-back transaction) and SQLite's pragmas.

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::{Conn, Pooler, SqliteConn, StoreError, StoreOptions};

/// Runs `op` in one transaction opened with `begin` (behind a
/// transaction-mode pooler): committed if it succeeds, rolled back if not.
/// Its own transactions become savepoints of this one.
pub(super) async fn in_transaction<T, F>(
    conn: &mut Conn,
    begin: &str,
    op: F,
) -> Result<T, StoreError>
where
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>>,
{
    use diesel_async::{AnsiTransactionManager as Manager, TransactionManager as _};
    let Conn::Pg(pg) = conn else {
        return op(conn).await;
    };
    Manager::begin_transaction_sql(&mut **pg, begin).await?;
    let result = op(conn).await;
    let Conn::Pg(pg) = conn else {
        unreachable!("the connection's backend does not change")
    };
    match result {
        Ok(value) => {
            Manager::commit_transaction(&mut **pg).await?;
            Ok(value)
        }
        Err(e) => {
            Manager::rollback_transaction(&mut **pg)
                .await
                .map_err(|r| StoreError::Unavailable(r.to_string()))?;
            Err(e)
        }
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
    // Last in, first out: the connection used last (its backend's caches
    // warm, its statements prepared) serves next; the rest stay idle.
    Pool::builder(mgr)
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .max_size(opts.pool_size.max(1))
        .wait_timeout(Some(opts.acquire_timeout))
        .create_timeout(Some(opts.connect_timeout))
        .recycle_timeout(Some(opts.connect_timeout))
        .runtime(deadpool::Runtime::Tokio1)
}

pub(super) fn pg_pool(url: String, opts: &StoreOptions) -> anyhow::Result<Pool<AsyncPgConnection>> {
    // Behind a transaction-mode pooler a session setting would stay on a
    // server connection others then use: each transaction sets its own.
    let pooled = opts.pooler == Pooler::Transaction;
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
            if pooled {
                return establish_behind_pooler(&url).await;
            }
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

/// A connection through a transaction-mode pooler. What diesel-async runs
/// on a new connection (two `SET`s, as cached prepared statements) would be
/// prepared on one server and run on another, and leave statements and
/// settings behind: it runs inside a transaction that is rolled back, after
/// the statements it cached are closed (turning the cache off drops them).
async fn establish_behind_pooler(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    use diesel::ConnectionError::{BadConnection, CouldntSetupConfiguration};
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| BadConnection(e.to_string()))?;
    // Driven here, not by diesel-async, so that BEGIN can go first; it ends
    // when the client is dropped (a failure shows as the client's errors).
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| BadConnection(e.to_string()))?;
    let mut conn = AsyncPgConnection::try_from(client).await?;
    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    conn.batch_execute("ROLLBACK")
        .await
        .map_err(CouldntSetupConfiguration)?;
    Ok(conn)
}

/// What every SQLite connection runs first (the load generator's ceiling too).
pub fn sqlite_setup_sql(opts: &StoreOptions) -> String {
    format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
        opts.sqlite_busy_timeout.as_millis()
    )
}

pub(super) fn sqlite_pool(
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
