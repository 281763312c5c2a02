//! Session management: the caller's signed-in sessions (list, end one, end all the others) and
//! an administrator ending every session of a user.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::ids::{SessionId, UserId};
use conclave_core::service::sessions::{SessionView, SessionsRevokedView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(revoke))
        .routes(routes!(revoke_others))
        .routes(routes!(admin_revoke))
        .routes(routes!(admin_revoke_all))
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAllBody {
    /// Must be true: every user of the organisation is signed out.
    confirm: bool,
}

/// Ends every session of every user of the tenant but the caller's current one, and refuses
/// single sign-on tokens issued until now (but the caller's): a suspected breach. API keys are
/// not touched.
#[utoipa::path(post, path = "/api/v1/admin/sessions/revoke", tag = "admin", security(("bearer" = [])),
    request_body = RevokeAllBody, responses(
    (status = 200, body = conclave_core::service::sessions::TenantSessionsRevokedView),
    (status = 403, body = Problem),
    (status = 422, body = Problem, description = "confirm is not true"),
))]
async fn admin_revoke_all(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<RevokeAllBody>,
) -> ApiResult<Json<conclave_core::service::sessions::TenantSessionsRevokedView>> {
    Ok(Json(state.core.admin_revoke_all_sessions(&caller, body.confirm).await?))
}

/// The caller's live sessions, newest first; `current` marks the one making the call.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "me", security(("bearer" = [])), params(PageParams), responses(
    (status = 200, body = PageView<SessionView>),
    (status = 403, body = Problem, description = "Called with an API key"),
))]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<SessionView>>> {
    Ok(Json(state.core.list_my_sessions(&caller, page.page()?).await?.into()))
}

/// Ends one of the caller's sessions (ending the current one signs out).
#[utoipa::path(delete, path = "/api/v1/me/sessions/{id}", tag = "me", security(("bearer" = [])),
    params(("id" = SessionId, Path)), responses(
    (status = 204),
    (status = 403, body = Problem, description = "Called with an API key"),
    (status = 404, body = Problem, description = "No such session of the caller, or it has ended"),
))]
async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<SessionId>,
) -> ApiResult<StatusCode> {
    state.core.revoke_my_session(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every session of the caller but this one, and refuses their single sign-on tokens
/// issued until now (for a single sign-on caller, this token too: get a new one from the
/// issuer).
#[utoipa::path(post, path = "/api/v1/me/sessions/revoke-others", tag = "me", security(("bearer" = [])), responses(
    (status = 200, body = SessionsRevokedView),
    (status = 403, body = Problem, description = "Called with an API key"),
))]
async fn revoke_others(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<SessionsRevokedView>> {
    Ok(Json(state.core.revoke_my_other_sessions(&caller).await?))
}

/// Ends every session of a user of the tenant and refuses their single sign-on tokens issued
/// until now. Their API keys are not touched.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/sessions/revoke", tag = "admin", security(("bearer" = [])),
    params(("id" = UserId, Path)), responses(
    (status = 200, body = SessionsRevokedView),
    (status = 403, body = Problem),
    (status = 404, body = Problem, description = "No such user in the tenant"),
))]
async fn admin_revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<SessionsRevokedView>> {
    Ok(Json(state.core.admin_revoke_sessions(&caller, id).await?))
}
