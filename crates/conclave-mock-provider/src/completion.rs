//! One chat completion: the reply worked out from the script and the request, its token counts,
//! and the body of a response that is not streamed.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::script::{Reply, Script, Usage};
use crate::stream;

/// Everything needed to answer one request, fixed when it arrives.
pub(crate) struct Answer {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
    pub(crate) usage: Option<TokenCounts>,
    // The reply text is read from the shared script instead of copied per request: benchmarks
    // keep thousands of streams open at once.
    script: Arc<Script>,
    echoed: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TokenCounts {
    pub(crate) prompt: u32,
    pub(crate) completion: u32,
}

impl TokenCounts {
    pub(crate) fn total(self) -> u32 {
        self.prompt.saturating_add(self.completion)
    }
}

impl Answer {
    pub(crate) fn new(id: String, model: String, script: Arc<Script>, messages: &[Value]) -> Answer {
        let echoed = match script.reply {
            Reply::Text(_) => None,
            Reply::Echo => Some(format!("echo: {}", last_user_text(messages))),
        };
        let mut answer = Answer { id, created: unix_now(), model, usage: None, script, echoed };
        answer.usage = match answer.script.usage {
            Usage::Report { prompt_tokens, completion_tokens } => {
                Some(TokenCounts { prompt: prompt_tokens, completion: completion_tokens })
            }
            Usage::Computed => Some(TokenCounts {
                prompt: messages.iter().map(|m| words(&message_text(m))).sum(),
                completion: words(answer.reply()),
            }),
            Usage::Omit => None,
        };
        answer
    }

    pub(crate) fn reply(&self) -> &str {
        match (&self.script.reply, &self.echoed) {
            (_, Some(echoed)) => echoed,
            (Reply::Text(text), None) => text,
            (Reply::Echo, None) => "",
        }
    }

    pub(crate) fn script(&self) -> &Script {
        &self.script
    }

    /// The `chat.completion` object of a response that is not streamed.
    pub(crate) fn body(&self) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": self.reply() },
                "finish_reason": self.script.finish_reason,
            }],
        });
        if let (Some(usage), Some(fields)) = (self.usage, body.as_object_mut()) {
            fields.insert(
                "usage".to_owned(),
                json!({
                    "prompt_tokens": usage.prompt,
                    "completion_tokens": usage.completion,
                    "total_tokens": usage.total(),
                }),
            );
        }
        body
    }

    /// A 200 whose body stops half-way: the connection is closed where the rest should be.
    pub(crate) fn truncated(&self) -> Response {
        let mut half = self.body().to_string().into_bytes();
        half.truncate(half.len() / 2);
        let half = futures::stream::once(async { Ok::<_, io::Error>(Bytes::from(half)) });
        let cut = futures::stream::once(async { Err(stream::dropped_connection().await) });
        ([(CONTENT_TYPE, "application/json")], Body::from_stream(half.chain(cut))).into_response()
    }
}

/// The text of a message: a plain string, or the text parts of a multi-part content joined by
/// new lines. Other parts (images, audio) carry no words.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|part| part.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(message_text)
        .unwrap_or_default()
}

fn words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

fn unix_now() -> u64 {
    // A clock before 1970 is a broken machine; 0 still makes a well-formed response.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(script: Script, messages: Value) -> Answer {
        let messages = messages.as_array().cloned().unwrap_or_default();
        Answer::new("id".into(), "m".into(), Arc::new(script), &messages)
    }

    #[test]
    fn echo_repeats_the_last_user_message() {
        let a = answer(
            Script::echo(),
            json!([
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ignored"},
                {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]},
                {"role": "system", "content": "not a user"},
            ]),
        );
        assert_eq!(a.reply(), "echo: second");
    }

    #[test]
    fn echo_without_a_user_message_is_just_the_prefix() {
        let a = answer(Script::echo(), json!([{"role": "system", "content": "x"}]));
        assert_eq!(a.reply(), "echo: ");
    }

    #[test]
    fn computed_usage_counts_words() {
        let a = answer(
            Script::text("three little words"),
            json!([
                {"role": "system", "content": "be  brief"},
                {"role": "user", "content": "hello\nthere you"},
                {"role": "assistant", "content": null},
            ]),
        );
        assert_eq!(a.usage, Some(TokenCounts { prompt: 5, completion: 3 }));
    }

    #[test]
    fn omitted_usage_leaves_no_usage_field() {
        let a = answer(Script::default().with_usage(Usage::Omit), json!([]));
        assert!(a.body().get("usage").is_none());
    }
}
