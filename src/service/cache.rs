//! What every turn reads but an administrator rarely changes (a
//! repository's policies and provider configurations, the budgets over a
//! workspace), kept in memory for a short while so that a turn does not
//! read it again.
//!
//! A change made through this process clears the cache at once (its
//! generation moves on, and a read that began before the change is not
//! kept); one made through another replica or the command line is seen
//! within the time to live.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long what is read is trusted without reading it again.
pub const READ_TTL: Duration = Duration::from_secs(5);

/// Values by key, each for [`READ_TTL`] at most.
pub struct ReadCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V> {
    /// Each value, when it was read, and the generation then.
    entries: Mutex<HashMap<K, (Instant, u64, V)>>,
    generation: AtomicU64,
    ttl: Duration,
}

impl<K, V> Clone for ReadCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> Default for ReadCache<K, V> {
    fn default() -> Self {
        Self::new(READ_TTL)
    }
}

impl<K, V> ReadCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                ttl,
            }),
        }
    }

    /// Something cached changed: nothing cached is trusted any more.
    pub fn changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.entries().clear();
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, u64, V)>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    /// The value of `key`, read with `load` unless cached (a failed read is
    /// not kept).
    pub async fn get_or_load<F, Fut, E>(&self, key: K, load: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let ttl = self.inner.ttl;
        let generation = self.inner.generation.load(Ordering::SeqCst);
        if let Some((at, g, value)) = self.entries().get(&key)
            && *g == generation
            && at.elapsed() < ttl
        {
            return Ok(value.clone());
        }
        let value = load().await?;
        let mut entries = self.entries();
        entries.retain(|_, (at, _, _)| at.elapsed() < ttl);
        // A change during the read leaves it uncached.
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            entries.insert(key, (Instant::now(), generation, value.clone()));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kept_until_changed_or_stale() {
        let cache = ReadCache::<u8, u32>::new(Duration::from_millis(50));
        let read = |v: u32| async move { Ok::<_, ()>(v) };
        assert_eq!(cache.get_or_load(1, || read(10)).await, Ok(10));
        // Cached: the second read is not made.
        assert_eq!(cache.get_or_load(1, || read(11)).await, Ok(10));
        assert_eq!(cache.get_or_load(2, || read(20)).await, Ok(20));
        cache.changed();
        assert_eq!(cache.get_or_load(1, || read(12)).await, Ok(12));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get_or_load(1, || read(13)).await, Ok(13));
        // A failed read is not kept.
        assert_eq!(cache.get_or_load(3, || async { Err(()) }).await, Err(()));
        assert_eq!(cache.get_or_load(3, || read(30)).await, Ok(30));
    }

    #[tokio::test]
    async fn a_read_overtaken_by_a_change_is_not_kept() {
        let cache = ReadCache::<u8, u32>::default();
        let during = cache.clone();
        let stale = cache
            .get_or_load(1, || async move {
                during.changed();
                Ok::<_, ()>(1)
            })
            .await;
        assert_eq!(stale, Ok(1));
        assert_eq!(
            cache.get_or_load(1, || async { Ok::<_, ()>(2) }).await,
            Ok(2)
        );
    }
}
