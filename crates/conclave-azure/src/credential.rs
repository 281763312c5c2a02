//! Entra ID access tokens: the [`TokenCredential`] trait, the three ways a server gets tokens
//! without a secret in Conclave's own configuration, chosen from the standard Azure environment
//! variables ([`CredentialConfig::from_env`]), and the per-scope [`TokenCache`] in front of them.
//!
//! Order, as in the Azure SDKs' environment chain:
//! 1. client credentials: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`, against
//!    `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`);
//! 2. workload identity: `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` + `AZURE_TENANT_ID`
//!    (the file's projected token is the client assertion, read again for every request because
//!    Kubernetes rotates it);
//! 3. managed identity: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service, Container Apps),
//!    else the instance metadata service (`CONCLAVE_AZURE_IMDS_ENDPOINT`, default
//!    `http://169.254.169.254`), with `AZURE_CLIENT_ID` selecting a user-assigned identity.
//!
//! Tokens and the client secret are [`SecretString`]s: never logged, never in `Debug`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use crate::error::{AzureError, Result};
use crate::http::{self, RetryPolicy};

const SERVICE: &str = "Entra ID token endpoint";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// A bearer token and when it expires.
pub struct AccessToken {
    pub token: SecretString,
    pub expires_on: OffsetDateTime,
}

impl Clone for AccessToken {
    fn clone(&self) -> Self {
        Self { token: SecretString::from(self.token.expose_secret().to_owned()), expires_on: self.expires_on }
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("token", &"<redacted>").field("expires_on", &self.expires_on).finish()
    }
}

/// Something that hands out Entra ID access tokens for a scope (`https://vault.azure.net/.default`).
#[async_trait]
pub trait TokenCredential: Send + Sync {
    async fn token(&self, scope: &str) -> Result<AccessToken>;
}

/// Where tokens come from.
#[derive(Debug, Clone)]
pub enum CredentialKind {
    /// An app registration's client secret.
    ClientSecret { authority: Url, tenant: String, client_id: String, secret: SecretString },
    /// A federated token in a file (Kubernetes workload identity) as the client assertion.
    WorkloadIdentity { authority: Url, tenant: String, client_id: String, token_file: PathBuf },
    /// App Service / Container Apps managed identity endpoint.
    AppService { endpoint: Url, header: SecretString, client_id: Option<String> },
    /// The instance metadata service (virtual machines, AKS nodes).
    Imds { endpoint: Url, client_id: Option<String> },
}

/// The credential settings, from the standard Azure environment variables (module docs).
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    pub kind: CredentialKind,
    /// Extra CA certificates (PEM) to trust: private endpoints and the test stand-in only.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl CredentialConfig {
    /// Reads the variables through `var` (the process environment in the server, a map in tests).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let url = |name: &str, value: String| {
            Url::parse(&value).map_err(|e| AzureError::Config(format!("{name} '{value}' is not a URL: {e}")))
        };
        let authority = url("AZURE_AUTHORITY_HOST", get("AZURE_AUTHORITY_HOST").unwrap_or(DEFAULT_AUTHORITY.into()))?;
        let (tenant, client_id) = (get("AZURE_TENANT_ID"), get("AZURE_CLIENT_ID"));
        let kind = match (tenant, client_id.clone(), var("AZURE_CLIENT_SECRET"), get("AZURE_FEDERATED_TOKEN_FILE")) {
            (Some(tenant), Some(client_id), Some(secret), _) if !secret.is_empty() => {
                CredentialKind::ClientSecret { authority, tenant, client_id, secret: SecretString::from(secret) }
            }
            (Some(tenant), Some(client_id), _, Some(file)) => {
                CredentialKind::WorkloadIdentity { authority, tenant, client_id, token_file: PathBuf::from(file) }
            }
            _ => match (get("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
                (Some(endpoint), Some(header)) => CredentialKind::AppService {
                    endpoint: url("IDENTITY_ENDPOINT", endpoint)?,
                    header: SecretString::from(header),
                    client_id,
                },
                _ => CredentialKind::Imds {
                    endpoint: url(
                        "CONCLAVE_AZURE_IMDS_ENDPOINT",
                        get("CONCLAVE_AZURE_IMDS_ENDPOINT").unwrap_or(DEFAULT_IMDS.into()),
                    )?,
                    client_id,
                },
            },
        };
        Ok(Self {
            kind,
            ca_file: get("CONCLAVE_AZURE_CA_FILE").map(PathBuf::from),
            timeout: http::DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        })
    }

    /// What kind of credential this is, for logs: no secret.
    pub fn describe(&self) -> String {
        match &self.kind {
            CredentialKind::ClientSecret { tenant, client_id, .. } => {
                format!("client credentials (tenant {tenant}, client {client_id})")
            }
            CredentialKind::WorkloadIdentity { tenant, client_id, .. } => {
                format!("workload identity (tenant {tenant}, client {client_id})")
            }
            CredentialKind::AppService { client_id, .. } => {
                format!("managed identity, App Service endpoint{}", user_assigned(client_id))
            }
            CredentialKind::Imds { endpoint, client_id } => {
                format!("managed identity, instance metadata at {endpoint}{}", user_assigned(client_id))
            }
        }
    }

    /// The credential, behind a [`TokenCache`].
    pub fn build(&self) -> Result<Arc<TokenCache>> {
        Ok(Arc::new(TokenCache::new(self.build_uncached()?)))
    }

    /// The credential without a cache: every call asks the token endpoint. Wrap it in a
    /// [`TokenCache`] (tests do, with their own clock).
    pub fn build_uncached(&self) -> Result<Arc<dyn TokenCredential>> {
        let client = http::client(self.ca_file.as_deref(), self.timeout)?;
        Ok(Arc::new(Source { kind: self.kind.clone(), client, retry: self.retry.clone() }))
    }
}

