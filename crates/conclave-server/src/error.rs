//! Every error leaves the server as RFC 9457 `application/problem+json`, mapped here in one
//! place. Internal detail goes to the log with the request id, never to the client.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use conclave_core::provider::ProviderError;
use conclave_core::records::SessionEnd;
use conclave_core::{Error, FieldError};
use serde::Serialize;

/// The problem document. `request_id` is filled in by the request-id layer on the way out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:conclave:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// For validation problems: each field and what is wrong with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:conclave:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            request_id: None,
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// The response, with the problem also kept in the extensions for the request-id layer.
    pub fn render(&self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
            if status == StatusCode::TOO_MANY_REQUESTS {
                headers.insert("ratelimit-remaining", HeaderValue::from(0));
                headers.insert("ratelimit-reset", HeaderValue::from(after.as_secs().max(1)));
            }
        }
        response.extensions_mut().insert(self.clone());
        response
    }
}

/// What a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    Domain(Error),
    /// A malformed request: bad query, bad cursor, unparseable body.
    BadRequest(String, Vec<FieldError>),
    RouteNotFound,
    MethodNotAllowed,
    UnsupportedMediaType(String),
    PayloadTooLarge(String),
    /// Well-formed JSON of the wrong shape.
    Unprocessable(String),
    /// An API key from a client that presented no verified certificate, where one is required.
    ClientCertificateRequired,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Domain(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().render()
    }
}

impl ApiError {
    pub fn problem(self) -> Problem {
        use StatusCode as S;
        match self {
            ApiError::BadRequest(detail, errors) => {
                Problem::new(S::BAD_REQUEST, "bad-request", detail).with_errors(errors)
            }
            ApiError::RouteNotFound => Problem::new(S::NOT_FOUND, "not-found", "There is nothing at this address."),
            ApiError::MethodNotAllowed => {
                Problem::new(S::METHOD_NOT_ALLOWED, "method-not-allowed", "This address does not accept that method.")
            }
            ApiError::UnsupportedMediaType(d) => Problem::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", d),
            ApiError::PayloadTooLarge(d) => Problem::new(S::PAYLOAD_TOO_LARGE, "payload-too-large", d),
            ApiError::Unprocessable(d) => Problem::new(S::UNPROCESSABLE_ENTITY, "validation", d),
            ApiError::ClientCertificateRequired => Problem::new(
                S::UNAUTHORIZED,
                "client-certificate-required",
                "API keys are accepted only over mutual TLS: connect with a client certificate issued by this server's client CA.",
            ),
            ApiError::Domain(e) => domain_problem(e),
        }
    }
}

fn domain_problem(e: Error) -> Problem {
    use StatusCode as S;
    match e {
        Error::NotFound(what) => Problem::new(S::NOT_FOUND, "not-found", format!("No such {what}, or it is not visible to you.")),
        Error::Unauthenticated => Problem::new(
            S::UNAUTHORIZED,
            "unauthenticated",
            "Sign in first: send `Authorization: Bearer <token>` with a valid access token or API key. Access tokens expire; refresh to get a new one.",
        ),
        Error::SessionExpired(SessionEnd::Idle) => Problem::new(
            S::UNAUTHORIZED,
            "session-expired",
            "Your session ended because it was not used for too long; sign in again.",
        ),
        Error::SessionExpired(SessionEnd::Lifetime) => Problem::new(
            S::UNAUTHORIZED,
            "session-expired",
            "Your session reached its maximum lifetime; sign in again.",
        ),
        Error::InvalidCredentials => Problem::new(S::UNAUTHORIZED, "invalid-credentials", "The email address or the password is incorrect."),
        Error::Forbidden(detail) => Problem::new(S::FORBIDDEN, "forbidden", detail),
        Error::MfaRequired => Problem::new(
            S::UNAUTHORIZED,
            "mfa-required",
            "This account has two-factor sign-in: send `otp` (the 6-digit code from your authenticator app) or `recovery_code` with the email and password.",
        ),
        Error::MfaEnrollmentRequired => Problem::new(
            S::FORBIDDEN,
            "mfa-enrollment-required",
            "Your organisation requires two-factor sign-in: enrol an authenticator app (POST /api/v1/me/mfa/totp, then POST /api/v1/me/mfa/totp/confirm) before doing anything else.",
        ),
        Error::PasswordChangeRequired => Problem::new(
            S::FORBIDDEN,
            "password-change-required",
            "Your password was reset by an administrator: change it (POST /api/v1/me/password) before doing anything else.",
        ),
        Error::Validation(errors) => {
            let detail = match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are invalid; see `errors`.", errors.len()),
            };
            Problem::new(S::UNPROCESSABLE_ENTITY, "validation", detail).with_errors(errors)
        }
        Error::Conflict(detail) => Problem::new(S::CONFLICT, "conflict", detail),
        Error::BadRequest(detail) => Problem::new(S::BAD_REQUEST, "bad-request", detail),
        Error::TooLarge(detail) => Problem::new(S::PAYLOAD_TOO_LARGE, "payload-too-large", detail),
        Error::UnsupportedMediaType(detail) => Problem::new(S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", detail),
        Error::RateLimited { retry_after, detail } => {
            let mut p = Problem::new(S::TOO_MANY_REQUESTS, "rate-limited", detail);
            p.retry_after = Some(retry_after);
            p
        }
        Error::Unavailable { service, detail } => {
            tracing::error!(service, detail, "dependency unavailable");
            let mut p = Problem::new(
                S::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("The {service} is unavailable right now; nothing was lost. Try again shortly."),
            );
            p.retry_after = Some(Duration::from_secs(5));
            p
        }
        Error::Provider(e) => provider_problem(e),
        Error::Internal(detail) => {
            tracing::error!(detail, "internal error");
            Problem::new(
                S::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side. The operator can find out what from the request id.",
            )
        }
    }
}

fn provider_problem(e: ProviderError) -> Problem {
    use StatusCode as S;
    tracing::warn!(error = %e, "model provider failure");
    let saved = " Your message was saved; try again.";
    match e {
        ProviderError::Timeout => Problem::new(S::GATEWAY_TIMEOUT, "provider-timeout", format!("{e}.{saved}")),
        ProviderError::RateLimited { retry_after } => {
            let mut p = Problem::new(S::SERVICE_UNAVAILABLE, "provider-rate-limited", format!("{e}.{saved}"));
            p.retry_after = Some(retry_after.unwrap_or(Duration::from_secs(10)));
            p
        }
        other => Problem::new(S::BAD_GATEWAY, "provider-error", format!("{other}.{saved}")),
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
