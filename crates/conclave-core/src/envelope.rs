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
use conclave_crypto::{
    Binding, CryptoError, FieldName, Key, KeyCache, KeyId, KeyProvider, KeyRef, Purpose, WrappedKey,
};

use crate::content::{ContentCodec, KeyCheck, PlaintextCodec, SealScope, Sealed, FORMAT_PLAINTEXT};
use crate::error::{Error, Result};
use crate::ids::{ConversationId, DocumentId, LibraryId, TenantId, UserId};
use crate::libraries::WrappedKeyKind;
use crate::store::Store;

/// Where a wrapped key lives: the tenant's (TEK), one conversation's (CEK) or one library's (LEK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeySlot {
    Tenant(TenantId),
    Conversation(TenantId, ConversationId),
    Library(TenantId, LibraryId),
}

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
            | SealScope::AgentInstructions { tenant, .. }
            | SealScope::LibraryName { tenant, .. }
            | SealScope::LibraryDescription { tenant, .. }
            | SealScope::TotpSecret { tenant, .. } => self.tenant_key(tenant).await,
            SealScope::ConversationTitle { tenant, conversation }
            | SealScope::MessageContent { tenant, conversation, .. } => {
                self.conversation_key(tenant, conversation).await
            }
            SealScope::DocumentName { tenant, library, .. } | SealScope::DocumentDigest { tenant, library, .. } => {
                self.library_key(tenant, library).await
            }
        }
    }

    async fn tenant_key(&self, tenant: TenantId) -> Result<Arc<Key>> {
        let binding = Binding::tek(tenant.0);
        let slot = KeySlot::Tenant(tenant);
        let wrapped = match self.cached_wrapped(slot) {
            Some(w) => w,
            None => {
                let w = match self.store.tenant_key(tenant).await? {
                    Some(w) => w,
                    None => {
                        let (fresh, version) = self.fresh_wrapped(tenant, &binding).await?;
                        self.store.put_tenant_key(tenant, &fresh, version).await?
                    }
                };
                self.remember_wrapped(slot, &w);
                w
            }
        };
        self.unwrap(tenant, &wrapped, &binding).await
    }

    async fn conversation_key(&self, tenant: TenantId, conversation: ConversationId) -> Result<Arc<Key>> {
        let binding = Binding::cek(tenant.0, conversation.0);
        let slot = KeySlot::Conversation(tenant, conversation);
        let wrapped = match self.cached_wrapped(slot) {
            Some(w) => w,
            None => {
                let stored = self.store.conversation_key(tenant, conversation).await?;
                self.known_conversation_key(tenant, conversation, stored).await?
            }
        };
        self.unwrap(tenant, &wrapped, &binding).await
    }

    /// The conversation's wrapped key as read from the store (`None`: made and stored now),
    /// remembered for next time.
    async fn known_conversation_key(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        stored: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let w = match stored {
            Some(w) => w,
            None => {
                let binding = Binding::cek(tenant.0, conversation.0);
                let (fresh, version) = self.fresh_wrapped(tenant, &binding).await?;
                self.store.put_conversation_key(tenant, conversation, &fresh, version).await?
            }
        };
        self.remember_wrapped(KeySlot::Conversation(tenant, conversation), &w);
        Ok(w)
    }

    /// A library's key; libraries get theirs when they are created.
    async fn library_key(&self, tenant: TenantId, library: LibraryId) -> Result<Arc<Key>> {
        let binding = Binding::lek(tenant.0, library.0);
        let slot = KeySlot::Library(tenant, library);
        let wrapped = match self.cached_wrapped(slot) {
            Some(w) => w,
            None => {
                let w = self.store.library_key(tenant, library).await?.ok_or(Error::NotFound("library"))?;
                self.remember_wrapped(slot, &w);
                w
            }
        };
        self.unwrap(tenant, &wrapped, &binding).await
    }

    /// A fresh key wrapped by the tenant's master key, and the master-key version used.
    async fn fresh_wrapped(&self, tenant: TenantId, binding: &Binding) -> Result<(Vec<u8>, u32)> {
        let key = Key::generate();
        let wrapped = self.provider.wrap(tenant.0, &key, binding).await.map_err(key_error)?;
        Ok((wrapped.to_bytes(), wrapped.kek().version))
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
        // A tenant-level field named after the user: the secret opens for that user only.
        SealScope::TotpSecret { tenant, user } => {
            Binding::tenant_field(tenant.0, field(&format!("user.{}.totp", user.0))?)
        }
        SealScope::MessageContent { tenant, conversation, message } => {
            Binding::message_content(tenant.0, conversation.0, message.0)
        }
        SealScope::LibraryName { tenant, library } => Binding::library_field(tenant.0, library.0, field("name")?),
        SealScope::LibraryDescription { tenant, library } => {
            Binding::library_field(tenant.0, library.0, field("description")?)
        }
        SealScope::DocumentName { tenant, library, document } => {
            Binding::document_name(tenant.0, library.0, document.0)
        }
        SealScope::DocumentDigest { tenant, library, document, version } => {
            Binding::document_name(tenant.0, library.0, document.0)
                .with_document_version(version)
                .with_field(field("sha256")?)
        }
    })
}

