//! Configuration: an optional TOML file, then `CONCLAVE_*` environment variables, which win.
//! One struct per concern; [`Config::findings`] is the safety report `check-config` prints and
//! `serve` enforces in profile `production`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Dev,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub profile: Profile,
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub oidc: OidcConfig,
    pub keys: KeysConfig,
    pub audit: AuditConfig,
    pub limits: LimitsConfig,
    pub redis_url: Option<String>,
    /// `CONCLAVE_REDIS_CA_FILE`: PEM roots trusted for `rediss://` instead of the system's.
    pub redis_ca_file: Option<PathBuf>,
    pub azure: AzureAuthConfig,
    pub log: LogConfig,
    pub providers: Vec<ProviderConfig>,
    /// Model id -> price in US dollars per million tokens, for usage cost estimates.
    pub prices: HashMap<String, conclave_core::service::usage::Price>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub cors_origins: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    /// Addresses allowed to reach the server at all (empty: any).
    pub ip_allowlist: Vec<IpNet>,
    pub max_json_bytes: usize,
    /// How long in-flight requests and replies may run on after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// PEM certificate chain and private key: serve HTTPS (both or neither).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// PEM bundle of the CAs whose client certificates are accepted (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// With a client CA: `optional` (browsers connect without a certificate) or `required`.
    pub tls_client_auth: Option<ClientAuth>,
    /// API keys and the `/v1` gateway only from clients with a verified certificate.
    pub mtls_required_for_api_keys: bool,
    /// Longest a client may take to send a request's headers (slow clients are cut).
    pub header_read_timeout_seconds: u64,
    /// Longest an ordinary (`json`) request may take.
    pub request_timeout_seconds: u64,
    /// Longest a request body may go without sending data.
    pub body_idle_timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    Optional,
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; unset: `conclave.db` in the data folder.
    pub database_url: Option<String>,
    pub object_store_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signup {
    Open,
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Unset: open in `dev`, closed in `production`.
    pub signup: Option<Signup>,
    pub access_token_ttl_seconds: u64,
    pub refresh_token_ttl_seconds: u64,
    /// A local session ends this many hours after sign-in however active it is (NIST SP
    /// 800-63B AAL2 re-authentication; see `docs/configuration.md`).
    pub session_max_hours: u64,
    /// A local session not refreshed for this many minutes ends.
    pub session_idle_minutes: u64,
    /// How long a verified access token or API key is trusted without a database lookup; a
    /// revocation made on another replica takes up to this long to apply here. 0: no cache.
    pub cache_ttl_seconds: u64,
    pub password_hash_memory_kib: u32,
    pub password_hash_iterations: u32,
    /// Production normally signs in through OIDC; this allows local accounts there.
    pub allow_local_accounts_in_production: bool,
}

/// Single sign-on: the SPA signs in at the issuer (authorization code + PKCE) and sends the
/// issuer's JWT; local accounts are then switched off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// Exactly as the issuer writes it (`iss`); discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: Option<String>,
    /// The `aud` tokens must carry; unset: the client id (the SPA sends its ID token).
    pub audience: Option<String>,
    /// The SPA's client id at the issuer.
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    /// A delegated scope every token must carry (`scp`/`scope`), e.g. `access_as_user`.
    pub required_scope: Option<String>,
    /// The claim naming the user's organisation (Entra ID: `tid`); unset: one tenant for all.
    pub tenant_claim: Option<String>,
    /// Tenant claim value -> tenant name (`@default`: the default tenant).
    pub tenants: HashMap<String, String>,
    /// Give unmapped tenant claim values a tenant of their own instead of refusing them.
    pub auto_create_tenants: bool,
    /// Claims holding app roles or groups.
    pub role_claims: Vec<String>,
    /// App role or group -> `admin`, `auditor` or `member`.
    pub roles: HashMap<String, String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub clock_skew_seconds: u64,
    /// The issuer's keys are fetched again after this long (key rotation).
    pub jwks_max_age_seconds: u64,
    /// The least time between two key fetches caused by tokens naming unknown keys.
    pub jwks_refetch_seconds: u64,
    /// Extra CA certificates (PEM) for a private issuer.
    pub ca_file: Option<PathBuf>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: None,
            audience: None,
            client_id: None,
            required_scope: None,
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            tenant_claim: None,
            tenants: HashMap::new(),
            auto_create_tenants: false,
            role_claims: vec!["roles".into(), "groups".into()],
            roles: HashMap::from([
                ("Conclave.Admin".to_owned(), "admin".to_owned()),
                ("Conclave.Auditor".to_owned(), "auditor".to_owned()),
            ]),
            clock_skew_seconds: 60,
            jwks_max_age_seconds: 3600,
            jwks_refetch_seconds: 60,
            ca_file: None,
        }
    }
}

/// The longest clock skew accepted: beyond it, an expired token lives on noticeably.
pub const MAX_OIDC_CLOCK_SKEW_SECONDS: u64 = 300;
/// NIST SP 800-63B (rev. 3) AAL2: re-authenticate at least every 12 hours, and after 30 minutes
/// of inactivity.
pub const DEFAULT_SESSION_MAX_HOURS: u64 = 12;
pub const DEFAULT_SESSION_IDLE_MINUTES: u64 = 30;
/// Production refuses longer limits: NIST SP 800-63B-4 AAL2's upper bounds (24 h overall, 1 h
/// of inactivity).
pub const MAX_PRODUCTION_SESSION_HOURS: u64 = 24;
pub const MAX_PRODUCTION_SESSION_IDLE_MINUTES: u64 = 60;
/// The longest session any profile accepts (the refresh token's old sliding 30 days).
pub const MAX_SESSION_HOURS: u64 = 30 * 24;

/// Longest the credential cache may trust a verified credential (`CONCLAVE_AUTH_CACHE_TTL_SECONDS`).
pub const MAX_AUTH_CACHE_TTL_SECONDS: u64 = 60;

impl OidcConfig {
    /// The audience tokens must carry.
    pub fn audience(&self) -> Option<&str> {
        self.audience.as_deref().or(self.client_id.as_deref())
    }

    /// Whether the issuer may be reached over plain HTTP: only on a loopback address (tests and
    /// local development), and never in production (see `findings`).
    pub fn allows_http(&self) -> bool {
        let Some(issuer) = self.issuer.as_deref() else { return false };
        url::Url::parse(issuer).is_ok_and(|u| {
            u.scheme() == "http"
                && match u.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                }
        })
    }
}

/// `a=b, c=d` pairs.
fn pairs(var: &'static str, v: &str) -> Result<HashMap<String, String>, ConfigError> {
    list(v)
        .into_iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Ok((k.trim().to_owned(), v.trim().to_owned()))
            }
            _ => Err(env_err(var, format!("'{item}' is not name=value"))),
        })
        .collect()
}

