//! Local accounts: sign-up, sign-in, refresh-token rotation with reuse detection, sign-out,
//! password changes, and turning a bearer credential into a [`Principal`].

use conclave_auth::{check_password_strength, CredentialKind, IssuedCredential, ParsedCredential, SecretHash};
use secrecy::{ExposeSecret, SecretString};

use crate::app::{AuditRecord, Conclave};
use crate::error::{Error, FieldError, Result, StoreError};
use crate::ids::*;
use crate::principal::{Caller, Credential, Principal, RequestMeta, Role};
use crate::records::*;
use crate::service::mfa::SecondFactor;
use crate::store::constraints;
use crate::views::{AuthView, UserView};

/// A successful sign-in: the JSON answer, and the refresh token for the cookie.
pub struct SignedIn {
    pub view: AuthView,
    pub refresh_token: SecretString,
    pub refresh_ttl: std::time::Duration,
}

pub struct SignupInput {
    pub email: String,
    pub password: String,
    pub display_name: String,
}

/// The login-device cookie's version prefix.
const LOGIN_DEVICE_V1: &str = "v1";

impl Conclave {
    /// A login-device cookie for a browser where `user` just signed in: a random nonce and its
    /// tag under the tenant's key, so no row is needed. While it is presented with that user's
    /// email, sign-in attempts count against this browser's own budget instead of the
    /// account's, so someone guessing the password elsewhere cannot lock the user out (OWASP's
    /// "device cookies"). `None` where there is no key hierarchy to vouch for it.
    pub async fn issue_login_device(&self, tenant: TenantId, user: UserId) -> Option<String> {
        use base64::Engine as _;
        let nonce = *uuid::Uuid::new_v4().as_bytes();
        let tag = self.codec.login_device_tag(tenant, user, &nonce).await.ok()?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Some(format!("{LOGIN_DEVICE_V1}.{}.{}", b64.encode(nonce), b64.encode(tag)))
    }

    /// Whether `cookie` is a login-device cookie issued to the account of `email`.
    pub async fn is_login_device(&self, email: &str, cookie: &str) -> bool {
        use base64::Engine as _;
        use subtle::ConstantTimeEq as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = cookie.split('.');
        let (Some(LOGIN_DEVICE_V1), Some(nonce), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(nonce), Ok(tag)) = (b64.decode(nonce), b64.decode(tag)) else { return false };
        if nonce.len() != 16 || tag.len() != 32 {
            return false;
        }
        let Ok(Some((tenant, record))) = self.store.find_login(&email.trim().to_lowercase()).await else {
            return false;
        };
        match self.codec.login_device_tag(tenant, record.user.id, &nonce).await {
            Ok(expected) => bool::from(expected.ct_eq(&tag)),
            Err(_) => false,
        }
    }

    pub async fn signup(&self, input: SignupInput, meta: &RequestMeta) -> Result<SignedIn> {
        let tenant = self.store.default_tenant(&self.config.default_tenant_name).await?;
        let (email, display_name) = validate_identity(&input.email, &input.display_name)?;
        validate_new_password("password", &input.password, &email, &display_name)?;

        let first_is_admin = self.config.first_signup_is_admin;
        if !self.config.signup_open {
            // A closed install still takes its very first account in dev (it becomes admin);
            // in production that account is made with `conclave admin create`.
            let has_users =
                !self.store.list_users(tenant.id, crate::page::PageRequest::first(1)).await?.items.is_empty();
            if has_users || !first_is_admin {
                return Err(Error::Forbidden(
                    "Sign-up is closed on this server; ask an administrator for an account.".into(),
                ));
            }
        }

        let password = input.password;
        let hash = self.blocking(move |h| h.hash(&password)).await?.map_err(Error::internal)?;
        let new_user = NewUser {
            id: UserId::new(),
            email,
            display_name,
            role: Role::Member,
            first_user_becomes_admin: first_is_admin,
            password_hash: Some(hash),
            must_change_password: false,
        };
        let user = self.store.create_user(tenant.id, new_user).await.map_err(email_conflict)?;
        self.audit(
            tenant.id,
            meta,
            AuditRecord::new("user.signup", "user", user.id).detail(serde_json::json!({"role": user.role.as_str()})),
        )
        .await;
        self.start_session(&user, meta).await
    }

