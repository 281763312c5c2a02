//! A local Entra ID and Azure Key Vault for tests (feature `standin`): one axum server over TLS,
//! with a certificate from a CA it makes at start (the client trusts it through
//! `CONCLAVE_AZURE_CA_FILE`; certificate checks stay on).
//!
//! Endpoints, as documented by Microsoft:
//! - tokens: `POST /{tenant}/oauth2/v2.0/token` (client secret or federated client assertion),
//!   `GET /metadata/identity/oauth2/token` (instance metadata, needs `Metadata: true`),
//!   `GET /msi/token` (App Service, needs `X-IDENTITY-HEADER`); each token is for the audience
//!   of the requested scope;
//! - keys: `GET /keys/{name}[/{version}]`, `GET /keys/{name}/versions`,
//!   `POST /keys/{name}[/{version}]/wrapkey|unwrapkey|sign`, `POST /keys/{name}/rotate`,
//!   `PATCH /keys/{name}/{version}`; real `RSA-OAEP-256` (crate `rsa`) and `ES256` (crate
//!   `p256`); bearer tokens must be for `https://vault.azure.net`.
//!
//! Faults ([`Fault`]) make chosen requests slow or answer 401, 403, 429 (with `Retry-After`),
//! 500 or 503.

mod keys;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::RngCore;
use serde_json::json;
use time::OffsetDateTime;

pub use keys::verify_es256;

/// The audience Key Vault tokens must carry.
pub const VAULT_AUDIENCE: &str = "https://vault.azure.net";

/// A planned misbehaviour: the next `times` requests whose path contains `path_contains` wait
/// `delay`, then get `status` (0: answered normally after the delay).
#[derive(Debug, Clone)]
pub struct Fault {
    pub path_contains: String,
    pub status: u16,
    pub retry_after: Option<u64>,
    pub delay: Duration,
    pub times: usize,
}

impl Fault {
    /// `times` answers of `status` for paths containing `path_contains`.
    pub fn status(path_contains: &str, status: u16, times: usize) -> Self {
        Self { path_contains: path_contains.into(), status, retry_after: None, delay: Duration::ZERO, times }
    }

