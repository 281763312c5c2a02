//! Helpers shared by the tests: starting a provider, sending chat requests and reading
//! server-sent events back.

use std::net::{Ipv4Addr, SocketAddr};

use conclave_mock_provider::{MockProvider, Script};
use futures::StreamExt;
use serde_json::{json, Value};

pub async fn provider(script: Script) -> MockProvider {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    MockProvider::start_with(addr, script).await.expect("the mock provider starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A minimal valid request, streamed or not.
pub fn chat_request(stream: bool) -> Value {
    json!({
        "model": "mock-model",
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": "say hello" },
        ],
        "stream": stream,
    })
}

pub async fn post_chat(provider: &MockProvider, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", provider.base_url()))
        .json(body)
        .send()
        .await
        .expect("the request is answered")
}

pub async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// The `data:` payloads of an event-stream body, in order.
pub fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap_or_else(|| panic!("event without data: {event:?}")).to_owned())
        .collect()
}

/// The JSON chunks of a stream, leaving out `[DONE]`.
pub fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
        .collect()
}

/// The content deltas, in order.
pub fn contents(chunks: &[Value]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Reads a body until it ends or fails: what arrived, and whether it failed.
pub async fn read_until_error(response: reqwest::Response) -> (String, bool) {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(_) => return (String::from_utf8_lossy(&body).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&body).into_owned(), false)
}

/// The error object of an OpenAI-shaped error body, checked for its three fields.
pub fn error_of(body: &Value) -> &Value {
    let error = body.get("error").expect("an `error` object");
    assert!(error["message"].is_string(), "message in {body}");
    assert!(error["type"].is_string(), "type in {body}");
    assert!(error.get("code").is_some(), "code in {body}");
    error
}
