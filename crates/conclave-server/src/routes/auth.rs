//! Sign-in for local accounts: sign-up, login, refresh (rotating token in an HttpOnly cookie),
//! logout, and how the web app should sign in. With single sign-on configured the local routes
//! answer 404: the SPA signs in at the issuer and sends its JWT.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use conclave_core::service::accounts::{SignedIn, SignupInput};
use conclave_core::service::mfa::SecondFactor;
use conclave_core::views::AuthView;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, MaybeAuthenticated, Meta};
use crate::state::{AppState, HttpSettings};

pub const REFRESH_COOKIE: &str = "conclave_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";
/// The login-device cookie: sent only to the login route, kept 180 days.
pub const DEVICE_COOKIE: &str = "conclave_device";
const DEVICE_COOKIE_PATH: &str = "/api/v1/auth/login";
const DEVICE_COOKIE_MAX_AGE: u64 = 180 * 24 * 3600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(config))
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuthConfig {
    /// `local` (email and password) or `oidc` (single sign-on).
    mode: &'static str,
    /// The OIDC issuer to sign in at (authorization code + PKCE), in mode `oidc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    /// The SPA's client id at the issuer, in mode `oidc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    /// The scopes to ask the issuer for, in mode `oidc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<String>>,
    /// Whether `POST /api/v1/auth/signup` accepts new accounts (always false in mode `oidc`).
    signup_open: bool,
}

/// How the web app should sign in.
#[utoipa::path(get, path = "/api/v1/auth/config", tag = "auth", responses((status = 200, body = AuthConfig)))]
async fn config(State(state): State<AppState>) -> Json<AuthConfig> {
    let core = state.core.config();
    Json(match &core.sso {
        Some(sso) => AuthConfig {
            mode: "oidc",
            issuer: Some(sso.issuer.clone()),
            client_id: Some(sso.client_id.clone()),
            scopes: Some(sso.scopes.clone()),
            signup_open: false,
        },
        None => {
            AuthConfig { mode: "local", issuer: None, client_id: None, scopes: None, signup_open: core.signup_open }
        }
    })
}

/// The local sign-in routes do not exist when single sign-on is configured.
fn local_accounts(state: &AppState) -> ApiResult<()> {
    if state.core.config().sso.is_some() {
        return Err(crate::error::ApiError::RouteNotFound);
    }
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    email: String,
    /// 12 characters or more, not guessable, not a known breached password.
    password: String,
    display_name: String,
}

