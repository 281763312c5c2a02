//! The OpenAI-compatible client. One implementation serves OpenAI, OpenRouter, Ollama, vLLM and
//! llama.cpp server (`{base}/chat/completions`, bearer key) and Azure OpenAI
//! (`{base}/openai/deployments/{model}/chat/completions?api-version=…`, `api-key` header).
//!
//! Failures before the first token are retried a bounded number of times (connection refused,
//! 429, 5xx); a reply that has started is never retried, since its text is already on its way.

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use conclave_core::provider::{ChatEvent, ChatRequest, ChatStream, ModelProvider, ProviderError};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use url::Url;

use crate::sse::{self, Line};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI's own API and everything that copies it (OpenRouter, Ollama, vLLM, llama.cpp).
    OpenAi,
    AzureOpenAi,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    /// e.g. `https://openrouter.ai/api/v1`, `http://127.0.0.1:11434/v1`, or for Azure
    /// `https://<resource>.openai.azure.com`.
    pub base_url: Url,
    pub api_key: Option<SecretString>,
    /// Azure OpenAI's `api-version` query parameter.
    pub api_version: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for the response to start, and then between two chunks.
    pub idle_timeout: Duration,
    /// Extra attempts before the first token.
    pub max_retries: u32,
}

pub struct OpenAiCompatible {
    settings: ProviderSettings,
    http: reqwest::Client,
}

const MAX_ERROR_BODY: usize = 64 * 1024;

impl OpenAiCompatible {
    pub fn new(settings: ProviderSettings) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // A provider answering with a redirect is misconfigured (or compromised): never
            // follow it with the API key and the prompt.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("conclave/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Unreachable(format!("HTTP client: {e}")))?;
        Ok(Self { settings, http })
    }

    fn endpoint(&self, model: &str, path: &str) -> Result<Url, ProviderError> {
        let base = self.settings.base_url.as_str().trim_end_matches('/');
        let url = match self.settings.kind {
            ProviderKind::OpenAi => format!("{base}/{path}"),
            ProviderKind::AzureOpenAi => {
                let version = self.settings.api_version.as_deref().unwrap_or("2024-10-21");
                let deployment: String = url::form_urlencoded::byte_serialize(model.as_bytes()).collect();
                format!("{base}/openai/deployments/{deployment}/{path}?api-version={version}")
            }
        };
        Url::parse(&url).map_err(|e| ProviderError::Unreachable(format!("invalid provider URL: {e}")))
    }

    fn authorise(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let Some(key) = &self.settings.api_key else {
            return request;
        };
        match self.settings.kind {
            ProviderKind::OpenAi => request.bearer_auth(key.expose_secret()),
            ProviderKind::AzureOpenAi => request.header("api-key", key.expose_secret()),
        }
    }

    fn body(request: &ChatRequest) -> serde_json::Value {
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        let obj = body.as_object_mut().expect("a JSON object literal");
        if let Some(t) = request.temperature {
            obj.insert("temperature".into(), json!(t));
        }
        if let Some(p) = request.top_p {
            obj.insert("top_p".into(), json!(p));
        }
        if let Some(m) = request.max_tokens {
            obj.insert("max_tokens".into(), json!(m));
        }
        if !request.stop.is_empty() {
            obj.insert("stop".into(), json!(request.stop));
        }
        if let Some(u) = &request.user {
            obj.insert("user".into(), json!(u));
        }
        body
    }

    /// One attempt: sends the request and waits for the response head.
    async fn send(&self, url: &Url, body: &serde_json::Value) -> Result<reqwest::Response, ProviderError> {
        let mut request = self.authorise(self.http.post(url.clone()).json(body));
        // The caller's W3C trace continues at the provider.
        if let Some(traceparent) = conclave_core::trace::current() {
            request = request.header("traceparent", traceparent);
        }
        let response =
            tokio::time::timeout(self.settings.idle_timeout, request.send())
                .await
                .map_err(|_| ProviderError::Timeout)?
                .map_err(|e| {
                    if e.is_timeout() {
                        ProviderError::Timeout
                    } else {
                        ProviderError::Unreachable(describe(&e))
                    }
                })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_limited(response, self.settings.idle_timeout).await;
        if status.as_u16() == 429 {
            return Err(ProviderError::RateLimited { retry_after });
        }
        let message = sse::error_message(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned());
        Err(ProviderError::Upstream { status: status.as_u16(), message })
    }
}

