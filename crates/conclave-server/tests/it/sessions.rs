//! Session lifetimes and session management: the idle timeout and the absolute lifetime at
//! refresh (time is moved by rewriting the session's stored times, never by sleeping), the
//! caller's session list, ending one session or all the others, an administrator ending a
//! user's sessions, and MFA changes ending the other sessions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use conclave_auth::totp::TotpSecret;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::harness::{Harness, Reply};

const PASSWORD: &str = "correct-horse-battery-staple-42";

/// A signed-in session: its access token, refresh cookie value and id.
struct Signed {
    token: String,
    cookie: String,
    id: String,
}

async fn send(h: &Harness, req: Request<Body>) -> (Reply, Option<String>) {
    let response = h.send(req).await;
    let status = response.status();
    let set_cookie = response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }, set_cookie)
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().and_then(|p| p.split_once('=')).map(|(_, v)| v.to_owned()).unwrap_or_default()
}

fn max_age(set_cookie: &str) -> u64 {
    set_cookie.split(';').find_map(|a| a.trim().strip_prefix("Max-Age=")).and_then(|v| v.parse().ok()).unwrap()
}

/// Signs in from a browser named `agent`.
async fn login(h: &Harness, email: &str, agent: &str) -> Signed {
    let req = Request::post("/api/v1/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, agent)
        .body(Body::from(json!({"email": email, "password": PASSWORD}).to_string()))
        .unwrap();
    let (r, set_cookie) = send(h, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let list = h.call(Method::GET, "/api/v1/me/sessions", Some(&token), None).await;
    let current = list.body["items"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap();
    Signed { token, cookie: cookie_value(&set_cookie.unwrap()), id: current["id"].as_str().unwrap().to_owned() }
}

async fn refresh(h: &Harness, cookie: &str) -> (Reply, Option<String>) {
    let req = Request::post("/api/v1/auth/refresh")
        .header(header::COOKIE, format!("conclave_refresh={cookie}"))
        .body(Body::empty())
        .unwrap();
    send(h, req).await
}

async fn me(h: &Harness, token: &str) -> StatusCode {
    h.call(Method::GET, "/api/v1/me", Some(token), None).await.status
}

async fn sessions(h: &Harness, token: &str) -> Vec<Value> {
    let r = h.call(Method::GET, "/api/v1/me/sessions", Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

async fn actions(h: &Harness, admin: &str) -> Vec<(String, Value)> {
    let r = h.call(Method::GET, "/api/v1/audit/events?limit=200", Some(admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or_default().to_owned(), e["detail"].clone()))
        .collect()
}

/// Moves one column of a session `minutes` into the past (or future), as time passing would.
async fn shift(h: &Harness, session: &str, column: &str, minutes: i64) {
    let mut db = sqlx::SqliteConnection::connect(&h.db_url()).await.unwrap();
    let id = uuid::Uuid::parse_str(session).unwrap();
    let sql = format!("UPDATE sessions SET {column} = {column} - $1 WHERE session_id = $2");
    let r = sqlx::query(&sql).bind(minutes * 60_000_000).bind(id).execute(&mut db).await.unwrap();
    assert_eq!(r.rows_affected(), 1);
    let _ = db.close().await;
}

#[tokio::test]
async fn sessions_are_listed_and_ended_one_by_one_or_all_but_this_one() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@s.example").await;
    h.signup("ada@s.example").await;
    let laptop = login(&h, "ada@s.example", "Firefox on the laptop").await;
    let phone = login(&h, "ada@s.example", "Safari on the phone").await;
    let tablet = login(&h, "ada@s.example", "Chrome on the tablet").await;
    let (mallory, _) = h.signup("mallory@s.example").await;

    let listed = sessions(&h, &laptop.token).await;
    // The sign-up session, and the three sign-ins, newest first.
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert_eq!(listed[0]["id"], tablet.id.as_str());
    let mine: Vec<_> = listed.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], laptop.id.as_str());
    assert_eq!(mine[0]["user_agent"], "Firefox on the laptop");
    assert_eq!(mine[0]["ip"], "127.0.0.1");
    let created = time::OffsetDateTime::parse(
        mine[0]["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        mine[0]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::hours(12), "the default absolute lifetime");
    assert_eq!(mine[0]["last_used_at"], mine[0]["created_at"]);

    // Another user's session is not there for them, whatever they try.
    let theirs = h.call(Method::DELETE, &format!("/api/v1/me/sessions/{}", phone.id), Some(&mallory), None).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{}", theirs.body);
    assert_eq!(me(&h, &phone.token).await, StatusCode::OK);
    assert!(sessions(&h, &mallory).await.iter().all(|s| s["id"] != phone.id.as_str()));

    // Ending one session: its access token and its refresh cookie stop at once (the credential
    // cache was emptied: the token had just been used).
    let ended = h.call(Method::DELETE, &format!("/api/v1/me/sessions/{}", phone.id), Some(&laptop.token), None).await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT, "{}", ended.body);
    assert_eq!(me(&h, &phone.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh(&h, &phone.cookie).await.0.status, StatusCode::UNAUTHORIZED);
    let again = h.call(Method::DELETE, &format!("/api/v1/me/sessions/{}", phone.id), Some(&laptop.token), None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "an ended session is gone");
    assert_eq!(sessions(&h, &laptop.token).await.len(), 3);

    // All but this one.
    assert_eq!(me(&h, &tablet.token).await, StatusCode::OK);
    let r = h.call(Method::POST, "/api/v1/me/sessions/revoke-others", Some(&laptop.token), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["revoked_sessions"], 2, "the tablet and the sign-up session");
    assert!(r.body["tokens_valid_after"].is_string());
    assert_eq!(me(&h, &tablet.token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh(&h, &tablet.cookie).await.0.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&h, &laptop.token).await, StatusCode::OK);
    let left = sessions(&h, &laptop.token).await;
    assert_eq!((left.len(), &left[0]["id"]), (1, &json!(laptop.id)));
    // Other users are untouched.
    assert_eq!(me(&h, &mallory).await, StatusCode::OK);

    // Ending the current session is signing out.
    let own = h.call(Method::DELETE, &format!("/api/v1/me/sessions/{}", laptop.id), Some(&laptop.token), None).await;
    assert_eq!(own.status, StatusCode::NO_CONTENT);
    assert_eq!(me(&h, &laptop.token).await, StatusCode::UNAUTHORIZED);

    // API keys cannot see or end sessions.
    let ada = login(&h, "ada@s.example", "curl").await;
    let key = h.call(Method::POST, "/api/v1/api-keys", Some(&ada.token), Some(json!({"name": "k"}))).await;
    let key = key.body["key"].as_str().unwrap().to_owned();
    for (method, path) in [
        (Method::GET, "/api/v1/me/sessions".to_owned()),
        (Method::POST, "/api/v1/me/sessions/revoke-others".to_owned()),
        (Method::DELETE, format!("/api/v1/me/sessions/{}", ada.id)),
    ] {
        let r = h.call(method.clone(), &path, Some(&key), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {}", r.body);
    }
    assert_eq!(me(&h, &ada.token).await, StatusCode::OK);

    let audited = actions(&h, &admin).await;
    assert!(audited.iter().any(|(a, _)| a == "session.revoked"), "{audited:?}");
    let others = audited.iter().find(|(a, _)| a == "session.revoked_others").expect("revoke-others audited");
    assert_eq!(others.1["revoked_sessions"], 2);
    assert!(audited.iter().any(|(a, _)| a == "session.list.denied"), "the API key's refusal: {audited:?}");
}

#[tokio::test]
async fn refresh_ends_sessions_past_the_idle_timeout_or_the_absolute_lifetime() {
    // Times are changed in the database behind the server's back: no credential cache, so the
    // change is seen at once (as it would be once the cache entry expires).
    let h = Harness::with(|c| c.auth_cache_ttl = Duration::ZERO).await;
    let (admin, _) = h.signup("admin@l.example").await;
    h.signup("ada@l.example").await;

    // The cookie lasts as long as the session can: 12 hours.
    let fresh = login(&h, "ada@l.example", "b").await;
    let (r, set_cookie) = refresh(&h, &fresh.cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let age = max_age(&set_cookie.unwrap());
    assert!(age <= 12 * 3600 && age > 12 * 3600 - 60, "Max-Age {age}");

    // Used 29 minutes ago: still alive, and the refresh counts as use.
    let active = login(&h, "ada@l.example", "b").await;
    shift(&h, &active.id, "last_used_at", 29).await;
    let (r, set_cookie) = refresh(&h, &active.cookie).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let listed = sessions(&h, r.body["access_token"].as_str().unwrap()).await;
    let row = listed.iter().find(|s| s["id"] == active.id.as_str()).unwrap();
    assert_ne!(row["last_used_at"], row["created_at"], "the refresh moved last use");
    let active_cookie = cookie_value(&set_cookie.unwrap());

    // Not used for the idle timeout (30 minutes): refused with a reason, and ended.
    shift(&h, &active.id, "last_used_at", 31).await;
    let (idle, _) = refresh(&h, &active_cookie).await;
    assert_eq!(idle.status, StatusCode::UNAUTHORIZED);
    assert_eq!(idle.body["type"], "urn:conclave:problem:session-expired", "{}", idle.body);
    assert!(idle.body["detail"].as_str().unwrap().contains("not used for too long"), "{}", idle.body);
    let (after, _) = refresh(&h, &active_cookie).await;
    assert_eq!(after.body["type"], "urn:conclave:problem:unauthenticated", "ended for good: {}", after.body);

    // Past its absolute end: refused however recently it was used, and its access token too.
    let old = login(&h, "ada@l.example", "b").await;
    shift(&h, &old.id, "expires_at", 12 * 60).await;
    assert_eq!(me(&h, &old.token).await, StatusCode::UNAUTHORIZED);
    let (expired, _) = refresh(&h, &old.cookie).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.body["type"], "urn:conclave:problem:session-expired");
    assert!(expired.body["detail"].as_str().unwrap().contains("maximum lifetime"), "{}", expired.body);

    // Neither is listed any more.
    let listed = sessions(&h, &fresh.token).await;
    assert!(listed.iter().all(|s| s["id"] != active.id.as_str() && s["id"] != old.id.as_str()), "{listed:?}");

    let audited = actions(&h, &admin).await;
    let reasons: Vec<_> =
        audited.iter().filter(|(a, _)| a == "auth.session_expired").map(|(_, d)| d["reason"].clone()).collect();
    assert_eq!(reasons, vec![json!("idle_timeout"), json!("max_lifetime")], "once each: {audited:?}");
}

#[tokio::test]
async fn configured_limits_apply_and_a_lowered_maximum_reaches_running_sessions() {
    let h = Harness::with(|c| {
        c.session_max_lifetime = Duration::from_secs(3600);
        c.session_idle_timeout = Duration::from_secs(20 * 60);
    })
    .await;
    h.signup("ada@c.example").await;
    let s = login(&h, "ada@c.example", "b").await;
    let row = sessions(&h, &s.token).await.remove(0);
    let at = |k: &str| {
        time::OffsetDateTime::parse(row[k].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert_eq!(at("expires_at") - at("created_at"), time::Duration::hours(1));
    shift(&h, &s.id, "last_used_at", 21).await;
    let (idle, _) = refresh(&h, &s.cookie).await;
    assert!(idle.body["detail"].as_str().unwrap().contains("not used for too long"), "{}", idle.body);

    // A session stored with a longer end (signed in before the maximum was lowered) ends by
    // the maximum in force now.
    let s = login(&h, "ada@c.example", "b").await;
    shift(&h, &s.id, "expires_at", -24 * 60).await;
    shift(&h, &s.id, "created_at", 61).await;
    let (over, _) = refresh(&h, &s.cookie).await;
    assert!(over.body["detail"].as_str().unwrap().contains("maximum lifetime"), "{}", over.body);
}

#[tokio::test]
async fn an_administrator_ends_every_session_of_a_user() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@a.example").await;
    let (bob_signup, bob_id) = h.signup("bob@a.example").await;
    let bob = login(&h, "bob@a.example", "b").await;
    let key = h.call(Method::POST, "/api/v1/api-keys", Some(&bob.token), Some(json!({"name": "k"}))).await;
    let key = key.body["key"].as_str().unwrap().to_owned();

    let path = format!("/api/v1/admin/users/{bob_id}/sessions/revoke");
    let refused = h.call(Method::POST, &path, Some(&bob.token), None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "members cannot");
    let r = h.call(Method::POST, &path, Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["revoked_sessions"], 2);
    for token in [&bob_signup, &bob.token] {
        assert_eq!(me(&h, token).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refresh(&h, &bob.cookie).await.0.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&h, &key).await, StatusCode::OK, "API keys are separate credentials");
    assert_eq!(me(&h, &admin).await, StatusCode::OK);
    // Bob signs in again as usual.
    let back = login(&h, "bob@a.example", "b").await;
    assert_eq!(me(&h, &back.token).await, StatusCode::OK);

    let unknown = h
        .call(
            Method::POST,
            &format!("/api/v1/admin/users/{}/sessions/revoke", uuid::Uuid::now_v7()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let user = h
        .core
        .store()
        .get_user(h.core.store().default_tenant("Default").await.unwrap().id, bob_id.parse().unwrap())
        .await
        .unwrap();
    assert!(user.tokens_valid_after.is_some(), "single sign-on tokens issued before are refused");
    let audited = actions(&h, &admin).await;
    let event = audited.iter().find(|(a, _)| a == "user.sessions_revoked").expect("audited");
    assert_eq!(event.1["revoked_sessions"], 2);
    assert!(audited.iter().any(|(a, _)| a == "admin.sessions_revoke.denied"), "{audited:?}");
}

/// A suspected breach: an administrator signs every user out at once, keeping only their own
/// current session; it needs an explicit confirmation and is audited.
#[tokio::test]
async fn an_administrator_ends_every_session_of_the_tenant() {
    let h = Harness::new().await;
    let (admin_signup, admin_id) = h.signup("admin@a.example").await;
    let admin = login(&h, "admin@a.example", "a").await;
    let (bob_signup, bob_id) = h.signup("bob@a.example").await;
    let bob = login(&h, "bob@a.example", "b").await;
    let (carol, carol_id) = h.signup("carol@a.example").await;
    let path = "/api/v1/admin/sessions/revoke";

    let refused = h.call(Method::POST, path, Some(&bob.token), Some(json!({"confirm": true}))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "members cannot");
    let unconfirmed = h.call(Method::POST, path, Some(&admin.token), Some(json!({"confirm": false}))).await;
    assert_eq!(unconfirmed.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", unconfirmed.body);
    assert_eq!(me(&h, &bob.token).await, StatusCode::OK, "nothing happened without the confirmation");

    let r = h.call(Method::POST, path, Some(&admin.token), Some(json!({"confirm": true}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["users"], 3);
    assert_eq!(r.body["revoked_sessions"], 4, "admin's sign-up session, bob's two, carol's one");
    for token in [&admin_signup, &bob_signup, &bob.token, &carol] {
        assert_eq!(me(&h, token).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(refresh(&h, &bob.cookie).await.0.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&h, &admin.token).await, StatusCode::OK, "the administrator's own session is kept");

    let tenant = h.core.store().default_tenant("Default").await.unwrap().id;
    for (id, cut) in [(&bob_id, true), (&carol_id, true), (&admin_id, false)] {
        let user = h.core.store().get_user(tenant, id.parse().unwrap()).await.unwrap();
        assert_eq!(user.tokens_valid_after.is_some(), cut, "{id}");
    }
    let audited = actions(&h, &admin.token).await;
    let event = audited.iter().find(|(a, _)| a == "tenant.sessions_revoked").expect("audited");
    assert_eq!(event.1["revoked_sessions"], 4);
    assert!(audited.iter().any(|(a, _)| a == "admin.sessions_revoke_all.denied"), "{audited:?}");
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[tokio::test]
async fn changing_the_second_factor_ends_the_other_sessions() {
    let h = Harness::new().await;
    let (admin, _) = h.signup("admin@m.example").await;
    h.signup("ada@m.example").await;
    let here = login(&h, "ada@m.example", "b").await;
    let started = h.call(Method::POST, "/api/v1/me/mfa/totp", Some(&here.token), None).await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    let secret =
        TotpSecret::from_base32(started.body["secret"].as_str().unwrap(), "Conclave", "ada@m.example").unwrap();
    // Three codes of consecutive steps (one step of drift is accepted each way), one a change.
    let t0 = unix_now();

    let elsewhere = login(&h, "ada@m.example", "b").await;
    let code = json!({"code": secret.code_at(t0 - 30)});
    let r = h.call(Method::POST, "/api/v1/me/mfa/totp/confirm", Some(&here.token), Some(code)).await;
    assert_eq!(r.status, StatusCode::OK, "enabling: {}", r.body);
    assert_eq!(me(&h, &elsewhere.token).await, StatusCode::UNAUTHORIZED, "enabling ends the others");
    assert_eq!(refresh(&h, &elsewhere.cookie).await.0.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&h, &here.token).await, StatusCode::OK, "the session that made the change goes on");

    // Signing in now takes a second factor: the other sessions sign in with recovery codes.
    let codes = r.body["recovery_codes"].as_array().unwrap().clone();
    let login_with_code = |code: Value| {
        let h = &h;
        async move {
            let r = h
                .call(
                    Method::POST,
                    "/api/v1/auth/login",
                    None,
                    Some(json!({"email": "ada@m.example", "password": PASSWORD, "recovery_code": code})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            r.body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let elsewhere = login_with_code(codes[0].clone()).await;
    let r = h
        .call(
            Method::POST,
            "/api/v1/me/mfa/recovery-codes",
            Some(&here.token),
            Some(json!({"code": secret.code_at(t0)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "regenerating: {}", r.body);
    assert_eq!(me(&h, &elsewhere).await, StatusCode::UNAUTHORIZED, "new recovery codes end the others");
    assert_eq!(me(&h, &here.token).await, StatusCode::OK);

    let codes = r.body["recovery_codes"].as_array().unwrap().clone();
    let elsewhere = login_with_code(codes[0].clone()).await;
    let off = json!({"current_password": PASSWORD, "code": secret.code_at(t0 + 30)});
    let r = h.call(Method::DELETE, "/api/v1/me/mfa", Some(&here.token), Some(off)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "disabling: {}", r.body);
    assert_eq!(me(&h, &elsewhere).await, StatusCode::UNAUTHORIZED, "turning MFA off ends the others");
    assert_eq!(me(&h, &here.token).await, StatusCode::OK);

    let audited = actions(&h, &admin).await;
    // Enabling also ended the sign-up session.
    for (action, ended) in [("mfa.enabled", 2), ("mfa.recovery_codes_regenerated", 1), ("mfa.disabled", 1)] {
        let (_, detail) = audited.iter().find(|(a, _)| a == action).unwrap_or_else(|| panic!("{action}: {audited:?}"));
        assert_eq!(detail["other_sessions_ended"], ended, "{action}");
    }
}
