//! The OpenAI-compatible gateway (`/v1/models`, `/v1/chat/completions`), so that existing
//! clients work unchanged. Errors on this path use OpenAI's shape `{error: {message, type, code}}`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conclave_core::principal::Caller;
use conclave_core::provider::{ChatEvent, ChatStream, ProviderError};
use conclave_core::service::gateway::{collect, GatewayMessage, GatewayRequest, UsageMeter};
use conclave_core::Error;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Authenticated;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(models)).routes(routes!(chat_completions))
}

/// An error in OpenAI's shape.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiError {
    error: OpenAiErrorBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct OpenAiErrorBody {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<String>,
}

pub struct GatewayError {
    status: StatusCode,
    body: OpenAiError,
    retry_after: Option<Duration>,
}

impl GatewayError {
    fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            body: OpenAiError { error: OpenAiErrorBody { message: message.into(), kind, code, param: None } },
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message)
    }

    /// A body over the route's limit (413), from the handler or from the limits layer alike.
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("request_too_large"), message)
    }

    /// Request headers over the server's limit (431).
    pub(crate) fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            Some("headers_too_large"),
            message,
        )
    }

    /// A request the server did not finish in time (503, retry shortly).
    pub(crate) fn timed_out(message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", Some("timeout"), message);
        err.retry_after = Some(Duration::from_secs(5));
        err
    }
}

impl From<Error> for GatewayError {
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::Unauthenticated | Error::InvalidCredentials | Error::MfaRequired | Error::SessionExpired(_) => {
                Self::new(
                    S::UNAUTHORIZED,
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    "Invalid or missing credentials: send `Authorization: Bearer <Conclave API key or access token>`.",
                )
            }
            Error::NotFound(_) => Self::new(
                S::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                "The model does not exist or you do not have access to it (GET /v1/models lists yours).",
            ),
            Error::Forbidden(m) => Self::new(S::FORBIDDEN, "permission_error", Some("permission_denied"), m),
            Error::PasswordChangeRequired => Self::new(
                S::FORBIDDEN,
                "permission_error",
                Some("password_change_required"),
                "Change your temporary password before using the API.",
            ),
            Error::MfaEnrollmentRequired => Self::new(
                S::FORBIDDEN,
                "permission_error",
                Some("mfa_enrollment_required"),
                "Your organisation requires two-factor sign-in: enrol before using the API.",
            ),
            Error::Validation(errors) => {
                let first = errors.into_iter().next();
                let mut err =
                    Self::bad_request(first.as_ref().map_or("Invalid request.".into(), |f| f.message.clone()));
                err.body.error.param = first.map(|f| f.field);
                err
            }
            Error::Conflict(m) => Self::new(S::CONFLICT, "invalid_request_error", None, m),
            Error::BadRequest(m) => Self::bad_request(m),
            Error::TooLarge(m) => Self::too_large(m),
            Error::UnsupportedMediaType(m) => Self::new(S::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", None, m),
            Error::RateLimited { retry_after, detail } => {
                let mut err = Self::new(S::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"), detail);
                err.retry_after = Some(retry_after);
                err
            }
            Error::Unavailable { service, detail } => {
                tracing::error!(service, detail, "dependency unavailable");
                let mut err = Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "api_error",
                    None,
                    format!("The {service} is unavailable; try again shortly."),
                );
                err.retry_after = Some(Duration::from_secs(5));
                err
            }
            Error::Provider(p) => provider_error(p),
            Error::Internal(detail) => {
                tracing::error!(detail, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "api_error", None, "Something went wrong on our side.")
            }
        }
    }
}

