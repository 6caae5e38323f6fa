//! SQLite's writer: one thread with a connection of its own, doing the
//! store's hot writes (a create: its lookup, its rules and its rows; a
//! prompt's turn; a stream's log) in the order they come, and committing
//! them in groups.
//!
//! SQLite lets one writer in at a time anyway. Before this, every create took
//! a pooled connection to a blocking thread and queued at the write gate
//! there: the pool's connections (four by default) had their page caches made
//! stale by every other one's commit (each create re-read its pages from the
//! file), and threads parked and woken in turn on the gate. One connection on
//! one thread keeps its cache warm, and under load it takes the next job
//! without sleeping.
//!
//! **Group commit.** The thread takes every job waiting when it is free (at
//! most [`MOST_PER_COMMIT`]) into one `BEGIN IMMEDIATE` transaction, each job
//! in a savepoint of its own, and commits them together: a commit writes each
//! page it changed to the WAL once, and the jobs of a group mostly change the
//! same pages (the tables' and indexes' last leaves, the count rows), so a
//! group of 16 writes a fraction of what 16 commits would. Alone, a job is a
//! group of one, as before. A job that fails is rolled back to its savepoint
//! and told so; the others of its group are committed. Callers hear of their
//! jobs only once the group's commit is known: a caller is never told of a
//! write that is not durable (as far as `synchronous = NORMAL` makes it), and
//! if the commit fails, every job of the group is told it failed.
//!
//! **Checkpoints off the writer.** SQLite's automatic checkpoint runs in the
//! commit that crosses its threshold (1,000 pages): that commit, and every
//! caller of its group, waited for the WAL's pages to be copied into the
//! database file and both files to be flushed to disk (an `fsync` each),
//! 10–20 ms on this project's machines, about one turn in fifty. The writer's
//! connection has it off (`wal_autocheckpoint = 0`); a thread of its own,
//! with its own connection, checkpoints (`PASSIVE`: it never waits for, nor
//! blocks, the writer or a reader) every [`CHECKPOINT_EVERY`] when the writer
//! committed since its last. The next write after a complete checkpoint
//! starts the WAL over from its beginning, so the WAL stays about as large
//! as what the writer commits in that time.
//!
//! Other writes (deletes, sweeps, ...) still take pooled connections and
//! the [`WriteGate`]; a group holds the gate while it writes.
//! A job runs to its end whatever its caller does, so a caller that goes away
//! cannot cut a transaction short; a job whose caller went away before its
//! turn is dropped unrun.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection as _, TransactionManager};
use diesel::{Connection as _, SqliteConnection};

use super::health::WriteHealth;
use super::{StoreError, WriteGate};

/// What the writer's connection runs after the store's setup: savepoints'
/// journal (SQLite's statement journal) in memory. Past 64 KiB it would
/// spill to a temporary file, and a group's savepoints wrote it there with
/// a system call per page.
pub const SETUP_SQL: &str = "PRAGMA temp_store = MEMORY;";

/// What the writer's connection alone runs last: no checkpoint in its
/// commits (the checkpointer's thread does them).
const NO_AUTOMATIC_CHECKPOINT: &str = "PRAGMA wal_autocheckpoint = 0;";

/// How often the checkpointer looks for commits to copy into the database
/// file. At 3,000 creates a second the WAL then holds at most a few MiB.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The most jobs one commit takes. It bounds how long other writers wait at
/// the gate, and how long a group's first job waits for its last.
pub const MOST_PER_COMMIT: usize = 64;

/// What the thread runs: a job, given the connection inside its group's
/// transaction (or the reason there is none). It hands back how to tell its
/// caller once the group's commit is known; nothing if it has told its
/// caller already or its caller left before its turn.
type Job = Box<dyn FnOnce(Result<&mut SqliteConnection, StoreError>) -> Option<Reply> + Send>;

/// Tells a job's caller its outcome, given its group's commit: `Ok` if the
/// group committed, else why not.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The handle to the writer thread; clones share it. The thread ends with the
/// last handle.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    gate: WriteGate,
    done: Arc<Done>,
}

