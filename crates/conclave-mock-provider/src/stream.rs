//! Streamed answers: server-sent events in the shape of OpenAI's `chat.completion.chunk`, one
//! event produced (and flushed) at a time.
//!
//! Benchmarks hold thousands of these streams open on two cores, so an event is built straight
//! into one buffer, sized up front, from a per-stream prefix and the reply text, with no
//! `serde_json::Value` in between; and an event is only built when the server asks for it.

use std::io;
use std::ops::Range;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::completion::{Answer, TokenCounts};
use crate::script::Failure;

// The pieces of an event: the stream's prefix (`data: {…,"choices":[`), one of these, `\n\n`.
const ROLE_CHOICE: &[u8] = br#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
const CONTENT_OPEN: &[u8] = br#"{"index":0,"delta":{"content":"#;
const CONTENT_CLOSE: &[u8] = br#"},"finish_reason":null}]}"#;
const FINISH_OPEN: &[u8] = br#"{"index":0,"delta":{},"finish_reason":"#;
const FINISH_CLOSE: &[u8] = br#"}]}"#;
const EVENT_END: &[u8] = b"\n\n";

// Whole events, the same for every stream.
const DONE: &[u8] = b"data: [DONE]\n\n";
const MID_STREAM_ERROR: &[u8] =
    concat!(r#"data: {"error":{"message":"mock failure mid-stream","type":"server_error","code":"mock"}}"#, "\n\n")
        .as_bytes();
const GARBAGE: &[u8] = b"data: this is not json\n\n";

/// The error that makes the server close the connection in the middle of a body.
///
/// The server drops whatever it has not yet written when a body fails, so the body first
/// yields once: the server flushes what is buffered (the status, headers and events so far) and
/// the client sees the connection drop after them, not instead of them.
pub(crate) async fn dropped_connection() -> io::Error {
    tokio::task::yield_now().await;
    io::Error::other("mock provider dropped the connection")
}

/// A scripted failure that cuts a stream short after some content chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cutoff {
    /// Close the connection.
    Drop(usize),
    /// Send the mid-stream error event, then end the stream.
    Error(usize),
}

impl Cutoff {
    pub(crate) fn from_failure(failure: &Failure) -> Option<Cutoff> {
        match *failure {
            Failure::DropAfterChunks(n) => Some(Cutoff::Drop(n)),
            Failure::ErrorAfterChunks(n) => Some(Cutoff::Error(n)),
            Failure::Status { .. } | Failure::Garbage | Failure::Hang => None,
        }
    }

    fn after(self) -> usize {
        match self {
            Cutoff::Drop(n) | Cutoff::Error(n) => n,
        }
    }
}

/// The `text/event-stream` response for `answer`.
pub(crate) fn respond(
    answer: Answer,
    include_usage: bool,
    cutoff: Option<Cutoff>,
    stop: CancellationToken,
) -> Response {
    let events = Events::new(answer, include_usage, cutoff, stop);
    // `unfold` keeps each step's future inline, so a stream costs one allocation for the body
    // and one buffer per event, however long it runs.
    let body = futures::stream::unfold(events, |mut events| async move {
        let event = events.next_event().await?;
        Some((event, events))
    });
    event_stream(Body::from_stream(body))
}

/// The streamed form of `Failure::Garbage`: one event whose data is not JSON.
pub(crate) fn garbage() -> Response {
    event_stream(Body::from(Bytes::from_static(GARBAGE)))
}

