//! The audit log end to end: signed checkpoints written at shutdown, `conclave audit verify`
//! (offline, server stopped) and `GET /api/v1/audit/verify` naming tampered events, removed
//! newest events and forged checkpoints; `conclave audit public-key`; `conclave audit export`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::app::{run_cli, Backend, Fetch, Site, TestApp};

const QUICK: Duration = Duration::from_secs(60);

backend_tests!(
    offline_and_online_verify_name_a_tampered_event,
    a_checkpoint_catches_removed_newest_events_and_a_forged_one_is_named,
    export_writes_the_events_as_json_lines,
    checkpoints_are_written_periodically_to_an_object_store_container,
);

fn site_var(site: &Site, name: &str) -> String {
    site.env().into_iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or_default()
}

/// A site with an admin, three agents and a checkpoint (written at graceful shutdown).
async fn site_with_events(backend: Backend) -> Result<(Site, String)> {
    let mut app = TestApp::builder(backend).start().await?;
    let admin = app.admin().await?;
    for i in 0..3 {
        app.create_agent(&admin.token, json!({"name": format!("Agent {i}"), "model": "conclave-demo"})).await?;
    }
    app.terminate()?;
    let status = app.wait_exit(Duration::from_secs(30)).await?;
    anyhow::ensure!(status.success(), "the server should stop cleanly: {status}");
    Ok((app.into_site(), admin.email))
}

/// Runs SQL on the site's database as an attacker with database access would; on PostgreSQL
/// the append-only triggers are dropped first.
async fn tamper(backend: Backend, site: &Site, sql: &[&str]) -> Result<()> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}/conclave.db", site_var(site, "CONCLAVE_DATA_DIR"));
            let mut db = sqlx::SqliteConnection::connect(&url).await?;
            for s in sql {
                sqlx::raw_sql(s).execute(&mut db).await.with_context(|| s.to_string())?;
            }
            db.close().await?;
        }
        Backend::Postgres => {
            let mut db = sqlx::PgConnection::connect(&site_var(site, "CONCLAVE_DATABASE_URL")).await?;
            sqlx::raw_sql(
                "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events; \
                 DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints",
            )
            .execute(&mut db)
            .await?;
            for s in sql {
                sqlx::raw_sql(s).execute(&mut db).await.with_context(|| s.to_string())?;
            }
            db.close().await?;
        }
    }
    Ok(())
}

async fn offline_and_online_verify_name_a_tampered_event(backend: Backend) -> Result<()> {
    let (site, admin_email) = site_with_events(backend).await?;
    let env = site.env();
    let clean = run_cli(&["audit", "verify"], &env, QUICK).await?;
    assert!(clean.status.success(), "an untouched log verifies: {clean}");
    assert!(clean.stdout.contains("agree (newest at event 4)"), "{clean}");
    assert!(clean.stdout.contains("OK"), "{clean}");

    // The public key, kept by an auditor, verifies the same log.
    let pem = run_cli(&["audit", "public-key"], &env, QUICK).await?;
    assert!(pem.status.success() && pem.stdout.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let key_file = std::path::PathBuf::from(site_var(&site, "CONCLAVE_DATA_DIR")).join("auditor.pem");
    std::fs::write(&key_file, &pem.stdout)?;
    let with_key = run_cli(&["audit", "verify", "--public-key", &key_file.to_string_lossy()], &env, QUICK).await?;
    assert!(with_key.status.success(), "{with_key}");

    tamper(backend, &site, &["UPDATE audit_events SET action = 'agent.read' WHERE seq = 3"]).await?;
    let out = run_cli(&["audit", "verify"], &env, QUICK).await?;
    assert!(!out.status.success(), "a tampered log must fail: {out}");
    assert!(out.stdout.contains("first bad event: seq 3"), "{out}");

    // The API names the same event.
    let app = TestApp::builder(backend).site(site).start().await?;
    let admin = app.login(&admin_email, crate::app::PASSWORD).await?;
    let v = app.get("/api/v1/audit/verify").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!((v["ok"].as_bool(), v["first_bad_seq"].as_i64()), (Some(false), Some(3)), "{}", v.text);
    Ok(())
}

async fn a_checkpoint_catches_removed_newest_events_and_a_forged_one_is_named(backend: Backend) -> Result<()> {
    let (site, _) = site_with_events(backend).await?;
    let env = site.env();
    // Events 3 and 4 removed, and the tenant's counter and head rewound to event 2: the chain
    // alone looks whole, the checkpoint (in the database and in the folder) does not.
    tamper(
        backend,
        &site,
        &[
            "DELETE FROM audit_events WHERE seq > 2",
            "UPDATE tenants SET audit_seq = 2, audit_head = (SELECT hash FROM audit_events e WHERE e.tenant_id = tenants.tenant_id AND e.seq = 2)",
        ],
    )
    .await?;
    let out = run_cli(&["audit", "verify"], &env, QUICK).await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.stdout.contains("first bad event: seq 3"), "{out}");
    assert!(out.stdout.contains("newest events removed"), "{out}");

    // Even with the database's copy of the checkpoint deleted, the folder's copy remembers.
    tamper(backend, &site, &["DELETE FROM audit_checkpoints"]).await?;
    let out = run_cli(&["audit", "verify"], &env, QUICK).await?;
    assert!(!out.status.success() && out.stdout.contains("naming event 4"), "{out}");

    // An edited checkpoint line (its seq moved back to match the shortened log) fails its
    // signature and is named by file and line.
    let dir = std::path::PathBuf::from(site_var(&site, "CONCLAVE_DATA_DIR")).join("audit-checkpoints");
    let file = std::fs::read_dir(&dir)?.next().context("a checkpoint file")??.path();
    let text = std::fs::read_to_string(&file)?;
    let mut doc: Value = serde_json::from_str(text.lines().next().context("a line")?)?;
    doc["seq"] = json!(2);
    let forged = format!("{doc}\n");
    // The sink is append-only for the server; an attacker with the disk can still rewrite it.
    std::fs::write(&file, forged)?;
    let out = run_cli(&["audit", "verify"], &env, QUICK).await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.stdout.contains(&format!("bad checkpoint at {}:1 naming event 2", file.display())), "{out}");
    assert!(out.stdout.contains("signature does not verify"), "{out}");
    Ok(())
}

