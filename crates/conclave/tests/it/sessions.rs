//! Ending sessions against single sign-on: an issuer's JWT cannot be revoked one by one, so an
//! administrator's "end sessions" and a user's "end other sessions" set a per-user cut-off, and
//! tokens issued (`iat`) before it are refused although unexpired. Real tokens from the test
//! provider; the short sleeps only let `iat` (whole seconds) pass the cut-off.

use std::time::Duration;

use anyhow::Result;

use crate::app::{s, Backend, Fetch, TestApp};
use crate::oidc::{sso_server, user_claims, OidcProvider};

async fn me(app: &TestApp, token: &str) -> Result<crate::app::Resp> {
    app.get("/api/v1/me").bearer_auth(token).fetch().await
}

async fn ending_sessions_cuts_off_earlier_sso_tokens(backend: Backend) -> Result<()> {
    let provider = OidcProvider::start().await?;
    let app = sso_server(backend, &provider, &[]).await?;
    provider
        .add_user("alice-sub", user_claims("alice@contoso.example", "Alice", "contoso", &["Conclave.Admin"], &[]))
        .await?;
    provider.add_user("bob-sub", user_claims("bob@contoso.example", "Bob", "contoso", &[], &[])).await?;
    let alice = provider.sign_in("alice-sub").await?;
    let bob_laptop = provider.sign_in("bob-sub").await?;
    let bob_phone = provider.sign_in("bob-sub").await?;
    let bob_id = s(&me(&app, &bob_laptop).await?.expect(200)["id"]);
    me(&app, &bob_phone).await?.expect(200);

    // An administrator ends Bob's sessions: both of his tokens stop, though unexpired.
    let ended = app
        .post(&format!("/api/v1/admin/users/{bob_id}/sessions/revoke"))
        .bearer_auth(&alice)
        .fetch()
        .await?
        .expect(200);
    assert_eq!(ended["revoked_sessions"], 0, "single sign-on users have no local sessions");
    me(&app, &bob_laptop).await?.problem(401);
    me(&app, &bob_phone).await?.problem(401);
    me(&app, &alice).await?.expect(200);

    // A token issued after the cut-off works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bob_again = provider.sign_in("bob-sub").await?;
    assert_eq!(s(&me(&app, &bob_again).await?.expect(200)["id"]), bob_id, "the same user");
    assert!(app.get("/api/v1/me/sessions").bearer_auth(&bob_again).fetch().await?.expect(200).items().is_empty());

    // Bob ends his other sessions: every token issued until now, this one included, since it
    // cannot be told from a stolen copy; a fresh token from the issuer works.
    app.post("/api/v1/me/sessions/revoke-others").bearer_auth(&bob_again).fetch().await?.expect(200);
    me(&app, &bob_again).await?.problem(401);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bob_fresh = provider.sign_in("bob-sub").await?;
    me(&app, &bob_fresh).await?.expect(200);
    me(&app, &alice).await?.expect(200);

    let events = app.get("/api/v1/audit/events?limit=200").bearer_auth(&alice).fetch().await?.expect(200);
    let actions: Vec<String> = events.items().iter().map(|e| s(&e["action"])).collect();
    assert!(actions.iter().any(|a| a == "user.sessions_revoked"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "session.revoked_others"), "{actions:?}");
    Ok(())
}

/// `CONCLAVE_SESSION_MAX_HOURS` reaches the server: the session's end and the refresh cookie.
async fn session_limits_come_from_the_environment(backend: Backend) -> Result<()> {
    let app = TestApp::builder(backend)
        .env("CONCLAVE_SESSION_MAX_HOURS", "2")
        .env("CONCLAVE_SESSION_IDLE_MINUTES", "20")
        .start()
        .await?;
    let admin = app.admin().await?;
    let listed = app.get("/api/v1/me/sessions").bearer_auth(&admin.token).fetch().await?.expect(200);
    let session = &listed.items()[0];
    let at = |k: &str| time::OffsetDateTime::parse(&s(&session[k]), &time::format_description::well_known::Rfc3339);
    assert_eq!(at("expires_at")? - at("created_at")?, time::Duration::hours(2), "{}", listed.text);
    assert_eq!(session["current"], true);
    let refreshed = app.post("/api/v1/auth/refresh").header("cookie", admin.cookie_header()).fetch().await?.expect(200);
    let cookie = refreshed.refresh_set_cookie().unwrap_or_default();
    let max_age: u64 = cookie
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(max_age <= 2 * 3600 && max_age > 2 * 3600 - 120, "the cookie ends with the session: {cookie}");
    Ok(())
}

backend_tests!(ending_sessions_cuts_off_earlier_sso_tokens, session_limits_come_from_the_environment);
