//! The real application over a fresh SQLite store, driven in-process with `tower::oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use conclave_auth::PasswordHashingParams;
use conclave_core::content::PlaintextCodec;
use conclave_core::provider::{ModelCatalog, ProviderEntry};
use conclave_core::{Conclave, CoreConfig};
use conclave_llm::DemoProvider;
use conclave_server::{AppState, HttpSettings};
use serde_json::{json, Value};
use tower::ServiceExt;

pub struct Harness {
    pub app: Router,
    pub core: Arc<Conclave>,
    dir: std::path::PathBuf,
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Harness {
    pub async fn new() -> Harness {
        let dir = std::env::temp_dir().join(format!("conclave-server-it-{}", uuid()));
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = conclave_store::Database::connect(&url, Duration::from_secs(5)).await.unwrap();
        db.migrate().await.unwrap();
        let mut catalog = ModelCatalog::new();
        catalog.add(
            "conclave-demo",
            ProviderEntry { name: "demo".into(), region: None, client: Arc::new(DemoProvider::new(Duration::ZERO)) },
        );
        let config = CoreConfig {
            password_hashing: PasswordHashingParams { memory_kib: 64, iterations: 1, parallelism: 1 },
            ..CoreConfig::default()
        };
        let core = Conclave::new(config, db.into_store(), Arc::new(PlaintextCodec), catalog).unwrap();
        let state = AppState {
            core: core.clone(),
            http: Arc::new(HttpSettings { secure_cookies: false, trusted_proxies: vec![], max_json_bytes: 1 << 20 }),
        };
        Harness { app: conclave_server::app(state), core, dir }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let response = self.app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body }
    }

    /// Signs up through the API (the first account becomes admin) and returns (token, user id).
    pub async fn signup(&self, email: &str) -> (String, String) {
        let r = self
            .call(
                Method::POST,
                "/api/v1/auth/signup",
                None,
                Some(json!({"email": email, "password": "correct-horse-battery-staple-42", "display_name": "Test"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        (r.body["access_token"].as_str().unwrap().to_owned(), r.body["user"]["id"].as_str().unwrap().to_owned())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub fn uuid() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}
