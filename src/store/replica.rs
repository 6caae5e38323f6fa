//! Reads from a PostgreSQL streaming replica (`--database-read-url`), with
//! each caller reading their own writes.
//!
//! Lists, gets, messages, statistics and the feed ([`Store::read`]) go to
//! the replica when three things hold, else to the primary:
//!
//! - the request has a caller (its credential, [`CALLER`], set by both
//!   transports around each request); work outside a request reads the
//!   primary;
//! - the replica is up and not lagging past `--database-read-max-lag`: a
//!   watcher samples the primary's WAL position and the replica's replayed
//!   position every [`WATCH_INTERVAL`]; the lag is how long ago the primary
//!   was last at a position the replica has now replayed;
//! - the caller has no write the replica has not replayed: a request that may
//!   write ([`begin_write`]) marks its caller as reading the primary until
//!   the request's reply has gone out, then records the primary's WAL
//!   position, which the replica must replay past before that caller reads
//!   it again.
//!
//! The record of callers' writes is this process's: behind a load balancer,
//! route each credential to one replica (HAProxy `balance hdr(authorization)`,
//! as `deploy/haproxy.cfg` does) so that a caller's next read meets the
//! process that saw its write.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;

use super::{Conn, Store, StoreError};

/// How often the replica's position is compared with the primary's.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a write's mark is kept at most (a caller that never reads again).
const MARK_TTL: Duration = Duration::from_secs(600);

tokio::task_local! {
    /// Who the request being served is: a key of its credential.
    pub static CALLER: u64;
}

/// The key of a credential (the `authorization` header), for this process.
pub fn caller_key(authorization: &[u8]) -> u64 {
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let mut h = KEYS.get_or_init(std::hash::RandomState::new).build_hasher();
    h.write(authorization);
    h.finish()
}

/// A write's WAL position not yet known (its request is still running).
const PENDING: u64 = u64::MAX;

/// The replica, its pool, and what is known of its position.
pub struct ReadReplica {
    pool: Pool<AsyncPgConnection>,
    max_lag: Duration,
    /// The replica is up and within `max_lag`.
    usable: AtomicBool,
    /// The WAL position the replica has replayed.
    replayed: AtomicU64,
    /// Callers' last writes: their WAL position (or [`PENDING`]) and when.
    writes: std::sync::Mutex<HashMap<u64, (u64, Instant)>>,
    /// Reads served by the replica, and by the primary instead.
    on_replica: AtomicU64,
    on_primary: AtomicU64,
}

impl ReadReplica {
    pub(super) fn new(pool: Pool<AsyncPgConnection>, max_lag: Duration) -> ReadReplica {
        ReadReplica {
            pool,
            max_lag,
            usable: AtomicBool::new(false),
            replayed: AtomicU64::new(0),
            writes: std::sync::Mutex::new(HashMap::new()),
            on_replica: AtomicU64::new(0),
            on_primary: AtomicU64::new(0),
        }
    }

    /// Reads served by the replica and by the primary, and whether the
    /// replica is usable now (for metrics).
    pub fn counts(&self) -> (u64, u64, bool) {
        (
            self.on_replica.load(Ordering::Relaxed),
            self.on_primary.load(Ordering::Relaxed),
            self.usable.load(Ordering::Relaxed),
        )
    }

    /// Whether the current request's caller may read from the replica now.
    fn serves_current_caller(&self) -> bool {
        let Ok(caller) = CALLER.try_with(|c| *c) else {
            return false;
        };
        if !self.usable.load(Ordering::Relaxed) {
            return false;
        }
        let replayed = self.replayed.load(Ordering::Relaxed);
        match self.writes.lock().expect("writes lock").get(&caller) {
            Some(&(position, _)) => position <= replayed,
            None => true,
        }
    }

    fn mark(&self, caller: u64, position: u64) {
        let mut writes = self.writes.lock().expect("writes lock");
        writes.insert(caller, (position, Instant::now()));
    }

    /// Forgets the writes the replica has replayed (and very old marks).
    fn forget_replayed(&self, replayed: u64) {
        let mut writes = self.writes.lock().expect("writes lock");
        writes.retain(|_, (position, at)| *position > replayed && at.elapsed() < MARK_TTL);
    }
}

/// Marks the current request's caller as writing: until the returned guard
/// is dropped (the reply has gone out), and then until the replica has
/// replayed the primary's position of that moment, the caller reads the
/// primary. Without a replica, or a caller, it does nothing.
pub fn begin_write(store: &Store, caller: Option<u64>) -> Option<WriteGuard> {
    let replica = store.replica.clone()?;
    let caller = caller?;
    replica.mark(caller, PENDING);
    Some(WriteGuard {
        store: store.clone(),
        caller,
    })
}

