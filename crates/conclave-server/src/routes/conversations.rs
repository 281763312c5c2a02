//! Conversations and their messages. Only the owner sees a conversation.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conclave_core::ids::{AgentId, ConversationId, MessageId};
use conclave_core::service::replies::wait_for_end;
use conclave_core::views::{ConversationView, ExchangeView, MessageView};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{present, ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::sse;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, rename, delete))
        .routes(routes!(list_messages, post_message))
        .routes(routes!(events))
        .routes(routes!(cancel))
        .routes(routes!(regenerate))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// Keep conversations whose title contains this (case-insensitive).
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The caller's conversations, most recently active first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])), params(ListParams), responses(
    (status = 200, body = PageView<ConversationView>),
))]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<PageView<ConversationView>>> {
    let page = PageParams { limit: params.limit, cursor: params.cursor }.page()?;
    Ok(Json(state.core.list_conversations(&caller, params.q.as_deref(), page).await?.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    agent_id: AgentId,
    /// Up to 200 characters; when absent, the first message names the conversation.
    title: Option<String>,
}

/// Starts a conversation with an agent the caller can see.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])), request_body = CreateConversation, responses(
    (status = 201, body = ConversationView),
    (status = 422, body = Problem),
))]
async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateConversation>,
) -> ApiResult<(StatusCode, Json<ConversationView>)> {
    Ok((StatusCode::CREATED, Json(state.core.create_conversation(&caller, body.agent_id, body.title).await?)))
}

/// One of the caller's conversations.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = ConversationId, Path)), responses((status = 200, body = ConversationView), (status = 404, body = Problem)))]
async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ConversationId>,
) -> ApiResult<Json<ConversationView>> {
    Ok(Json(state.core.get_conversation(&caller, id).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameConversation {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    title: Option<Option<String>>,
}

/// Renames a conversation.
#[utoipa::path(patch, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = ConversationId, Path)), request_body = RenameConversation, responses(
    (status = 200, body = ConversationView),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
async fn rename(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(body): ApiJson<RenameConversation>,
) -> ApiResult<Json<ConversationView>> {
    let Some(title) = body.title else {
        return Ok(Json(state.core.get_conversation(&caller, id).await?));
    };
    Ok(Json(state.core.rename_conversation(&caller, id, title).await?))
}

/// Deletes a conversation and its messages.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = ConversationId, Path)), responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ConversationId>,
) -> ApiResult<StatusCode> {
    state.core.delete_conversation(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The conversation's messages, oldest first.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = ConversationId, Path), PageParams), responses(
    (status = 200, body = PageView<MessageView>),
    (status = 404, body = Problem),
))]
async fn list_messages(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<MessageView>>> {
    Ok(Json(state.core.list_messages(&caller, id, page.page()?).await?.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// Up to 64 KiB of text.
    content: String,
    /// Answer with Server-Sent Events as the reply is produced (also chosen by
    /// `Accept: text/event-stream`).
    #[serde(default)]
    stream: bool,
}

/// Sends a message. Streamed: `200 text/event-stream` with `message` (the stored user message
/// and `reply_id`), `delta`… and one `done` or `error`. Otherwise `201` with both messages once
/// the reply is complete. Either way the reply is produced by a task of its own: if the client
/// goes away, it is still generated and stored.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = ConversationId, Path)), request_body = PostMessage, responses(
    (status = 200, content_type = "text/event-stream", description = "The reply's events (stream: true)"),
    (status = 201, body = ExchangeView),
    (status = 404, body = Problem),
    (status = 409, body = Problem, description = "The conversation's agent was deleted or its model is no longer allowed"),
    (status = 422, body = Problem),
    (status = 429, body = Problem, description = "Too many replies being generated"),
    (status = 502, body = Problem, description = "The model provider failed; the message was kept"),
    (status = 504, body = Problem, description = "The model provider did not answer in time; the message was kept"),
))]
async fn post_message(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ConversationId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessage>,
) -> ApiResult<Response> {
    if body.stream || sse::wants_stream(&headers) {
        let started = state.core.start_reply(&caller, id, body.content).await?;
        let events = state.core.follow(&caller, started.user_message, started.live);
        return Ok(sse::respond(events, caller.meta.request_id.clone()));
    }
    Ok((StatusCode::CREATED, Json(state.core.post_message(&caller, id, body.content).await?)).into_response())
}

/// Re-attaches to a reply: follows it while it is generated (on any replica) or replays a
/// finished one as `message`, `delta`, `done`. With `Last-Event-ID`, resumes after that event.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages/{message_id}/events", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path), ("message_id" = MessageId, Path),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received")),
    responses(
        (status = 200, content_type = "text/event-stream", description = "The reply's events"),
        (status = 404, body = Problem),
    ))]
async fn events(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath((id, message_id)): ApiPath<(ConversationId, MessageId)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let last = sse::last_event_id(&headers);
    let events = state.core.reply_events(&caller, id, message_id, last.as_deref()).await?;
    Ok(sse::respond(events, caller.meta.request_id.clone()))
}

/// Stops a reply being generated; it ends `cancelled` with the text so far.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages/{message_id}/cancel", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path), ("message_id" = MessageId, Path)),
    responses((status = 202), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath((id, message_id)): ApiPath<(ConversationId, MessageId)>,
) -> ApiResult<StatusCode> {
    state.core.cancel_reply(&caller, id, message_id).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    #[serde(default)]
    stream: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RegeneratedView {
    assistant_message: MessageView,
}

/// A new reply to a user message (or to the message an assistant message answered), streamed
/// like a post (`stream: true` or `Accept: text/event-stream`), else `201` once complete.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages/{message_id}/regenerate", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = ConversationId, Path), ("message_id" = MessageId, Path)),
    request_body(content = Option<Regenerate>, description = "Optional"),
    responses(
        (status = 200, content_type = "text/event-stream", description = "The new reply's events"),
        (status = 201, body = RegeneratedView),
        (status = 404, body = Problem),
        (status = 409, body = Problem, description = "The conversation's agent was deleted or its model is no longer allowed"),
        (status = 429, body = Problem),
    ))]
async fn regenerate(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath((id, message_id)): ApiPath<(ConversationId, MessageId)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let options: Regenerate = if body.iter().all(u8::is_ascii_whitespace) {
        Regenerate::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("The body is not valid: {e}"), Vec::new()))?
    };
    let stream = options.stream || sse::wants_stream(&headers);
    let started = state.core.regenerate(&caller, id, message_id).await?;
    if stream {
        let events = state.core.follow(&caller, started.user_message, started.live);
        return Ok(sse::respond(events, caller.meta.request_id.clone()));
    }
    let assistant_message = wait_for_end(&started.live).await?;
    Ok((StatusCode::CREATED, Json(RegeneratedView { assistant_message })).into_response())
}
