//! The Azure OpenAI path: deployment in the URL, api-version required, key in `api-key`.

use conclave_mock_provider::Script;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{chunks, client, contents, error_of, events, json_body, provider};

fn azure_url(provider: &conclave_mock_provider::MockProvider, query: &str) -> String {
    format!("http://{}/openai/deployments/gpt4o-prod/chat/completions{query}", provider.addr())
}

/// Azure clients leave `model` out: the deployment names it.
fn azure_request(stream: bool) -> serde_json::Value {
    json!({ "messages": [{ "role": "user", "content": "hi azure" }], "stream": stream })
}

#[tokio::test]
async fn answers_with_the_deployment_as_model() {
    let provider = provider(Script::echo().with_api_key("az-key")).await;
    let response = client()
        .post(azure_url(&provider, "?api-version=2024-10-21"))
        .header("api-key", "az-key")
        .json(&azure_request(false))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["model"], "gpt4o-prod");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hi azure");
    assert!(provider.request_headers()[0].contains(&("api-key".into(), "az-key".into())));
    assert_eq!(provider.requests(), [azure_request(false)]);
}

#[tokio::test]
async fn streams_like_openai() {
    let provider = provider(Script::text("streamed").with_chunks(2)).await;
    let response = client()
        .post(azure_url(&provider, "?api-version=2024-10-21"))
        .json(&azure_request(true))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let events = events(&response.text().await.expect("read"));
    let chunks = chunks(&events);
    assert!(chunks.iter().all(|c| c["model"] == "gpt4o-prod"));
    assert_eq!(contents(&chunks), ["stre", "amed"]);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn refuses_a_request_without_api_version() {
    let provider = provider(Script::default()).await;
    for query in ["", "?api-version="] {
        let response =
            client().post(azure_url(&provider, query)).json(&azure_request(false)).send().await.expect("answered");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query:?}");
        error_of(&json_body(response).await);
    }
}

#[tokio::test]
async fn refuses_a_wrong_key() {
    let provider = provider(Script::default().with_api_key("az-key")).await;
    let response = client()
        .post(azure_url(&provider, "?api-version=2024-10-21"))
        .header("api-key", "nope")
        .json(&azure_request(false))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
