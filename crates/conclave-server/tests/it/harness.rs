//! The real application over a fresh SQLite store, driven in-process with `tower::oneshot`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use conclave_auth::PasswordHashingParams;
use conclave_core::envelope::EnvelopeCodec;
use std::collections::VecDeque;
use std::sync::Mutex;

use conclave_core::provider::{
    ChatEvent, ChatRequest, ChatStream, ModelCatalog, ModelProvider, ProviderEntry, ProviderError,
};
use conclave_core::{Conclave, CoreConfig};
use conclave_llm::DemoProvider;
use conclave_server::{AppState, HttpSettings};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower::ServiceExt;

pub struct Harness {
    pub app: Router,
    pub core: Arc<Conclave>,
    /// Model `gated`: each reply is whatever the test sends through `gated.next_reply()`.
    pub gated: Arc<GatedProvider>,
    dir: std::path::PathBuf,
}

/// A model provider the test drives event by event.
#[derive(Default)]
pub struct GatedProvider {
    pending: Mutex<VecDeque<mpsc::UnboundedReceiver<Result<ChatEvent, ProviderError>>>>,
    fail_start: Mutex<Option<ProviderError>>,
    pub requests: Mutex<Vec<ChatRequest>>,
}

impl GatedProvider {
    /// The sender for the next reply the provider is asked for.
    pub fn next_reply(&self) -> mpsc::UnboundedSender<Result<ChatEvent, ProviderError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending.lock().unwrap().push_back(rx);
        tx
    }

    /// The next request fails before any event.
    pub fn fail_next(&self, e: ProviderError) {
        *self.fail_start.lock().unwrap() = Some(e);
    }
}

#[async_trait::async_trait]
impl ModelProvider for GatedProvider {
    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec!["gated".into()])
    }

    async fn stream_chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        self.requests.lock().unwrap().push(request);
        if let Some(e) = self.fail_start.lock().unwrap().take() {
            return Err(e);
        }
        let rx = self
            .pending
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| ProviderError::Unreachable("no scripted reply".into()))?;
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })))
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut CoreConfig)) -> Harness {
        Self::limited(100_000, adjust).await
    }

    /// With `rate_limit` requests (and sign-in attempts) a minute.
    pub async fn limited(rate_limit: u32, adjust: impl FnOnce(&mut CoreConfig)) -> Harness {
        Self::build(rate_limit, vec![], adjust).await
    }

    /// Reachable only from `allowlist` (the server-wide IP allow-list).
    pub async fn allowlisted(allowlist: Vec<ipnet::IpNet>) -> Harness {
        Self::build(100_000, allowlist, |_| {}).await
    }

    async fn build(rate_limit: u32, allowlist: Vec<ipnet::IpNet>, adjust: impl FnOnce(&mut CoreConfig)) -> Harness {
        let dir = std::env::temp_dir().join(format!("conclave-server-it-{}", uuid()));
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let db = conclave_store::Database::connect(&url, Duration::from_secs(5)).await.unwrap();
        db.migrate().await.unwrap();
        let mut catalog = ModelCatalog::new();
        catalog.add(
            "conclave-demo",
            ProviderEntry { name: "demo".into(), region: None, client: Arc::new(DemoProvider::new(Duration::ZERO)) },
        );
        let gated = Arc::new(GatedProvider::default());
        catalog.add("gated", ProviderEntry { name: "gated".into(), region: Some("us".into()), client: gated.clone() });
        catalog.add(
            "gated-eu",
            ProviderEntry { name: "gated-eu".into(), region: Some("eu".into()), client: gated.clone() },
        );
        let mut config = CoreConfig {
            password_hashing: PasswordHashingParams { memory_kib: 64, iterations: 1, parallelism: 1 },
            ..CoreConfig::default()
        };
        adjust(&mut config);
        let notifier = db.notifier().await.unwrap();
        let store = db.into_store();
        let keys = Arc::new(conclave_crypto::LocalKeyProvider::ephemeral());
        let codec = Arc::new(EnvelopeCodec::new(store.clone(), keys, Duration::from_secs(60)));
        let objects = conclave_core::objects::Objects::local(&dir.join("objects")).unwrap();
        let core = Conclave::new(config, store, codec, catalog, notifier, objects).unwrap();
        core.start_background();
        let state = AppState {
            core: core.clone(),
            http: Arc::new(HttpSettings {
                secure_cookies: false,
                trusted_proxies: vec![],
                max_json_bytes: 1 << 20,
                cors_origins: vec!["https://app.firm.example".into()],
                hsts: true,
                rate_limit_per_minute: rate_limit,
                login_attempts_per_minute: rate_limit,
                ip_allowlist: allowlist,
                limits: Default::default(),
                mtls_required_for_api_keys: false,
            }),
            limiter: Arc::new(conclave_server::middleware::rate_limit::RateLimiter::local()),
        };
        Harness { app: conclave_server::app(state), core, gated, dir }
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
        let response = self.send(req.body(body).unwrap()).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body }
    }

    /// Uploads `content` as a multipart part `file` named `name` to a library.
    pub async fn upload(&self, token: &str, library: &str, name: &str, content_type: &str, content: &[u8]) -> Reply {
        let (boundary, body) = multipart(name, content_type, content);
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/libraries/{library}/documents"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(body))
            .unwrap();
        let response = self.send(req).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// The folder holding this harness's database and objects.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The SQLite database behind this harness, for tests that tamper with it.
    pub fn db_url(&self) -> String {
        format!("sqlite://{}", self.dir.join("t.db").display())
    }

    /// Sends a prepared request from 127.0.0.1; the response body is left to the caller (streams).
    pub async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.send_from(SocketAddr::from(([127, 0, 0, 1], 40000)), req).await
    }

    pub async fn send_from(&self, peer: SocketAddr, mut req: Request<Body>) -> axum::response::Response {
        req.extensions_mut().insert(ConnectInfo(peer));
        self.app.clone().oneshot(req).await.unwrap()
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

/// A multipart/form-data body with one part `file`: (boundary, bytes).
pub fn multipart(name: &str, content_type: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "conclave-test-boundary-7d1f".to_owned();
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (boundary, body)
}

pub fn uuid() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}
