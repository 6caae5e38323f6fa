//! Whether the database can be written, and this process's heartbeat.
//!
//! A database whose disk is full still answers reads (and `SELECT 1`), so a
//! ping alone would call it ready while every write fails. The store notes a
//! write that failed for want of space ([`WriteHealth::note`]); from then on
//! readiness ([`Store::check`]) also needs a write to succeed: the heartbeat,
//! an upsert of this replica's row in `service_replicas`. When space returns
//! the heartbeat succeeds and the service is ready again by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use diesel::ExpressionMethods as _;
use futures_util::FutureExt as _;
use uuid::Uuid;

use super::schema::service_replicas;
use super::types::{SqlTime, SqlUuid, now};
use super::{Store, StoreError};

/// Messages with which the backends report a full disk: SQLite's
/// `SQLITE_FULL`, PostgreSQL's class 53 (`disk_full`: a file that cannot be
/// extended or written) and the OS's `ENOSPC`.
const FULL_MARKERS: [&str; 5] = [
    "database or disk is full",
    "No space left on device",
    "could not extend file",
    "could not write to file",
    "disk quota exceeded",
];

/// Whether `msg` says the disk is full.
pub fn is_disk_full(msg: &str) -> bool {
    FULL_MARKERS.iter().any(|m| msg.contains(m))
}

/// This process's view of whether writes succeed; shared by the store's clones.
#[derive(Debug)]
pub struct WriteHealth {
    /// This process, as a row of `service_replicas`.
    replica: Uuid,
    started_at: chrono::DateTime<chrono::Utc>,
    /// A write failed for want of space and no heartbeat has succeeded since.
    failing: AtomicBool,
}

impl WriteHealth {
    pub fn new() -> Arc<WriteHealth> {
        Arc::new(WriteHealth {
            replica: Uuid::now_v7(),
            started_at: now(),
            failing: AtomicBool::new(false),
        })
    }

    /// Takes note of an operation's outcome: a full disk marks writes failing.
    pub fn note<T>(&self, result: &Result<T, StoreError>) {
        if let Err(StoreError::Unavailable(msg)) = result
            && is_disk_full(msg)
            && !self.failing.swap(true, Ordering::Relaxed)
        {
            tracing::error!(error = %msg, "the database's disk is full: writes fail, not ready");
        }
    }

    /// Whether a write failed for want of space and none has succeeded since.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

impl Store {
    /// This process's id among the replicas sharing the database.
    pub fn replica_id(&self) -> Uuid {
        self.health.replica
    }

    /// Takes note of a write done outside [`Store::run`] (SQLite's writer).
    pub fn note_write<T>(&self, result: &Result<T, StoreError>) {
        self.health.note(result);
    }

    /// Whether a write failed for want of disk space and none has succeeded since.
    pub fn writes_failing(&self) -> bool {
        self.health.failing()
    }

    /// Whether the database can be used: it answers and, after a write failed
    /// for want of disk space, the heartbeat (a write) succeeds again.
    pub async fn check(&self) -> Result<(), StoreError> {
        self.ping().await?;
        if self.health.failing() {
            self.heartbeat().await?;
            if self.health.failing.swap(false, Ordering::Relaxed) {
                tracing::info!("the database accepts writes again: ready");
            }
        }
        Ok(())
    }

    /// Writes this replica's row (`seen_at` now).
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        let (replica, started_at) = (self.health.replica, self.health.started_at);
        self.run(move |conn| {
            async move {
                let at = now();
                crate::write_tx!(&mut *conn, |c| {
                    use diesel_async::RunQueryDsl as _;
                    diesel::insert_into(service_replicas::table)
                        .values((
                            service_replicas::id.eq(SqlUuid(replica)),
                            service_replicas::started_at.eq(SqlTime(started_at)),
                            service_replicas::seen_at.eq(SqlTime(at)),
                        ))
                        .on_conflict(service_replicas::id)
                        .do_update()
                        .set(service_replicas::seen_at.eq(SqlTime(at)))
                        .execute(c)
                        .await?;
                    Ok(())
                })
            }
            .boxed()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disks_are_told_apart_from_other_failures() {
        assert!(is_disk_full("database or disk is full"));
        assert!(is_disk_full(
            "could not extend file \"base/16384/2619\": No space left on device"
        ));
        assert!(!is_disk_full("database is locked"));
        let health = WriteHealth::new();
        health.note::<()>(&Err(StoreError::Unavailable("database is locked".into())));
        assert!(!health.failing(), "a lock is not a full disk");
        health.note::<()>(&Err(StoreError::Unavailable(
            "database or disk is full".into(),
        )));
        assert!(health.failing());
    }
}
