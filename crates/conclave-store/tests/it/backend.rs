//! A fresh, migrated database of each kind for one test.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use conclave_core::store::Store;
use conclave_store::Database;
use sqlx::Connection;

pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    pub url: String,
    db: Database,
    store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    PgDatabase(String),
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(format!("conclave-store-it-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("test.db").display());
        let db = Database::connect(&url, Duration::from_secs(5)).await.expect("SQLite opens");
        db.migrate().await.expect("SQLite migrations apply");
        TestDb { url, store: db.clone().into_store(), db, cleanup: Cleanup::Dir(dir) }
    }

    pub async fn postgres() -> TestDb {
        let name = format!("conclave_store_it_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL).await.unwrap_or_else(|e| {
            panic!("PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is needed by the store suite and cannot be reached: {e}")
        });
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create the test database");
        admin.close().await.ok();
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let db = Database::connect(&url, Duration::from_secs(5)).await.expect("PostgreSQL test database opens");
        db.migrate().await.expect("PostgreSQL migrations apply");
        TestDb { url, store: db.clone().into_store(), db, cleanup: Cleanup::PgDatabase(name) }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub async fn finish(self) {
        self.db.close().await;
        match self.cleanup {
            Cleanup::Dir(dir) => {
                std::fs::remove_dir_all(dir).ok();
            }
            Cleanup::PgDatabase(name) => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL).await {
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.ok();
                }
            }
        }
    }
}
