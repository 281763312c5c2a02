//! One line per request, written when the answer's head leaves (streams go on after it): method,
//! path without the query (search text may be content), status, milliseconds, and the client's
//! address (the peer, or what a trusted proxy forwarded). Refusals are `warn` lines with an
//! `event` a SIEM can match: `auth.refused` (401: unknown email, wrong password, bad or expired
//! token or API key), `access.denied` (403), `rate.limited` (429), `input.refused` (400, 413,
//! 415, 422). Credentials, bodies and query strings are never written. The request span adds the
//! request id and trace id.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::state::HttpSettings;

/// The log `event` of a refusal, or `None` for an answer that is not one.
pub fn refusal(status: StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        401 => Some("auth.refused"),
        403 => Some("access.denied"),
        429 => Some("rate.limited"),
        400 | 413 | 415 | 422 => Some("input.refused"),
        _ => None,
    }
}

pub async fn layer(State(http): State<Arc<HttpSettings>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let client = crate::extract::request_client_ip(req.extensions(), req.headers(), &http.trusted_proxies);
    if let Some(ip) = client {
        req.extensions_mut().insert(crate::extract::ClientIp(ip));
    }
    let response = next.run(req).await;
    let status = response.status();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let client = client.map(|ip| ip.to_string()).unwrap_or_default();
    match refusal(status) {
        Some(event) => tracing::warn!(event, status = status.as_u16(), client, ms, "refused"),
        None if status.is_server_error() => tracing::error!(status = status.as_u16(), client, ms, "failed"),
        None => tracing::info!(status = status.as_u16(), client, ms, "answered"),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named_for_a_siem() {
        assert_eq!(refusal(StatusCode::UNAUTHORIZED), Some("auth.refused"));
        assert_eq!(refusal(StatusCode::FORBIDDEN), Some("access.denied"));
        assert_eq!(refusal(StatusCode::TOO_MANY_REQUESTS), Some("rate.limited"));
        assert_eq!(refusal(StatusCode::PAYLOAD_TOO_LARGE), Some("input.refused"));
        assert_eq!(refusal(StatusCode::NOT_FOUND), None, "404s are ordinary answers");
        assert_eq!(refusal(StatusCode::OK), None);
    }
}
