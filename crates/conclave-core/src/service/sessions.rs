//! Session management: a user's list of where they are signed in, ending one session or all
//! the others, an administrator ending every session of a user, and the single sign-on cut-off
//! that goes with ending sessions (an issuer's JWT cannot be revoked one by one, so tokens issued
//! before the cut-off are refused). Every change is audited and empties the credential cache.

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::{AuditRecord, Conclave};
use crate::error::{Error, Result};
use crate::ids::{SessionId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use crate::policy;
use crate::principal::Caller;
use crate::records::SessionRecord;

/// One signed-in session of the caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: SessionId,
    /// The sign-in.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The sign-in or the latest refresh; the session ends once it was not used for the idle
    /// timeout.
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    /// The absolute end, however active the session is.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The session making this call.
    pub current: bool,
    /// The `User-Agent` of the sign-in, shortened.
    pub user_agent: Option<String>,
    /// The client address of the sign-in.
    pub ip: Option<String>,
}

/// What ending sessions did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionsRevokedView {
    /// Local sessions ended.
    pub revoked_sessions: u64,
    /// Single sign-on tokens issued before this time are refused from now on.
    #[serde(with = "time::serde::rfc3339")]
    pub tokens_valid_after: OffsetDateTime,
}

/// What ending every session of the tenant did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantSessionsRevokedView {
    /// Users of the tenant (each had every session ended, the caller all but the current one).
    pub users: u64,
    /// Local sessions ended (the caller's current one is kept).
    pub revoked_sessions: u64,
    /// Single sign-on tokens issued before this time are refused from now on (but the caller's).
    #[serde(with = "time::serde::rfc3339")]
    pub tokens_valid_after: OffsetDateTime,
}

impl Conclave {
    /// The caller's live sessions (not revoked, within both limits), newest first.
    pub async fn list_my_sessions(&self, caller: &Caller, page: PageRequest) -> Result<Page<SessionView>> {
        self.permit(caller, policy::require_session_user(caller), "session.list.denied", "session", None).await?;
        let cutoffs = self.session_cutoffs();
        let current = caller.principal.session_id();
        let max = self.config.session_max_lifetime;
        let sessions = self.store.list_sessions(caller.tenant(), caller.user(), cutoffs, page).await?;
        Ok(sessions.map(|s: SessionRecord| SessionView {
            id: s.id,
            created_at: s.times.created_at,
            last_used_at: s.times.last_used_at,
            // A maximum lowered since sign-in applies to running sessions too.
            expires_at: s.times.expires_at.min(s.times.created_at + max),
            current: current == Some(s.id),
            user_agent: s.user_agent,
            ip: s.ip,
        }))
    }

    /// Ends one of the caller's sessions (the current one too: that is signing out). Another
    /// user's session, or one already ended, is not found.
    pub async fn revoke_my_session(&self, caller: &Caller, id: SessionId) -> Result<()> {
        self.permit(
            caller,
            policy::require_session_user(caller),
            "session.revoke.denied",
            "session",
            Some(id.to_string()),
        )
        .await?;
        let revoked = self.store.revoke_own_session(caller.tenant(), caller.user(), id).await;
        // Whatever the outcome, nothing cached may outlive a revocation attempt's effect.
        self.credentials.invalidate();
        if !revoked? {
            return Err(Error::NotFound("session"));
        }
        self.audit_by(caller, AuditRecord::new("session.revoked", "session", id)).await;
        Ok(())
    }

    /// Ends every session of the caller but the current one, and refuses their single sign-on
    /// tokens issued until now. A single sign-on caller's own token is one of them: Conclave
    /// cannot tell it from a stolen copy, so the web app gets a fresh one from the issuer.
    pub async fn revoke_my_other_sessions(&self, caller: &Caller) -> Result<SessionsRevokedView> {
        self.permit(caller, policy::require_session_user(caller), "session.revoke_others.denied", "user", None).await?;
        let ended = self.end_sessions(caller, caller.user(), caller.principal.session_id()).await?;
        self.audit_by(
            caller,
            AuditRecord::new("session.revoked_others", "user", caller.user())
                .detail(serde_json::json!({"revoked_sessions": ended.revoked_sessions})),
        )
        .await;
        Ok(ended)
    }

