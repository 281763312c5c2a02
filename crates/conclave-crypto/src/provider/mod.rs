//! Key providers: where each tenant's key-encryption key (KEK) lives and is used. The KEK never
//! leaves its provider through this interface; callers hand in a key and get a [`WrappedKey`]
//! back, and the reverse.
//!
//! Implementations: [`LocalKeyProvider`] (a key file on the server's disk, for self-hosting and
//! development; wrapped-key format 1) and, in crate `conclave-azure`, the Azure Key Vault provider
//! (`RSA-OAEP-256` on an RSA-HSM key; wrapped-key format 2, see [`crate::wrapped`]).

pub mod keyfile;
mod keyring;
mod local;

pub use local::{LocalCheckpointSigner, LocalKeyProvider};

use async_trait::async_trait;
use uuid::Uuid;

use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::{Key, KeyId};
use crate::wrapped::WrappedKey;

/// What a provider is, for the admin console, the audit log and `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The kind of provider: `local`, `azure-key-vault`, …
    pub provider: String,
    /// The key id recorded in the keys it wraps.
    pub key_id: KeyId,
}

/// A tenant's versioned key-encryption key.
///
/// Errors tell apart what the server must treat differently:
/// [`KeyUnavailable`](CryptoError::KeyUnavailable) (provider unreachable: retry),
/// [`KeyRevoked`](CryptoError::KeyRevoked) (the customer disabled the key: locked until they
/// enable it), [`VersionRetired`](CryptoError::VersionRetired) (the version's material is
/// destroyed: the data is gone for good), [`KeyNotFound`](CryptoError::KeyNotFound) (another
/// provider's key, an unknown version or tenant) and [`Integrity`](CryptoError::Integrity)
/// (wrong binding or altered bytes).
///
/// Every method refuses a binding whose tenant is not `tenant`.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Provider kind and key id.
    fn describe(&self) -> ProviderInfo;

    /// The tenant's current KEK version: the one [`wrap`](Self::wrap) uses.
    async fn current_version(&self, tenant: Uuid) -> Result<u32>;

    /// Wraps `key` under the tenant's current KEK version, bound to `binding`. The result records
    /// the key id and version.
    async fn wrap(&self, tenant: Uuid, key: &Key, binding: &Binding) -> Result<WrappedKey>;

    /// Unwraps with the KEK version recorded in `wrapped`.
    async fn unwrap(&self, tenant: Uuid, wrapped: &WrappedKey, binding: &Binding) -> Result<Key>;

    /// Adds a new KEK version and makes it current; returns it. Keys wrapped under older versions
    /// still unwrap until those versions are retired (rewrap them first).
    async fn rotate(&self, tenant: Uuid) -> Result<u32>;

    /// Destroys a version's material. Keys wrapped under it then fail with
    /// [`VersionRetired`](CryptoError::VersionRetired), including copies in backups. The
    /// current version cannot be retired: rotate first.
    async fn retire(&self, tenant: Uuid, version: u32) -> Result<()>;

    /// Whether the provider can be used right now, for readiness probes: a KMS provider asks the
    /// KMS for its key; a local provider is always ready.
    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// The check every provider makes (KMS providers in other crates too): a binding names the tenant
/// whose KEK is asked for.
pub fn check_tenant(tenant: Uuid, binding: &Binding) -> Result<()> {
    if binding.tenant() == tenant {
        Ok(())
    } else {
        Err(CryptoError::InvalidInput("the binding names another tenant"))
    }
}
