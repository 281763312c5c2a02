//! User administration: only admins, listing with cursors, creating users with or without a
//! password, role and disable changes (never losing the last admin), password resets that force a
//! change, and deleting users.

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{ids, s, Backend, Fetch, TestApp, OTHER_PASSWORD, PASSWORD};

async fn create_user(app: &TestApp, token: &str, body: Value) -> Result<Value> {
    Ok(app.post("/api/v1/admin/users").bearer_auth(token).json(&body).fetch().await?.expect(201).body)
}

fn user_path(id: &Value) -> String {
    format!("/api/v1/admin/users/{}", s(id))
}

async fn admin_routes_need_the_admin_role(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;
    let auditor = create_user(
        &app,
        &admin.token,
        json!({"email": "audrey@example.test", "password": PASSWORD, "display_name": "Audrey", "role": "auditor"}),
    )
    .await?;
    assert_eq!(auditor["role"], "auditor");
    let audrey = app.login("audrey@example.test", PASSWORD).await?;

    for token in [&bob.token, &audrey.token] {
        app.get("/api/v1/admin/users").bearer_auth(token).fetch().await?.problem(403);
        app.post("/api/v1/admin/users")
            .bearer_auth(token)
            .json(&json!({"email": "x@example.test", "display_name": "X", "role": "admin"}))
            .fetch()
            .await?
            .problem(403);
        app.patch(&user_path(&bob.user["id"]))
            .bearer_auth(token)
            .json(&json!({"role": "admin"}))
            .fetch()
            .await?
            .problem(403);
        app.post(&format!("{}/password", user_path(&admin.user["id"])))
            .bearer_auth(token)
            .json(&json!({"new_password": OTHER_PASSWORD}))
            .fetch()
            .await?
            .problem(403);
        app.delete(&user_path(&admin.user["id"])).bearer_auth(token).fetch().await?.problem(403);
        app.get("/api/v1/admin/tenant").bearer_auth(token).fetch().await?.problem(403);
        app.patch("/api/v1/admin/tenant")
            .bearer_auth(token)
            .json(&json!({"name": "Taken over"}))
            .fetch()
            .await?
            .problem(403);
    }
    app.get("/api/v1/admin/users").fetch().await?.problem(401);

    // Nothing changed: bob is still a member, the admin still signs in, no user x.
    assert_eq!(app.get("/api/v1/me").bearer_auth(&bob.token).fetch().await?.expect(200)["role"], "member");
    app.login(&admin.email, PASSWORD).await?;
    let tenant = app.get("/api/v1/admin/tenant").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_ne!(tenant["name"], "Taken over");
    let users = app.collect("/api/v1/admin/users", &admin.token, 50).await?;
    assert_eq!(users.len(), 3, "admin, bob, audrey: {users:?}");
    Ok(())
}

