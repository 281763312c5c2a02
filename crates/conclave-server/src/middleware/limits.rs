//! Body limits and timeouts by route class, chosen from the method and the path (so a route
//! gets its class by matching a pattern, without being listed anywhere else):
//!
//! - `json` (every API route not below): bodies up to `CONCLAVE_MAX_JSON_BYTES`, the whole
//!   request within `CONCLAVE_REQUEST_TIMEOUT_SECONDS` (else `503` problem+json);
//! - `upload` (`POST /api/v1/libraries/{id}/documents`): bodies up to
//!   `CONCLAVE_MAX_UPLOAD_BYTES`, no whole-request timeout;
//! - `stream` (model replies, streamed or not, their events, the gateway, the export): JSON
//!   bodies, no whole-request timeout (the replies have their own idle handling and pings);
//! - `health` (`/healthz`, `/readyz`): no body, the request timeout.
//!
//! Every class refuses request headers over [`MAX_HEADER_BYTES`] (`431`), cuts a request body that stalls for `CONCLAVE_BODY_IDLE_TIMEOUT_SECONDS`, and a
//! declared `Content-Length` beyond the class's limit is refused before a byte is read (`413`).
//! Slow headers are cut by the listener (`CONCLAVE_HEADER_READ_TIMEOUT_SECONDS`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use tower::{Layer as _, ServiceExt as _};

use crate::error::{ApiError, Problem};
use crate::routes::gateway::GatewayError;
use crate::state::HttpSettings;

/// What a route does with its request, which decides its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Json,
    Upload,
    Stream,
    Health,
}

/// Limits beyond the JSON body limit (`HttpSettings::max_json_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    /// Largest upload body (class `upload`).
    pub max_upload_bytes: u64,
    /// Longest a `json` or `health` request may take, body included.
    pub request_timeout: Duration,
    /// Longest a request body may go without sending data.
    pub body_idle_timeout: Duration,
}

impl Default for RouteLimits {
    fn default() -> Self {
        RouteLimits {
            max_upload_bytes: 1 << 30,
            request_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
        }
    }
}

/// The class of a request, from its method and path alone.
pub fn classify(method: &Method, path: &str) -> RouteClass {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        (_, ["healthz"] | ["readyz"]) => RouteClass::Health,
        (&Method::POST, ["api", "v1", "libraries", _, "documents"]) => RouteClass::Upload,
        (&Method::POST, ["api", "v1", "conversations", _, "messages"])
        | (&Method::POST, ["api", "v1", "conversations", _, "messages", _, "regenerate"])
        | (&Method::GET, ["api", "v1", "conversations", _, "messages", _, "events"])
        | (&Method::GET, ["api", "v1", "me", "export"])
        | (&Method::POST, ["v1", "chat", "completions"]) => RouteClass::Stream,
        _ => RouteClass::Json,
    }
}

/// Most bytes of request headers (names, values and their separators), over HTTP/1.1 as over
/// HTTP/2 (whose listener refuses larger header lists itself): a browser sends a few KiB.
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// How much more than the limit is read and dropped before a 413, and for how long at most.
const DRAIN_LIMIT: u64 = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

