//! Revocation with the unwrapped-key cache: disabling the key in the vault locks the data once
//! the cache entry's TTL has run out, and enabling it again opens the data (nothing is lost).

use std::time::Duration;

use conclave_crypto::{Binding, CryptoError, Key, KeyCache, KeyProvider};
use uuid::Uuid;

use crate::support::{Env, KEK};

#[tokio::test]
async fn revoking_the_key_locks_data_when_the_cache_ttl_runs_out() {
    let env = Env::start().await;
    let provider = env.provider();
    let tenant = Uuid::from_u128(4);
    let binding = Binding::cek(tenant, Uuid::from_u128(40));
    let key = Key::generate();
    let wrapped = provider.wrap(tenant, &key, &binding).await.unwrap();
    let ttl = Duration::from_secs(60);
    let cache = KeyCache::new(ttl, 100);

    cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
    env.standin.set_enabled(KEK, None, false);
    // Within the TTL the cached key still serves (the documented window)...
    assert!(cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.is_ok());
    assert_eq!(env.standin.requests_matching("/unwrapkey"), 1);

    // ...and once it has run out, the vault is asked and refuses. (Tokio's clock is moved
    // instead of waiting; no request is in flight meanwhile.)
    tokio::time::pause();
    tokio::time::advance(ttl + Duration::from_millis(1)).await;
    tokio::time::resume();
    assert!(matches!(
        cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await,
        Err(CryptoError::KeyRevoked { .. })
    ));

    env.standin.set_enabled(KEK, None, true);
    let back = cache.get_or_unwrap(&provider, tenant, &wrapped, &binding).await.unwrap();
    assert_eq!(back.expose_secret(), key.expose_secret());
}
