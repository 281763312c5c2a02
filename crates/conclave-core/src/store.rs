//! The persistence the domain needs, as one trait. Every call names its tenant (and, where it
//! applies, the user it acts for): a query that forgets the tenant cannot be written.
//! `conclave-store` implements it over SQLite and PostgreSQL.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::content::Sealed;
use crate::error::StoreError;
use crate::ids::*;
use crate::libraries::{KeyStore, LibraryStore};
use crate::page::{Page, PageRequest};
use crate::principal::Role;
use crate::records::*;
use crate::settings::TenantSettings;

pub type StoreResult<T> = Result<T, StoreError>;

/// Which audit events to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub after_seq: i64,
    pub limit: u32,
    pub actor_id: Option<UserId>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

impl AuditFilter {
    pub fn after(after_seq: i64, limit: u32) -> Self {
        AuditFilter { after_seq, limit, ..Default::default() }
    }
}

/// A replica's hold on a reply it is generating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The replica (one id per process).
    pub owner: uuid::Uuid,
    pub expires_at: OffsetDateTime,
}

/// What saving a partial reply learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialSaved {
    /// False when the reply ended or another replica took it over: stop writing.
    pub still_owned: bool,
    pub cancel_requested: bool,
}

/// One reply's text so far, to save with others in one transaction.
#[derive(Debug, Clone)]
pub struct PartialSave {
    pub tenant: TenantId,
    pub id: MessageId,
    pub content: crate::content::Sealed,
    pub lease: Lease,
}

/// What posting a message needs from the store, read in one query: the owner's conversation,
/// its agent (if the owner may still use it), the replies being generated in the owner's
/// conversations, whether the conversation holds messages yet, and its wrapped key.
#[derive(Debug, Clone)]
pub struct ReplyContext {
    pub conversation: ConversationRecord,
    /// `None` when the agent was deleted or is no longer visible to the owner.
    pub agent: Option<AgentRecord>,
    /// As [`Store::count_streaming`] counts them.
    pub streaming: i64,
    pub has_messages: bool,
    /// The conversation's key, wrapped; `None` until its first sealed content.
    pub wrapped_key: Option<Vec<u8>>,
}

/// Constraint names the domain turns into 409s.
pub mod constraints {
    pub const USER_EMAIL_UNIQUE: &str = "user_emails_pkey";
    pub const IDENTITY_UNIQUE: &str = "user_identities_pkey";
}

