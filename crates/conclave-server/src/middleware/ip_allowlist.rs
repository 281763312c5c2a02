//! The server-wide IP allow-list, checked before anything else (the tenant's own list is
//! checked after authentication). The client address is the peer's, or what a trusted proxy
//! says it forwarded. Health probes stay reachable for the platform.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Problem;
use crate::state::HttpSettings;

pub async fn layer(State(http): State<Arc<HttpSettings>>, req: Request, next: Next) -> Response {
    if http.ip_allowlist.is_empty() || matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let client = crate::extract::request_client_ip(req.extensions(), req.headers(), &http.trusted_proxies);
    if client.is_some_and(|ip| http.ip_allowlist.iter().any(|net| net.contains(&ip))) {
        return next.run(req).await;
    }
    tracing::warn!(client = ?client, "refused by the server's IP allow-list");
    Problem::new(StatusCode::FORBIDDEN, "ip-not-allowed", "Your network address is not allowed to reach this server.")
        .render()
        .into_response()
}
