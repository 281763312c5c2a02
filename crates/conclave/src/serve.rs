//! Wiring: the configuration becomes a store, a model catalog and the domain services, served
//! over HTTP until SIGTERM or Ctrl-C, then drained gracefully.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use conclave_auth::oidc::{OidcSettings, OidcVerifier};
use conclave_auth::PasswordHashingParams;
use conclave_core::content::{ContentCodec, PlaintextCodec};
use conclave_core::envelope::EnvelopeCodec;
use conclave_core::objects::Objects;
use conclave_core::principal::Role;
use conclave_core::provider::{ModelCatalog, ModelProvider, ProviderEntry};
use conclave_core::service::admin::AdminNewUser;
use conclave_core::service::identity::SingleSignOn;
use conclave_core::{Conclave, CoreConfig};
use conclave_llm::{DemoProvider, OpenAiCompatible, ProviderKind, ProviderSettings, DEMO_MODEL};
use conclave_server::{AppState, HttpSettings};
use conclave_store::{Database, RedisTarget, SharedRedis};

use crate::config::{Config, Profile, ProviderKindConfig, ServiceAuth, Severity};

const DATABASE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn open_database(config: &Config) -> anyhow::Result<Database> {
    let url = config.database_url();
    let context = || format!("database {}", crate::redact(&url));
    let db = match config.azure.database_auth {
        crate::config::ServiceAuth::Password => {
            Database::connect(&url, DATABASE_CONNECT_TIMEOUT).await.with_context(context)?
        }
        crate::config::ServiceAuth::Entra => database_with_entra_token(&url).await.with_context(context)?,
    };
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

fn core_config(config: &Config) -> CoreConfig {
    CoreConfig {
        signup_open: config.signup_open(),
        first_signup_is_admin: config.profile == Profile::Dev,
        access_token_ttl: Duration::from_secs(config.auth.access_token_ttl_seconds),
        refresh_token_ttl: Duration::from_secs(config.auth.refresh_token_ttl_seconds),
        session_max_lifetime: Duration::from_secs(config.auth.session_max_hours.saturating_mul(3600)),
        session_idle_timeout: Duration::from_secs(config.auth.session_idle_minutes.saturating_mul(60)),
        password_hashing: PasswordHashingParams {
            memory_kib: config.auth.password_hash_memory_kib,
            iterations: config.auth.password_hash_iterations,
            parallelism: 1,
        },
        default_tenant_name: "Default".into(),
        reply_lease: Duration::from_secs(config.limits.reply_lease_seconds),
        limits: conclave_core::ReplyLimits {
            max_replies_per_user: config.limits.max_replies_per_user,
            max_replies_per_server: config.limits.max_replies_per_server,
        },
        prices: config.prices.clone(),
        uploads: conclave_core::service::documents::UploadPolicy {
            max_bytes: config.limits.max_upload_bytes,
            allowed_types: config.limits.upload_types.clone(),
        },
        sso: None,
        auth_cache_ttl: Duration::from_secs(config.auth.cache_ttl_seconds),
        // Set by `serve` (command-line cores do not upload).
        scanner: None,
    }
}

/// Where document content goes: `CONCLAVE_OBJECT_STORE_URL`, else `objects/` in the data folder.
pub(crate) fn object_store(config: &Config) -> anyhow::Result<Objects> {
    let Some(url) = config.store.object_store_url.as_deref() else {
        return Objects::local(&config.store.data_dir.join("objects")).map_err(|e| anyhow::anyhow!("{e}"));
    };
    if let Some(path) = url.strip_prefix("file://") {
        return Objects::local(std::path::Path::new(path)).map_err(|e| anyhow::anyhow!("{e}"));
    }
    let parsed = url::Url::parse(url).context("CONCLAVE_OBJECT_STORE_URL is not a URL")?;
    let describe = format!("{}://{}{}", parsed.scheme(), parsed.host_str().unwrap_or_default(), parsed.path());
    let store = remote_store(config, url).context("CONCLAVE_OBJECT_STORE_URL")?;
    Ok(Objects::new(store, describe))
}

/// Azure Blob (`az://`, with Entra ID tokens when `CONCLAVE_OBJECT_STORE_AUTH=entra`) or S3
/// (`s3://`) at `url`, credentials from the `AZURE_*` / `AWS_*` variables: document content and
/// audit checkpoints alike.
pub(crate) fn remote_store(config: &Config, url: &str) -> anyhow::Result<Arc<dyn object_store::ObjectStore>> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    let store: Arc<dyn object_store::ObjectStore> = match parsed.scheme() {
        "az" | "azure" | "abfs" | "abfss" | "adl" | "https" if !url.contains("amazonaws.com") => {
            let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url);
            if config.azure.object_store_auth == crate::config::ServiceAuth::Entra {
                // No storage key anywhere: an Entra ID token for storage.azure.com, renewed by the credential.
                let credential = azure_credential()?.build()?;
                builder =
                    builder.with_credentials(conclave_azure::blob::BlobTokenProvider::new(credential).into_provider());
                tracing::info!("Azure Blob with Entra ID tokens");
            }
            Arc::new(builder.build().context("Azure Blob (AZURE_STORAGE_* variables)")?)
        }
        "s3" | "s3a" | "https" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env().with_url(url).build().context("S3 (AWS_* variables)")?,
        ),
        other => anyhow::bail!("'{other}://' is not supported (file://, az://, s3://)"),
    };
    Ok(store)
}

