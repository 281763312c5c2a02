//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`
    status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` when every check passes, else `unavailable`.
    status: &'static str,
    /// Each dependency and its state (`ok`, `unavailable`; `audit_log`: `ok` or `unwritable`).
    #[schema(value_type = Object)]
    checks: serde_json::Map<String, serde_json::Value>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// The process is running.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The process can serve: its database answers and its last audit write succeeded.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Readiness, description = "A dependency is unavailable"),
))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let database = state.core.ready().await;
    if let Err(e) = &database {
        tracing::warn!(error = %e, "readiness: database unavailable");
    }
    // An audit event that could not be stored means changes go unrecorded: not ready until an
    // audit write succeeds again (docs/security-model.md, "Audit writes").
    let audit = state.core.audit_writable();
    let mut checks = serde_json::Map::new();
    checks.insert("database".into(), if database.is_ok() { "ok" } else { "unavailable" }.into());
    checks.insert("audit_log".into(), if audit { "ok" } else { "unwritable" }.into());
    let ok = database.is_ok() && audit;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ok { "ok" } else { "unavailable" }, checks }))
}
