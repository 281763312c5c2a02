//! Chat completions that are not streamed: the body's shape, echo, usage, finish reason, bad
//! requests and the request log.

use conclave_mock_provider::{Script, Usage};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{chat_request, client, error_of, json_body, post_chat, provider};

#[tokio::test]
async fn answers_with_an_openai_chat_completion() {
    let provider = provider(Script::default()).await;
    let response = post_chat(&provider, &chat_request(false)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_body(response).await;
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(body["model"], "mock-model");
    assert_eq!(
        body["choices"],
        json!([{
            "index": 0,
            "message": { "role": "assistant", "content": "Hello from the mock provider." },
            "finish_reason": "stop",
        }])
    );
    // "You are terse." + "say hello" = 5 words; the default reply has 5.
    assert_eq!(body["usage"], json!({ "prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10 }));
}

#[tokio::test]
async fn echo_repeats_the_last_user_message() {
    let provider = provider(Script::echo()).await;
    let request = json!({
        "model": "mock-model",
        "messages": [
            { "role": "user", "content": "first question" },
            { "role": "assistant", "content": "first answer" },
            { "role": "user", "content": "second question" },
        ],
    });
    let body = json_body(post_chat(&provider, &request).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], "echo: second question");
}

#[tokio::test]
async fn reports_scripted_usage_and_finish_reason() {
    let script = Script::text("cut")
        .with_usage(Usage::Report { prompt_tokens: 11, completion_tokens: 7 })
        .with_finish_reason("length");
    let provider = provider(script).await;
    let body = json_body(post_chat(&provider, &chat_request(false)).await).await;
    assert_eq!(body["usage"], json!({ "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 }));
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn omitted_usage_leaves_the_field_out() {
    let provider = provider(Script::default().with_usage(Usage::Omit)).await;
    let body = json_body(post_chat(&provider, &chat_request(false)).await).await;
    assert!(body.get("usage").is_none(), "{body}");
}

#[tokio::test]
async fn response_delay_holds_back_the_answer() {
    let delay = std::time::Duration::from_millis(150);
    let provider = provider(Script::default().with_response_delay(delay)).await;
    let started = std::time::Instant::now();
    let response = post_chat(&provider, &chat_request(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= delay);
}

#[tokio::test]
async fn a_new_script_applies_to_the_next_request() {
    let provider = provider(Script::text("before")).await;
    let first = json_body(post_chat(&provider, &chat_request(false)).await).await;
    provider.set_script(Script::text("after"));
    let second = json_body(post_chat(&provider, &chat_request(false)).await).await;
    assert_eq!(first["choices"][0]["message"]["content"], "before");
    assert_eq!(second["choices"][0]["message"]["content"], "after");
}

#[tokio::test]
async fn refuses_a_body_that_is_not_json() {
    let provider = provider(Script::default()).await;
    let response = client()
        .post(format!("{}/chat/completions", provider.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert_eq!(error_of(&body)["type"], "invalid_request_error");
}

#[tokio::test]
async fn refuses_a_request_without_model_or_messages() {
    let provider = provider(Script::default()).await;
    for request in [json!({ "messages": [{ "role": "user", "content": "hi" }] }), json!({ "model": "mock-model" })] {
        let response = post_chat(&provider, &request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{request}");
        error_of(&json_body(response).await);
    }
}

#[tokio::test]
async fn records_requests_in_order_with_their_headers() {
    let provider = provider(Script::default()).await;
    let first = json!({
        "model": "mock-model",
        "messages": [{ "role": "user", "content": "one" }],
        "temperature": 0.2,
        "max_tokens": 64,
    });
    post_chat(&provider, &first).await;
    client()
        .post(format!("{}/chat/completions", provider.base_url()))
        .header("Authorization", "Bearer sk-seen")
        .header("X-Custom", "Yes")
        .json(&chat_request(true))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("read");
    // Not a chat completion: not recorded.
    client().get(format!("{}/models", provider.base_url())).send().await.expect("answered");
    client()
        .post(format!("{}/chat/completions", provider.base_url()))
        .body("plain text")
        .send()
        .await
        .expect("answered");

    assert_eq!(provider.request_count(), 3);
    let requests = provider.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0], first);
    assert_eq!(requests[1], chat_request(true));
    assert_eq!(requests[2], json!("plain text"));

    let headers = provider.request_headers();
    assert_eq!(headers.len(), 3);
    let has = |i: usize, name: &str, value: &str| headers[i].iter().any(|(n, v)| n == name && v == value);
    assert!(has(1, "authorization", "Bearer sk-seen"), "{:?}", headers[1]);
    assert!(has(1, "x-custom", "Yes"), "{:?}", headers[1]);
    assert!(!headers[0].iter().any(|(n, _)| n == "authorization"));
}
