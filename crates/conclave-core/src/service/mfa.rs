//! The second factor of local accounts: TOTP enrolment (pending until a first code confirms
//! it), one-time recovery codes, the check at sign-in, turning it off, an administrator's reset,
//! and the tenant setting that makes it compulsory. The TOTP secret is sealed under the tenant
//! key and bound to its user; every change is audited, and a change of the caller's own factor
//! ends their other sessions.

use conclave_auth::totp::{hash_recovery_code, new_recovery_codes, TotpSecret};
use serde::Serialize;

use crate::app::{AuditRecord, Conclave};
use crate::content::{SealScope, Sealed};
use crate::error::{Error, Result, StoreError};
use crate::ids::{TenantId, UserId};
use crate::policy;
use crate::principal::{Caller, RequestMeta};
use crate::records::{MfaRecord, Outcome, User};

/// The name authenticator apps show for the account.
const TOTP_ISSUER: &str = "Conclave";

/// A started enrolment: the secret to put in an authenticator app, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TotpEnrollmentView {
    /// Base32, for typing in.
    pub secret: String,
    /// `otpauth://totp/...`, for a QR code.
    pub otpauth_uri: String,
}

/// Recovery codes, shown this once; each signs in once in place of a TOTP code.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecoveryCodesView {
    pub recovery_codes: Vec<String>,
}

/// What a sign-in offers as its second factor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecondFactor<'a> {
    pub otp: Option<&'a str>,
    pub recovery_code: Option<&'a str>,
}

impl SecondFactor<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.otp.is_none() && self.recovery_code.is_none()
    }
}

fn unix_now() -> u64 {
    crate::clock::now().unix_timestamp().max(0) as u64
}

impl Conclave {
    /// Starts (or restarts) TOTP enrolment for the caller's own local account.
    pub async fn start_totp(&self, caller: &Caller) -> Result<TotpEnrollmentView> {
        let user = self.local_session_user(caller).await?;
        if self.store.get_mfa(caller.tenant(), user.id).await?.is_some_and(|m| m.enabled) {
            return Err(already_on());
        }
        let secret = TotpSecret::generate(TOTP_ISSUER, &user.email);
        let sealed = self.codec.seal(totp_scope(&user), &secret.base32()).await?;
        self.store.put_pending_mfa(caller.tenant(), user.id, &sealed).await.map_err(|e| match e {
            StoreError::Constraint(_) => already_on(),
            other => other.into(),
        })?;
        self.audit_by(caller, AuditRecord::new("mfa.totp_enrolment_started", "user", user.id)).await;
        Ok(TotpEnrollmentView { secret: secret.base32(), otpauth_uri: secret.uri() })
    }

    /// Confirms the pending enrolment with a code from the app: MFA is on from now, and the
    /// recovery codes are returned once.
    pub async fn confirm_totp(&self, caller: &Caller, code: &str) -> Result<RecoveryCodesView> {
        let user = self.local_session_user(caller).await?;
        let Some(mfa) = self.store.get_mfa(caller.tenant(), user.id).await?.filter(|m| !m.enabled) else {
            return Err(Error::Conflict(
                "There is no enrolment to confirm; start one with POST /api/v1/me/mfa/totp.".into(),
            ));
        };
        let secret = self.open_totp(&user, &mfa.secret).await?;
        let Some(step) = secret.verify(code, unix_now()) else {
            self.audit_by(caller, AuditRecord::new("mfa.enabled", "user", user.id).outcome(Outcome::Failure)).await;
            return Err(bad_code("code"));
        };
        let codes = new_recovery_codes();
        let hashes: Vec<Vec<u8>> = codes.iter().map(|c| hash_recovery_code(&user.id.0, c)).collect();
        if !self.store.enable_mfa(caller.tenant(), user.id, step as i64, &hashes).await? {
            return Err(already_on());
        }
        let ended = self.end_other_sessions_after_factor_change(caller).await?;
        self.audit_by(
            caller,
            AuditRecord::new("mfa.enabled", "user", user.id).detail(serde_json::json!({"other_sessions_ended": ended})),
        )
        .await;
        Ok(RecoveryCodesView { recovery_codes: codes })
    }

    /// Turns MFA off for the caller, who proves both factors again.
    pub async fn disable_mfa(&self, caller: &Caller, password: &str, second: SecondFactor<'_>) -> Result<()> {
        let user = self.local_session_user(caller).await?;
        let record = self.store.get_login(caller.tenant(), user.id).await?;
        let stored = record.password_hash.clone();
        let password = password.to_owned();
        let password_ok = self.blocking(move |h| stored.is_some_and(|s| h.verify(&password, &s))).await?;
        let Some(mfa) = self.store.get_mfa(caller.tenant(), user.id).await?.filter(|m| m.enabled) else {
            return Err(not_on());
        };
        let factor_ok = password_ok && self.second_factor_ok(&user, &mfa, second).await?;
        if !factor_ok {
            self.audit_by(caller, AuditRecord::new("mfa.disabled", "user", user.id).outcome(Outcome::Failure)).await;
            return Err(if password_ok {
                bad_code("code")
            } else {
                Error::field("current_password", "The current password is not correct.")
            });
        }
        self.store.delete_mfa(caller.tenant(), user.id).await?;
        let ended = self.end_other_sessions_after_factor_change(caller).await?;
        self.audit_by(
            caller,
            AuditRecord::new("mfa.disabled", "user", user.id)
                .detail(serde_json::json!({"other_sessions_ended": ended})),
        )
        .await;
        Ok(())
    }

