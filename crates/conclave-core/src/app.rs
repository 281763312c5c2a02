//! [`Conclave`]: the domain services behind every route, wired to a store, a content codec and
//! the model catalog. The binary builds one and hands it to the HTTP layer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use conclave_auth::{PasswordHasher, PasswordHashingParams};
use tokio_util::task::TaskTracker;

use crate::content::ContentCodec;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::live::ReplyHub;
use crate::notify::{Notice, Notifier};
use crate::principal::{Caller, RequestMeta};
use crate::provider::ModelCatalog;
use crate::records::{NewAuditEvent, Outcome, UsageRecord};
use crate::store::Store;

/// How old a cached tenant may be.
pub const TENANT_CACHE: Duration = Duration::from_secs(2);

/// Stored as the error of a reply whose server died while generating it.
pub const ORPHANED: &str = "the server generating this reply stopped before it was complete; the text so far was kept";

/// The domain's settings, taken from the binary's configuration.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Later sign-ups are accepted (the first account of a fresh install always is, in `dev`).
    pub signup_open: bool,
    /// `dev`: the first sign-up becomes the tenant's admin. `production`: the first admin is
    /// created with `conclave admin create`, so nobody races for it over the network.
    pub first_signup_is_admin: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// A local session ends this long after sign-in, however active (the absolute lifetime).
    pub session_max_lifetime: Duration,
    /// A local session that has not been refreshed for this long ends (the idle timeout).
    pub session_idle_timeout: Duration,
    pub password_hashing: PasswordHashingParams,
    pub default_tenant_name: String,
    /// How long a reply's lease lasts without renewal; a reply whose replica died is marked
    /// failed this long after its last save.
    pub reply_lease: Duration,
    pub limits: ReplyLimits,
    /// Model id -> price, for the estimated cost of usage.
    pub prices: std::collections::HashMap<String, crate::service::usage::Price>,
    /// Sizes and types of documents.
    pub uploads: crate::service::documents::UploadPolicy,
    /// Single sign-on: bearer JWTs from this issuer; local sign-up, login, refresh and logout
    /// are then switched off.
    pub sso: Option<Arc<crate::service::identity::SingleSignOn>>,
    /// How long a verified access token or API key is trusted without a database lookup (see
    /// [`crate::auth_cache`]); zero looks every call up.
    pub auth_cache_ttl: Duration,
    /// Uploaded documents are scanned by this before they become readable (none: not scanned).
    pub scanner: Option<Arc<dyn crate::scan::Scanner>>,
}

/// Bounds on concurrent replies, answered with 429 beyond them.
#[derive(Debug, Clone)]
pub struct ReplyLimits {
    pub max_replies_per_user: u32,
    pub max_replies_per_server: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self { max_replies_per_user: 4, max_replies_per_server: 10_000 }
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            signup_open: true,
            first_signup_is_admin: true,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_lifetime: Duration::from_secs(12 * 3600),
            session_idle_timeout: Duration::from_secs(30 * 60),
            password_hashing: PasswordHashingParams::default(),
            default_tenant_name: "Default".into(),
            reply_lease: Duration::from_secs(30),
            limits: ReplyLimits::default(),
            prices: Default::default(),
            uploads: Default::default(),
            sso: None,
            auth_cache_ttl: Duration::from_secs(5),
            scanner: None,
        }
    }
}

