//! The conventions every route shares: request ids, problem+json errors and their status codes,
//! body limits, and how missing or bad credentials are answered.

use anyhow::Result;
use serde_json::json;

use crate::app::{Backend, Fetch, TestApp, PASSWORD};

fn is_sane_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

async fn request_ids_are_echoed_or_replaced(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;

    let sane = "trace-42.A_b";
    let resp = app.get("/healthz").header("x-request-id", sane).fetch().await?.expect(200);
    assert_eq!(resp.header("x-request-id").as_deref(), Some(sane), "a sane request id is echoed");

    // Also on errors, where the body repeats it.
    let resp = app.get("/api/v1/me").header("x-request-id", sane).fetch().await?.problem(401);
    assert_eq!(resp["request_id"], sane);

    let too_long = "a".repeat(129);
    for insane in ["has spaces in it", "semi;colon", "<script>", too_long.as_str()] {
        let resp = app.get("/api/v1/nothing-here").header("x-request-id", insane).fetch().await?.problem(404);
        let got = resp.header("x-request-id").expect("x-request-id on every response");
        assert_ne!(got, insane, "an insane request id must be replaced");
        assert!(is_sane_request_id(&got), "the replacement {got:?} should itself be sane");
    }

    // None sent: one is made up, and differs between requests.
    let a = app.get("/healthz").fetch().await?.header("x-request-id").expect("x-request-id");
    let b = app.get("/healthz").fetch().await?.header("x-request-id").expect("x-request-id");
    assert!(is_sane_request_id(&a) && is_sane_request_id(&b), "{a:?} {b:?}");
    assert_ne!(a, b, "each request gets its own id");
    for path in ["/readyz", "/", "/api/v1/openapi.json", "/api/v1/models"] {
        let resp = app.get(path).fetch().await?;
        assert!(resp.header("x-request-id").is_some(), "GET {path} ({}) has no x-request-id", resp.status);
    }
    Ok(())
}

async fn errors_are_problems_with_the_right_status(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;

    // Unknown route, and wrong method on a known one.
    app.get("/api/v1/does-not-exist").fetch().await?.problem(404);
    app.put("/api/v1/auth/login").json(&json!({})).fetch().await?.problem(405);
    app.delete("/healthz").fetch().await?.problem(405);

    let login = "/api/v1/auth/login";
    let valid = r#"{"email":"nobody@example.test","password":"correct-horse-battery-staple-42"}"#;

    // A JSON body under the wrong media type, or none.
    app.post(login).header("content-type", "text/plain").body(valid).fetch().await?.problem(415);
    app.post(login).body(valid).fetch().await?.problem(415);

    // Malformed JSON.
    app.post(login).header("content-type", "application/json").body(r#"{"email":"#).fetch().await?.problem(400);

    // Well-formed but invalid: a 422 naming the fields.
    let resp = app
        .post("/api/v1/auth/signup")
        .json(&json!({"email": "not-an-email", "password": PASSWORD, "display_name": "X"}))
        .fetch()
        .await?
        .invalid("email");
    assert!(resp["errors"][0]["message"].is_string(), "each error has a message: {}", resp.text);
    // Missing fields and wrong types are 422 too, and `errors` says which field (checked last).
    let missing = app.post("/api/v1/auth/signup").json(&json!({})).fetch().await?.problem(422);
    let wrong_type = app
        .post("/api/v1/auth/signup")
        .json(&json!({"email": 5, "password": PASSWORD, "display_name": "X"}))
        .fetch()
        .await?
        .problem(422);

    // Over 1 MiB.
    let huge = json!({"email": "x@example.test", "password": "p".repeat(1024 * 1024 + 16)});
    app.post(login).json(&huge).fetch().await?.problem(413);

    // Nothing above left an account behind.
    app.post(login).json(&json!({"email": "x@example.test", "password": "p".repeat(20)})).fetch().await?.problem(401);

    let misses: Vec<String> =
        [missing.invalid_miss("email"), wrong_type.invalid_miss("email")].into_iter().flatten().collect();
    assert!(misses.is_empty(), "{}", misses.join("\n"));
    Ok(())
}

async fn missing_or_bad_credentials_get_401(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    app.get("/api/v1/me").bearer_auth(&admin.token).fetch().await?.expect(200);

    for path in ["/api/v1/me", "/api/v1/agents", "/api/v1/conversations", "/api/v1/api-keys", "/api/v1/admin/users"] {
        app.get(path).fetch().await?.problem(401);
        app.get(path).bearer_auth("garbage").fetch().await?.problem(401);
    }
    let forged = format!("{}x", admin.token);
    app.get("/api/v1/me").bearer_auth(&forged).fetch().await?.problem(401);
    app.get("/api/v1/me")
        .header("authorization", "Basic YWRtaW5AZXhhbXBsZS50ZXN0OmNvcnJlY3Q=")
        .fetch()
        .await?
        .problem(401);
    app.get("/api/v1/me").header("authorization", "Bearer").fetch().await?.problem(401);
    // The refresh cookie is not an access token.
    app.get("/api/v1/me").bearer_auth(&admin.cookie).fetch().await?.problem(401);
    app.get("/api/v1/me").header("cookie", admin.cookie_header()).fetch().await?.problem(401);
    Ok(())
}

backend_tests!(
    request_ids_are_echoed_or_replaced,
    errors_are_problems_with_the_right_status,
    missing_or_bad_credentials_get_401,
);
