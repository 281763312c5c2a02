//! A provider that errs, talks nonsense, hangs, is slow or is gone: the caller gets 502/504 as a
//! problem, the user's message is kept, and no reply is ever shown as complete.

use std::time::Duration;

use anyhow::Result;
use conclave_mock_provider::{Failure, Script};
use serde_json::{json, Value};

use crate::app::{Backend, Resp, Session, TestApp, PROVIDER_KEY};

/// Posts `content` in a new conversation, expects a problem with one of `statuses`, and checks
/// what was stored.
async fn post_expecting_failure(
    app: &TestApp,
    who: &Session,
    agent: &Value,
    content: &str,
    statuses: &[u16],
) -> Result<Resp> {
    let conv = app.create_conversation(&who.token, &agent["id"], Some(content)).await?;
    let resp = app.post_message(&who.token, &conv["id"], content).await?.problem_in(statuses);
    let msgs = app.messages(&who.token, &conv["id"]).await?;
    let users: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "user").collect();
    assert_eq!(users.len(), 1, "{content}: the user message is kept: {msgs:?}");
    assert_eq!(users[0]["content"], content, "{content}: intact");
    for m in msgs.iter().filter(|m| m["role"] == "assistant") {
        assert_eq!(m["status"], "failed", "{content}: a reply stored for a failed call is `failed`: {m}");
    }
    Ok(resp)
}

async fn provider_failures_are_reported_and_nothing_is_lost(backend: Backend) -> Result<()> {
    let mock = crate::app::start_mock().await?;
    let app = TestApp::builder(backend).provider(&mock).env("CONCLAVE_PROVIDER_TIMEOUT_SECONDS", "1").start().await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;
    let key = PROVIDER_KEY;

    mock.set_script(
        Script::text("never").with_api_key(key).with_failure(Failure::Status { status: 500, message: "boom".into() }),
    );
    post_expecting_failure(&app, &admin, &agent, "status 500", &[502]).await?;

    mock.set_script(
        Script::text("never")
            .with_api_key(key)
            .with_failure(Failure::Status { status: 429, message: "slow down".into() }),
    );
    post_expecting_failure(&app, &admin, &agent, "status 429", &[429, 502, 503]).await?;

    mock.set_script(Script::text("never").with_api_key(key).with_failure(Failure::Garbage));
    post_expecting_failure(&app, &admin, &agent, "garbage", &[502]).await?;

    mock.set_script(
        Script::text("partial answer here").with_api_key(key).with_chunks(4).with_failure(Failure::DropAfterChunks(2)),
    );
    post_expecting_failure(&app, &admin, &agent, "dropped after two chunks", &[502]).await?;

    mock.set_script(
        Script::text("partial answer here").with_api_key(key).with_chunks(4).with_failure(Failure::ErrorAfterChunks(2)),
    );
    post_expecting_failure(&app, &admin, &agent, "error after two chunks", &[502]).await?;

    mock.set_script(Script::text("never").with_api_key(key).with_failure(Failure::Hang));
    post_expecting_failure(&app, &admin, &agent, "hang", &[504]).await?;

    mock.set_script(Script::text("too late").with_api_key(key).with_response_delay(Duration::from_millis(2500)));
    post_expecting_failure(&app, &admin, &agent, "slow response", &[504]).await?;

    // A wrong key on the server's side is the provider refusing: not the caller's fault.
    mock.set_script(Script::text("never").with_api_key("another-key"));
    post_expecting_failure(&app, &admin, &agent, "wrong provider key", &[502]).await?;

    // It recovers once the provider does.
    mock.set_script(Script::echo().with_api_key(key));
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    let ok = app.post_message(&admin.token, &conv["id"], "all good?").await?.expect(201);
    assert_eq!(ok["assistant_message"]["content"], "echo: all good?");
    assert_eq!(ok["assistant_message"]["status"], "complete");

    // Gone altogether.
    mock.stop().await;
    post_expecting_failure(&app, &admin, &agent, "connection refused", &[502]).await?;
    Ok(())
}

backend_tests!(provider_failures_are_reported_and_nothing_is_lost);
