//! Single sign-on users: an issuer's verified JWT turned into a principal. The user is made on
//! first sign-in from the claims (the issuer and `sub` are the identity, never the email), and
//! their email, name and role follow the claims on later sign-ins. Tenant and role come from
//! configurable claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use conclave_auth::oidc::{TokenVerifier, VerifiedToken};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::{AuditRecord, Conclave};
use crate::error::{Error, Result, StoreError};
use crate::ids::*;
use crate::principal::{Credential, Principal, RequestMeta, Role};
use crate::records::*;
use crate::store::constraints;

/// Maps a tenant claim value to the default tenant instead of a tenant of its own.
pub const DEFAULT_TENANT_TARGET: &str = "@default";

/// How many recently seen tokens are remembered, so that each sign-in is audited once and not
/// on every request that token makes.
const SEEN_TOKENS: usize = 10_000;

/// The single sign-on settings and the issuer's token verifier.
pub struct SingleSignOn {
    pub verifier: Arc<dyn TokenVerifier>,
    pub issuer: String,
    /// The SPA's client id, for `GET /api/v1/auth/config`.
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The claim naming the user's organisation (Entra ID: `tid`); unset: everyone joins the
    /// default tenant.
    pub tenant_claim: Option<String>,
    /// Tenant claim value -> name of the Conclave tenant made for it on first use
    /// ([`DEFAULT_TENANT_TARGET`]: the default tenant).
    pub tenants: HashMap<String, String>,
    /// Values not in `tenants` get a tenant of their own instead of being refused.
    pub auto_create_tenants: bool,
    /// Claims holding role or group names (strings or arrays of strings).
    pub role_claims: Vec<String>,
    /// Role or group name -> Conclave role; the highest mapped role wins, default member.
    pub roles: HashMap<String, Role>,
    seen: Mutex<HashMap<[u8; 32], u64>>,
}

impl SingleSignOn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        verifier: Arc<dyn TokenVerifier>,
        issuer: String,
        client_id: String,
        scopes: Vec<String>,
        tenant_claim: Option<String>,
        tenants: HashMap<String, String>,
        auto_create_tenants: bool,
        role_claims: Vec<String>,
        roles: HashMap<String, Role>,
    ) -> Self {
        Self {
            verifier,
            issuer,
            client_id,
            scopes,
            tenant_claim,
            tenants,
            auto_create_tenants,
            role_claims,
            roles,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The role the claims map to: admin over auditor over member.
    pub fn role_of(&self, token: &VerifiedToken) -> Role {
        let names = self.role_claims.iter().filter_map(|c| token.claims.get(c)).flat_map(|v| match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        });
        let mapped: Vec<Role> = names.filter_map(|n| self.roles.get(n).copied()).collect();
        if mapped.contains(&Role::Admin) {
            Role::Admin
        } else if mapped.contains(&Role::Auditor) {
            Role::Auditor
        } else {
            Role::Member
        }
    }

    /// True the first time this token is presented (within what is remembered).
    fn first_use(&self, token: &str, claims: &VerifiedToken) -> bool {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let exp = claims.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        if seen.len() >= SEEN_TOKENS {
            let now = crate::clock::now().unix_timestamp().max(0) as u64;
            seen.retain(|_, exp| *exp > now);
            if seen.len() >= SEEN_TOKENS {
                seen.clear();
            }
        }
        seen.insert(hash, exp).is_none()
    }
}

impl std::fmt::Debug for SingleSignOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleSignOn")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("tenant_claim", &self.tenant_claim)
            .field("auto_create_tenants", &self.auto_create_tenants)
            .finish_non_exhaustive()
    }
}

/// Whether the token's `amr` (RFC 8176) shows more than one factor: `mfa` (what Entra ID
/// writes), or a possession factor together with a knowledge or inherence factor. Issuers that
/// write no `amr` cannot satisfy a tenant that requires MFA.
fn multi_factor(token: &VerifiedToken) -> bool {
    let methods: Vec<&str> = match token.claims.get("amr") {
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(serde_json::Value::as_str).collect(),
        _ => return false,
    };
    let has = |set: &[&str]| methods.iter().any(|m| set.contains(m));
    has(&["mfa"])
        || (has(&["hwk", "swk", "otp", "sms", "tel", "sc"])
            && has(&["pwd", "pin", "fpt", "face", "iris", "retina", "vbm", "user"]))
}