fn event_stream(body: Body) -> Response {
    ([(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")], body).into_response()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Role,
    Content,
    Usage(TokenCounts),
    Done,
    End,
}

struct Events {
    answer: Answer,
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`,
    /// shared by every event of the stream.
    prefix: Bytes,
    next: Next,
    parts: Parts,
    sent: usize,
    include_usage: bool,
    cutoff: Option<Cutoff>,
    delay: Duration,
    stop: CancellationToken,
}

impl Events {
    fn new(answer: Answer, include_usage: bool, cutoff: Option<Cutoff>, stop: CancellationToken) -> Events {
        let mut prefix = BytesMut::with_capacity(96 + answer.id.len() + answer.model.len());
        prefix.put_slice(br#"data: {"id":"#);
        put_json_str(&mut prefix, &answer.id);
        prefix.put_slice(br#","object":"chat.completion.chunk","created":"#);
        prefix.put_slice(answer.created.to_string().as_bytes());
        prefix.put_slice(br#","model":"#);
        put_json_str(&mut prefix, &answer.model);
        prefix.put_slice(br#","choices":["#);
        let parts = Parts::new(answer.reply(), answer.script().chunks);
        let delay = answer.script().chunk_delay;
        Events { answer, prefix: prefix.freeze(), next: Next::Role, parts, sent: 0, include_usage, cutoff, delay, stop }
    }

    /// The next event, an error to make the server drop the connection, or `None` at the end.
    async fn next_event(&mut self) -> Option<io::Result<Bytes>> {
        match self.next {
            Next::Role => {
                self.next = Next::Content;
                Some(Ok(self.event(ROLE_CHOICE.len(), |buf| buf.put_slice(ROLE_CHOICE))))
            }
            Next::Content => Some(self.content_or_close().await),
            Next::Usage(usage) => {
                self.next = Next::Done;
                let rest = format!(
                    r#"],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
                    usage.prompt,
                    usage.completion,
                    usage.total()
                );
                Some(Ok(self.event(rest.len(), |buf| buf.put_slice(rest.as_bytes()))))
            }
            Next::Done => {
                self.next = Next::End;
                Some(Ok(Bytes::from_static(DONE)))
            }
            Next::End => None,
        }
    }

    async fn content_or_close(&mut self) -> io::Result<Bytes> {
        let cut_here = self.cutoff.is_some_and(|c| self.sent >= c.after());
        let part = if cut_here { None } else { self.parts.next(self.answer.reply()) };
        let Some(range) = part else {
            return self.close().await;
        };
        self.pause().await?;
        self.sent += 1;
        let text = &self.answer.reply()[range];
        // Room for the text plus a few escapes; the buffer grows if a text needs more.
        let room = CONTENT_OPEN.len() + text.len() + 8 + CONTENT_CLOSE.len();
        Ok(self.event(room, |buf| {
            buf.put_slice(CONTENT_OPEN);
            put_json_str(buf, text);
            buf.put_slice(CONTENT_CLOSE);
        }))
    }

    /// What follows the content: the finish chunk, or the scripted cut.
    async fn close(&mut self) -> io::Result<Bytes> {
        match self.cutoff {
            Some(Cutoff::Drop(_)) => {
                self.next = Next::End;
                Err(dropped_connection().await)
            }
            Some(Cutoff::Error(_)) => {
                self.next = Next::End;
                Ok(Bytes::from_static(MID_STREAM_ERROR))
            }
            None => {
                self.next = match self.answer.usage {
                    Some(usage) if self.include_usage => Next::Usage(usage),
                    _ => Next::Done,
                };
                let reason = &self.answer.script().finish_reason;
                let room = FINISH_OPEN.len() + reason.len() + 2 + FINISH_CLOSE.len();
                Ok(self.event(room, |buf| {
                    buf.put_slice(FINISH_OPEN);
                    put_json_str(buf, reason);
                    buf.put_slice(FINISH_CLOSE);
                }))
            }
        }
    }

    /// Waits the chunk delay. Stopping the provider ends the stream with a dropped connection,
    /// as a real server going away would.
    async fn pause(&mut self) -> io::Result<()> {
        if self.delay.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(self.delay) => Ok(()),
            () = self.stop.cancelled() => {
                self.next = Next::End;
                Err(io::Error::other("mock provider stopped"))
            }
        }
    }

    /// One event: the stream's prefix, what `rest` writes (`room` bytes or about), the end.
    fn event(&self, room: usize, rest: impl FnOnce(&mut BytesMut)) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.prefix.len() + room + EVENT_END.len());
        buf.put_slice(&self.prefix);
        rest(&mut buf);
        buf.put_slice(EVENT_END);
        buf.freeze()
    }
}

/// Walks a text in `wanted` near-equal parts (sizes differ by at most one char), never more
/// parts than chars and never fewer than one. Holds offsets, not the text, so it can live
/// beside the text it walks.
#[derive(Debug)]
struct Parts {
    start: usize,
    chars_left: usize,
    parts_left: usize,
}

impl Parts {
    fn new(text: &str, wanted: usize) -> Parts {
        let chars = text.chars().count();
        Parts { start: 0, chars_left: chars, parts_left: wanted.clamp(1, chars.max(1)) }
    }

    /// The byte range of the next part of `text`, the same text given to `new`.
    fn next(&mut self, text: &str) -> Option<Range<usize>> {
        if self.parts_left == 0 {
            return None;
        }
        let take = self.chars_left.div_ceil(self.parts_left);
        let rest = text.get(self.start..).unwrap_or_default();
        let end = rest.char_indices().nth(take).map_or(text.len(), |(i, _)| self.start + i);
        let range = self.start..end;
        self.start = end;
        self.chars_left -= take;
        self.parts_left -= 1;
        Some(range)
    }
}

/// Writes `text` as a JSON string literal.
fn put_json_str(buf: &mut BytesMut, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    buf.put_u8(b'"');
    let mut plain_from = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let mut control = *b"\\u0000";
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => {
                control[4] = HEX[usize::from(byte >> 4)];
                control[5] = HEX[usize::from(byte & 0x0f)];
                &control
            }
            _ => continue,
        };
        buf.put_slice(&bytes[plain_from..i]);
        buf.put_slice(escaped);
        plain_from = i + 1;
    }
    buf.put_slice(&bytes[plain_from..]);
    buf.put_u8(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, wanted: usize) -> Vec<&str> {
        let mut parts = Parts::new(text, wanted);
        std::iter::from_fn(|| parts.next(text)).map(|r| &text[r]).collect()
    }

    #[test]
    fn splits_into_near_equal_parts() {
        assert_eq!(split("abcdefghij", 3), ["abcd", "efg", "hij"]);
        assert_eq!(split("abcdef", 2), ["abc", "def"]);
    }

    #[test]
    fn splits_on_char_boundaries() {
        assert_eq!(split("héllo wörld", 4), ["hél", "lo ", "wör", "ld"]);
        assert_eq!(split("日本語", 2), ["日本", "語"]);
    }

    #[test]
    fn never_more_parts_than_chars_nor_fewer_than_one() {
        assert_eq!(split("abc", 8), ["a", "b", "c"]);
        assert_eq!(split("abc", 0), ["abc"]);
        assert_eq!(split("", 8), [""]);
    }

    #[test]
    fn escapes_like_serde_json() {
        for text in ["plain", "quote \" back \\ slash", "new\nline\ttab\r", "\u{1}\u{1f}é日"] {
            let mut buf = BytesMut::new();
            put_json_str(&mut buf, text);
            let back: String = serde_json::from_slice(&buf).expect("valid JSON string");
            assert_eq!(back, text);
        }
    }
}
