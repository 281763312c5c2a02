//! Error answers in OpenAI's shape, `{"error":{"message","type","code"}}`, so clients exercise the
//! same error parsing they use against the real API.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One error answer: a status and the fields of OpenAI's error object.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    code: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", code: None }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: message.into(), kind: "invalid_request_error", code: None }
    }

    /// Like OpenAI: a missing key has no code, a wrong one is `invalid_api_key`.
    pub(crate) fn unauthorized(key_was_sent: bool) -> ApiError {
        let (message, code) = if key_was_sent {
            ("Incorrect API key provided.", Some("invalid_api_key"))
        } else {
            ("You didn't provide an API key. Send it as `Authorization: Bearer <key>` or `api-key: <key>`.", None)
        };
        ApiError { status: StatusCode::UNAUTHORIZED, message: message.to_owned(), kind: "invalid_request_error", code }
    }

    /// The answer to a request still waiting when the provider is stopped.
    pub(crate) fn stopping() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The mock provider is stopping.".to_owned(),
            kind: "server_error",
            code: Some("mock_stopped"),
        }
    }

    pub(crate) fn mid_stream() -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "mock failure mid-stream".to_owned(),
            kind: "server_error",
            code: Some("mock"),
        }
    }

    /// The answer to `Failure::Status`. The type follows what OpenAI sends for that status so
    /// clients that branch on it (retry on rate limits and server errors) can be tested.
    pub(crate) fn scripted(status: u16, message: &str) -> ApiError {
        // A status outside 100..=999 cannot be sent at all; a 500 is the closest honest answer.
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            429 => ("requests", Some("rate_limit_exceeded")),
            400..=499 => ("invalid_request_error", Some("mock")),
            _ => ("server_error", Some("mock")),
        };
        ApiError { status, message: message.to_owned(), kind, code }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "message": self.message, "type": self.kind, "code": self.code }
        });
        (self.status, Json(body)).into_response()
    }
}
