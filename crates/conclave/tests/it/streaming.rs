//! Streamed replies over real HTTP: the event sequence and its ids, resuming with `Last-Event-ID`,
//! replaying a finished reply, cancelling, a client that goes away, provider failures before and
//! during the stream, and the per-user and per-server limits on replies being generated.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use conclave_mock_provider::{Failure, MockProvider, Script, Usage};
use serde_json::{json, Value};

use crate::app::{is_utc_timestamp, s, start_mock, Backend, EventStream, Fetch, SseEvent, TestApp, PROVIDER_KEY};

/// A reply with multi-byte characters, quotes and a newline, so that byte offsets and escaping
/// are both exercised.
pub(crate) const TEXT: &str = "Line one: «héllo» \"quoted\" and \\backslash\\.\nLine two — 日本語 ✓, then enough \
                               plain words to split into many chunks of a few characters each, ending here.";

/// A script for the harness's key that streams `text` in `chunks` parts, `delay` apart.
pub(crate) fn slow(text: &str, chunks: usize, delay: Duration) -> Script {
    Script::text(text).with_api_key(PROVIDER_KEY).with_chunks(chunks).with_chunk_delay(delay)
}

/// What a (possibly resumed) stream carried.
#[derive(Debug)]
pub(crate) struct Streamed {
    /// The `message` event's data, when the stream started at the beginning.
    pub message: Option<Value>,
    pub reply_id: Value,
    /// The deltas' text, concatenated.
    pub text: String,
    pub deltas: usize,
    /// The final `done` or `error` event.
    pub end: SseEvent,
}

/// Checks a stream's events against the contract and returns what they carried.
///
/// `after` is the offset the stream resumed after (`None`: from the start, so it must open with
/// `message` id 0). Delta ids must be the end offset of their text and strictly increase; the
/// stream ends with exactly one `done` or `error` whose id is the text's length + 1.
pub(crate) fn check_events(events: &[SseEvent], reply_id: Option<&Value>, after: Option<usize>) -> Result<Streamed> {
    let listing = || events.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n");
    ensure!(!events.is_empty(), "no events");
    let mut rest = events;
    let mut message = None;
    let mut reply_id = reply_id.cloned();
    let mut offset = match after {
        None => {
            let first = &events[0];
            ensure!(first.event == "message", "the first event is not `message`:\n{}", listing());
            ensure!(first.id.as_deref() == Some("0"), "the `message` event's id is not 0: {first}");
            let data = first.json();
            ensure!(data["role"] == "user", "the `message` event carries the user message: {data}");
            ensure!(data["reply_id"].is_string(), "the `message` event has no reply_id: {data}");
            ensure!(data["reply_id"] != data["id"], "reply_id is the user message's own id: {data}");
            if let Some(id) = &reply_id {
                ensure!(data["reply_id"] == *id, "reply_id {} is not {id}", data["reply_id"]);
            }
            reply_id = Some(data["reply_id"].clone());
            message = Some(data);
            rest = &events[1..];
            0
        }
        Some(n) => n,
    };
    let reply_id = reply_id.context("no reply id to check against")?;
    let start = offset;
    let mut text = String::new();
    let mut deltas = 0;
    let (end, middle) = rest.split_last().context("no events after `message`")?;
    for e in middle {
        ensure!(e.event == "delta", "a `{}` event before the end:\n{}", e.event, listing());
        let data = e.json();
        ensure!(data["message_id"] == reply_id, "delta for another message: {e}");
        let piece = data["text"].as_str().with_context(|| format!("delta without text: {e}"))?;
        ensure!(!piece.is_empty(), "an empty delta: {e}");
        let id = e.offset().with_context(|| format!("delta id is not a decimal offset: {e}"))?;
        ensure!(id > offset, "delta ids do not increase ({id} after {offset}):\n{}", listing());
        ensure!(
            id == offset + piece.len(),
            "delta id {id} is not the end offset {} of its text (previous {offset}): {e}\nAll events:\n{}",
            offset + piece.len(),
            listing()
        );
        offset = id;
        text.push_str(piece);
        deltas += 1;
    }
    ensure!(end.is_end(), "the stream does not end with done or error:\n{}", listing());
    let end_id = end.offset().with_context(|| format!("end id is not a decimal offset: {end}"))?;
    ensure!(end_id == offset + 1, "the end event's id {end_id} is not the text length + 1 ({}): {end}", offset + 1);
    ensure!(start <= offset, "resumed after {start} yet ended at {offset}");
    Ok(Streamed { message, reply_id, text, deltas, end: end.clone() })
}

