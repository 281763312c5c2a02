//! Who is calling: every request runs as a [`Principal`] carrying tenant, role and scopes,
//! whatever proved its identity (a session, an API key, later an OIDC token).

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{ApiKeyId, SessionId, TenantId, UserId};

/// A user's role in their tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users, settings and library membership; reads documents only as a library member.
    Admin,
    /// Builds agents and talks to them.
    Member,
    /// A member who may also read the audit log.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "auditor" => Ok(Role::Auditor),
            _ => Err(()),
        }
    }
}

/// What an API key may be used for. A key without scopes may do what its user may do,
/// except the session-only operations (managing API keys, changing the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "agents:read")]
    AgentsRead,
    #[serde(rename = "agents:write")]
    AgentsWrite,
    #[serde(rename = "conversations:read")]
    ConversationsRead,
    #[serde(rename = "conversations:write")]
    ConversationsWrite,
    #[serde(rename = "libraries:read")]
    LibrariesRead,
    #[serde(rename = "libraries:write")]
    LibrariesWrite,
    #[serde(rename = "usage:read")]
    UsageRead,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::AgentsRead,
        Scope::AgentsWrite,
        Scope::ConversationsRead,
        Scope::ConversationsWrite,
        Scope::LibrariesRead,
        Scope::LibrariesWrite,
        Scope::UsageRead,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AgentsRead => "agents:read",
            Scope::AgentsWrite => "agents:write",
            Scope::ConversationsRead => "conversations:read",
            Scope::ConversationsWrite => "conversations:write",
            Scope::LibrariesRead => "libraries:read",
            Scope::LibrariesWrite => "libraries:write",
            Scope::UsageRead => "usage:read",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or(())
    }
}

/// How the principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Session(SessionId),
    ApiKey { id: ApiKeyId, scopes: Vec<Scope> },
}

#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
    pub credential: Credential,
    /// Set after an administrator reset the password: only the password change is allowed.
    pub must_change_password: bool,
    /// The tenant requires MFA and this user, signed in with a local password, has not enrolled
    /// yet: only enrolment is open. Worked out when the credential is verified (and cached with
    /// it), never for single sign-on users or API keys.
    pub mfa_enrollment_pending: bool,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// True unless an API key restricts itself to other scopes.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match &self.credential {
            Credential::Session(_) => true,
            Credential::ApiKey { scopes, .. } => scopes.is_empty() || scopes.contains(&scope),
        }
    }

    pub fn session_id(&self) -> Option<SessionId> {
        match self.credential {
            Credential::Session(id) => Some(id),
            Credential::ApiKey { .. } => None,
        }
    }

    pub fn actor_kind(&self) -> &'static str {
        match self.credential {
            Credential::Session(_) => "user",
            Credential::ApiKey { .. } => "api_key",
        }
    }
}

/// Facts about the request that the audit log records.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
    /// The client's `User-Agent`, shortened; recorded with a new session only.
    pub user_agent: Option<String>,
}

/// An authenticated call: who, and from where.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub meta: RequestMeta,
}

impl Caller {
    pub fn tenant(&self) -> TenantId {
        self.principal.tenant_id
    }

    pub fn user(&self) -> UserId {
        self.principal.user_id
    }
}