#[async_trait]
pub trait Store: LibraryStore + KeyStore + Send + Sync + 'static {
    /// Answers when the database does.
    async fn ping(&self) -> StoreResult<()>;

    // --- tenants --------------------------------------------------------------------------
    /// The tenant local sign-ups join, created on first use.
    async fn default_tenant(&self, name: &str) -> StoreResult<Tenant>;
    /// A further tenant (OIDC tenants and tests; local sign-ups use the default one).
    async fn create_tenant(&self, name: &str) -> StoreResult<Tenant>;
    async fn get_tenant(&self, tenant: TenantId) -> StoreResult<Tenant>;
    async fn update_tenant(&self, tenant: TenantId, name: &str, settings: &TenantSettings) -> StoreResult<Tenant>;

    // --- users ----------------------------------------------------------------------------
    /// Creates a user and its global email entry in one transaction. The first user ever created
    /// in the tenant becomes admin when `first_user_becomes_admin` is set.
    async fn create_user(&self, tenant: TenantId, user: NewUser) -> StoreResult<User>;
    /// Global lookup by lower-cased email, for sign-in.
    async fn find_login(&self, email: &str) -> StoreResult<Option<(TenantId, LoginRecord)>>;
    async fn get_login(&self, tenant: TenantId, user: UserId) -> StoreResult<LoginRecord>;
    async fn get_user(&self, tenant: TenantId, user: UserId) -> StoreResult<User>;
    async fn list_users(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Page<User>>;
    /// Applies the patch unless it would leave the tenant without an active admin
    /// (then `StoreError::Constraint("last_admin")`).
    async fn update_user(&self, tenant: TenantId, user: UserId, patch: &UserPatch) -> StoreResult<User>;
    async fn set_password(&self, tenant: TenantId, user: UserId, hash: &str, must_change: bool) -> StoreResult<()>;
    /// Deletes the user, their conversations, private agents, API keys and sessions; their
    /// tenant-visible agents pass to `heir`.
    async fn delete_user(&self, tenant: TenantId, user: UserId, heir: UserId) -> StoreResult<()>;

    // --- identities and MFA ----------------------------------------------------------------
    /// The user an issuer's subject signed in as before (global lookup).
    async fn find_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<(TenantId, UserId)>>;
    /// Creates the user (as [`Store::create_user`]) and links the issuer's subject to it, in one
    /// transaction. Of two concurrent first sign-ins of one subject, one gets
    /// `StoreError::Constraint(constraints::IDENTITY_UNIQUE)`.
    async fn provision_identity(
        &self,
        tenant: TenantId,
        user: NewUser,
        issuer: &str,
        subject: &str,
    ) -> StoreResult<User>;
    /// Brings a single-sign-on user's email, name and role in line with the issuer's claims.
    /// A taken email gives `StoreError::Constraint(constraints::USER_EMAIL_UNIQUE)`; removing the
    /// tenant's last active admin gives `StoreError::Constraint("last_admin")`.
    async fn update_identity_profile(
        &self,
        tenant: TenantId,
        user: UserId,
        email: &str,
        display_name: &str,
        role: Role,
    ) -> StoreResult<User>;
    /// The Conclave tenant an issuer's tenant claim value stands for.
    async fn find_sso_tenant(&self, issuer: &str, external_id: &str) -> StoreResult<Option<TenantId>>;
    /// Creates a tenant for an issuer's tenant claim value, or returns the one a concurrent
    /// sign-in created first.
    async fn create_sso_tenant(&self, issuer: &str, external_id: &str, name: &str) -> StoreResult<TenantId>;

    /// The user's TOTP enrolment, pending or enabled.
    async fn get_mfa(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<MfaRecord>>;
    /// Starts (or restarts) an enrolment: a new secret, not enabled yet. Refused with
    /// `StoreError::Constraint("mfa_enabled")` while MFA is on.
    async fn put_pending_mfa(&self, tenant: TenantId, user: UserId, secret: &Sealed) -> StoreResult<()>;
    /// Turns a pending enrolment on, with the confirming code's step as the last one used and
    /// these recovery code hashes (replacing any). False when nothing was pending.
    async fn enable_mfa(&self, tenant: TenantId, user: UserId, step: i64, recovery: &[Vec<u8>]) -> StoreResult<bool>;
    /// Records `step` as used if it is later than the last one: false for a replayed code.
    async fn use_totp_step(&self, tenant: TenantId, user: UserId, step: i64) -> StoreResult<bool>;
    /// Marks an unused recovery code used: false when there is none with this hash.
    async fn use_recovery_code(&self, tenant: TenantId, user: UserId, hash: &[u8]) -> StoreResult<bool>;
    async fn replace_recovery_codes(&self, tenant: TenantId, user: UserId, hashes: &[Vec<u8>]) -> StoreResult<()>;
    /// Removes the enrolment and the recovery codes; false when there was none.
    async fn delete_mfa(&self, tenant: TenantId, user: UserId) -> StoreResult<bool>;

    // --- sessions and tokens --------------------------------------------------------------
    /// Where a credential id lives (global lookup).
    async fn find_credential(&self, id: uuid::Uuid) -> StoreResult<Option<CredentialRef>>;
    /// Stores a session (sign-in) with its first tokens.
    async fn create_session(&self, tenant: TenantId, session: &NewSession, tokens: &[TokenRecord]) -> StoreResult<()>;
    /// The token with its session's state (revoked, times).
    async fn get_token(&self, tenant: TenantId, id: TokenId) -> StoreResult<TokenRecord>;
    /// Marks a refresh token used and stores its successors, atomically: of two concurrent
    /// exchanges of one token, exactly one succeeds; the other gets `Ok(false)`. `at` becomes
    /// the session's last use (the idle timeout counts from it).
    async fn rotate_refresh(
        &self,
        tenant: TenantId,
        used: TokenId,
        at: OffsetDateTime,
        successors: &[TokenRecord],
    ) -> StoreResult<bool>;
    async fn revoke_session(&self, tenant: TenantId, session: SessionId) -> StoreResult<()>;
    /// Revokes one session of `user`: false when the user has no such unrevoked session
    /// (another user's session is never touched).
    async fn revoke_own_session(&self, tenant: TenantId, user: UserId, session: SessionId) -> StoreResult<bool>;
    /// Revokes every session of the user but `keep`; returns how many were revoked.
    async fn revoke_user_sessions(&self, tenant: TenantId, user: UserId, keep: Option<SessionId>) -> StoreResult<u64>;
    /// The user's sessions that are alive by `cutoffs` and not revoked, newest first.
    async fn list_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        cutoffs: SessionCutoffs,
        page: PageRequest,
    ) -> StoreResult<Page<SessionRecord>>;
    /// Refuses the user's single sign-on tokens issued before `at`; never moves the cut-off back.
    async fn set_tokens_valid_after(&self, tenant: TenantId, user: UserId, at: OffsetDateTime) -> StoreResult<()>;
    /// In one transaction: ends every session of the tenant but `keep`, and moves every user's
    /// single sign-on cut-off to `at` but `except`'s. Returns (users in the tenant, sessions
    /// ended).
    async fn revoke_tenant_sessions(
        &self,
        tenant: TenantId,
        except: UserId,
        keep: Option<SessionId>,
        at: OffsetDateTime,
    ) -> StoreResult<(u64, u64)>;

    // --- API keys -------------------------------------------------------------------------
    async fn create_api_key(&self, record: &ApiKeyRecord) -> StoreResult<()>;
    async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<ApiKeyRecord>;
    async fn list_api_keys(&self, tenant: TenantId, user: UserId, page: PageRequest) -> StoreResult<Page<ApiKey>>;
    async fn delete_api_key(&self, tenant: TenantId, user: UserId, id: ApiKeyId) -> StoreResult<()>;
    async fn touch_api_key(&self, tenant: TenantId, id: ApiKeyId, at: OffsetDateTime) -> StoreResult<()>;

    // --- agents ---------------------------------------------------------------------------
    async fn create_agent(&self, agent: &AgentRecord) -> StoreResult<()>;
    /// The agent if `viewer` may see it (owner, or visibility tenant).
    async fn get_agent(&self, tenant: TenantId, viewer: UserId, id: AgentId) -> StoreResult<AgentRecord>;
    /// Agents `viewer` may see, newest first.
    async fn list_agents(&self, tenant: TenantId, viewer: UserId, page: PageRequest) -> StoreResult<Page<AgentRecord>>;
    /// Agents owned by `owner`, newest first.
    async fn list_owned_agents(
        &self,
        tenant: TenantId,
        owner: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>>;
    async fn update_agent(&self, agent: &AgentRecord) -> StoreResult<()>;
    async fn delete_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<()>;

    // --- conversations and messages -------------------------------------------------------
    async fn create_conversation(&self, conversation: &ConversationRecord) -> StoreResult<()>;
    /// The conversation if `owner` owns it.
    async fn get_conversation(
        &self,
        tenant: TenantId,
        owner: UserId,
        id: ConversationId,
    ) -> StoreResult<ConversationRecord>;
    /// The owner's conversations, most recently active first.
    async fn list_conversations(
        &self,
        tenant: TenantId,
        owner: UserId,
        page: PageRequest,
    ) -> StoreResult<Page<ConversationRecord>>;
    async fn update_conversation_title(
        &self,
        tenant: TenantId,
        owner: UserId,
        id: ConversationId,
        title: Option<&crate::content::Sealed>,
    ) -> StoreResult<()>;
    async fn delete_conversation(&self, tenant: TenantId, owner: UserId, id: ConversationId) -> StoreResult<()>;
    /// The conversation (if `owner` owns it) and what a new reply to it needs to know.
    async fn reply_context(
        &self,
        tenant: TenantId,
        owner: UserId,
        conversation: ConversationId,
    ) -> StoreResult<ReplyContext>;
    /// Stores a user message (absent when regenerating) and the assistant message in state
    /// `streaming` that answers it, holding `lease`, in one transaction, and marks the
    /// conversation active, giving it `title` when one is given.
    async fn insert_exchange(
        &self,
        user: Option<&MessageRecord>,
        reply: &MessageRecord,
        lease: Lease,
        title: Option<&crate::content::Sealed>,
    ) -> StoreResult<()>;
    /// Saves the text so far of a reply this replica owns and renews its lease. Tells whether the
    /// reply is still this replica's to write and whether a cancel was requested.
    async fn save_partial(
        &self,
        tenant: TenantId,
        id: MessageId,
        content: &crate::content::Sealed,
        lease: Lease,
    ) -> StoreResult<PartialSaved>;
    /// [`save_partial`](Self::save_partial) for several replies at once (each at most once):
    /// one statement and one commit for the many replies a busy replica is generating. The
    /// answers are in the order given.
    async fn save_partials(&self, saves: &[PartialSave]) -> StoreResult<Vec<PartialSaved>>;
    /// Asks whichever replica owns a streaming reply to stop it. `Ok(false)` if it is not streaming.
    async fn request_cancel(&self, tenant: TenantId, conversation: ConversationId, id: MessageId) -> StoreResult<bool>;
    /// Marks every streaming reply whose lease expired before `now` as failed (its replica died),
    /// keeping the text saved so far. Returns how many.
    async fn expire_leases(&self, now: OffsetDateTime, error: &str) -> StoreResult<u64>;
    /// Replies being generated in the owner's conversations, across replicas.
    async fn count_streaming(&self, tenant: TenantId, owner: UserId) -> StoreResult<i64>;
    /// Messages of a conversation, oldest first.
    async fn list_messages(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        page: PageRequest,
    ) -> StoreResult<Page<MessageRecord>>;
    async fn get_message(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        id: MessageId,
    ) -> StoreResult<MessageRecord>;
    /// Stores the end of a reply that is still `streaming`; `Ok(false)` if it had already ended.
    async fn finish_reply(&self, tenant: TenantId, id: MessageId, outcome: &ReplyOutcome) -> StoreResult<bool>;

    // --- content keys (stored wrapped) --------------------------------------------------
    async fn tenant_key(&self, tenant: TenantId) -> StoreResult<Option<Vec<u8>>>;
    async fn conversation_key(&self, tenant: TenantId, conversation: ConversationId) -> StoreResult<Option<Vec<u8>>>;
    // (storing them, with the master-key version: `KeyStore`)

    // --- usage ----------------------------------------------------------------------------
    async fn record_usage(&self, usage: &UsageRecord) -> StoreResult<()>;
    /// Sums of the tenant's usage (or one user's) in `[from, to)`.
    async fn usage_totals(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<UsageTotals>;
    /// The records themselves, oldest first, for reports.
    async fn usage_records(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<UsageRecord>>;

    // --- audit ----------------------------------------------------------------------------
    /// Appends an event, giving it the tenant's next sequence number.
    async fn append_audit(&self, event: &NewAuditEvent) -> StoreResult<i64>;
    /// The tenant's last sequence number and the hash of its newest event.
    async fn audit_head(&self, tenant: TenantId) -> StoreResult<(i64, Option<Vec<u8>>)>;
    /// Events after `filter.after_seq`, in sequence order, that match the filter.
    async fn list_audit(&self, tenant: TenantId, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;

    // --- audit checkpoints ----------------------------------------------------------------
    /// Every tenant's audit head: (tenant, last sequence number, hash of the newest event).
    async fn audit_heads(&self) -> StoreResult<Vec<(TenantId, i64, Option<Vec<u8>>)>>;
    /// Records a checkpoint; `false` if the tenant already has one at that sequence number.
    async fn append_checkpoint(&self, checkpoint: &AuditCheckpoint) -> StoreResult<bool>;
    /// The tenant's checkpoints with `seq > after_seq`, oldest first, at most `limit`.
    async fn list_checkpoints(&self, tenant: TenantId, after_seq: i64, limit: u32)
        -> StoreResult<Vec<AuditCheckpoint>>;
    /// The tenant's newest checkpoint.
    async fn latest_checkpoint(&self, tenant: TenantId) -> StoreResult<Option<AuditCheckpoint>>;

    // --- gateway calls: usage and audit together ----------------------------
    /// Appends audit events, each with its usage row when it has one, in order, in one
    /// transaction (the ends of gateway calls, and events gathered from concurrent requests);
    /// each event's sequence number and hash are assigned exactly as by `append_audit`. All or
    /// nothing.
    async fn append_audit_with_usage(&self, calls: &[(NewAuditEvent, Option<UsageRecord>)]) -> StoreResult<()>;
}
