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

/// Longest wait for the key service's answer in `/readyz`.
const DEPENDENCY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// The process is running.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The process can serve: its database, key service and object store answer, and its last audit
/// write succeeded.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Readiness),
    (status = 503, body = Readiness, description = "A dependency is unavailable"),
))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    // A KMS that retries a failing vault must not hold the probe past a typical probe timeout.
    let (database, keys, objects) = tokio::join!(
        state.core.ready(),
        within_check_time(state.core.keys_ready()),
        within_check_time(state.core.objects_ready())
    );
    let mut checks = serde_json::Map::new();
    for (name, what, result) in [
        ("database", "database", database.map_err(|e| e.to_string())),
        ("kms", "key service", keys),
        ("object_store", "object store", objects),
    ] {
        if let Err(e) = &result {
            tracing::warn!(error = %e, "readiness: {what} unavailable");
        }
        checks.insert(name.into(), if result.is_ok() { "ok" } else { "unavailable" }.into());
    }
    // An audit event that could not be stored means changes go unrecorded: not ready until an
    // audit write succeeds again (docs/security-model.md, "Audit writes").
    let audit = state.core.audit_writable();
    checks.insert("audit_log".into(), if audit { "ok" } else { "unwritable" }.into());
    let ok = checks.values().all(|v| v == "ok");
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ok { "ok" } else { "unavailable" }, checks }))
}

/// A dependency check bounded by [`DEPENDENCY_CHECK_TIMEOUT`].
async fn within_check_time<E: std::fmt::Display>(
    check: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(DEPENDENCY_CHECK_TIMEOUT, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", DEPENDENCY_CHECK_TIMEOUT.as_secs())),
    }
}