pub struct Conclave {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) codec: Arc<dyn ContentCodec>,
    pub(crate) catalog: RwLock<ModelCatalog>,
    pub(crate) config: CoreConfig,
    pub(crate) hasher: PasswordHasher,
    /// Password hashes running at once: each holds `memory_kib` and a core, so a flood of
    /// sign-ins queues here instead of exhausting memory (ASVS 15.2.2).
    hash_slots: Arc<tokio::sync::Semaphore>,
    /// Replies run as detached tasks; shutdown waits for them.
    pub(crate) replies: TaskTracker,
    pub(crate) hub: ReplyHub,
    pub(crate) notifier: Arc<dyn Notifier>,
    /// Encrypted document content.
    pub(crate) objects: crate::objects::Objects,
    /// This service itself, for work that must outlive the request that started it.
    pub(crate) me: std::sync::Weak<Conclave>,
    /// Tenants read recently, with when: settings are consulted on every call (IP allow-list,
    /// models, budgets), changed rarely.
    tenants: std::sync::Mutex<std::collections::HashMap<TenantId, (crate::records::Tenant, std::time::Instant)>>,
    /// This process, as the owner of reply leases.
    pub(crate) replica: uuid::Uuid,
    /// Signs and writes audit checkpoints, when configured.
    checkpointer: std::sync::OnceLock<Arc<crate::checkpoint::Checkpointer>>,
    /// Audit events that could not be stored, since start.
    audit_failures: std::sync::atomic::AtomicU64,
    /// The last audit append failed (cleared by the next one that succeeds): readiness fails.
    pub(crate) audit_unwritable: std::sync::atomic::AtomicBool,
    /// Verified bearer credentials, briefly.
    pub(crate) credentials: crate::auth_cache::CredentialCache,
    /// Ends of gateway calls (usage and audit), written in batches by one task.
    pub(crate) gateway_records: crate::service::gateway::RecordQueue,
    /// Partial saves of the replies being generated, written in batches by one task.
    pub(crate) partial_saves: crate::service::partial_saves::PartialSaveQueue,
}

