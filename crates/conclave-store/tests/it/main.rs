//! The store suite: every test runs on SQLite and on PostgreSQL (127.0.0.1:5432, a fresh
//! database per test). If PostgreSQL cannot be reached, the PostgreSQL half fails naming it.

mod backend;
mod checkpoints;
mod entra_password;
mod identities;
mod isolation;
mod libraries;
mod notify;
mod records;

/// Declares `sqlite::$name` and `postgres::$name` for a test body taking `&dyn Store`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = $crate::backend::TestDb::sqlite().await;
                    super::$name(db.store()).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = $crate::backend::TestDb::postgres().await;
                    super::$name(db.store()).await;
                    db.finish().await;
                }
            )*
        }
    };
}