fn user_assigned(client_id: &Option<String>) -> String {
    client_id.as_ref().map(|c| format!(" (user-assigned {c})")).unwrap_or_default()
}

/// The uncached token request of one [`CredentialKind`].
struct Source {
    kind: CredentialKind,
    client: reqwest::Client,
    retry: RetryPolicy,
}

#[async_trait]
impl TokenCredential for Source {
    async fn token(&self, scope: &str) -> Result<AccessToken> {
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let resp = match &self.kind {
            CredentialKind::ClientSecret { authority, tenant, client_id, secret } => {
                let url = token_url(authority, tenant)?;
                http::send(SERVICE, &self.retry, || {
                    self.client.post(url.clone()).form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_secret", secret.expose_secret()),
                        ("scope", scope),
                    ])
                })
                .await?
            }
            CredentialKind::WorkloadIdentity { authority, tenant, client_id, token_file } => {
                let url = token_url(authority, tenant)?;
                let assertion = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    AzureError::Config(format!("AZURE_FEDERATED_TOKEN_FILE {}: {e}", token_file.display()))
                })?;
                let assertion = SecretString::from(assertion.trim().to_owned());
                http::send(SERVICE, &self.retry, || {
                    self.client.post(url.clone()).form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", client_id),
                        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                        ("client_assertion", assertion.expose_secret()),
                        ("scope", scope),
                    ])
                })
                .await?
            }
            CredentialKind::AppService { endpoint, header, client_id } => {
                let mut query = vec![("api-version", "2019-08-01"), ("resource", resource)];
                if let Some(id) = client_id {
                    query.push(("client_id", id));
                }
                http::send(SERVICE, &self.retry, || {
                    self.client.get(endpoint.clone()).query(&query).header("X-IDENTITY-HEADER", header.expose_secret())
                })
                .await?
            }
            CredentialKind::Imds { endpoint, client_id } => {
                let url = endpoint
                    .join("/metadata/identity/oauth2/token")
                    .map_err(|e| AzureError::Config(format!("instance metadata endpoint: {e}")))?;
                let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
                if let Some(id) = client_id {
                    query.push(("client_id", id));
                }
                http::send(SERVICE, &self.retry, || {
                    self.client.get(url.clone()).query(&query).header("Metadata", "true")
                })
                .await?
            }
        };
        parse_token_response(scope, resp).await
    }
}

fn token_url(authority: &Url, tenant: &str) -> Result<Url> {
    authority
        .join(&format!("{tenant}/oauth2/v2.0/token"))
        .map_err(|e| AzureError::Config(format!("AZURE_AUTHORITY_HOST / AZURE_TENANT_ID: {e}")))
}

/// Token endpoints disagree on types: Entra sends `expires_in` as a number, the managed identity
/// endpoints send numbers as strings and add `expires_on` (Unix seconds).
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn get(&self) -> Option<i64> {
        match self {
            Number::Int(n) => Some(*n),
            Number::Text(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<Number>,
    expires_on: Option<Number>,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

async fn parse_token_response(scope: &str, resp: reqwest::Response) -> Result<AccessToken> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| http::unavailable(SERVICE, &e))?;
    if !status.is_success() {
        let detail = match serde_json::from_slice::<TokenError>(&body) {
            Ok(TokenError { error, error_description }) => format!(
                "{status}: {} {}",
                error.unwrap_or_default(),
                error_description.unwrap_or_default().lines().next().unwrap_or_default()
            ),
            Err(_) => status.to_string(),
        };
        return Err(AzureError::TokenRefused { scope: scope.to_owned(), detail: detail.trim().to_owned() });
    }
    let parsed: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| AzureError::Protocol { service: SERVICE, detail: format!("token response: {e}") })?;
    let now = OffsetDateTime::now_utc();
    let expires_on =
        match (parsed.expires_on.as_ref().and_then(Number::get), parsed.expires_in.as_ref().and_then(Number::get)) {
            (Some(on), _) => OffsetDateTime::from_unix_timestamp(on)
                .map_err(|_| AzureError::Protocol { service: SERVICE, detail: "expires_on out of range".into() })?,
            (None, Some(secs)) => now + time::Duration::seconds(secs),
            (None, None) => {
                return Err(AzureError::Protocol {
                    service: SERVICE,
                    detail: "token response without an expiry".into(),
                })
            }
        };
    Ok(AccessToken { token: SecretString::from(parsed.access_token), expires_on })
}

