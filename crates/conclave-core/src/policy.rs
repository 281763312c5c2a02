//! Who may do what, in one place, so every route (and later the retrieval path) shares it.

use crate::error::{Error, Result};
use crate::principal::{Caller, Role, Scope};
use crate::records::AgentRecord;

/// The caller may act with `scope`: not blocked by a pending password change, and not excluded
/// by its API key's scopes.
pub fn require(caller: &Caller, scope: Scope) -> Result<()> {
    if caller.principal.must_change_password {
        return Err(Error::PasswordChangeRequired);
    }
    if !caller.principal.has_scope(scope) {
        return Err(Error::Forbidden(format!("This API key lacks the '{}' scope.", scope.as_str())));
    }
    Ok(())
}

/// Managing one's own sessions: a person signed in, not an API key (a leaked key must neither
/// see where its owner is signed in nor sign them out).
pub fn require_session_user(caller: &Caller) -> Result<()> {
    if caller.principal.must_change_password {
        return Err(Error::PasswordChangeRequired);
    }
    if caller.principal.session_id().is_none() {
        return Err(Error::Forbidden("An API key cannot manage sessions; sign in instead.".into()));
    }
    Ok(())
}

/// Tenant administration: role admin, and the `admin` scope for API keys.
pub fn require_admin(caller: &Caller) -> Result<()> {
    require(caller, Scope::Admin)?;
    if caller.principal.role != Role::Admin {
        return Err(Error::Forbidden("Only administrators can do this.".into()));
    }
    Ok(())
}

/// Reading the audit log: admins and auditors.
pub fn require_auditor(caller: &Caller) -> Result<()> {
    require(caller, Scope::AuditRead)?;
    if !matches!(caller.principal.role, Role::Admin | Role::Auditor) {
        return Err(Error::Forbidden("Only administrators and auditors can read the audit log.".into()));
    }
    Ok(())
}

/// Changing or deleting an agent the caller can see: its owner, or an admin.
pub fn require_agent_editor(caller: &Caller, agent: &AgentRecord) -> Result<()> {
    require(caller, Scope::AgentsWrite)?;
    if agent.owner_id != caller.user() && !caller.principal.is_admin() {
        return Err(Error::Forbidden("Only the agent's owner or an administrator can change it.".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::*;
    use crate::principal::{Credential, Principal, RequestMeta};

    fn caller(role: Role, credential: Credential) -> Caller {
        Caller {
            principal: Principal {
                tenant_id: TenantId::new(),
                user_id: UserId::new(),
                role,
                credential,
                must_change_password: false,
                mfa_enrollment_pending: false,
            },
            meta: RequestMeta::default(),
        }
    }

    #[test]
    fn scopes_restrict_api_keys_only() {
        let session = caller(Role::Member, Credential::Session(SessionId::new()));
        assert!(require(&session, Scope::AgentsWrite).is_ok());
        let key = caller(Role::Member, Credential::ApiKey { id: ApiKeyId::new(), scopes: vec![Scope::AgentsRead] });
        assert!(require(&key, Scope::AgentsRead).is_ok());
        assert!(matches!(require(&key, Scope::AgentsWrite), Err(Error::Forbidden(_))));
        let unscoped = caller(Role::Member, Credential::ApiKey { id: ApiKeyId::new(), scopes: vec![] });
        assert!(require(&unscoped, Scope::ConversationsWrite).is_ok());
    }

    #[test]
    fn admin_needs_role_and_scope() {
        assert!(require_admin(&caller(Role::Admin, Credential::Session(SessionId::new()))).is_ok());
        assert!(require_admin(&caller(Role::Member, Credential::Session(SessionId::new()))).is_err());
        assert!(require_admin(&caller(Role::Auditor, Credential::Session(SessionId::new()))).is_err());
        let scoped = caller(Role::Admin, Credential::ApiKey { id: ApiKeyId::new(), scopes: vec![Scope::AgentsRead] });
        assert!(require_admin(&scoped).is_err());
        assert!(require_auditor(&caller(Role::Auditor, Credential::Session(SessionId::new()))).is_ok());
        assert!(require_auditor(&caller(Role::Member, Credential::Session(SessionId::new()))).is_err());
    }

    #[test]
    fn pending_password_change_blocks_everything() {
        let mut c = caller(Role::Admin, Credential::Session(SessionId::new()));
        c.principal.must_change_password = true;
        assert!(matches!(require(&c, Scope::AgentsRead), Err(Error::PasswordChangeRequired)));
        assert!(matches!(require_admin(&c), Err(Error::PasswordChangeRequired)));
    }
}
