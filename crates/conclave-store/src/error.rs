//! sqlx errors turned into the domain's [`StoreError`], by kind and constraint name.

use conclave_core::StoreError;
use sqlx::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("cannot reach the {backend} database: {detail}")]
    Unreachable { backend: &'static str, detail: String },
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("copying the database failed: {0}")]
    Snapshot(String),
}

pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation => {
                StoreError::Constraint(db.constraint().unwrap_or("unique").to_owned())
            }
            _ => StoreError::Other(db.to_string()),
        },
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(describe(&e))
        }
        _ => StoreError::Other(e.to_string()),
    }
}

/// True for a uniqueness violation, whatever the backend calls the constraint
/// (SQLite does not report constraint names).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation)
}

/// A one-line description for the operator, without credentials from the URL.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::PoolTimedOut => "timed out waiting for a connection".into(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}