/// How the server signs in to PostgreSQL: with the password in the URL, or with an Entra ID
/// token from the Azure credential (`AZURE_*` variables, managed identity by default), renewed
/// before it expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAuth {
    #[default]
    Password,
    Entra,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureAuthConfig {
    /// `CONCLAVE_DATABASE_AUTH`: `entra` uses a token as the PostgreSQL password.
    pub database_auth: ServiceAuth,
    /// Azure Blob (the document store): account key / SAS from `AZURE_STORAGE_*`, or an Entra ID
    /// token from the Azure credential.
    pub object_store_auth: ServiceAuth,
    /// `CONCLAVE_REDIS_AUTH`: `entra` signs in to Redis (Azure Cache for Redis) with a token as
    /// the password and the identity's object id as the user, renewed before it expires.
    pub redis_auth: ServiceAuth,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// `local` or `azure-key-vault`.
    pub provider: String,
    pub allow_local_in_production: bool,
    pub key_vault_url: Option<String>,
    pub key_name: Option<String>,
    /// The local key file; default `<data dir>/keys/conclave-kek.json`.
    pub key_file: Option<PathBuf>,
    /// How long unwrapped content keys stay in memory: revoking a master key locks its data
    /// within this time.
    pub cache_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often each tenant's audit head is signed (when it moved).
    pub checkpoint_seconds: u64,
    /// The append-only folder of checkpoint files; default `<data dir>/audit-checkpoints`.
    pub checkpoint_dir: Option<PathBuf>,
    /// An object store container for checkpoints (`az://…`, `s3://…`, `file:///…`, `memory://`),
    /// instead of the folder; give it a time-based immutability policy.
    pub checkpoint_url: Option<String>,
    /// With the `azure-key-vault` key provider: the EC P-256 key in the vault that signs
    /// checkpoints (`ES256`).
    pub signing_key_name: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_seconds: 60,
            checkpoint_dir: None,
            checkpoint_url: None,
            signing_key_name: "conclave-audit".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub rate_limit_per_minute: u32,
    /// Sign-in attempts a minute per account and per client address.
    pub login_attempts_per_minute: u32,
    /// With Redis unreachable: let requests through (true) or refuse them with 503 (false).
    pub rate_limit_fail_open: bool,
    pub max_upload_bytes: u64,
    /// Media types documents may have (the content must match the claimed type).
    pub upload_types: Vec<String>,
    /// ClamAV's clamd (`host:port` or `unix:/path`): uploads are scanned before they are kept.
    pub clamd_address: Option<String>,
    /// The longest a scan may take before the upload is refused.
    pub scan_timeout_seconds: u64,
    /// Replies one user may have generating at once (429 beyond).
    pub max_replies_per_user: u32,
    /// Replies this server generates at once (429 beyond).
    pub max_replies_per_server: usize,
    /// A reply's lease: how long after its replica's last sign of life it is declared failed.
    pub reply_lease_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `info,conclave_store=debug`.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKindConfig {
    /// OpenAI's API or any server that copies it (OpenRouter, Ollama, vLLM, llama.cpp).
    Openai,
    Openrouter,
    Ollama,
    AzureOpenai,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKindConfig,
    pub base_url: String,
    /// The environment variable holding the key (keys are never written in the file).
    pub api_key_env: Option<String>,
    #[serde(skip)]
    pub api_key: Option<SecretString>,
    /// Azure OpenAI `api-version`.
    pub api_version: Option<String>,
    /// Where the provider processes data (e.g. `eu`), for tenants that pin regions.
    pub region: Option<String>,
    /// Model ids (Azure: deployment names) it serves; empty: ask the provider.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default = "default_provider_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

fn default_provider_timeout() -> u64 {
    60
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_retries() -> u32 {
    2
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: Profile::Dev,
            http: HttpConfig::default(),
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            oidc: OidcConfig::default(),
            keys: KeysConfig::default(),
            audit: AuditConfig::default(),
            azure: AzureAuthConfig::default(),
            limits: LimitsConfig::default(),
            redis_url: None,
            redis_ca_file: None,
            log: LogConfig::default(),
            providers: Vec::new(),
            prices: HashMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            ip_allowlist: Vec::new(),
            max_json_bytes: 1024 * 1024,
            shutdown_grace_seconds: 30,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_client_auth: None,
            mtls_required_for_api_keys: false,
            header_read_timeout_seconds: 10,
            request_timeout_seconds: 30,
            body_idle_timeout_seconds: 30,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { data_dir: PathBuf::from("./data"), database_url: None, object_store_url: None }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            signup: None,
            access_token_ttl_seconds: 15 * 60,
            refresh_token_ttl_seconds: 30 * 24 * 3600,
            session_max_hours: DEFAULT_SESSION_MAX_HOURS,
            session_idle_minutes: DEFAULT_SESSION_IDLE_MINUTES,
            cache_ttl_seconds: 5,
            password_hash_memory_kib: 19_456,
            password_hash_iterations: 2,
            allow_local_accounts_in_production: false,
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            provider: "local".into(),
            allow_local_in_production: false,
            key_vault_url: None,
            key_name: None,
            key_file: None,
            cache_seconds: 300,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_limit_per_minute: 100,
            login_attempts_per_minute: 10,
            rate_limit_fail_open: false,
            max_upload_bytes: 1 << 30,
            upload_types: conclave_core::service::documents::DEFAULT_TYPES.iter().map(|t| t.to_string()).collect(),
            clamd_address: None,
            scan_timeout_seconds: 300,
            max_replies_per_user: 4,
            max_replies_per_server: 10_000,
            reply_lease_seconds: 30,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { filter: "info".into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
}

fn env_err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Env { var, message: message.into() }
}

fn parse_env<T: std::str::FromStr>(
    env: &HashMap<String, String>,
    var: &'static str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| env_err(var, format!("'{v}' is not {what}"))),
    }
}

fn parse_bool(env: &HashMap<String, String>, var: &'static str) -> Result<Option<bool>, ConfigError> {
    match env.get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(env_err(var, format!("'{v}' is not true or false"))),
        },
    }
}

fn nets(var: &'static str, v: &str) -> Result<Vec<IpNet>, ConfigError> {
    list(v)
        .into_iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| env_err(var, format!("'{item}' is not an address or CIDR block")))
        })
        .collect()
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

