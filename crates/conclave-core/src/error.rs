//! The domain's one error type. The HTTP layer maps each variant to a problem+json answer;
//! internal detail stays in the log.

use std::time::Duration;

/// A problem with one input field, phrased for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Absent, or not visible to the caller: the two are never told apart.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("authentication required")]
    Unauthenticated,
    /// A refresh of a session that reached its idle timeout or its absolute lifetime: the user
    /// signs in again.
    #[error("session expired")]
    SessionExpired(crate::records::SessionEnd),
    /// Sign-in failed: unknown account, wrong password or disabled account alike.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The password was right and the account has MFA: a valid TOTP or recovery code is needed
    /// too (missing and wrong codes answer alike).
    #[error("second factor required")]
    MfaRequired,
    /// The tenant requires MFA and the caller has not enrolled: only enrolment is open.
    #[error("MFA enrolment required")]
    MfaEnrollmentRequired,
    /// The caller must change a temporary password before doing anything else.
    #[error("password change required")]
    PasswordChangeRequired,
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A request the server cannot read (a broken upload, for one).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Beyond a configured size.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A content type that is not accepted, or content that is not what it claims to be.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("too many requests")]
    RateLimited { retry_after: Duration, detail: String },
    /// A dependency (database, key service, object store) cannot be reached.
    #[error("{service} unavailable")]
    Unavailable { service: &'static str, detail: String },
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }
}

/// What a store backend reports; converted into [`Error`] at the domain boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or reference constraint, by the name the schema gives it.
    #[error("constraint {0} violated")]
    Constraint(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound("resource"),
            StoreError::Constraint(c) => Error::Conflict(c),
            StoreError::Unavailable(detail) => Error::Unavailable { service: "database", detail },
            StoreError::Other(detail) => Error::Internal(detail),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
