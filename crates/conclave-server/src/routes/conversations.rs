//! Conversations and their messages. Only the owner sees a conversation.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::ids::{AgentId, ConversationId};
use conclave_core::views::{ConversationView, ExchangeView, MessageView};
use conclave_core::Error;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{present, ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, rename, delete))
        .routes(routes!(list_messages, post_message))
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
    /// Streamed replies (Server-Sent Events) are not served by this version; omit or `false`.
    #[serde(default)]
    stream: bool,
}

/// Sends a message and answers with it and the agent's complete reply. The reply is produced
/// by a task of its own: if the client goes away, it is still generated and stored.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = ConversationId, Path)), request_body = PostMessage, responses(
    (status = 201, body = ExchangeView),
    (status = 404, body = Problem),
    (status = 409, body = Problem, description = "The conversation's agent was deleted or its model is no longer allowed"),
    (status = 422, body = Problem),
    (status = 502, body = Problem, description = "The model provider failed; the message was kept"),
    (status = 504, body = Problem, description = "The model provider did not answer in time; the message was kept"),
))]
async fn post_message(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(body): ApiJson<PostMessage>,
) -> ApiResult<(StatusCode, Json<ExchangeView>)> {
    if body.stream {
        return Err(Error::field(
            "stream",
            "Streamed replies are not available on this server version; omit `stream`.",
        )
        .into());
    }
    Ok((StatusCode::CREATED, Json(state.core.post_message(&caller, id, body.content).await?)))
}
