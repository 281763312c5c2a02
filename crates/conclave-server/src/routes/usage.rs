//! Token usage and estimated cost: the caller's own, or the tenant's for administrators.

use axum::extract::State;
use axum::Json;
use conclave_core::service::usage::{UsageGroup, UsageReport};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiQuery, Authenticated};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(usage))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct UsageParams {
    /// RFC 3339; default: the start of this month (UTC).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    from: Option<OffsetDateTime>,
    /// RFC 3339, exclusive; default: now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    to: Option<OffsetDateTime>,
    /// `model` (default), `user` or `day`.
    #[param(value_type = Option<String>)]
    group_by: Option<UsageGroup>,
}

/// Tokens and estimated cost, grouped by model, user or day.
#[utoipa::path(get, path = "/api/v1/usage", tag = "usage", security(("bearer" = [])), params(UsageParams), responses(
    (status = 200, body = UsageReport),
    (status = 400, body = Problem),
    (status = 422, body = Problem),
))]
async fn usage(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> ApiResult<Json<UsageReport>> {
    Ok(Json(
        state.core.usage_report(&caller, params.from, params.to, params.group_by.unwrap_or(UsageGroup::Model)).await?,
    ))
}