    /// Unknown email, wrong password and disabled account answer alike, after the same work.
    pub async fn login(&self, email: &str, password: &str, meta: &RequestMeta) -> Result<SignedIn> {
        self.login_with(email, password, SecondFactor::default(), meta).await
    }

    /// Sign-in with a second factor for accounts that have one. The password is checked first:
    /// only a right password learns that a code is needed (`Error::MfaRequired`, the same answer
    /// for a missing, wrong or replayed code), so the code prompt reveals nothing to someone
    /// without the password.
    pub async fn login_with(
        &self,
        email: &str,
        password: &str,
        second: SecondFactor<'_>,
        meta: &RequestMeta,
    ) -> Result<SignedIn> {
        let email = email.trim().to_lowercase();
        let found = self.store.find_login(&email).await?;
        let password = password.to_owned();
        let Some((tenant, record)) = found else {
            self.blocking(move |h| h.verify_dummy(&password)).await?;
            return Err(Error::InvalidCredentials);
        };
        let stored = record.password_hash.clone();
        let ok = self
            .blocking(move |h| match stored {
                Some(stored) => h.verify(&password, &stored),
                None => h.verify_dummy(&password),
            })
            .await?;
        if !ok || record.user.disabled {
            let reason = if ok { "disabled" } else { "bad_password" };
            self.audit(
                tenant,
                meta,
                AuditRecord::new("auth.login", "user", record.user.id)
                    .outcome(Outcome::Failure)
                    .detail(serde_json::json!({"reason": reason})),
            )
            .await;
            return Err(Error::InvalidCredentials);
        }
        if let Err(e) = self.check_second_factor(tenant, &record.user, second, meta).await {
            // Only a missing or wrong code is a failed sign-in; a key service or database that
            // cannot answer is an outage, reported as it is.
            if !matches!(e, Error::MfaRequired) {
                return Err(e);
            }
            let reason = if second.is_empty() { "mfa_missing" } else { "mfa_bad_code" };
            self.audit(
                tenant,
                meta,
                AuditRecord::new("auth.login", "user", record.user.id)
                    .outcome(Outcome::Failure)
                    .detail(serde_json::json!({"reason": reason})),
            )
            .await;
            return Err(e);
        }
        self.audit(tenant, meta, AuditRecord::new("auth.login", "user", record.user.id)).await;
        self.start_session(&record.user, meta).await
    }

    /// A new session: it ends `session_max_lifetime` from now at the latest, and records the
    /// sign-in's user agent and address for the user's session list.
    async fn start_session(&self, user: &User, meta: &RequestMeta) -> Result<SignedIn> {
        let now = crate::clock::now();
        let session = NewSession {
            id: SessionId::new(),
            user_id: user.id,
            times: SessionTimes {
                created_at: now,
                expires_at: now + self.config.session_max_lifetime,
                last_used_at: now,
            },
            user_agent: meta.user_agent.clone(),
            ip: meta.ip.map(|ip| ip.to_string()),
        };
        let (access, access_rec) = self.issue_token(user, session.id, session.times, TokenKind::Access);
        let (refresh, refresh_rec) = self.issue_token(user, session.id, session.times, TokenKind::Refresh);
        let refresh_expires = refresh_rec.expires_at;
        self.store.create_session(user.tenant_id, &session, &[access_rec, refresh_rec]).await?;
        Ok(self.signed_in(user, access, refresh, refresh_expires))
    }

    /// A token of the session; neither kind outlives the session's absolute end.
    fn issue_token(
        &self,
        user: &User,
        session: SessionId,
        times: SessionTimes,
        kind: TokenKind,
    ) -> (SecretString, TokenRecord) {
        let (credential_kind, ttl) = match kind {
            TokenKind::Access => (CredentialKind::AccessToken, self.config.access_token_ttl),
            TokenKind::Refresh => (CredentialKind::RefreshToken, self.config.refresh_token_ttl),
        };
        let issued = IssuedCredential::new(credential_kind);
        let record = TokenRecord {
            tenant_id: user.tenant_id,
            id: TokenId(issued.id),
            session_id: session,
            user_id: user.id,
            kind,
            secret_hash: issued.hash.0.to_vec(),
            expires_at: (crate::clock::now() + ttl).min(times.expires_at),
            used_at: None,
            session_revoked: false,
            session: times,
        };
        (issued.token, record)
    }