async fn export_writes_the_events_as_json_lines(backend: Backend) -> Result<()> {
    let (site, admin_email) = site_with_events(backend).await?;
    let env = site.env();
    let out_file = std::path::PathBuf::from(site_var(&site, "CONCLAVE_DATA_DIR")).join("audit.jsonl");
    let out =
        run_cli(&["audit", "export", "--after-seq", "1", "--out", &out_file.to_string_lossy()], &env, QUICK).await?;
    assert!(out.status.success(), "{out}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&out_file)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 3, 4]);

    let app = TestApp::builder(backend).site(site).start().await?;
    let admin = app.login(&admin_email, crate::app::PASSWORD).await?;
    let listed = app.get("/api/v1/audit/events?limit=200").bearer_auth(&admin.token).fetch().await?.expect(200);
    let items = listed["items"].as_array().context("items")?;
    assert_eq!(&items[1..4], &lines[..], "the export equals the events list");
    assert_eq!(items[4]["action"], "audit.exported", "the command-line export is audited");
    assert_eq!(items[4]["actor_kind"], "command_line");
    let streamed = app.get("/api/v1/audit/export").bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(streamed.header("content-type").as_deref(), Some("application/x-ndjson"));
    assert_eq!(streamed.text.lines().count(), 6, "{}", streamed.text);
    Ok(())
}

/// With an interval of one second and a container (the object store's local file system
/// backend), a running server writes a checkpoint object without being stopped; the offline
/// verifier reads the container.
async fn checkpoints_are_written_periodically_to_an_object_store_container(backend: Backend) -> Result<()> {
    let container = crate::app::TempDir::new()?;
    let url = format!("file://{}", container.path().display());
    let mut app = TestApp::builder(backend)
        .env("CONCLAVE_AUDIT_CHECKPOINT_SECONDS", "1")
        .env("CONCLAVE_AUDIT_CHECKPOINT_URL", url.clone())
        .start()
        .await?;
    let admin = app.admin().await?;
    app.create_agent(&admin.token, json!({"model": "conclave-demo"})).await?;
    // No signal leaves the server when a checkpoint is written: watch the container, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let objects = loop {
        let found: Vec<std::path::PathBuf> = std::fs::read_dir(container.path())?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .flat_map(|tenant| std::fs::read_dir(tenant.path()).into_iter().flatten().filter_map(|e| e.ok()))
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        if !found.is_empty() {
            break found;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no checkpoint object within 30 s:\n{}",
            app.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let doc: Value = serde_json::from_str(std::fs::read_to_string(&objects[0])?.trim())?;
    assert_eq!(doc["format"], "conclave-audit-checkpoint");
    assert!(doc["seq"].as_i64().unwrap_or(0) >= 1, "{doc}");
    // Killed without a shutdown checkpoint: the periodic ones are there already.
    app.sigkill();
    let site = app.into_site();
    let out = run_cli(&["audit", "verify", "--checkpoints", &url], &site.env(), QUICK).await?;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("checkpoint(s) agree (newest at event"), "{out}");
    Ok(())
}