/// Refuses the token: the client learns only that its credential was not accepted.
fn refuse(reason: &str) -> Error {
    tracing::info!(reason, "single sign-on token refused");
    Error::Unauthenticated
}

impl Conclave {
    /// The principal an issuer's JWT stands for, provisioning the user on first sign-in, and
    /// the token's expiry (its `exp`).
    pub(crate) async fn authenticate_sso(
        &self,
        sso: &SingleSignOn,
        bearer: &str,
        meta: &RequestMeta,
    ) -> Result<(Principal, Option<time::OffsetDateTime>)> {
        let token = sso.verifier.verify(bearer).await.map_err(|e| refuse(&e.to_string()))?;
        let first_use = sso.first_use(bearer, &token);
        let role = sso.role_of(&token);
        let (email, display_name) = profile_of(&token)?;

        let user = match self.store.find_identity(&token.issuer, &token.subject).await? {
            Some((tenant, user)) => {
                let user = self.store.get_user(tenant, user).await.map_err(|_| refuse("the linked user is gone"))?;
                if user.disabled {
                    if first_use {
                        self.audit(
                            tenant,
                            meta,
                            AuditRecord::new("auth.sso_login", "user", user.id)
                                .outcome(Outcome::Failure)
                                .detail(serde_json::json!({"reason": "disabled"})),
                        )
                        .await;
                    }
                    return Err(refuse("the user is disabled"));
                }
                if !issued_after(&token, user.tokens_valid_after) {
                    return Err(refuse("the token was issued before the user's sessions were ended"));
                }
                self.follow_claims(user, &email, &display_name, role, meta).await
            }
            None => self.provision(sso, &token, email, display_name, role, meta).await?,
        };
        if self.tenant(user.tenant_id).await?.settings.require_mfa && !multi_factor(&token) {
            if first_use {
                self.audit(
                    user.tenant_id,
                    meta,
                    AuditRecord::new("auth.sso_login", "user", user.id)
                        .outcome(Outcome::Failure)
                        .detail(serde_json::json!({"reason": "mfa_missing"})),
                )
                .await;
            }
            return Err(refuse("the tenant requires MFA and the token's amr shows a single factor"));
        }
        if first_use {
            self.audit(
                user.tenant_id,
                meta,
                AuditRecord::new("auth.sso_login", "user", user.id)
                    .detail(serde_json::json!({"issuer": token.issuer, "role": user.role.as_str()})),
            )
            .await;
        }
        // A JWT is a sign-in of its own; its hash names the "session" for rate limits and logs.
        let session: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        let mut id = [0u8; 16];
        id.copy_from_slice(&session[..16]);
        let principal = Principal {
            tenant_id: user.tenant_id,
            user_id: user.id,
            role: user.role,
            credential: Credential::Session(SessionId(uuid::Uuid::from_bytes(id))),
            must_change_password: false,
            // The issuer's `amr` answers for the second factor (checked above).
            mfa_enrollment_pending: false,
        };
        let expires_at = token
            .claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .and_then(|exp| time::OffsetDateTime::from_unix_timestamp(exp).ok());
        Ok((principal, expires_at))
    }

    /// Brings the stored profile in line with the claims; the sign-in goes on with the stored
    /// one when that cannot be done (email taken, last admin).
    async fn follow_claims(&self, user: User, email: &str, display_name: &str, role: Role, meta: &RequestMeta) -> User {
        if user.email == email && user.display_name == display_name && user.role == role {
            return user;
        }
        match self.store.update_identity_profile(user.tenant_id, user.id, email, display_name, role).await {
            Ok(updated) => {
                self.audit(
                    user.tenant_id,
                    meta,
                    AuditRecord::new("user.sso_updated", "user", user.id).detail(serde_json::json!({
                        "email_changed": user.email != updated.email,
                        "name_changed": user.display_name != updated.display_name,
                        "role": {"from": user.role.as_str(), "to": updated.role.as_str()},
                    })),
                )
                .await;
                updated
            }
            Err(e) => {
                tracing::warn!(user = %user.id, error = %e, "the issuer's claims could not be applied to the user");
                user
            }
        }
    }

