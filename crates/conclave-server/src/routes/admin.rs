//! Tenant administration: users and the tenant's settings (role admin).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use conclave_core::ids::UserId;
use conclave_core::principal::Role;
use conclave_core::records::UserPatch;
use conclave_core::service::admin::AdminNewUser;
use conclave_core::settings::SettingsPatch;
use conclave_core::views::{CreatedUserView, TenantView, UserView};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authenticated, PageParams};
use crate::routes::PageView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(reset_password))
        .routes(routes!(get_tenant, update_tenant))
}

/// Users of the tenant.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])), params(PageParams), responses(
    (status = 200, body = PageView<UserView>),
    (status = 403, body = Problem),
))]
async fn list_users(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<UserView>>> {
    Ok(Json(state.core.admin_list_users(&caller, page.page()?).await?.into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    /// Omit to have a temporary password generated (returned once; the user must change it).
    password: Option<String>,
    display_name: String,
    role: Role,
}

/// Creates a user.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])), request_body = CreateUser, responses(
    (status = 201, body = CreatedUserView),
    (status = 409, body = Problem),
    (status = 422, body = Problem),
))]
async fn create_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<CreatedUserView>)> {
    let created = state
        .core
        .admin_create_user(
            &caller,
            AdminNewUser {
                email: body.email,
                password: body.password,
                display_name: body.display_name,
                role: body.role,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    role: Option<Role>,
    /// A disabled user cannot sign in and their sessions end at once.
    disabled: Option<bool>,
    display_name: Option<String>,
}

/// Changes a user's role, name, or disables them.
#[utoipa::path(patch, path = "/api/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = UserId, Path)), request_body = UpdateUser, responses(
    (status = 200, body = UserView),
    (status = 404, body = Problem),
    (status = 409, body = Problem, description = "It would leave no active administrator"),
))]
async fn update_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<Json<UserView>> {
    let patch = UserPatch { role: body.role, disabled: body.disabled, display_name: body.display_name };
    Ok(Json(state.core.admin_update_user(&caller, id, patch).await?))
}

/// Deletes a user and their conversations; their tenant-visible agents pass to the caller.
#[utoipa::path(delete, path = "/api/v1/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = UserId, Path)), responses(
    (status = 204),
    (status = 404, body = Problem),
    (status = 409, body = Problem, description = "Deleting yourself"),
))]
async fn delete_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<StatusCode> {
    state.core.admin_delete_user(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPassword {
    /// A temporary password the user must change at next sign-in.
    new_password: String,
}

/// Sets a temporary password and signs the user out everywhere.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/password", tag = "admin", security(("bearer" = [])),
    params(("id" = UserId, Path)), request_body = ResetPassword, responses(
    (status = 204),
    (status = 404, body = Problem),
    (status = 422, body = Problem),
))]
async fn reset_password(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(body): ApiJson<ResetPassword>,
) -> ApiResult<StatusCode> {
    state.core.admin_reset_password(&caller, id, &body.new_password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's settings.
#[utoipa::path(get, path = "/api/v1/admin/tenant", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, body = TenantView),
    (status = 403, body = Problem),
))]
async fn get_tenant(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(state.core.tenant_settings(&caller).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    name: Option<String>,
    /// Fields present replace the current ones; `null` clears a nullable one.
    settings: Option<SettingsPatch>,
}

/// Changes the tenant's name or settings.
#[utoipa::path(patch, path = "/api/v1/admin/tenant", tag = "admin", security(("bearer" = [])), request_body = UpdateTenant, responses(
    (status = 200, body = TenantView),
    (status = 422, body = Problem),
))]
async fn update_tenant(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> ApiResult<Json<TenantView>> {
    Ok(Json(state.core.update_tenant_settings(&caller, body.name, body.settings).await?))
}