/// The OIDC issuer's verifier and the claim mappings, when an issuer is configured. The issuer
/// must answer discovery at start-up: a server that cannot check tokens does not start.
async fn single_sign_on(config: &Config) -> anyhow::Result<Option<Arc<SingleSignOn>>> {
    let oidc = &config.oidc;
    let Some(issuer) = oidc.issuer.clone() else { return Ok(None) };
    let (Some(client_id), Some(audience)) = (oidc.client_id.clone(), oidc.audience()) else {
        bail!("CONCLAVE_OIDC_CLIENT_ID is needed with CONCLAVE_OIDC_ISSUER");
    };
    let ca_pem = match &oidc.ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("CONCLAVE_OIDC_CA_FILE {}", path.display()))?),
        None => None,
    };
    let verifier = OidcVerifier::discover(OidcSettings {
        issuer: issuer.clone(),
        audience: audience.to_owned(),
        leeway: Duration::from_secs(oidc.clock_skew_seconds),
        jwks_max_age: Duration::from_secs(oidc.jwks_max_age_seconds),
        refetch_interval: Duration::from_secs(oidc.jwks_refetch_seconds),
        ca_pem,
        allow_http: oidc.allows_http() && config.profile == Profile::Dev,
        client_id: oidc.client_id.clone(),
        required_scope: oidc.required_scope.clone(),
    })
    .await
    .with_context(|| format!("the OIDC issuer {issuer}"))?;
    let roles = oidc
        .roles
        .iter()
        .map(|(name, role)| role.parse::<Role>().map(|r| (name.clone(), r)))
        .collect::<Result<_, _>>()
        .map_err(|()| anyhow::anyhow!("CONCLAVE_OIDC_ROLES: roles are admin, auditor or member"))?;
    tracing::info!(%issuer, "single sign-on: local sign-in is off");
    Ok(Some(Arc::new(SingleSignOn::new(
        Arc::new(verifier),
        issuer,
        client_id,
        oidc.scopes.clone(),
        oidc.tenant_claim.clone(),
        oidc.tenants.clone(),
        oidc.auto_create_tenants,
        oidc.role_claims.clone(),
        roles,
    ))))
}

/// Content sealed under the key hierarchy, with the tenant master keys in the configured provider.
async fn content_codec(
    config: &Config,
    store: Arc<dyn conclave_core::store::Store>,
) -> anyhow::Result<Arc<dyn ContentCodec>> {
    refuse_a_new_key_file_for_old_keys(config, store.as_ref()).await?;
    let provider = key_provider(config).await?;
    Ok(Arc::new(EnvelopeCodec::new(store, provider, Duration::from_secs(config.keys.cache_seconds))))
}