impl Config {
    /// Reads the file (if any), then applies the environment.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str::<Config>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        for p in &mut config.providers {
            if let Some(var) = &p.api_key_env {
                p.api_key = env.get(var).filter(|v| !v.is_empty()).map(|v| SecretString::from(v.clone()));
            }
        }
        Ok(config)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(p) = env.get("CONCLAVE_PROFILE").map(|v| v.trim()).filter(|v| !v.is_empty()) {
            self.profile = match p {
                "dev" => Profile::Dev,
                "production" => Profile::Production,
                other => return Err(env_err("CONCLAVE_PROFILE", format!("'{other}' is not dev or production"))),
            };
        }
        if let Some(v) = parse_env(env, "CONCLAVE_LISTEN", "an address and port such as 127.0.0.1:8080")? {
            self.http.listen = v;
        }
        if let Some(v) = env.get("CONCLAVE_DATA_DIR").filter(|v| !v.is_empty()) {
            self.store.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env.get("CONCLAVE_DATABASE_URL").filter(|v| !v.is_empty()) {
            self.store.database_url = Some(v.clone());
        }
        if let Some(v) = env.get("CONCLAVE_OBJECT_STORE_URL").filter(|v| !v.is_empty()) {
            self.store.object_store_url = Some(v.clone());
        }
        if let Some(v) = env.get("CONCLAVE_CORS_ORIGINS") {
            self.http.cors_origins = list(v);
        }
        if let Some(v) = env.get("CONCLAVE_TRUSTED_PROXIES") {
            self.http.trusted_proxies = nets("CONCLAVE_TRUSTED_PROXIES", v)?;
        }
        if let Some(v) = env.get("CONCLAVE_IP_ALLOWLIST") {
            self.http.ip_allowlist = nets("CONCLAVE_IP_ALLOWLIST", v)?;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_MAX_JSON_BYTES", "a number of bytes")? {
            self.http.max_json_bytes = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_SHUTDOWN_GRACE_SECONDS", "a number of seconds")? {
            self.http.shutdown_grace_seconds = v;
        }
        for (var, slot) in [
            ("CONCLAVE_TLS_CERT_FILE", &mut self.http.tls_cert_file),
            ("CONCLAVE_TLS_KEY_FILE", &mut self.http.tls_key_file),
            ("CONCLAVE_TLS_CLIENT_CA_FILE", &mut self.http.tls_client_ca_file),
        ] {
            if let Some(v) = env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                *slot = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = env.get("CONCLAVE_TLS_CLIENT_AUTH").map(|v| v.trim()).filter(|v| !v.is_empty()) {
            self.http.tls_client_auth = Some(match v {
                "optional" => ClientAuth::Optional,
                "required" => ClientAuth::Required,
                other => {
                    return Err(env_err("CONCLAVE_TLS_CLIENT_AUTH", format!("'{other}' is not optional or required")))
                }
            });
        }
        if let Some(v) = parse_bool(env, "CONCLAVE_MTLS_REQUIRED_FOR_API_KEYS")? {
            self.http.mtls_required_for_api_keys = v;
        }
        for (var, slot) in [
            ("CONCLAVE_HEADER_READ_TIMEOUT_SECONDS", &mut self.http.header_read_timeout_seconds),
            ("CONCLAVE_REQUEST_TIMEOUT_SECONDS", &mut self.http.request_timeout_seconds),
            ("CONCLAVE_BODY_IDLE_TIMEOUT_SECONDS", &mut self.http.body_idle_timeout_seconds),
        ] {
            if let Some(v) = parse_env(env, var, "a number of seconds")? {
                *slot = v;
            }
        }
        if let Some(v) = env.get("CONCLAVE_SIGNUP").map(|v| v.trim()).filter(|v| !v.is_empty()) {
            self.auth.signup = Some(match v {
                "open" => Signup::Open,
                "closed" => Signup::Closed,
                other => return Err(env_err("CONCLAVE_SIGNUP", format!("'{other}' is not open or closed"))),
            });
        }
        if let Some(v) = parse_env(env, "CONCLAVE_ACCESS_TOKEN_TTL_SECONDS", "a number of seconds")? {
            self.auth.access_token_ttl_seconds = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_REFRESH_TOKEN_TTL_SECONDS", "a number of seconds")? {
            self.auth.refresh_token_ttl_seconds = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_SESSION_MAX_HOURS", "a number of hours")? {
            self.auth.session_max_hours = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_SESSION_IDLE_MINUTES", "a number of minutes")? {
            self.auth.session_idle_minutes = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_AUTH_CACHE_TTL_SECONDS", "a number of seconds")? {
            self.auth.cache_ttl_seconds = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_PASSWORD_HASH_MEMORY_KIB", "a number of KiB")? {
            self.auth.password_hash_memory_kib = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_PASSWORD_HASH_ITERATIONS", "a number")? {
            self.auth.password_hash_iterations = v;
        }
        if let Some(v) = parse_bool(env, "CONCLAVE_ALLOW_LOCAL_ACCOUNTS")? {
            self.auth.allow_local_accounts_in_production = v;
        }
        if let Some(v) = env.get("CONCLAVE_OIDC_SCOPES") {
            self.oidc.scopes = v.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        }
        if let Some(v) = env.get("CONCLAVE_OIDC_TENANTS") {
            self.oidc.tenants = pairs("CONCLAVE_OIDC_TENANTS", v)?;
        }
        if let Some(v) = parse_bool(env, "CONCLAVE_OIDC_AUTO_CREATE_TENANTS")? {
            self.oidc.auto_create_tenants = v;
        }
        if let Some(v) = env.get("CONCLAVE_OIDC_ROLE_CLAIMS") {
            self.oidc.role_claims = list(v);
        }
        if let Some(v) = env.get("CONCLAVE_OIDC_ROLES") {
            self.oidc.roles = pairs("CONCLAVE_OIDC_ROLES", v)?;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_OIDC_CLOCK_SKEW_SECONDS", "a number of seconds")? {
            self.oidc.clock_skew_seconds = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_OIDC_JWKS_MAX_AGE_SECONDS", "a number of seconds")? {
            self.oidc.jwks_max_age_seconds = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_OIDC_JWKS_REFETCH_SECONDS", "a number of seconds")? {
            self.oidc.jwks_refetch_seconds = v;
        }
        if let Some(v) = env.get("CONCLAVE_OIDC_CA_FILE").filter(|v| !v.is_empty()) {
            self.oidc.ca_file = Some(PathBuf::from(v));
        }
        for (var, slot) in [
            ("CONCLAVE_OIDC_ISSUER", &mut self.oidc.issuer),
            ("CONCLAVE_OIDC_AUDIENCE", &mut self.oidc.audience),
            ("CONCLAVE_OIDC_CLIENT_ID", &mut self.oidc.client_id),
            ("CONCLAVE_OIDC_REQUIRED_SCOPE", &mut self.oidc.required_scope),
            ("CONCLAVE_OIDC_TENANT_CLAIM", &mut self.oidc.tenant_claim),
            ("CONCLAVE_KEY_VAULT_URL", &mut self.keys.key_vault_url),
            ("CONCLAVE_KEY_NAME", &mut self.keys.key_name),
            ("CONCLAVE_REDIS_URL", &mut self.redis_url),
        ] {
            if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
                *slot = Some(v.clone());
            }
        }
        for (var, slot) in [
            ("CONCLAVE_DATABASE_AUTH", &mut self.azure.database_auth),
            ("CONCLAVE_OBJECT_STORE_AUTH", &mut self.azure.object_store_auth),
            ("CONCLAVE_REDIS_AUTH", &mut self.azure.redis_auth),
        ] {
            if let Some(v) = env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                *slot = match v {
                    "password" => ServiceAuth::Password,
                    "entra" => ServiceAuth::Entra,
                    other => return Err(env_err(var, format!("'{other}' is not password or entra"))),
                };
            }
        }
        if let Some(v) = env.get("CONCLAVE_REDIS_CA_FILE").filter(|v| !v.is_empty()) {
            self.redis_ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env.get("CONCLAVE_KEY_PROVIDER").filter(|v| !v.is_empty()) {
            self.keys.provider = v.clone();
        }
        if let Some(v) = env.get("CONCLAVE_KEY_FILE").filter(|v| !v.is_empty()) {
            self.keys.key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = parse_env(env, "CONCLAVE_KEY_CACHE_SECONDS", "a number of seconds")? {
            self.keys.cache_seconds = v;
        }
        if let Some(v) = parse_bool(env, "CONCLAVE_ALLOW_LOCAL_KEY")? {
            self.keys.allow_local_in_production = v;
        }
        if let Some(v) = env.get("CONCLAVE_AUDIT_SIGNING_KEY_NAME").filter(|v| !v.trim().is_empty()) {
            self.audit.signing_key_name = v.trim().to_owned();
        }
        if let Some(v) = parse_env(env, "CONCLAVE_AUDIT_CHECKPOINT_SECONDS", "a number of seconds")? {
            if v == 0 {
                return Err(env_err("CONCLAVE_AUDIT_CHECKPOINT_SECONDS", "must be at least 1".to_owned()));
            }
            self.audit.checkpoint_seconds = v;
        }
        if let Some(v) = env.get("CONCLAVE_AUDIT_CHECKPOINT_DIR").filter(|v| !v.is_empty()) {
            self.audit.checkpoint_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env.get("CONCLAVE_AUDIT_CHECKPOINT_URL").filter(|v| !v.is_empty()) {
            self.audit.checkpoint_url = Some(v.clone());
        }
        if let Some(v) = parse_env(env, "CONCLAVE_RATE_LIMIT_PER_MINUTE", "a number")? {
            self.limits.rate_limit_per_minute = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_MAX_UPLOAD_BYTES", "a number of bytes")? {
            self.limits.max_upload_bytes = v;
        }
        if let Some(v) = env.get("CONCLAVE_UPLOAD_TYPES").filter(|v| !v.trim().is_empty()) {
            let types = list(v);
            if let Some(bad) = types.iter().find(|t| !t.contains('/') || t.contains(char::is_whitespace)) {
                return Err(env_err(
                    "CONCLAVE_UPLOAD_TYPES",
                    format!("'{bad}' is not a media type such as application/pdf"),
                ));
            }
            self.limits.upload_types = types.into_iter().map(|t| t.to_ascii_lowercase()).collect();
        }
        if let Some(v) = env.get("CONCLAVE_CLAMD_ADDRESS").map(|v| v.trim()).filter(|v| !v.is_empty()) {
            crate::clamd::Clamd::new(v, Duration::from_secs(1))
                .map_err(|e| env_err("CONCLAVE_CLAMD_ADDRESS", e.to_string()))?;
            self.limits.clamd_address = Some(v.to_owned());
        }
        if let Some(v) = parse_env(env, "CONCLAVE_SCAN_TIMEOUT_SECONDS", "a number of seconds")? {
            self.limits.scan_timeout_seconds = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_LOGIN_ATTEMPTS_PER_MINUTE", "a number")? {
            self.limits.login_attempts_per_minute = v;
        }
        if let Some(v) = parse_bool(env, "CONCLAVE_RATE_LIMIT_FAIL_OPEN")? {
            self.limits.rate_limit_fail_open = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_MAX_REPLIES_PER_USER", "a number")? {
            self.limits.max_replies_per_user = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_MAX_REPLIES_PER_SERVER", "a number")? {
            self.limits.max_replies_per_server = v;
        }
        if let Some(v) = parse_env(env, "CONCLAVE_REPLY_LEASE_SECONDS", "a number of seconds")? {
            self.limits.reply_lease_seconds = v;
        }
        if let Some(v) = env.get("CONCLAVE_PRICES").filter(|v| !v.trim().is_empty()) {
            for entry in list(v) {
                let parsed = entry.rsplit_once('=').and_then(|(model, price)| {
                    let (input, output) = price.split_once(':')?;
                    Some((
                        model.trim().to_owned(),
                        conclave_core::service::usage::Price {
                            input_per_million_usd: input
                                .trim()
                                .parse()
                                .ok()
                                .filter(|v: &f64| v.is_finite() && *v >= 0.0)?,
                            output_per_million_usd: output
                                .trim()
                                .parse()
                                .ok()
                                .filter(|v: &f64| v.is_finite() && *v >= 0.0)?,
                        },
                    ))
                });
                let (model, price) = parsed.ok_or_else(|| {
                    env_err(
                        "CONCLAVE_PRICES",
                        format!("'{entry}' is not model=input:output (US dollars per million tokens)"),
                    )
                })?;
                self.prices.insert(model, price);
            }
        }
        if let Some(v) = env.get("CONCLAVE_LOG").filter(|v| !v.is_empty()) {
            self.log.filter = v.clone();
        }
        // The two stable variables define the provider named `default`.
        if let Some(base) = env.get("CONCLAVE_PROVIDER_BASE_URL").filter(|v| !v.is_empty()) {
            self.providers.retain(|p| p.name != "default");
            let kind = if base.contains(".openai.azure.com") {
                ProviderKindConfig::AzureOpenai
            } else {
                ProviderKindConfig::Openai
            };
            self.providers.insert(
                0,
                ProviderConfig {
                    name: "default".into(),
                    kind,
                    base_url: base.clone(),
                    api_key_env: Some("CONCLAVE_PROVIDER_API_KEY".into()),
                    api_key: None,
                    api_version: env.get("CONCLAVE_PROVIDER_API_VERSION").filter(|v| !v.is_empty()).cloned(),
                    region: env.get("CONCLAVE_PROVIDER_REGION").filter(|v| !v.is_empty()).cloned(),
                    models: env.get("CONCLAVE_MODELS").map(|v| list(v)).unwrap_or_default(),
                    timeout_seconds: parse_env(env, "CONCLAVE_PROVIDER_TIMEOUT_SECONDS", "a number of seconds")?
                        .unwrap_or_else(default_provider_timeout),
                    connect_timeout_seconds: default_connect_timeout(),
                    max_retries: parse_env(env, "CONCLAVE_PROVIDER_MAX_RETRIES", "a number")?
                        .unwrap_or_else(default_retries),
                },
            );
        } else if env.contains_key("CONCLAVE_MODELS") && self.providers.is_empty() {
            return Err(env_err(
                "CONCLAVE_MODELS",
                "lists models, but no provider is configured (set CONCLAVE_PROVIDER_BASE_URL)",
            ));
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.store
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.store.data_dir.join("conclave.db").display()))
    }

    /// Where checkpoints go: the object store container if one is set, else the folder.
    pub fn checkpoint_location(&self) -> String {
        self.audit.checkpoint_url.clone().unwrap_or_else(|| {
            self.audit
                .checkpoint_dir
                .clone()
                .unwrap_or_else(|| self.store.data_dir.join("audit-checkpoints"))
                .display()
                .to_string()
        })
    }

    pub fn key_file(&self) -> PathBuf {
        self.keys.key_file.clone().unwrap_or_else(|| self.store.data_dir.join("keys").join("conclave-kek.json"))
    }

    pub fn signup_open(&self) -> bool {
        match self.auth.signup {
            Some(s) => s == Signup::Open,
            None => self.profile == Profile::Dev,
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.http.shutdown_grace_seconds)
    }

    /// The refresh cookie may go without `Secure` only in `dev` on loopback.
    pub fn secure_cookies(&self) -> bool {
        !(self.profile == Profile::Dev && self.http.listen.ip().is_loopback())
    }

    /// The session limits: usable in any profile, and within NIST's AAL2 bounds in production.
    fn session_findings(&self, prod: bool, out: &mut Vec<Finding>) {
        let (hours, idle) = (self.auth.session_max_hours, self.auth.session_idle_minutes);
        let severity = if prod { Severity::Error } else { Severity::Warning };
        if hours == 0 || hours > MAX_SESSION_HOURS {
            out.push(Finding::error(
                "CONCLAVE_SESSION_MAX_HOURS",
                format!("a session's maximum lifetime must be 1 to {MAX_SESSION_HOURS} hours"),
            ));
        } else if hours > MAX_PRODUCTION_SESSION_HOURS {
            out.push(Finding {
                severity,
                variable: "CONCLAVE_SESSION_MAX_HOURS",
                message: format!("at most {MAX_PRODUCTION_SESSION_HOURS} hours in production (NIST SP 800-63B-4 AAL2)"),
            });
        }
        if idle == 0 || idle.saturating_mul(60) < self.auth.access_token_ttl_seconds {
            // The web app refreshes when its access token expires: an idle limit shorter than
            // the token would sign out people who are using it.
            out.push(Finding::error(
                "CONCLAVE_SESSION_IDLE_MINUTES",
                format!(
                    "the idle timeout must be at least the access token lifetime ({} s), or active users are signed out",
                    self.auth.access_token_ttl_seconds
                ),
            ));
        } else if idle > hours.saturating_mul(60) {
            out.push(Finding::warning(
                "CONCLAVE_SESSION_IDLE_MINUTES",
                "the idle timeout is longer than the maximum lifetime, so it never applies".into(),
            ));
        }
        if idle > MAX_PRODUCTION_SESSION_IDLE_MINUTES {
            out.push(Finding {
                severity,
                variable: "CONCLAVE_SESSION_IDLE_MINUTES",
                message: format!(
                    "at most {MAX_PRODUCTION_SESSION_IDLE_MINUTES} minutes in production (NIST SP 800-63B-4 AAL2)"
                ),
            });
        }
    }

    /// Everything unsafe or unusable about this configuration.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let prod = self.profile == Profile::Production;
        let unsafe_in_prod = |out: &mut Vec<Finding>, var: &'static str, message: String| {
            out.push(Finding {
                severity: if prod { Severity::Error } else { Severity::Warning },
                variable: var,
                message,
            });
        };

        if self.profile == Profile::Dev && !self.http.listen.ip().is_loopback() {
            out.push(Finding::error(
                "CONCLAVE_LISTEN",
                format!("profile dev serves loopback only, but {} is not a loopback address; use 127.0.0.1 or set CONCLAVE_PROFILE=production", self.http.listen),
            ));
        }
        if self.providers.is_empty() {
            if prod {
                out.push(Finding::error(
                    "CONCLAVE_PROVIDER_BASE_URL",
                    "no model provider is configured, and the built-in demo model is refused in production".into(),
                ));
            } else {
                out.push(Finding::note(
                    "CONCLAVE_PROVIDER_BASE_URL",
                    "no model provider is configured: agents answer with the built-in demo model (conclave-demo)"
                        .into(),
                ));
            }
        }
        for p in &self.providers {
            if url::Url::parse(&p.base_url).is_err() {
                out.push(Finding::error(
                    provider_var(p),
                    format!("provider '{}': base URL '{}' is not a URL", p.name, p.base_url),
                ));
            } else if p.base_url.starts_with("http://") && !is_loopback_url(&p.base_url) {
                unsafe_in_prod(
                    &mut out,
                    provider_var(p),
                    format!(
                        "provider '{}' is reached over plain HTTP; prompts and keys would cross the network in clear",
                        p.name
                    ),
                );
            }
            if p.kind == ProviderKindConfig::AzureOpenai && p.models.is_empty() {
                out.push(Finding::error(
                    provider_var(p),
                    format!(
                        "provider '{}' (Azure OpenAI) needs its deployment names in models / CONCLAVE_MODELS",
                        p.name
                    ),
                ));
            }
            if let Some(var) = &p.api_key_env {
                if p.api_key.is_none() && p.kind != ProviderKindConfig::Ollama && !is_loopback_url(&p.base_url) {
                    out.push(Finding::warning(
                        "CONCLAVE_PROVIDER_API_KEY",
                        format!("provider '{}': the key variable {var} is empty", p.name),
                    ));
                }
            }
        }
        let mut names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            out.push(Finding::error("providers", "two providers have the same name".into()));
        }
        if self.signup_open() {
            unsafe_in_prod(
                &mut out,
                "CONCLAVE_SIGNUP",
                "sign-up is open: anyone who reaches the server can create an account".into(),
            );
        }
        if self.http.cors_origins.iter().any(|o| o.trim() == "*") {
            unsafe_in_prod(
                &mut out,
                "CONCLAVE_CORS_ORIGINS",
                "a wildcard origin lets any web site call the API; list your origins".into(),
            );
        }
        if self.keys.provider == "local" {
            if prod && !self.keys.allow_local_in_production {
                out.push(Finding::error(
                    "CONCLAVE_KEY_PROVIDER",
                    "the master key is a local file; use azure-key-vault, or accept the risk with CONCLAVE_ALLOW_LOCAL_KEY=true".into(),
                ));
            } else if prod {
                out.push(Finding::warning(
                    "CONCLAVE_KEY_PROVIDER",
                    "the master key is a local file (accepted with CONCLAVE_ALLOW_LOCAL_KEY)".into(),
                ));
            }
            if prod && self.key_file().starts_with(&self.store.data_dir) {
                out.push(Finding::warning(
                    "CONCLAVE_KEY_FILE",
                    "the local key file is inside the data folder: a backup of the folder that includes it can be read; put it elsewhere or exclude keys/ from backups".into(),
                ));
            }
        } else if self.keys.provider == "azure-key-vault" {
            match self.keys.key_vault_url.as_deref().map(url::Url::parse) {
                None => out.push(Finding::error(
                    "CONCLAVE_KEY_VAULT_URL",
                    "azure-key-vault needs the vault's URL, https://<name>.vault.azure.net".into(),
                )),
                Some(Err(e)) => out.push(Finding::error("CONCLAVE_KEY_VAULT_URL", format!("not a URL: {e}"))),
                Some(Ok(u)) if u.scheme() != "https" => out.push(Finding::error(
                    "CONCLAVE_KEY_VAULT_URL",
                    "the vault must be reached over https: keys and tokens cross this connection".into(),
                )),
                Some(Ok(_)) => {}
            }
            if !self
                .keys
                .key_name
                .as_deref()
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            {
                out.push(Finding::error(
                    "CONCLAVE_KEY_NAME",
                    "azure-key-vault needs the name of the RSA-HSM key (letters, digits and dashes)".into(),
                ));
            }
        } else {
            out.push(Finding::error(
                "CONCLAVE_KEY_PROVIDER",
                format!("'{}' is not local or azure-key-vault", self.keys.provider),
            ));
        }
        if self.azure.object_store_auth == ServiceAuth::Entra
            && !self.store.object_store_url.as_deref().is_some_and(|u| {
                u.starts_with("az://")
                    || u.starts_with("azure://")
                    || u.starts_with("abfs")
                    || u.contains(".blob.core.windows.net")
            })
        {
            out.push(Finding::error(
                "CONCLAVE_OBJECT_STORE_AUTH",
                "entra sign-in applies to Azure Blob only; set CONCLAVE_OBJECT_STORE_URL=az://<container>".into(),
            ));
        }
        if self.azure.database_auth == ServiceAuth::Entra && !self.database_url().starts_with("postgres") {
            out.push(Finding::error(
                "CONCLAVE_DATABASE_AUTH",
                "entra sign-in applies to PostgreSQL only; CONCLAVE_DATABASE_URL is not a postgres:// URL".into(),
            ));
        }
        self.backend_tls_findings(prod, &mut out);
        let tls = self.http.tls_cert_file.is_some() || self.http.tls_key_file.is_some();
        if prod && !tls && self.http.trusted_proxies.is_empty() {
            out.push(Finding::error(
                "CONCLAVE_TRUSTED_PROXIES",
                "neither TLS nor a TLS-terminating proxy is configured: set CONCLAVE_TLS_CERT_FILE and CONCLAVE_TLS_KEY_FILE, or run behind a proxy and list its addresses here"
                    .into(),
            ));
        }
        if self.http.tls_cert_file.is_some() != self.http.tls_key_file.is_some() {
            let missing =
                if self.http.tls_cert_file.is_none() { "CONCLAVE_TLS_CERT_FILE" } else { "CONCLAVE_TLS_KEY_FILE" };
            out.push(Finding::error(
                missing,
                "TLS needs both CONCLAVE_TLS_CERT_FILE and CONCLAVE_TLS_KEY_FILE; only one is set".into(),
            ));
        }
        if self.http.tls_client_ca_file.is_some() && !tls {
            out.push(Finding::error(
                "CONCLAVE_TLS_CLIENT_CA_FILE",
                "client certificates need TLS on this server: set CONCLAVE_TLS_CERT_FILE and CONCLAVE_TLS_KEY_FILE"
                    .into(),
            ));
        }
        if self.http.tls_client_auth.is_some() && self.http.tls_client_ca_file.is_none() {
            out.push(Finding::error(
                "CONCLAVE_TLS_CLIENT_AUTH",
                "client authentication needs the client CA bundle: set CONCLAVE_TLS_CLIENT_CA_FILE".into(),
            ));
        }
        if self.http.mtls_required_for_api_keys && self.http.tls_client_ca_file.is_none() {
            out.push(Finding::error(
                "CONCLAVE_MTLS_REQUIRED_FOR_API_KEYS",
                "API keys cannot require client certificates without a client CA: set CONCLAVE_TLS_CLIENT_CA_FILE"
                    .into(),
            ));
        }
        for (var, seconds) in [
            ("CONCLAVE_HEADER_READ_TIMEOUT_SECONDS", self.http.header_read_timeout_seconds),
            ("CONCLAVE_REQUEST_TIMEOUT_SECONDS", self.http.request_timeout_seconds),
            ("CONCLAVE_BODY_IDLE_TIMEOUT_SECONDS", self.http.body_idle_timeout_seconds),
        ] {
            if seconds == 0 {
                out.push(Finding::error(var, "must be at least 1 second".into()));
            }
        }
        if let Some(issuer) = &self.oidc.issuer {
            self.oidc_findings(issuer, prod, &mut out);
        } else if prod && !self.auth.allow_local_accounts_in_production {
            out.push(Finding::error(
                "CONCLAVE_OIDC_ISSUER",
                "no single sign-on issuer is configured; configure OIDC, or allow local accounts with CONCLAVE_ALLOW_LOCAL_ACCOUNTS=true".into(),
            ));
        }
        let params = conclave_auth::PasswordHashingParams {
            memory_kib: self.auth.password_hash_memory_kib,
            iterations: self.auth.password_hash_iterations,
            parallelism: 1,
        };
        if params.is_weak() {
            unsafe_in_prod(
                &mut out,
                "CONCLAVE_PASSWORD_HASH_MEMORY_KIB",
                "password hashing is below OWASP's minimum (19456 KiB, 2 iterations)".into(),
            );
        }
        if self.auth.access_token_ttl_seconds == 0 || self.auth.access_token_ttl_seconds > 3600 {
            unsafe_in_prod(
                &mut out,
                "CONCLAVE_ACCESS_TOKEN_TTL_SECONDS",
                "access tokens should live between 1 s and 1 hour".into(),
            );
        }
        self.session_findings(prod, &mut out);
        if self.auth.cache_ttl_seconds > MAX_AUTH_CACHE_TTL_SECONDS {
            out.push(Finding::error(
                "CONCLAVE_AUTH_CACHE_TTL_SECONDS",
                format!(
                    "at most {MAX_AUTH_CACHE_TTL_SECONDS} s: a revocation on another replica applies only after this long"
                ),
            ));
        }
        if prod && !self.database_url().starts_with("postgres") {
            out.push(Finding::warning(
                "CONCLAVE_DATABASE_URL",
                "SQLite serves one replica only; use PostgreSQL to run more than one".into(),
            ));
        }
        if self.limits.reply_lease_seconds < 2 {
            out.push(Finding::error(
                "CONCLAVE_REPLY_LEASE_SECONDS",
                "a reply lease shorter than 2 s would fail live replies".into(),
            ));
        }
        if self.limits.rate_limit_per_minute == 0 || self.limits.login_attempts_per_minute == 0 {
            out.push(Finding::error(
                "CONCLAVE_RATE_LIMIT_PER_MINUTE",
                "rate limits must allow at least one request a minute".into(),
            ));
        }
        if prod && self.limits.clamd_address.is_none() {
            out.push(Finding::warning(
                "CONCLAVE_CLAMD_ADDRESS",
                "uploaded documents are not scanned for malware: point this at ClamAV's clamd".into(),
            ));
        }
        if self.limits.scan_timeout_seconds == 0 {
            out.push(Finding::error("CONCLAVE_SCAN_TIMEOUT_SECONDS", "a scan needs at least one second".into()));
        }
        if prod && self.redis_url.is_none() && self.database_url().starts_with("postgres") {
            out.push(Finding::warning(
                "CONCLAVE_REDIS_URL",
                "without Redis each replica keeps its own rate limits; set it so replicas share one budget".into(),
            ));
        }
        out
    }
}

