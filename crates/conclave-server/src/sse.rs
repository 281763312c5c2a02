//! Server-Sent Events for replies: `message`, `delta`…, then one `done` or `error`, each with an
//! `id`, and a `: ping` comment every 15 s while the reply is quiet.
//!
//! The body is written frame by frame, so the HTTP layer asks for the next frame only when the
//! client has taken the previous ones: a client that stops reading stops the stream where it is.
//! Small events already available when a frame is asked for go out together in that frame
//! (one write, at most 8 KiB). The `done` event's JSON is shared by every watcher of the reply,
//! never copied per client.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use conclave_core::service::events::ReplyEvent;
use futures::{FutureExt, Stream, StreamExt};
use serde_json::json;
use tokio::time::Instant;

use crate::error::ApiError;

pub const PING_INTERVAL: Duration = Duration::from_secs(15);
const PING: &[u8] = b": ping\n\n";

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
    let frames = frames(events.map(move |e| encode(e, request_id.as_deref())));
    stream_response(Body::from_stream(frames))
}

/// Wraps already-encoded SSE frames (e.g. the gateway's `data:` lines) with pings.
pub fn respond_frames(frames_in: impl Stream<Item = Vec<Bytes>> + Send + 'static) -> Response {
    stream_response(Body::from_stream(frames(frames_in)))
}

fn stream_response(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    // Tells buffering proxies (nginx and friends) to pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

struct Framer {
    events: Pin<Box<dyn Stream<Item = Vec<Bytes>> + Send>>,
    /// Frames taken from `events` and not yet sent.
    carry: VecDeque<Bytes>,
    /// Fires at most once per [`PING_INTERVAL`]; moved on lazily (only when it fires before the
    /// stream has been quiet that long), so a busy stream does not touch the timer per event.
    ping: Pin<Box<tokio::time::Sleep>>,
    last_sent: Instant,
    ended: bool,
}

/// Most bytes of small frames joined into one body frame (one write). Small, so that a client
/// that stops reading holds little in the HTTP layer's queue, and a larger frame (e.g. the
/// shared `done` JSON) always goes alone, uncopied.
const MAX_BATCH_BYTES: usize = 8 * 1024;

/// Body frames, each joining the small events already available (up to [`MAX_BATCH_BYTES`]) so
/// that a burst costs one write, not one per event; a ping after each quiet interval. A frame is
/// asked for only when the client has taken the previous one, so a slow reader still holds the
/// stream back.
fn frames(
    events: impl Stream<Item = Vec<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let framer = Framer {
        events: Box::pin(events),
        carry: VecDeque::new(),
        ping: Box::pin(tokio::time::sleep(PING_INTERVAL)),
        last_sent: Instant::now(),
        ended: false,
    };
    futures::stream::unfold(framer, |mut f| async move {
        while f.carry.is_empty() {
            if f.ended {
                return None;
            }
            tokio::select! {
                biased;
                next = f.events.next() => match next {
                    Some(frames) => f.carry.extend(frames),
                    None => f.ended = true,
                },
                () = f.ping.as_mut() => {
                    let due = f.last_sent + PING_INTERVAL;
                    if Instant::now() >= due {
                        f.last_sent = Instant::now();
                        f.ping.as_mut().reset(f.last_sent + PING_INTERVAL);
                        return Some((Ok(Bytes::from_static(PING)), f));
                    }
                    f.ping.as_mut().reset(due);
                }
            }
        }
        let mut batch = Batch::default();
        'fill: loop {
            while let Some(front) = f.carry.front() {
                if batch.len > 0 && batch.len + front.len() > MAX_BATCH_BYTES {
                    break 'fill;
                }
                let frame = f.carry.pop_front().unwrap_or_default();
                batch.push(frame);
            }
            if f.ended || batch.len >= MAX_BATCH_BYTES {
                break;
            }
            match f.events.next().now_or_never() {
                Some(Some(more)) => f.carry.extend(more),
                Some(None) => f.ended = true,
                None => break,
            }
        }
        f.last_sent = Instant::now();
        Some((Ok(batch.into_bytes()), f))
    })
}

/// Frames joined without copying when there is only one.
#[derive(Default)]
struct Batch {
    parts: Vec<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, frame: Bytes) {
        self.len += frame.len();
        self.parts.push(frame);
    }

    fn into_bytes(mut self) -> Bytes {
        if self.parts.len() == 1 {
            return self.parts.pop().unwrap_or_default();
        }
        let mut joined = BytesMut::with_capacity(self.len);
        for part in &self.parts {
            joined.extend_from_slice(part);
        }
        joined.freeze()
    }
}

fn event(name: &str, id: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\nid: {id}\ndata: {data}\n\n"))
}

fn encode(event_in: ReplyEvent, request_id: Option<&str>) -> Vec<Bytes> {
    match event_in {
        ReplyEvent::Message { id, user_message, reply_id } => {
            let mut data = serde_json::to_value(&user_message).unwrap_or_default();
            match data.as_object_mut() {
                Some(obj) => {
                    obj.insert("reply_id".into(), json!(reply_id));
                }
                None => data = json!({ "reply_id": reply_id }),
            }
            vec![event("message", &id, &data.to_string())]
        }
        ReplyEvent::Delta { id, message_id, text } => {
            vec![event("delta", &id, &json!({ "message_id": message_id, "text": text }).to_string())]
        }
        // Compact JSON has no raw newline, so it is one `data:` line.
        ReplyEvent::Done { id, message } => vec![
            Bytes::from(format!("event: done\nid: {id}\ndata: ")),
            message.json.clone(),
            Bytes::from_static(b"\n\n"),
        ],
        ReplyEvent::Error { id, error, message } => {
            let mut problem = ApiError::Domain(error).problem();
            problem.request_id = request_id.map(str::to_owned);
            let mut data = serde_json::to_value(&problem).unwrap_or_default();
            if let Some(obj) = data.as_object_mut() {
                obj.insert("message_id".into(), json!(message.view.id));
                obj.insert("partial_content".into(), json!(message.view.content));
            }
            vec![event("error", &id, &data.to_string())]
        }
    }
}