fn provider_error(p: ProviderError) -> GatewayError {
    tracing::warn!(error = %p, "model provider failure");
    match p {
        ProviderError::Timeout => {
            GatewayError::new(StatusCode::GATEWAY_TIMEOUT, "api_error", Some("upstream_timeout"), p.to_string())
        }
        ProviderError::RateLimited { retry_after } => {
            let mut err = GatewayError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                Some("upstream_rate_limited"),
                p.to_string(),
            );
            err.retry_after = Some(retry_after.unwrap_or(Duration::from_secs(10)));
            err
        }
        other => GatewayError::new(StatusCode::BAD_GATEWAY, "api_error", Some("upstream_error"), other.to_string()),
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The caller, with authentication failures in OpenAI's shape.
pub struct GatewayCaller(Caller);

impl FromRequestParts<AppState> for GatewayCaller {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, GatewayError> {
        // Machine clients only, when mutual TLS is required of them: any credential needs a certificate.
        let certified = parts.extensions.get::<crate::middleware::client_cert::ClientCertificate>().is_some();
        if state.http.mtls_required_for_api_keys && !certified {
            return Err(GatewayError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("client_certificate_required"),
                "This endpoint is available only over mutual TLS: connect with a client certificate issued by this server's client CA.",
            ));
        }
        match Authenticated::from_request_parts(parts, state).await {
            Ok(Authenticated(caller)) => Ok(GatewayCaller(caller)),
            Err(crate::error::ApiError::Domain(e)) => Err(e.into()),
            Err(_) => Err(Error::Unauthenticated.into()),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelObject {
    id: String,
    object: &'static str,
    created: i64,
    owned_by: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelListObject {
    object: &'static str,
    data: Vec<ModelObject>,
}

/// The models this tenant may use, in OpenAI's list shape.
#[utoipa::path(get, path = "/v1/models", tag = "gateway", security(("bearer" = [])), responses(
    (status = 200, body = ModelListObject),
    (status = 401, body = OpenAiError),
))]
async fn models(
    State(state): State<AppState>,
    GatewayCaller(caller): GatewayCaller,
) -> Result<Json<ModelListObject>, GatewayError> {
    let models = state.core.list_models(&caller).await?;
    Ok(Json(ModelListObject {
        object: "list",
        data: models
            .into_iter()
            .map(|m| ModelObject { id: m.id, object: "model", created: 0, owned_by: m.provider })
            .collect(),
    }))
}

/// OpenAI's chat completion request (the fields Conclave uses; others are ignored).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ChatCompletionRequest {
    /// An allowed model id, or `agent:<agent id>`.
    model: String,
    #[schema(value_type = Vec<Object>)]
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    #[schema(value_type = Option<Object>)]
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    #[serde(alias = "max_completion_tokens")]
    max_tokens: Option<u32>,
    #[schema(value_type = Option<Object>)]
    stop: Option<Stop>,
    /// Accepted for compatibility; the provider is always told the Conclave user's id instead.
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// Creates a chat completion: one `chat.completion`, or with `stream: true` a stream of
/// `data: {chat.completion.chunk}` lines ending with `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "gateway", security(("bearer" = [])),
    request_body = ChatCompletionRequest, responses(
    (status = 200, description = "A chat.completion, or a text/event-stream of chunks"),
    (status = 400, body = OpenAiError),
    (status = 401, body = OpenAiError),
    (status = 404, body = OpenAiError),
    (status = 429, body = OpenAiError),
    (status = 502, body = OpenAiError),
))]
async fn chat_completions(
    State(state): State<AppState>,
    GatewayCaller(caller): GatewayCaller,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let body: ChatCompletionRequest = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::bad_request(format!("The request body is not valid: {e}")))?;
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        let content = match m.content {
            None => String::new(),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    if p.kind != "text" {
                        let mut err =
                            GatewayError::bad_request(format!("Content parts of type '{}' are not supported.", p.kind));
                        err.body.error.param = Some(format!("messages[{i}].content"));
                        return Err(err);
                    }
                    text.push_str(p.text.as_deref().unwrap_or(""));
                }
                text
            }
        };
        messages.push(GatewayMessage { role: m.role, content });
    }
    let request = GatewayRequest {
        model: body.model,
        messages,
        temperature: body.temperature,
        top_p: body.top_p,
        max_tokens: body.max_tokens,
        stop: match body.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        stream: body.stream,
    };
    let stream = request.stream;
    let call = state.core.gateway_start(&caller, request).await?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    if !stream {
        let (text, finish, usage, model) = collect(call).await?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish.unwrap_or_else(|| "stop".into())}],
            "usage": usage_json(usage),
        }))
        .into_response());
    }
    let chunks = Chunks::new(id, created, call.model, include_usage);
    let state = Relay { events: call.events, meter: Some(call.meter), chunks, phase: Phase::Start, finished: false };
    let lines =
        futures::stream::unfold(state, |mut relay| async move { relay.next().await.map(|line| (vec![line], relay)) });
    Ok(crate::sse::respond_frames(lines))
}

fn usage_json(u: conclave_core::records::Usage) -> Value {
    json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens})
}

/// Encodes the chunks of one stream: every chunk shares the same head (`id`, `object`,
/// `created`, `model`), serialised once; per delta only the text is escaped.
struct Chunks {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    head: String,
    include_usage: bool,
}

impl Chunks {
    fn new(id: String, created: i64, model: String, include_usage: bool) -> Self {
        let mut head = String::from("data: {\"id\":");
        head.push_str(&Value::String(id).to_string());
        head.push_str(",\"object\":\"chat.completion.chunk\",\"created\":");
        head.push_str(&created.to_string());
        head.push_str(",\"model\":");
        head.push_str(&Value::String(model).to_string());
        head.push(',');
        Chunks { head, include_usage }
    }