impl Conclave {
    pub fn new(
        config: CoreConfig,
        store: Arc<dyn Store>,
        codec: Arc<dyn ContentCodec>,
        catalog: ModelCatalog,
        notifier: Arc<dyn Notifier>,
        objects: crate::objects::Objects,
    ) -> Result<Arc<Self>> {
        let hasher = PasswordHasher::new(config.password_hashing).map_err(Error::internal)?;
        let credentials = crate::auth_cache::CredentialCache::new(config.auth_cache_ttl);
        Ok(Arc::new_cyclic(|me| Self {
            objects,
            me: me.clone(),
            store,
            codec,
            catalog: RwLock::new(catalog),
            config,
            hasher,
            hash_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
            )),
            replies: TaskTracker::new(),
            hub: ReplyHub::default(),
            notifier,
            tenants: Default::default(),
            credentials,
            gateway_records: Default::default(),
            partial_saves: Default::default(),
            replica: uuid::Uuid::new_v4(),
            checkpointer: Default::default(),
            audit_failures: Default::default(),
            audit_unwritable: Default::default(),
        }))
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn catalog(&self) -> ModelCatalog {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the model catalog (after a provider's model list was fetched again).
    pub fn set_catalog(&self, catalog: ModelCatalog) {
        if let Ok(mut c) = self.catalog.write() {
            *c = catalog;
        }
    }

    /// The tenant, from a cache of at most `TENANT_CACHE` age (a change made through this
    /// process is seen at once; one made on another replica within that time).
    pub async fn tenant(&self, id: TenantId) -> Result<crate::records::Tenant> {
        if let Some((t, at)) = self.tenants.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            if at.elapsed() < TENANT_CACHE {
                return Ok(t.clone());
            }
        }
        let t = self.store.get_tenant(id).await?;
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (t.clone(), std::time::Instant::now()));
        Ok(t)
    }

    pub(crate) fn forget_tenant(&self, id: TenantId) {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Refuses a caller whose address the tenant's IP allow-list does not cover (an empty list
    /// allows every address). The refusal is audited.
    pub async fn check_tenant_address(&self, caller: &Caller) -> Result<()> {
        let tenant = self.tenant(caller.tenant()).await?;
        let list = &tenant.settings.ip_allowlist;
        if list.is_empty() || caller.meta.ip.is_some_and(|ip| list.iter().any(|net| net.contains(&ip))) {
            return Ok(());
        }
        self.audit_by(
            caller,
            AuditRecord::new("auth.ip_denied", "tenant", caller.tenant()).outcome(crate::records::Outcome::Denied),
        )
        .await;
        Err(Error::Forbidden("Your network address is not on your organisation's allow-list.".into()))
    }

    /// Readiness: the database answers.
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await.map_err(Error::from)
    }

    /// Readiness of the audit log: `false` while the last attempt to store an event failed.
    pub fn audit_writable(&self) -> bool {
        !self.audit_unwritable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Audit events that could not be stored since this process started.
    pub fn audit_failures(&self) -> u64 {
        self.audit_failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns on signed audit checkpoints (before [`start_background`](Self::start_background)).
    pub fn set_checkpointer(&self, checkpointer: crate::checkpoint::Checkpointer) {
        if self.checkpointer.set(Arc::new(checkpointer)).is_err() {
            tracing::warn!("audit checkpoints were already configured");
        }
    }

    pub fn checkpointer(&self) -> Option<&Arc<crate::checkpoint::Checkpointer>> {
        self.checkpointer.get()
    }

    /// Writes a checkpoint now for every tenant whose log moved (the periodic task does this
    /// every interval; the binary calls it once more at shutdown). Returns how many were written.
    pub async fn write_checkpoints(&self) -> Result<usize> {
        match self.checkpointer.get() {
            Some(c) => c.run_once(self.store.as_ref()).await,
            None => Ok(0),
        }
    }

    /// Readiness of the object store holding document content.
    pub async fn objects_ready(&self) -> Result<()> {
        self.objects.ping().await
    }

    /// Readiness of the key service (the KMS holding the master key).
    pub async fn keys_ready(&self) -> Result<()> {
        self.codec.ready().await
    }

    /// Waits up to `grace` for running replies to finish; the ones still running then are
    /// stopped and stored as failed with their text so far. Returns how many were stopped.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.replies.close();
        if tokio::time::timeout(grace, self.replies.wait()).await.is_ok() {
            return 0;
        }
        let stopped = self.hub.len();
        self.hub.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.replies.wait()).await;
        stopped
    }

    /// Replies being generated by this process.
    pub fn live_replies(&self) -> usize {
        self.hub.len()
    }

    /// The background work of a serving process: the lease sweeper, audit checkpoints, the
    /// orphan-object sweep, and acting on cancel notices for the replies this process generates.
    pub fn start_background(self: &Arc<Self>) {
        self.start_lease_sweeper();
        self.start_checkpoints();
        self.start_orphan_sweep();
        let this = Arc::downgrade(self);
        let mut notices = self.notifier.subscribe();
        tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    Ok(Notice::Cancel { message }) => {
                        let Some(core) = this.upgrade() else { return };
                        if let Some(live) = core.hub.get_any(message) {
                            live.cancel.cancel();
                        }
                    }
                    Ok(Notice::Progress { .. }) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Writes audit checkpoints every configured interval, until the process ends.
    fn start_checkpoints(self: &Arc<Self>) {
        let Some(every) = self.checkpointer.get().map(|c| c.every) else { return };
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(core) = this.upgrade() else { return };
                match core.write_checkpoints().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(tenants = n, "audit checkpoints written"),
                    Err(e) => tracing::error!(error = %e, "audit checkpoints could not be written"),
                }
            }
        });
    }

    /// Marks replies whose replica died (expired lease) as failed, now and then periodically,
    /// until the process ends.
    fn start_lease_sweeper(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let every = (self.config.reply_lease / 2).max(Duration::from_millis(200));
        tokio::spawn(async move {
            loop {
                let Some(core) = this.upgrade() else { return };
                match core.store.expire_leases(crate::clock::now(), ORPHANED).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(replies = n, "marked replies failed: their server stopped while generating them")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not sweep expired reply leases"),
                }
                drop(core);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Runs `f` on the blocking pool (Argon2 and other CPU-heavy work never blocks the runtime).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&PasswordHasher) -> T + Send + 'static,
    ) -> Result<T> {
        let slot = tokio::time::timeout(HASH_QUEUE_WAIT, self.hash_slots.clone().acquire_owned())
            .await
            .map_err(|_| Error::Unavailable {
                service: "password checks",
                detail: "The server is busy checking passwords; try again in a moment.".into(),
            })?
            .map_err(Error::internal)?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || {
            let out = f(&hasher);
            drop(slot);
            out
        })
        .await
        .map_err(Error::internal)
    }
}

/// How long a password check waits for a free slot before answering 503.
const HASH_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// What an audit event is about.
pub(crate) struct AuditRecord<'a> {
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<serde_json::Value>,
    pub actor: Option<&'a Caller>,
    /// Who acted when there is no caller (default `anonymous`), e.g. `command_line`.
    pub actor_kind: Option<&'static str>,
}

impl<'a> AuditRecord<'a> {
    pub fn new(action: &'static str, resource_type: &'static str, resource_id: impl ToString) -> Self {
        Self {
            action,
            resource_type,
            resource_id: Some(resource_id.to_string()),
            outcome: Outcome::Success,
            detail: None,
            actor: None,
            actor_kind: None,
        }
    }