async fn admin_creates_lists_and_updates_users(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;

    let carol = create_user(
        &app,
        &admin.token,
        json!({"email": "carol@example.test", "password": PASSWORD, "display_name": "Carol", "role": "member"}),
    )
    .await?;
    assert_eq!(carol["email"], "carol@example.test");
    assert_eq!(carol["role"], "member");
    assert!(carol.get("temporary_password").is_none() || carol["temporary_password"].is_null(), "{carol}");
    app.login("carol@example.test", PASSWORD).await?;

    // Without a password: a one-time temporary one, which signs in and must be changed.
    let dave = create_user(
        &app,
        &admin.token,
        json!({"email": "dave@example.test", "display_name": "Dave", "role": "member"}),
    )
    .await?;
    let temporary = s(&dave["temporary_password"]);
    assert!(temporary.len() >= 12, "temporary_password: {dave}");
    let d = app.login("dave@example.test", &temporary).await?;
    let me = app.get("/api/v1/me").bearer_auth(&d.token).fetch().await?.expect(200);
    assert_eq!(me["must_change_password"], true, "a temporary password must be changed: {}", me.text);

    // Refusals.
    create_user_fails(
        &app,
        &admin.token,
        json!({"email": "CAROL@example.test", "display_name": "C2", "role": "member"}),
        409,
    )
    .await?;
    let bad_role = app
        .post("/api/v1/admin/users")
        .bearer_auth(&admin.token)
        .json(&json!({"email": "eve@example.test", "display_name": "Eve", "role": "overlord"}))
        .fetch()
        .await?;
    // Checked at the end, so that a miss here does not hide the rest.
    let bad_role_miss = bad_role.invalid_miss("role");
    app.post("/api/v1/admin/users")
        .bearer_auth(&admin.token)
        .json(&json!({"email": "eve@example.test", "password": "passwordpassword", "display_name": "Eve", "role": "member"}))
        .fetch()
        .await?
        .invalid("password");

    // Listing, page by page.
    for i in 0..3 {
        create_user(
            &app,
            &admin.token,
            json!({"email": format!("user{i}@example.test"), "password": PASSWORD, "display_name": format!("User {i}"), "role": "member"}),
        )
        .await?;
    }
    let all = app.collect("/api/v1/admin/users", &admin.token, 2).await?;
    let mut seen = ids(&all);
    assert_eq!(seen.len(), 6, "admin, carol, dave, user0..2: {all:?}");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "no user listed twice across pages");
    assert!(all.iter().all(|u| u.get("password_hash").is_none() && !u.to_string().contains("argon2")));
    app.get("/api/v1/admin/users?limit=0").bearer_auth(&admin.token).fetch().await?.problem(400);
    app.get("/api/v1/admin/users?cursor=%21%21garbage").bearer_auth(&admin.token).fetch().await?.problem(400);

    // Updates.
    let updated = app
        .patch(&user_path(&carol["id"]))
        .bearer_auth(&admin.token)
        .json(&json!({"display_name": "Caroline", "role": "auditor"}))
        .fetch()
        .await?
        .expect(200);
    assert_eq!(updated["display_name"], "Caroline");
    assert_eq!(updated["role"], "auditor");
    assert_eq!(updated["id"], carol["id"]);
    let c = app.login("carol@example.test", PASSWORD).await?;
    let me = app.get("/api/v1/me").bearer_auth(&c.token).fetch().await?.expect(200);
    assert_eq!((me["role"].clone(), me["display_name"].clone()), (json!("auditor"), json!("Caroline")));
    app.patch(&user_path(&carol["id"]))
        .bearer_auth(&admin.token)
        .json(&json!({"role": "superuser"}))
        .fetch()
        .await?
        .problem(422);

    // Unknown users.
    let nobody = json!(uuid::Uuid::now_v7().to_string());
    app.patch(&user_path(&nobody))
        .bearer_auth(&admin.token)
        .json(&json!({"role": "member"}))
        .fetch()
        .await?
        .problem(404);
    app.post(&format!("{}/password", user_path(&nobody)))
        .bearer_auth(&admin.token)
        .json(&json!({"new_password": OTHER_PASSWORD}))
        .fetch()
        .await?
        .problem(404);
    app.delete(&user_path(&nobody)).bearer_auth(&admin.token).fetch().await?.problem(404);
    app.delete("/api/v1/admin/users/not-a-uuid").bearer_auth(&admin.token).fetch().await?.problem(404);
    assert!(bad_role_miss.is_none(), "{}", bad_role_miss.unwrap_or_default());
    Ok(())
}

async fn create_user_fails(app: &TestApp, token: &str, body: Value, status: u16) -> Result<()> {
    app.post("/api/v1/admin/users").bearer_auth(token).json(&body).fetch().await?.problem(status);
    Ok(())
}

async fn the_last_admin_stays(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let me = user_path(&admin.user["id"]);

    for change in [json!({"role": "member"}), json!({"role": "auditor"}), json!({"disabled": true})] {
        app.patch(&me).bearer_auth(&admin.token).json(&change).fetch().await?.problem(409);
    }
    app.delete(&me).bearer_auth(&admin.token).fetch().await?.problem(409);
    assert_eq!(app.get("/api/v1/me").bearer_auth(&admin.token).fetch().await?.expect(200)["role"], "admin");

    // With a second admin, either may step down; then the other is the last one.
    let second = create_user(
        &app,
        &admin.token,
        json!({"email": "second@example.test", "password": PASSWORD, "display_name": "Second", "role": "admin"}),
    )
    .await?;
    let s2 = app.login("second@example.test", PASSWORD).await?;
    app.patch(&me).bearer_auth(&s2.token).json(&json!({"role": "member"})).fetch().await?.expect(200);
    app.patch(&user_path(&second["id"]))
        .bearer_auth(&s2.token)
        .json(&json!({"role": "member"}))
        .fetch()
        .await?
        .problem(409);
    // Deleting yourself is refused.
    app.delete(&user_path(&second["id"])).bearer_auth(&s2.token).fetch().await?.problem(409);
    Ok(())
}

