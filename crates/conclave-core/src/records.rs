//! Rows as the store keeps them. Content fields are [`Sealed`]; the services open them into the
//! views the API returns (`views.rs`).

use time::OffsetDateTime;

use crate::content::Sealed;
use crate::ids::*;
use crate::principal::{Role, Scope};
use crate::settings::TenantSettings;

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub settings: TenantSettings,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct User {
    pub tenant_id: TenantId,
    pub id: UserId,
    /// Lower-cased.
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    pub must_change_password: bool,
    /// Single sign-on tokens issued (`iat`) before this are refused: set when the user's
    /// sessions are ended, since an issuer's JWT cannot be revoked one by one.
    pub tokens_valid_after: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    /// The role asked for; the store makes the tenant's very first user an admin when
    /// `first_user_becomes_admin` is set.
    pub role: Role,
    pub first_user_becomes_admin: bool,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
}

/// A user with what sign-in needs.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub user: User,
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub tenant_id: TenantId,
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub key: ApiKey,
    pub secret_hash: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }
}

/// An access or refresh token of a session, stored as a hash of its secret.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub tenant_id: TenantId,
    pub id: TokenId,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub kind: TokenKind,
    pub secret_hash: Vec<u8>,
    pub expires_at: OffsetDateTime,
    /// Refresh tokens: when it was exchanged. Presenting it again is reuse.
    pub used_at: Option<OffsetDateTime>,
    /// The session was revoked (logout, reuse detected, password change).
    pub session_revoked: bool,
    /// The limits of the session the token belongs to (read with the token; when storing
    /// tokens these are not written).
    pub session: SessionTimes,
}

/// The times that bound a session: its absolute end, and its last use for the idle limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    pub created_at: OffsetDateTime,
    /// Set at sign-in from the maximum lifetime then in force; never moved.
    pub expires_at: OffsetDateTime,
    /// Sign-in, then each refresh.
    pub last_used_at: OffsetDateTime,
}

/// Why a session ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Not refreshed within the idle timeout.
    Idle,
    /// Past its absolute lifetime.
    Lifetime,
}

/// Which sessions are alive at `now`: before their stored expiry, created after
/// `created_since` (the maximum lifetime in force now, which may be shorter than the one at
/// sign-in) and used after `used_since` (the idle timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCutoffs {
    pub now: OffsetDateTime,
    pub created_since: OffsetDateTime,
    pub used_since: OffsetDateTime,
}

impl SessionCutoffs {
    pub fn at(now: OffsetDateTime, max_lifetime: std::time::Duration, idle_timeout: std::time::Duration) -> Self {
        SessionCutoffs { now, created_since: now - max_lifetime, used_since: now - idle_timeout }
    }

    /// Why a session with these times is over, if it is; the absolute limit is told first.
    pub fn ended(&self, t: &SessionTimes) -> Option<SessionEnd> {
        if t.expires_at <= self.now || t.created_at <= self.created_since {
            Some(SessionEnd::Lifetime)
        } else if t.last_used_at <= self.used_since {
            Some(SessionEnd::Idle)
        } else {
            None
        }
    }
}

/// A new session, as sign-in records it.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub user_id: UserId,
    pub times: SessionTimes,
    /// The `User-Agent` the sign-in came with (shortened), to tell sessions apart in the list.
    pub user_agent: Option<String>,
    /// The client address of the sign-in.
    pub ip: Option<String>,
}

