//! API keys: shown once, listed without their secret, usable as bearer tokens within their scopes,
//! and refused once deleted, expired or tampered with.

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{is_utc_timestamp, s, Backend, Fetch, TestApp};

async fn create_key(app: &TestApp, token: &str, body: Value) -> Result<Value> {
    Ok(app.post("/api/v1/api-keys").bearer_auth(token).json(&body).fetch().await?.expect(201).body)
}

async fn api_key_lifecycle(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;

    let created = create_key(&app, &admin.token, json!({"name": "ci script"})).await?;
    assert_eq!(created["name"], "ci script");
    assert!(created["scopes"].is_array() || created["scopes"].is_null(), "scopes: {created}");
    assert!(is_utc_timestamp(&created["created_at"]), "created_at: {created}");
    assert!(created["expires_at"].is_null(), "no expiry asked: {created}");
    let id = s(&created["id"]);
    let key = s(&created["key"]);
    // `ck_<id>_<secret>`; the id part is compared with `id` at the end, so that a mismatch there
    // does not hide the rest.
    let parts: Vec<&str> = key.splitn(3, '_').collect();
    assert!(parts.len() == 3 && parts[0] == "ck", "key {key:?} should look like ck_<id>_<secret>");
    let (key_id, secret) = (parts[1].to_owned(), parts[2].to_owned());
    let secret = secret.as_str();
    assert!(secret.len() >= 20, "the secret part should be long: {key}");

    // Listed, never with the key.
    let list = app.get("/api/v1/api-keys").bearer_auth(&admin.token).fetch().await?.expect(200);
    let items = list.items();
    let item = items.iter().find(|i| i["id"] == created["id"]).expect("the new key is listed");
    assert_eq!(item["name"], "ci script");
    assert!(items.iter().all(|i| i.get("key").is_none()), "listed keys carry no `key`: {}", list.text);
    assert!(!list.text.contains(secret), "the secret must not appear in the list");

    // Usable as a bearer token.
    let me = app.get("/api/v1/me").bearer_auth(&key).fetch().await?.expect(200);
    assert_eq!(me["id"], admin.user["id"]);
    app.get("/api/v1/agents").bearer_auth(&key).fetch().await?.expect(200);

    // Tampered with: refused.
    let mut tampered = key.clone();
    let last = tampered.pop().unwrap_or('x');
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    app.get("/api/v1/me").bearer_auth(&tampered).fetch().await?.problem(401);
    let unknown_id = format!("ck_{}_{secret}", uuid::Uuid::now_v7());
    app.get("/api/v1/me").bearer_auth(&unknown_id).fetch().await?.problem(401);

    // Deleted: refused, and gone from the list.
    app.delete(&format!("/api/v1/api-keys/{id}")).bearer_auth(&admin.token).fetch().await?.expect(204);
    app.get("/api/v1/me").bearer_auth(&key).fetch().await?.problem(401);
    let list = app.get("/api/v1/api-keys").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert!(list.items().iter().all(|i| i["id"] != created["id"]), "deleted key still listed: {}", list.text);
    app.delete(&format!("/api/v1/api-keys/{id}")).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.delete("/api/v1/api-keys/not-a-uuid").bearer_auth(&admin.token).fetch().await?.problem(404);
    assert_eq!(key_id, id, "the <id> in ck_<id>_<secret> is the `id` field");
    Ok(())
}

async fn api_key_input_is_validated(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let post = |body: Value| app.post("/api/v1/api-keys").bearer_auth(&admin.token).json(&body).fetch();

    post(json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"})).await?.invalid("expires_at");
    post(json!({"name": "odd", "scopes": ["agents:read", "root:everything"]})).await?.invalid("scopes");
    post(json!({"name": "odd", "expires_at": "next tuesday"})).await?.problem_in(&[400, 422]);

    let later = create_key(
        &app,
        &admin.token,
        json!({"name": "later", "expires_at": "2999-01-01T00:00:00Z", "scopes": ["agents:read", "usage:read"]}),
    )
    .await?;
    assert!(s(&later["expires_at"]).starts_with("2999-01-01"), "{later}");
    let mut scopes: Vec<String> = later["scopes"].as_array().expect("scopes").iter().map(s).collect();
    scopes.sort();
    assert_eq!(scopes, ["agents:read", "usage:read"]);
    app.get("/api/v1/agents").bearer_auth(s(&later["key"])).fetch().await?.expect(200);

    // Every documented scope is accepted.
    let all = [
        "agents:read",
        "agents:write",
        "conversations:read",
        "conversations:write",
        "libraries:read",
        "libraries:write",
        "usage:read",
        "audit:read",
        "admin",
    ];
    create_key(&app, &admin.token, json!({"name": "all", "scopes": all})).await?;

    let list = app.get("/api/v1/api-keys").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(list.items().len(), 2, "only the two valid keys were made: {}", list.text);
    Ok(())
}

async fn api_keys_are_limited(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;

    let full = create_key(&app, &bob.token, json!({"name": "bob's"})).await?;
    let key = s(&full["key"]);

    // Another user can neither see nor delete it.
    let theirs = app.get("/api/v1/api-keys").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert!(theirs.items().iter().all(|i| i["id"] != full["id"]), "bob's key listed for admin: {}", theirs.text);
    app.delete(&format!("/api/v1/api-keys/{}", s(&full["id"]))).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.get("/api/v1/me").bearer_auth(&key).fetch().await?.expect(200);

    // A key cannot mint keys nor change the password.
    app.post("/api/v1/api-keys").bearer_auth(&key).json(&json!({"name": "child"})).fetch().await?.problem(403);
    app.post("/api/v1/me/password")
        .bearer_auth(&key)
        .json(&json!({"current_password": bob.password, "new_password": "violet-tugboat-orchestra-1987"}))
        .fetch()
        .await?
        .problem(403);
    app.login(&bob.email, &bob.password).await?;

    // A read-only key reads but does not write.
    let ro = create_key(&app, &bob.token, json!({"name": "ro", "scopes": ["agents:read"]})).await?;
    let ro_key = s(&ro["key"]);
    app.get("/api/v1/agents").bearer_auth(&ro_key).fetch().await?.expect(200);
    app.post("/api/v1/agents")
        .bearer_auth(&ro_key)
        .json(&json!({"name": "Nope", "instructions": "x", "model": "mock-model"}))
        .fetch()
        .await?
        .problem(403);
    let agents = app.get("/api/v1/agents").bearer_auth(&bob.token).fetch().await?.expect(200);
    assert!(agents.items().is_empty(), "the refused create made nothing: {}", agents.text);
    Ok(())
}

backend_tests!(api_key_lifecycle, api_key_input_is_validated, api_keys_are_limited);