    /// New recovery codes in place of the old ones, for a caller who proves the second factor.
    pub async fn regenerate_recovery_codes(&self, caller: &Caller, code: &str) -> Result<RecoveryCodesView> {
        let user = self.local_session_user(caller).await?;
        let Some(mfa) = self.store.get_mfa(caller.tenant(), user.id).await?.filter(|m| m.enabled) else {
            return Err(not_on());
        };
        if !self.second_factor_ok(&user, &mfa, SecondFactor { otp: Some(code), recovery_code: None }).await? {
            self.audit_by(
                caller,
                AuditRecord::new("mfa.recovery_codes_regenerated", "user", user.id).outcome(Outcome::Failure),
            )
            .await;
            return Err(bad_code("code"));
        }
        let codes = new_recovery_codes();
        let hashes: Vec<Vec<u8>> = codes.iter().map(|c| hash_recovery_code(&user.id.0, c)).collect();
        self.store.replace_recovery_codes(caller.tenant(), user.id, &hashes).await?;
        let ended = self.end_other_sessions_after_factor_change(caller).await?;
        self.audit_by(
            caller,
            AuditRecord::new("mfa.recovery_codes_regenerated", "user", user.id)
                .detail(serde_json::json!({"other_sessions_ended": ended})),
        )
        .await;
        Ok(RecoveryCodesView { recovery_codes: codes })
    }

    /// An administrator removes a user's second factor (a lost phone); the user enrols again.
    pub async fn admin_reset_mfa(&self, caller: &Caller, id: UserId) -> Result<()> {
        policy::require_admin(caller)?;
        self.store.get_user(caller.tenant(), id).await.map_err(super::admin::user_not_found)?;
        if !self.store.delete_mfa(caller.tenant(), id).await? {
            return Err(Error::NotFound("MFA enrolment"));
        }
        self.end_user_sessions(caller.tenant(), id, None).await?;
        self.audit_by(caller, AuditRecord::new("mfa.reset", "user", id)).await;
        Ok(())
    }

    /// For sign-in, after the password was found right: `Ok(())` when the account has no MFA
    /// or `second` is a valid, unused code; `Error::MfaRequired` otherwise.
    pub(crate) async fn check_second_factor(
        &self,
        tenant: TenantId,
        user: &User,
        second: SecondFactor<'_>,
        meta: &RequestMeta,
    ) -> Result<()> {
        let Some(mfa) = self.store.get_mfa(tenant, user.id).await?.filter(|m| m.enabled) else {
            return Ok(());
        };
        if !second.is_empty() && self.second_factor_ok(user, &mfa, second).await? {
            if second.otp.is_none() {
                let left = self.store.get_mfa(tenant, user.id).await?.map_or(0, |m| m.recovery_codes_left);
                self.audit(
                    tenant,
                    meta,
                    AuditRecord::new("mfa.recovery_code_used", "user", user.id)
                        .detail(serde_json::json!({"codes_left": left})),
                )
                .await;
            }
            return Ok(());
        }
        Err(Error::MfaRequired)
    }

    /// Whether the tenant requires MFA and this user, who signs in with a local password, has
    /// not enrolled yet (for a session's principal; single sign-on users and API keys are not
    /// held back).
    pub(crate) async fn mfa_enrollment_pending(&self, tenant: TenantId, user: UserId) -> Result<bool> {
        if !self.tenant(tenant).await?.settings.require_mfa {
            return Ok(false);
        }
        let login = self.store.get_login(tenant, user).await?;
        if login.password_hash.is_none() {
            return Ok(false);
        }
        Ok(!self.store.get_mfa(tenant, user).await?.is_some_and(|m| m.enabled))
    }

    async fn second_factor_ok(&self, user: &User, mfa: &MfaRecord, second: SecondFactor<'_>) -> Result<bool> {
        if let Some(code) = second.otp {
            let secret = self.open_totp(user, &mfa.secret).await?;
            let Some(step) = secret.verify(code, unix_now()) else { return Ok(false) };
            // A code is good once: its step must come after the last one accepted.
            return Ok(self.store.use_totp_step(user.tenant_id, user.id, step as i64).await?);
        }
        if let Some(code) = second.recovery_code {
            let hash = hash_recovery_code(&user.id.0, code);
            return Ok(self.store.use_recovery_code(user.tenant_id, user.id, &hash).await?);
        }
        Ok(false)
    }

    async fn open_totp(&self, user: &User, sealed: &Sealed) -> Result<TotpSecret> {
        let base32 = self.codec.open(totp_scope(user), sealed).await?;
        TotpSecret::from_base32(&base32, TOTP_ISSUER, &user.email).map_err(Error::internal)
    }

    /// The caller's own account, when it signs in with a password through a session.
    async fn local_session_user(&self, caller: &Caller) -> Result<User> {
        if caller.principal.session_id().is_none() {
            return Err(Error::Forbidden("An API key cannot manage two-factor sign-in; sign in instead.".into()));
        }
        let login = self.store.get_login(caller.tenant(), caller.user()).await?;
        if login.password_hash.is_none() {
            return Err(Error::Forbidden(
                "Your sign-in is managed by your organisation's identity provider, which handles the second factor."
                    .into(),
            ));
        }
        Ok(login.user)
    }
}

fn totp_scope(user: &User) -> SealScope {
    SealScope::TotpSecret { tenant: user.tenant_id, user: user.id }
}

fn already_on() -> Error {
    Error::Conflict("Two-factor sign-in is already on; turn it off first (DELETE /api/v1/me/mfa).".into())
}

fn not_on() -> Error {
    Error::Conflict("Two-factor sign-in is not on for this account.".into())
}

fn bad_code(field: &str) -> Error {
    Error::field(
        field,
        "The code is not correct, or was already used: enter the current code from your authenticator app.",
    )
}