/// A session as its user's list shows it.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub tenant_id: TenantId,
    pub id: SessionId,
    pub user_id: UserId,
    pub times: SessionTimes,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// What an incoming credential id resolves to, from the global lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialRef {
    ApiKey(TenantId),
    Token(TenantId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Only the owner sees it.
    Private,
    /// Everyone in the tenant sees and uses it; only the owner and admins change it.
    Tenant,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Tenant => "tenant",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub tenant_id: TenantId,
    pub id: AgentId,
    pub owner_id: UserId,
    pub name: Sealed,
    pub description: Option<Sealed>,
    pub instructions: Sealed,
    pub model: String,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub library_ids: Vec<LibraryId>,
    pub visibility: Visibility,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct ConversationRecord {
    pub tenant_id: TenantId,
    pub id: ConversationId,
    pub owner_id: UserId,
    pub agent_id: AgentId,
    pub title: Option<Sealed>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

impl MessageRole {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Streaming,
    Complete,
    Cancelled,
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Streaming => "streaming",
            MessageStatus::Complete => "complete",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Failed => "failed",
        }
    }
}

/// Token counts of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub tenant_id: TenantId,
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub role: MessageRole,
    pub content: Sealed,
    pub status: MessageStatus,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    /// For a failed reply: why, in words for the user.
    pub error: Option<String>,
    /// For an assistant message: the user message it answers.
    pub reply_to: Option<MessageId>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// How a reply ended, as stored.
#[derive(Debug, Clone)]
pub struct ReplyOutcome {
    pub content: Sealed,
    pub status: MessageStatus,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// An audit event before the store gives it its per-tenant sequence number.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub tenant_id: TenantId,
    pub id: AuditEventId,
    pub at: OffsetDateTime,
    pub actor_id: Option<UserId>,
    pub actor_kind: &'static str,
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<String>,
    pub outcome: Outcome,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// A stored audit event, as read back.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// SHA-256 over the previous event's hash and this event (see [`audit_hash`]).
    pub hash: Option<Vec<u8>>,
    pub tenant_id: TenantId,
    pub seq: i64,
    pub id: AuditEventId,
    pub at: OffsetDateTime,
    pub actor_id: Option<UserId>,
    pub actor_kind: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: Outcome,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    Conversation,
    Gateway,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Conversation => "conversation",
            UsageSource::Gateway => "gateway",
        }
    }
}

/// The tokens and estimated cost of one model call.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub tenant_id: TenantId,
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub api_key_id: Option<ApiKeyId>,
    pub source: UsageSource,
    pub message_id: Option<MessageId>,
    pub model: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// The provider reported no usage; the counts are estimated.
    pub estimated: bool,
    /// Millionths of a US dollar, from the configured price table (0 when unpriced).
    pub cost_micro_usd: i64,
    pub at: OffsetDateTime,
}

/// Sums over some usage records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micro_usd: i64,
    pub requests: i64,
}

/// The chain link of an audit event: SHA-256 of the previous event's hash (32 zero bytes for
/// the first) followed by a canonical JSON array of the event's fields in a fixed order
/// (objects in `detail` with sorted keys). Both the writer and every verifier use this.
pub fn audit_hash(prev: &[u8], e: &AuditEvent) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let micros = i64::try_from(e.at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX);
    let canonical = serde_json::json!([
        e.seq,
        e.id.to_string(),
        micros,
        e.actor_id.map(|a| a.to_string()),
        e.actor_kind,
        e.action,
        e.resource_type,
        e.resource_id,
        e.outcome.as_str(),
        e.ip,
        e.request_id,
        e.detail,
    ]);
    let mut h = Sha256::new();
    h.update(prev);
    h.update(serde_json::to_vec(&canonical).unwrap_or_default());
    h.finalize().into()
}

pub use conclave_crypto::SignatureAlgorithm;

/// A signed statement "the tenant's audit log had `seq` events and its head hash was `head` at
/// `at`", written by the checkpoint task to the database and to an append-only sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    /// Format version of [`signed_bytes`](Self::signed_bytes) (1).
    pub version: u32,
    pub tenant_id: TenantId,
    pub seq: i64,
    /// The hash of event `seq` (32 bytes).
    pub head: Vec<u8>,
    /// Microsecond precision, like every stored time.
    pub at: OffsetDateTime,
    pub key_id: String,
    pub algorithm: SignatureAlgorithm,
    pub signature: Vec<u8>,
}