    fn signed_in(
        &self,
        user: &User,
        access: SecretString,
        refresh: SecretString,
        refresh_expires: time::OffsetDateTime,
    ) -> SignedIn {
        // The cookie lasts as long as the refresh token can: the session's absolute end.
        let refresh_ttl = (refresh_expires - crate::clock::now()).max(time::Duration::ZERO).unsigned_abs();
        SignedIn {
            view: AuthView {
                user: UserView::from(user),
                access_token: access.expose_secret().to_owned(),
                token_type: "Bearer",
                expires_in: self.config.access_token_ttl.as_secs(),
            },
            refresh_token: refresh,
            refresh_ttl,
        }
    }

    /// The limits sessions are held to now.
    pub(crate) fn session_cutoffs(&self) -> SessionCutoffs {
        SessionCutoffs::at(crate::clock::now(), self.config.session_max_lifetime, self.config.session_idle_timeout)
    }

    /// Exchanges a refresh token for a new access token and a new refresh token. Presenting a
    /// token that was already exchanged revokes its whole session: someone holds a copy.
    pub async fn refresh(&self, token: &str, meta: &RequestMeta) -> Result<SignedIn> {
        let record = self.find_token(token, CredentialKind::RefreshToken).await?;
        if record.session_revoked {
            return Err(Error::Unauthenticated);
        }
        let cutoffs = self.session_cutoffs();
        let now = cutoffs.now;
        if let Some(end) = cutoffs.ended(&record.session) {
            // Marked revoked so that it leaves every list and this is audited once; the
            // client is told why, so the web app can say "signed out after inactivity".
            self.end_session(record.tenant_id, record.session_id).await?;
            let reason = match end {
                SessionEnd::Idle => "idle_timeout",
                SessionEnd::Lifetime => "max_lifetime",
            };
            self.audit(
                record.tenant_id,
                meta,
                AuditRecord::new("auth.session_expired", "session", record.session_id)
                    .outcome(Outcome::Failure)
                    .detail(serde_json::json!({"user_id": record.user_id, "reason": reason})),
            )
            .await;
            return Err(Error::SessionExpired(end));
        }
        if record.expires_at <= now {
            return Err(Error::Unauthenticated);
        }
        let user = self.store.get_user(record.tenant_id, record.user_id).await.map_err(|_| Error::Unauthenticated)?;
        if user.disabled {
            return Err(Error::Unauthenticated);
        }
        let times = SessionTimes { last_used_at: now, ..record.session };
        let (access, access_rec) = self.issue_token(&user, record.session_id, times, TokenKind::Access);
        let (refresh, refresh_rec) = self.issue_token(&user, record.session_id, times, TokenKind::Refresh);
        let refresh_expires = refresh_rec.expires_at;
        let rotated = record.used_at.is_none()
            && self.store.rotate_refresh(record.tenant_id, record.id, now, &[access_rec, refresh_rec]).await?;
        if !rotated {
            self.end_session(record.tenant_id, record.session_id).await?;
            self.audit(
                record.tenant_id,
                meta,
                AuditRecord::new("auth.refresh_reuse", "session", record.session_id)
                    .outcome(Outcome::Denied)
                    .detail(serde_json::json!({"user_id": record.user_id})),
            )
            .await;
            return Err(Error::Unauthenticated);
        }
        Ok(self.signed_in(&user, access, refresh, refresh_expires))
    }

    /// Ends the session of the refresh token and/or of the calling access token.
    pub async fn logout(&self, refresh_token: Option<&str>, caller: Option<&Caller>, meta: &RequestMeta) -> Result<()> {
        if let Some(token) = refresh_token {
            if let Ok(record) = self.find_token(token, CredentialKind::RefreshToken).await {
                self.end_session(record.tenant_id, record.session_id).await?;
                self.audit(record.tenant_id, meta, AuditRecord::new("auth.logout", "session", record.session_id)).await;
            }
        }
        if let Some(caller) = caller {
            if let Some(session) = caller.principal.session_id() {
                self.end_session(caller.tenant(), session).await?;
                self.audit_by(caller, AuditRecord::new("auth.logout", "session", session)).await;
            }
        }
        Ok(())
    }

