//! Rate limits: per principal after sign-in, per address before, sign-in attempts per account
//! and address, 429 with Retry-After and RateLimit-* headers, a spoofed X-Forwarded-For from an
//! untrusted peer changes nothing; shared through a real Redis between two limiters (two
//! replicas), failing open or closed as configured when Redis goes away.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use conclave_core::Error;
use conclave_server::middleware::rate_limit::{Quota, RateLimiter, RedisConnection};
use conclave_store::testing::{PrivateRedis, PrivateRedisOptions};
use conclave_store::{RedisTarget, SharedRedis};
use serde_json::json;

use crate::harness::Harness;

#[tokio::test]
async fn each_principal_has_its_own_budget_and_429_says_when_to_retry() {
    let h = Harness::limited(5, |_| {}).await;
    let (ada, _) = h.signup("ada@example.com").await; // 1 of the address's 5
    let (bob, _) = h.signup("bob@example.com").await; // 2
    for _ in 0..5 {
        assert_eq!(h.call(Method::GET, "/api/v1/me", Some(&ada), None).await.status, StatusCode::OK);
    }
    let over = h
        .send(Request::get("/api/v1/me").header("authorization", format!("Bearer {ada}")).body(Body::empty()).unwrap())
        .await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = over.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(over.headers()["ratelimit-remaining"], "0");
    assert!(over.headers().contains_key("ratelimit-reset"));
    assert_eq!(
        h.call(Method::GET, "/api/v1/me", Some(&bob), None).await.status,
        StatusCode::OK,
        "another user is not affected"
    );
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_account_and_a_spoofed_address_changes_nothing() {
    let h = Harness::limited(3, |_| {}).await;
    let login = |email: &'static str, xff: &'static str| {
        Request::post("/api/v1/auth/login")
            .header("content-type", "application/json")
            .header("x-forwarded-for", xff)
            .body(Body::from(json!({"email": email, "password": "wrong-password-guess"}).to_string()))
            .unwrap()
    };
    // The peer (127.0.0.1) is not a trusted proxy: each "different" forwarded address is ignored.
    for (i, xff) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"].into_iter().enumerate() {
        let r = h.send(login("victim@example.com", xff)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = h.send(login("victim@example.com", "203.0.113.4")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the fourth attempt from the same peer is refused");
    assert!(r.headers().contains_key("retry-after"));
}

async fn shared_redis(url: &str) -> Arc<SharedRedis> {
    let target = RedisTarget::new(url, None).unwrap();
    SharedRedis::connect(target, None, None).await.unwrap_or_else(|e| panic!("Redis at {url} is needed: {e}"))
}

fn connection(redis: &Arc<SharedRedis>) -> RedisConnection {
    let redis = redis.clone();
    Arc::new(move || redis.manager())
}

/// The limiter follows renewed credentials: with the first password revoked and its
/// connections cut (an expired Entra token on Azure), it keeps counting on the new sign-in.
#[tokio::test]
async fn the_limiter_follows_a_renewed_redis_password() {
    let redis = PrivateRedis::start_with(PrivateRedisOptions { acl_user: Some("limiter-oid".into()), tls: false });
    redis.add_password("token-1");
    let url = redis.url().replace("admin:private-redis-admin", "limiter-oid");
    let target = RedisTarget::new(&url, None).unwrap();
    let shared = SharedRedis::connect(target, None, Some("token-1")).await.unwrap();
    let limiter = RateLimiter::redis(connection(&shared), false, "r:");
    let q = Quota { per_minute: 100 };
    assert_eq!(limiter.check("k", q).await.unwrap().remaining, 99);

    redis.add_password("token-2");
    shared.set_password("token-2").unwrap();
    // The old password goes away and its connections are cut, whether or not the new
    // manager (built in the background) is in place yet: a limiter still holding only the
    // first credentials would never sign in again.
    redis.only_password_and_cut("token-2");
    let mut remaining = None;
    for _ in 0..50 {
        if let Ok(d) = limiter.check("k", q).await {
            remaining = Some(d.remaining);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remaining, Some(98), "the count survived and the limiter signed in with token-2");
}

#[tokio::test]
async fn replicas_share_one_budget_through_redis() {
    // The machine's Redis (127.0.0.1:6379), with a prefix of this run's own.
    let redis = shared_redis("redis://127.0.0.1:6379").await;
    let prefix = format!("conclave-test:{}:", uuid::Uuid::new_v4().simple());
    let a = RateLimiter::redis(connection(&redis), false, prefix.clone());
    let b = RateLimiter::redis(connection(&redis), false, prefix);
    let q = Quota { per_minute: 4 };
    let mut allowed = 0;
    for i in 0..6 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        match limiter.check("user:shared", q).await {
            Ok(d) => {
                allowed += 1;
                assert_eq!(d.remaining, 4 - allowed);
            }
            Err(Error::RateLimited { retry_after, .. }) => assert!(retry_after >= Duration::from_secs(1)),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(allowed, 4, "one budget across both replicas");
    assert!(a.check("user:other", q).await.is_ok());
}

#[tokio::test]
async fn losing_redis_fails_closed_or_open_as_configured() {
    let redis = PrivateRedis::start();
    let shared = shared_redis(&redis.url()).await;
    let closed = RateLimiter::redis(connection(&shared), false, "c:");
    let open = RateLimiter::redis(connection(&shared), true, "o:");
    let q = Quota { per_minute: 100 };
    assert!(closed.check("k", q).await.is_ok());
    drop(redis); // Redis goes away
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(closed.check("k", q).await, Err(Error::Unavailable { service: "rate limiter", .. })));
    assert!(open.check("k", q).await.is_ok(), "fail open lets the request through");
}

/// Someone guessing a user's password from other addresses uses up the account's budget; the
/// user, on a browser where they signed in before (login-device cookie), still signs in. A
/// device cookie of another account, or a forged one, buys nothing.
#[tokio::test]
async fn guessing_elsewhere_does_not_lock_out_a_known_browser() {
    let h = Harness::limited(3, |_| {}).await;
    let (_, _) = h.signup("victim@example.com").await;
    let (_, _) = h.signup("other@example.com").await;
    let login = |email: &str, password: &str, cookie: Option<&str>| {
        let mut req = Request::post("/api/v1/auth/login").header("content-type", "application/json");
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.body(Body::from(json!({"email": email, "password": password}).to_string())).unwrap()
    };
    let device_of = |response: &axum::response::Response| -> String {
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("conclave_device="))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .expect("a login-device cookie")
    };
    let peer = |last: u8| std::net::SocketAddr::from(([198, 51, 100, last], 40000));
    let home = h.send_from(peer(1), login("victim@example.com", "correct-horse-battery-staple-42", None)).await;
    assert_eq!(home.status(), StatusCode::OK);
    let device = device_of(&home);
    let set = home.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
    let attrs = set.iter().find(|c| c.starts_with("conclave_device=")).unwrap();
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict") && attrs.contains("Path=/api/v1/auth/login")
    );
    let other = h.send_from(peer(2), login("other@example.com", "correct-horse-battery-staple-42", None)).await;
    let other_device = device_of(&other);

    // The attacker, from three addresses, spends the account's budget (3 a minute).
    for last in 10..13 {
        let r = h.send_from(peer(last), login("victim@example.com", "wrong-password-guess", None)).await;
        assert!(matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS), "{}", r.status());
    }
    let r = h.send_from(peer(13), login("victim@example.com", "wrong-password-guess", None)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the account's budget is spent");
    // Without its cookie, the victim is held back too; with it, not.
    let r = h.send_from(peer(20), login("victim@example.com", "correct-horse-battery-staple-42", None)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = h.send_from(peer(21), login("victim@example.com", "correct-horse-battery-staple-42", Some(&device))).await;
    assert_eq!(r.status(), StatusCode::OK, "a known browser signs in");
    // Another account's cookie, or a forged one, counts against the account.
    for cookie in
        [other_device.clone(), format!("{}x", &device[..device.len() - 1]), "conclave_device=v1.AAAA.BBBB".into()]
    {
        let r =
            h.send_from(peer(22), login("victim@example.com", "correct-horse-battery-staple-42", Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "{cookie}");
    }
}