/// What the writer has done so far: jobs run, the commits that wrote them
/// (their ratio is the mean group), and the checkpoints made after them
/// (`/metrics` shows the three).
#[derive(Default)]
struct Done {
    jobs: AtomicU64,
    commits: AtomicU64,
    checkpoints: AtomicU64,
}

impl Writer {
    /// Starts the thread, and the checkpointer's. It connects to `path`
    /// (then runs `setup_sql`) on its first job, and again after a group
    /// that did not end cleanly. Each group writes at `gate`, the turn every
    /// SQLite write takes. The checkpointer waits while `health` says writes
    /// fail for want of space.
    pub fn start(
        path: String,
        setup_sql: String,
        gate: WriteGate,
        health: Arc<WriteHealth>,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let done = Arc::new(Done::default());
        let (counts, turns) = (done.clone(), gate.clone());
        {
            let (path, setup_sql, done) = (path.clone(), setup_sql.clone(), Arc::downgrade(&done));
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpoints(&path, &setup_sql, &done, &health))?;
        }
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut conn: Option<SqliteConnection> = None;
                while let Ok(first) = queue.recv() {
                    let mut group = vec![first];
                    group.extend(queue.try_iter().take(MOST_PER_COMMIT - 1));
                    let c = match &mut conn {
                        Some(c) => c,
                        None => match connect(&path, &setup_sql, NO_AUTOMATIC_CHECKPOINT) {
                            Ok(c) => conn.insert(c),
                            Err(e) => {
                                for job in group {
                                    job(Err(same(&e)));
                                }
                                continue;
                            }
                        },
                    };
                    let _turn = turns.blocking_lock();
                    if !commit_group(c, group, &counts) {
                        // SQLite rolls back whatever the connection left open.
                        conn = None;
                    }
                }
            })?;
        Ok(Writer { jobs, gate, done })
    }

    /// The gate every SQLite write takes its turn at.
    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    /// Jobs run, commits made and checkpoints done so far:
    /// `(jobs, commits, checkpoints)`.
    pub fn done(&self) -> (u64, u64, u64) {
        (
            self.done.jobs.load(Ordering::Relaxed),
            self.done.commits.load(Ordering::Relaxed),
            self.done.checkpoints.load(Ordering::Relaxed),
        )
    }

    /// Runs `op` on the writer's connection once the jobs queued before it
    /// are done: in a write transaction (`BEGIN IMMEDIATE`) with the jobs
    /// waiting beside it, in a savepoint of its own, so that an error undoes
    /// its writes alone. Its outcome comes once the group has committed.
    /// The job is queued when this is called, not when the future is first
    /// polled.
    pub fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + use<T, F>
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
                return None;
            }
            let c = match conn {
                Ok(c) => c,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return None;
                }
            };
            let _entered = runtime.enter();
            let ran = c.transaction(op);
            Some(Box::new(move |committed: Result<(), StoreError>| {
                let _ = reply.send(committed.and(ran));
            }))
        });
        let queued = self
            .jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()));
        async move {
            queued?;
            answer.await.unwrap_or_else(|_| {
                Err(StoreError::Internal(
                    "the SQLite writer's job failed".into(),
                ))
            })
        }
    }
}