/// Checks an assistant message object (as in `done` and the listing).
#[track_caller]
pub(crate) fn assert_assistant(m: &Value, conversation_id: &Value, reply_id: &Value) {
    assert_eq!(m["id"], *reply_id, "{m}");
    assert_eq!(m["conversation_id"], *conversation_id, "{m}");
    assert_eq!(m["role"], "assistant", "{m}");
    assert!(m["content"].is_string(), "{m}");
    assert!(is_utc_timestamp(&m["created_at"]), "{m}");
}

/// Checks an `error` event: a problem object naming the reply and carrying its partial text.
#[track_caller]
pub(crate) fn assert_error_event(end: &SseEvent, stream: &EventStream, reply_id: &Value) -> Value {
    assert_eq!(end.event, "error", "expected an error event, got {end}");
    let p = end.json();
    for key in ["type", "title", "detail", "request_id"] {
        assert!(p[key].is_string(), "error event without string `{key}`: {p}");
    }
    assert!(p["status"].as_u64().is_some_and(|s| (400..600).contains(&s)), "error event status: {p}");
    let header = stream.headers.get("x-request-id").and_then(|v| v.to_str().ok());
    assert_eq!(p["request_id"].as_str(), header, "error event request_id vs the x-request-id header: {p}");
    assert_eq!(p["message_id"], *reply_id, "{p}");
    assert!(p["partial_content"].is_string(), "error event without partial_content: {p}");
    p
}

async fn setup(backend: Backend, script: Script) -> Result<(TestApp, MockProvider, crate::app::Session, Value)> {
    let mock = start_mock().await?;
    mock.set_script(script);
    let app = TestApp::builder(backend).provider(&mock).start().await?;
    let (admin, conv) = app.admin_conversation().await?;
    Ok((app, mock, admin, conv))
}

async fn a_streamed_reply_follows_the_event_contract(backend: Backend) -> Result<()> {
    let script = slow(TEXT, 16, Duration::from_millis(30))
        .with_usage(Usage::Report { prompt_tokens: 12, completion_tokens: 34 });
    let (app, _mock, admin, conv) = setup(backend, script).await?;

    let mut stream = app.post_streamed(&admin.token, &conv, "Tell me something").await?;
    let events = stream.until_end(Duration::from_secs(20)).await?;
    let got = check_events(&events, None, None)?;
    let message = got.message.as_ref().expect("from the start");
    assert_eq!(message["content"], "Tell me something");
    assert_eq!(message["conversation_id"], conv);
    assert_eq!(message["status"], "complete", "the user message is stored: {message}");
    assert!(got.deltas >= 2, "16 chunks 30 ms apart arrive as several deltas, not {}", got.deltas);
    assert_eq!(got.text, TEXT, "the deltas add up to the reply");

    assert_eq!(got.end.event, "done", "{}", got.end);
    let done = got.end.json();
    assert_assistant(&done, &conv, &got.reply_id);
    assert_eq!(done["content"], TEXT);
    assert_eq!(done["status"], "complete");
    assert_eq!(done["model"], "mock-model");
    assert_eq!(done["usage"], json!({"prompt_tokens": 12, "completion_tokens": 34}));
    assert_eq!(done["finish_reason"], "stop");

    // What is stored is what was streamed.
    let msgs = app.messages(&admin.token, &conv).await?;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0]["id"], message["id"]);
    assert_eq!(msgs[0]["content"], "Tell me something");
    let stored = &msgs[1];
    for key in ["id", "content", "status", "model", "usage", "finish_reason"] {
        assert_eq!(stored[key], done[key], "stored `{key}` differs from the done event: {stored} vs {done}");
    }

    // A finished reply replays as message, deltas, done.
    let mut replay = app.reply_events(&admin.token, &conv, &got.reply_id, None).await?;
    let replayed = check_events(&replay.until_end(Duration::from_secs(10)).await?, Some(&got.reply_id), None)?;
    assert_eq!(replayed.text, TEXT);
    assert_eq!(replayed.end.event, "done");
    assert_eq!(replayed.end.json()["content"], TEXT);
    assert_eq!(replayed.message.as_ref().map(|m| &m["id"]), Some(&message["id"]), "replay names the user message");

    // And from an offset: the rest only, no `message`.
    let mid = events[events.len() / 2].id.clone().expect("ids");
    let mid_n: usize = mid.parse()?;
    let mut tail = app.reply_events(&admin.token, &conv, &got.reply_id, Some(&mid)).await?;
    let resumed = check_events(&tail.until_end(Duration::from_secs(10)).await?, Some(&got.reply_id), Some(mid_n))?;
    assert_eq!(resumed.text, TEXT[mid_n..], "resumed after byte {mid}");
    let last = TEXT.len().to_string();
    let mut nothing_left = app.reply_events(&admin.token, &conv, &got.reply_id, Some(&last)).await?;
    let only_end = nothing_left.until_end(Duration::from_secs(10)).await?;
    assert_eq!(only_end.len(), 1, "after the last byte only `done` is left: {only_end:?}");
    assert_eq!(only_end[0].event, "done");

    // `Accept: text/event-stream` asks for the same stream without `stream: true`.
    let req = app
        .post(&format!("/api/v1/conversations/{}/messages", s(&conv)))
        .bearer_auth(&admin.token)
        .header("Accept", "text/event-stream")
        .json(&json!({"content": "Again"}));
    let mut by_accept = EventStream::open(req).await?;
    let again = check_events(&by_accept.until_end(Duration::from_secs(20)).await?, None, None)?;
    assert_eq!(again.text, TEXT);
    assert_eq!(again.end.event, "done");
    Ok(())
}

