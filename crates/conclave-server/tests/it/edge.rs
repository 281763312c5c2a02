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
        let api = path.starts_with("/api/");
        assert_eq!(
            headers.get("cache-control").is_some_and(|v| v == "no-store"),
            api,
            "{path}: API answers are not cached"
        );
    }
    // An authenticated answer with data in it, and the gateway's.
    let (token, _) = h.signup("ada@example.com").await;
    for path in ["/api/v1/me", "/v1/models"] {
        let r = h
            .send(Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap())
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{path}");
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

#[tokio::test]
async fn the_server_allow_list_refuses_other_addresses_but_not_probes() {
    let h = Harness::allowlisted(vec!["10.0.0.0/8".parse().unwrap()]).await;
    let inside: std::net::SocketAddr = "10.1.2.3:5000".parse().unwrap();
    let outside: std::net::SocketAddr = "192.0.2.7:5000".parse().unwrap();
    let r = h.send_from(inside, Request::get("/api/v1/auth/config").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = h.send_from(outside, Request::get("/api/v1/auth/config").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = h.send_from(outside, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK, "probes stay reachable");
}

#[tokio::test]
async fn a_tenant_allow_list_applies_after_sign_in_and_denials_are_audited() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@example.com").await;
    let set = h
        .call(
            Method::PATCH,
            "/api/v1/admin/tenant",
            Some(&admin),
            Some(serde_json::json!({"settings": {"ip_allowlist": ["127.0.0.0/8"]}})),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    // From 127.0.0.1 (the harness's address) everything works.
    assert_eq!(h.call(Method::GET, "/api/v1/me", Some(&admin), None).await.status, StatusCode::OK);
    // From elsewhere, the same token is refused.
    let away: std::net::SocketAddr = "198.51.100.9:443".parse().unwrap();
    let req =
        Request::get("/api/v1/me").header("authorization", format!("Bearer {admin}")).body(Body::empty()).unwrap();
    let r = h.send_from(away, req).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let tenant = h.core.store().default_tenant("Default").await.unwrap();
    let events = h.core.store().list_audit(tenant.id, &conclave_core::store::AuditFilter::after(0, 100)).await.unwrap();
    let denial = events.iter().find(|e| e.action == "auth.ip_denied").expect("the denial is audited");
    assert_eq!(denial.ip.as_deref(), Some("198.51.100.9"));
}
