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
}

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Conclave>,
    pub http: Arc<HttpSettings>,
}
