//! Conclave's HTTP surface: the router with its middleware, extractors, problem+json errors
//! and the OpenAPI document generated from the handlers themselves.

pub mod error;
pub mod extract;
pub mod fuzzing;
pub mod middleware;
pub mod multipart;
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

/// What the shared layers may answer on any route, declared on every operation that lacks it:
/// problem bodies are `application/problem+json` (the gateway's, under `/v1`, are OpenAI's
/// JSON errors); malformed input (400, 413, 415, 422) where there is input; 401 where a
/// credential is required; the IP allow-lists (403), rate limits (429) and request timeouts
/// (503) anywhere.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        const PROBLEM: &str = "application/problem+json";
        for (path, item) in openapi.paths.paths.iter_mut() {
            let gateway = path.starts_with("/v1/");
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten();
            for op in operations {
                let responses = &mut op.responses.responses;
                // Problem bodies were declared as JSON: say which JSON.
                for response in responses.values_mut() {
                    let RefOr::T(response) = response else { continue };
                    let is_problem = |c: &utoipa::openapi::Content| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with("/Problem"));
                    if response.content.get("application/json").is_some_and(is_problem) {
                        if let Some(content) = response.content.shift_remove("application/json") {
                            response.content.insert(PROBLEM.to_owned(), content);
                        }
                    }
                }
                let has_input = op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut shared = vec![
                    ("403", "Refused by an IP allow-list"),
                    ("429", "Too many requests"),
                    ("431", "The request headers are larger than the server accepts"),
                ];
                if !gateway {
                    shared.push(("503", "Timed out or a dependency is unavailable"));
                }
                if has_input {
                    shared.push(("400", "Malformed request"));
                }
                if op.request_body.is_some() {
                    shared.extend([
                        ("413", "The body is larger than this route accepts"),
                        ("415", "The body is not JSON"),
                        ("422", "The body does not have the expected shape"),
                    ]);
                }
                if secured {
                    shared.push(("401", "No valid credential"));
                }
                for (status, description) in shared {
                    if responses.contains_key(status) {
                        continue;
                    }
                    let (media, schema) =
                        if gateway { ("application/json", "OpenAiError") } else { (PROBLEM, "Problem") };
                    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
                    let response = ResponseBuilder::new().description(description).content(media, content).build();
                    responses.insert(status.to_owned(), RefOr::T(response));
                }
            }
        }
    }
}

/// The OpenAPI document and the router it describes, from the same declarations.
pub fn api() -> (Router<AppState>, OpenApi) {
    use utoipa::OpenApi as _;
    let (router, mut doc) =
        utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(routes::api()).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // After the merge: the modifier needs the routes' operations.
    SharedResponses.modify(&mut doc);
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
        .layer(axum::middleware::from_fn_with_state(http.clone(), middleware::ip_allowlist::layer))
        .layer(axum::middleware::from_fn_with_state(hsts, middleware::security_headers::layer))
        .layer(axum::middleware::from_fn_with_state(http, middleware::access_log::layer))
        .layer(axum::middleware::from_fn(middleware::request_id::layer))
}