/// Key-service failures are 503s (nothing is lost; the data opens again when the key does);
/// anything else means the stored bytes are not what was written.
pub(crate) fn key_error(e: CryptoError) -> Error {
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

    async fn prepare_conversation_key(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        wrapped: Option<&[u8]>,
    ) -> Result<()> {
        if self.cached_wrapped(KeySlot::Conversation(tenant, conversation)).is_none() {
            self.known_conversation_key(tenant, conversation, wrapped.map(<[u8]>::to_vec)).await?;
        }
        Ok(())
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

    async fn new_library_key(&self, tenant: TenantId, library: LibraryId) -> Result<(Vec<u8>, u32)> {
        self.fresh_wrapped(tenant, &Binding::lek(tenant.0, library.0)).await
    }

    async fn new_document_key(
        &self,
        tenant: TenantId,
        library: LibraryId,
        document: DocumentId,
        version: u64,
    ) -> Result<(Arc<Key>, Vec<u8>)> {
        let lek = self.library_key(tenant, library).await?;
        let fek = Key::generate();
        let binding = Binding::fek(tenant.0, library.0, document.0, version);
        let wrapped = conclave_crypto::wrap_key(&lek, &lek_ref(library)?, &fek, &binding).map_err(key_error)?;
        Ok((Arc::new(fek), wrapped.to_bytes()))
    }

    async fn document_key(
        &self,
        tenant: TenantId,
        library: LibraryId,
        document: DocumentId,
        version: u64,
        wrapped: &[u8],
    ) -> Result<Arc<Key>> {
        let lek = self.library_key(tenant, library).await?;
        let wrapped = WrappedKey::parse(wrapped).map_err(integrity)?;
        let binding = Binding::fek(tenant.0, library.0, document.0, version);
        conclave_crypto::unwrap_key(&lek, &wrapped, &binding).map(Arc::new).map_err(integrity)
    }

    async fn name_tag(&self, tenant: TenantId, library: LibraryId, name: &str) -> Result<Vec<u8>> {
        let lek = self.library_key(tenant, library).await?;
        let binding = Binding::new(Purpose::DocumentName, tenant.0)
            .with_library(library.0)
            .with_field(FieldName::from_static("name-tag"));
        Ok(conclave_crypto::lookup_tag(&lek, &binding, name.as_bytes()).to_vec())
    }

    async fn login_device_tag(&self, tenant: TenantId, user: UserId, nonce: &[u8]) -> Result<Vec<u8>> {
        let tek = self.tenant_key(tenant).await?;
        let binding = Binding::new(Purpose::TenantField, tenant.0).with_field(FieldName::from_static("login-device"));
        let mut value = user.0.as_bytes().to_vec();
        value.extend_from_slice(nonce);
        Ok(conclave_crypto::lookup_tag(&tek, &binding, &value).to_vec())
    }

    fn key_provider(&self) -> Option<Arc<dyn KeyProvider>> {
        Some(self.provider.clone())
    }

    async fn check_wrapped(
        &self,
        tenant: TenantId,
        kind: WrappedKeyKind,
        id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<KeyCheck> {
        let opened = match WrappedKey::parse(wrapped) {
            Ok(wrapped) => self.provider.unwrap(tenant.0, &wrapped, &master_binding(tenant, kind, id)).await.map(drop),
            Err(e) => Err(e),
        };
        match opened {
            Ok(()) => Ok(KeyCheck::Opens),
            Err(e @ CryptoError::KeyUnavailable(_)) => Err(key_error(e)),
            Err(e) => Ok(KeyCheck::Unreadable(e.to_string())),
        }
    }

    async fn rewrap(
        &self,
        tenant: TenantId,
        kind: WrappedKeyKind,
        id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<(Vec<u8>, u32)> {
        let binding = master_binding(tenant, kind, id);
        let old = WrappedKey::parse(wrapped).map_err(integrity)?;
        let key = self.provider.unwrap(tenant.0, &old, &binding).await.map_err(key_error)?;
        let new = self.provider.wrap(tenant.0, &key, &binding).await.map_err(key_error)?;
        self.wrapped.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok((new.to_bytes(), new.kek().version))
    }
}

/// What a key wrapped by the tenant's master key is bound to.
fn master_binding(tenant: TenantId, kind: WrappedKeyKind, id: uuid::Uuid) -> Binding {
    match kind {
        WrappedKeyKind::Tenant => Binding::tek(tenant.0),
        WrappedKeyKind::Library => Binding::lek(tenant.0, id),
        WrappedKeyKind::Conversation => Binding::cek(tenant.0, id),
    }
}

/// The reference a library key writes into the document keys it wraps.
fn lek_ref(library: LibraryId) -> Result<KeyRef> {
    let id = KeyId::new(format!("lek:{}", library.0)).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(KeyRef::new(id, 1))
}

/// Stored key bytes that fail to parse or open were altered (or copied from another row).
fn integrity(e: CryptoError) -> Error {
    match e {
        CryptoError::KeyUnavailable { .. } | CryptoError::KeyRevoked { .. } | CryptoError::VersionRetired { .. } => {
            key_error(e)
        }
        other => {
            tracing::error!(error = %other, "a stored document key failed its integrity check");
            Error::Internal("a stored document key failed its integrity check".into())
        }
    }
}