impl Config {
    /// Secrets and content travel to PostgreSQL and Redis: off this machine, only over TLS in
    /// production (ASVS 12.3.3), and an Entra token never in clear anywhere.
    fn backend_tls_findings(&self, prod: bool, out: &mut Vec<Finding>) {
        if let Some(url) = self.redis_url.as_deref() {
            let parsed = url::Url::parse(url).ok();
            let tls = parsed.as_ref().is_some_and(|u| u.scheme() == "rediss");
            let local = parsed.as_ref().and_then(|u| u.host_str()).is_some_and(is_loopback_host);
            if self.azure.redis_auth == ServiceAuth::Entra && !tls {
                out.push(Finding::error(
                    "CONCLAVE_REDIS_URL",
                    "entra sign-in sends a token as the password: use rediss:// (Azure Cache for Redis listens for TLS on 6380)".into(),
                ));
            } else if prod && !tls && !local {
                out.push(Finding::error(
                    "CONCLAVE_REDIS_URL",
                    "Redis off this machine must be reached over TLS in production: use rediss://".into(),
                ));
            }
        } else if self.azure.redis_auth == ServiceAuth::Entra {
            out.push(Finding::error("CONCLAVE_REDIS_AUTH", "entra sign-in needs CONCLAVE_REDIS_URL".into()));
        }
        if self.redis_ca_file.is_some() && !self.redis_url.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
            out.push(Finding::error("CONCLAVE_REDIS_CA_FILE", "a Redis CA applies to rediss:// URLs only".into()));
        }
        let database = self.database_url();
        if prod && database.starts_with("postgres") {
            if let Ok(u) = url::Url::parse(&database) {
                let sslmode = u.query_pairs().find(|(k, _)| k == "sslmode").map(|(_, v)| v.into_owned());
                let host = u.query_pairs().find(|(k, _)| k == "host").map(|(_, v)| v.into_owned());
                // A socket folder (host=/run/postgresql) or an empty host is local too.
                let local = match (&host, u.host_str()) {
                    (Some(h), _) => h.starts_with('/') || is_loopback_host(h),
                    (None, Some(h)) => h.is_empty() || is_loopback_host(h),
                    (None, None) => true,
                };
                // `require` and `verify-ca` encrypt but would talk to anyone holding a
                // certificate (`require`: any at all): only `verify-full` checks the host name.
                if !local && sslmode.as_deref() != Some("verify-full") {
                    out.push(Finding::error(
                        "CONCLAVE_DATABASE_URL",
                        "PostgreSQL off this machine must be reached over TLS with its certificate and host name checked in production: add ?sslmode=verify-full".into(),
                    ));
                }
            }
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn provider_var(p: &ProviderConfig) -> &'static str {
    if p.name == "default" {
        "CONCLAVE_PROVIDER_BASE_URL"
    } else {
        "providers"
    }
}

fn is_loopback_url(u: &str) -> bool {
    url::Url::parse(u).ok().and_then(|u| u.host_str().map(str::to_owned)).is_some_and(|h| {
        h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Note,
    Warning,
    Error,
}

/// One line of the configuration report: what, and which variable fixes it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub severity: Severity,
    pub variable: &'static str,
    pub message: String,
}

impl Finding {
    fn error(variable: &'static str, message: String) -> Self {
        Finding { severity: Severity::Error, variable, message }
    }
    fn warning(variable: &'static str, message: String) -> Self {
        Finding { severity: Severity::Warning, variable, message }
    }
    fn note(variable: &'static str, message: String) -> Self {
        Finding { severity: Severity::Note, variable, message }
    }
}

impl Config {
    fn oidc_findings(&self, issuer: &str, prod: bool, out: &mut Vec<Finding>) {
        let oidc = &self.oidc;
        match url::Url::parse(issuer) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(_) if oidc.allows_http() && !prod => out.push(Finding::warning(
                "CONCLAVE_OIDC_ISSUER",
                "the issuer is reached over plain HTTP on this machine (development and tests only)".into(),
            )),
            _ => out.push(Finding::error(
                "CONCLAVE_OIDC_ISSUER",
                format!("'{issuer}' is not an https:// URL (plain HTTP is accepted only for a loopback issuer in dev)"),
            )),
        }
        if oidc.client_id.is_none() {
            out.push(Finding::error(
                "CONCLAVE_OIDC_CLIENT_ID",
                "single sign-on needs the SPA's client id at the issuer".into(),
            ));
        }
        if prod && oidc.audience() == oidc.client_id.as_deref() {
            out.push(Finding::warning(
                "CONCLAVE_OIDC_AUDIENCE",
                "the audience is the SPA's client id, so ID tokens are accepted as API credentials: expose an API at the issuer (e.g. api://conclave), set it here and CONCLAVE_OIDC_REQUIRED_SCOPE".into(),
            ));
        }
        if oidc.required_scope.as_deref().is_some_and(|s| s.is_empty() || s.contains(char::is_whitespace)) {
            out.push(Finding::error("CONCLAVE_OIDC_REQUIRED_SCOPE", "one scope name, without spaces".into()));
        }
        if oidc.clock_skew_seconds > MAX_OIDC_CLOCK_SKEW_SECONDS {
            out.push(Finding::error(
                "CONCLAVE_OIDC_CLOCK_SKEW_SECONDS",
                format!("a clock skew above {MAX_OIDC_CLOCK_SKEW_SECONDS} s keeps expired tokens alive"),
            ));
        }
        for (name, role) in &oidc.roles {
            if role.parse::<conclave_core::principal::Role>().is_err() {
                out.push(Finding::error(
                    "CONCLAVE_OIDC_ROLES",
                    format!("'{name}={role}': the role must be admin, auditor or member"),
                ));
            }
        }
        if oidc.tenant_claim.is_none() && (!oidc.tenants.is_empty() || oidc.auto_create_tenants) {
            out.push(Finding::error(
                "CONCLAVE_OIDC_TENANT_CLAIM",
                "tenant mappings need the claim that names the tenant (Entra ID: tid)".into(),
            ));
        }
        if let Some(path) = &oidc.ca_file {
            if std::fs::metadata(path).is_err() {
                out.push(Finding::error("CONCLAVE_OIDC_CA_FILE", format!("{} cannot be read", path.display())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn errors(c: &Config) -> Vec<&'static str> {
        c.findings().iter().filter(|f| f.severity == Severity::Error).map(|f| f.variable).collect()
    }

    #[test]
    fn dev_defaults_are_accepted() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.profile, Profile::Dev);
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
        assert!(c.signup_open());
        assert!(!c.secure_cookies());
        assert!(c.database_url().ends_with("conclave.db"));
    }

    #[test]
    fn session_limits_default_to_nist_aal2_and_are_checked() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!((c.auth.session_max_hours, c.auth.session_idle_minutes), (12, 30));
        let with = |pairs: &[(&str, &str)]| Config::load(None, &env(pairs)).unwrap();
        let c = with(&[("CONCLAVE_SESSION_MAX_HOURS", "8"), ("CONCLAVE_SESSION_IDLE_MINUTES", "20")]);
        assert_eq!((c.auth.session_max_hours, c.auth.session_idle_minutes), (8, 20));
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
        let session_errors = |pairs: &[(&str, &str)]| -> Vec<&'static str> {
            errors(&with(pairs)).into_iter().filter(|v| v.starts_with("CONCLAVE_SESSION_")).collect()
        };
        assert_eq!(session_errors(&[("CONCLAVE_SESSION_MAX_HOURS", "0")]), vec!["CONCLAVE_SESSION_MAX_HOURS"]);
        assert_eq!(session_errors(&[("CONCLAVE_SESSION_MAX_HOURS", "721")]), vec!["CONCLAVE_SESSION_MAX_HOURS"]);
        assert_eq!(session_errors(&[("CONCLAVE_SESSION_IDLE_MINUTES", "0")]), vec!["CONCLAVE_SESSION_IDLE_MINUTES"]);
        // Shorter than the access token: active users would be signed out.
        assert_eq!(session_errors(&[("CONCLAVE_SESSION_IDLE_MINUTES", "10")]), vec!["CONCLAVE_SESSION_IDLE_MINUTES"]);
        assert!(session_errors(&[
            ("CONCLAVE_SESSION_IDLE_MINUTES", "10"),
            ("CONCLAVE_ACCESS_TOKEN_TTL_SECONDS", "600")
        ])
        .is_empty());
        // Beyond NIST's AAL2 bounds: a warning in dev, refused in production.
        let long = [("CONCLAVE_SESSION_MAX_HOURS", "72"), ("CONCLAVE_SESSION_IDLE_MINUTES", "120")];
        assert!(session_errors(&long).is_empty());
        let warned: Vec<_> = with(&long)
            .findings()
            .into_iter()
            .filter(|f| f.variable.starts_with("CONCLAVE_SESSION_"))
            .map(|f| (f.severity, f.variable))
            .collect();
        assert_eq!(
            warned,
            vec![
                (Severity::Warning, "CONCLAVE_SESSION_MAX_HOURS"),
                (Severity::Warning, "CONCLAVE_SESSION_IDLE_MINUTES")
            ]
        );
        let mut prod = long.to_vec();
        prod.push(("CONCLAVE_PROFILE", "production"));
        assert_eq!(session_errors(&prod), vec!["CONCLAVE_SESSION_MAX_HOURS", "CONCLAVE_SESSION_IDLE_MINUTES"]);
        assert!(Config::load(None, &env(&[("CONCLAVE_SESSION_MAX_HOURS", "twelve")])).is_err());
    }

    #[test]
    fn azure_key_vault_needs_an_https_vault_and_a_key_name() {
        let c = Config::load(None, &env(&[("CONCLAVE_KEY_PROVIDER", "azure-key-vault")])).unwrap();
        assert_eq!(errors(&c), vec!["CONCLAVE_KEY_VAULT_URL", "CONCLAVE_KEY_NAME"]);
        let c = Config::load(
            None,
            &env(&[
                ("CONCLAVE_KEY_PROVIDER", "azure-key-vault"),
                ("CONCLAVE_KEY_VAULT_URL", "http://v.vault.azure.net"),
                ("CONCLAVE_KEY_NAME", "conclave-kek"),
            ]),
        )
        .unwrap();
        assert_eq!(errors(&c), vec!["CONCLAVE_KEY_VAULT_URL"]);
        let c = Config::load(
            None,
            &env(&[
                ("CONCLAVE_KEY_PROVIDER", "azure-key-vault"),
                ("CONCLAVE_KEY_VAULT_URL", "https://v.vault.azure.net"),
                ("CONCLAVE_KEY_NAME", "conclave-kek"),
            ]),
        )
        .unwrap();
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
    }

    #[test]
    fn entra_object_store_auth_is_for_azure_blob_only() {
        let c = Config::load(None, &env(&[("CONCLAVE_OBJECT_STORE_AUTH", "entra")])).unwrap();
        assert_eq!(errors(&c), vec!["CONCLAVE_OBJECT_STORE_AUTH"]);
        let c = Config::load(
            None,
            &env(&[("CONCLAVE_OBJECT_STORE_AUTH", "entra"), ("CONCLAVE_OBJECT_STORE_URL", "az://documents")]),
        )
        .unwrap();
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
        assert!(Config::load(None, &env(&[("CONCLAVE_OBJECT_STORE_AUTH", "token")])).is_err());
    }

    #[test]
    fn entra_database_auth_is_for_postgres_only() {
        let c = Config::load(None, &env(&[("CONCLAVE_DATABASE_AUTH", "entra")])).unwrap();
        assert_eq!(errors(&c), vec!["CONCLAVE_DATABASE_AUTH"]);
        let c = Config::load(
            None,
            &env(&[("CONCLAVE_DATABASE_AUTH", "entra"), ("CONCLAVE_DATABASE_URL", "postgres://u@db/conclave")]),
        )
        .unwrap();
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
        assert!(Config::load(None, &env(&[("CONCLAVE_DATABASE_AUTH", "kerberos")])).is_err());
    }

    #[test]
    fn production_defaults_name_every_unsafe_setting() {
        let c = Config::load(
            None,
            &env(&[("CONCLAVE_PROFILE", "production"), ("CONCLAVE_CORS_ORIGINS", "*"), ("CONCLAVE_SIGNUP", "open")]),
        )
        .unwrap();
        let e = errors(&c);
        for var in [
            "CONCLAVE_PROVIDER_BASE_URL",
            "CONCLAVE_KEY_PROVIDER",
            "CONCLAVE_TRUSTED_PROXIES",
            "CONCLAVE_OIDC_ISSUER",
            "CONCLAVE_CORS_ORIGINS",
            "CONCLAVE_SIGNUP",
        ] {
            assert!(e.contains(&var), "{var} missing from {e:?}");
        }
        assert!(c.secure_cookies());
    }

    #[test]
    fn single_sign_on_settings_are_read_and_checked() {
        let c = Config::load(
            None,
            &env(&[
                ("CONCLAVE_OIDC_ISSUER", "http://127.0.0.1:9999"),
                ("CONCLAVE_OIDC_CLIENT_ID", "spa"),
                ("CONCLAVE_OIDC_SCOPES", "openid email, api://conclave/access"),
                ("CONCLAVE_OIDC_TENANT_CLAIM", "tid"),
                ("CONCLAVE_OIDC_TENANTS", "t1=Firm, t2=@default"),
                ("CONCLAVE_OIDC_ROLES", "Admins=admin"),
            ]),
        )
        .unwrap();
        // A loopback issuer over HTTP is accepted in dev, with a warning.
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
        assert!(c.oidc.allows_http());
        assert_eq!(c.oidc.audience(), Some("spa"), "the audience defaults to the client id");
        assert_eq!(c.oidc.scopes, vec!["openid", "email", "api://conclave/access"]);
        assert_eq!(c.oidc.tenants.get("t2").map(String::as_str), Some("@default"));

        let bad = |pairs: &[(&str, &str)]| {
            let mut all =
                vec![("CONCLAVE_OIDC_ISSUER", "https://login.example/tenant/v2.0"), ("CONCLAVE_OIDC_CLIENT_ID", "spa")];
            all.extend_from_slice(pairs);
            errors(&Config::load(None, &env(&all)).unwrap())
        };
        assert!(bad(&[]).is_empty());
        assert!(bad(&[("CONCLAVE_OIDC_ISSUER", "http://login.example")]).contains(&"CONCLAVE_OIDC_ISSUER"));
        assert!(bad(&[("CONCLAVE_PROFILE", "production"), ("CONCLAVE_OIDC_ISSUER", "http://127.0.0.1:9999")])
            .contains(&"CONCLAVE_OIDC_ISSUER"));
        assert!(bad(&[("CONCLAVE_OIDC_CLOCK_SKEW_SECONDS", "301")]).contains(&"CONCLAVE_OIDC_CLOCK_SKEW_SECONDS"));
        assert!(bad(&[("CONCLAVE_AUTH_CACHE_TTL_SECONDS", "60")]).is_empty());
        assert!(bad(&[("CONCLAVE_AUTH_CACHE_TTL_SECONDS", "61")]).contains(&"CONCLAVE_AUTH_CACHE_TTL_SECONDS"));
        assert!(bad(&[("CONCLAVE_OIDC_ROLES", "x=overlord")]).contains(&"CONCLAVE_OIDC_ROLES"));
        assert!(bad(&[("CONCLAVE_OIDC_TENANTS", "t1=Firm")]).contains(&"CONCLAVE_OIDC_TENANT_CLAIM"));
        let no_client = Config::load(None, &env(&[("CONCLAVE_OIDC_ISSUER", "https://login.example")])).unwrap();
        assert!(errors(&no_client).contains(&"CONCLAVE_OIDC_CLIENT_ID"));
        assert!(Config::load(None, &env(&[("CONCLAVE_OIDC_ROLES", "no-equals")])).is_err());
    }

    #[test]
    fn tls_settings_are_read_and_checked_together() {
        let prod = [("CONCLAVE_PROFILE", "production")];
        let c = Config::load(
            None,
            &env(&[prod[0], ("CONCLAVE_TLS_CERT_FILE", "/c.pem"), ("CONCLAVE_TLS_KEY_FILE", "/k.pem")]),
        )
        .unwrap();
        assert!(!errors(&c).contains(&"CONCLAVE_TRUSTED_PROXIES"), "TLS here stands in for a proxy");
        let c = Config::load(None, &env(&[("CONCLAVE_TLS_CERT_FILE", "/c.pem")])).unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_TLS_KEY_FILE"));
        let c = Config::load(
            None,
            &env(&[("CONCLAVE_TLS_CLIENT_AUTH", "required"), ("CONCLAVE_MTLS_REQUIRED_FOR_API_KEYS", "true")]),
        )
        .unwrap();
        assert_eq!(c.http.tls_client_auth, Some(ClientAuth::Required));
        let e = errors(&c);
        assert!(e.contains(&"CONCLAVE_TLS_CLIENT_AUTH") && e.contains(&"CONCLAVE_MTLS_REQUIRED_FOR_API_KEYS"), "{e:?}");
        let c = Config::load(None, &env(&[("CONCLAVE_TLS_CLIENT_CA_FILE", "/ca.pem")])).unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_TLS_CLIENT_CA_FILE"), "a client CA without TLS");
        assert!(Config::load(None, &env(&[("CONCLAVE_TLS_CLIENT_AUTH", "sometimes")])).is_err());
        let c = Config::load(None, &env(&[("CONCLAVE_REQUEST_TIMEOUT_SECONDS", "0")])).unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_REQUEST_TIMEOUT_SECONDS"));
    }

    #[test]
    fn backends_off_this_machine_need_tls_in_production_and_entra_tokens_always() {
        let prod = ("CONCLAVE_PROFILE", "production");
        let remote_pg = ("CONCLAVE_DATABASE_URL", "postgres://conclave@db.internal:5432/conclave");
        let c = Config::load(None, &env(&[prod, remote_pg])).unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_DATABASE_URL"), "plaintext PostgreSQL across the network");
        let unchecked = ("CONCLAVE_DATABASE_URL", "postgres://conclave@db.internal/conclave?sslmode=require");
        let c = Config::load(None, &env(&[prod, unchecked])).unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_DATABASE_URL"), "TLS without certificate checks");
        for ok in [
            "postgres://conclave@db.internal/conclave?sslmode=verify-full",
            "postgres://conclave@127.0.0.1:5432/conclave",
            "postgres://conclave@[::1]/conclave",
            "postgres://conclave@localhost/conclave?host=/run/postgresql",
        ] {
            let c = Config::load(None, &env(&[prod, ("CONCLAVE_DATABASE_URL", ok)])).unwrap();
            assert!(!errors(&c).contains(&"CONCLAVE_DATABASE_URL"), "{ok}");
        }
        let c = Config::load(None, &env(&[remote_pg])).unwrap();
        assert!(!errors(&c).contains(&"CONCLAVE_DATABASE_URL"), "development is not held to it");

        let remote_redis = ("CONCLAVE_REDIS_URL", "redis://cache.internal:6379");
        assert!(errors(&Config::load(None, &env(&[prod, remote_redis])).unwrap()).contains(&"CONCLAVE_REDIS_URL"));
        let local = ("CONCLAVE_REDIS_URL", "redis://127.0.0.1:6379");
        assert!(!errors(&Config::load(None, &env(&[prod, local])).unwrap()).contains(&"CONCLAVE_REDIS_URL"));
        let entra = ("CONCLAVE_REDIS_AUTH", "entra");
        assert!(errors(&Config::load(None, &env(&[entra, local])).unwrap()).contains(&"CONCLAVE_REDIS_URL"));
        assert!(errors(&Config::load(None, &env(&[entra])).unwrap()).contains(&"CONCLAVE_REDIS_AUTH"));
        let azure = ("CONCLAVE_REDIS_URL", "rediss://oid@conclave.redis.cache.windows.net:6380");
        let c = Config::load(None, &env(&[prod, entra, azure])).unwrap();
        assert!(!errors(&c).iter().any(|v| v.starts_with("CONCLAVE_REDIS")), "{:?}", errors(&c));
        assert_eq!(c.azure.redis_auth, ServiceAuth::Entra);
        let ca = ("CONCLAVE_REDIS_CA_FILE", "/ca.pem");
        assert!(errors(&Config::load(None, &env(&[ca, local])).unwrap()).contains(&"CONCLAVE_REDIS_CA_FILE"));
        assert!(Config::load(None, &env(&[("CONCLAVE_REDIS_AUTH", "kerberos")])).is_err());
    }

    #[test]
    fn production_with_everything_set_is_accepted() {
        let c = Config::load(
            None,
            &env(&[
                ("CONCLAVE_PROFILE", "production"),
                ("CONCLAVE_PROVIDER_BASE_URL", "https://openrouter.ai/api/v1"),
                ("CONCLAVE_PROVIDER_API_KEY", "sk-test"),
                ("CONCLAVE_MODELS", "openai/gpt-4o-mini"),
                ("CONCLAVE_ALLOW_LOCAL_KEY", "true"),
                ("CONCLAVE_ALLOW_LOCAL_ACCOUNTS", "true"),
                ("CONCLAVE_TRUSTED_PROXIES", "10.0.0.0/8"),
                ("CONCLAVE_DATABASE_URL", "postgres://db/conclave?sslmode=verify-full"),
            ]),
        )
        .unwrap();
        assert!(errors(&c).is_empty(), "{:?}", c.findings());
        let warned = |c: &Config| c.findings().iter().any(|f| f.variable == "CONCLAVE_KEY_FILE");
        assert!(warned(&c), "a key file inside the data folder is pointed out in production");
        let apart = Config::load(
            None,
            &env(&[
                ("CONCLAVE_PROFILE", "production"),
                ("CONCLAVE_ALLOW_LOCAL_KEY", "true"),
                ("CONCLAVE_KEY_FILE", "/etc/conclave/kek.json"),
            ]),
        )
        .unwrap();
        assert!(!warned(&apart));
        assert_eq!(c.providers[0].models, vec!["openai/gpt-4o-mini"]);
        let priced =
            Config::load(None, &env(&[("CONCLAVE_PRICES", "openai/gpt-4o-mini=0.15:0.6, other=1:2")])).unwrap();
        assert_eq!(priced.prices["openai/gpt-4o-mini"].output_per_million_usd, 0.6);
        assert_eq!(priced.prices.len(), 2);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("CONCLAVE_PROFILE", "staging"),
            ("CONCLAVE_LISTEN", "nowhere"),
            ("CONCLAVE_SIGNUP", "maybe"),
            ("CONCLAVE_TRUSTED_PROXIES", "10.0.0.0/99"),
            ("CONCLAVE_ALLOW_LOCAL_KEY", "perhaps"),
            ("CONCLAVE_MODELS", "a,b"),
            ("CONCLAVE_PRICES", "gpt=cheap"),
        ] {
            let err = Config::load(None, &env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.starts_with(var), "{err}");
        }
    }