pub async fn layer(State(http): State<Arc<HttpSettings>>, req: Request, next: Next) -> Response {
    // The gateway answers its refusals in OpenAI's error shape.
    let gateway = req.uri().path().starts_with("/v1/");
    let header_bytes: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        let detail = format!("The request headers are larger than this server accepts ({MAX_HEADER_BYTES} bytes).");
        if gateway {
            return GatewayError::headers_too_large(detail).into_response();
        }
        return Problem::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large", detail).render();
    }
    let class = classify(req.method(), req.uri().path());
    let max = match class {
        RouteClass::Upload => usize::try_from(http.limits.max_upload_bytes).unwrap_or(usize::MAX),
        RouteClass::Json | RouteClass::Stream | RouteClass::Health => http.max_json_bytes,
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(len) = declared.filter(|len| *len > max as u64) {
        // Read (and drop) a body that is only somewhat too large before answering, so the client,
        // still sending, reads the 413 instead of a connection reset; a far larger one is cut.
        // Frames are dropped as they come: nothing of the body is held.
        if len <= max as u64 + DRAIN_LIMIT {
            let drain = async {
                let mut frames = req.into_body().into_data_stream();
                let mut read = 0u64;
                while let Some(Ok(frame)) = futures::StreamExt::next(&mut frames).await {
                    read += frame.len() as u64;
                    if read > len {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        }
        let detail = format!("The request body is larger than this route accepts ({max} bytes).");
        if gateway {
            return GatewayError::too_large(detail).into_response();
        }
        return ApiError::PayloadTooLarge(detail).into_response();
    }
    // Bodies known to be empty (most GETs) need no watching.
    let empty = declared == Some(0) || axum::body::HttpBody::size_hint(req.body()).exact() == Some(0);
    let req = if empty { req } else { req.map(|body| idle_cut(body, http.limits.body_idle_timeout)) };
    let run = DefaultBodyLimit::max(max).layer(next).oneshot(req);
    match class {
        RouteClass::Upload | RouteClass::Stream => run.await.unwrap_or_else(|e| match e {}),
        RouteClass::Json | RouteClass::Health => match tokio::time::timeout(http.limits.request_timeout, run).await {
            Ok(response) => response.unwrap_or_else(|e| match e {}),
            Err(_) => {
                tracing::warn!(timeout_seconds = http.limits.request_timeout.as_secs(), "request timed out");
                let detail = format!(
                    "The server did not finish this request within {} s; try again shortly.",
                    http.limits.request_timeout.as_secs()
                );
                if gateway {
                    return GatewayError::timed_out(detail).into_response();
                }
                let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", detail);
                problem.retry_after = Some(Duration::from_secs(5));
                problem.render()
            }
        },
    }
}

#[derive(Debug)]
struct Stalled(Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body sent nothing for {} s", self.0.as_secs())
    }
}

impl std::error::Error for Stalled {}

/// `body`, failing once it sends nothing for `idle`.
fn idle_cut(body: Body, idle: Duration) -> Body {
    let stream = body.into_data_stream();
    Body::from_stream(futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(stream))),
            Ok(Some(Err(e))) => Some((Err(Box::new(e) as axum::BoxError), None)),
            Ok(None) => None,
            Err(_) => Some((Err(Box::new(Stalled(idle)) as axum::BoxError), None)),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use axum::Router;

    #[test]
    fn routes_are_classed_by_method_and_path() {
        use RouteClass::*;
        let cases = [
            (Method::GET, "/healthz", Health),
            (Method::GET, "/readyz", Health),
            (Method::POST, "/api/v1/libraries/0190c0de-0000-7000-8000-000000000000/documents", Upload),
            (Method::POST, "/api/v1/libraries/abc/documents/", Upload),
            (Method::GET, "/api/v1/libraries/abc/documents", Json),
            (Method::POST, "/api/v1/libraries/abc/documents/def", Json),
            (Method::POST, "/api/v1/conversations/abc/messages", Stream),
            (Method::GET, "/api/v1/conversations/abc/messages", Json),
            (Method::POST, "/api/v1/conversations/abc/messages/def/regenerate", Stream),
            (Method::POST, "/api/v1/conversations/abc/messages/def/cancel", Json),
            (Method::GET, "/api/v1/conversations/abc/messages/def/events", Stream),
            (Method::POST, "/v1/chat/completions", Stream),
            (Method::GET, "/api/v1/me/export", Stream),
            (Method::POST, "/api/v1/agents", Json),
            (Method::GET, "/", Json),
        ];
        for (method, path, class) in cases {
            assert_eq!(classify(&method, path), class, "{method} {path}");
        }
    }

    fn app(limits: RouteLimits) -> Router {
        let http = Arc::new(HttpSettings { max_json_bytes: 16, limits, ..HttpSettings::default() });
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "done"
        };
        Router::new()
            .route("/api/v1/agents", get(slow).post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .route("/api/v1/conversations/{id}/messages/{m}/events", get(slow))
            .route("/v1/models", get(slow))
            .route(
                "/api/v1/libraries/{id}/documents",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(http, layer))
    }

    async fn send(app: Router, req: Request) -> Response {
        app.oneshot(req).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_json_request_that_runs_too_long_is_a_503_problem() {
        let limits = RouteLimits { request_timeout: Duration::from_secs(30), ..RouteLimits::default() };
        let req = Request::get("/api/v1/agents").body(Body::empty()).unwrap();
        let response = send(app(limits), req).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[tokio::test(start_paused = true)]
    async fn the_gateway_answers_its_timeouts_in_openais_error_shape() {
        let limits = RouteLimits { request_timeout: Duration::from_secs(30), ..RouteLimits::default() };
        let req = Request::get("/v1/models").body(Body::empty()).unwrap();
        let response = send(app(limits), req).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        let body: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 4096).await.unwrap()).unwrap();
        assert_eq!(
            (body["error"]["type"].as_str(), body["error"]["code"].as_str()),
            (Some("api_error"), Some("timeout"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_request_has_no_total_timeout() {
        let limits = RouteLimits { request_timeout: Duration::from_secs(30), ..RouteLimits::default() };
        let req = Request::get("/api/v1/conversations/a/messages/b/events").body(Body::empty()).unwrap();
        let response = send(app(limits), req).await;
        assert_eq!(response.status(), StatusCode::OK, "ran past the request timeout to its end");
    }

    #[tokio::test]
    async fn bodies_are_limited_by_class() {
        let limits = RouteLimits { max_upload_bytes: 64, ..RouteLimits::default() };
        let post = |path: &str, len: usize| {
            Request::post(path).header(header::CONTENT_LENGTH, len).body(Body::from(vec![b'x'; len])).unwrap()
        };
        assert_eq!(send(app(limits), post("/api/v1/agents", 16)).await.status(), StatusCode::OK);
        let too_big = send(app(limits), post("/api/v1/agents", 17)).await;
        assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_big.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(send(app(limits), post("/api/v1/libraries/a/documents", 64)).await.status(), StatusCode::OK);
        let upload = send(app(limits), post("/api/v1/libraries/a/documents", 65)).await;
        assert_eq!(upload.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // A body without a declared length is counted as it arrives.
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(vec![b'x'; 10]), Ok(vec![b'x'; 10])]);
        let req = Request::post("/api/v1/agents").body(Body::from_stream(chunks)).unwrap();
        assert_eq!(send(app(limits), req).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn request_headers_are_limited() {
        let with_header = |path: &str, len: usize| {
            Request::post(path)
                .header("x-padding", "p".repeat(len))
                .header(header::CONTENT_LENGTH, 0)
                .body(Body::empty())
                .unwrap()
        };
        let limits = RouteLimits::default();
        assert_eq!(send(app(limits), with_header("/api/v1/agents", 60 << 10)).await.status(), StatusCode::OK);
        let refused = send(app(limits), with_header("/api/v1/agents", MAX_HEADER_BYTES)).await;
        assert_eq!(refused.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(refused.headers()[header::CONTENT_TYPE], "application/problem+json");
        let gateway = send(app(limits), with_header("/v1/models", MAX_HEADER_BYTES)).await;
        assert_eq!(gateway.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let body: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(gateway.into_body(), 4096).await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut() {
        let limits = RouteLimits { body_idle_timeout: Duration::from_secs(5), ..RouteLimits::default() };
        let (tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let req = Request::post("/api/v1/libraries/a/documents").body(Body::from_stream(rx)).unwrap();
        let response = send(app(limits), req).await;
        drop(tx);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("sent nothing for 5 s"), "{body:?}");
    }
}
