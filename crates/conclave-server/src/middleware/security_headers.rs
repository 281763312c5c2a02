//! Security headers on every response: a strict Content-Security-Policy (no inline or foreign
//! scripts, no framing), `nosniff`, no referrer, no powerful browser features, same-origin
//! isolation, and HSTS when served over HTTPS in production.

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
    response
}
