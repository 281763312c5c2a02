//! The script: what the mock provider answers, how fast, and how it fails. A test builds one,
//! hands it to the provider, and can swap it between requests.

use std::time::Duration;

/// How the mock provider answers the requests that arrive while this script is set.
#[derive(Clone, Debug)]
pub struct Script {
    pub reply: Reply,
    /// Content chunks when streaming: the reply text split into this many near-equal parts on
    /// char boundaries (at least 1; fewer if the text is shorter). Default 8.
    pub chunks: usize,
    /// Wait before sending the response status and headers. Default 0.
    pub response_delay: Duration,
    /// Wait between two streamed chunks. Default 0.
    ///
    /// It is waited before each content chunk (so also between the opening role chunk and the
    /// first content): a streamed reply takes about `chunks * chunk_delay`. The closing chunks
    /// (finish, usage, `[DONE]`) follow the last content chunk at once.
    pub chunk_delay: Duration,
    pub usage: Usage,
    pub failure: Option<Failure>,
    /// Listed by GET /v1/models. Default ["mock-model", "mock-large"].
    pub models: Vec<String>,
    /// When Some, requests must carry `Authorization: Bearer <key>` or `api-key: <key>`, else
    /// 401 (OpenAI error shape).
    pub api_key: Option<String>,
    /// Default "stop".
    pub finish_reason: String,
}

/// The assistant's message.
#[derive(Clone, Debug)]
pub enum Reply {
    Text(String),
    /// "echo: " + the content of the last message with role "user".
    Echo,
}

/// The token counts reported back.
#[derive(Clone, Debug)]
pub enum Usage {
    Report {
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// prompt = number of whitespace-separated words over all request messages' contents;
    /// completion = words of the reply.
    Computed,
    /// No usage object at all (not in the non-streamed body, not in the stream).
    Omit,
}

/// A way for the provider to misbehave.
///
/// The key and body checks come first: a failure only answers requests that would otherwise
/// have succeeded. `Status`, `Garbage` and `Hang` also apply to GET /v1/models; the two
/// mid-stream failures only to chat completions.
#[derive(Clone, Debug)]
pub enum Failure {
    /// That HTTP status with an OpenAI-shaped body {"error":{"message","type","code"}}.
    Status { status: u16, message: String },
    /// 200, content-type application/json, body `this is not json` (for streaming too: a
    /// `data: this is not json` line then close).
    Garbage,
    /// Accept the connection and request, never answer, until the client goes away.
    ///
    /// Stopping the provider ends the wait with a 503.
    Hang,
    /// Streaming: close the connection after n content chunks, without finish chunk or
    /// [DONE]. If the reply has fewer chunks, all of them are sent before the connection is
    /// closed.
    ///
    /// A request that is not streamed gets a 200 and half of its JSON body, then the
    /// connection is closed.
    DropAfterChunks(usize),
    /// Streaming: after n content chunks send
    /// `data: {"error":{"message":"mock failure mid-stream","type":"server_error","code":"mock"}}`
    /// then close. If the reply has fewer chunks, all of them are sent before the error.
    ///
    /// A request that is not streamed gets a 500 with that error object.
    ErrorAfterChunks(usize),
}

impl Default for Script {
    fn default() -> Script {
        Script {
            reply: Reply::Text("Hello from the mock provider.".to_owned()),
            chunks: 8,
            response_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: Usage::Computed,
            failure: None,
            models: vec!["mock-model".to_owned(), "mock-large".to_owned()],
            api_key: None,
            finish_reason: "stop".to_owned(),
        }
    }
}

impl Script {
    /// The default script with that reply.
    pub fn text(reply: impl Into<String>) -> Script {
        Script { reply: Reply::Text(reply.into()), ..Script::default() }
    }

    /// The default script, echoing the last user message.
    pub fn echo() -> Script {
        Script { reply: Reply::Echo, ..Script::default() }
    }

    pub fn with_chunks(self, n: usize) -> Script {
        Script { chunks: n, ..self }
    }

    pub fn with_response_delay(self, d: Duration) -> Script {
        Script { response_delay: d, ..self }
    }

    pub fn with_chunk_delay(self, d: Duration) -> Script {
        Script { chunk_delay: d, ..self }
    }

    pub fn with_usage(self, u: Usage) -> Script {
        Script { usage: u, ..self }
    }

    pub fn with_failure(self, f: Failure) -> Script {
        Script { failure: Some(f), ..self }
    }

    pub fn with_models(self, m: Vec<String>) -> Script {
        Script { models: m, ..self }
    }

    pub fn with_api_key(self, k: impl Into<String>) -> Script {
        Script { api_key: Some(k.into()), ..self }
    }

    pub fn with_finish_reason(self, r: impl Into<String>) -> Script {
        Script { finish_reason: r.into(), ..self }
    }
}
