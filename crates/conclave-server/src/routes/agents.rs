//! Agents: the caller's own and those shared with the tenant.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::ids::{AgentId, LibraryId};
use conclave_core::records::Visibility;
use conclave_core::service::agents::AgentInput;
use conclave_core::views::AgentView;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{present, ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get, update, delete))
}

/// The fields of an agent. On create, `name` and `model` are required; on update, fields
/// present replace the current ones and `null` clears an optional one.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBody {
    /// 1 to 100 characters.
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// The system prompt, up to 32 KiB.
    instructions: Option<String>,
    /// One of `GET /api/v1/models`.
    model: Option<String>,
    /// 0 to 2.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    temperature: Option<Option<f64>>,
    /// 0 to 1.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    top_p: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    max_tokens: Option<Option<u32>>,
    /// Libraries the agent may read; its owner must be able to read them.
    library_ids: Option<Vec<LibraryId>>,
    visibility: Option<Visibility>,
}

impl From<AgentBody> for AgentInput {
    fn from(b: AgentBody) -> Self {
        AgentInput {
            name: b.name,
            description: b.description,
            instructions: b.instructions,
            model: b.model,
            temperature: b.temperature,
            top_p: b.top_p,
            max_tokens: b.max_tokens,
            library_ids: b.library_ids,
            visibility: b.visibility,
        }
    }
}

/// The caller's agents and those shared with the tenant, newest first.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])), params(PageParams), responses(
    (status = 200, body = PageView<AgentView>),
))]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<AgentView>>> {
    Ok(Json(state.core.list_agents(&caller, page.page()?).await?.into()))
}

/// Creates an agent owned by the caller.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])), request_body = AgentBody, responses(
    (status = 201, body = AgentView),
    (status = 422, body = Problem),
))]
async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<AgentBody>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    Ok((StatusCode::CREATED, Json(state.core.create_agent(&caller, body.into()).await?)))
}

/// One agent the caller can see.
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = AgentId, Path)), responses((status = 200, body = AgentView), (status = 404, body = Problem)))]
async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<AgentId>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(state.core.get_agent(&caller, id).await?))
}

/// Changes an agent (its owner or an administrator).
#[utoipa::path(patch, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = AgentId, Path)), request_body = AgentBody, responses(
    (status = 200, body = AgentView),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<AgentBody>,
) -> ApiResult<Json<AgentView>> {
    Ok(Json(state.core.update_agent(&caller, id, body.into()).await?))
}

/// Deletes an agent (its owner or an administrator). Its conversations remain readable.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = AgentId, Path)), responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<AgentId>,
) -> ApiResult<StatusCode> {
    state.core.delete_agent(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
