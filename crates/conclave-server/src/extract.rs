//! Extractors that turn a request into typed, checked values, or into a clear problem.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use conclave_core::page::{PageRequest, DEFAULT_LIMIT, MAX_LIMIT};
use conclave_core::principal::{Caller, RequestMeta};
use conclave_core::{Error, FieldError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::error::ApiError;
use crate::middleware::request_id::RequestId;
use crate::state::AppState;

/// A JSON body, with problem answers for a wrong media type (415), broken JSON (400), the wrong
/// shape (422, naming the field) and a body over the limit (413).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType("Send JSON with `Content-Type: application/json`.".into()));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("The request body is larger than this server accepts.".into())
            } else {
                ApiError::BadRequest(rejection.body_text(), Vec::new())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body; a value of the wrong shape is a 422 naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| ApiError::BadRequest(format!("The body is not valid JSON: {e}"), Vec::new()))?;
            Ok(v)
        }
        Err(e) => {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(ApiError::BadRequest(format!("The body is not valid JSON: {inner}"), Vec::new()));
            }
            let (field, message) = field_error(&e.path().to_string(), &inner.to_string());
            Err(ApiError::Domain(Error::Validation(vec![FieldError::new(field, message)])))
        }
    }
}

/// The field and a message from serde's wording: `missing field `x`` names the field inside
/// the path; the position suffix means nothing to the caller.
fn field_error(path: &str, message: &str) -> (String, String) {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        let field = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
        return (field, "This field is required.".into());
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde_path_to_error already ends the path with the unknown field.
        let name = rest.split('`').next().unwrap_or("");
        let field = if path.is_empty() { name.to_owned() } else { path.to_owned() };
        return (field, format!("Unknown field `{name}`; check its spelling."));
    }
    let field = if path.is_empty() { "body".to_owned() } else { path.to_owned() };
    let mut message = message.to_owned();
    if let Some(first) = message.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    message.push('.');
    (field, message)
}

/// A path parameter; anything that does not parse is a resource that does not exist (404).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| ApiError::Domain(Error::NotFound("resource")))
    }
}

/// A query string; a malformed one is a 400.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::BadRequest(e.body_text(), Vec::new()))
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// 1 to 200, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::BadRequest(
                format!("limit must be between 1 and {MAX_LIMIT}"),
                vec![FieldError::new("limit", format!("Must be between 1 and {MAX_LIMIT}."))],
            ));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ApiError::BadRequest(
                    "cursor is not one this server gave".into(),
                    vec![FieldError::new("cursor", "Pass back the next_cursor of the previous page unchanged.")],
                )
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(c: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// Where the request came from, and its id, for the audit log.
pub struct Meta(pub RequestMeta);

impl FromRequestParts<AppState> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = request_client_ip(&parts.extensions, &parts.headers, &state.http.trusted_proxies);
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(Meta(RequestMeta { ip, request_id, user_agent: user_agent(parts) }))
    }
}

/// Longest `User-Agent` kept with a session: enough to tell browsers apart, bounded storage.
const MAX_USER_AGENT_CHARS: usize = 200;

/// The `User-Agent` header, without control characters and shortened; `None` if absent or empty.
fn user_agent(parts: &Parts) -> Option<String> {
    let raw = parts.headers.get(header::USER_AGENT)?;
    let text = String::from_utf8_lossy(raw.as_bytes());
    let clean: String = text.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT_CHARS).collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

/// The client's address, worked out once per request by the access-log layer (the outermost
/// that knows the peer) and read from the request's extensions by everything after it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub IpAddr);

/// The request's client address: the access-log layer's [`ClientIp`], else worked out from the
/// peer (a router served without that layer).
pub(crate) fn request_client_ip(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    if let Some(ClientIp(ip)) = extensions.get::<ClientIp>() {
        return Some(*ip);
    }
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| client_ip(c.0.ip(), headers, trusted))
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub(crate) fn client_ip(peer: IpAddr, headers: &axum::http::HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

/// An authenticated caller: `Authorization: Bearer <access token or API key>`.
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Meta(meta) = Meta::from_request_parts(parts, state).await?;
        let authenticated = match bearer(parts) {
            Some(token) => state.core.authenticate_request(token, &meta).await,
            None => Err(Error::Unauthenticated),
        };
        let principal = match authenticated {
            Ok(p) => p,
            Err(e) => {
                // Failed attempts count against the address, so guessing tokens is slow too.
                if let Some(ip) = meta.ip {
                    state.limit(&format!("ip:{ip}")).await?;
                }
                return Err(e.into());
            }
        };
        let is_api_key = matches!(principal.credential, conclave_core::principal::Credential::ApiKey { .. });
        if is_api_key
            && state.http.mtls_required_for_api_keys
            && parts.extensions.get::<crate::middleware::client_cert::ClientCertificate>().is_none()
        {
            tracing::warn!("API key refused: the client presented no verified certificate");
            return Err(ApiError::ClientCertificateRequired);
        }
        let key = match &principal.credential {
            conclave_core::principal::Credential::Session(_) => format!("user:{}", principal.user_id),
            conclave_core::principal::Credential::ApiKey { id, .. } => format!("key:{id}"),
        };
        state.limit(&key).await?;
        let caller = Caller { principal, meta };
        state.core.check_tenant_address(&caller).await?;
        if caller.principal.mfa_enrollment_pending && !open_before_mfa_enrolment(parts) {
            return Err(Error::MfaEnrollmentRequired.into());
        }
        Ok(Authenticated(caller))
    }
}