async fn disabled_users_are_locked_out(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;
    let key = app
        .post("/api/v1/api-keys")
        .bearer_auth(&bob.token)
        .json(&json!({"name": "bob's key"}))
        .fetch()
        .await?
        .expect(201);
    let key = s(&key["key"]);

    let resp = app
        .patch(&user_path(&bob.user["id"]))
        .bearer_auth(&admin.token)
        .json(&json!({"disabled": true}))
        .fetch()
        .await?
        .expect(200);
    assert_eq!(resp["id"], bob.user["id"]);

    app.get("/api/v1/me").bearer_auth(&bob.token).fetch().await?.problem(401);
    app.get("/api/v1/me").bearer_auth(&key).fetch().await?.problem(401);
    app.post("/api/v1/auth/refresh").header("cookie", bob.cookie_header()).fetch().await?.problem(401);
    app.post("/api/v1/auth/login").json(&json!({"email": bob.email, "password": PASSWORD})).fetch().await?.problem(401);

    app.patch(&user_path(&bob.user["id"]))
        .bearer_auth(&admin.token)
        .json(&json!({"disabled": false}))
        .fetch()
        .await?
        .expect(200);
    let back = app.login(&bob.email, PASSWORD).await?;
    app.get("/api/v1/me").bearer_auth(&back.token).fetch().await?.expect(200);
    Ok(())
}

async fn admin_password_reset_forces_a_change(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;
    let reset = format!("{}/password", user_path(&bob.user["id"]));
    let temporary = "granite-lantern-pickle-7713";

    app.post(&reset)
        .bearer_auth(&admin.token)
        .json(&json!({"new_password": "123456789012"}))
        .fetch()
        .await?
        .invalid("new_password");
    app.post(&reset).bearer_auth(&admin.token).json(&json!({"new_password": temporary})).fetch().await?.expect(204);

    app.post("/api/v1/auth/login").json(&json!({"email": bob.email, "password": PASSWORD})).fetch().await?.problem(401);
    let b = app.login(&bob.email, temporary).await?;
    let me = app.get("/api/v1/me").bearer_auth(&b.token).fetch().await?.expect(200);
    assert_eq!(me["must_change_password"], true);
    app.get("/api/v1/agents").bearer_auth(&b.token).fetch().await?.problem(403);
    app.post("/api/v1/agents")
        .bearer_auth(&b.token)
        .json(&json!({"name": "A", "instructions": "x", "model": "mock-model"}))
        .fetch()
        .await?
        .problem(403);

    app.post("/api/v1/me/password")
        .bearer_auth(&b.token)
        .json(&json!({"current_password": temporary, "new_password": OTHER_PASSWORD}))
        .fetch()
        .await?
        .expect(204);
    let me = app.get("/api/v1/me").bearer_auth(&b.token).fetch().await?.expect(200);
    assert_eq!(me["must_change_password"], false);
    app.get("/api/v1/agents").bearer_auth(&b.token).fetch().await?.expect(200);
    app.login(&bob.email, OTHER_PASSWORD).await?;
    Ok(())
}

async fn deleted_users_are_gone(backend: Backend) -> Result<()> {
    let (app, _mock) = TestApp::with_mock(backend).await?;
    let admin = app.admin().await?;
    let bob = app.member("bob").await?;
    let agent = app.create_agent(&bob.token, json!({"name": "Bob's agent"})).await?;
    let conv = app.create_conversation(&bob.token, &agent["id"], Some("Bob's secrets")).await?;
    app.post_message(&bob.token, &conv["id"], "remember this").await?.expect(201);

    app.delete(&user_path(&bob.user["id"])).bearer_auth(&admin.token).fetch().await?.expect(204);

    app.post("/api/v1/auth/login").json(&json!({"email": bob.email, "password": PASSWORD})).fetch().await?.problem(401);
    app.get("/api/v1/me").bearer_auth(&bob.token).fetch().await?.problem(401);
    let users = app.collect("/api/v1/admin/users", &admin.token, 50).await?;
    assert!(users.iter().all(|u| u["id"] != bob.user["id"]), "deleted user still listed: {users:?}");
    app.delete(&user_path(&bob.user["id"])).bearer_auth(&admin.token).fetch().await?.problem(404);

    // The address is free again, and the new account inherits nothing.
    let again = app.member("bob").await?;
    assert_ne!(again.user["id"], bob.user["id"]);
    let convs = app.collect("/api/v1/conversations", &again.token, 50).await?;
    assert!(convs.is_empty(), "a new bob sees no conversation: {convs:?}");
    app.get(&format!("/api/v1/conversations/{}", s(&conv["id"]))).bearer_auth(&again.token).fetch().await?.problem(404);
    Ok(())
}

backend_tests!(
    admin_routes_need_the_admin_role,
    admin_creates_lists_and_updates_users,
    the_last_admin_stays,
    disabled_users_are_locked_out,
    admin_password_reset_forces_a_change,
    deleted_users_are_gone,
);
