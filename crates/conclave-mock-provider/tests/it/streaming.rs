//! Streamed chat completions: the event sequence, chunking, usage on request, and that events
//! leave one by one instead of all at the end.

use std::time::{Duration, Instant};

use conclave_mock_provider::{Script, Usage};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{chat_request, chunks, contents, events, post_chat, provider};

async fn stream_events(script: Script, request: &Value) -> Vec<String> {
    let provider = provider(script).await;
    let response = post_chat(&provider, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    events(&response.text().await.expect("the stream ends cleanly"))
}

#[tokio::test]
async fn streams_role_content_finish_then_done() {
    let reply = "The quick brown fox jumps over the lazy dog.";
    let events = stream_events(Script::text(reply).with_chunks(5), &chat_request(true)).await;

    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = chunks(&events);
    // Role, 5 contents, finish; no usage chunk unless asked for.
    assert_eq!(chunks.len(), 7, "{events:#?}");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "mock-model");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["created"], chunks[0]["created"]);
    }
    assert_eq!(
        chunks[0]["choices"],
        json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }])
    );
    let parts = contents(&chunks);
    assert_eq!(parts.len(), 5);
    assert_eq!(parts.concat(), reply);
    let sizes: Vec<usize> = parts.iter().map(|p| p.chars().count()).collect();
    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
    for chunk in &chunks[1..6] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[6]["choices"], json!([{ "index": 0, "delta": {}, "finish_reason": "stop" }]));
}

#[tokio::test]
async fn sends_fewer_chunks_when_the_reply_is_shorter() {
    let events = stream_events(Script::text("héy").with_chunks(8), &chat_request(true)).await;
    assert_eq!(contents(&chunks(&events)), ["h", "é", "y"]);
}

#[tokio::test]
async fn sends_usage_only_when_asked() {
    let mut request = chat_request(true);
    request["stream_options"] = json!({ "include_usage": true });
    let events = stream_events(Script::text("two words"), &request).await;
    let chunks = chunks(&events);
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], json!({ "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7 }));
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    request["stream_options"] = json!({ "include_usage": false });
    let events = stream_events(Script::text("two words"), &request).await;
    assert!(chunks_have_no_usage(&events));
}

#[tokio::test]
async fn omitted_usage_is_not_streamed_even_when_asked() {
    let mut request = chat_request(true);
    request["stream_options"] = json!({ "include_usage": true });
    let events = stream_events(Script::default().with_usage(Usage::Omit), &request).await;
    assert!(chunks_have_no_usage(&events));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

fn chunks_have_no_usage(events: &[String]) -> bool {
    chunks(events).iter().all(|c| c.get("usage").is_none() && c["choices"].as_array().is_some_and(|a| !a.is_empty()))
}

#[tokio::test]
async fn streams_echo_and_the_finish_reason() {
    let script = Script::echo().with_chunks(3).with_finish_reason("length");
    let events = stream_events(script, &chat_request(true)).await;
    let chunks = chunks(&events);
    assert_eq!(contents(&chunks).concat(), "echo: say hello");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn escapes_awkward_text() {
    let reply = "line \"one\"\nline\t\\two\u{1} — ünïcödé 日本";
    let events = stream_events(Script::text(reply).with_chunks(7), &chat_request(true)).await;
    assert_eq!(contents(&chunks(&events)).concat(), reply);
}

#[tokio::test]
async fn each_chunk_leaves_when_it_is_written() {
    let delay = Duration::from_millis(60);
    let provider = provider(Script::text("abcd").with_chunks(4).with_chunk_delay(delay)).await;
    let started = Instant::now();
    let response = post_chat(&provider, &chat_request(true)).await;

    let mut arrivals = Vec::new();
    let mut seen = String::new();
    let mut body = response.bytes_stream();
    while let Some(frame) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&frame.expect("a frame")));
        let parts = contents(&chunks(&events_so_far(&seen)));
        if parts.len() > arrivals.len() {
            arrivals.push(started.elapsed());
        }
    }
    assert_eq!(arrivals.len(), 4, "{seen}");
    // Each content chunk waits its delay, and they arrive spread out: a buffering server
    // would deliver them together at the end. (Three delays apart; two leave room for a busy
    // machine.)
    assert!(arrivals[0] >= delay, "{arrivals:?}");
    assert!(arrivals[3] - arrivals[0] >= delay * 2, "{arrivals:?}");
}

/// The complete events of a body read so far.
fn events_so_far(body: &str) -> Vec<String> {
    let complete = body.rfind("\n\n").map_or("", |end| &body[..end + 2]);
    events(complete)
}
