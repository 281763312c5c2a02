//! The OpenAI-compatible client against the project's stand-in provider: streaming, usage,
//! Azure OpenAI's shape, bounded retries before the first token only, timeouts and bad answers.

use std::time::Duration;

use conclave_core::provider::{ChatEvent, ChatMessage, ChatRequest, ModelProvider, ProviderError};
use conclave_llm::{OpenAiCompatible, ProviderKind, ProviderSettings};
use conclave_mock_provider::{Failure, MockProvider, Script, Usage};
use futures::StreamExt;

fn client(mock: &MockProvider, kind: ProviderKind, retries: u32, idle: Duration) -> OpenAiCompatible {
    let base = match kind {
        ProviderKind::OpenAi => mock.base_url(),
        ProviderKind::AzureOpenAi => format!("http://{}", mock.addr()),
    };
    OpenAiCompatible::new(ProviderSettings {
        kind,
        base_url: base.parse().unwrap(),
        api_key: Some("k".to_string().into()),
        api_version: Some("2024-10-21".into()),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: idle,
        max_retries: retries,
    })
    .unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "mock-model".into(),
        messages: vec![ChatMessage { role: "user", content: "hello there".into() }],
        temperature: Some(0.5),
        ..Default::default()
    }
}

async fn run(c: &OpenAiCompatible) -> (String, Vec<ChatEvent>, Option<ProviderError>) {
    let mut text = String::new();
    let mut events = Vec::new();
    match c.stream_chat(request()).await {
        Err(e) => return (text, events, Some(e)),
        Ok(mut s) => {
            while let Some(e) = s.next().await {
                match e {
                    Ok(ChatEvent::Delta(d)) => text.push_str(&d),
                    Ok(other) => events.push(other),
                    Err(e) => return (text, events, Some(e)),
                }
            }
        }
    }
    (text, events, None)
}

#[tokio::test]
async fn streams_text_finish_and_usage_with_the_key_and_parameters() {
    let mock = MockProvider::start().await.unwrap();
    mock.set_script(
        Script::text("Privilege protects advice.")
            .with_chunks(5)
            .with_api_key("k")
            .with_usage(Usage::Report { prompt_tokens: 9, completion_tokens: 4 }),
    );
    let c = client(&mock, ProviderKind::OpenAi, 0, Duration::from_secs(5));
    let (text, events, error) = run(&c).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "Privilege protects advice.");
    assert!(events.contains(&ChatEvent::Finish { reason: Some("stop".into()) }));
    assert!(
        events.contains(&ChatEvent::Usage(conclave_core::records::Usage { prompt_tokens: 9, completion_tokens: 4 }))
    );
    let sent = &mock.requests()[0];
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(c.list_models().await.unwrap(), vec!["mock-model", "mock-large"]);
}

#[tokio::test]
async fn azure_openai_uses_deployments_and_the_api_key_header() {
    let mock = MockProvider::start().await.unwrap();
    mock.set_script(Script::text("From Azure").with_api_key("k"));
    let c = client(&mock, ProviderKind::AzureOpenAi, 0, Duration::from_secs(5));
    let (text, _, error) = run(&c).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(text, "From Azure");
    let headers = &mock.request_headers()[0];
    assert!(headers.iter().any(|(k, v)| k == "api-key" && v == "k"));
    assert!(!headers.iter().any(|(k, _)| k == "authorization"), "Azure gets its key in api-key only");
}

#[tokio::test]
async fn failures_before_the_first_token_are_retried_a_bounded_number_of_times() {
    let mock = MockProvider::start().await.unwrap();
    mock.set_script(Script::default().with_failure(Failure::Status { status: 500, message: "overloaded".into() }));
    let c = client(&mock, ProviderKind::OpenAi, 2, Duration::from_secs(5));
    let (_, _, error) = run(&c).await;
    assert!(
        matches!(error, Some(ProviderError::Upstream { status: 500, ref message }) if message == "overloaded"),
        "{error:?}"
    );
    assert_eq!(mock.request_count(), 3, "one try and two retries");

    let mock = MockProvider::start().await.unwrap();
    mock.set_script(Script::default().with_failure(Failure::Status { status: 400, message: "bad request".into() }));
    let c = client(&mock, ProviderKind::OpenAi, 2, Duration::from_secs(5));
    assert!(matches!(run(&c).await.2, Some(ProviderError::Upstream { status: 400, .. })));
    assert_eq!(mock.request_count(), 1, "a client error is not retried");
}

#[tokio::test]
async fn a_reply_that_started_is_never_retried() {
    let mock = MockProvider::start().await.unwrap();
    mock.set_script(
        Script::text("one two three four five six").with_chunks(6).with_failure(Failure::ErrorAfterChunks(2)),
    );
    let c = client(&mock, ProviderKind::OpenAi, 2, Duration::from_secs(5));
    let (text, _, error) = run(&c).await;
    assert!(!text.is_empty());
    assert!(matches!(error, Some(ProviderError::Stream(_))), "{error:?}");
    assert_eq!(mock.request_count(), 1);

    let mock = MockProvider::start().await.unwrap();
    mock.set_script(Script::text("one two three four").with_chunks(4).with_failure(Failure::DropAfterChunks(1)));
    let c = client(&mock, ProviderKind::OpenAi, 2, Duration::from_secs(5));
    assert!(matches!(run(&c).await.2, Some(ProviderError::Stream(_))));
}

#[tokio::test]
async fn timeouts_garbage_and_refused_connections() {
    let mock = MockProvider::start().await.unwrap();
    mock.set_script(Script::default().with_failure(Failure::Hang));
    let c = client(&mock, ProviderKind::OpenAi, 2, Duration::from_millis(300));
    assert!(matches!(run(&c).await.2, Some(ProviderError::Timeout)));
    assert_eq!(mock.request_count(), 1, "a timeout is not retried");

    mock.set_script(Script::text("slow").with_chunks(2).with_chunk_delay(Duration::from_millis(800)));
    assert!(matches!(run(&c).await.2, Some(ProviderError::Timeout)), "idle between chunks");

    mock.set_script(Script::default().with_failure(Failure::Garbage));
    assert!(matches!(run(&c).await.2, Some(ProviderError::InvalidResponse(_))));

    mock.set_script(Script::default().with_failure(Failure::Status { status: 429, message: "slow down".into() }));
    let c0 = client(&mock, ProviderKind::OpenAi, 0, Duration::from_secs(2));
    assert!(matches!(run(&c0).await.2, Some(ProviderError::RateLimited { .. })));

    let addr = mock.addr();
    mock.stop().await;
    let gone = OpenAiCompatible::new(ProviderSettings {
        kind: ProviderKind::OpenAi,
        base_url: format!("http://{addr}/v1").parse().unwrap(),
        api_key: None,
        api_version: None,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_retries: 1,
    })
    .unwrap();
    assert!(matches!(run(&gone).await.2, Some(ProviderError::Unreachable(_))));
}
