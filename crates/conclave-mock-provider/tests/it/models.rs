//! GET /v1/models and the OpenAI-shaped 404 for anything the mock does not serve.

use conclave_mock_provider::Script;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{client, error_of, json_body, provider};

#[tokio::test]
async fn lists_the_default_models() {
    let provider = provider(Script::default()).await;
    let response = client().get(format!("{}/models", provider.base_url())).send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({
            "object": "list",
            "data": [
                { "id": "mock-model", "object": "model", "created": 0, "owned_by": "mock" },
                { "id": "mock-large", "object": "model", "created": 0, "owned_by": "mock" },
            ],
        })
    );
}

#[tokio::test]
async fn lists_scripted_models() {
    let provider = provider(Script::default().with_models(vec!["only-one".into()])).await;
    let body = json_body(client().get(format!("{}/models", provider.base_url())).send().await.expect("answered")).await;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["data"][0]["id"], "only-one");
}

#[tokio::test]
async fn anything_else_is_an_openai_404() {
    let provider = provider(Script::default()).await;
    let base = format!("http://{}", provider.addr());
    let requests = [
        client().get(format!("{base}/v1/embeddings")),
        client().get(format!("{base}/")),
        client().get(format!("{base}/v1/chat/completions")),
        client().post(format!("{base}/v1/models")),
    ];
    for request in requests {
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = json_body(response).await;
        assert_eq!(error_of(&body)["type"], "invalid_request_error");
    }
    assert_eq!(provider.request_count(), 0);
}
