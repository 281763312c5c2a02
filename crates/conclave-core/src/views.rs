//! What the API returns: records with their content opened, and nothing secret.

use serde::Serialize;
use time::OffsetDateTime;

use crate::ids::*;
use crate::principal::{Role, Scope};
use crate::records::{MessageRole, MessageStatus, Usage, User, Visibility};
use crate::settings::TenantSettings;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub tenant_id: TenantId,
    /// An administrator set a temporary password: change it before anything else.
    pub must_change_password: bool,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            tenant_id: u.tenant_id,
            must_change_password: u.must_change_password,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

/// A successful sign-in, sign-up or refresh. The refresh token travels separately, in a cookie.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuthView {
    pub user: UserView,
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub id: ApiKeyId,
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A new API key: `key` is shown this once and never again.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKeyView {
    #[serde(flatten)]
    pub api_key: ApiKeyView,
    pub key: String,
}

/// A user created by an administrator; `temporary_password` is present (once) when the
/// administrator did not choose one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedUserView {
    #[serde(flatten)]
    pub user: UserView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary_password: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    pub id: TenantId,
    pub name: String,
    pub settings: TenantSettings,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: AgentId,
    pub owner_id: UserId,
    pub name: String,
    pub description: Option<String>,
    pub instructions: String,
    pub model: String,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub library_ids: Vec<LibraryId>,
    pub visibility: Visibility,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    pub id: ConversationId,
    pub agent_id: AgentId,
    pub title: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub role: MessageRole,
    pub content: String,
    pub status: MessageStatus,
    pub model: Option<String>,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    /// Why a failed reply failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The answer to a non-streamed message post.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExchangeView {
    pub user_message: MessageView,
    pub assistant_message: MessageView,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelView {
    pub id: String,
    /// The configured provider's name.
    pub provider: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationExport {
    #[serde(flatten)]
    pub conversation: ConversationView,
    pub messages: Vec<MessageView>,
}

/// Everything Conclave holds about the caller (GDPR access and portability).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExportView {
    #[serde(with = "time::serde::rfc3339")]
    pub exported_at: OffsetDateTime,
    pub user: UserView,
    pub agents: Vec<AgentView>,
    pub conversations: Vec<ConversationExport>,
    pub api_keys: Vec<ApiKeyView>,
}