#[async_trait]
impl ModelProvider for OpenAiCompatible {
    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        let url = self.endpoint("", "models")?;
        let url = match self.settings.kind {
            ProviderKind::OpenAi => url,
            // Azure lists deployments per resource through the management plane, not here.
            ProviderKind::AzureOpenAi => return Ok(Vec::new()),
        };
        let response = tokio::time::timeout(self.settings.idle_timeout, self.authorise(self.http.get(url)).send())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(|e| ProviderError::Unreachable(describe(&e)))?;
        if !response.status().is_success() {
            return Err(ProviderError::Upstream {
                status: response.status().as_u16(),
                message: "listing models failed".into(),
            });
        }
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<Model>,
        }
        #[derive(serde::Deserialize)]
        struct Model {
            id: String,
        }
        let body = read_limited(response, self.settings.idle_timeout).await;
        let list: List = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::InvalidResponse(format!("the model list is not valid JSON ({e})")))?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let url = self.endpoint(&request.model, "chat/completions")?;
        let body = Self::body(&request);
        let mut attempt = 0;
        let response = loop {
            match self.send(&url, &body).await {
                Ok(r) => break r,
                Err(e) if attempt < self.settings.max_retries && retryable(&e) => {
                    let wait = match &e {
                        ProviderError::RateLimited { retry_after: Some(d) } => (*d).min(Duration::from_secs(10)),
                        _ => Duration::from_millis(200 * 2u64.pow(attempt)),
                    };
                    tracing::info!(attempt, error = %e, "retrying the model provider");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let is_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !is_stream {
            // Some servers ignore `stream: true` and answer with one JSON body.
            let body = read_limited(response, self.settings.idle_timeout).await;
            let events = sse::parse_completion(&body)?;
            return Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))));
        }
        Ok(Box::pin(relay(response.bytes_stream(), self.settings.idle_timeout)))
    }
}

/// Turns the provider's SSE byte stream into events, with an idle timeout between chunks. The
/// one idle timer is moved on lazily, when it fires early, not per chunk.
fn relay(
    bytes: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
) -> impl Stream<Item = Result<ChatEvent, ProviderError>> + Send {
    struct State<S> {
        events: S,
        pending: std::collections::VecDeque<ChatEvent>,
        finished: bool,
        done: bool,
        idle_timer: Pin<Box<tokio::time::Sleep>>,
        last_event: tokio::time::Instant,
    }
    let state = State {
        events: Box::pin(bytes.eventsource()),
        pending: Default::default(),
        finished: false,
        done: false,
        idle_timer: Box::pin(tokio::time::sleep(idle)),
        last_event: tokio::time::Instant::now(),
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                return Some((Ok(event), st));
            }
            if st.done {
                return None;
            }
            let next = loop {
                tokio::select! {
                    biased;
                    next = st.events.next() => break next,
                    () = st.idle_timer.as_mut() => {
                        let due = st.last_event + idle;
                        if tokio::time::Instant::now() >= due {
                            st.done = true;
                            return Some((Err(ProviderError::Timeout), st));
                        }
                        st.idle_timer.as_mut().reset(due);
                    }
                }
            };
            st.last_event = tokio::time::Instant::now();
            match next {
                None => {
                    st.done = true;
                    if st.finished {
                        return None;
                    }
                    let e =
                        ProviderError::Stream("the provider closed the stream before the reply was complete".into());
                    return Some((Err(e), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(ProviderError::Stream(format!("the stream broke: {e}"))), st));
                }
                Some(Ok(event)) => match sse::parse_data(&event.data) {
                    Ok(Line::Done) => {
                        st.done = true;
                        st.finished = true;
                    }
                    Ok(Line::Events(events)) => {
                        st.finished |= events.iter().any(|e| matches!(e, ChatEvent::Finish { .. }));
                        st.pending.extend(events);
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                },
            }
        }
    })
}

fn retryable(e: &ProviderError) -> bool {
    match e {
        ProviderError::Unreachable(_) | ProviderError::RateLimited { .. } => true,
        ProviderError::Upstream { status, .. } => *status >= 500,
        _ => false,
    }
}

async fn read_limited(response: reqwest::Response, timeout: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            let room = MAX_ERROR_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    body
}

/// The error without the URL's query (which could carry a key on some providers).
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_connect() { "connection failed".to_owned() } else { "request failed".to_owned() };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