    #[test]
    fn dev_refuses_a_public_listener_and_plain_http_providers_are_flagged() {
        let c = Config::load(None, &env(&[("CONCLAVE_LISTEN", "0.0.0.0:8080")])).unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_LISTEN"));
        let c = Config::load(
            None,
            &env(&[("CONCLAVE_PROFILE", "production"), ("CONCLAVE_PROVIDER_BASE_URL", "http://models.internal/v1")]),
        )
        .unwrap();
        assert!(errors(&c).contains(&"CONCLAVE_PROVIDER_BASE_URL"));
        let c = Config::load(
            None,
            &env(&[("CONCLAVE_PROFILE", "production"), ("CONCLAVE_PROVIDER_BASE_URL", "http://127.0.0.1:11434/v1")]),
        )
        .unwrap();
        assert!(!errors(&c).contains(&"CONCLAVE_PROVIDER_BASE_URL"));
    }

    #[test]
    fn toml_file_then_environment() {
        let dir = std::env::temp_dir().join(format!("conclave-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("conclave.toml");
        std::fs::write(
            &path,
            r#"
profile = "dev"
[http]
listen = "127.0.0.1:9999"
[[providers]]
name = "eu"
kind = "openrouter"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "EU_KEY"
region = "eu"
models = ["mistral/mistral-large"]
"#,
        )
        .unwrap();
        let c = Config::load(Some(&path), &env(&[("CONCLAVE_LISTEN", "127.0.0.1:7000"), ("EU_KEY", "k")])).unwrap();
        assert_eq!(c.http.listen.port(), 7000);
        assert_eq!(c.providers[0].region.as_deref(), Some("eu"));
        assert!(c.providers[0].api_key.is_some());
        std::fs::write(&path, "profile = \"dev\"\nnonsense = 1\n").unwrap();
        assert!(matches!(Config::load(Some(&path), &env(&[])), Err(ConfigError::Parse { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
