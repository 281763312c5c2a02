//! Two `conclave serve` replicas on one PostgreSQL database (and one data folder, as a shared
//! volume would give them the same local key): a reply generated on A can be followed from B and
//! cancelled from B, and restarting B (whose sweeper runs at start) never fails A's live reply;
//! when A was paused long enough for B to sweep its reply, every stream still ends.

use std::time::{Duration, Instant};

use anyhow::Result;
use conclave_mock_provider::MockProvider;
use serde_json::json;

use crate::app::{start_mock, Backend, TestApp};
use crate::streaming::{check_events, slow, TEXT};

/// Replica A, then replica B on A's site, both with a lease of `lease` seconds.
async fn two_replicas(mock: &MockProvider, lease: u32) -> Result<(TestApp, TestApp)> {
    let a = TestApp::builder(Backend::Postgres)
        .provider(mock)
        .env("CONCLAVE_REPLY_LEASE_SECONDS", lease.to_string())
        .start()
        .await?;
    let b = replica_of(&a, mock, lease).await?;
    Ok((a, b))
}

async fn replica_of(a: &TestApp, mock: &MockProvider, lease: u32) -> Result<TestApp> {
    TestApp::builder(Backend::Postgres)
        .provider(mock)
        .env("CONCLAVE_REPLY_LEASE_SECONDS", lease.to_string())
        .alongside(a)
        .start()
        .await
}

async fn a_reply_on_one_replica_is_followed_from_another() -> Result<()> {
    let mock = start_mock().await?;
    mock.set_script(slow(TEXT, 24, Duration::from_millis(80)));
    // A 2 s lease: sweepers run every second while the reply is followed.
    let (a, b) = two_replicas(&mock, 2).await?;
    let (admin, conv) = a.admin_conversation().await?;

    let mut on_a = a.post_streamed(&admin.token, &conv, "follow me").await?;
    let opening = on_a.expect_event().await?;
    let reply_id = opening.json()["reply_id"].clone();

    let mut on_b = b.reply_events(&admin.token, &conv, &reply_id, None).await?;
    let (from_a, from_b) =
        tokio::join!(on_a.until_end(Duration::from_secs(20)), on_b.until_end(Duration::from_secs(20)));
    let from_a = check_events(&[vec![opening], from_a?].concat(), None, None)?;
    let from_b = check_events(&from_b?, Some(&reply_id), None)?;
    assert_eq!(from_a.text, TEXT);
    assert_eq!(from_b.text, TEXT, "B relays the whole reply");
    assert!(from_b.deltas >= 2, "B shows the text growing, not only at the end: {} deltas", from_b.deltas);
    assert_eq!(from_b.end.event, "done", "{}", from_b.end);
    let done = from_b.end.json();
    assert_eq!((&done["status"], &done["content"]), (&json!("complete"), &json!(TEXT)));
    assert_eq!(done["usage"], from_a.end.json()["usage"], "both ends carry the stored usage");

    // Resuming on B in the middle of a reply generated on A.
    mock.set_script(slow(TEXT, 16, Duration::from_millis(80)));
    let mut on_a = a.post_streamed(&admin.token, &conv, "again").await?;
    let opening = on_a.expect_event().await?;
    let reply_id = opening.json()["reply_id"].clone();
    let mut seen = vec![opening];
    while seen.len() < 4 {
        seen.push(on_a.expect_event().await?);
    }
    let last = seen.last().and_then(|e| e.id.clone()).unwrap_or_default();
    let last_n: usize = last.parse()?;
    drop(on_a);
    let mut on_b = b.reply_events(&admin.token, &conv, &reply_id, Some(&last)).await?;
    let rest = check_events(&on_b.until_end(Duration::from_secs(20)).await?, Some(&reply_id), Some(last_n))?;
    assert_eq!(rest.text, TEXT[last_n..], "resumed on B after byte {last}");
    Ok(())
}

