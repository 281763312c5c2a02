//! The HTTP surface: OpenAI's `/v1/models` and `/v1/chat/completions`, Azure OpenAI's
//! deployment path, and OpenAI-shaped 404s for everything else.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::completion::Answer;
use crate::error::ApiError;
use crate::script::{Failure, Script};
use crate::state::Shared;
use crate::stream::{self, Cutoff};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(openai_chat))
        .route("/openai/deployments/{deployment}/chat/completions", post(azure_chat))
        .fallback(unknown_route)
        // OpenAI answers a known path with the wrong method with the same 404.
        .method_not_allowed_fallback(unknown_route)
        .with_state(shared)
}

async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let script = shared.script();
    shared.pause(script.response_delay).await?;
    check_key(&script, &headers)?;
    if let Some(failed) = fail_early(&shared, &script, false).await {
        return Ok(failed);
    }
    let data: Vec<Value> = script
        .models
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "mock" }))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })).into_response())
}

async fn openai_chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let (script, request) = receive(&shared, &headers, &body);
    shared.pause(script.response_delay).await?;
    check_key(&script, &headers)?;
    let request = request.ok_or_else(not_json)?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("you must provide a model parameter"))?;
    answer_chat(&shared, script, model.to_owned(), &request).await
}

#[derive(Deserialize)]
struct AzureQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// Azure names the model by its deployment in the path, so the body needs no `model`.
async fn azure_chat(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    Query(query): Query<AzureQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (script, request) = receive(&shared, &headers, &body);
    shared.pause(script.response_delay).await?;
    check_key(&script, &headers)?;
    if query.api_version.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("Missing required query parameter: api-version"));
    }
    let request = request.ok_or_else(not_json)?;
    answer_chat(&shared, script, deployment, &request).await
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("Invalid URL ({method} {})", uri.path()))
}

/// Takes the script the request will be answered by, then records the request. In that order,
/// so a test that sees the request counted and then swaps the script cannot change its answer.
fn receive(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> (Arc<Script>, Option<Value>) {
    let script = shared.script();
    let request = serde_json::from_slice(body).ok();
    shared.record(headers, body, request.as_ref());
    (script, request)
}

fn not_json() -> ApiError {
    ApiError::bad_request("We could not parse the JSON body of your request. The body must be a JSON object.")
}

/// OpenAI takes `Authorization: Bearer`, Azure `api-key`; the mock takes either on every path.
fn check_key(script: &Script, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = script.api_key.as_deref() else {
        return Ok(());
    };
    // The scheme is case-insensitive (RFC 9110), the key is not.
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key);
    let api_key = headers.get("api-key").and_then(|v| v.to_str().ok());
    if bearer == Some(expected) || api_key == Some(expected) {
        return Ok(());
    }
    let key_was_sent = headers.contains_key(AUTHORIZATION) || headers.contains_key("api-key");
    Err(ApiError::unauthorized(key_was_sent))
}

async fn answer_chat(
    shared: &Shared,
    script: Arc<Script>,
    model: String,
    request: &Value,
) -> Result<Response, ApiError> {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("'messages' is a required property"))?;
    let streamed = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = request.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);

    if let Some(failed) = fail_early(shared, &script, streamed).await {
        return Ok(failed);
    }
    let cutoff = script.failure.as_ref().and_then(Cutoff::from_failure);
    let answer = Answer::new(shared.next_id(), model, script, messages);
    let stop = shared.stop_signal().clone();
    Ok(match (streamed, cutoff) {
        (true, cutoff) => stream::respond(answer, include_usage, cutoff, stop),
        (false, None) => Json(answer.body()).into_response(),
        (false, Some(Cutoff::Drop(_))) => answer.truncated(),
        (false, Some(Cutoff::Error(_))) => ApiError::mid_stream().into_response(),
    })
}

/// The failures that replace the whole answer. `None` lets the request go on: there is no
/// failure, or it is one that strikes mid-stream.
async fn fail_early(shared: &Shared, script: &Script, streamed: bool) -> Option<Response> {
    match script.failure.as_ref()? {
        Failure::Status { status, message } => Some(ApiError::scripted(*status, message).into_response()),
        Failure::Garbage if streamed => Some(stream::garbage()),
        Failure::Garbage => Some(([(CONTENT_TYPE, "application/json")], "this is not json").into_response()),
        Failure::Hang => {
            // Waits for `stop()`. A client that gives up first closes the connection, and the
            // server drops this future with it.
            shared.stop_signal().cancelled().await;
            Some(ApiError::stopping().into_response())
        }
        Failure::DropAfterChunks(_) | Failure::ErrorAfterChunks(_) => None,
    }
}
