//! Conclave's HTTP surface: the router with its middleware, extractors, problem+json errors
//! and the OpenAPI document generated from the handlers themselves.

pub mod error;
pub mod extract;
pub mod middleware;
pub mod routes;
pub mod sse;
pub mod state;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::Modify;

use crate::error::ApiError;
pub use crate::state::{AppState, HttpSettings};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Conclave API", description = "A secure, self-hostable workspace for AI agents. Errors are RFC 9457 problem+json."),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-up, sign-in and sessions"),
        (name = "me", description = "The signed-in user"),
        (name = "api-keys", description = "API keys of the signed-in user"),
        (name = "admin", description = "Tenant administration"),
        (name = "agents"), (name = "conversations"), (name = "models"), (name = "usage"), (name = "audit"), (name = "health"),
        (name = "gateway", description = "OpenAI-compatible endpoints; errors use OpenAI's shape"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token from /api/v1/auth/login or an API key (ck_…)"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document and the router it describes, from the same declarations.
pub fn api() -> (Router<AppState>, OpenApi) {
    use utoipa::OpenApi as _;
    let (router, mut doc) =
        utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(routes::api()).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    (router, doc)
}

/// The whole application: API, OpenAPI document, index page, fallbacks and middleware.
pub fn app(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    let hsts = middleware::security_headers::Hsts(state.http.hsts);
    let cors = middleware::cors::layer(&state.http.cors_origins);
    let http = state.http.clone();
    let mut app = api
        .route("/api/v1/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .route("/", get(routes::root::index))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state);
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    app.layer(axum::middleware::from_fn_with_state(http.clone(), middleware::limits::layer))
        .layer(axum::middleware::from_fn_with_state(http, middleware::ip_allowlist::layer))
        .layer(axum::middleware::from_fn_with_state(hsts, middleware::security_headers::layer))
        .layer(axum::middleware::from_fn(middleware::request_id::layer))
}
