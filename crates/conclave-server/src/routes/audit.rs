//! The audit log, for administrators and auditors.

use axum::extract::State;
use axum::Json;
use conclave_core::ids::UserId;
use conclave_core::page::{DEFAULT_LIMIT, MAX_LIMIT};
use conclave_core::service::audit::{AuditEventView, AuditVerification};
use conclave_core::store::AuditFilter;
use conclave_core::FieldError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiQuery, Authenticated};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(verify))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct AuditParams {
    /// Events after this sequence number (default 0: from the start).
    after_seq: Option<i64>,
    /// 1 to 200, default 50.
    limit: Option<u32>,
    actor_id: Option<UserId>,
    /// e.g. `auth.login`, `agent.create`.
    action: Option<String>,
    /// e.g. `user`, `agent`, `conversation`.
    resource_type: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    to: Option<OffsetDateTime>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    items: Vec<AuditEventView>,
    /// Pass as `after_seq` for the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The tenant's audit events, oldest first.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", security(("bearer" = [])), params(AuditParams), responses(
    (status = 200, body = AuditPage),
    (status = 403, body = Problem),
))]
async fn events(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<AuditPage>> {
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(
            format!("limit must be between 1 and {MAX_LIMIT}"),
            vec![FieldError::new("limit", format!("Must be between 1 and {MAX_LIMIT}."))],
        ));
    }
    let filter = AuditFilter {
        after_seq: p.after_seq.unwrap_or(0),
        limit,
        actor_id: p.actor_id,
        action: p.action,
        resource_type: p.resource_type,
        from: p.from,
        to: p.to,
    };
    let (items, next) = state.core.audit_events(&caller, filter).await?;
    Ok(Json(AuditPage { items, next_cursor: next.map(|s| s.to_string()) }))
}

/// Checks the tenant's hash chain: names the first edited, deleted, inserted or reordered event.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("bearer" = [])), responses(
    (status = 200, body = AuditVerification),
    (status = 403, body = Problem),
))]
async fn verify(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<AuditVerification>> {
    Ok(Json(state.core.verify_audit(&caller).await?))
}
