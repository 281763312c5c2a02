//! Graceful shutdown: SIGTERM lets a reply in progress finish and be stored, then the process
//! exits with status 0.

use std::time::Duration;

use anyhow::Result;
use conclave_mock_provider::Script;
use serde_json::json;

use crate::app::{s, start_mock, Backend, Fetch, TestApp, PROVIDER_KEY};

async fn sigterm_lets_a_reply_finish(backend: Backend) -> Result<()> {
    let mock = start_mock().await?;
    let mut app =
        TestApp::builder(backend).provider(&mock).env("CONCLAVE_SHUTDOWN_GRACE_SECONDS", "15").start().await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    mock.set_script(Script::echo().with_api_key(PROVIDER_KEY).with_response_delay(Duration::from_secs(2)));

    let request = app
        .post(&format!("/api/v1/conversations/{}/messages", s(&conv["id"])))
        .bearer_auth(&admin.token)
        .json(&json!({"content": "finish me"}));
    let in_flight = tokio::spawn(request.fetch());
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.terminate()?;

    let resp = in_flight.await??.expect(201);
    assert_eq!(resp["assistant_message"]["content"], "echo: finish me");
    assert_eq!(resp["assistant_message"]["status"], "complete");
    let status = app.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "exit status after SIGTERM: {status}");

    // What it finished is there after a restart.
    let app = TestApp::builder(backend).provider(&mock).site(app.into_site()).start().await?;
    let session = app.login(&admin.email, &admin.password).await?;
    let msgs = app.messages(&session.token, &conv["id"]).await?;
    let stored: Vec<(String, String)> = msgs.iter().map(|m| (s(&m["content"]), s(&m["status"]))).collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1], ("echo: finish me".to_owned(), "complete".to_owned()));
    Ok(())
}

backend_tests!(sigterm_lets_a_reply_finish);
