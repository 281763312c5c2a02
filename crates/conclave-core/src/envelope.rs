//! Content encrypted under the key hierarchy: agent fields under the tenant's key (TEK), a
//! conversation's title and messages under its own key (CEK). Both keys are generated here on
//! first use and stored only wrapped by the tenant's master key (KEK) in the key provider;
//! unwrapped keys are cached for a short, configured time, so revoking the KEK locks the data
//! within that time. Every ciphertext is bound to its tenant, purpose and row: copied to another
//! row it does not open. Rows written before encryption (format 0) still open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conclave_crypto::{Binding, CryptoError, FieldName, Key, KeyCache, KeyProvider, WrappedKey};

use crate::content::{ContentCodec, PlaintextCodec, SealScope, Sealed, FORMAT_PLAINTEXT};
use crate::error::{Error, Result};
use crate::ids::{ConversationId, TenantId};
use crate::store::Store;

/// Where a wrapped key lives: the tenant's (TEK) or one conversation's (CEK).
type KeySlot = (TenantId, Option<ConversationId>);

pub struct EnvelopeCodec {
    store: Arc<dyn Store>,
    provider: Arc<dyn KeyProvider>,
    cache: KeyCache,
    /// Wrapped keys as read from the store (no secret in them), so that opening the fifty
    /// messages of a page reads the conversation's key row once, not fifty times.
    wrapped: Mutex<HashMap<KeySlot, (Vec<u8>, Instant)>>,
    ttl: Duration,
}

impl EnvelopeCodec {
    /// `cache_ttl`: how long an unwrapped key is kept in memory (0 disables the cache).
    pub fn new(store: Arc<dyn Store>, provider: Arc<dyn KeyProvider>, cache_ttl: Duration) -> Self {
        Self { store, provider, cache: KeyCache::new(cache_ttl, 10_000), wrapped: Mutex::default(), ttl: cache_ttl }
    }

    fn cached_wrapped(&self, slot: KeySlot) -> Option<Vec<u8>> {
        let map = self.wrapped.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&slot).filter(|(_, at)| at.elapsed() < self.ttl).map(|(w, _)| w.clone())
    }

    fn remember_wrapped(&self, slot: KeySlot, wrapped: &[u8]) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.wrapped.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 10_000 {
            map.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        map.insert(slot, (wrapped.to_vec(), Instant::now()));
    }

    /// The key that protects `scope`, created (and stored wrapped) on first use.
    async fn key_for(&self, scope: SealScope) -> Result<Arc<Key>> {
        match scope {
            SealScope::AgentName { tenant, .. }
            | SealScope::AgentDescription { tenant, .. }
            | SealScope::AgentInstructions { tenant, .. } => {
                let slot = (tenant, None);
                let wrapped = match self.cached_wrapped(slot) {
                    Some(w) => w,
                    None => {
                        let w = match self.store.tenant_key(tenant).await? {
                            Some(w) => w,
                            None => {
                                let fresh = self.fresh_wrapped(tenant, &Binding::tek(tenant.0)).await?;
                                self.store.put_tenant_key(tenant, &fresh).await?
                            }
                        };
                        self.remember_wrapped(slot, &w);
                        w
                    }
                };
                self.unwrap(tenant, &wrapped, &Binding::tek(tenant.0)).await
            }
            SealScope::ConversationTitle { tenant, conversation }
            | SealScope::MessageContent { tenant, conversation, .. } => {
                self.conversation_key(tenant, conversation).await
            }
        }
    }

    async fn conversation_key(&self, tenant: TenantId, conversation: ConversationId) -> Result<Arc<Key>> {
        let binding = Binding::cek(tenant.0, conversation.0);
        let slot = (tenant, Some(conversation));
        let wrapped = match self.cached_wrapped(slot) {
            Some(w) => w,
            None => {
                let w = match self.store.conversation_key(tenant, conversation).await? {
                    Some(w) => w,
                    None => {
                        let fresh = self.fresh_wrapped(tenant, &binding).await?;
                        self.store.put_conversation_key(tenant, conversation, &fresh).await?
                    }
                };
                self.remember_wrapped(slot, &w);
                w
            }
        };
        self.unwrap(tenant, &wrapped, &binding).await
    }

    async fn fresh_wrapped(&self, tenant: TenantId, binding: &Binding) -> Result<Vec<u8>> {
        let key = Key::generate();
        let wrapped = self.provider.wrap(tenant.0, &key, binding).await.map_err(key_error)?;
        Ok(wrapped.to_bytes())
    }

    async fn unwrap(&self, tenant: TenantId, wrapped: &[u8], binding: &Binding) -> Result<Arc<Key>> {
        let wrapped = WrappedKey::parse(wrapped).map_err(key_error)?;
        self.cache.get_or_unwrap(self.provider.as_ref(), tenant.0, &wrapped, binding).await.map_err(key_error)
    }
}

fn binding(scope: SealScope) -> Result<Binding> {
    let field = |name: &str| FieldName::new(name).map_err(|e| Error::Internal(e.to_string()));
    Ok(match scope {
        SealScope::AgentName { tenant, agent } => Binding::agent_field(tenant.0, agent.0, field("name")?),
        SealScope::AgentDescription { tenant, agent } => Binding::agent_field(tenant.0, agent.0, field("description")?),
        SealScope::AgentInstructions { tenant, agent } => {
            Binding::agent_field(tenant.0, agent.0, field("instructions")?)
        }
        SealScope::ConversationTitle { tenant, conversation } => Binding::conversation_title(tenant.0, conversation.0),
        SealScope::MessageContent { tenant, conversation, message } => {
            Binding::message_content(tenant.0, conversation.0, message.0)
        }
    })
}

/// Key-service failures are 503s (nothing is lost; the data opens again when the key does);
/// anything else means the stored bytes are not what was written.
fn key_error(e: CryptoError) -> Error {
    match e {
        CryptoError::KeyUnavailable { .. } => Error::Unavailable { service: "key service", detail: e.to_string() },
        CryptoError::KeyRevoked { .. } | CryptoError::VersionRetired { .. } => {
            Error::Unavailable { service: "organisation's master key", detail: e.to_string() }
        }
        other => Error::Internal(format!("content key: {other}")),
    }
}

#[async_trait]
impl ContentCodec for EnvelopeCodec {
    async fn seal(&self, scope: SealScope, plaintext: &str) -> Result<Sealed> {
        let key = self.key_for(scope).await?;
        let bytes = conclave_crypto::seal(&key, &binding(scope)?, plaintext.as_bytes()).map_err(key_error)?;
        Ok(Sealed(bytes))
    }

    async fn ready(&self) -> Result<()> {
        self.provider.check().await.map_err(key_error)
    }

    async fn open(&self, scope: SealScope, sealed: &Sealed) -> Result<String> {
        if sealed.format() == Some(FORMAT_PLAINTEXT) {
            return PlaintextCodec.open(scope, sealed).await;
        }
        let key = self.key_for(scope).await?;
        let bytes = conclave_crypto::open(&key, &binding(scope)?, &sealed.0).map_err(|e| match e {
            CryptoError::Integrity
            | CryptoError::Malformed { .. }
            | CryptoError::Truncated
            | CryptoError::UnsupportedVersion { .. } => {
                tracing::error!(error = %e, "stored content failed its integrity check");
                Error::Internal("stored content failed its integrity check".into())
            }
            other => key_error(other),
        })?;
        String::from_utf8(bytes).map_err(|_| Error::Internal("decrypted content is not UTF-8".into()))
    }
}