    /// One `data:` line: the head, then `rest` (JSON members), then the end of the event.
    fn line(&self, rest: impl FnOnce(&mut Vec<u8>)) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + 96);
        out.extend_from_slice(self.head.as_bytes());
        rest(&mut out);
        out.extend_from_slice(b"}\n\n");
        Bytes::from(out)
    }

    fn delta(&self, text: &str) -> Bytes {
        self.line(|out| {
            out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":{\"content\":");
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, text);
            out.extend_from_slice(b"},\"finish_reason\":null}]");
        })
    }

    fn first(&self) -> Bytes {
        self.line(|out| {
            out.extend_from_slice(
                b"\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]",
            )
        })
    }

    fn finish(&self, reason: &str) -> Bytes {
        self.line(|out| {
            out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":");
            let _ = serde_json::to_writer(&mut *out, reason);
            out.extend_from_slice(b"}]");
        })
    }

    fn usage(&self, usage: conclave_core::records::Usage) -> Bytes {
        self.line(|out| {
            out.extend_from_slice(b"\"choices\":[],\"usage\":");
            let _ = serde_json::to_writer(&mut *out, &usage_json(usage));
        })
    }
}

fn data_line(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

enum Phase {
    Start,
    Relaying,
    Usage,
    Done,
    End,
}

/// Turns the model's events into OpenAI chunks, records usage at the end.
struct Relay {
    events: ChatStream,
    meter: Option<UsageMeter>,
    chunks: Chunks,
    phase: Phase,
    finished: bool,
}

impl Relay {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.phase {
                Phase::Start => {
                    self.phase = Phase::Relaying;
                    return Some(self.chunks.first());
                }
                Phase::Relaying => {
                    let event = self.events.next().await;
                    if let (Some(meter), Some(e)) = (self.meter.as_mut(), event.as_ref()) {
                        meter.observe(e);
                    }
                    match event {
                        Some(Ok(ChatEvent::Delta(text))) => return Some(self.chunks.delta(&text)),
                        Some(Ok(ChatEvent::Finish { reason })) => {
                            self.finished = true;
                            return Some(self.chunks.finish(reason.as_deref().unwrap_or("stop")));
                        }
                        Some(Ok(ChatEvent::Usage(_))) => continue,
                        Some(Err(e)) => {
                            self.phase = Phase::End;
                            let err = provider_error(e);
                            if let Some(meter) = self.meter.take() {
                                meter.finish().await;
                            }
                            return Some(data_line(&serde_json::to_string(&err.body).unwrap_or_default()));
                        }
                        None => {
                            self.phase = Phase::Usage;
                            if !self.finished {
                                self.finished = true;
                                return Some(self.chunks.finish("stop"));
                            }
                        }
                    }
                }
                Phase::Usage => {
                    self.phase = Phase::Done;
                    let meter = self.meter.take();
                    let usage = meter.as_ref().map(UsageMeter::usage);
                    if let Some(meter) = meter {
                        meter.finish().await;
                    }
                    if let (true, Some(usage)) = (self.chunks.include_usage, usage) {
                        return Some(self.chunks.usage(usage));
                    }
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Some(Bytes::from_static(b"data: [DONE]\n\n"));
                }
                Phase::End => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &Bytes) -> Value {
        let text = std::str::from_utf8(line).unwrap();
        let json = text.strip_prefix("data: ").and_then(|t| t.strip_suffix("\n\n")).expect("one data line");
        serde_json::from_str(json).expect("valid JSON")
    }

    #[test]
    fn templated_chunks_equal_the_openai_shape() {
        let chunks = Chunks::new("chatcmpl-1\"x".into(), 1_700_000_000, "gpt-\u{e9}\n".into(), true);
        let head = |choices: Value| json!({"id": "chatcmpl-1\"x", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": "gpt-\u{e9}\n", "choices": choices});
        let text = "quote \" backslash \\ newline \n tab \t control \u{1} emoji \u{1F600}";
        assert_eq!(
            parsed(&chunks.delta(text)),
            head(json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]))
        );
        assert_eq!(
            parsed(&chunks.first()),
            head(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]))
        );
        assert_eq!(
            parsed(&chunks.finish("length")),
            head(json!([{"index": 0, "delta": {}, "finish_reason": "length"}]))
        );
        let usage = conclave_core::records::Usage { prompt_tokens: 3, completion_tokens: 4 };
        let mut expected = head(json!([]));
        expected["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        assert_eq!(parsed(&chunks.usage(usage)), expected);
    }
}
