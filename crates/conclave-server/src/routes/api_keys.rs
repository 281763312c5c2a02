//! API keys of the signed-in user.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::ids::ApiKeyId;
use conclave_core::service::api_keys::NewApiKey;
use conclave_core::views::{ApiKeyView, CreatedApiKeyView};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(delete))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    name: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// Limit the key to these scopes; absent or empty: everything its user may do.
    scopes: Option<Vec<String>>,
}

/// Creates an API key. The key itself is in this answer only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])), request_body = CreateApiKey, responses(
    (status = 201, body = CreatedApiKeyView),
    (status = 403, body = Problem, description = "Called with an API key"),
    (status = 422, body = Problem),
))]
async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKeyView>)> {
    let created = state
        .core
        .create_api_key(&caller, NewApiKey { name: body.name, expires_at: body.expires_at, scopes: body.scopes })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller's API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", security(("bearer" = [])), params(PageParams), responses(
    (status = 200, body = PageView<ApiKeyView>),
))]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<ApiKeyView>>> {
    Ok(Json(state.core.list_api_keys(&caller, page.page()?).await?.into()))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = ApiKeyId, Path)), responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<ApiKeyId>,
) -> ApiResult<StatusCode> {
    state.core.delete_api_key(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