/// The local key file is created on first start; but a database that already holds wrapped
/// keys was started with a key file before, and a new one could open none of them. Stop and name
/// the file instead (a restored backup without its key file, a key file moved away).
async fn refuse_a_new_key_file_for_old_keys(
    config: &Config,
    store: &dyn conclave_core::store::Store,
) -> anyhow::Result<()> {
    let path = config.key_file();
    if config.keys.provider != "local" || path.exists() {
        return Ok(());
    }
    let tenants = store.tenants_with_keys().await.map_err(|e| anyhow::anyhow!("{e}")).context("database")?;
    if !tenants.is_empty() {
        bail!(
            "the local key file {} is missing, but the database holds keys of {} tenant(s) wrapped by a key file: \
             put that key file back (or point CONCLAVE_KEY_FILE at it); a new one would open none of them",
            path.display(),
            tenants.len()
        );
    }
    Ok(())
}

// --- Azure: Key Vault key provider, Entra ID credential (conclave-azure) ---

/// The Entra ID credential from the standard `AZURE_*` variables (managed identity by default).
fn azure_credential() -> anyhow::Result<conclave_azure::CredentialConfig> {
    let credential = conclave_azure::CredentialConfig::from_env(|name| std::env::var(name).ok())?;
    tracing::info!(credential = %credential.describe(), "Azure credential");
    Ok(credential)
}

/// A client of the vault at `url`, authenticated with the Azure credential.
pub(crate) fn key_vault_client(url: &str) -> anyhow::Result<conclave_azure::KeyVaultClient> {
    let credential = azure_credential()?;
    let mut settings = conclave_azure::KeyVaultSettings::new(url.parse().context("CONCLAVE_KEY_VAULT_URL")?);
    settings.ca_file = credential.ca_file.clone();
    Ok(conclave_azure::KeyVaultClient::new(&settings, credential.build()?)?)
}

/// The configured key provider: the local key file, or the RSA-HSM key in Azure Key Vault.
async fn key_provider(config: &Config) -> anyhow::Result<Arc<dyn conclave_crypto::KeyProvider>> {
    if config.keys.provider == "azure-key-vault" {
        let (Some(url), Some(name)) = (&config.keys.key_vault_url, &config.keys.key_name) else {
            bail!("azure-key-vault needs CONCLAVE_KEY_VAULT_URL and CONCLAVE_KEY_NAME");
        };
        let client = key_vault_client(url)?;
        let provider = conclave_azure::KeyVaultKeyProvider::new(client, name)?;
        // Not fatal: the server starts, answers 503 for sealed content and reports it in /readyz.
        if let Err(e) = conclave_crypto::KeyProvider::check(&provider).await {
            tracing::error!(error = %e, "the Key Vault key does not answer yet");
        }
        tracing::info!(vault = %url, key = %name, "master keys in Azure Key Vault");
        return Ok(Arc::new(provider));
    }
    let path = config.key_file();
    let provider = conclave_crypto::LocalKeyProvider::open(&path)
        .await
        .with_context(|| format!("the local key file {}", path.display()))?;
    if config.profile == Profile::Production {
        tracing::warn!(path = %path.display(), "the master keys are in a local file: keep it off backups and restrict who can read it");
    }
    Ok(Arc::new(provider))
}

