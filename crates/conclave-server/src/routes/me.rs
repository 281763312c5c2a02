//! The caller's own account: profile, password, data export.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::views::{ExportView, UserView};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, Authenticated};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me)).routes(routes!(change_password)).routes(routes!(export))
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", security(("bearer" = [])), responses(
    (status = 200, body = UserView),
    (status = 401, body = Problem),
))]
async fn me(State(state): State<AppState>, Authenticated(caller): Authenticated) -> ApiResult<Json<UserView>> {
    Ok(Json(state.core.me(&caller).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the password; every other session is signed out.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", security(("bearer" = [])), request_body = PasswordChange, responses(
    (status = 204),
    (status = 403, body = Problem, description = "Called with an API key"),
    (status = 422, body = Problem, description = "Wrong current password, or a weak new one"),
))]
async fn change_password(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    state.core.change_password(&caller, &body.current_password, &body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Everything Conclave holds about the caller, as JSON (GDPR access and portability).
#[utoipa::path(get, path = "/api/v1/me/export", tag = "me", security(("bearer" = [])), responses(
    (status = 200, body = ExportView),
))]
async fn export(State(state): State<AppState>, Authenticated(caller): Authenticated) -> ApiResult<Json<ExportView>> {
    Ok(Json(state.core.export_me(&caller).await?))
}