async fn a_cancel_on_one_replica_stops_the_reply_on_another() -> Result<()> {
    let mock = start_mock().await?;
    // The default lease (30 s), as in production: the lease renewals (every 10 s) are not what
    // brings the cancel to A.
    let (a, b) = two_replicas(&mock, 30).await?;
    let (admin, conv) = a.admin_conversation().await?;

    // While text flows (40 chunks 150 ms apart, 6 s in all), and while the provider is quiet
    // (streaming, but 3 s before its first chunk): "the owning replica sees the request within
    // about 0.5 s".
    for (what, script, deltas) in [
        ("while text flows", slow(TEXT, 40, Duration::from_millis(150)), 2),
        ("while the provider is quiet", slow(TEXT, 4, Duration::from_secs(3)), 0),
    ] {
        mock.set_script(script);
        let mut on_a = a.post_streamed(&admin.token, &conv, what).await?;
        let mut seen = vec![on_a.expect_event().await?];
        let reply_id = seen[0].json()["reply_id"].clone();
        while seen.len() < 1 + deltas {
            seen.push(on_a.expect_event().await?);
        }
        // Past the save that follows the last chunk (or the start), so that only the cancel
        // changes anything.
        tokio::time::sleep(Duration::from_millis(600)).await;

        let asked = Instant::now();
        b.cancel_reply(&admin.token, &conv, &reply_id).await?.expect(202);
        seen.extend(on_a.until_end(Duration::from_secs(15)).await?);
        let took = asked.elapsed();
        let got = check_events(&seen, Some(&reply_id), None)?;
        let done = got.end.json();
        assert_eq!(got.end.event, "done", "{what}: {}", got.end);
        assert_eq!(done["status"], "cancelled", "{what}: {done}");
        assert_eq!(done["content"], got.text, "{what}");
        assert!(
            took < Duration::from_millis(1500),
            "{what}: A's stream ended {took:?} after the cancel on B (about 0.5 s expected)"
        );
        let stored = b.message(&admin.token, &conv, &reply_id).await?;
        assert_eq!((&stored["status"], &stored["content"]), (&json!("cancelled"), &json!(got.text)), "{what}");
    }
    Ok(())
}

