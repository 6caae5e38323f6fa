//! How the store runs an operation: on a task of its own (so that a caller
//! who leaves cannot cut a write short), on the caller's task (a read that
//! writes nothing), in a transaction opened by hand, or on SQLite's writer
//! thread.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::pool::in_transaction;
use super::{Conn, Store, StoreError, writer};

impl Store {
    /// Runs `op` with a pooled connection on a task of its own, so that it runs
    /// to completion (commit or rollback) even if the caller stops waiting.
    pub async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.run_as(true, op).await
    }

    /// Runs `op` as one write on SQLite's writer thread (`writer`, from
    /// [`Store::sqlite_writer`]), a savepoint of its group's transaction,
    /// its outcome noted for the store's health as every write's is.
    pub(crate) async fn write_on<T, F>(
        &self,
        writer: &writer::Writer,
        op: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut diesel::SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let written = writer.write(op).await;
        self.note_write(&written);
        written
    }

    /// [`Store::run`] for a read on the caller's own task: no task spawned,
    /// so no hop to another worker thread and back. Only for operations that
    /// write nothing and open no transaction: if the caller stops waiting,
    /// the connection goes back with nothing left open (a reply still on its
    /// way is discarded by the driver). Behind a transaction-mode pooler,
    /// where every operation runs in a transaction, it is [`Store::run`].
    pub async fn run_here<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        if self.behind_transaction_pooler() {
            return self.run(op).await;
        }
        let mut conn = self.conn().await?;
        let result = op(&mut conn).await;
        self.finished(conn, &result);
        result
    }

    /// An operation's end: its outcome noted for the store's health, and its
    /// connection back to the pool, or, if it failed for want of PostgreSQL,
    /// thrown away (connections are recycled without a test query, which
    /// would cost a round trip per request).
    fn finished<T>(&self, conn: Conn, result: &Result<T, StoreError>) {
        if let (Err(StoreError::Unavailable(_)), Conn::Pg(_)) = (result, &conn) {
            conn.discard();
        }
        self.health.note(result);
    }

    /// [`Store::run`] for an operation that opens its own transaction by hand
    /// (with [`Store::begin_sql`]): behind a transaction-mode pooler it is not
    /// wrapped in one.
    pub async fn run_in_own_transaction<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.run_as(false, op).await
    }

    /// What opens a transaction by hand: `BEGIN`, and behind a
    /// transaction-mode pooler the settings a session would have had.
    pub fn begin_sql(&self) -> &str {
        self.pooled_begin.as_deref().unwrap_or("BEGIN")
    }

    async fn run_as<T, F>(&self, wrap: bool, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let mut conn = store.conn().await?;
            let begin = store.pooled_begin.clone().filter(|_| wrap);
            // A panic mid-operation may leave a transaction open (a create on
            // PostgreSQL opens its own): that connection never goes back.
            let work = async {
                match begin {
                    Some(begin) => in_transaction(&mut conn, &begin, op).await,
                    None => op(&mut conn).await,
                }
            };
            let result = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    conn.discard();
                    std::panic::resume_unwind(panic)
                }
            };
            store.finished(conn, &result);
            result
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Internal(format!("store task failed: {e}"))))
    }
}
