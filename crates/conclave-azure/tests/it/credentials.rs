//! Each credential flow against the stand-in's token endpoints, the per-scope cache and its
//! refresh before expiry, and tokens for the wrong audience refused by the vault.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use conclave_azure::standin::{Fault, VAULT_AUDIENCE};
use conclave_azure::{AccessToken, AzureError, TokenCache, TokenCredential, KEY_VAULT_SCOPE, STORAGE_SCOPE};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::support::{Env, CLIENT, TENANT};

async fn vault_token(credential: &dyn TokenCredential) -> String {
    credential.token(KEY_VAULT_SCOPE).await.unwrap().token.expose_secret().to_owned()
}

#[tokio::test]
async fn client_secret_gets_a_vault_token() {
    let env = Env::start().await;
    let token = vault_token(env.credential().as_ref()).await;
    assert!(env.standin.token_valid_for(&token, VAULT_AUDIENCE));
    assert_eq!(env.standin.requests_matching(&format!("POST /{TENANT}/oauth2/v2.0/token")), 1);
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused() {
    let env = Env::start().await;
    let url = env.standin.url();
    let config = env.config(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", CLIENT),
        ("AZURE_CLIENT_SECRET", "wrong"),
        ("AZURE_AUTHORITY_HOST", &url),
    ]);
    let err = config.build().unwrap().token(KEY_VAULT_SCOPE).await.unwrap_err();
    assert!(matches!(&err, AzureError::TokenRefused { detail, .. } if detail.contains("invalid_client")), "{err}");
    assert!(!err.to_string().contains("wrong"), "the secret is not echoed: {err}");
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token_as_assertion() {
    let env = Env::start().await;
    let file = env.dir().join("federated-token");
    std::fs::write(&file, "projected.service-account.jwt\n").unwrap();
    env.standin.add_federated("workload-app", "projected.service-account.jwt");
    let url = env.standin.url();
    let config = env.config(&[
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", "workload-app"),
        ("AZURE_FEDERATED_TOKEN_FILE", &file.display().to_string()),
        ("AZURE_AUTHORITY_HOST", &url),
    ]);
    assert!(config.describe().starts_with("workload identity"));
    let token = vault_token(config.build().unwrap().as_ref()).await;
    assert!(env.standin.token_valid_for(&token, VAULT_AUDIENCE));

    // The file is read per request (Kubernetes rotates it): a stale assertion is refused.
    std::fs::write(&file, "rotated-but-unknown").unwrap();
    let err = config.build_uncached().unwrap().token(KEY_VAULT_SCOPE).await.unwrap_err();
    assert!(matches!(err, AzureError::TokenRefused { .. }), "{err}");
}

#[tokio::test]
async fn app_service_managed_identity_needs_its_header() {
    let env = Env::start().await;
    let endpoint = format!("{}/msi/token", env.standin.url());
    let header = env.standin.identity_header();
    let config = env.config(&[("IDENTITY_ENDPOINT", &endpoint), ("IDENTITY_HEADER", &header)]);
    assert!(config.describe().contains("App Service"));
    let token = vault_token(config.build().unwrap().as_ref()).await;
    assert!(env.standin.token_valid_for(&token, VAULT_AUDIENCE));

    let wrong = env.config(&[("IDENTITY_ENDPOINT", &endpoint), ("IDENTITY_HEADER", "guess")]);
    assert!(matches!(wrong.build().unwrap().token(KEY_VAULT_SCOPE).await, Err(AzureError::TokenRefused { .. })));
}

#[tokio::test]
async fn instance_metadata_managed_identity_with_a_user_assigned_id() {
    let env = Env::start().await;
    let url = env.standin.url();
    let config = env.config(&[("CONCLAVE_AZURE_IMDS_ENDPOINT", &url), ("AZURE_CLIENT_ID", "uami-client")]);
    assert!(config.describe().contains("user-assigned uami-client"), "{}", config.describe());
    let token = vault_token(config.build().unwrap().as_ref()).await;
    assert!(env.standin.token_valid_for(&token, VAULT_AUDIENCE));
    assert_eq!(env.standin.requests_matching("GET /metadata/identity/oauth2/token"), 1);
}

#[tokio::test]
async fn tokens_are_per_scope_and_for_that_audience() {
    let env = Env::start().await;
    let credential = env.credential();
    let vault = vault_token(credential.as_ref()).await;
    let storage = credential.token(STORAGE_SCOPE).await.unwrap().token.expose_secret().to_owned();
    assert_ne!(vault, storage);
    assert!(env.standin.token_valid_for(&storage, "https://storage.azure.com"));
    assert!(!env.standin.token_valid_for(&storage, VAULT_AUDIENCE));
}

/// A credential handing out a token for another audience: the vault must refuse it.
struct Storage(String);

#[async_trait]
impl TokenCredential for Storage {
    async fn token(&self, _scope: &str) -> conclave_azure::error::Result<AccessToken> {
        Ok(AccessToken {
            token: SecretString::from(self.0.clone()),
            expires_on: OffsetDateTime::now_utc() + time::Duration::hours(1),
        })
    }
}

#[tokio::test]
async fn the_vault_refuses_a_token_for_another_audience() {
    let env = Env::start().await;
    env.standin.create_rsa_key("k");
    let token = env.standin.issue_token("https://storage.azure.com");
    let client = conclave_azure::KeyVaultClient::new(&env.settings(), Arc::new(Storage(token))).unwrap();
    let err = client.get_key("k", None).await.unwrap_err();
    assert!(matches!(err, AzureError::Vault { status: 401, .. }), "{err}");
}

/// A clock the test moves.
fn manual_clock() -> (Arc<Mutex<OffsetDateTime>>, conclave_azure::credential::Clock) {
    let now = Arc::new(Mutex::new(OffsetDateTime::now_utc()));
    let read = now.clone();
    (now, Arc::new(move || *read.lock().unwrap()))
}

#[tokio::test]
async fn cached_until_five_minutes_before_expiry_then_refreshed() {
    let env = Env::start().await;
    let (now, clock) = manual_clock();
    let cache = TokenCache::new(env.client_secret_config().build_uncached().unwrap()).with_clock(clock);
    let first = vault_token(&cache).await;
    assert_eq!(vault_token(&cache).await, first);
    assert_eq!(env.standin.token_requests(), 1);

    *now.lock().unwrap() += time::Duration::minutes(54);
    assert_eq!(vault_token(&cache).await, first, "an hour-long token is kept until 5 minutes before expiry");
    *now.lock().unwrap() += time::Duration::minutes(2);
    let second = vault_token(&cache).await;
    assert_ne!(second, first);
    assert_eq!(env.standin.token_requests(), 2);
}

#[tokio::test]
async fn short_tokens_are_refreshed_at_half_life() {
    let env = Env::start().await;
    env.standin.set_token_lifetime(240);
    let (now, clock) = manual_clock();
    let cache = TokenCache::new(env.client_secret_config().build_uncached().unwrap()).with_clock(clock);
    let first = vault_token(&cache).await;
    *now.lock().unwrap() += time::Duration::seconds(100);
    assert_eq!(vault_token(&cache).await, first);
    *now.lock().unwrap() += time::Duration::seconds(30);
    assert_ne!(vault_token(&cache).await, first);
}

#[tokio::test]
async fn a_failed_refresh_serves_the_still_valid_token_until_it_expires() {
    let env = Env::start().await;
    let (now, clock) = manual_clock();
    let cache = TokenCache::new(env.client_secret_config().build_uncached().unwrap()).with_clock(clock);
    let first = vault_token(&cache).await;
    env.standin.inject(Fault::status("/oauth2/v2.0/token", 503, 100));
    *now.lock().unwrap() += time::Duration::minutes(57);
    assert_eq!(vault_token(&cache).await, first);
    *now.lock().unwrap() += time::Duration::minutes(4);
    assert!(matches!(cache.token(KEY_VAULT_SCOPE).await, Err(AzureError::Unavailable { .. })));
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let env = Env::start().await;
    // The token endpoint is slow, so every caller arrives while the first request is in flight.
    env.standin.inject(Fault::slow("/oauth2/v2.0/token", std::time::Duration::from_millis(300), 1));
    let cache: Arc<dyn TokenCredential> = env.credential();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { vault_token(cache.as_ref()).await })
        })
        .collect();
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.unwrap());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1);
    assert_eq!(env.standin.token_requests(), 1);
}