    /// An issuer's JWT through the credential cache. The key set's generation is read before
    /// verifying: a key set replaced meanwhile leaves this result under the old generation,
    /// where nobody looks.
    async fn authenticate_sso_cached(
        &self,
        sso: &super::identity::SingleSignOn,
        bearer: &str,
        meta: &RequestMeta,
    ) -> Result<Principal> {
        let generation = sso.verifier.keys_generation();
        let ticket = match self.credentials.get_jwt(bearer, generation) {
            Ok(principal) => return Ok(principal),
            Err(ticket) => ticket,
        };
        let (principal, expires_at) = self.authenticate_sso(sso, bearer, meta).await?;
        self.credentials.store_jwt(ticket, bearer, generation, &principal, expires_at);
        Ok(principal)
    }

    /// Resolves a bearer credential (access token or API key) to the principal it stands for.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        self.authenticate_request(bearer, &RequestMeta::default()).await
    }

    /// As [`Self::authenticate`], also accepting the single sign-on issuer's JWTs (a first
    /// sign-in provisions the user, audited with the request's address).
    pub async fn authenticate_request(&self, bearer: &str, meta: &RequestMeta) -> Result<Principal> {
        let Some(parsed) = ParsedCredential::parse(bearer) else {
            return match &self.config.sso {
                Some(sso) if bearer.split('.').count() == 3 => self.authenticate_sso_cached(sso, bearer, meta).await,
                _ => Err(Error::Unauthenticated),
            };
        };
        let ticket = match self.credentials.get(&parsed) {
            Ok(principal) => return Ok(principal),
            Err(ticket) => ticket,
        };
        let (principal, expires_at) = self.verify_credential(&parsed).await?;
        self.credentials.store(ticket, &parsed, &principal, expires_at);
        Ok(principal)
    }

    /// Checks a credential against the database: the principal, and when the credential expires.
    async fn verify_credential(&self, parsed: &ParsedCredential) -> Result<(Principal, Option<time::OffsetDateTime>)> {
        let now = crate::clock::now();
        match parsed.kind {
            CredentialKind::AccessToken => {
                let record = self.check_token(parsed).await?;
                // The token's own expiry is capped at the session's end when issued; the session
                // check also applies a maximum lifetime lowered since.
                if record.kind != TokenKind::Access
                    || record.session_revoked
                    || record.expires_at <= now
                    || self.session_cutoffs().ended(&record.session).is_some()
                {
                    return Err(Error::Unauthenticated);
                }
                let user = self.active_user(record.tenant_id, record.user_id).await?;
                let principal = Principal {
                    tenant_id: user.tenant_id,
                    user_id: user.id,
                    role: user.role,
                    credential: Credential::Session(record.session_id),
                    must_change_password: user.must_change_password,
                    mfa_enrollment_pending: self.mfa_enrollment_pending(user.tenant_id, user.id).await?,
                };
                Ok((principal, Some(record.expires_at)))
            }
            CredentialKind::ApiKey => {
                let Some(CredentialRef::ApiKey(tenant)) = self.store.find_credential(parsed.id).await? else {
                    return Err(Error::Unauthenticated);
                };
                let record =
                    self.store.get_api_key(tenant, ApiKeyId(parsed.id)).await.map_err(not_found_is_unauthenticated)?;
                let hash = SecretHash::from_slice(&record.secret_hash).ok_or(Error::Unauthenticated)?;
                if !hash.matches(&parsed.secret) || record.key.expires_at.is_some_and(|t| t <= now) {
                    return Err(Error::Unauthenticated);
                }
                let user = self.active_user(tenant, record.key.user_id).await?;
                // Recording every use would write on every request; once a minute is enough.
                if record.key.last_used_at.is_none_or(|t| now - t > time::Duration::minutes(1)) {
                    let _ = self.store.touch_api_key(tenant, record.key.id, now).await;
                }
                let principal = Principal {
                    tenant_id: tenant,
                    user_id: user.id,
                    role: user.role,
                    credential: Credential::ApiKey { id: record.key.id, scopes: record.key.scopes },
                    must_change_password: user.must_change_password,
                    mfa_enrollment_pending: false,
                };
                Ok((principal, record.key.expires_at))
            }
            CredentialKind::RefreshToken => Err(Error::Unauthenticated),
        }
    }

    async fn active_user(&self, tenant: TenantId, user: UserId) -> Result<User> {
        let user = self.store.get_user(tenant, user).await.map_err(not_found_is_unauthenticated)?;
        if user.disabled {
            return Err(Error::Unauthenticated);
        }
        Ok(user)
    }

    async fn find_token(&self, token: &str, kind: CredentialKind) -> Result<TokenRecord> {
        let parsed = ParsedCredential::parse(token).ok_or(Error::Unauthenticated)?;
        if parsed.kind != kind {
            return Err(Error::Unauthenticated);
        }
        self.check_token(&parsed).await
    }

    async fn check_token(&self, parsed: &ParsedCredential) -> Result<TokenRecord> {
        let Some(CredentialRef::Token(tenant)) = self.store.find_credential(parsed.id).await? else {
            return Err(Error::Unauthenticated);
        };
        let record = self.store.get_token(tenant, TokenId(parsed.id)).await.map_err(not_found_is_unauthenticated)?;
        let hash = SecretHash::from_slice(&record.secret_hash).ok_or(Error::Unauthenticated)?;
        if !hash.matches(&parsed.secret) {
            return Err(Error::Unauthenticated);
        }
        Ok(record)
    }

    pub async fn me(&self, caller: &Caller) -> Result<UserView> {
        let user = self.store.get_user(caller.tenant(), caller.user()).await?;
        Ok(UserView::from(&user))
    }

    /// Changes the caller's password and signs out every other session.
    pub async fn change_password(&self, caller: &Caller, current: &str, new: &str) -> Result<()> {
        let Some(session) = caller.principal.session_id() else {
            return Err(Error::Forbidden("An API key cannot change the password; sign in instead.".into()));
        };
        let record = self.store.get_login(caller.tenant(), caller.user()).await?;
        let stored = record.password_hash.clone();
        let current = current.to_owned();
        let ok = self.blocking(move |h| stored.is_some_and(|s| h.verify(&current, &s))).await?;
        if !ok {
            self.audit_by(
                caller,
                AuditRecord::new("user.password_change", "user", caller.user()).outcome(Outcome::Failure),
            )
            .await;
            return Err(Error::field("current_password", "The current password is not correct."));
        }
        validate_new_password("new_password", new, &record.user.email, &record.user.display_name)?;
        let new = new.to_owned();
        let hash = self.blocking(move |h| h.hash(&new)).await?.map_err(Error::internal)?;
        self.store.set_password(caller.tenant(), caller.user(), &hash, false).await?;
        self.end_user_sessions(caller.tenant(), caller.user(), Some(session)).await?;
        self.audit_by(caller, AuditRecord::new("user.password_change", "user", caller.user())).await;
        Ok(())
    }

    /// Hashes a password for an account made by an administrator or the CLI.
    pub(crate) async fn hash_password(&self, password: String) -> Result<String> {
        self.blocking(move |h| h.hash(&password)).await?.map_err(Error::internal)
    }
}

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// Checks and normalises an email address and a display name.
pub(crate) fn validate_identity(email: &str, display_name: &str) -> Result<(String, String)> {
    let mut errors = Vec::new();
    let email = email.trim().to_lowercase();
    if !looks_like_email(&email) {
        errors.push(FieldError::new("email", "Enter an email address such as name@example.com."));
    }
    let display_name = display_name.trim().to_owned();
    let chars = display_name.chars().count();
    if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS || display_name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "display_name",
            format!("Give a name of 1 to {MAX_DISPLAY_NAME_CHARS} characters, without control characters."),
        ));
    }
    if errors.is_empty() {
        Ok((email, display_name))
    } else {
        Err(Error::Validation(errors))
    }
}

fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= MAX_EMAIL_LEN
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

pub(crate) fn validate_new_password(field: &str, password: &str, email: &str, name: &str) -> Result<()> {
    check_password_strength(password, &[email, name]).map_err(|r| Error::field(field, r.0))
}

pub(crate) fn email_conflict(e: StoreError) -> Error {
    match e {
        StoreError::Constraint(c) if c == constraints::USER_EMAIL_UNIQUE => {
            Error::Conflict("An account with this email address already exists.".into())
        }
        other => other.into(),
    }
}

fn not_found_is_unauthenticated(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::Unauthenticated,
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(validate_identity(" Ada@Example.COM ", "Ada").unwrap().0, "ada@example.com");
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a da@example.com", "ada@.com"] {
            assert!(validate_identity(bad, "Ada").is_err(), "{bad}");
        }
        assert!(validate_identity("ada@example.com", "  ").is_err());
        assert!(validate_identity("ada@example.com", &"x".repeat(101)).is_err());
    }
}
