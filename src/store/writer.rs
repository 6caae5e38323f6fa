//! SQLite's writer: one thread with a connection of its own, doing the
//! store's hot writes (a create: its lookup, its rules and its transaction;
//! a prompt's turn; a stream's log) one job after another, in the order
//! they come.
//!
//! SQLite lets one writer in at a time anyway. Before this, every create took
//! a pooled connection to a blocking thread and queued at the write gate
//! there: the pool's connections (four by default) had their page caches made
//! stale by every other one's commit (each create re-read its pages from the
//! file), and threads parked and woken in turn on the gate. One connection on
//! one thread keeps its cache warm, and under load it takes the next job
//! without sleeping.
//!
//! Other writes (deletes, sweeps, ...) still take pooled connections and
//! the [`WriteGate`]; a job takes the gate too, for the part that writes.
//! A job runs to its end whatever its caller does, so a caller that goes away
//! cannot cut a transaction short; a job whose caller went away before its
//! turn is dropped unrun.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, SqliteConnection};

use super::{StoreError, WriteGate};

/// What the thread runs: a job with the connection, or the reason there is none.
type Job = Box<dyn FnOnce(Result<&mut SqliteConnection, StoreError>) + Send>;

/// The handle to the writer thread; clones share it. The thread ends with the
/// last handle.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    gate: WriteGate,
}

impl Writer {
    /// Starts the thread. It connects to `path` (then runs `setup_sql`) on
    /// its first job, and again after a job that panicked.
    pub fn start(path: String, setup_sql: String, gate: WriteGate) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn: Option<SqliteConnection> = None;
                for job in queue {
                    if conn.is_none() {
                        match connect(&path, &setup_sql) {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                job(Err(e));
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    // A job that panics may leave a transaction open: its
                    // connection is closed (SQLite rolls back) and the next
                    // job gets a new one. Its caller, whose reply sender the
                    // panic dropped, is told the store failed.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(Ok(c)))).is_err() {
                        conn = None;
                    }
                }
            })?;
        Ok(Writer { jobs, gate })
    }

    /// The gate every SQLite write takes its turn at.
    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    /// Runs `op` in a write transaction (`BEGIN IMMEDIATE`) on the writer's
    /// connection, at the write gate, once the jobs before it are done.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let gate = self.gate.clone();
        self.run(move |c| {
            let _turn = gate.blocking_lock();
            c.immediate_transaction(op)
        })
        .await
    }

    /// Runs `op` on the writer's connection once the jobs before it are done.
    pub async fn run<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        // The job may spawn tasks (a create records its token's use).
        let runtime = tokio::runtime::Handle::current();
        let job: Job = Box::new(move |conn| {
            // A caller gone before its turn (timed out, hung up) is not
            // served: nothing is written that nobody will be told of.
            if reply.is_closed() {
                return;
            }
            let _entered = runtime.enter();
            let _ = reply.send(conn.and_then(op));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Internal(
                "the SQLite writer's job failed".into(),
            ))
        })
    }
}

fn connect(path: &str, setup_sql: &str) -> Result<SqliteConnection, StoreError> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open the SQLite file: {e}")))?;
    conn.batch_execute(setup_sql)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl as _;

    #[derive(diesel::QueryableByName)]
    struct Number {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_alone_and_the_next_gets_a_new_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.db").display().to_string();
        let writer = Writer::start(path, String::new(), WriteGate::default()).expect("thread");
        // A temporary table lives as long as its connection.
        writer
            .run(|c| {
                c.batch_execute(
                    "CREATE TEMP TABLE mark (n INTEGER); INSERT INTO mark VALUES (1);",
                )?;
                Ok(())
            })
            .await
            .expect("first job");
        let count = |c: &mut SqliteConnection| -> Result<i64, StoreError> {
            let sql = "SELECT count(*) AS n FROM sqlite_temp_master WHERE name = 'mark'";
            Ok(diesel::sql_query(sql).get_result::<Number>(c)?.n)
        };
        assert_eq!(writer.run(count).await.expect("same connection"), 1);
        let failed: Result<(), StoreError> = writer
            .run(|c| {
                c.batch_execute("BEGIN IMMEDIATE")?;
                panic!("a bug mid-transaction")
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        assert_eq!(
            writer.run(count).await.expect("writer lives on"),
            0,
            "a new connection"
        );
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_before_its_turn_does_not_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.db").display().to_string();
        let writer = Writer::start(path, String::new(), WriteGate::default()).expect("thread");
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel();
        let busy = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run(move |_| {
                        let _ = started.send(());
                        let _ = held.recv();
                        Ok(())
                    })
                    .await
            }
        });
        has_started.await.expect("the busy job runs");
        let make_table = writer.run(|c| {
            c.batch_execute("CREATE TABLE mark (n INTEGER)")?;
            Ok(())
        });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), make_table).await;
        assert!(waited.is_err(), "queued behind the busy job, then given up");
        release.send(()).expect("release");
        busy.await.expect("task").expect("busy job");
        let tables = writer
            .run(|c| {
                let sql = "SELECT count(*) AS n FROM sqlite_master WHERE name = 'mark'";
                Ok(diesel::sql_query(sql).get_result::<Number>(c)?.n)
            })
            .await
            .expect("count");
        assert_eq!(tables, 0, "the abandoned job did not run");
    }
}
