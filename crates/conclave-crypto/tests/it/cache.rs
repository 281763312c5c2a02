//! KeyCache: entries live for their TTL and no longer, so a revoked KEK locks data within it.

use std::sync::Arc;
use std::time::Duration;

use conclave_crypto::{Binding, CryptoError, Key, KeyCache, KeyProvider, LocalKeyProvider};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn revoking_the_kek_locks_data_once_the_ttl_passes() {
    let provider = LocalKeyProvider::ephemeral();
    let cache = KeyCache::new(TTL, 100);
    let tenant = Uuid::now_v7();
    let binding = Binding::cek(tenant, Uuid::now_v7());
    let cek = Key::generate();
    let wrapped = provider.wrap(tenant, &cek, &binding).await.unwrap();

    let first = cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
    assert_eq!(first.expose_secret(), cek.expose_secret());
    provider.disable(tenant).await.unwrap();

    // Still served from the cache inside the TTL...
    tokio::time::advance(TTL - Duration::from_secs(1)).await;
    assert!(cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.is_ok());
    // ...and locked once it has passed.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(cache.get(tenant, &wrapped, &binding).is_none());
    assert!(matches!(
        cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await,
        Err(CryptoError::KeyRevoked { .. })
    ));
    // Errors are not cached: enabling the key again works at once.
    provider.enable(tenant).await.unwrap();
    assert!(cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn entries_are_keyed_by_binding_and_wrapped_bytes() {
    let provider = LocalKeyProvider::ephemeral();
    let cache = KeyCache::new(TTL, 100);
    let tenant = Uuid::now_v7();
    let (a, b) = (Binding::cek(tenant, Uuid::now_v7()), Binding::cek(tenant, Uuid::now_v7()));
    let wrapped = provider.wrap(tenant, &Key::generate(), &a).await.unwrap();
    cache.get_or_unwrap(&provider, tenant, &wrapped, &a).await.unwrap();
    // The same wrapped bytes presented for another conversation are not a cache hit: the provider
    // is asked, and the binding check fails.
    assert!(cache.get(tenant, &wrapped, &b).is_none());
    assert!(matches!(cache.get_or_unwrap(&provider, tenant, &wrapped, &b).await, Err(CryptoError::Integrity)));
    assert!(cache.get(Uuid::now_v7(), &wrapped, &a).is_none());
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn purge_invalidate_and_capacity() {
    let provider = LocalKeyProvider::ephemeral();
    let cache = KeyCache::new(TTL, 3);
    let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
    let mut entries = Vec::new();
    for tenant in [t1, t1, t2] {
        let binding = Binding::cek(tenant, Uuid::now_v7());
        let wrapped = provider.wrap(tenant, &Key::generate(), &binding).await.unwrap();
        cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
        entries.push((tenant, wrapped, binding));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(cache.len(), 3);

    // Full: a fourth entry evicts the one closest to expiry (the first).
    let binding = Binding::cek(t2, Uuid::now_v7());
    let wrapped = provider.wrap(t2, &Key::generate(), &binding).await.unwrap();
    cache.get_or_unwrap(&provider, t2, &wrapped, &binding).await.unwrap();
    assert_eq!(cache.len(), 3);
    let (tenant, w, b) = &entries[0];
    assert!(cache.get(*tenant, w, b).is_none());

    cache.invalidate_tenant(t2);
    assert_eq!(cache.len(), 1);
    tokio::time::advance(TTL).await;
    assert_eq!(cache.purge_expired(), 1);
    assert!(cache.is_empty());
}

#[tokio::test(start_paused = true)]
async fn zero_ttl_disables_caching_and_evicted_keys_are_released() {
    let provider = LocalKeyProvider::ephemeral();
    let tenant = Uuid::now_v7();
    let binding = Binding::tek(tenant);
    let wrapped = provider.wrap(tenant, &Key::generate(), &binding).await.unwrap();

    let off = KeyCache::new(Duration::ZERO, 100);
    off.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
    assert!(off.is_empty());

    // After eviction the cache holds no reference: the caller's Arc is the last one, and the key
    // is zeroized when it drops.
    let cache = KeyCache::new(TTL, 100);
    let key = cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
    assert_eq!(Arc::strong_count(&key), 2);
    cache.clear();
    assert_eq!(Arc::strong_count(&key), 1);
}

#[tokio::test(start_paused = true)]
async fn purger_task_removes_expired_entries_and_stops_with_the_cache() {
    let provider = LocalKeyProvider::ephemeral();
    let tenant = Uuid::now_v7();
    let binding = Binding::tek(tenant);
    let wrapped = provider.wrap(tenant, &Key::generate(), &binding).await.unwrap();
    let cache = Arc::new(KeyCache::new(TTL, 100));
    let task = cache.spawn_purger(Duration::from_secs(10));
    cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
    tokio::time::sleep(TTL + Duration::from_secs(11)).await;
    assert!(cache.is_empty());
    drop(cache);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(task.is_finished());
}
