//! The published OpenAPI document is generated from the same declarations as the router: every
//! route it lists is served, and every served API route is listed.

use axum::http::{Method, StatusCode};

use crate::harness::Harness;

#[tokio::test]
async fn document_lists_every_route_and_each_is_served() {
    let h = Harness::new().await;
    let doc = h.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc.body["paths"].as_object().unwrap();
    for expected in [
        "/healthz",
        "/readyz",
        "/api/v1/auth/config",
        "/api/v1/auth/signup",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/me/password",
        "/api/v1/me/export",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{id}",
        "/api/v1/admin/users",
        "/api/v1/admin/users/{id}",
        "/api/v1/admin/users/{id}/password",
        "/api/v1/admin/tenant",
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/api/v1/conversations/{id}/messages",
        "/api/v1/conversations/{id}/messages/{message_id}/events",
        "/api/v1/conversations/{id}/messages/{message_id}/cancel",
        "/api/v1/conversations/{id}/messages/{message_id}/regenerate",
        "/api/v1/models",
    ] {
        assert!(paths.contains_key(expected), "{expected} is missing from the OpenAPI document");
    }
    // Every documented operation is routed: never the router's own 404 or 405.
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let m: Method = method.to_uppercase().parse().unwrap();
            let concrete = path
                .replace("{id}", "01890000-0000-7000-8000-000000000000")
                .replace("{message_id}", "01890000-0000-7000-8000-000000000001");
            let r = h.call(m.clone(), &concrete, None, None).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path} is documented but not routed");
            assert!(
                !(r.status == StatusCode::NOT_FOUND && r.body["detail"] == "There is nothing at this address."),
                "{m} {path} is documented but not routed"
            );
        }
    }
    // And an unknown address gets the router's problem answer.
    let r = h.call(Method::GET, "/api/v1/nothing-here", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["status"], 404);
}