/// Reply notices between replicas: Redis pub/sub when `CONCLAVE_REDIS_URL` is set, else the
/// database's own (PostgreSQL LISTEN/NOTIFY; in process for SQLite).
async fn reply_notices(
    redis: Option<&Arc<SharedRedis>>,
    db: &Database,
) -> anyhow::Result<Arc<dyn conclave_core::notify::Notifier>> {
    let Some(redis) = redis else { return db.notifier().await.context("reply notices") };
    let notifier = tokio::time::timeout(
        Duration::from_secs(5),
        conclave_store::RedisNotifier::start(redis.clone(), conclave_store::REDIS_CHANNEL),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Redis did not take the reply-notice subscription within 5 s"))?
    .context("reply notices through Redis")?;
    tracing::info!("reply notices shared through Redis");
    Ok(notifier)
}

/// The process's one Redis (rate limits and reply notices), when `CONCLAVE_REDIS_URL` is set:
/// signed in with the URL's credentials, or with `CONCLAVE_REDIS_AUTH=entra` as the identity's
/// object id (the URL's user, else the token's `oid` claim) with a token renewed before expiry.
async fn shared_redis(config: &Config) -> anyhow::Result<Option<Arc<SharedRedis>>> {
    use secrecy::ExposeSecret as _;
    let Some(url) = &config.redis_url else { return Ok(None) };
    let shown = crate::redact(url);
    let ca = match &config.redis_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("CONCLAVE_REDIS_CA_FILE {}", path.display()))?),
        None => None,
    };
    let target = RedisTarget::new(url, ca).context("CONCLAVE_REDIS_URL is not a Redis URL")?;
    let redis = if config.azure.redis_auth == ServiceAuth::Entra {
        let credential: Arc<dyn conclave_azure::TokenCredential> = azure_credential()?.build()?;
        let token = credential.token(conclave_azure::REDIS_SCOPE).await.context("an Entra ID token for Redis")?;
        let password = token.token.expose_secret().to_owned();
        let user = match target.username() {
            Some(user) => user.to_owned(),
            None => conclave_azure::token_object_id(&password).context(
                "CONCLAVE_REDIS_URL names no user and the token carries no oid claim: put the identity's object id in the URL (rediss://<object-id>@host:6380)",
            )?,
        };
        let redis = SharedRedis::connect(target, Some(user), Some(&password))
            .await
            .with_context(|| format!("signing in to Redis at {shown} with an Entra ID token"))?;
        let renewed = Arc::downgrade(&redis);
        conclave_azure::refresh::spawn_token_refresher(
            credential,
            conclave_azure::REDIS_SCOPE,
            password,
            conclave_azure::refresh::DEFAULT_CHECK_EVERY,
            move |token| {
                if let Some(redis) = renewed.upgrade() {
                    if let Err(e) = redis.set_password(token) {
                        tracing::error!(error = %e, "Redis: the renewed token could not be used");
                    }
                }
            },
        );
        tracing::info!("Redis sign-in with Entra ID tokens");
        redis
    } else {
        SharedRedis::connect(target, None, None).await.with_context(|| format!("cannot reach Redis at {shown}"))?
    };
    Ok(Some(redis))
}

/// `CONCLAVE_DATABASE_AUTH=entra`: PostgreSQL with an Entra ID token as the password; a task
/// puts each renewed token into the pool's connect options before the old one expires.
async fn database_with_entra_token(url: &str) -> anyhow::Result<Database> {
    use secrecy::ExposeSecret as _;
    let credential: Arc<dyn conclave_azure::TokenCredential> = azure_credential()?.build()?;
    let token = credential.token(conclave_azure::POSTGRES_SCOPE).await.context("an Entra ID token for PostgreSQL")?;
    let password = token.token.expose_secret().to_owned();
    let db = Database::connect_postgres_with_password(url, &password, DATABASE_CONNECT_TIMEOUT).await?;
    let pool = db.clone();
    conclave_azure::refresh::spawn_token_refresher(
        credential,
        conclave_azure::POSTGRES_SCOPE,
        password,
        conclave_azure::refresh::DEFAULT_CHECK_EVERY,
        move |token| {
            pool.set_postgres_password(token);
        },
    );
    tracing::info!("PostgreSQL sign-in with Entra ID tokens");
    Ok(db)
}

// --- end Azure ---

/// Shared through Redis when configured, else in this process.
fn rate_limiter(
    config: &Config,
    redis: Option<&Arc<SharedRedis>>,
) -> conclave_server::middleware::rate_limit::RateLimiter {
    use conclave_server::middleware::rate_limit::RateLimiter;
    let Some(redis) = redis else { return RateLimiter::local() };
    tracing::info!(fail_open = config.limits.rate_limit_fail_open, "rate limits shared through Redis");
    let redis = redis.clone();
    RateLimiter::redis(Arc::new(move || redis.manager()), config.limits.rate_limit_fail_open, "conclave:rl:")
}

pub async fn migrate(config: Config) -> anyhow::Result<()> {
    crate::log::init(&config.log.filter);
    let db = open_database(&config).await?;
    tracing::info!(backend = db.backend(), "migrations applied");
    db.close().await;
    Ok(())
}

/// The services on the configured database, object store and key provider, without serving:
/// for the command-line tools.
pub(crate) async fn offline_core(config: &Config) -> anyhow::Result<Arc<Conclave>> {
    core_on(config, &open_database(config).await?).await
}

