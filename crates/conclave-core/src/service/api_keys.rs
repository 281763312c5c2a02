//! API keys: created by a signed-in user, shown once, stored as a hash, optionally limited to
//! scopes and an expiry.

use conclave_auth::{CredentialKind, IssuedCredential};
use secrecy::ExposeSecret;
use time::OffsetDateTime;

use crate::app::{AuditRecord, Conclave};
use crate::error::{Error, FieldError, Result, StoreError};
use crate::ids::ApiKeyId;
use crate::page::{Page, PageRequest};
use crate::principal::{Caller, Scope};
use crate::records::{ApiKey, ApiKeyRecord};
use crate::views::{ApiKeyView, CreatedApiKeyView};

pub const MAX_API_KEY_NAME_CHARS: usize = 100;

pub struct NewApiKey {
    pub name: String,
    pub expires_at: Option<OffsetDateTime>,
    pub scopes: Option<Vec<String>>,
}

impl Conclave {
    pub async fn create_api_key(&self, caller: &Caller, input: NewApiKey) -> Result<CreatedApiKeyView> {
        self.permit(caller, require_session(caller), "api_key.create.denied", "api_key", None).await?;
        let mut errors = Vec::new();
        let name = input.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_API_KEY_NAME_CHARS {
            errors.push(FieldError::new(
                "name",
                format!("Give the key a name of 1 to {MAX_API_KEY_NAME_CHARS} characters."),
            ));
        }
        if input.expires_at.is_some_and(|t| t <= crate::clock::now()) {
            errors.push(FieldError::new("expires_at", "The expiry must be in the future."));
        }
        let mut scopes = Vec::new();
        for (i, s) in input.scopes.unwrap_or_default().iter().enumerate() {
            match s.parse::<Scope>() {
                Ok(scope) if !scopes.contains(&scope) => scopes.push(scope),
                Ok(_) => {}
                Err(()) => errors.push(FieldError::new(
                    format!("scopes[{i}]"),
                    format!("Unknown scope '{s}'; known scopes: {}", Scope::ALL.map(Scope::as_str).join(", ")),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        let issued = IssuedCredential::new(CredentialKind::ApiKey);
        let key = ApiKey {
            tenant_id: caller.tenant(),
            id: ApiKeyId(issued.id),
            user_id: caller.user(),
            name,
            scopes,
            created_at: crate::clock::now(),
            expires_at: input.expires_at,
            last_used_at: None,
        };
        self.store.create_api_key(&ApiKeyRecord { key: key.clone(), secret_hash: issued.hash.0.to_vec() }).await?;
        self.audit_by(caller, AuditRecord::new("api_key.create", "api_key", key.id)).await;
        Ok(CreatedApiKeyView { api_key: view(&key), key: issued.token.expose_secret().to_owned() })
    }

    pub async fn list_api_keys(&self, caller: &Caller, page: PageRequest) -> Result<Page<ApiKeyView>> {
        Ok(self.store.list_api_keys(caller.tenant(), caller.user(), page).await?.map(|k| view(&k)))
    }

    pub async fn delete_api_key(&self, caller: &Caller, id: ApiKeyId) -> Result<()> {
        self.permit(caller, require_session(caller), "api_key.delete.denied", "api_key", Some(id.to_string())).await?;
        self.store.delete_api_key(caller.tenant(), caller.user(), id).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound("API key"),
            other => other.into(),
        })?;
        self.credentials.invalidate();
        self.audit_by(caller, AuditRecord::new("api_key.delete", "api_key", id)).await;
        Ok(())
    }
}

/// Managing credentials needs a signed-in person, not another credential.
fn require_session(caller: &Caller) -> Result<()> {
    if caller.principal.session_id().is_none() {
        return Err(Error::Forbidden("API keys are managed from a signed-in session, not with an API key.".into()));
    }
    Ok(())
}

pub(crate) fn view(k: &ApiKey) -> ApiKeyView {
    ApiKeyView {
        id: k.id,
        name: k.name.clone(),
        scopes: k.scopes.clone(),
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
    }
}