/// Runs `group` in one transaction, then tells each job's caller. False if
/// the connection is not to be trusted after it: the group did not commit
/// (the transaction could not begin or end, or a job panicked).
fn commit_group(c: &mut SqliteConnection, group: Vec<Job>, done: &Done) -> bool {
    let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
    let mut waiting = group.into_iter();
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        c.immediate_transaction(|c| {
            for job in waiting.by_ref() {
                // SQLite ends the whole transaction on some failures (a full
                // disk, an I/O error): the jobs after such a one must not
                // run outside it, each committed on its own.
                let status = AnsiTransactionManager::transaction_manager_status_mut(c);
                let given = match status.transaction_depth() {
                    Ok(Some(depth)) if depth.get() == 1 => Ok(&mut *c),
                    _ => Err(StoreError::Unavailable(
                        "the SQLite write transaction ended early".into(),
                    )),
                };
                replies.extend(job(given));
            }
            diesel::QueryResult::Ok(())
        })
    }));
    // A job that panicked dropped its reply: its caller is told the job
    // failed. The others are told the group's failure.
    let committed = match ran {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::from(e)),
        Err(_) => Err(StoreError::Internal(
            "a job of the same SQLite write failed".into(),
        )),
    };
    done.jobs.fetch_add(replies.len() as u64, Ordering::Relaxed);
    let clean = committed.is_ok();
    if clean {
        done.commits.fetch_add(1, Ordering::Relaxed);
    }
    for reply in replies {
        reply(committed.as_ref().map(|_| ()).map_err(same));
    }
    // Jobs the group never reached: the transaction did not begin (the file
    // is locked past the busy timeout, say), or a job before them panicked.
    if let Err(e) = &committed {
        for job in waiting {
            job(Err(same(e)));
        }
    }
    clean
}

/// The same failure, for each caller it concerns.
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
        other => StoreError::Internal(other.to_string()),
    }
}

fn connect(path: &str, setup_sql: &str, own_sql: &str) -> Result<SqliteConnection, StoreError> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open the SQLite file: {e}")))?;
    conn.batch_execute(setup_sql)?;
    conn.batch_execute(SETUP_SQL)?;
    conn.batch_execute(own_sql)?;
    Ok(conn)
}

