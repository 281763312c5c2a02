//! Redis signed in with Entra ID tokens (`CONCLAVE_REDIS_AUTH=entra`), the way Azure Cache for
//! Redis takes them: over TLS, user = the identity's object id, password = an access token for
//! `https://redis.azure.com` that expires. Here a private `redis-server` with TLS (a CA of the
//! test's own, trusted through `CONCLAVE_REDIS_CA_FILE`) and an ACL user whose passwords are
//! exactly the tokens the Entra stand-in issued; tokens live 6 s, so the server renews them
//! every few seconds. Then every password but the newest is revoked and the user's connections
//! are cut (what Azure does at expiry): rate limits (failing closed) and reply notices must carry
//! on, which they can only do signed in with a renewed token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use conclave_azure::standin::StandIn;
use conclave_store::testing::{PrivateRedis, PrivateRedisOptions};
use serde_json::json;

use crate::app::{start_mock, Backend, Fetch, TempDir, TestApp};

const OBJECT_ID: &str = "5b6c1f0e-conclave-identity";
const REDIS_AUDIENCE: &str = "https://redis.azure.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_notices_carry_on_through_renewed_entra_tokens() -> Result<()> {
    let redis = Arc::new(PrivateRedis::start_with(PrivateRedisOptions { acl_user: Some(OBJECT_ID.into()), tls: true }));
    let vault = StandIn::start().await?;
    vault.add_client_secret("conclave-server", "server-secret");
    vault.set_token_lifetime(6);
    let issued = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (redis, issued) = (redis.clone(), issued.clone());
        vault.on_token_issued(REDIS_AUDIENCE, move |token| {
            redis.add_password(token);
            issued.lock().unwrap().push(token.to_owned());
        });
    }
    let dir = TempDir::new()?;
    let vault_ca = dir.path().join("entra-ca.pem");
    vault.write_ca(&vault_ca)?;

    let mock = start_mock().await?;
    let app = TestApp::builder(Backend::Sqlite)
        .provider(&mock)
        .env("CONCLAVE_REDIS_URL", redis.tls_url_for_acl_user())
        .env("CONCLAVE_REDIS_CA_FILE", redis.ca_file().display().to_string())
        .env("CONCLAVE_REDIS_AUTH", "entra")
        .env("CONCLAVE_RATE_LIMIT_FAIL_OPEN", "false")
        .env("CONCLAVE_AZURE_CA_FILE", vault_ca.display().to_string())
        .env("AZURE_AUTHORITY_HOST", vault.url())
        .env("AZURE_TENANT_ID", "11111111-2222-3333-4444-555555555555")
        .env("AZURE_CLIENT_ID", "conclave-server")
        .env("AZURE_CLIENT_SECRET", "server-secret")
        .start()
        .await?;

    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({"name": "Counsel"})).await?;
    let mut admin_redis = redis.admin();
    let buckets: Vec<String> = redis::cmd("KEYS").arg("conclave:rl:*").query(&mut admin_redis)?;
    assert!(!buckets.is_empty(), "rate limits are counted in Redis");
    let subscribers = || -> Result<i64> {
        let (_, n): (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg("conclave:replies").query(&mut redis.admin())?;
        Ok(n)
    };
    assert_eq!(subscribers()?, 1, "the reply-notice subscription is signed in");

    // Wait for two renewals, then keep only the newest token and cut every connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    while issued.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the server renewed its Redis token fewer than twice in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let newest = issued.lock().unwrap().last().cloned().unwrap();
    redis.only_password_and_cut(&newest);

    // Failing closed, a limiter that could not sign in again would answer 503 for good.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = app.get("/api/v1/agents").bearer_auth(&admin.token).fetch().await?;
        if resp.status == 200 {
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text);
        assert!(Instant::now() < deadline, "rate limits still unavailable 15 s after the cut: {}", resp.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while subscribers()? < 1 {
        assert!(Instant::now() < deadline, "the reply-notice subscription did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A whole exchange goes through (its notices through Redis).
    let conv = app.create_conversation(&admin.token, &agent["id"], Some("Renewal")).await?;
    app.post_message(&admin.token, &conv["id"], "Still there?").await?.expect(201);
    let logs = app.logs().join("\n");
    assert!(logs.contains("Redis sign-in with Entra ID tokens"), "{logs}");
    for token in issued.lock().unwrap().iter() {
        assert!(!logs.contains(token.as_str()), "a token reached the log");
    }
    Ok(())
}
