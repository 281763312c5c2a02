//! [`KeyCache`]: unwrapped LEKs, CEKs and TEKs kept in memory for a short, configured time, so
//! that revoking the customer's KEK locks the data within that time (the kill switch) while a
//! busy conversation does not call the KMS on every message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use uuid::Uuid;

use crate::binding::Binding;
use crate::error::Result;
use crate::key::Key;
use crate::provider::KeyProvider;
use crate::wrapped::WrappedKey;

/// A cache of unwrapped keys, keyed by tenant and a SHA-256 digest of the binding and the wrapped
/// key's bytes (so a rewrapped key, or the same wrapped bytes presented for another row, is a
/// different entry).
///
/// An entry is served until its TTL runs out, never after. Evicting an entry drops the cache's
/// reference: the key is zeroized when the last `Arc` to it goes, which for a caller that holds
/// keys only for the request at hand is at once. Expired entries are removed on every insert,
/// by [`purge_expired`](Self::purge_expired), and by the task [`spawn_purger`](Self::spawn_purger)
/// starts. A TTL of zero turns caching off.
pub struct KeyCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    tenant: Uuid,
    digest: [u8; 32],
}

struct Entry {
    key: Arc<Key>,
    expires: Instant,
}

impl KeyCache {
    /// A cache whose entries live `ttl` and that holds at most `capacity` keys.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cached key for this wrapped key and binding, if present and not expired.
    pub fn get(&self, tenant: Uuid, wrapped: &WrappedKey, binding: &Binding) -> Option<Arc<Key>> {
        let id = cache_key(tenant, wrapped, binding);
        let mut entries = self.lock();
        match entries.get(&id) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.key.clone()),
            Some(_) => {
                entries.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Caches an unwrapped key and returns it shared.
    pub fn insert(&self, tenant: Uuid, wrapped: &WrappedKey, binding: &Binding, key: Key) -> Arc<Key> {
        let key = Arc::new(key);
        if self.ttl.is_zero() || self.capacity == 0 {
            return key;
        }
        let id = cache_key(tenant, wrapped, binding);
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, e| e.expires > now);
        if entries.len() >= self.capacity && !entries.contains_key(&id) {
            // Full of live entries: drop the one closest to expiry.
            if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k) {
                entries.remove(&oldest);
            }
        }
        entries.insert(id, Entry { key: key.clone(), expires: now + self.ttl });
        key
    }

    /// The cached key, or the provider's answer (cached on success). Errors are never cached.
    pub async fn get_or_unwrap(
        &self,
        provider: &dyn KeyProvider,
        tenant: Uuid,
        wrapped: &WrappedKey,
        binding: &Binding,
    ) -> Result<Arc<Key>> {
        if let Some(key) = self.get(tenant, wrapped, binding) {
            return Ok(key);
        }
        let key = provider.unwrap(tenant, wrapped, binding).await?;
        Ok(self.insert(tenant, wrapped, binding, key))
    }

    /// Drops every entry of one tenant (after a rotation, a retirement, a revocation).
    pub fn invalidate_tenant(&self, tenant: Uuid) {
        self.lock().retain(|k, _| k.tenant != tenant);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Drops expired entries; returns how many.
    pub fn purge_expired(&self) -> usize {
        let now = Instant::now();
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.expires > now);
        before - entries.len()
    }

    /// Entries held, expired or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a task that purges expired entries every `every`, so expired keys leave memory
    /// even when the cache is idle. The task ends when the cache is dropped.
    pub fn spawn_purger(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let cache: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match cache.upgrade() {
                    Some(cache) => {
                        cache.purge_expired();
                    }
                    None => return,
                }
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("ttl", &self.ttl).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

fn cache_key(tenant: Uuid, wrapped: &WrappedKey, binding: &Binding) -> CacheKey {
    // The binding encoding is prefix-free, so binding ‖ wrapped is unambiguous.
    let mut hasher = Sha256::new();
    hasher.update(binding.to_bytes());
    hasher.update(wrapped.to_bytes());
    CacheKey { tenant, digest: hasher.finalize().into() }
}
