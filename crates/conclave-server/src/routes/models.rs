//! The models the caller's tenant may use.

use axum::extract::State;
use axum::Json;
use conclave_core::views::ModelView;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiResult;
use crate::extract::Authenticated;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    items: Vec<ModelView>,
}

/// Models this tenant may use, each with the provider that serves it.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", security(("bearer" = [])), responses((status = 200, body = ModelList)))]
async fn list(State(state): State<AppState>, Authenticated(caller): Authenticated) -> ApiResult<Json<ModelList>> {
    Ok(Json(ModelList { items: state.core.list_models(&caller).await? }))
}
