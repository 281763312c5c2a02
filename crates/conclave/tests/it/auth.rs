//! Local accounts: sign-up, login, refresh-token rotation and reuse detection, logout, token
//! expiry and password changes.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use crate::app::{Backend, Fetch, Resp, Session, TestApp, OTHER_PASSWORD, PASSWORD};

/// The shape shared by signup, login and refresh answers, and the refresh cookie's attributes.
#[track_caller]
fn assert_token_answer(resp: &Resp) {
    assert!(resp["access_token"].as_str().is_some_and(|t| !t.is_empty()), "access_token: {}", resp.text);
    assert_eq!(resp["token_type"], "Bearer", "{}", resp.text);
    let ttl = resp["expires_in"].as_u64().unwrap_or(0);
    assert!(ttl > 0 && ttl <= 900, "expires_in defaults to 15 minutes at most: {}", resp.text);
    let user = &resp["user"];
    for key in ["id", "email", "display_name", "role", "tenant_id"] {
        assert!(user[key].is_string(), "user.{key} in {}", resp.text);
    }
    let cookie = resp.refresh_set_cookie().unwrap_or_else(|| panic!("{}: no conclave_refresh cookie", resp.what));
    let attrs: Vec<String> = cookie.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect();
    assert!(attrs.iter().any(|a| a == "httponly"), "HttpOnly missing: {cookie}");
    assert!(attrs.iter().any(|a| a == "samesite=strict"), "SameSite=Strict missing: {cookie}");
    assert!(attrs.iter().any(|a| a == "path=/api/v1/auth"), "Path=/api/v1/auth missing: {cookie}");
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "dev on loopback serves plain HTTP, Secure would lose the cookie: {cookie}"
    );
}

async fn refresh(app: &TestApp, cookie: &str) -> Result<Resp> {
    app.post("/api/v1/auth/refresh").header("cookie", format!("conclave_refresh={cookie}")).fetch().await
}

async fn me(app: &TestApp, token: &str) -> Result<Resp> {
    app.get("/api/v1/me").bearer_auth(token).fetch().await
}

async fn signup_makes_the_first_account_admin(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let resp = app
        .post("/api/v1/auth/signup")
        .json(&json!({"email": "Ada@Example.Test", "password": PASSWORD, "display_name": "Ada"}))
        .fetch()
        .await?
        .expect(201);
    assert_token_answer(&resp);
    let admin = resp.body["user"].clone();
    assert_eq!(admin["role"], "admin");
    assert_eq!(admin["display_name"], "Ada");
    assert_eq!(admin["email"].as_str().map(str::to_lowercase).as_deref(), Some("ada@example.test"));

    let profile = me(&app, resp["access_token"].as_str().unwrap_or_default()).await?.expect(200);
    for key in ["id", "email", "display_name", "role", "tenant_id"] {
        assert_eq!(profile[key], admin[key], "/me {key}");
    }
    assert_eq!(profile["must_change_password"], false);

    let bob = app.member("bob").await?;
    assert_eq!(bob.user["tenant_id"], admin["tenant_id"], "one tenant in local mode");
    assert_ne!(bob.user["id"], admin["id"]);
    assert_eq!(me(&app, &bob.token).await?.expect(200)["role"], "member");

    // Emails are unique whatever their case.
    for email in ["ada@example.test", "ADA@EXAMPLE.TEST", "bob@example.test"] {
        app.post("/api/v1/auth/signup")
            .json(&json!({"email": email, "password": OTHER_PASSWORD, "display_name": "Dup"}))
            .fetch()
            .await?
            .problem(409);
    }
    // And the original accounts are untouched.
    app.login("ada@example.test", PASSWORD).await?;
    app.login("BOB@example.test", PASSWORD).await?;
    Ok(())
}

async fn signup_refuses_weak_passwords(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    for weak in ["short-pw-1", "Tr0ub4dor&3", "passwordpassword", "123456789012", "qwertyuiopas", ""] {
        app.post("/api/v1/auth/signup")
            .json(&json!({"email": "weak@example.test", "password": weak, "display_name": "Weak"}))
            .fetch()
            .await?
            .invalid("password");
    }
    // None of them made an account: the address is still free, and takes a good password.
    app.post("/api/v1/auth/login")
        .json(&json!({"email": "weak@example.test", "password": "passwordpassword"}))
        .fetch()
        .await?
        .problem(401);
    let first = app.signup("weak@example.test", PASSWORD, "Weak").await?;
    assert_eq!(first.user["role"], "admin", "the first successful sign-up is the admin");
    Ok(())
}

async fn closed_signup_still_takes_the_first_account(backend: Backend) -> Result<()> {
    let app = TestApp::builder(backend).env("CONCLAVE_SIGNUP", "closed").start().await?;
    let admin = app.admin().await?;
    app.post("/api/v1/auth/signup")
        .json(&json!({"email": "late@example.test", "password": PASSWORD, "display_name": "Late"}))
        .fetch()
        .await?
        .problem(403);
    app.post("/api/v1/auth/login")
        .json(&json!({"email": "late@example.test", "password": PASSWORD}))
        .fetch()
        .await?
        .problem(401);
    me(&app, &admin.token).await?.expect(200);
    Ok(())
}

