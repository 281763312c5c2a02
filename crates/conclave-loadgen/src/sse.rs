//! Just enough Server-Sent Events to time a stream: events are classified by substring, not
//! parsed as JSON, so the load client spends its two shared cores on sending, not on reading.

/// Which event stream is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI's `data: {chat.completion.chunk}` lines ending with `data: [DONE]`.
    OpenAi,
    /// Conclave's reply events: `event: message`, `event: delta`…, `event: done` or `event: error`.
    Conversation,
}

/// What an event means for the timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Reply text: the first one is the first token.
    Content,
    /// The usage chunk of a chat completion.
    Usage,
    /// The end of a complete reply.
    Done,
    /// An error reported inside the stream.
    Error,
    /// Anything else (the role chunk, the finish chunk, the stored user message).
    Other,
}

/// Splits a byte stream into events, carrying a partial line over from one read to the next.
pub struct Scanner {
    protocol: Protocol,
    pending: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
}

impl Scanner {
    pub fn new(protocol: Protocol) -> Scanner {
        Scanner { protocol, pending: Vec::with_capacity(512), event: Vec::new(), data: Vec::with_capacity(512) }
    }

    /// Feeds the next bytes of the body, calling `on_event` with the kind and data of every
    /// event they complete.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Kind, &[u8])) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(len) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + len;
            let line = &self.pending[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    on_event(classify(self.protocol, &self.event, &self.data), &self.data);
                }
                self.event.clear();
                self.data.clear();
            } else if let Some(value) = field(line, b"data") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
            } else if let Some(value) = field(line, b"event") {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            // Comments (`: ping`), `id:` and `retry:` say nothing about timings.
            start = end + 1;
        }
        self.pending.drain(..start);
    }
}

/// The value of `name: value` (one optional space after the colon), if the line is that field.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?.strip_prefix(b":")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

fn classify(protocol: Protocol, event: &[u8], data: &[u8]) -> Kind {
    match protocol {
        Protocol::OpenAi => {
            if data == b"[DONE]" {
                Kind::Done
            } else if data.starts_with(br#"{"error""#) {
                Kind::Error
            } else if has_text(data) {
                Kind::Content
            } else if contains(data, br#""usage":{"#) {
                Kind::Usage
            } else {
                Kind::Other
            }
        }
        Protocol::Conversation => match event {
            b"delta" => Kind::Content,
            b"done" => Kind::Done,
            b"error" => Kind::Error,
            _ => Kind::Other,
        },
    }
}

/// Whether a chunk carries reply text: `"content":"` followed by something other than the
/// closing quote (the role chunk carries an empty one).
fn has_text(data: &[u8]) -> bool {
    const KEY: &[u8] = br#""content":""#;
    data.windows(KEY.len() + 1).any(|w| w.starts_with(KEY) && w[KEY.len()] != b'"')
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(protocol: Protocol, reads: &[&[u8]]) -> Vec<Kind> {
        let mut scanner = Scanner::new(protocol);
        let mut out = Vec::new();
        for read in reads {
            scanner.feed(read, |kind, _| out.push(kind));
        }
        out
    }

    #[test]
    fn chat_completion_chunks_split_anywhere() {
        let body: &[u8] = concat!(
            r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            "\n\n",
            r#"data: {"choices":[{"index":0,"delta":{"content":"lorem"},"finish_reason":null}]}"#,
            "\r\n\r\n: ping\n\n",
            r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            "\n\n",
            r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            "\n\ndata: [DONE]\n\n",
        )
        .as_bytes();
        let expected = [Kind::Other, Kind::Content, Kind::Other, Kind::Usage, Kind::Done];
        assert_eq!(kinds(Protocol::OpenAi, &[body]), expected);
        for cut in 1..body.len() {
            assert_eq!(kinds(Protocol::OpenAi, &[&body[..cut], &body[cut..]]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn an_error_chunk_is_an_error() {
        let body = b"data: {\"error\":{\"message\":\"upstream\",\"type\":\"api_error\"}}\n\n";
        assert_eq!(kinds(Protocol::OpenAi, &[body]), [Kind::Error]);
    }

    #[test]
    fn conversation_events_by_name() {
        let body = b"event: message\nid: 1\ndata: {}\n\nevent: delta\nid: 2\ndata: {\"text\":\"a\"}\n\n\
                     : ping\n\nevent: done\nid: 3\ndata: {}\n\nevent: error\ndata: {}\n\n";
        assert_eq!(kinds(Protocol::Conversation, &[body]), [Kind::Other, Kind::Content, Kind::Done, Kind::Error]);
    }
}
