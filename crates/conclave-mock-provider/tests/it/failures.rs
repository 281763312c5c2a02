//! Each scripted failure, streamed and not.

use std::time::{Duration, Instant};

use conclave_mock_provider::{Failure, Script};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    chat_request, chunks, client, contents, error_of, events, json_body, post_chat, provider, read_until_error,
};

#[tokio::test]
async fn status_failure_answers_that_status_with_an_openai_error() {
    let provider =
        provider(Script::default().with_failure(Failure::Status { status: 429, message: "slow down".into() })).await;
    for stream in [false, true] {
        let response = post_chat(&provider, &chat_request(stream)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = json_body(response).await;
        let error = error_of(&body);
        assert_eq!(error["message"], "slow down");
        assert_eq!(error["code"], "rate_limit_exceeded");
    }

    provider.set_script(Script::default().with_failure(Failure::Status { status: 503, message: "overloaded".into() }));
    let response = post_chat(&provider, &chat_request(false)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&json_body(response).await)["type"], "server_error");

    // The whole provider is down, model list included.
    let response = client().get(format!("{}/models", provider.base_url())).send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn garbage_is_a_200_that_is_not_json() {
    let provider = provider(Script::default().with_failure(Failure::Garbage)).await;

    let response = post_chat(&provider, &chat_request(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.expect("read"), "this is not json");

    let response = post_chat(&provider, &chat_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.text().await.expect("read"), "data: this is not json\n\n");
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let provider = provider(Script::default().with_failure(Failure::Hang)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().expect("client");
    for stream in [false, true] {
        let error = client
            .post(format!("{}/chat/completions", provider.base_url()))
            .json(&chat_request(stream))
            .send()
            .await
            .expect_err("no answer");
        assert!(error.is_timeout(), "{error}");
    }
    assert_eq!(provider.request_count(), 2);
}

#[tokio::test]
async fn stopping_ends_a_hang_with_a_503_and_returns_promptly() {
    let provider = provider(Script::default().with_failure(Failure::Hang)).await;
    let url = format!("{}/chat/completions", provider.base_url());
    let waiting =
        tokio::spawn(async move { client().post(url).json(&chat_request(false)).send().await.map(|r| r.status()) });
    while provider.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    provider.stop().await;
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let status = waiting.await.expect("joined").expect("answered");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn drop_after_chunks_closes_the_stream_early() {
    let script = Script::text("abcdef").with_chunks(6).with_failure(Failure::DropAfterChunks(2));
    let provider = provider(script).await;
    let response = post_chat(&provider, &chat_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (body, failed) = read_until_error(response).await;
    assert!(failed, "the body should end in an error: {body}");
    let events = events(&body);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let chunks = chunks(&events);
    assert_eq!(contents(&chunks), ["a", "b"]);
    assert!(chunks.iter().all(|c| c["choices"][0]["finish_reason"].is_null()));
}

#[tokio::test]
async fn drop_after_more_chunks_than_the_reply_has_still_drops() {
    let script = Script::text("ab").with_failure(Failure::DropAfterChunks(10));
    let provider = provider(script).await;
    let (body, failed) = read_until_error(post_chat(&provider, &chat_request(true)).await).await;
    assert!(failed);
    assert_eq!(contents(&chunks(&events(&body))), ["a", "b"]);
    assert!(!body.contains("[DONE]"));
}

#[tokio::test]
async fn drop_without_streaming_cuts_the_body() {
    let provider = provider(Script::default().with_failure(Failure::DropAfterChunks(1))).await;
    let response = post_chat(&provider, &chat_request(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let (body, failed) = read_until_error(response).await;
    assert!(failed, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
}

#[tokio::test]
async fn error_after_chunks_sends_an_error_event_and_ends() {
    let script = Script::text("abcdef").with_chunks(3).with_failure(Failure::ErrorAfterChunks(2));
    let provider = provider(script).await;
    let response = post_chat(&provider, &chat_request(true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let events = events(&response.text().await.expect("the stream ends cleanly"));
    let chunks = chunks(&events);
    assert_eq!(contents(&chunks), ["ab", "cd"]);
    assert_eq!(
        chunks.last(),
        Some(&json!({
            "error": { "message": "mock failure mid-stream", "type": "server_error", "code": "mock" }
        }))
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn error_after_chunks_without_streaming_is_a_500() {
    let provider = provider(Script::default().with_failure(Failure::ErrorAfterChunks(0))).await;
    let response = post_chat(&provider, &chat_request(false)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json_body(response).await;
    assert_eq!(error_of(&body)["message"], "mock failure mid-stream");
}