async fn login_does_not_tell_which_part_was_wrong(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;

    let resp = app
        .post("/api/v1/auth/login")
        .json(&json!({"email": "ADMIN@example.test", "password": PASSWORD}))
        .fetch()
        .await?
        .expect(200);
    assert_token_answer(&resp);
    assert_eq!(resp["user"]["id"], admin.user["id"]);
    let token = resp["access_token"].as_str().unwrap_or_default();
    assert_eq!(me(&app, token).await?.expect(200)["id"], admin.user["id"]);

    let wrong_password = app
        .post("/api/v1/auth/login")
        .json(&json!({"email": "admin@example.test", "password": OTHER_PASSWORD}))
        .fetch()
        .await?
        .problem(401);
    let unknown_email = app
        .post("/api/v1/auth/login")
        .json(&json!({"email": "nobody@example.test", "password": PASSWORD}))
        .fetch()
        .await?
        .problem(401);
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("request_id");
            o.remove("instance");
        }
        v
    };
    assert_eq!(strip(&wrong_password.body), strip(&unknown_email.body), "both failures must look the same");
    assert!(wrong_password.refresh_cookie().is_none(), "no cookie on failure");
    Ok(())
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;

    let first = refresh(&app, &admin.cookie).await?.expect(200);
    assert_eq!(first["token_type"], "Bearer");
    assert!(first["expires_in"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(first["user"]["id"], admin.user["id"]);
    let c2 = first.refresh_cookie().expect("refresh rotates the cookie");
    assert_ne!(c2, admin.cookie, "the cookie value changes");
    let t2 = first["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(me(&app, &t2).await?.expect(200)["id"], admin.user["id"]);

    // A rotation of the rotation works too.
    let second = refresh(&app, &c2).await?.expect(200);
    let c3 = second.refresh_cookie().expect("rotated again");

    // Replaying an old value is theft: it fails and takes the newest value down with it.
    refresh(&app, &admin.cookie).await?.problem(401);
    refresh(&app, &c3).await?.problem(401);

    // Another login starts a new family that is not affected.
    let again = app.login(&admin.email, PASSWORD).await?;
    refresh(&app, &again.cookie).await?.expect(200);

    // No cookie, or nonsense.
    app.post("/api/v1/auth/refresh").fetch().await?.problem(401);
    refresh(&app, "not-a-token").await?.problem(401);
    Ok(())
}

async fn logout_revokes_the_session(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let other = app.login(&admin.email, PASSWORD).await?;

    app.post("/api/v1/auth/logout")
        .bearer_auth(&admin.token)
        .header("cookie", admin.cookie_header())
        .fetch()
        .await?
        .expect(204);
    refresh(&app, &admin.cookie).await?.problem(401);
    me(&app, &admin.token).await?.problem(401);

    // Only that session: the other login still works.
    me(&app, &other.token).await?.expect(200);

    // With the cookie alone.
    app.post("/api/v1/auth/logout").header("cookie", other.cookie_header()).fetch().await?.expect(204);
    refresh(&app, &other.cookie).await?.problem(401);

    // With the bearer alone: that access token is done.
    let third = app.login(&admin.email, PASSWORD).await?;
    app.post("/api/v1/auth/logout").bearer_auth(&third.token).fetch().await?.expect(204);
    me(&app, &third.token).await?.problem(401);
    Ok(())
}

async fn access_tokens_expire(backend: Backend) -> Result<()> {
    let app = TestApp::builder(backend).env("CONCLAVE_ACCESS_TOKEN_TTL_SECONDS", "1").start().await?;
    let admin = app.admin().await?;
    me(&app, &admin.token).await?.expect(200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    me(&app, &admin.token).await?.problem(401);
    // The refresh cookie outlives it and gets a working token.
    let fresh = refresh(&app, &admin.cookie).await?.expect(200);
    me(&app, fresh["access_token"].as_str().unwrap_or_default()).await?.expect(200);
    Ok(())
}

async fn password_change_revokes_other_sessions(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let mine = app.admin().await?;
    let other = app.login(&mine.email, PASSWORD).await?;
    let path = "/api/v1/me/password";

    // Wrong current password: refused, nothing changes.
    let resp = app
        .post(path)
        .bearer_auth(&mine.token)
        .json(&json!({"current_password": "wrong-wrong-wrong-wrong", "new_password": OTHER_PASSWORD}))
        .fetch()
        .await?
        .problem_in(&[401, 403, 422]);
    if resp.status == 401 {
        // Whatever the status, the caller is still signed in.
        me(&app, &mine.token).await?.expect(200);
    }
    app.login(&mine.email, PASSWORD).await?;

    // Weak new password.
    app.post(path)
        .bearer_auth(&mine.token)
        .json(&json!({"current_password": PASSWORD, "new_password": "passwordpassword"}))
        .fetch()
        .await?
        .invalid("new_password");

    app.post(path)
        .bearer_auth(&mine.token)
        .json(&json!({"current_password": PASSWORD, "new_password": OTHER_PASSWORD}))
        .fetch()
        .await?
        .expect(204);

    // The caller's session goes on; every other one is gone.
    me(&app, &mine.token).await?.expect(200);
    refresh(&app, &mine.cookie).await?.expect(200);
    me(&app, &other.token).await?.problem(401);
    refresh(&app, &other.cookie).await?.problem(401);

    app.post("/api/v1/auth/login")
        .json(&json!({"email": mine.email, "password": PASSWORD}))
        .fetch()
        .await?
        .problem(401);
    let after: Session = app.login(&mine.email, OTHER_PASSWORD).await?;
    assert_eq!(me(&app, &after.token).await?.expect(200)["must_change_password"], false);
    Ok(())
}

backend_tests!(
    signup_makes_the_first_account_admin,
    signup_refuses_weak_passwords,
    closed_signup_still_takes_the_first_account,
    login_does_not_tell_which_part_was_wrong,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_revokes_the_session,
    access_tokens_expire,
    password_change_revokes_other_sessions,
);