    /// `times` answers delayed by `delay`, then served normally.
    pub fn slow(path_contains: &str, delay: Duration, times: usize) -> Self {
        Self { path_contains: path_contains.into(), status: 0, retry_after: None, delay, times }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

struct Token {
    audience: String,
    expires: OffsetDateTime,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Token>,
    token_requests: usize,
    token_lifetime: i64,
    secrets: HashMap<String, String>,
    assertions: HashMap<String, String>,
    identity_header: String,
    keys: keys::Vault,
    faults: Vec<Fault>,
    requests: Vec<String>,
    on_issue: Vec<(String, TokenHook)>,
}

/// Told of each token issued for an audience, before the token leaves the stand-in.
type TokenHook = Arc<dyn Fn(&str) + Send + Sync>;

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running stand-in; stops when dropped.
pub struct StandIn {
    addr: SocketAddr,
    ca_pem: String,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let mut header = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut header);
        let state: Shared =
            Arc::new(Mutex::new(Inner { token_lifetime: 3600, identity_header: hex(&header), ..Inner::default() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let base = format!("https://{addr}");
        lock(&state).keys.base = base;
        let (ca_pem, acceptor) = tls::acceptor().map_err(std::io::Error::other)?;
        let app = router(state.clone());
        let task = tokio::spawn(tls::serve(listener, acceptor, app));
        Ok(Self { addr, ca_pem, state, task })
    }

    /// `https://127.0.0.1:<port>`: the authority host, the vault URL and the managed identity
    /// endpoints all live here.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes the CA certificate to `path` (for `CONCLAVE_AZURE_CA_FILE`).
    pub fn write_ca(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// Registers an app with a client secret.
    pub fn add_client_secret(&self, client_id: &str, secret: &str) {
        lock(&self.state).secrets.insert(client_id.into(), secret.into());
    }

    /// Registers a federated credential: `assertion` is accepted for `client_id`.
    pub fn add_federated(&self, client_id: &str, assertion: &str) {
        lock(&self.state).assertions.insert(client_id.into(), assertion.into());
    }

    /// The value `IDENTITY_HEADER` must carry for the App Service endpoint.
    pub fn identity_header(&self) -> String {
        lock(&self.state).identity_header.clone()
    }

    /// Lifetime of the tokens issued from now on (default one hour).
    pub fn set_token_lifetime(&self, seconds: i64) {
        lock(&self.state).token_lifetime = seconds;
    }

    /// How many tokens were issued.
    pub fn token_requests(&self) -> usize {
        lock(&self.state).token_requests
    }

    /// Whether `token` was issued here for `audience` and is unexpired.
    pub fn token_valid_for(&self, token: &str, audience: &str) -> bool {
        lock(&self.state)
            .tokens
            .get(token)
            .is_some_and(|t| t.audience == audience && t.expires > OffsetDateTime::now_utc())
    }

    /// Calls `hook` with every token issued for `audience` from now on, before the requester
    /// gets it: a test can make a resource accept it (e.g. a Redis ACL password) in time.
    pub fn on_token_issued(&self, audience: &str, hook: impl Fn(&str) + Send + Sync + 'static) {
        lock(&self.state).on_issue.push((audience.to_owned(), Arc::new(hook)));
    }

    /// Issues a token directly (for tests that need one without a credential flow).
    pub fn issue_token(&self, audience: &str) -> String {
        issue(&mut lock(&self.state), audience).0
    }

    /// Creates an RSA-HSM (2048-bit) key with one version; returns the version name.
    pub fn create_rsa_key(&self, name: &str) -> String {
        let material = keys::Material::rsa();
        lock(&self.state).keys.add_version(name, material)
    }

    /// Creates an EC-HSM P-256 key with one version; returns the version name.
    pub fn create_ec_key(&self, name: &str) -> String {
        let material = keys::Material::ec();
        lock(&self.state).keys.add_version(name, material)
    }

    /// Version names of a key, oldest first.
    pub fn versions(&self, name: &str) -> Vec<String> {
        lock(&self.state).keys.versions(name)
    }

    /// Enables or disables one version, or every version of the key (`None`, the customer's
    /// "disable key" in the portal).
    pub fn set_enabled(&self, name: &str, version: Option<&str>, enabled: bool) {
        lock(&self.state).keys.set_enabled(name, version, enabled);
    }

    /// Adds a fault.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push(fault);
    }

    /// How many requests (method and path) contained `needle`.
    pub fn requests_matching(&self, needle: &str) -> usize {
        lock(&self.state).requests.iter().filter(|r| r.contains(needle)).count()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn issue(inner: &mut Inner, audience: &str) -> (String, i64) {
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("standin.{}", hex(&raw));
    let lifetime = inner.token_lifetime;
    inner.tokens.insert(
        token.clone(),
        Token { audience: audience.to_owned(), expires: OffsetDateTime::now_utc() + time::Duration::seconds(lifetime) },
    );
    inner.token_requests += 1;
    for (hooked, hook) in &inner.on_issue {
        if hooked == audience {
            hook(&token);
        }
    }
    (token, lifetime)
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
        .route("/metadata/identity/oauth2/token", get(imds_token))
        .route("/msi/token", get(app_service_token))
        .merge(keys::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), faults))
        .with_state(state)
}

/// Logs each request and applies the first matching fault.
async fn faults(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let line = format!("{} {}", req.method(), req.uri().path());
    let fault = {
        let mut inner = lock(&state);
        inner.requests.push(line.clone());
        let found = inner.faults.iter_mut().find(|f| f.times > 0 && line.contains(&f.path_contains));
        found.map(|f| {
            f.times -= 1;
            f.clone()
        })
    };
    let Some(fault) = fault else { return next.run(req).await };
    if !fault.delay.is_zero() {
        tokio::time::sleep(fault.delay).await;
    }
    if fault.status == 0 {
        return next.run(req).await;
    }
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        Json(json!({ "error": { "code": status.canonical_reason().unwrap_or("Error").replace(' ', ""), "message": "injected by the stand-in" } })),
    )
        .into_response();
    if let Some(secs) = fault.retry_after {
        resp.headers_mut().insert("retry-after", secs.into());
    }
    resp
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(json!({ "error": error, "error_description": description }))).into_response()
}

fn audience_of(scope: &str) -> Option<&str> {
    scope.strip_suffix("/.default").filter(|a| !a.is_empty())
}

async fn entra_token(
    State(state): State<Shared>,
    Path(_tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if field("grant_type") != "client_credentials" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only client_credentials");
    }
    let Some(audience) = audience_of(field("scope")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "the scope must end with /.default");
    };
    let mut inner = lock(&state);
    let client = field("client_id");
    let authenticated = if let Some(secret) = form.get("client_secret") {
        inner.secrets.get(client) == Some(secret)
    } else if let Some(assertion) = form.get("client_assertion") {
        field("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            && inner.assertions.get(client) == Some(assertion)
    } else {
        false
    };
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret or assertion.",
        );
    }
    let (token, lifetime) = issue(&mut inner, audience);
    Json(json!({ "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token }))
        .into_response()
}

fn managed_identity_answer(inner: &mut Inner, resource: &str) -> Response {
    let (token, lifetime) = issue(inner, resource.trim_end_matches('/'));
    let expires_on = OffsetDateTime::now_utc().unix_timestamp() + lifetime;
    Json(json!({
        "access_token": token,
        "expires_in": lifetime.to_string(),
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

async fn imds_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Required metadata header not specified");
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "resource missing");
    };
    managed_identity_answer(&mut lock(&state), resource)
}

async fn app_service_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = lock(&state);
    if headers.get("x-identity-header").and_then(|v| v.to_str().ok()) != Some(inner.identity_header.as_str()) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_request", "X-IDENTITY-HEADER missing or wrong");
    }
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "api-version 2019-08-01 expected");
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "resource missing");
    };
    managed_identity_answer(&mut inner, resource)
}
