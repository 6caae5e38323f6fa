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
mod tests;
