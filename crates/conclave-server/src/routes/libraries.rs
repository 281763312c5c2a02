//! Libraries and their members.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::ids::{LibraryId, UserId};
use conclave_core::libraries::LibraryRole;
use conclave_core::service::libraries::{LibraryInput, LibraryView, MemberView};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{present, ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get, update, delete))
        .routes(routes!(members))
        .routes(routes!(put_member, remove_member))
}

/// A library's fields. On create `name` is required; on update, fields present replace the
/// current ones and `null` clears the description. `legal_hold` is for administrators only.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LibraryBody {
    /// 1 to 100 characters.
    name: Option<String>,
    /// Up to 1,000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// While set, nothing in the library can be deleted (administrators).
    legal_hold: Option<bool>,
}

impl From<LibraryBody> for LibraryInput {
    fn from(b: LibraryBody) -> Self {
        LibraryInput { name: b.name, description: b.description, legal_hold: b.legal_hold }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    role: LibraryRole,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MembersView {
    pub items: Vec<MemberView>,
}

/// The libraries the caller is a member of (administrators: all of the tenant's), newest first.
#[utoipa::path(get, path = "/api/v1/libraries", tag = "libraries", security(("bearer" = [])), params(PageParams),
    responses((status = 200, body = PageView<LibraryView>)))]
async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<LibraryView>>> {
    Ok(Json(state.core.list_libraries(&caller, page.page()?).await?.into()))
}

/// Creates a library with its own key; the caller becomes its manager.
#[utoipa::path(post, path = "/api/v1/libraries", tag = "libraries", security(("bearer" = [])), request_body = LibraryBody,
    responses((status = 201, body = LibraryView), (status = 422, body = Problem)))]
async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<LibraryBody>,
) -> ApiResult<(StatusCode, Json<LibraryView>)> {
    Ok((StatusCode::CREATED, Json(state.core.create_library(&caller, body.into()).await?)))
}

/// One library the caller is a member of (or any, for an administrator).
#[utoipa::path(get, path = "/api/v1/libraries/{id}", tag = "libraries", security(("bearer" = [])),
    params(("id" = LibraryId, Path)), responses((status = 200, body = LibraryView), (status = 404, body = Problem)))]
async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<LibraryId>,
) -> ApiResult<Json<LibraryView>> {
    Ok(Json(state.core.get_library(&caller, id).await?))
}

/// Renames or describes a library (its managers, administrators); sets or lifts a legal hold
/// (administrators).
#[utoipa::path(patch, path = "/api/v1/libraries/{id}", tag = "libraries", security(("bearer" = [])),
    params(("id" = LibraryId, Path)), request_body = LibraryBody, responses(
    (status = 200, body = LibraryView),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<LibraryId>,
    ApiJson(body): ApiJson<LibraryBody>,
) -> ApiResult<Json<LibraryView>> {
    Ok(Json(state.core.update_library(&caller, id, body.into()).await?))
}

/// Deletes a library, its documents and its key (crypto-shredding); refused under legal hold.
#[utoipa::path(delete, path = "/api/v1/libraries/{id}", tag = "libraries", security(("bearer" = [])),
    params(("id" = LibraryId, Path)), responses(
    (status = 204),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 409, body = Problem, description = "the library is on legal hold"),
))]
async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<LibraryId>,
) -> ApiResult<StatusCode> {
    state.core.delete_library(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The library's members and their roles.
#[utoipa::path(get, path = "/api/v1/libraries/{id}/members", tag = "libraries", security(("bearer" = [])),
    params(("id" = LibraryId, Path)), responses((status = 200, body = MembersView), (status = 404, body = Problem)))]
async fn members(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<LibraryId>,
) -> ApiResult<Json<MembersView>> {
    Ok(Json(MembersView { items: state.core.list_library_members(&caller, id).await? }))
}

/// Adds a member of the tenant to the library, or changes their role (managers, administrators).
#[utoipa::path(put, path = "/api/v1/libraries/{id}/members/{user_id}", tag = "libraries", security(("bearer" = [])),
    params(("id" = LibraryId, Path), ("user_id" = UserId, Path)), request_body = MemberBody, responses(
    (status = 200, body = MembersView),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
async fn put_member(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath((id, user)): ApiPath<(LibraryId, UserId)>,
    ApiJson(body): ApiJson<MemberBody>,
) -> ApiResult<Json<MembersView>> {
    Ok(Json(MembersView { items: state.core.put_library_member(&caller, id, user, body.role).await? }))
}

/// Removes a member from the library (managers, administrators).
#[utoipa::path(delete, path = "/api/v1/libraries/{id}/members/{user_id}", tag = "libraries", security(("bearer" = [])),
    params(("id" = LibraryId, Path), ("user_id" = UserId, Path)), responses(
    (status = 204),
    (status = 403, body = Problem),
    (status = 404, body = Problem),
))]
async fn remove_member(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath((id, user)): ApiPath<(LibraryId, UserId)>,
) -> ApiResult<StatusCode> {
    state.core.remove_library_member(&caller, id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
