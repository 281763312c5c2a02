//! The crate's error type. Messages name the endpoint and the failure, never a secret or token.

/// What can go wrong talking to Entra ID or Key Vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// The configuration is incomplete or invalid (a missing variable, an unreadable CA file).
    #[error("Azure configuration: {0}")]
    Config(String),
    /// The service could not be reached, timed out or kept answering 5xx / 429.
    #[error("{service} unavailable: {detail}")]
    Unavailable { service: &'static str, detail: String },
    /// The token endpoint refused to issue a token (wrong secret, unknown client, bad assertion).
    #[error("Entra ID refused a token for {scope}: {detail}")]
    TokenRefused { scope: String, detail: String },
    /// Key Vault answered with an error status.
    #[error("Key Vault answered {status}: {code}: {message}")]
    Vault { status: u16, code: String, message: String },
    /// A response that does not parse as the documented shape.
    #[error("unexpected answer from {service}: {detail}")]
    Protocol { service: &'static str, detail: String },
}

pub type Result<T, E = AzureError> = std::result::Result<T, E>;
