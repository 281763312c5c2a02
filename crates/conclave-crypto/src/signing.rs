//! Signing keys for audit checkpoints: an asymmetric key held by the key provider, so whoever can
//! write the database cannot forge a checkpoint, and anyone with the public key can check one
//! offline.
//!
//! Implementations: the local key provider keeps an Ed25519 key in its key file; the Azure Key
//! Vault provider signs with an EC-HSM key (`ES256`) through the vault's `sign` operation.

use async_trait::async_trait;

use crate::error::Result;

/// The signature schemes checkpoints may carry. Verifiers pin the algorithm from the public key
/// they trust, never from the signed document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032): 64-byte signatures.
    #[serde(rename = "Ed25519")]
    Ed25519,
    /// ECDSA P-256 with SHA-256 (RFC 7518 `ES256`): 64-byte `r || s` signatures.
    #[serde(rename = "ES256")]
    Es256,
}

/// A key that signs audit checkpoints.
#[async_trait]
pub trait CheckpointSigner: Send + Sync {
    /// The scheme [`sign`](Self::sign) uses.
    fn algorithm(&self) -> SignatureAlgorithm;

    /// Names the key and its version, recorded in each checkpoint so a verifier picks the right
    /// public key after a rotation.
    fn key_id(&self) -> String;

    /// The public key as DER `SubjectPublicKeyInfo`.
    async fn public_key(&self) -> Result<Vec<u8>>;

    /// Signs `message` (the checkpoint's canonical bytes).
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>>;
}
