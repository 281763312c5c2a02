//! Server-Sent Events for replies: `message`, `delta`…, then one `done` or `error`, each with an
//! `id`, and a `: ping` comment every 15 s while the reply is quiet.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use conclave_core::service::events::ReplyEvent;
use futures::{Stream, StreamExt};
use serde_json::json;

use crate::error::ApiError;

pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Whether the client asked for an event stream.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("text/event-stream")))
}

pub fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The reply's events as an SSE response.
pub fn respond(events: impl Stream<Item = ReplyEvent> + Send + 'static, request_id: Option<String>) -> Response {
    let stream = events.map(move |event| Ok::<_, Infallible>(to_sse(event, request_id.as_deref())));
    let mut response =
        Sse::new(stream).keep_alive(KeepAlive::new().interval(PING_INTERVAL).text(" ping")).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    // Tells buffering proxies (nginx and friends) to pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn to_sse(event: ReplyEvent, request_id: Option<&str>) -> Event {
    match event {
        ReplyEvent::Message { id, user_message, reply_id } => {
            let mut data = serde_json::to_value(&user_message).unwrap_or_default();
            match data.as_object_mut() {
                Some(obj) => {
                    obj.insert("reply_id".into(), json!(reply_id));
                }
                None => data = json!({ "reply_id": reply_id }),
            }
            Event::default().event("message").id(id).data(data.to_string())
        }
        ReplyEvent::Delta { id, message_id, text } => {
            Event::default().event("delta").id(id).data(json!({ "message_id": message_id, "text": text }).to_string())
        }
        ReplyEvent::Done { id, message } => {
            Event::default().event("done").id(id).data(serde_json::to_string(&message).unwrap_or_default())
        }
        ReplyEvent::Error { id, error, message } => {
            let mut problem = ApiError::Domain(error).problem();
            problem.request_id = request_id.map(str::to_owned);
            let mut data = serde_json::to_value(&problem).unwrap_or_default();
            if let Some(obj) = data.as_object_mut() {
                obj.insert("message_id".into(), json!(message.id));
                obj.insert("partial_content".into(), json!(message.content));
            }
            Event::default().event("error").id(id).data(data.to_string())
        }
    }
}