async fn restarting_another_replica_never_fails_a_live_reply() -> Result<()> {
    let mock = start_mock().await?;
    // 3 s: longer than a lease.
    mock.set_script(slow(TEXT, 20, Duration::from_millis(150)));
    let (a, mut b) = two_replicas(&mock, 2).await?;
    let (admin, conv) = a.admin_conversation().await?;

    let mut on_a = a.post_streamed(&admin.token, &conv, "survive").await?;
    let mut events = vec![on_a.expect_event().await?];
    let reply_id = events[0].json()["reply_id"].clone();
    events.push(on_a.expect_event().await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.sigkill();
    drop(b);
    let b = replica_of(&a, &mock, 2).await?;
    // B follows it too, after its sweeper has run at start.
    let mut on_b = b.reply_events(&admin.token, &conv, &reply_id, None).await?;

    let (rest_a, from_b) =
        tokio::join!(on_a.until_end(Duration::from_secs(20)), on_b.until_end(Duration::from_secs(20)));
    events.extend(rest_a?);
    let got = check_events(&events, None, None)?;
    assert_eq!(got.end.event, "done", "A's reply ends normally: {}", got.end);
    assert_eq!((&got.end.json()["status"], &got.text), (&json!("complete"), &TEXT.to_owned()));
    let from_b = check_events(&from_b?, Some(&reply_id), None)?;
    assert_eq!((from_b.end.event.as_str(), from_b.text.as_str()), ("done", TEXT));
    let stored = b.message(&admin.token, &conv, &reply_id).await?;
    assert_eq!((&stored["status"], &stored["content"]), (&json!("complete"), &json!(TEXT)));
    let swept = b.logs().into_iter().chain(a.logs()).filter(|l| l.contains("marked replies failed")).count();
    assert_eq!(swept, 0, "no sweeper failed a reply");
    Ok(())
}

/// A replica that stops answering for longer than the lease (a paused VM, a starved container)
/// has its reply swept as failed by another replica. When it runs again, every stream of that
/// reply, on either replica, still ends with exactly one `done` or `error`, agreeing with what is
/// stored; none hangs.
async fn streams_end_when_a_paused_replica_finds_its_reply_swept() -> Result<()> {
    let mock = start_mock().await?;
    mock.set_script(slow(TEXT, 40, Duration::from_millis(150)));
    let (a, b) = two_replicas(&mock, 2).await?;
    let (admin, conv) = a.admin_conversation().await?;

    let mut on_a = a.post_streamed(&admin.token, &conv, "pause me").await?;
    let mut from_a = vec![on_a.expect_event().await?, on_a.expect_event().await?];
    let reply_id = from_a[0].json()["reply_id"].clone();
    let mut on_b = b.reply_events(&admin.token, &conv, &reply_id, None).await?;

    a.pause()?;
    // The lease (2 s) expires and B's sweeper (every second) marks the reply failed.
    let swept = b.wait_for_reply(&admin.token, &conv, &reply_id, Duration::from_secs(8)).await;
    a.resume()?;
    let swept = swept?;
    assert_eq!(swept["status"], "failed", "swept while its replica was paused: {swept}");

    let (rest_a, rest_b) = tokio::join!(on_a.until_end(Duration::from_secs(5)), on_b.until_end(Duration::from_secs(5)));
    from_a.extend(rest_a.map_err(|e| e.context("the stream on the paused replica A, after it resumed"))?);
    let from_b = rest_b.map_err(|e| e.context("the stream on B"))?;
    let stored = b.message(&admin.token, &conv, &reply_id).await?;
    for (who, events) in [("A", from_a), ("B", from_b)] {
        let got = check_events(&events, Some(&reply_id), None).map_err(|e| e.context(who))?;
        match got.end.event.as_str() {
            "error" => assert_eq!(stored["status"], "failed", "{who} ended with an error, stored: {stored}"),
            _ => assert_eq!(got.end.json()["status"], stored["status"], "{who}'s done vs stored: {stored}"),
        }
    }
    assert_ne!(stored["status"], "streaming");
    Ok(())
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_end_when_a_paused_replica_finds_its_reply_swept() -> anyhow::Result<()> {
        super::streams_end_when_a_paused_replica_finds_its_reply_swept().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_on_one_replica_is_followed_from_another() -> anyhow::Result<()> {
        super::a_reply_on_one_replica_is_followed_from_another().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_on_one_replica_stops_the_reply_on_another() -> anyhow::Result<()> {
        super::a_cancel_on_one_replica_stops_the_reply_on_another().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarting_another_replica_never_fails_a_live_reply() -> anyhow::Result<()> {
        super::restarting_another_replica_never_fails_a_live_reply().await
    }
}

/// The same two replicas with their notices carried by Redis pub/sub (`CONCLAVE_REDIS_URL`):
/// B follows A's reply as it grows and B's cancel stops it on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_through_redis_follow_and_cancel_across_replicas() -> Result<()> {
    let mock = start_mock().await?;
    let redis = "redis://127.0.0.1:6379";
    let a = TestApp::builder(Backend::Postgres).provider(&mock).env("CONCLAVE_REDIS_URL", redis).start().await?;
    let b = TestApp::builder(Backend::Postgres)
        .provider(&mock)
        .env("CONCLAVE_REDIS_URL", redis)
        .alongside(&a)
        .start()
        .await?;
    assert!(a.logs().iter().any(|l| l.contains("reply notices shared through Redis")), "A uses Redis");
    let (admin, conv) = a.admin_conversation().await?;

    mock.set_script(slow(TEXT, 24, Duration::from_millis(80)));
    let mut on_a = a.post_streamed(&admin.token, &conv, "follow me").await?;
    let opening = on_a.expect_event().await?;
    let reply_id = opening.json()["reply_id"].clone();
    let mut on_b = b.reply_events(&admin.token, &conv, &reply_id, None).await?;
    let (from_a, from_b) =
        tokio::join!(on_a.until_end(Duration::from_secs(20)), on_b.until_end(Duration::from_secs(20)));
    let from_a = check_events(&[vec![opening], from_a?].concat(), None, None)?;
    let from_b = check_events(&from_b?, Some(&reply_id), None)?;
    assert_eq!(from_b.text, from_a.text, "B saw the whole reply");

    mock.set_script(slow(TEXT, 40, Duration::from_millis(150)));
    let mut on_a = a.post_streamed(&admin.token, &conv, "stop me").await?;
    let mut seen = vec![on_a.expect_event().await?];
    let reply_id = seen[0].json()["reply_id"].clone();
    seen.push(on_a.expect_event().await?);
    b.cancel_reply(&admin.token, &conv, &reply_id).await?.expect(202);
    seen.extend(on_a.until_end(Duration::from_secs(15)).await?);
    let got = check_events(&seen, Some(&reply_id), None)?;
    assert_eq!(got.end.json()["status"], "cancelled", "{}", got.end);
    Ok(())
}
