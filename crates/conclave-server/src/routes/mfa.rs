//! Two-factor sign-in for local accounts: TOTP enrolment and confirmation, recovery codes,
//! turning it off, and an administrator's reset.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conclave_core::ids::UserId;
use conclave_core::service::mfa::{RecoveryCodesView, SecondFactor, TotpEnrollmentView};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, Authenticated};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_totp))
        .routes(routes!(confirm_totp))
        .routes(routes!(disable))
        .routes(routes!(regenerate_recovery_codes))
        .routes(routes!(admin_reset))
}

/// Secrets and recovery codes are shown once: no cache may keep them.
fn no_store(status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Starts TOTP enrolment: a new secret for an authenticator app, pending until confirmed.
/// Starting again replaces a pending secret.
#[utoipa::path(post, path = "/api/v1/me/mfa/totp", tag = "me", security(("bearer" = [])), responses(
    (status = 201, body = TotpEnrollmentView, description = "The secret, shown this once"),
    (status = 403, body = Problem, description = "An API key, or a single sign-on account"),
    (status = 409, body = Problem, description = "Two-factor sign-in is already on"),
))]
async fn start_totp(State(state): State<AppState>, Authenticated(caller): Authenticated) -> ApiResult<Response> {
    Ok(no_store(StatusCode::CREATED, state.core.start_totp(&caller).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    /// The 6-digit code the authenticator app shows now.
    code: String,
}

/// Confirms the pending enrolment with a current code: two-factor sign-in is on from now, and
/// ten one-time recovery codes are returned (shown this once, stored hashed).
#[utoipa::path(post, path = "/api/v1/me/mfa/totp/confirm", tag = "me", security(("bearer" = [])), request_body = TotpCode, responses(
    (status = 200, body = RecoveryCodesView),
    (status = 409, body = Problem, description = "No enrolment is pending"),
    (status = 422, body = Problem, description = "The code is not correct"),
))]
async fn confirm_totp(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<TotpCode>,
) -> ApiResult<Response> {
    Ok(no_store(StatusCode::OK, state.core.confirm_totp(&caller, &body.code).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableMfa {
    current_password: String,
    /// A current TOTP code (or give `recovery_code`).
    code: Option<String>,
    recovery_code: Option<String>,
}

/// Turns two-factor sign-in off; needs the current password and a code.
#[utoipa::path(delete, path = "/api/v1/me/mfa", tag = "me", security(("bearer" = [])), request_body = DisableMfa, responses(
    (status = 204),
    (status = 409, body = Problem, description = "Two-factor sign-in is not on"),
    (status = 422, body = Problem, description = "Wrong password or code"),
))]
async fn disable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<DisableMfa>,
) -> ApiResult<StatusCode> {
    let second = SecondFactor { otp: body.code.as_deref(), recovery_code: body.recovery_code.as_deref() };
    state.core.disable_mfa(&caller, &body.current_password, second).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the recovery codes with ten new ones; needs a current TOTP code.
#[utoipa::path(post, path = "/api/v1/me/mfa/recovery-codes", tag = "me", security(("bearer" = [])), request_body = TotpCode, responses(
    (status = 200, body = RecoveryCodesView),
    (status = 409, body = Problem, description = "Two-factor sign-in is not on"),
    (status = 422, body = Problem, description = "The code is not correct"),
))]
async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<TotpCode>,
) -> ApiResult<Response> {
    Ok(no_store(StatusCode::OK, state.core.regenerate_recovery_codes(&caller, &body.code).await?))
}

/// Removes a user's second factor (a lost phone) and signs their sessions out; they enrol again.
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}/mfa", tag = "admin", security(("bearer" = [])),
    params(("id" = UserId, Path)), responses(
    (status = 204),
    (status = 404, body = Problem, description = "No such user in the tenant, or no enrolment"),
))]
async fn admin_reset(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<StatusCode> {
    state.core.admin_reset_mfa(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
