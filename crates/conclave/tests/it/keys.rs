//! `conclave keys`: status, rotation with resumable rewrap, and retirement, run as commands
//! against a stopped server's site; the data still opens after a rotation.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::app::{run_cli, s, Backend, TestApp};

async fn rotate_then_retire_from_the_command_line(backend: Backend) -> Result<()> {
    let app = TestApp::start(backend).await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({"model": "conclave-demo", "name": "Keeper"})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], Some("Rotated title")).await?;
    let lib = app
        .post("/api/v1/libraries")
        .bearer_auth(&admin.token)
        .json(&json!({"name": "Rotated library"}))
        .send()
        .await?;
    assert_eq!(lib.status(), 201);
    let site = app.into_site();
    let env = site.env();

    let status = run_cli(&["keys", "status"], &env, Duration::from_secs(60)).await?;
    assert!(status.status.success(), "{status}");
    assert!(status.stdout.contains("current version 1"), "{status}");
    assert!(status.stdout.contains("1 tenant, 1 library, 1 conversation keys"), "{status}");

    let refused = run_cli(&["keys", "retire", "--version", "1"], &env, Duration::from_secs(60)).await?;
    assert!(!refused.status.success(), "a version in use is not retired: {refused}");
    assert!(refused.all().contains("still wrapped under version 1"), "{refused}");

    let rotated = run_cli(&["keys", "rotate"], &env, Duration::from_secs(60)).await?;
    assert!(rotated.status.success(), "{rotated}");
    assert!(rotated.stdout.contains("version 2 current; 3 keys rewrapped"), "{rotated}");
    let resumed = run_cli(&["keys", "rotate", "--resume"], &env, Duration::from_secs(60)).await?;
    assert!(resumed.stdout.contains("0 keys rewrapped"), "nothing left to do: {resumed}");
    let retired = run_cli(&["keys", "retire", "--version", "1"], &env, Duration::from_secs(60)).await?;
    assert!(retired.status.success(), "{retired}");
    let status = run_cli(&["keys", "status"], &env, Duration::from_secs(60)).await?;
    assert!(status.stdout.contains("current version 2"), "{status}");

    let app = TestApp::builder(backend).site(site).start().await?;
    let admin = app.login(&admin.email, &admin.password).await?;
    let fetched: serde_json::Value = app
        .get(&format!("/api/v1/conversations/{}", s(&conv["id"])))
        .bearer_auth(&admin.token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(s(&fetched["title"]), "Rotated title");
    let libs: serde_json::Value = app.get("/api/v1/libraries").bearer_auth(&admin.token).send().await?.json().await?;
    assert_eq!(s(&libs["items"][0]["name"]), "Rotated library");
    Ok(())
}

backend_tests!(rotate_then_retire_from_the_command_line);
