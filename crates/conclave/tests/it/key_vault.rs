//! The master key in Azure Key Vault (the local stand-in over TLS, trusted through
//! `CONCLAVE_AZURE_CA_FILE`): content round-trips; disabling the key in the vault locks it with a
//! 503 and a clear detail once the key cache's TTL has run out, and `/readyz` reports the KMS;
//! enabling the key again opens the same content (nothing was lost).

use std::time::{Duration, Instant};

use anyhow::Result;
use conclave_azure::standin::{Fault, StandIn};
use serde_json::json;

use crate::app::{s, start_mock, Backend, Fetch, TempDir, TestApp};

const KEK: &str = "conclave-kek";

/// A stand-in vault with the master key and the checkpoint key, and the variables that point a
/// server at it.
async fn vault_site() -> Result<(StandIn, TempDir, Vec<(String, String)>)> {
    let vault = StandIn::start().await?;
    vault.add_client_secret("conclave-server", "server-secret");
    vault.create_rsa_key(KEK);
    // The key that signs audit checkpoints (ES256), under its default name.
    vault.create_ec_key("conclave-audit");
    let dir = TempDir::new()?;
    let ca = dir.path().join("vault-ca.pem");
    vault.write_ca(&ca)?;
    let env = [
        ("CONCLAVE_KEY_PROVIDER", "azure-key-vault".to_owned()),
        ("CONCLAVE_KEY_VAULT_URL", vault.url()),
        ("CONCLAVE_KEY_NAME", KEK.to_owned()),
        ("CONCLAVE_KEY_CACHE_SECONDS", "1".to_owned()),
        ("CONCLAVE_AZURE_CA_FILE", ca.display().to_string()),
        ("AZURE_AUTHORITY_HOST", vault.url()),
        ("AZURE_TENANT_ID", "11111111-2222-3333-4444-555555555555".to_owned()),
        ("AZURE_CLIENT_ID", "conclave-server".to_owned()),
        ("AZURE_CLIENT_SECRET", "server-secret".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok((vault, dir, env))
}

async fn key_vault_master_key_locks_and_unlocks_content(backend: Backend) -> Result<()> {
    let (vault, _dir, vault_env) = vault_site().await?;
    let mock = start_mock().await?;
    let mut builder = TestApp::builder(backend).provider(&mock);
    for (k, v) in &vault_env {
        builder = builder.env(k, v.clone());
    }
    let mut app = builder.start().await?;

    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({"name": "Counsel"})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], Some("Merger")).await?;
    app.post_message(&admin.token, &conv["id"], "Is the deal confidential?").await?.expect(201);
    let messages = app.messages(&admin.token, &conv["id"]).await?;
    assert_eq!(s(&messages[0]["content"]), "Is the deal confidential?");
    assert!(vault.requests_matching("/wrapkey") >= 1, "content keys were wrapped by the vault");
    let ready = app.get("/readyz").fetch().await?.expect(200);
    assert_eq!(ready["checks"]["kms"], "ok", "{}", ready.text);

    // The customer disables the key. Within the cache TTL (1 s) reads may still succeed; after
    // it, every read is a 503 naming the master key.
    vault.set_enabled(KEK, None, false);
    let path = format!("/api/v1/conversations/{}/messages", s(&conv["id"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    let locked = loop {
        let resp = app.get(&path).bearer_auth(&admin.token).fetch().await?;
        if resp.status == 503 {
            break resp;
        }
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert!(Instant::now() < deadline, "content still readable 20 s after the key was disabled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let locked = locked.problem(503);
    let detail = s(&locked.body["detail"]).to_lowercase();
    assert!(detail.contains("master key") || detail.contains("revoked"), "{}", locked.text);
    let ready = app.get("/readyz").fetch().await?.expect(503);
    assert_eq!(ready["checks"]["kms"], "unavailable", "{}", ready.text);
    assert_eq!(ready["checks"]["database"], "ok", "{}", ready.text);

    // Enabled again: the same content opens, nothing was lost.
    vault.set_enabled(KEK, None, true);
    let messages = app.messages(&admin.token, &conv["id"]).await?;
    assert_eq!(s(&messages[0]["content"]), "Is the deal confidential?");
    assert_eq!(s(&messages[1]["content"]), "echo: Is the deal confidential?");
    app.get("/readyz").fetch().await?.expect(200);

    // Checkpoints are signed by the vault's EC key, and the offline verifier takes the public
    // key from the vault too (never from the database).
    let mut env: Vec<(String, String)> = ["CONCLAVE_DATA_DIR", "CONCLAVE_DATABASE_URL"]
        .iter()
        .filter_map(|k| app.site_var(k).map(|v| (k.to_string(), v)))
        .collect();
    env.extend(vault_env.iter().cloned());
    let pem = crate::app::run_cli(&["audit", "public-key"], &env, Duration::from_secs(60)).await?;
    assert!(pem.status.success() && pem.stdout.contains("BEGIN PUBLIC KEY"), "{pem}");
    app.terminate()?;
    app.wait_exit(Duration::from_secs(30)).await?;
    let verified = crate::app::run_cli(&["audit", "verify"], &env, Duration::from_secs(60)).await?;
    assert!(verified.status.success(), "{verified}");
    assert!(vault.requests_matching("/sign") >= 1, "the shutdown checkpoint was signed in the vault");
    Ok(())
}

async fn a_hanging_vault_does_not_hang_the_probe(backend: Backend) -> Result<()> {
    let (vault, _dir, vault_env) = vault_site().await?;
    let mut builder = TestApp::builder(backend);
    for (k, v) in &vault_env {
        builder = builder.env(k, v.clone());
    }
    let app = builder.start().await?;
    app.get("/readyz").fetch().await?.expect(200);
    // A vault that hangs does not hang the probe: it answers 503 within its own deadline.
    vault.inject(Fault::slow(&format!("GET /keys/{KEK}"), Duration::from_secs(30), 10));
    let ready = app.get("/readyz").fetch().await?.expect(503);
    assert_eq!(ready["checks"]["kms"], "unavailable", "{}", ready.text);
    Ok(())
}

backend_tests!(key_vault_master_key_locks_and_unlocks_content, a_hanging_vault_does_not_hang_the_probe);

/// `CONCLAVE_DATABASE_AUTH=entra`: `conclave migrate` signs in to PostgreSQL with a token from
/// the Entra stand-in (scope `https://ossrdbms-aad.database.windows.net/.default`). The local
/// PostgreSQL trusts 127.0.0.1, so this proves the wiring (a token is fetched for the database
/// and the migration runs with it), not a password check: conclave-store's
/// `entra_password` tests show the token is the password sent at sign-in and is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sign_in_with_an_entra_token() -> Result<()> {
    let vault = StandIn::start().await?;
    vault.add_client_secret("conclave-server", "server-secret");
    let dir = TempDir::new()?;
    let ca = dir.path().join("vault-ca.pem");
    vault.write_ca(&ca)?;
    let db = crate::app::PgDatabase::create().await?;
    let env: Vec<(String, String)> = [
        ("CONCLAVE_DATABASE_URL", db.url()),
        ("CONCLAVE_DATABASE_AUTH", "entra".into()),
        ("CONCLAVE_AZURE_CA_FILE", ca.display().to_string()),
        ("AZURE_AUTHORITY_HOST", vault.url()),
        ("AZURE_TENANT_ID", "11111111-2222-3333-4444-555555555555".into()),
        ("AZURE_CLIENT_ID", "conclave-server".into()),
        ("AZURE_CLIENT_SECRET", "server-secret".into()),
        ("CONCLAVE_DATA_DIR", dir.path().display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let out = crate::app::run_cli(&["migrate"], &env, Duration::from_secs(60)).await?;
    assert!(out.status.success(), "{out}");
    assert_eq!(vault.token_requests(), 1, "one token, for the database");
    assert!(!out.all().contains("server-secret"), "the client secret is never logged: {out}");

    // Without the token endpoint's trust (no CA file) it refuses to start, naming the cause.
    let untrusted: Vec<_> = env.iter().filter(|(k, _)| k != "CONCLAVE_AZURE_CA_FILE").cloned().collect();
    let out = crate::app::run_cli(&["migrate"], &untrusted, Duration::from_secs(60)).await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.all().contains("Entra ID token for PostgreSQL"), "{out}");
    Ok(())
}
