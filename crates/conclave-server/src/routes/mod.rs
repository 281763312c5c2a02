//! The routes, one file a resource. Each module's `router()` registers its handlers together
//! with their OpenAPI descriptions, so the published document lists exactly what is served.

use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;

use crate::extract::encode_cursor;
use crate::state::AppState;

pub mod admin;
pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod conversations;
pub mod documents;
pub mod gateway;
pub mod health;
pub mod keys;
pub mod libraries;
pub mod me;
pub mod mfa;
pub mod models;
pub mod root;
pub mod sessions;
pub mod usage;

pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(me::router())
        .merge(mfa::router())
        .merge(sessions::router())
        .merge(api_keys::router())
        .merge(admin::router())
        .merge(keys::router())
        .merge(agents::router())
        .merge(conversations::router())
        .merge(libraries::router())
        .merge(documents::router())
        .merge(models::router())
        .merge(usage::router())
        .merge(audit::router())
        .merge(gateway::router())
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageView<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> From<conclave_core::page::Page<T>> for PageView<T> {
    fn from(p: conclave_core::page::Page<T>) -> Self {
        PageView { items: p.items, next_cursor: p.next.map(encode_cursor) }
    }
}