/// Creates an account and signs it in. In `dev` the first account of a fresh install becomes
/// the tenant's administrator.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest, responses(
    (status = 201, body = AuthView, description = "Signed in; the refresh token is set as an HttpOnly cookie"),
    (status = 403, body = Problem, description = "Sign-up is closed"),
    (status = 404, body = Problem, description = "Single sign-on is configured"),
    (status = 409, body = Problem, description = "The email address is taken"),
    (status = 422, body = Problem),
))]
async fn signup(
    State(state): State<AppState>,
    Meta(meta): Meta,
    ApiJson(body): ApiJson<SignupRequest>,
) -> ApiResult<Response> {
    local_accounts(&state)?;
    let signed_in = state
        .core
        .signup(SignupInput { email: body.email, password: body.password, display_name: body.display_name }, &meta)
        .await?;
    Ok(with_cookie(&state.http, StatusCode::CREATED, signed_in))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
    /// For accounts with two-factor sign-in: the 6-digit code from the authenticator app.
    otp: Option<String>,
    /// For accounts with two-factor sign-in: a one-time recovery code instead of `otp`.
    recovery_code: Option<String>,
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = AuthView, description = "Signed in; the refresh token is set as an HttpOnly cookie"),
    (status = 401, body = Problem, description = "Unknown email, wrong password or disabled account (one answer for all); or, after a right password, `mfa-required`: a missing, wrong or used second-factor code"),
    (status = 404, body = Problem, description = "Single sign-on is configured"),
))]
async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    local_accounts(&state)?;
    limit_address(&state, &meta, true).await?;
    // Attempts count against the account, except from a browser holding a login-device cookie
    // of this account, which has a budget of its own: guessing elsewhere cannot lock it out.
    let device = cookie_value(&headers, DEVICE_COOKIE);
    let key = match &device {
        Some(device) if state.core.is_login_device(&body.email, device).await => {
            format!("login-device:{}", hex_sha256(device))
        }
        _ => format!("login:{}", body.email.trim().to_lowercase()),
    };
    state.limit_login(&key).await?;
    let second = SecondFactor { otp: body.otp.as_deref(), recovery_code: body.recovery_code.as_deref() };
    let signed_in = state.core.login_with(&body.email, &body.password, second, &meta).await?;
    let user = &signed_in.view.user;
    let issued = state.core.issue_login_device(user.tenant_id, user.id).await;
    let mut response = with_cookie(&state.http, StatusCode::OK, signed_in);
    if let Some(value) = issued.and_then(|v| HeaderValue::from_str(&device_cookie(&state.http, &v)).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

fn device_cookie(http: &HttpSettings, value: &str) -> String {
    let secure = if http.secure_cookies { "; Secure" } else { "" };
    format!(
        "{DEVICE_COOKIE}={value}; HttpOnly; SameSite=Strict; Path={DEVICE_COOKIE_PATH}; Max-Age={DEVICE_COOKIE_MAX_AGE}{secure}"
    )
}

/// The limiter's key names the device by a hash, not by the cookie itself.
fn hex_sha256(value: &str) -> String {
    use sha2::Digest as _;
    conclave_core::records::hex(&sha2::Sha256::digest(value.as_bytes())[..16])
}

/// Exchanges the refresh cookie for a new access token and a new refresh cookie. Presenting a
/// refresh token twice signs the whole session out.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", responses(
    (status = 200, body = AuthView),
    (status = 401, body = Problem, description = "No, expired, revoked or reused refresh cookie"),
    (status = 404, body = Problem, description = "Single sign-on is configured"),
))]
async fn refresh(State(state): State<AppState>, Meta(meta): Meta, headers: HeaderMap) -> ApiResult<Response> {
    local_accounts(&state)?;
    limit_address(&state, &meta, false).await?;
    let token = refresh_cookie(&headers).ok_or(conclave_core::Error::Unauthenticated)?;
    let signed_in = state.core.refresh(&token, &meta).await?;
    Ok(with_cookie(&state.http, StatusCode::OK, signed_in))
}

/// Ends the session of the refresh cookie and of the bearer token, whichever are present.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses(
    (status = 204),
    (status = 404, body = Problem, description = "Single sign-on is configured"),
))]
async fn logout(
    State(state): State<AppState>,
    Meta(meta): Meta,
    MaybeAuthenticated(caller): MaybeAuthenticated,
    headers: HeaderMap,
) -> ApiResult<Response> {
    local_accounts(&state)?;
    let token = refresh_cookie(&headers);
    state.core.logout(token.as_deref(), caller.as_ref(), &meta).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(&state.http, "", 0)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Counts an unauthenticated request against the client's address.
async fn limit_address(state: &AppState, meta: &conclave_core::principal::RequestMeta, login: bool) -> ApiResult<()> {
    if let Some(ip) = meta.ip {
        if login {
            state.limit_login(&format!("login-ip:{ip}")).await?;
        } else {
            state.limit(&format!("ip:{ip}")).await?;
        }
    }
    Ok(())
}

fn with_cookie(http: &HttpSettings, status: StatusCode, signed_in: SignedIn) -> Response {
    let value = cookie(http, signed_in.refresh_token.expose_secret(), signed_in.refresh_ttl.as_secs());
    let mut response = (status, Json(signed_in.view)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn cookie(http: &HttpSettings, value: &str, max_age: u64) -> String {
    let secure = if http.secure_cookies { "; Secure" } else { "" };
    format!("{REFRESH_COOKIE}={value}; HttpOnly; SameSite=Strict; Path={COOKIE_PATH}; Max-Age={max_age}{secure}")
}

fn refresh_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, REFRESH_COOKIE)
}

fn cookie_value(headers: &HeaderMap, cookie: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes() {
        let dev = HttpSettings { secure_cookies: false, ..Default::default() };
        let prod = HttpSettings { secure_cookies: true, ..Default::default() };
        let c = cookie(&dev, "cr_x", 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/api/v1/auth"));
        assert!(!c.contains("Secure"));
        assert!(cookie(&prod, "cr_x", 60).ends_with("; Secure"));
    }

    #[test]
    fn finds_the_refresh_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; conclave_refresh=cr_abc; b=2"));
        assert_eq!(refresh_cookie(&h).as_deref(), Some("cr_abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("conclave_refresh="));
        assert_eq!(refresh_cookie(&h), None);
    }
}