/// The clock a [`TokenCache`] reads; replaceable so tests can move time without waiting.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Caches one token per scope and refreshes it before it expires: five minutes before expiry,
/// or at half its lifetime for tokens that live less than ten minutes. Concurrent callers for a
/// scope wait on one refresh. If a refresh fails while the cached token is still valid, the
/// cached token is served (and the failure logged) until it expires.
pub struct TokenCache {
    source: Arc<dyn TokenCredential>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
    clock: Clock,
}

struct Cached {
    token: AccessToken,
    refresh_at: OffsetDateTime,
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenCredential>) -> Self {
        Self { source, slots: Mutex::new(HashMap::new()), clock: Arc::new(OffsetDateTime::now_utc) }
    }

    /// The same cache reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Drops the cached token of `scope` (after the resource refused it).
    pub async fn invalidate(&self, scope: &str) {
        let slot = self.slot(scope);
        *slot.lock().await = None;
    }

    fn slot(&self, scope: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner).entry(scope.to_owned()).or_default().clone()
    }
}

/// When to fetch a new token for one issued at `now` and expiring at `expires_on`.
fn refresh_point(now: OffsetDateTime, expires_on: OffsetDateTime) -> OffsetDateTime {
    let lifetime = expires_on - now;
    if lifetime >= time::Duration::minutes(10) {
        expires_on - time::Duration::minutes(5)
    } else {
        now + lifetime / 2
    }
}

#[async_trait]
impl TokenCredential for TokenCache {
    async fn token(&self, scope: &str) -> Result<AccessToken> {
        let slot = self.slot(scope);
        let mut cached = slot.lock().await;
        let now = (self.clock)();
        if let Some(c) = cached.as_ref() {
            if now < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        match self.source.token(scope).await {
            Ok(token) => {
                let now = (self.clock)();
                let refresh_at = refresh_point(now, token.expires_on);
                tracing::debug!(scope, expires_on = %token.expires_on, "fetched an Entra ID token");
                *cached = Some(Cached { token: token.clone(), refresh_at });
                Ok(token)
            }
            Err(e) => match cached.as_ref() {
                Some(c) if now < c.token.expires_on => {
                    tracing::warn!(scope, error = %e, expires_on = %c.token.expires_on, "token refresh failed; the cached token is still valid");
                    Ok(c.token.clone())
                }
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn chooses_in_the_usual_order() {
        let all = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
            ("IDENTITY_HEADER", "h"),
        ];
        let c = CredentialConfig::from_env(env(&all)).unwrap();
        assert!(matches!(c.kind, CredentialKind::ClientSecret { .. }));
        assert_eq!(c.describe(), "client credentials (tenant t, client c)");
        let c =
            CredentialConfig::from_env(env(&all[..2].iter().chain(&all[3..]).copied().collect::<Vec<_>>())).unwrap();
        assert!(matches!(c.kind, CredentialKind::WorkloadIdentity { .. }));
        let c =
            CredentialConfig::from_env(env(&all[1..2].iter().chain(&all[4..]).copied().collect::<Vec<_>>())).unwrap();
        assert!(matches!(c.kind, CredentialKind::AppService { client_id: Some(ref id), .. } if id == "c"));
        let c = CredentialConfig::from_env(env(&[])).unwrap();
        assert!(
            matches!(c.kind, CredentialKind::Imds { ref endpoint, client_id: None } if endpoint.as_str() == "http://169.254.169.254/")
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_describe() {
        let c = CredentialConfig::from_env(env(&[
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "hunter2-secret"),
        ]))
        .unwrap();
        assert!(!format!("{c:?} {}", c.describe()).contains("hunter2"));
        let t = AccessToken { token: SecretString::from("tok-123".to_owned()), expires_on: OffsetDateTime::UNIX_EPOCH };
        assert!(!format!("{t:?}").contains("tok-123"));
    }

    #[test]
    fn refresh_five_minutes_early_or_at_half_life() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(refresh_point(now, now + time::Duration::hours(1)), now + time::Duration::minutes(55));
        assert_eq!(refresh_point(now, now + time::Duration::minutes(4)), now + time::Duration::minutes(2));
    }

    #[test]
    fn bad_urls_are_refused_by_name() {
        let e = CredentialConfig::from_env(env(&[("AZURE_AUTHORITY_HOST", "not a url")])).unwrap_err();
        assert!(e.to_string().contains("AZURE_AUTHORITY_HOST"), "{e}");
    }
}