async fn a_dropped_stream_resumes_with_last_event_id(backend: Backend) -> Result<()> {
    let (app, _mock, admin, conv) = setup(backend, slow(TEXT, 24, Duration::from_millis(60))).await?;

    let mut stream = app.post_streamed(&admin.token, &conv, "resume me").await?;
    let mut seen = vec![stream.expect_event().await?];
    while seen.iter().filter(|e| e.event == "delta").count() < 3 {
        let e = stream.expect_event().await?;
        assert!(!e.is_end(), "the reply ended before three deltas: {e}");
        seen.push(e);
    }
    let before = check_events(&[seen.clone(), vec![fake_end(&seen)]].concat(), None, None)?;
    let last_id = seen.last().and_then(|e| e.id.clone()).expect("ids");
    drop(stream);

    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut resumed = app.reply_events(&admin.token, &conv, &before.reply_id, Some(&last_id)).await?;
    let events = resumed.until_end(Duration::from_secs(20)).await?;
    assert_ne!(events[0].event, "message", "a resumed stream does not repeat `message`: {}", events[0]);
    let after = check_events(&events, Some(&before.reply_id), Some(last_id.parse()?))?;
    assert!(after.deltas >= 1, "the reply was still running, so deltas follow: {events:?}");
    assert_eq!(format!("{}{}", before.text, after.text), TEXT, "before + after the drop = the reply");
    assert_eq!(after.end.event, "done");

    let stored = app.message(&admin.token, &conv, &before.reply_id).await?;
    assert_eq!(stored["content"], TEXT);
    assert_eq!(stored["status"], "complete");
    Ok(())
}

/// A stand-in end event so that a stream cut short can go through `check_events`.
fn fake_end(seen: &[SseEvent]) -> SseEvent {
    let last = seen.last().and_then(SseEvent::offset).unwrap_or(0);
    SseEvent { event: "done".into(), id: Some((last + 1).to_string()), data: "{}".into() }
}

async fn cancel_stops_the_reply_and_keeps_its_text(backend: Backend) -> Result<()> {
    // 40 chunks 150 ms apart: 6 s if it ran to the end.
    let (app, mock, admin, conv) = setup(backend, slow(TEXT, 40, Duration::from_millis(150))).await?;
    let other = app.member("mallory").await?;

    let started = Instant::now();
    let mut stream = app.post_streamed(&admin.token, &conv, "stop me").await?;
    let mut seen = vec![stream.expect_event().await?];
    let reply_id = seen[0].json()["reply_id"].clone();
    while seen.iter().filter(|e| e.event == "delta").count() < 3 {
        seen.push(stream.expect_event().await?);
    }

    // Someone else cannot see it, so cannot cancel it either.
    app.cancel_reply(&other.token, &conv, &reply_id).await?.problem(404);

    let asked = Instant::now();
    app.cancel_reply(&admin.token, &conv, &reply_id).await?.expect(202);
    let rest = stream.until_end(Duration::from_secs(10)).await?;
    let took = asked.elapsed();
    seen.extend(rest);
    let got = check_events(&seen, Some(&reply_id), None)?;
    assert_eq!(got.end.event, "done", "a cancelled reply ends with done: {}", got.end);
    let done = got.end.json();
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["content"], got.text, "the done event holds what was streamed");
    assert!(!got.text.is_empty() && got.text.len() < TEXT.len(), "part of the reply: {:?}", got.text);
    assert!(TEXT.starts_with(&got.text), "a prefix of the reply: {:?}", got.text);
    assert!(took < Duration::from_millis(1500), "the stream ended {took:?} after the cancel");
    assert!(started.elapsed() < Duration::from_secs(4), "ended long before the provider would have finished");

    // Nothing is appended afterwards, and the provider was asked once.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stored = app.message(&admin.token, &conv, &reply_id).await?;
    assert_eq!(stored["status"], "cancelled");
    assert_eq!(stored["content"], got.text, "stored = streamed so far");
    assert_eq!(mock.request_count(), 1);

    // Cancelling again changes nothing.
    let again = app.cancel_reply(&admin.token, &conv, &reply_id).await?;
    assert!(matches!(again.status, 202 | 409), "cancelling a cancelled reply: {} {}", again.status, again.text);
    let stored = app.message(&admin.token, &conv, &reply_id).await?;
    assert_eq!((&stored["status"], &stored["content"]), (&json!("cancelled"), &json!(got.text)));

    // The conversation goes on.
    mock.set_script(Script::echo().with_api_key(PROVIDER_KEY));
    let mut next = app.post_streamed(&admin.token, &conv, "next").await?;
    let next = check_events(&next.until_end(Duration::from_secs(10)).await?, None, None)?;
    assert_eq!(next.text, "echo: next");
    Ok(())
}

