//! What every handler shares: the domain services and the HTTP settings.

use std::sync::Arc;

use conclave_core::Conclave;
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Mark the refresh cookie `Secure` (dropped only in `dev` on loopback).
    pub secure_cookies: bool,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest JSON body accepted, in bytes.
    pub max_json_bytes: usize,
    /// Origins allowed to call the API from a browser (none: same origin only).
    pub cors_origins: Vec<String>,
    /// Send HSTS (production, behind HTTPS).
    pub hsts: bool,
    /// Requests a minute per principal (or per client address before sign-in).
    pub rate_limit_per_minute: u32,
    /// Sign-in attempts a minute per account and per client address.
    pub login_attempts_per_minute: u32,
    /// Addresses allowed to reach the server at all (empty: any); probes are exempt.
    pub ip_allowlist: Vec<IpNet>,
    /// Upload limit and timeouts by route class (`middleware::limits`).
    pub limits: crate::middleware::limits::RouteLimits,
    /// API keys (and the `/v1` gateway) only from clients that presented a verified certificate.
    pub mtls_required_for_api_keys: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Conclave>,
    pub http: Arc<HttpSettings>,
    pub limiter: Arc<crate::middleware::rate_limit::RateLimiter>,
}

impl AppState {
    /// Counts a request against `key` with the general per-principal quota.
    pub async fn limit(&self, key: &str) -> Result<(), conclave_core::Error> {
        let quota = crate::middleware::rate_limit::Quota { per_minute: self.http.rate_limit_per_minute };
        self.limiter.check(key, quota).await.map(|_| ())
    }

    /// Counts a sign-in attempt against `key`.
    pub async fn limit_login(&self, key: &str) -> Result<(), conclave_core::Error> {
        let quota = crate::middleware::rate_limit::Quota { per_minute: self.http.login_attempts_per_minute };
        self.limiter.check(key, quota).await.map(|_| ())
    }
}
