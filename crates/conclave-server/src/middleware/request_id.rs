//! Gives every request an id (the caller's `x-request-id` if it is sane, else a new UUID),
//! returns it on every response, and writes it into problem bodies. Continues the caller's W3C
//! trace (a valid `traceparent`, else a new trace): every log line of the request names the
//! trace id, the response's `traceparent` names this server's span, and provider calls carry it.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Problem;
use crate::middleware::traceparent::{TraceParent, TRACEPARENT};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, in the request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn sane(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let trace = match req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse) {
        Some(parent) => parent.child(),
        None => TraceParent::new_trace(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(trace);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        trace_id = %trace.trace_id_hex(),
        method = %req.method(),
        path = %req.uri().path()
    );
    let run = conclave_core::trace::scope(trace.to_string(), next.run(req));
    let mut response = tracing::Instrument::instrument(run, span).await;
    if let Some(mut problem) = response.extensions_mut().remove::<Problem>() {
        // Re-render so the body names the request the operator should look for.
        problem.request_id = Some(id.clone());
        if let Ok(body) = serde_json::to_vec(&problem) {
            response.headers_mut().remove(axum::http::header::CONTENT_LENGTH);
            *response.body_mut() = axum::body::Body::from(body);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::sane;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(sane("abc-123_X.y"));
        assert!(!sane(""));
        assert!(!sane(&"a".repeat(129)));
        assert!(!sane("a b"));
        assert!(!sane("<script>"));
    }
}
