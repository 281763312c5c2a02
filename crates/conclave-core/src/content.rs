//! Content columns (message text, titles, agent names and instructions) are one opaque,
//! versioned blob type, [`Sealed`], so that encryption arrives without a data migration.
//!
//! Format: the first byte names the format version; the rest is version-specific.
//! Version 0 is UTF-8 plaintext. Encrypted versions (AES-256-GCM under the conversation or tenant
//! key, with associated data naming the [`SealScope`]) are added by the key hierarchy.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::ids::{AgentId, ConversationId, MessageId, TenantId};

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
    AgentName { tenant: TenantId, agent: AgentId },
    AgentDescription { tenant: TenantId, agent: AgentId },
    AgentInstructions { tenant: TenantId, agent: AgentId },
    ConversationTitle { tenant: TenantId, conversation: ConversationId },
    MessageContent { tenant: TenantId, conversation: ConversationId, message: MessageId },
}

/// Seals and opens content. Async because opening may need a key from the key service.
#[async_trait]
pub trait ContentCodec: Send + Sync {
    async fn seal(&self, scope: SealScope, plaintext: &str) -> Result<Sealed>;
    async fn open(&self, scope: SealScope, sealed: &Sealed) -> Result<String>;

    /// Readiness: the key service behind the codec answers (a KMS may be unreachable).
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
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