    /// An administrator ends every session of a user of their tenant (a lost laptop, a
    /// departure) and refuses the user's single sign-on tokens issued until now. API keys are
    /// separate credentials and are not touched.
    pub async fn admin_revoke_sessions(&self, caller: &Caller, id: UserId) -> Result<SessionsRevokedView> {
        self.permit(
            caller,
            policy::require_admin(caller),
            "admin.sessions_revoke.denied",
            "user",
            Some(id.to_string()),
        )
        .await?;
        self.store.get_user(caller.tenant(), id).await.map_err(super::admin::user_not_found)?;
        let ended = self.end_sessions(caller, id, None).await?;
        self.audit_by(
            caller,
            AuditRecord::new("user.sessions_revoked", "user", id)
                .detail(serde_json::json!({"revoked_sessions": ended.revoked_sessions})),
        )
        .await;
        Ok(ended)
    }

    /// An administrator ends every session of every user of the tenant (a suspected breach), but
    /// their own current one, and refuses every user's single sign-on tokens issued until now
    /// but their own. API keys are separate credentials and are not touched. `confirm` must be
    /// true: the action signs everyone out.
    pub async fn admin_revoke_all_sessions(&self, caller: &Caller, confirm: bool) -> Result<TenantSessionsRevokedView> {
        self.permit(caller, policy::require_admin(caller), "admin.sessions_revoke_all.denied", "tenant", None).await?;
        if !confirm {
            return Err(Error::field("confirm", "Set confirm to true: this signs every user of the organisation out."));
        }
        let now = crate::clock::now();
        let revoked =
            self.store.revoke_tenant_sessions(caller.tenant(), caller.user(), caller.principal.session_id(), now).await;
        self.credentials.invalidate();
        let (users, revoked_sessions) = revoked?;
        self.audit_by(
            caller,
            AuditRecord::new("tenant.sessions_revoked", "tenant", caller.tenant())
                .detail(serde_json::json!({"users": users, "revoked_sessions": revoked_sessions})),
        )
        .await;
        Ok(TenantSessionsRevokedView { users, revoked_sessions, tokens_valid_after: now })
    }

    /// After the caller changed a sign-in factor (TOTP on or off, new recovery codes): every
    /// other session ends, since one of them may belong to whoever made the change necessary.
    /// Returns how many ended, for the change's audit event.
    pub(crate) async fn end_other_sessions_after_factor_change(&self, caller: &Caller) -> Result<u64> {
        self.end_user_sessions(caller.tenant(), caller.user(), caller.principal.session_id()).await
    }

    /// Ends one session. Every revocation goes through here or [`Self::end_user_sessions`], which
    /// empty the credential cache as well, so a revoked session is refused at once.
    pub(crate) async fn end_session(&self, tenant: TenantId, session: SessionId) -> Result<()> {
        let revoked = self.store.revoke_session(tenant, session).await;
        self.credentials.invalidate();
        Ok(revoked?)
    }

    /// Ends every session of the user but `keep`; returns how many ended.
    pub(crate) async fn end_user_sessions(
        &self,
        tenant: TenantId,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<u64> {
        let ended = self.store.revoke_user_sessions(tenant, user, keep).await;
        self.credentials.invalidate();
        Ok(ended?)
    }

    async fn end_sessions(
        &self,
        caller: &Caller,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<SessionsRevokedView> {
        let now = crate::clock::now();
        let revoked_sessions = self.end_user_sessions(caller.tenant(), user, keep).await?;
        let cut_off = self.store.set_tokens_valid_after(caller.tenant(), user, now).await;
        self.credentials.invalidate();
        cut_off?;
        Ok(SessionsRevokedView { revoked_sessions, tokens_valid_after: now })
    }
}
