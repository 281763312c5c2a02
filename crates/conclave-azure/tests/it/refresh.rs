//! The token refresher hands each new token on (the PostgreSQL password, the Redis AUTH token)
//! when the credential's cache renews it before expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_azure::refresh::spawn_token_refresher;
use conclave_azure::{TokenCache, TokenCredential, POSTGRES_SCOPE};
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::support::Env;

#[tokio::test]
async fn a_renewed_token_is_applied_and_is_for_the_database() {
    let env = Env::start().await;
    let now = Arc::new(Mutex::new(OffsetDateTime::now_utc()));
    let read = now.clone();
    let cache: Arc<dyn TokenCredential> = Arc::new(
        TokenCache::new(env.client_secret_config().build_uncached().unwrap())
            .with_clock(Arc::new(move || *read.lock().unwrap())),
    );
    let first = cache.token(POSTGRES_SCOPE).await.unwrap().token.expose_secret().to_owned();
    assert!(env.standin.token_valid_for(&first, "https://ossrdbms-aad.database.windows.net"));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = spawn_token_refresher(cache, POSTGRES_SCOPE, first.clone(), Duration::from_millis(10), move |t| {
        let _ = tx.send(t.to_owned());
    });
    // Nothing to apply until the cache renews: move its clock past the refresh point.
    *now.lock().unwrap() += time::Duration::minutes(56);
    let applied = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    task.abort();
    assert_ne!(applied, first);
    assert!(env.standin.token_valid_for(&applied, "https://ossrdbms-aad.database.windows.net"));
    assert_eq!(env.standin.token_requests(), 2);
}
