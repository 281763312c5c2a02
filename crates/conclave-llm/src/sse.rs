//! Reading OpenAI-style streamed chunks (`data: {chat.completion.chunk}` … `data: [DONE]`)
//! into the domain's [`ChatEvent`]s. Pure functions, so every odd chunk shape is unit tested.

use conclave_core::provider::{ChatEvent, ProviderError};
use conclave_core::records::Usage;
use serde::Deserialize;

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    /// Non-streamed bodies carry `message` instead of `delta`.
    #[serde(default)]
    message: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Deserialize)]
pub(crate) struct WireError {
    #[serde(default)]
    pub message: Option<String>,
}

/// What one `data:` line means.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    Events(Vec<ChatEvent>),
    Done,
}

pub(crate) fn parse_data(data: &str) -> Result<Line, ProviderError> {
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Line::Done);
    }
    let chunk: Chunk = serde_json::from_str(data)
        .map_err(|e| ProviderError::InvalidResponse(format!("a streamed chunk is not valid JSON ({e})")))?;
    events(chunk).map(Line::Events)
}

/// A whole non-streamed `chat.completion` body, as the same events.
pub(crate) fn parse_completion(body: &[u8]) -> Result<Vec<ChatEvent>, ProviderError> {
    let chunk: Chunk = serde_json::from_slice(body)
        .map_err(|e| ProviderError::InvalidResponse(format!("the response is not valid JSON ({e})")))?;
    if chunk.choices.is_empty() && chunk.error.is_none() {
        return Err(ProviderError::InvalidResponse("the response has no choices".into()));
    }
    events(chunk)
}

fn events(chunk: Chunk) -> Result<Vec<ChatEvent>, ProviderError> {
    if let Some(error) = chunk.error {
        return Err(ProviderError::Stream(error.message.unwrap_or_else(|| "unspecified error".into())));
    }
    let mut out = Vec::new();
    if let Some(choice) = chunk.choices.into_iter().next() {
        let text = choice.delta.or(choice.message).and_then(|d| d.content);
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            out.push(ChatEvent::Delta(text));
        }
        if let Some(reason) = choice.finish_reason {
            out.push(ChatEvent::Finish { reason: Some(reason) });
        }
    }
    if let Some(u) = chunk.usage {
        out.push(ChatEvent::Usage(Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }));
    }
    Ok(out)
}

/// The message of an OpenAI-shaped error body, if it is one.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: ErrorField,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object(WireError),
        Text(String),
    }
    match serde_json::from_slice::<Body>(body).ok()?.error {
        ErrorField::Object(e) => e.message,
        ErrorField::Text(t) => Some(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_finish_usage_and_done() {
        assert_eq!(
            parse_data(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#)
                .unwrap(),
            Line::Events(vec![])
        );
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{"content":"Hel"}}]}"#).unwrap(),
            Line::Events(vec![ChatEvent::Delta("Hel".into())])
        );
        assert_eq!(
            parse_data(r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#).unwrap(),
            Line::Events(vec![ChatEvent::Finish { reason: Some("length".into()) }])
        );
        assert_eq!(
            parse_data(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#).unwrap(),
            Line::Events(vec![ChatEvent::Usage(Usage { prompt_tokens: 3, completion_tokens: 5 })])
        );
        assert_eq!(parse_data(" [DONE] ").unwrap(), Line::Done);
    }

    #[test]
    fn errors_and_garbage() {
        assert!(matches!(
            parse_data(r#"{"error":{"message":"overloaded","type":"server_error"}}"#),
            Err(ProviderError::Stream(m)) if m == "overloaded"
        ));
        assert!(matches!(parse_data("this is not json"), Err(ProviderError::InvalidResponse(_))));
    }

    #[test]
    fn non_streamed_body() {
        let events = parse_completion(
            br#"{"choices":[{"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        )
        .unwrap();
        assert_eq!(events.len(), 3);
        assert!(parse_completion(b"{}").is_err());
        assert!(parse_completion(b"nope").is_err());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(error_message(br#"{"error":{"message":"bad key","code":"x"}}"#).as_deref(), Some("bad key"));
        assert_eq!(error_message(br#"{"error":"Model not found"}"#).as_deref(), Some("Model not found"));
        assert_eq!(error_message(b"<html>"), None);
    }
}