/// The services on `db` (whose pool the caller may close when done with them).
pub(crate) async fn core_on(config: &Config, db: &Database) -> anyhow::Result<Arc<Conclave>> {
    let store = db.clone().into_store();
    let codec = content_codec(config, store.clone()).await?;
    Conclave::new(
        core_config(config),
        store,
        codec,
        ModelCatalog::new(),
        Arc::new(conclave_core::notify::LocalNotifier::default()),
        object_store(config)?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn admin_create(
    config: Config,
    email: String,
    display_name: String,
    password: Option<String>,
) -> anyhow::Result<()> {
    crate::log::init("warn");
    let db = open_database(&config).await?;
    let core = plain_core(&config, &db)?;
    let created = core
        .bootstrap_user(AdminNewUser { email, password, display_name, role: Role::Admin })
        .await
        .map_err(|e| match e {
            conclave_core::Error::Validation(errors) => anyhow::anyhow!(
                "{}",
                errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
            ),
            other => anyhow::anyhow!("{other}"),
        })?;
    println!("Created administrator {} ({}).", created.user.email, created.user.id);
    if let Some(temporary) = created.temporary_password {
        println!("Temporary password (shown once; it must be changed at first sign-in): {temporary}");
    }
    db.close().await;
    Ok(())
}

/// The domain services for a command-line task (no models, no content keys).
pub(crate) fn plain_core(config: &Config, db: &Database) -> anyhow::Result<Arc<Conclave>> {
    Conclave::new(
        core_config(config),
        db.clone().into_store(),
        Arc::new(PlaintextCodec),
        ModelCatalog::new(),
        Arc::new(conclave_core::notify::LocalNotifier::default()),
        Objects::in_memory(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Every configured provider and the models it serves; the demo model in `dev` when none is.
async fn catalog(config: &Config) -> anyhow::Result<ModelCatalog> {
    let mut catalog = ModelCatalog::new();
    if config.providers.is_empty() {
        if config.profile == Profile::Production {
            bail!("no model provider is configured (CONCLAVE_PROVIDER_BASE_URL), and the demo model is refused in production");
        }
        let demo: Arc<dyn ModelProvider> = Arc::new(DemoProvider::new(Duration::from_millis(15)));
        catalog.add(DEMO_MODEL, ProviderEntry { name: "demo".into(), region: None, client: demo });
        tracing::warn!("no model provider configured: agents answer with the built-in demo model {DEMO_MODEL}");
        return Ok(catalog);
    }
    for p in &config.providers {
        let base_url = url::Url::parse(&p.base_url).with_context(|| format!("provider {}: base URL", p.name))?;
        let client = OpenAiCompatible::new(ProviderSettings {
            kind: match p.kind {
                ProviderKindConfig::AzureOpenai => ProviderKind::AzureOpenAi,
                _ => ProviderKind::OpenAi,
            },
            base_url,
            api_key: p.api_key.clone(),
            api_version: p.api_version.clone(),
            connect_timeout: Duration::from_secs(p.connect_timeout_seconds),
            idle_timeout: Duration::from_secs(p.timeout_seconds),
            max_retries: p.max_retries,
        })
        .map_err(|e| anyhow::anyhow!("provider {}: {e}", p.name))?;
        let client: Arc<dyn ModelProvider> = Arc::new(client);
        let entry = ProviderEntry { name: p.name.clone(), region: p.region.clone(), client: client.clone() };
        let models = if p.models.is_empty() {
            match tokio::time::timeout(Duration::from_secs(10), client.list_models()).await {
                Ok(Ok(models)) => models,
                Ok(Err(e)) => {
                    tracing::error!(provider = %p.name, error = %e, "cannot list the provider's models; set CONCLAVE_MODELS to name them");
                    Vec::new()
                }
                Err(_) => {
                    tracing::error!(provider = %p.name, "listing the provider's models timed out; set CONCLAVE_MODELS to name them");
                    Vec::new()
                }
            }
        } else {
            p.models.clone()
        };
        for model in models {
            catalog.add(model, entry.clone());
        }
    }
    Ok(catalog)
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::log::init(&config.log.filter);
    let findings = config.findings();
    for f in &findings {
        match f.severity {
            Severity::Error => tracing::error!(variable = f.variable, "{}", f.message),
            Severity::Warning => tracing::warn!(variable = f.variable, "{}", f.message),
            Severity::Note => tracing::info!(variable = f.variable, "{}", f.message),
        }
    }
    let blocking: Vec<_> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    if !blocking.is_empty() {
        bail!(
            "refusing to start: {} (run `conclave check-config` for the full report)",
            blocking.iter().map(|f| format!("{}: {}", f.variable, f.message)).collect::<Vec<_>>().join("; ")
        );
    }

    let db = open_database(&config).await?;
    let catalog = catalog(&config).await?;
    let redis = shared_redis(&config).await?;
    let notifier = reply_notices(redis.as_ref(), &db).await?;
    let store = db.clone().into_store();
    let codec = content_codec(&config, store.clone()).await?;
    let objects = object_store(&config)?;
    let mut core_config = core_config(&config);
    core_config.sso = single_sign_on(&config).await?;
    if let Some(address) = &config.limits.clamd_address {
        let clamd = crate::clamd::Clamd::new(address, Duration::from_secs(config.limits.scan_timeout_seconds))?;
        // Not fatal: uploads are refused (503) while clamd does not answer.
        match clamd.ping().await {
            Ok(()) => tracing::info!(clamd = %address, "uploads are scanned for malware"),
            Err(e) => {
                tracing::error!(clamd = %address, error = %e, "clamd does not answer; uploads are refused until it does")
            }
        }
        core_config.scanner = Some(Arc::new(clamd));
    }
    let core =
        Conclave::new(core_config, store, codec, catalog, notifier, objects).map_err(|e| anyhow::anyhow!("{e}"))?;
    core.store()
        .default_tenant(&core.config().default_tenant_name)
        .await
        .map_err(|e| anyhow::anyhow!("preparing the default tenant: {e}"))?;
    crate::audit_cli::start_checkpoints(&config, &core).await?;
    core.start_background();

    let state = AppState {
        core: core.clone(),
        http: Arc::new(HttpSettings {
            secure_cookies: config.secure_cookies(),
            trusted_proxies: config.http.trusted_proxies.clone(),
            max_json_bytes: config.http.max_json_bytes,
            cors_origins: config.http.cors_origins.clone(),
            hsts: config.profile == Profile::Production,
            rate_limit_per_minute: config.limits.rate_limit_per_minute,
            login_attempts_per_minute: config.limits.login_attempts_per_minute,
            ip_allowlist: config.http.ip_allowlist.clone(),
            limits: conclave_server::middleware::limits::RouteLimits {
                max_upload_bytes: config.limits.max_upload_bytes,
                request_timeout: Duration::from_secs(config.http.request_timeout_seconds),
                body_idle_timeout: Duration::from_secs(config.http.body_idle_timeout_seconds),
            },
            mtls_required_for_api_keys: config.http.mtls_required_for_api_keys,
        }),
        limiter: Arc::new(rate_limiter(&config, redis.as_ref())),
    };
    let app = conclave_server::app(state);
    let tls = crate::tls::setup(&config.http)?;
    if let Some(tls) = &tls {
        tls.watch()?;
    }
    let tcp = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let addr = tcp.local_addr()?;
    tracing::info!(
        target: crate::log::LIFECYCLE,
        addr = %addr,
        tls = tls.is_some(),
        client_auth = tls.as_ref().and_then(|t| t.client_auth).map(|a| if a == crate::config::ClientAuth::Required { "required" } else { "optional" }),
        profile = if config.profile == Profile::Dev { "dev" } else { "production" },
        database = db.backend(),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );

    let listener = crate::listener::Listener {
        tcp,
        tls,
        header_read_timeout: Duration::from_secs(config.http.header_read_timeout_seconds),
    };
    let stop = async {
        shutdown_signal().await;
        tracing::info!(
            grace_seconds = config.http.shutdown_grace_seconds,
            "shutting down: finishing in-flight requests"
        );
    };
    listener.serve(app, stop, config.shutdown_grace()).await;
    let running = core.live_replies();
    if running > 0 {
        tracing::info!(running, "letting running replies finish");
    }
    let stopped = core.drain(config.shutdown_grace()).await;
    if stopped > 0 {
        tracing::warn!(
            stopped,
            "replies still running at the end of the grace period were stored as failed with their text so far"
        );
    }
    // The last events before shutdown get their checkpoint too.
    if let Err(e) = core.write_checkpoints().await {
        tracing::error!(error = %e, "the final audit checkpoints could not be written");
    }
    db.close().await;
    tracing::info!(target: crate::log::LIFECYCLE, "stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
