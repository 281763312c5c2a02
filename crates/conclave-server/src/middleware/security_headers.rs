//! Security headers on every response: a strict Content-Security-Policy (no inline or foreign
//! scripts, no framing), `nosniff`, no referrer, no powerful browser features, same-origin
//! isolation, HSTS when served over HTTPS in production, and `Cache-Control: no-store` on every
//! API answer (ASVS 14.2.2: nothing a user reads through the API may stay in a browser or proxy
//! cache; a route that says otherwise keeps its own value).

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

const HSTS: &str = "max-age=63072000; includeSubDomains";

/// Whether to send `Strict-Transport-Security` (production: the site is only reached over HTTPS).
#[derive(Debug, Clone, Copy)]
pub struct Hsts(pub bool);

pub async fn layer(State(hsts): State<Hsts>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/v1/");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=(), payment=(), usb=()");
    set(HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    set(HeaderName::from_static("cross-origin-resource-policy"), "same-origin");
    if hsts.0 {
        set(header::STRICT_TRANSPORT_SECURITY, HSTS);
    }
    if api {
        set(header::CACHE_CONTROL, "no-store");
    }
    response
}