/// What a session may still do while its tenant requires MFA and the user has not enrolled:
/// see who it is, enrol, and sign out. Everything else is closed by default, so a new route
/// cannot be forgotten.
fn open_before_mfa_enrolment(parts: &Parts) -> bool {
    use axum::http::Method;
    matches!(
        (&parts.method, parts.uri.path()),
        (&Method::GET, "/api/v1/me")
            | (&Method::POST, "/api/v1/me/mfa/totp")
            | (&Method::POST, "/api/v1/me/mfa/totp/confirm")
            | (&Method::POST, "/api/v1/auth/logout")
    )
}

/// A caller if the request carries a valid bearer credential; no error otherwise.
pub struct MaybeAuthenticated(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeAuthenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(MaybeAuthenticated(Authenticated::from_request_parts(parts, state).await.ok().map(|a| a.0)))
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// For PATCH bodies: tells an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_name_their_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            email: String,
            role: conclave_core::principal::Role,
            nested: Option<Nested>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Nested {
            tokens: u64,
        }
        let field = |json: &str| match parse_json::<Body>(json.as_bytes()) {
            Err(ApiError::Domain(Error::Validation(errors))) => errors[0].field.clone(),
            other => panic!("{json}: {other:?}"),
        };
        assert_eq!(field(r#"{}"#), "email");
        assert_eq!(field(r#"{"email": 5, "role": "admin"}"#), "email");
        assert_eq!(field(r#"{"email": "a", "role": "overlord"}"#), "role");
        assert_eq!(field(r#"{"email": "a", "role": "admin", "nested": {"tokens": -1}}"#), "nested.tokens");
        assert_eq!(field(r#"{"email": "a", "role": "admin", "nested": {}}"#), "nested.tokens");
        assert_eq!(field(r#"{"email": "a", "role": "admin", "typo": 1}"#), "typo");
        assert!(matches!(parse_json::<Body>(b"{bad"), Err(ApiError::BadRequest(..))));
        assert!(matches!(parse_json::<Body>(b""), Err(ApiError::BadRequest(..))));
        assert!(matches!(
            parse_json::<Body>(br#"{"email":"a","role":"admin"} trailing"#),
            Err(ApiError::BadRequest(..))
        ));
    }

    #[test]
    fn cursor_round_trip_and_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor("AAAA"), None);
    }

    #[test]
    fn user_agents_are_cleaned_and_bounded() {
        let parts = |ua: &[u8]| {
            let req = axum::http::Request::builder()
                .header(header::USER_AGENT, axum::http::HeaderValue::from_bytes(ua).unwrap())
                .body(())
                .unwrap();
            req.into_parts().0
        };
        assert_eq!(user_agent(&parts(b"Mozilla/5.0 (X11)")).as_deref(), Some("Mozilla/5.0 (X11)"));
        assert_eq!(user_agent(&parts(b"a\tb")).as_deref(), Some("ab"));
        assert_eq!(user_agent(&parts(b"   ")), None);
        assert_eq!(user_agent(&parts(&[b'x'; 1000])).map(|u| u.len()), Some(MAX_USER_AGENT_CHARS));
        let (no_header, ()) = axum::http::Request::builder().body(()).unwrap().into_parts();
        assert_eq!(user_agent(&no_header), None);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let req = axum::http::Request::builder()
            .header("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.1.1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let proxy: IpAddr = "10.2.3.4".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(proxy, &parts.headers, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(stranger, &parts.headers, &trusted), stranger);
        assert_eq!(client_ip(proxy, &parts.headers, &[]), proxy);
    }
}
