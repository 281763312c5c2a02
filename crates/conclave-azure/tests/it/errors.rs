//! Key Vault failures become the key-provider errors the server maps to 503: retries with backoff
//! for 5xx, `Retry-After` honoured on 429, bounded; timeouts and an unreachable vault are
//! `KeyUnavailable`; 401 is `KeyUnavailable`, 403 `KeyRevoked`.

use std::time::Duration;

use conclave_azure::standin::Fault;
use conclave_azure::{KeyVaultClient, KeyVaultKeyProvider};
use conclave_crypto::{Binding, CryptoError, Key, KeyProvider};
use uuid::Uuid;

use crate::support::{Env, KEK};

fn binding() -> Binding {
    Binding::tek(Uuid::from_u128(3))
}

async fn wrap(provider: &KeyVaultKeyProvider) -> Result<conclave_crypto::WrappedKey, CryptoError> {
    provider.wrap(Uuid::from_u128(3), &Key::generate(), &binding()).await
}

#[tokio::test]
async fn throttling_is_retried_after_the_time_the_vault_asks() {
    let env = Env::start().await;
    let provider = env.provider();
    env.standin.inject(Fault::status("/wrapkey", 429, 1).retry_after(1));
    wrap(&provider).await.unwrap();
    assert_eq!(env.standin.requests_matching("/wrapkey"), 2);
}

#[tokio::test]
async fn throttling_beyond_the_wait_budget_fails_at_once() {
    let env = Env::start().await;
    let provider = env.provider();
    env.standin.inject(Fault::status("/wrapkey", 429, 1).retry_after(3600));
    let err = wrap(&provider).await.unwrap_err();
    assert!(matches!(&err, CryptoError::KeyUnavailable(m) if m.contains("429")), "{err}");
    assert_eq!(env.standin.requests_matching("/wrapkey"), 1);
}

#[tokio::test]
async fn a_passing_server_error_is_retried() {
    let env = Env::start().await;
    let provider = env.provider();
    env.standin.inject(Fault::status("/wrapkey", 500, 1));
    wrap(&provider).await.unwrap();
    assert_eq!(env.standin.requests_matching("/wrapkey"), 2);
}

#[tokio::test]
async fn a_lasting_outage_is_key_unavailable_after_bounded_retries() {
    let env = Env::start().await;
    let provider = env.provider();
    env.standin.inject(Fault::status("/wrapkey", 503, 100));
    let err = wrap(&provider).await.unwrap_err();
    assert!(matches!(&err, CryptoError::KeyUnavailable(m) if m.contains("503")), "{err}");
    assert_eq!(env.standin.requests_matching("/wrapkey"), 3);
}

#[tokio::test]
async fn a_slow_vault_times_out_as_unavailable() {
    let env = Env::start().await;
    env.standin.create_rsa_key(KEK);
    let mut settings = env.settings();
    settings.timeout = Duration::from_millis(300);
    let provider = KeyVaultKeyProvider::new(KeyVaultClient::new(&settings, env.credential()).unwrap(), KEK).unwrap();
    env.standin.inject(Fault::slow("/wrapkey", Duration::from_secs(3), 3));
    let err = wrap(&provider).await.unwrap_err();
    assert!(matches!(&err, CryptoError::KeyUnavailable(m) if m.contains("timed out")), "{err}");
}

#[tokio::test]
async fn an_unreachable_vault_is_unavailable() {
    let env = Env::start().await;
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut settings = env.settings();
    settings.vault_url = format!("https://127.0.0.1:{port}").parse().unwrap();
    let provider = KeyVaultKeyProvider::new(KeyVaultClient::new(&settings, env.credential()).unwrap(), KEK).unwrap();
    assert!(matches!(wrap(&provider).await, Err(CryptoError::KeyUnavailable(_))));
    assert!(matches!(provider.check().await, Err(CryptoError::KeyUnavailable(_))));
}

#[tokio::test]
async fn unauthorised_is_unavailable_and_forbidden_is_revoked() {
    let env = Env::start().await;
    let provider = env.provider();
    env.standin.inject(Fault::status("/wrapkey", 401, 1));
    let err = wrap(&provider).await.unwrap_err();
    assert!(matches!(&err, CryptoError::KeyUnavailable(m) if m.contains("401")), "{err}");
    env.standin.inject(Fault::status("/wrapkey", 403, 1));
    assert!(matches!(wrap(&provider).await, Err(CryptoError::KeyRevoked { .. })));
    wrap(&provider).await.unwrap();
}

#[tokio::test]
async fn the_client_refuses_a_server_its_ca_file_does_not_vouch_for() {
    let env = Env::start().await;
    env.standin.create_rsa_key(KEK);
    let mut settings = env.settings();
    settings.ca_file = None; // only the public roots: the stand-in's private CA is not trusted
    let provider = KeyVaultKeyProvider::new(KeyVaultClient::new(&settings, env.credential()).unwrap(), KEK).unwrap();
    let err = wrap(&provider).await.unwrap_err();
    assert!(matches!(&err, CryptoError::KeyUnavailable(m) if m.to_lowercase().contains("certificate")), "{err}");
}