async fn a_client_that_goes_away_does_not_stop_the_reply(backend: Backend) -> Result<()> {
    let (app, _mock, admin, conv) = setup(backend, slow(TEXT, 20, Duration::from_millis(50))).await?;

    let mut stream = app.post_streamed(&admin.token, &conv, "keep going").await?;
    let opening = stream.expect_event().await?;
    let reply_id = opening.json()["reply_id"].clone();
    let first = stream.expect_event().await?;
    assert_eq!(first.event, "delta", "{first}");
    drop(stream);

    // Another tab attaches from the start while it runs and sees all of it.
    let mut again = app.reply_events(&admin.token, &conv, &reply_id, None).await?;
    let got = check_events(&again.until_end(Duration::from_secs(20)).await?, Some(&reply_id), None)?;
    assert_eq!(got.text, TEXT);

    let stored = app.wait_for_reply(&admin.token, &conv, &reply_id, Duration::from_secs(10)).await?;
    assert_eq!(stored["status"], "complete", "{stored}");
    assert_eq!(stored["content"], TEXT);

    // Nobody attached at all: still generated and stored.
    let stream = app.post_streamed(&admin.token, &conv, "unattended").await?;
    drop(stream);
    let msgs = app.messages(&admin.token, &conv).await?;
    let reply = msgs.last().context("a reply")?.clone();
    assert_eq!(reply["role"], "assistant");
    let stored = app.wait_for_reply(&admin.token, &conv, &reply["id"], Duration::from_secs(10)).await?;
    assert_eq!((&stored["status"], &stored["content"]), (&json!("complete"), &json!(TEXT)));
    Ok(())
}

async fn provider_failures_end_the_stream_with_an_error(backend: Backend) -> Result<()> {
    let (app, mock, admin, conv) = setup(backend, Script::echo().with_api_key(PROVIDER_KEY)).await?;
    let cases: [(&str, Script); 3] = [
        (
            "status 500 before the stream",
            Script::text(TEXT)
                .with_api_key(PROVIDER_KEY)
                .with_failure(Failure::Status { status: 500, message: "boom".into() }),
        ),
        (
            "error after 3 of 6 chunks",
            slow(TEXT, 6, Duration::from_millis(20)).with_failure(Failure::ErrorAfterChunks(3)),
        ),
        (
            "dropped after 3 of 6 chunks",
            slow(TEXT, 6, Duration::from_millis(20)).with_failure(Failure::DropAfterChunks(3)),
        ),
    ];
    for (what, script) in cases {
        mock.set_script(script);
        let mut stream = app.post_streamed(&admin.token, &conv, what).await.context(what)?;
        let events = stream.until_end(Duration::from_secs(20)).await.context(what)?;
        let got = check_events(&events, None, None).with_context(|| format!("{what}: {events:?}"))?;
        let problem = assert_error_event(&got.end, &stream, &got.reply_id);
        assert_eq!(problem["status"], 502, "{what}: a provider failure is a 502 problem: {problem}");
        assert_eq!(problem["partial_content"], got.text, "{what}: partial_content = what was streamed");
        assert!(TEXT.starts_with(&got.text), "{what}: {:?}", got.text);
        if what.starts_with("status") {
            assert_eq!(got.text, "", "{what}: nothing was produced");
        } else {
            assert!(!got.text.is_empty() && got.text.len() < TEXT.len(), "{what}: half a reply: {:?}", got.text);
        }

        let msgs = app.messages(&admin.token, &conv).await?;
        let user = msgs.iter().find(|m| m["content"] == what).with_context(|| format!("{what}: user message kept"))?;
        assert_eq!(user["status"], "complete", "{what}: {user}");
        let reply = msgs.iter().find(|m| m["id"] == got.reply_id).with_context(|| format!("{what}: reply stored"))?;
        assert_eq!(reply["status"], "failed", "{what}: {reply}");
        assert_eq!(reply["content"], got.text, "{what}: the stored reply keeps the text so far");

        // Replaying a failed reply ends with the same error.
        let mut replay = app.reply_events(&admin.token, &conv, &got.reply_id, None).await?;
        let replayed =
            check_events(&replay.until_end(Duration::from_secs(10)).await?, Some(&got.reply_id), None).context(what)?;
        assert_eq!(replayed.end.event, "error", "{what}: replay ends with error: {}", replayed.end);
        assert_eq!(replayed.text, got.text, "{what}");
    }
    Ok(())
}