    pub fn by(mut self, caller: &'a Caller) -> Self {
        self.actor = Some(caller);
        self
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl Conclave {
    /// The one audit hook every state change, sign-in and denial goes through. Returns once the
    /// event is stored. Appended directly: through the gateway's single batch writer, a burst
    /// of thousands of posts queued behind it (bench/RESULTS.md, "Streaming relay").
    pub(crate) async fn audit(&self, tenant: TenantId, meta: &RequestMeta, record: AuditRecord<'_>) {
        self.append_audit_event(&Self::audit_event(tenant, meta, record), None).await;
    }

    /// The event [`Self::audit`] would append, for appending later with
    /// [`Self::append_audit_event`] (e.g. together with a gateway call's usage).
    pub(crate) fn audit_event(tenant: TenantId, meta: &RequestMeta, record: AuditRecord<'_>) -> NewAuditEvent {
        NewAuditEvent {
            tenant_id: tenant,
            id: crate::ids::AuditEventId::new(),
            at: crate::clock::now(),
            actor_id: record.actor.map(|c| c.user()),
            actor_kind: record.actor.map_or(record.actor_kind.unwrap_or("anonymous"), |c| c.principal.actor_kind()),
            action: record.action,
            resource_type: record.resource_type,
            resource_id: record.resource_id,
            outcome: record.outcome,
            ip: meta.ip.map(|ip| ip.to_string()),
            request_id: meta.request_id.clone(),
            detail: record.detail,
        }
    }

    /// Appends an audit event, with a usage record in the same transaction when given (if that
    /// fails, the usage is still recorded on its own, so budgets keep counting).
    pub(crate) async fn append_audit_event(&self, event: &NewAuditEvent, usage: Option<&UsageRecord>) {
        let result = match usage {
            Some(u) => self.store.append_audit_with_usage(&[(event.clone(), Some(u.clone()))]).await,
            None => self.store.append_audit(event).await.map(|_| ()),
        };
        use std::sync::atomic::Ordering;
        match result {
            Ok(_) => self.audit_unwritable.store(false, Ordering::Relaxed),
            Err(e) => {
                // The change itself is already made; an unrecorded change must not go unnoticed:
                // counted, logged with the request id, and readiness fails until a write succeeds.
                let failures = self.audit_failures.fetch_add(1, Ordering::Relaxed) + 1;
                self.audit_unwritable.store(true, Ordering::Relaxed);
                tracing::error!(
                    action = event.action,
                    request_id = event.request_id.as_deref().unwrap_or("-"),
                    tenant = %event.tenant_id,
                    failures,
                    error = %e,
                    "audit event could not be stored"
                );
                if let Some(u) = usage {
                    if let Err(e) = self.store.record_usage(u).await {
                        tracing::error!(error = %e, model = u.model, "could not record usage");
                    }
                }
            }
        }
    }

    /// Passes a policy check's result through, auditing a refusal (403: the caller is known but
    /// not allowed) as `action` (`<what>.denied`) with outcome `denied`. A 404 for something the
    /// caller cannot see is not audited: it reveals nothing and would only cost writes.
    pub(crate) async fn permit(
        &self,
        caller: &Caller,
        check: Result<()>,
        action: &'static str,
        resource_type: &'static str,
        resource_id: Option<String>,
    ) -> Result<()> {
        match check {
            Err(e @ (Error::Forbidden(_) | Error::PasswordChangeRequired)) => {
                Err(self.deny(caller, e, action, resource_type, resource_id).await)
            }
            other => other,
        }
    }

    /// Audits a refusal as `action` (outcome `denied`, the reason in `detail`) and returns it.
    pub(crate) async fn deny(
        &self,
        caller: &Caller,
        refusal: Error,
        action: &'static str,
        resource_type: &'static str,
        resource_id: Option<String>,
    ) -> Error {
        let reason = match &refusal {
            Error::Forbidden(reason) => reason.clone(),
            Error::PasswordChangeRequired => "password change required".to_owned(),
            other => other.to_string(),
        };
        let mut record = AuditRecord::new(action, resource_type, "")
            .outcome(Outcome::Denied)
            .detail(serde_json::json!({ "reason": reason }));
        record.resource_id = resource_id;
        self.audit_by(caller, record).await;
        refusal
    }

    pub(crate) async fn audit_by(&self, caller: &Caller, record: AuditRecord<'_>) {
        self.audit(caller.tenant(), &caller.meta, record.by(caller)).await
    }
}
