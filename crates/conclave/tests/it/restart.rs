//! A server killed (`kill -9`) while streaming: after a restart on the same data the reply is
//! `failed` with the text saved before the kill, by the lease sweeper. A slow provider is not a
//! dead server: a live process's reply is never swept. SIGTERM lets a streamed reply finish.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use conclave_mock_provider::Script;
use serde_json::json;

use crate::app::{start_mock, Backend, TestApp, PROVIDER_KEY};
use crate::streaming::{check_events, slow, TEXT};

async fn a_reply_cut_by_kill_9_is_failed_after_restart_with_its_saved_text(backend: Backend) -> Result<()> {
    let mock = start_mock().await?;
    // 40 chunks 100 ms apart: 4 s, of which about 1 s happens before the kill.
    mock.set_script(slow(TEXT, 40, Duration::from_millis(100)));
    let app = TestApp::builder(backend).provider(&mock).env("CONCLAVE_REPLY_LEASE_SECONDS", "2").start().await?;
    let (admin, conv) = app.admin_conversation().await?;

    let mut stream = app.post_streamed(&admin.token, &conv, "the question stays").await?;
    let opening = stream.expect_event().await?;
    let user_id = opening.json()["id"].clone();
    let reply_id = opening.json()["reply_id"].clone();
    let first_delta = Instant::now();
    let mut streamed = String::new();
    while first_delta.elapsed() < Duration::from_millis(1000) {
        let e = stream.expect_event().await?;
        assert_eq!(e.event, "delta", "the reply ended before the kill: {e}");
        streamed.push_str(e.json()["text"].as_str().unwrap_or_default());
    }
    let site = app.into_site();
    drop(stream);

    let killed = Instant::now();
    let app =
        TestApp::builder(backend).provider(&mock).site(site).env("CONCLAVE_REPLY_LEASE_SECONDS", "2").start().await?;
    let admin = app.login(&admin.email, &admin.password).await?;
    let reply = app.wait_for_reply(&admin.token, &conv, &reply_id, Duration::from_secs(10)).await?;
    let took = killed.elapsed();
    assert_eq!(reply["status"], "failed", "a reply whose server died is failed: {reply}");
    let saved = reply["content"].as_str().context("content")?;
    assert!(!saved.is_empty(), "1 s of streaming was saved (every 0.5 s) before the kill: {reply}");
    assert!(
        TEXT.starts_with(saved) && saved.len() < TEXT.len(),
        "the saved part of the reply: {saved:?} (streamed before the kill: {streamed:?})"
    );
    assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "a failed reply says why: {reply}");
    assert!(took < Duration::from_secs(8), "swept {took:?} after the kill with a 2 s lease");

    let user = app.message(&admin.token, &conv, &user_id).await?;
    assert_eq!(user["content"], "the question stays");
    assert_eq!(user["status"], "complete");

    // Its events replay what was saved and end with an error.
    let mut replay = app.reply_events(&admin.token, &conv, &reply_id, None).await?;
    let replayed = check_events(&replay.until_end(Duration::from_secs(10)).await?, Some(&reply_id), None)?;
    assert_eq!(replayed.end.event, "error", "{}", replayed.end);
    assert_eq!(replayed.text, saved);

    // The conversation goes on.
    mock.set_script(Script::echo().with_api_key(PROVIDER_KEY));
    app.post_message(&admin.token, &conv, "again").await?.expect(201);
    Ok(())
}

/// The lease is only for dead processes: a provider that takes longer than the lease to answer
/// (or to send its next chunk) must not get the reply of a live server marked `failed`. With a
/// 2 s lease the sweepers run every second, so a 3.1 s wait always spans a sweep after expiry.
async fn a_slow_provider_is_not_taken_for_a_dead_server(backend: Backend) -> Result<()> {
    let mock = start_mock().await?;
    let app = TestApp::builder(backend).provider(&mock).env("CONCLAVE_REPLY_LEASE_SECONDS", "2").start().await?;
    let (admin, conv) = app.admin_conversation().await?;

    for (what, script) in [
        (
            "first byte after 3.1 s",
            slow(TEXT, 2, Duration::from_millis(10)).with_response_delay(Duration::from_millis(3100)),
        ),
        ("3.1 s before the first chunk", slow(TEXT, 1, Duration::from_millis(3100))),
    ] {
        mock.set_script(script);
        let mut stream = app.post_streamed(&admin.token, &conv, what).await?;
        let events = stream.until_end(Duration::from_secs(15)).await.context(what)?;
        let got = check_events(&events, None, None).context(what)?;
        assert_eq!(got.end.event, "done", "{what}: {}", got.end);
        assert_eq!(got.end.json()["status"], "complete", "{what}: {}", got.end);
        assert_eq!(got.text, TEXT, "{what}");
        let stored = app.message(&admin.token, &conv, &got.reply_id).await?;
        assert_eq!((&stored["status"], &stored["content"]), (&json!("complete"), &json!(TEXT)), "{what}");
    }
    Ok(())
}

async fn sigterm_lets_a_streamed_reply_finish(backend: Backend) -> Result<()> {
    let mock = start_mock().await?;
    mock.set_script(slow(TEXT, 12, Duration::from_millis(150)));
    let mut app =
        TestApp::builder(backend).provider(&mock).env("CONCLAVE_SHUTDOWN_GRACE_SECONDS", "15").start().await?;
    let (admin, conv) = app.admin_conversation().await?;

    let mut stream = app.post_streamed(&admin.token, &conv, "finish me").await?;
    let mut events = vec![stream.expect_event().await?, stream.expect_event().await?];
    app.terminate()?;
    events.extend(stream.until_end(Duration::from_secs(15)).await?);
    let got = check_events(&events, None, None)?;
    assert_eq!(got.end.event, "done", "{}", got.end);
    assert_eq!(got.end.json()["status"], "complete", "{}", got.end);
    assert_eq!(got.text, TEXT);
    let status = app.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let app = TestApp::builder(backend).provider(&mock).site(app.into_site()).start().await?;
    let admin = app.login(&admin.email, &admin.password).await?;
    let stored = app.message(&admin.token, &conv, &got.reply_id).await?;
    assert_eq!((&stored["status"], &stored["content"]), (&json!("complete"), &json!(TEXT)));
    Ok(())
}

backend_tests!(
    a_reply_cut_by_kill_9_is_failed_after_restart_with_its_saved_text,
    a_slow_provider_is_not_taken_for_a_dead_server,
    sigterm_lets_a_streamed_reply_finish,
);