async fn replies_being_generated_are_limited_per_user_and_per_server(backend: Backend) -> Result<()> {
    let mock = start_mock().await?;
    mock.set_script(slow(TEXT, 20, Duration::from_millis(60)));
    let app = TestApp::builder(backend).provider(&mock).env("CONCLAVE_MAX_REPLIES_PER_USER", "1").start().await?;
    let (admin, conv) = app.admin_conversation().await?;

    let mut first = app.post_streamed(&admin.token, &conv, "first").await?;
    let opening = first.expect_event().await?;
    let path = format!("/api/v1/conversations/{}/messages", s(&conv));
    for body in [json!({"content": "second", "stream": true}), json!({"content": "second"})] {
        let refused = app.post(&path).bearer_auth(&admin.token).json(&body).fetch().await?.problem(429);
        let retry = refused.header("retry-after").context("429 without Retry-After")?;
        assert!(retry.trim().parse::<u64>().is_ok_and(|n| n >= 1), "Retry-After {retry:?} is not whole seconds");
    }
    // The first reply's first delta proves its request reached the provider (the reply task
    // calls it after the opening event, so counting before could race it).
    let first_delta = first.expect_event().await?;
    assert_eq!(first_delta.event, "delta", "{first_delta}");
    assert_eq!(mock.request_count(), 1, "a refused message never reaches the provider");

    // Someone else is not limited by it.
    let bob = app.member("bob").await?;
    let agent = app.create_agent(&bob.token, json!({})).await?;
    let bob_conv = app.create_conversation(&bob.token, &agent["id"], None).await?;
    let mut bobs = app.post_streamed(&bob.token, &bob_conv["id"], "mine").await?;

    let got = check_events(
        &[vec![opening, first_delta], first.until_end(Duration::from_secs(20)).await?].concat(),
        None,
        None,
    )?;
    assert_eq!(got.end.event, "done");
    check_events(&bobs.until_end(Duration::from_secs(20)).await?, None, None)?;
    // Once it is done the next one is welcome.
    mock.set_script(Script::echo().with_api_key(PROVIDER_KEY));
    app.post_message(&admin.token, &conv, "third").await?.expect(201);
    drop(app);

    // The whole server's limit.
    mock.set_script(slow(TEXT, 20, Duration::from_millis(50)));
    let app = TestApp::builder(backend).provider(&mock).env("CONCLAVE_MAX_REPLIES_PER_SERVER", "1").start().await?;
    let (admin, conv) = app.admin_conversation().await?;
    let bob = app.member("bob").await?;
    let agent = app.create_agent(&bob.token, json!({})).await?;
    let bob_conv = app.create_conversation(&bob.token, &agent["id"], None).await?;
    let mut first = app.post_streamed(&admin.token, &conv, "first").await?;
    first.expect_event().await?;
    let refused = app
        .post(&format!("/api/v1/conversations/{}/messages", s(&bob_conv["id"])))
        .bearer_auth(&bob.token)
        .json(&json!({"content": "me too", "stream": true}))
        .fetch()
        .await?
        .problem(429);
    assert!(refused.header("retry-after").is_some(), "429 without Retry-After");
    first.until_end(Duration::from_secs(20)).await?;
    Ok(())
}

backend_tests!(
    a_streamed_reply_follows_the_event_contract,
    a_dropped_stream_resumes_with_last_event_id,
    cancel_stops_the_reply_and_keeps_its_text,
    a_client_that_goes_away_does_not_stop_the_reply,
    provider_failures_end_the_stream_with_an_error,
    replies_being_generated_are_limited_per_user_and_per_server,
);