/// The checkpointer's thread: every [`CHECKPOINT_EVERY`], if the writer
/// committed since the last checkpoint, a `PASSIVE` one (see the module's
/// note). It ends soon after the writer's thread. A failure is logged and
/// tried again on a new connection at the next turn; meanwhile the WAL
/// grows, and nothing is lost.
///
/// It waits while writes fail for want of space: a complete checkpoint
/// lets the next write start the WAL over, in room the WAL file already
/// holds, so a small write (the readiness heartbeat) would succeed while
/// creates still fail, and the service would call itself ready on a full
/// disk. Once the heartbeat succeeds again (space returned), it goes on.
fn checkpoints(path: &str, setup_sql: &str, done: &Weak<Done>, health: &WriteHealth) {
    let mut conn: Option<SqliteConnection> = None;
    let mut seen = 0;
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        let Some(done) = done.upgrade() else {
            return;
        };
        let commits = done.commits.load(Ordering::Relaxed);
        if commits == seen || health.failing() {
            continue;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match connect(path, setup_sql, "") {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot connect to checkpoint the SQLite file");
                    continue;
                }
            },
        };
        match c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
            Ok(()) => {
                seen = commits;
                done.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a checkpoint of the SQLite file failed");
                conn = None;
            }
        }
    }
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

    fn start() -> (tempfile::TempDir, Writer) {
        start_with("")
    }

    /// A writer on a new file in a temporary folder, set up with `setup_sql`.
    fn start_with(setup_sql: &str) -> (tempfile::TempDir, Writer) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.db").display().to_string();
        let writer = Writer::start(
            path,
            setup_sql.to_owned(),
            WriteGate::default(),
            WriteHealth::new(),
        )
        .expect("thread");
        (dir, writer)
    }

    /// [`start`], with a table `mark (n INTEGER PRIMARY KEY)`.
    async fn start_with_marks() -> (tempfile::TempDir, Writer) {
        let (dir, writer) = start();
        writer
            .write(|c| {
                c.batch_execute("CREATE TABLE mark (n INTEGER PRIMARY KEY)")?;
                Ok(())
            })
            .await
            .expect("table");
        (dir, writer)
    }

    fn number(c: &mut SqliteConnection, sql: &str) -> Result<i64, StoreError> {
        Ok(diesel::sql_query(sql).get_result::<Number>(c)?.n)
    }

    /// Holds the writer busy with one job until the returned sender is
    /// dropped or sent to, so that the jobs queued meanwhile form one group.
    async fn hold(writer: &Writer) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel();
        let busy = writer.write(move |_| {
            let _ = started.send(());
            let _ = held.recv();
            Ok(())
        });
        let busy = tokio::spawn(async move { busy.await.expect("the busy job") });
        has_started.await.expect("the busy job runs");
        (release, busy)
    }

    fn insert(n: i64) -> impl FnOnce(&mut SqliteConnection) -> Result<(), StoreError> {
        move |c| {
            c.batch_execute(&format!("INSERT INTO mark VALUES ({n})"))?;
            Ok(())
        }
    }

    /// Plans that do not depend on bound values, and no locks the service
    /// never needs (`.cargo/config.toml`): without the first, SQLite
    /// prepares some statements again on every call.
    #[tokio::test]
    async fn sqlite_is_built_with_stable_plans_and_the_writer_journals_in_memory() {
        let (_dir, writer) = start();
        let (options, temp_store) = writer
            .write(|c| {
                let mut option = |name: &str| {
                    number(
                        c,
                        &format!(
                            "SELECT count(*) AS n FROM pragma_compile_options \
                             WHERE compile_options = '{name}'"
                        ),
                    )
                };
                let options = [
                    option("ENABLE_QPSG")?,
                    option("THREADSAFE=2")?,
                    option("DEFAULT_MEMSTATUS=0")?,
                    option("ENABLE_MEMORY_MANAGEMENT")?,
                ];
                Ok((
                    options,
                    number(c, "SELECT temp_store AS n FROM pragma_temp_store")?,
                ))
            })
            .await
            .expect("pragmas");
        assert_eq!(
            options,
            [1, 1, 1, 0],
            "built with SQLITE_ENABLE_QPSG, SQLITE_THREADSAFE=2 and \
             SQLITE_DEFAULT_MEMSTATUS=0, without SQLITE_ENABLE_MEMORY_MANAGEMENT"
        );
        assert_eq!(temp_store, 2, "MEMORY");
    }

    /// The writer commits without checkpointing; the checkpointer's thread
    /// does, so that the next write starts the WAL over: without it, the
    /// WAL would hold both rounds below.
    #[tokio::test]
    async fn the_checkpointer_keeps_the_wal_from_growing() {
        let (dir, writer) = start_with("PRAGMA journal_mode = WAL;");
        let wal = dir.path().join("w.db-wal");
        let automatic = writer
            .write(|c| {
                c.batch_execute("CREATE TABLE blob (b BLOB)")?;
                // A pragma without a table-valued form: read as is.
                #[derive(diesel::QueryableByName)]
                struct Automatic {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    wal_autocheckpoint: i64,
                }
                let row: Automatic =
                    diesel::sql_query("PRAGMA wal_autocheckpoint").get_result(c)?;
                Ok(row.wal_autocheckpoint)
            })
            .await
            .expect("table");
        assert_eq!(automatic, 0, "the writer's commits do not checkpoint");
        // About 2 MiB of WAL each (500 pages of 4 KiB), more than SQLite's
        // automatic checkpoint would let it reach.
        async fn round(writer: &Writer, wal: &std::path::Path) -> u64 {
            let checkpoints = writer.done().2;
            writer
                .write(|c| {
                    c.batch_execute(
                        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
                         INSERT INTO blob SELECT randomblob(4000) FROM n",
                    )?;
                    Ok(())
                })
                .await
                .expect("a round");
            let size = std::fs::metadata(wal).expect("the WAL").len();
            for _ in 0..200 {
                if writer.done().2 > checkpoints {
                    return size;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("no checkpoint after the round");
        }
        let first = round(&writer, &wal).await;
        let second = round(&writer, &wal).await;
        assert!(first > 2_000_000, "{first} bytes of WAL");
        assert!(
            second < first + first / 4,
            "the WAL started over: {first} then {second} bytes"
        );
        let rows = writer
            .write(|c| number(c, "SELECT count(*) AS n FROM blob"))
            .await
            .expect("rows");
        assert_eq!(rows, 1_000);
    }

    #[tokio::test]
    async fn a_job_that_panics_fails_and_the_next_gets_a_new_connection() {
        let (_dir, writer) = start();
        // A temporary table lives as long as its connection.
        writer
            .write(|c| {
                c.batch_execute(
                    "CREATE TEMP TABLE mark (n INTEGER); INSERT INTO mark VALUES (1);",
                )?;
                Ok(())
            })
            .await
            .expect("first job");
        let count = |c: &mut SqliteConnection| {
            number(
                c,
                "SELECT count(*) AS n FROM sqlite_temp_master WHERE name = 'mark'",
            )
        };
        assert_eq!(writer.write(count).await.expect("same connection"), 1);
        let failed: Result<(), StoreError> = writer
            .write(|c| {
                c.batch_execute("INSERT INTO mark VALUES (2)")?;
                panic!("a bug mid-transaction")
            })
            .await;
        assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
        assert_eq!(
            writer.write(count).await.expect("writer lives on"),
            0,
            "a new connection"
        );
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_before_its_turn_does_not_run() {
        let (_dir, writer) = start();
        let (release, busy) = hold(&writer).await;
        let make_table = writer.write(|c| {
            c.batch_execute("CREATE TABLE mark (n INTEGER)")?;
            Ok(())
        });
        let waited = tokio::time::timeout(Duration::from_millis(50), make_table).await;
        assert!(waited.is_err(), "queued behind the busy job, then given up");
        release.send(()).expect("release");
        busy.await.expect("busy job");
        let tables = writer
            .write(|c| {
                number(
                    c,
                    "SELECT count(*) AS n FROM sqlite_master WHERE name = 'mark'",
                )
            })
            .await
            .expect("count");
        assert_eq!(tables, 0, "the abandoned job did not run");
    }

    #[tokio::test]
    async fn jobs_waiting_together_commit_together_and_a_failing_one_fails_alone() {
        let (_dir, writer) = start_with_marks().await;
        let (release, busy) = hold(&writer).await;
        let before = writer.done();
        // Queued in this order while the writer is busy: one group.
        let first = writer.write(insert(1));
        let twice = writer.write(|c| {
            c.batch_execute("INSERT INTO mark VALUES (2)")?;
            c.batch_execute("INSERT INTO mark VALUES (1)")?;
            Ok(())
        });
        let last = writer.write(insert(3));
        drop(release);
        busy.await.expect("busy job");
        let (first, twice, last) = tokio::join!(first, twice, last);
        first.expect("the first job");
        assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
        last.expect("the job after the failing one");
        let (jobs, commits, _) = writer.done();
        assert_eq!(jobs - before.0, 4, "the busy job and the three");
        assert_eq!(
            commits - before.1,
            2,
            "the busy job's, and one for the three"
        );
        let rows = writer
            .write(|c| number(c, "SELECT sum(n) AS n FROM mark"))
            .await
            .expect("rows");
        assert_eq!(rows, 1 + 3, "the failing job's row 2 was undone with it");
    }

    #[tokio::test]
    async fn when_a_job_ends_the_transaction_no_job_of_its_group_is_written() {
        let (_dir, writer) = start_with_marks().await;
        let (release, busy) = hold(&writer).await;
        let before = writer.done();
        let first = writer.write(insert(1));
        // As SQLite does on a full disk or an I/O error.
        let ends_it = writer.write(|c| {
            c.batch_execute("ROLLBACK")?;
            Ok(())
        });
        let after = writer.write(insert(2));
        drop(release);
        busy.await.expect("busy job");
        let (first, ends_it, after) = tokio::join!(first, ends_it, after);
        assert!(first.is_err(), "its group did not commit: {first:?}");
        assert!(ends_it.is_err(), "{ends_it:?}");
        assert!(
            matches!(after, Err(StoreError::Unavailable(_))),
            "not run outside the group's transaction: {after:?}"
        );
        assert_eq!(writer.done().1 - before.1, 1, "only the busy job's commit");
        let rows = writer
            .write(|c| number(c, "SELECT count(*) AS n FROM mark"))
            .await
            .expect("the writer goes on, on a new connection");
        assert_eq!(rows, 0, "nothing of that group was written");
    }
}
