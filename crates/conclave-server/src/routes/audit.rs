//! The audit log, for administrators and auditors.

use axum::extract::State;
use axum::Json;
use conclave_core::ids::UserId;
use conclave_core::page::{DEFAULT_LIMIT, MAX_LIMIT};
use conclave_core::service::audit::{AuditEventView, AuditVerification, ExportFilter};
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
    OpenApiRouter::new().routes(routes!(events)).routes(routes!(verify)).routes(routes!(export))
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

/// Checks the tenant's hash chain and its signed checkpoints: names the first edited, deleted,
/// inserted or reordered event, removed newest events, and the first forged checkpoint.
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

#[derive(Deserialize, utoipa::IntoParams)]
pub struct ExportParams {
    /// Events after this sequence number (default 0: from the start).
    after_seq: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    from: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>)]
    to: Option<OffsetDateTime>,
}

/// The tenant's audit events as JSON Lines for a SIEM (one event per line, the fields of the
/// events list), oldest first, up to the newest event at the time of the request. Streamed;
/// the export itself is audited (`audit.exported`).
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", security(("bearer" = [])), params(ExportParams), responses(
    (status = 200, content_type = "application/x-ndjson", body = String, description = "One audit event (JSON) per line"),
    (status = 403, body = Problem),
))]
async fn export(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(p): ApiQuery<ExportParams>,
) -> ApiResult<axum::response::Response> {
    use futures::TryStreamExt as _;
    let filter = ExportFilter { after_seq: p.after_seq.unwrap_or(0), from: p.from, to: p.to };
    let stream = state.core.export_audit(&caller, filter).await?.inspect_err(|e| {
        // Headers are sent: the client sees a cut-off body; the reason goes to the log.
        tracing::error!(error = %e, "audit export stopped");
    });
    use axum::http::header;
    use axum::response::IntoResponse as _;
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}
