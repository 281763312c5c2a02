//! Content columns (message text, titles, agent names and instructions) are one opaque,
//! versioned blob type, [`Sealed`], so that encryption arrives without a data migration.
//!
//! Format: the first byte names the format version; the rest is version-specific.
//! Version 0 is UTF-8 plaintext. Encrypted versions (AES-256-GCM under the conversation or tenant
//! key, with associated data naming the [`SealScope`]) are added by the key hierarchy.

use async_trait::async_trait;

use crate::error::{Error, Result};
use std::sync::Arc;

use conclave_crypto::Key;

use crate::ids::{AgentId, ConversationId, DocumentId, LibraryId, MessageId, TenantId, UserId};
use crate::libraries::WrappedKeyKind;

pub const FORMAT_PLAINTEXT: u8 = 0;

/// Bytes as stored. Never displayed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub Vec<u8>);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed(v{}, {} bytes)", self.0.first().copied().unwrap_or(u8::MAX), self.0.len())
    }
}

impl Sealed {
    pub fn format(&self) -> Option<u8> {
        self.0.first().copied()
    }
}

/// What a sealed value belongs to: selects the key and becomes the associated data, so a value
/// copied into another row or field fails to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealScope {
    AgentName {
        tenant: TenantId,
        agent: AgentId,
    },
    AgentDescription {
        tenant: TenantId,
        agent: AgentId,
    },
    AgentInstructions {
        tenant: TenantId,
        agent: AgentId,
    },
    ConversationTitle {
        tenant: TenantId,
        conversation: ConversationId,
    },
    MessageContent {
        tenant: TenantId,
        conversation: ConversationId,
        message: MessageId,
    },
    LibraryName {
        tenant: TenantId,
        library: LibraryId,
    },
    LibraryDescription {
        tenant: TenantId,
        library: LibraryId,
    },
    DocumentName {
        tenant: TenantId,
        library: LibraryId,
        document: DocumentId,
    },
    /// The SHA-256 of a document version's plaintext (hex).
    DocumentDigest {
        tenant: TenantId,
        library: LibraryId,
        document: DocumentId,
        version: u64,
    },
    TotpSecret {
        tenant: TenantId,
        user: UserId,
    },
}

/// Seals and opens content. Async because opening may need a key from the key service.
#[async_trait]
pub trait ContentCodec: Send + Sync {
    async fn seal(&self, scope: SealScope, plaintext: &str) -> Result<Sealed>;
    async fn open(&self, scope: SealScope, sealed: &Sealed) -> Result<String>;

    /// Hands the codec a conversation's wrapped key, read together with other data (`None`:
    /// the conversation has none yet; one is made and stored now), so that sealing and opening
    /// its content next need no read of their own.
    async fn prepare_conversation_key(
        &self,
        _tenant: TenantId,
        _conversation: ConversationId,
        _wrapped: Option<&[u8]>,
    ) -> Result<()> {
        Ok(())
    }

    /// Readiness: the key service behind the codec answers (a KMS may be unreachable).
    async fn ready(&self) -> Result<()> {
        Ok(())
    }

    /// A new library key (LEK), wrapped by the tenant's master key: the bytes to store and the
    /// master-key version that wrapped them.
    async fn new_library_key(&self, _tenant: TenantId, _library: LibraryId) -> Result<(Vec<u8>, u32)> {
        Err(no_key_hierarchy())
    }

    /// A new key for one document version (FEK) and its wrapping under the library's key.
    async fn new_document_key(
        &self,
        _tenant: TenantId,
        _library: LibraryId,
        _document: DocumentId,
        _version: u64,
    ) -> Result<(Arc<Key>, Vec<u8>)> {
        Err(no_key_hierarchy())
    }

    /// Unwraps a document version's key.
    async fn document_key(
        &self,
        _tenant: TenantId,
        _library: LibraryId,
        _document: DocumentId,
        _version: u64,
        _wrapped: &[u8],
    ) -> Result<Arc<Key>> {
        Err(no_key_hierarchy())
    }

    /// The keyed tag of a normalised document name in a library (equal names, equal tags).
    async fn name_tag(&self, _tenant: TenantId, _library: LibraryId, _name: &str) -> Result<Vec<u8>> {
        Err(no_key_hierarchy())
    }

    /// The keyed tag that vouches for a browser where `user` signed in before (the login-device
    /// cookie), under the tenant's key.
    async fn login_device_tag(&self, _tenant: TenantId, _user: UserId, _nonce: &[u8]) -> Result<Vec<u8>> {
        Err(no_key_hierarchy())
    }

    /// The provider of the tenants' master keys, where there is one.
    fn key_provider(&self) -> Option<Arc<dyn conclave_crypto::KeyProvider>> {
        None
    }

    /// Unwraps a key wrapped by the tenant's master key and forgets it: whether the configured
    /// provider can still open it (a restored backup, a retired version). An unreachable provider
    /// is an error, not an answer.
    async fn check_wrapped(
        &self,
        _tenant: TenantId,
        _kind: WrappedKeyKind,
        _id: uuid::Uuid,
        _wrapped: &[u8],
    ) -> Result<KeyCheck> {
        Err(no_key_hierarchy())
    }

    /// Unwraps a key wrapped by the tenant's master key and wraps it again under the current
    /// master-key version: the new bytes and that version. Content is not touched.
    async fn rewrap(
        &self,
        _tenant: TenantId,
        _kind: WrappedKeyKind,
        _id: uuid::Uuid,
        _wrapped: &[u8],
    ) -> Result<(Vec<u8>, u32)> {
        Err(no_key_hierarchy())
    }
}

/// Whether a wrapped key opens with the configured master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Opens,
    /// It never will with this provider: why (retired or unknown version, revoked, altered).
    Unreadable(String),
}

fn no_key_hierarchy() -> Error {
    Error::Internal("documents and keys need the key hierarchy (an envelope codec)".into())
}

/// Format 0: content kept as UTF-8. Used until the key hierarchy is configured.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlaintextCodec;

#[async_trait]
impl ContentCodec for PlaintextCodec {
    async fn seal(&self, _scope: SealScope, plaintext: &str) -> Result<Sealed> {
        let mut bytes = Vec::with_capacity(plaintext.len() + 1);
        bytes.push(FORMAT_PLAINTEXT);
        bytes.extend_from_slice(plaintext.as_bytes());
        Ok(Sealed(bytes))
    }

    async fn open(&self, _scope: SealScope, sealed: &Sealed) -> Result<String> {
        match sealed.0.split_first() {
            Some((&FORMAT_PLAINTEXT, rest)) => String::from_utf8(rest.to_vec())
                .map_err(|_| Error::Internal("stored content is not valid UTF-8".into())),
            Some((v, _)) => Err(Error::Internal(format!("content format {v} needs its key provider"))),
            None => Err(Error::Internal("empty content blob".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plaintext_round_trip_and_version_byte() {
        let scope = SealScope::AgentName { tenant: TenantId::new(), agent: AgentId::new() };
        let sealed = PlaintextCodec.seal(scope, "Counsel ✓").await.unwrap();
        assert_eq!(sealed.format(), Some(FORMAT_PLAINTEXT));
        assert_eq!(PlaintextCodec.open(scope, &sealed).await.unwrap(), "Counsel ✓");
        assert!(PlaintextCodec.open(scope, &Sealed(vec![9, 1, 2])).await.is_err());
        assert!(PlaintextCodec.open(scope, &Sealed(vec![])).await.is_err());
        assert!(!format!("{sealed:?}").contains("Counsel"));
    }
}