/// See [`begin_write`].
pub struct WriteGuard {
    store: Store,
    caller: u64,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let (store, caller) = (self.store.clone(), self.caller);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let Some(replica) = store.replica.clone() else {
                return;
            };
            // Unknown (the primary does not answer): the mark stays pending
            // and the caller reads the primary until it expires.
            if let Ok(position) = store.primary_position().await {
                replica.mark(caller, position);
            }
        });
    }
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    position: Option<i64>,
}

const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0')::bigint AS position";
/// NULL on a server that is not a standby: then it is the primary itself.
const REPLAYED_POSITION: &str = "SELECT CASE WHEN pg_is_in_recovery() \
     THEN (pg_last_wal_replay_lsn() - '0/0')::bigint END AS position";

impl Store {
    /// The read replica, if one is configured.
    pub fn read_replica(&self) -> Option<&ReadReplica> {
        self.replica.as_deref()
    }

    /// Runs a read-only `op` on the replica when the current caller may read
    /// there (see the module), else as [`Store::run`] does on the primary.
    pub async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut Conn,
            )
                -> futures_util::future::BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        if let Some(replica) = &self.replica
            && replica.serves_current_caller()
        {
            // A replica that cannot give a connection now is skipped.
            if let Ok(conn) = replica.pool.get().await {
                replica.on_replica.fetch_add(1, Ordering::Relaxed);
                return tokio::spawn(async move {
                    let mut conn = Conn::Pg(conn);
                    let result = op(&mut conn).await;
                    if let Err(StoreError::Unavailable(_)) = &result {
                        conn.discard();
                    }
                    result
                })
                .await
                .unwrap_or_else(|e| Err(StoreError::Internal(format!("store task failed: {e}"))));
            }
        }
        if let Some(replica) = &self.replica {
            replica.on_primary.fetch_add(1, Ordering::Relaxed);
        }
        self.run(op).await
    }

    /// The primary's current WAL position.
    async fn primary_position(&self) -> Result<u64, StoreError> {
        self.run(|conn| {
            async move {
                use diesel_async::RunQueryDsl as _;
                let Conn::Pg(c) = conn else {
                    return Ok(0);
                };
                let p: Position = diesel::sql_query(PRIMARY_POSITION)
                    .get_result(&mut **c)
                    .await?;
                Ok(p.position.unwrap_or(0) as u64)
            }
            .boxed()
        })
        .await
    }

    /// Watches the replica until `stop`: its replayed position, whether it is
    /// up and within the lag allowed.
    pub async fn watch_replica(self, stop: CancellationToken) {
        let Some(replica) = self.replica.clone() else {
            return;
        };
        // The primary's positions lately, oldest first, with when they were seen.
        let mut seen: VecDeque<(Instant, u64)> = VecDeque::new();
        // Since when the replica has not been at the primary's position.
        let mut fresh_at = Instant::now();
        loop {
            let (primary, replayed) = tokio::join!(self.primary_position(), async {
                use diesel_async::RunQueryDsl as _;
                let mut c = replica.pool.get().await.map_err(StoreError::from)?;
                let p: Result<Position, _> = diesel::sql_query(REPLAYED_POSITION)
                    .get_result(&mut *c)
                    .await;
                if p.is_err() {
                    Conn::Pg(c).discard();
                }
                Ok::<_, StoreError>(p?.position)
            });
            let now = Instant::now();
            let usable = match (primary, replayed) {
                (Ok(primary), Ok(replayed)) => {
                    // Not a standby: reads there see every write.
                    let replayed = replayed.map_or(u64::MAX, |r| r as u64);
                    seen.push_back((now, primary));
                    while let Some(&(at, position)) = seen.front() {
                        if position > replayed {
                            break;
                        }
                        fresh_at = at;
                        seen.pop_front();
                    }
                    if seen.is_empty() {
                        fresh_at = now;
                    }
                    replica.replayed.store(replayed, Ordering::Relaxed);
                    replica.forget_replayed(replayed);
                    now.duration_since(fresh_at) <= replica.max_lag
                }
                _ => false,
            };
            if replica.usable.swap(usable, Ordering::Relaxed) != usable {
                if usable {
                    tracing::info!("the read replica is up to date: reads go there");
                } else {
                    tracing::warn!(
                        max_lag = ?replica.max_lag,
                        "the read replica is down or lagging: reads go to the primary"
                    );
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }
}

/// A response body that holds `guard` until it is done (sent or dropped).
pub struct Guarded<B> {
    pub body: B,
    pub guard: Option<WriteGuard>,
}

impl<B> http_body::Body for Guarded<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
