//! The contexts of the conversations this process prompted lately: their
//! latest messages, kept so that a turn does not read them again.
//!
//! A context is kept at its conversation's [`Version`] (what every turn
//! changes: the last update and the token totals) and served only to a
//! prompt that read the conversation at that very version, so a turn stored
//! by another replica (which moves the version on) is never missed: the
//! context is read again. A turn stored here extends the context it follows
//! (its first message numbered right after the context's last) to the
//! version that turn left; any other turn drops it. The contexts kept are
//! bounded in size: the least recently used go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use crate::provider::ChatMessage;
use crate::store::messages::Version;

/// The most bytes of message text kept (each text and its escaped copy), in
/// all.
const MAX_BYTES: usize = 32 << 20;

/// What a message is counted as besides its text (its allocations).
const MESSAGE_OVERHEAD: usize = 64;

/// The kept contexts of conversations, each its latest `limit` messages.
#[derive(Clone)]
pub struct ContextCache {
    inner: Arc<Mutex<Contexts>>,
}

struct Contexts {
    entries: HashMap<Uuid, Context>,
    limit: usize,
    max_bytes: usize,
    bytes: usize,
    /// Counts uses, to find the least recently used.
    clock: u64,
}

struct Context {
    version: Version,
    /// The number (`seq`) of the last message kept.
    last_seq: i64,
    messages: VecDeque<ChatMessage>,
    bytes: usize,
    used: u64,
}

fn size(m: &ChatMessage) -> usize {
    m.content.footprint() + MESSAGE_OVERHEAD
}

impl ContextCache {
    /// Keeps up to `limit` messages per conversation.
    pub fn new(limit: usize) -> Self {
        Self::with_max_bytes(limit, MAX_BYTES)
    }

    fn with_max_bytes(limit: usize, max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Contexts {
                entries: HashMap::new(),
                limit,
                max_bytes,
                bytes: 0,
                clock: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Contexts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The context of conversation `id` at `version`, oldest first, if kept.
    pub fn get(&self, id: Uuid, version: Version) -> Option<Vec<ChatMessage>> {
        let mut all = self.lock();
        all.clock += 1;
        let clock = all.clock;
        let context = all.entries.get_mut(&id)?;
        if context.version != version {
            return None;
        }
        context.used = clock;
        Some(context.messages.iter().cloned().collect())
    }

    /// A context read from the store (`seq`-numbered, oldest first) after
    /// the conversation was read at `version`.
    pub fn put(&self, id: Uuid, version: Version, messages: &[(i64, ChatMessage)]) {
        let mut all = self.lock();
        all.remove(id);
        let last_seq = messages.last().map_or(0, |(seq, _)| *seq);
        let start = messages.len().saturating_sub(all.limit);
        let messages: VecDeque<ChatMessage> =
            messages[start..].iter().map(|(_, m)| m.clone()).collect();
        let bytes = messages.iter().map(size).sum();
        all.clock += 1;
        let used = all.clock;
        all.bytes += bytes;
        all.entries.insert(
            id,
            Context {
                version,
                last_seq,
                messages,
                bytes,
                used,
            },
        );
        all.evict();
    }

    /// A turn of conversation `id` was stored: its messages, the first
    /// numbered `seq`, extend the context kept up to the number before, now
    /// at `version`; a context kept at another point is dropped.
    pub fn stored(&self, id: Uuid, seq: i64, version: Version, turn: [ChatMessage; 2]) {
        let mut all = self.lock();
        let limit = all.limit;
        let Some(context) = all.entries.get_mut(&id) else {
            return;
        };
        if context.last_seq != seq - 1 {
            all.remove(id);
            return;
        }
        let mut delta = 0isize;
        for m in turn {
            delta += size(&m) as isize;
            context.messages.push_back(m);
        }
        while context.messages.len() > limit {
            if let Some(m) = context.messages.pop_front() {
                delta -= size(&m) as isize;
            }
        }
        context.last_seq = seq + 1;
        context.version = version;
        context.bytes = context.bytes.saturating_add_signed(delta);
        all.bytes = all.bytes.saturating_add_signed(delta);
        all.evict();
    }
}

impl Contexts {
    fn remove(&mut self, id: Uuid) {
        if let Some(old) = self.entries.remove(&id) {
            self.bytes -= old.bytes;
        }
    }

    /// Over the bound: the least recently used go until a quarter is free.
    fn evict(&mut self) {
        if self.bytes <= self.max_bytes {
            return;
        }
        let mut by_use: Vec<(u64, Uuid)> =
            self.entries.iter().map(|(id, c)| (c.used, *id)).collect();
        by_use.sort_unstable();
        for (_, id) in by_use {
            if self.bytes <= self.max_bytes / 4 * 3 {
                break;
            }
            self.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn message(content: &str) -> ChatMessage {
        ChatMessage {
            role: "user",
            content: content.into(),
        }
    }

    fn version(tokens_in: i64) -> Version {
        Version {
            at: DateTime::<Utc>::UNIX_EPOCH,
            tokens_in,
            tokens_out: 0,
        }
    }

    fn contents(messages: &[ChatMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn served_at_its_version_only() {
        let cache = ContextCache::new(3);
        let id = Uuid::now_v7();
        assert!(cache.get(id, version(1)).is_none());
        let read: Vec<_> = (1..=4).map(|i| (i, message(&format!("m{i}")))).collect();
        cache.put(id, version(1), &read);
        // The latest `limit`, oldest first.
        let kept = cache.get(id, version(1)).expect("kept");
        assert_eq!(contents(&kept), ["m2", "m3", "m4"]);
        // Another replica's turn moved the version on.
        assert!(cache.get(id, version(2)).is_none());
    }

    #[test]
    fn a_turn_extends_the_context_it_follows() {
        let cache = ContextCache::new(3);
        let id = Uuid::now_v7();
        cache.put(id, version(1), &[(1, message("m1")), (2, message("m2"))]);
        cache.stored(id, 3, version(2), [message("m3"), message("m4")]);
        assert!(cache.get(id, version(1)).is_none());
        let kept = cache.get(id, version(2)).expect("extended");
        assert_eq!(contents(&kept), ["m2", "m3", "m4"]);
        // A turn that does not follow (another's came between) drops it.
        cache.stored(id, 7, version(3), [message("m7"), message("m8")]);
        assert!(cache.get(id, version(3)).is_none());
        assert!(cache.get(id, version(2)).is_none());
    }

    #[test]
    fn bounded_by_size_least_recently_used_first() {
        let one = size(&message("m")) * 2;
        let cache = ContextCache::with_max_bytes(10, one * 3);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            cache.put(*id, version(1), &[(1, message("m")), (2, message("m"))]);
        }
        // The first is used again: the second is the least recently used.
        assert!(cache.get(ids[0], version(1)).is_some());
        let fourth = Uuid::now_v7();
        cache.put(fourth, version(1), &[(1, message("m")), (2, message("m"))]);
        assert!(cache.get(ids[1], version(1)).is_none());
        assert!(cache.get(ids[0], version(1)).is_some());
        assert!(cache.get(fourth, version(1)).is_some());
        assert!(cache.lock().bytes <= one * 3);
    }
}
