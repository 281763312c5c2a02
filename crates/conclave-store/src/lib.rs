//! Conclave's persistence: one [`Store`](conclave_core::store::Store) implementation written once
//! (`queries.rs`) and compiled for SQLite (the embedded default) and PostgreSQL, with the
//! migrations of each.

mod db_time;
mod error;
mod libraries;
mod notify;
mod queries;
mod redis_conn;
mod redis_notify;
#[cfg(feature = "testing")]
pub mod testing;

pub use redis_conn::{RedisTarget, SharedRedis, REDIS_CONNECT_TIMEOUT};
pub use redis_notify::{RedisNotifier, REDIS_CHANNEL};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use conclave_core::notify::{LocalNotifier, Notifier};
use conclave_core::store::Store;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use error::ConnectError;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// A connected database of either kind.
#[derive(Clone)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Database {
    /// Connects to `url` (`sqlite://path` or `postgres://…`). SQLite files are created with their
    /// folder; PostgreSQL must answer within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Database, ConnectError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
            Self::connect_postgres(options, timeout).await
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| ConnectError::Unreachable {
                    backend: "SQLite",
                    detail: format!("cannot create {}: {e}", parent.display()),
                })?;
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // A local file does not drop connections: no liveness check before each use.
            let pool = SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(8)
                .min_connections(1)
                .acquire_timeout(timeout)
                .connect_with(options)
                .await
                .map_err(|e| ConnectError::Unreachable { backend: "SQLite", detail: error::describe(&e) })?;
            Ok(Database::Sqlite(SqliteStore { pool }))
        } else {
            Err(ConnectError::InvalidUrl("the database URL must start with sqlite:// or postgres://".into()))
        }
    }

    async fn connect_postgres(options: PgConnectOptions, timeout: Duration) -> Result<Database, ConnectError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(|e| ConnectError::Unreachable { backend: "PostgreSQL", detail: error::describe(&e) })?;
        Ok(Database::Postgres(PgStore { pool }))
    }

    // --- Entra ID sign-in (conclave-azure): a token as the PostgreSQL password ---

    /// Connects to PostgreSQL at `url` signing in with `password` instead of any password in the
    /// URL: an Entra ID access token for Azure Database for PostgreSQL.
    pub async fn connect_postgres_with_password(
        url: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Database, ConnectError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConnectError::InvalidUrl("a token password needs a postgres:// URL".into()));
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
        Self::connect_postgres(options.password(password), timeout).await
    }

    /// Replaces the password new PostgreSQL connections sign in with (a refreshed token);
    /// connections already open stay signed in, as PostgreSQL checks the password only at
    /// sign-in. Returns false on SQLite, which has no password.
    pub fn set_postgres_password(&self, password: &str) -> bool {
        match self {
            Database::Sqlite(_) => false,
            Database::Postgres(s) => {
                let options = (*s.pool.connect_options()).clone().password(password);
                s.pool.set_connect_options(options);
                true
            }
        }
    }

    // --- end Entra ID sign-in ---

    /// Applies the migrations this binary carries; safe to run again.
    pub async fn migrate(&self) -> Result<(), ConnectError> {
        let result = match self {
            Database::Sqlite(s) => sqlx::migrate!("./migrations/sqlite").run(&s.pool).await,
            Database::Postgres(s) => sqlx::migrate!("./migrations/postgres").run(&s.pool).await,
        };
        result.map_err(|e| ConnectError::Migration(e.to_string()))
    }

    /// Writes a consistent copy of the embedded database to `path` (SQLite's `VACUUM INTO`: one
    /// read transaction, so writers carry on and the copy is what was committed when it began).
    /// `path` must not exist. PostgreSQL has its own tools (`pg_dump`, point-in-time restore).
    pub async fn snapshot_into(&self, path: &Path) -> Result<(), ConnectError> {
        let Database::Sqlite(s) = self else {
            return Err(ConnectError::Unsupported(
                "a snapshot is taken of the embedded SQLite database only; back PostgreSQL up with pg_dump or its point-in-time restore".into(),
            ));
        };
        let target = path
            .to_str()
            .ok_or_else(|| ConnectError::Unsupported(format!("{} is not a UTF-8 path", path.display())))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&s.pool)
            .await
            .map_err(|e| ConnectError::Snapshot(error::describe(&e)))?;
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    pub fn into_store(self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite(s) => Arc::new(s),
            Database::Postgres(s) => Arc::new(s),
        }
    }

    /// How this database's replicas tell each other about replies: LISTEN/NOTIFY on
    /// PostgreSQL, in memory for SQLite (one process).
    pub async fn notifier(&self) -> Result<Arc<dyn Notifier>, ConnectError> {
        match self {
            Database::Sqlite(_) => Ok(Arc::new(LocalNotifier::default())),
            Database::Postgres(s) => {
                let n = notify::PgNotifier::start(s.pool.clone())
                    .await
                    .map_err(|e| ConnectError::Unreachable { backend: "PostgreSQL", detail: error::describe(&e) })?;
                Ok(n)
            }
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(s) => s.pool.close().await,
            Database::Postgres(s) => s.pool.close().await,
        }
    }
}
