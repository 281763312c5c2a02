//! The tenant's master key: status and rotation (administrators).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::service::keys::{KeysView, RotationView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::Authenticated;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status)).routes(routes!(rotate))
}

/// The master-key provider, key id, current version, and how many wrapped keys each version holds.
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = KeysView),
    (status = 403, body = Problem),
    (status = 503, body = Problem),
))]
async fn status(State(state): State<AppState>, Authenticated(caller): Authenticated) -> ApiResult<Json<KeysView>> {
    Ok(Json(state.core.keys_status(&caller).await?))
}

/// Makes a new master-key version current and rewraps every key under it in the background;
/// content is not re-encrypted. Resumable: calling it again continues an interrupted rewrap.
#[utoipa::path(post, path = "/api/v1/admin/keys/rotate", tag = "admin", security(("bearer" = [])), responses(
    (status = 202, body = RotationView),
    (status = 403, body = Problem),
    (status = 503, body = Problem),
))]
async fn rotate(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<(StatusCode, Json<RotationView>)> {
    Ok((StatusCode::ACCEPTED, Json(state.core.rotate_keys(&caller).await?)))
}