impl AuditCheckpoint {
    pub const VERSION: u32 = 1;

    /// The bytes the signature covers: UTF-8 text, one `name=value` per line, in this order and
    /// with a final newline, so an auditor can rebuild them with a shell and check the signature
    /// with `openssl pkeyutl -verify`:
    ///
    /// ```text
    /// conclave-audit-checkpoint
    /// version=1
    /// tenant=<uuid, lower-case hyphenated>
    /// seq=<decimal>
    /// head=<64 lower-case hex digits>
    /// at=<unix time in microseconds, decimal>
    /// key_id=<key id>
    /// algorithm=<Ed25519 | ES256>
    /// ```
    pub fn signed_bytes(&self) -> Vec<u8> {
        let micros = self.at.unix_timestamp_nanos() / 1_000;
        let algorithm = self.algorithm.as_str();
        // A key id with a line break could make two different checkpoints sign the same bytes.
        let key_id: String = self.key_id.chars().filter(|c| !c.is_control()).collect();
        format!(
            "conclave-audit-checkpoint\nversion={}\ntenant={}\nseq={}\nhead={}\nat={micros}\nkey_id={key_id}\nalgorithm={algorithm}\n",
            self.version,
            self.tenant_id.0.hyphenated(),
            self.seq,
            hex(&self.head),
        )
        .into_bytes()
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<&NewAuditEvent> for AuditEvent {
    fn from(e: &NewAuditEvent) -> Self {
        AuditEvent {
            hash: None,
            tenant_id: e.tenant_id,
            seq: 0,
            id: e.id,
            at: e.at,
            actor_id: e.actor_id,
            actor_kind: e.actor_kind.to_owned(),
            action: e.action.to_owned(),
            resource_type: e.resource_type.to_owned(),
            resource_id: e.resource_id.clone(),
            outcome: e.outcome,
            ip: e.ip.clone(),
            request_id: e.request_id.clone(),
            detail: e.detail.clone(),
        }
    }
}

/// A user's TOTP enrolment.
#[derive(Debug, Clone)]
pub struct MfaRecord {
    /// The base32 secret, sealed under the tenant key and bound to the user.
    pub secret: crate::content::Sealed,
    /// False while the enrolment waits for its first code.
    pub enabled: bool,
    /// The last TOTP time step accepted.
    pub last_step: Option<i64>,
    /// Recovery codes not used yet.
    pub recovery_codes_left: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sessions_end_at_their_absolute_or_idle_limit_whichever_comes_first() {
        let signed_in = crate::clock::now();
        let minutes = |m: i64| time::Duration::minutes(m);
        let times =
            SessionTimes { created_at: signed_in, expires_at: signed_in + minutes(12 * 60), last_used_at: signed_in };
        let cut = |now, max_hours: u64, idle_minutes: u64| {
            SessionCutoffs::at(now, Duration::from_secs(max_hours * 3600), Duration::from_secs(idle_minutes * 60))
        };
        assert_eq!(cut(signed_in + minutes(29), 12, 30).ended(&times), None);
        assert_eq!(cut(signed_in + minutes(30), 12, 30).ended(&times), Some(SessionEnd::Idle));
        let used = SessionTimes { last_used_at: signed_in + minutes(11 * 60 + 50), ..times };
        assert_eq!(cut(signed_in + minutes(11 * 60 + 59), 12, 30).ended(&used), None);
        assert_eq!(cut(signed_in + minutes(12 * 60), 12, 30).ended(&used), Some(SessionEnd::Lifetime));
        // A maximum lowered after sign-in applies to sessions already running.
        assert_eq!(
            cut(signed_in + minutes(61), 1, 30).ended(&SessionTimes { last_used_at: signed_in + minutes(60), ..times }),
            Some(SessionEnd::Lifetime)
        );
        // Both over: the absolute limit is the one told.
        assert_eq!(cut(signed_in + minutes(13 * 60), 12, 30).ended(&times), Some(SessionEnd::Lifetime));
    }
}
