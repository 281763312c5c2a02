//! Black-box tests of the `conclave` binary: each test starts the real server on a free port with
//! its own data folder and talks HTTP to it, on SQLite and on PostgreSQL (127.0.0.1:5432).

/// Turns `async fn name(backend: Backend) -> anyhow::Result<()>` bodies of the calling module into
/// `sqlite::name` and `postgres::name` tests.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(crate::app::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(crate::app::Backend::Postgres).await
                }
            )*
        }
    };
}

mod admin;
mod agents;
mod api_keys;
mod app;
mod audit;
mod auth;
mod azurite;
mod backpressure;
mod backup;
mod cli;
mod conventions;
mod conversations;
mod demo;
mod edge;
mod encryption;
mod export;
mod health;
mod key_vault;
mod keys;
mod messages;
mod mfa;
mod oidc;
mod provider_failures;
mod redis_entra;
mod replicas;
mod restart;
mod s3;
mod scan;
mod sessions;
mod shutdown;
mod streaming;
mod tenant;
mod tls;