    async fn provision(
        &self,
        sso: &SingleSignOn,
        token: &VerifiedToken,
        email: String,
        display_name: String,
        role: Role,
        meta: &RequestMeta,
    ) -> Result<User> {
        let tenant = self.sso_tenant(sso, token).await?;
        let new_user = NewUser {
            id: UserId::new(),
            email,
            display_name,
            role,
            first_user_becomes_admin: false,
            password_hash: None,
            must_change_password: false,
        };
        match self.store.provision_identity(tenant, new_user, &token.issuer, &token.subject).await {
            Ok(user) => {
                self.audit(
                    tenant,
                    meta,
                    AuditRecord::new("user.provisioned", "user", user.id)
                        .detail(serde_json::json!({"issuer": token.issuer, "role": user.role.as_str()})),
                )
                .await;
                Ok(user)
            }
            // A concurrent first request of the same user won: use what it made.
            Err(StoreError::Constraint(c)) if c == constraints::IDENTITY_UNIQUE => {
                let (tenant, user) = self
                    .store
                    .find_identity(&token.issuer, &token.subject)
                    .await?
                    .ok_or_else(|| refuse("the identity vanished"))?;
                Ok(self.store.get_user(tenant, user).await?)
            }
            Err(StoreError::Constraint(c)) if c == constraints::USER_EMAIL_UNIQUE => {
                Err(refuse("the token's email address belongs to another account"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant a first sign-in joins.
    async fn sso_tenant(&self, sso: &SingleSignOn, token: &VerifiedToken) -> Result<TenantId> {
        let default = || async { Ok(self.store.default_tenant(&self.config.default_tenant_name).await?.id) };
        let Some(claim) = &sso.tenant_claim else {
            return default().await;
        };
        let value = token
            .claims
            .get(claim)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && v.len() <= 255)
            .ok_or_else(|| refuse("the tenant claim is missing"))?;
        if let Some(tenant) = self.store.find_sso_tenant(&token.issuer, value).await? {
            return Ok(tenant);
        }
        let name = match sso.tenants.get(value) {
            Some(target) if target == DEFAULT_TENANT_TARGET => return default().await,
            Some(name) => name.clone(),
            None if sso.auto_create_tenants => value.chars().take(100).collect(),
            None => return Err(refuse("the token's tenant is not mapped to a Conclave tenant")),
        };
        let tenant = self.store.create_sso_tenant(&token.issuer, value, &name).await?;
        Ok(tenant)
    }
}

/// Whether the token was issued (`iat`) at or after the user's cut-off, if there is one. `iat`
/// has whole seconds, so a token issued in the same second as the cut-off but after it is refused
/// too (the client gets another); a token without `iat` cannot show it is newer.
fn issued_after(token: &VerifiedToken, cut_off: Option<time::OffsetDateTime>) -> bool {
    let Some(cut_off) = cut_off else { return true };
    token
        .claims
        .get("iat")
        .and_then(Value::as_i64)
        .and_then(|iat| time::OffsetDateTime::from_unix_timestamp(iat).ok())
        .is_some_and(|iat| iat >= cut_off)
}

/// The email address and display name the claims give, normalised.
fn profile_of(token: &VerifiedToken) -> Result<(String, String)> {
    let text = |name: &str| token.claims.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let email = text("email")
        .or_else(|| text("preferred_username").filter(|u| u.contains('@')))
        .ok_or_else(|| refuse("the token carries no email address"))?;
    let name: String = text("name")
        .unwrap_or(email)
        .chars()
        .filter(|c| !c.is_control())
        .take(super::accounts::MAX_DISPLAY_NAME_CHARS)
        .collect();
    let name = if name.trim().is_empty() { email.to_owned() } else { name };
    super::accounts::validate_identity(email, &name).map_err(|_| refuse("the token's email or name is unusable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;
    #[async_trait::async_trait]
    impl TokenVerifier for Never {
        async fn verify(&self, _: &str) -> std::result::Result<VerifiedToken, conclave_auth::oidc::OidcError> {
            Err(conclave_auth::oidc::OidcError::Malformed)
        }
    }

    fn token(claims: Value) -> VerifiedToken {
        VerifiedToken {
            issuer: "https://issuer".into(),
            subject: "s".into(),
            claims: claims.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn multi_factor_needs_mfa_or_two_kinds_of_factor_in_amr() {
        let with = |amr: Value| token(serde_json::json!({"sub": "s", "amr": amr}));
        assert!(multi_factor(&with(serde_json::json!(["pwd", "mfa"]))), "Entra ID's MFA sign-in");
        assert!(multi_factor(&with(serde_json::json!(["hwk", "pin"]))), "a security key with its PIN");
        assert!(multi_factor(&with(serde_json::json!(["pwd", "otp"]))));
        assert!(!multi_factor(&with(serde_json::json!(["pwd"]))));
        assert!(!multi_factor(&with(serde_json::json!(["otp"]))), "one factor, even a possession one");
        assert!(!multi_factor(&with(serde_json::json!("mfa"))), "amr is an array");
        assert!(!multi_factor(&token(serde_json::json!({"sub": "s"}))));
    }

    #[test]
    fn the_highest_mapped_role_wins_and_unmapped_names_are_members() {
        let roles = HashMap::from([("Conclave.Admin".to_owned(), Role::Admin), ("auditors".to_owned(), Role::Auditor)]);
        let sso = SingleSignOn::new(
            Arc::new(Never),
            "https://issuer".into(),
            "spa".into(),
            vec![],
            None,
            HashMap::new(),
            false,
            vec!["roles".into(), "groups".into()],
            roles,
        );
        assert_eq!(
            sso.role_of(&token(serde_json::json!({"roles": ["Conclave.Admin"], "groups": ["auditors"]}))),
            Role::Admin
        );
        assert_eq!(sso.role_of(&token(serde_json::json!({"groups": ["auditors", "x"]}))), Role::Auditor);
        assert_eq!(sso.role_of(&token(serde_json::json!({"roles": "auditors"}))), Role::Auditor);
        assert_eq!(
            sso.role_of(&token(serde_json::json!({"roles": ["Admin"], "other": ["Conclave.Admin"]}))),
            Role::Member
        );
        assert_eq!(sso.role_of(&token(serde_json::json!({}))), Role::Member);
    }

    #[test]
    fn tokens_issued_before_the_cut_off_are_refused() {
        let cut = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap() + time::Duration::milliseconds(500);
        let at = |iat: i64| token(serde_json::json!({"iat": iat}));
        assert!(issued_after(&at(1_600_000_000), None), "no cut-off: any token");
        assert!(!issued_after(&at(1_699_999_999), Some(cut)));
        assert!(!issued_after(&at(1_700_000_000), Some(cut)), "the same second is not provably after");
        assert!(issued_after(&at(1_700_000_001), Some(cut)));
        assert!(!issued_after(&token(serde_json::json!({})), Some(cut)), "no iat, no proof");
    }

    #[test]
    fn profiles_come_from_email_or_an_email_like_username() {
        let p = profile_of(&token(serde_json::json!({"email": "Ada@Example.com", "name": "Ada"}))).unwrap();
        assert_eq!(p, ("ada@example.com".into(), "Ada".into()));
        let p = profile_of(&token(serde_json::json!({"preferred_username": "bob@example.com"}))).unwrap();
        assert_eq!(p, ("bob@example.com".into(), "bob@example.com".into()));
        assert!(profile_of(&token(serde_json::json!({"preferred_username": "bob"}))).is_err());
        let long = profile_of(&token(serde_json::json!({"email": "c@example.com", "name": "x".repeat(300)}))).unwrap();
        assert_eq!(long.1.chars().count(), 100);
    }
}
