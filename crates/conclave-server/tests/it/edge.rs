//! The edge of every response: security headers, and CORS only for the configured origins.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};

use crate::harness::Harness;

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let h = Harness::new().await;
    for path in ["/", "/healthz", "/api/v1/me", "/api/v1/nothing"] {
        let r = h.send(Request::get(path).body(Body::empty()).unwrap()).await;
        let headers = r.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "no inline scripts");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(headers.contains_key("permissions-policy"), "{path}");
        assert!(headers["strict-transport-security"].to_str().unwrap().starts_with("max-age="), "{path}");
        assert!(headers.contains_key("x-request-id"), "{path}");
    }
}

#[tokio::test]
async fn cross_origin_calls_only_from_configured_origins() {
    let h = Harness::new().await;
    let preflight = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/api/v1/agents")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = h.send(preflight("https://app.firm.example")).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.firm.example");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");

    let other = h.send(preflight("https://evil.example")).await;
    assert!(!other.headers().contains_key("access-control-allow-origin"), "no CORS grant for another origin");

    let simple =
        h.send(Request::get("/healthz").header("origin", "https://evil.example").body(Body::empty()).unwrap()).await;
    assert_eq!(simple.status(), StatusCode::OK);
    assert!(!simple.headers().contains_key("access-control-allow-origin"));
}
