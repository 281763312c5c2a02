//! The scripted API key: OpenAI's Bearer header and Azure's api-key header.

use conclave_mock_provider::Script;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{chat_request, client, error_of, json_body, provider};

const KEY: &str = "sk-mock-123";

async fn chat_with(base_url: &str, header: Option<(&str, &str)>) -> reqwest::Response {
    let mut request = client().post(format!("{base_url}/chat/completions")).json(&chat_request(false));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.expect("answered")
}

#[tokio::test]
async fn without_a_key_the_request_is_refused() {
    let provider = provider(Script::default().with_api_key(KEY)).await;
    let response = chat_with(&provider.base_url(), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = json_body(response).await;
    assert_eq!(error_of(&body)["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], Value::Null);
}

#[tokio::test]
async fn a_wrong_key_is_refused() {
    let provider = provider(Script::default().with_api_key(KEY)).await;
    for header in [
        ("authorization", "Bearer sk-wrong"),
        ("authorization", KEY),
        ("authorization", "Bearer SK-MOCK-123"),
        ("api-key", "sk-wrong"),
    ] {
        let response = chat_with(&provider.base_url(), Some(header)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        let body = json_body(response).await;
        assert_eq!(error_of(&body)["code"], "invalid_api_key");
    }
    // Refused requests are still recorded, so a test can see what the client sent.
    assert_eq!(provider.request_count(), 4);
}

#[tokio::test]
async fn bearer_and_api_key_headers_are_both_accepted() {
    let provider = provider(Script::default().with_api_key(KEY)).await;
    let bearer = format!("Bearer {KEY}");
    let lower_case_scheme = format!("bearer {KEY}");
    for header in [("authorization", bearer.as_str()), ("api-key", KEY), ("authorization", lower_case_scheme.as_str())]
    {
        let response = chat_with(&provider.base_url(), Some(header)).await;
        assert_eq!(response.status(), StatusCode::OK, "{header:?}");
    }
    let headers = provider.request_headers();
    assert!(headers[0].contains(&("authorization".into(), bearer.clone())));
    assert!(headers[1].contains(&("api-key".into(), KEY.into())));
}

#[tokio::test]
async fn the_model_list_needs_the_key_too() {
    let provider = provider(Script::default().with_api_key(KEY)).await;
    let url = format!("{}/models", provider.base_url());
    let refused = client().get(&url).send().await.expect("answered");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let allowed = client().get(&url).bearer_auth(KEY).send().await.expect("answered");
    assert_eq!(allowed.status(), StatusCode::OK);
}
