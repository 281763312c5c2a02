//! [`KeyVaultKeyProvider`]: the tenants' KEK is an RSA-HSM key in the customer's Azure Key Vault,
//! used through `wrapkey`/`unwrapkey` with `RSA-OAEP-256`.
//!
//! - **Format.** RSA-OAEP takes no associated data, so every wrap asks the vault to wrap a fresh
//!   256-bit intermediate key, and the content key is AES-256-GCM-sealed under it with the
//!   binding as associated data: wrapped-key format 2 (`conclave_crypto::wrapped`). A wrapped key
//!   copied to another row fails to unwrap although the vault would happily unwrap its
//!   intermediate key.
//! - **One key, all tenants.** By default one vault key (`CONCLAVE_KEY_NAME`) serves every tenant;
//!   tenants are separated by the binding. Rotation and retirement therefore act on all tenants
//!   at once: the `tenant` argument of [`rotate`](KeyProvider::rotate) and
//!   [`retire`](KeyProvider::retire) is only checked, not used to pick a key.
//! - **Versions.** Key Vault names versions with random strings; the trait speaks `u32`. The
//!   ordinal of a version is its position (from 1) in the key's version list ordered by creation
//!   time (then name). Each wrapped key records both (the KEK version field holds the ordinal,
//!   the provider part holds the vault's version name), so unwrapping needs no lookup and old
//!   wrapped keys keep naming the right version whatever happens to the list later.
//! - **Retire** disables the version and tags it `conclave-retired=true`; unwrapping under it then
//!   fails with [`CryptoError::VersionRetired`]. Key Vault cannot destroy one version of a key: the
//!   material is gone only when the customer deletes and purges the whole key (after every live
//!   key was rewrapped under a new key), which also makes every older backup unreadable.
//! - **Errors.** Unreachable vault, timeouts, 5xx and 429 beyond the retry budget, a refused
//!   token: [`KeyUnavailable`](CryptoError::KeyUnavailable). 403 (key disabled, access removed):
//!   [`KeyRevoked`](CryptoError::KeyRevoked), or [`VersionRetired`](CryptoError::VersionRetired)
//!   for a version Conclave retired. 404: [`KeyNotFound`](CryptoError::KeyNotFound). A ciphertext
//!   the vault cannot unwrap (400) or an unwrapped key that does not open the content key:
//!   [`Integrity`](CryptoError::Integrity).

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use conclave_crypto::provider::check_tenant;
use conclave_crypto::{
    unwrap_key, wrap_key_v2, Binding, CryptoError, Key, KeyId, KeyProvider, KeyRef, ProviderInfo, ProviderWrap,
    WrappedKey,
};
use uuid::Uuid;

use crate::error::AzureError;
use crate::keyvault::KeyVaultClient;

/// The key-wrapping algorithm.
pub const WRAP_ALGORITHM: &str = "RSA-OAEP-256";
/// The tag [`retire`](KeyProvider::retire) sets on a version.
pub const RETIRED_TAG: &str = "conclave-retired";

/// The Azure Key Vault key provider (module docs).
pub struct KeyVaultKeyProvider {
    client: KeyVaultClient,
    key_name: String,
    key_id: KeyId,
    /// Version names, oldest first: index + 1 is the ordinal.
    versions: RwLock<Vec<String>>,
}

impl std::fmt::Debug for KeyVaultKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultKeyProvider").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl KeyVaultKeyProvider {
    /// The provider for key `key_name` in the client's vault. Makes no call: use
    /// [`check`](KeyProvider::check) to see the key answers.
    pub fn new(client: KeyVaultClient, key_name: &str) -> Result<Self, CryptoError> {
        if key_name.is_empty() || !key_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(CryptoError::InvalidInput("a Key Vault key name is letters, digits and dashes"));
        }
        let key_id = KeyId::new(client.key_url(key_name))?;
        Ok(Self { client, key_name: key_name.to_owned(), key_id, versions: RwLock::new(Vec::new()) })
    }

    fn known(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.versions.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn refresh_versions(&self) -> Result<(), CryptoError> {
        let list = self.client.list_versions(&self.key_name).await.map_err(|e| self.error(e, None))?;
        *self.versions.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            list.into_iter().map(|v| v.version).collect();
        Ok(())
    }

    /// The ordinal of a version name, reading the version list again if it is new to us.
    async fn ordinal(&self, name: &str) -> Result<u32, CryptoError> {
        let find = |names: &[String]| names.iter().position(|n| n == name).map(|i| i as u32 + 1);
        if let Some(o) = find(&self.known()) {
            return Ok(o);
        }
        self.refresh_versions().await?;
        find(&self.known()).ok_or_else(|| {
            CryptoError::KeyUnavailable(format!(
                "Key Vault key {} answered with version {name}, which its version list does not show",
                self.key_id
            ))
        })
    }

    /// The version name of an ordinal.
    async fn version_name(&self, ordinal: u32) -> Result<String, CryptoError> {
        let get = |names: &[String]| ordinal.checked_sub(1).and_then(|i| names.get(i as usize).cloned());
        if let Some(n) = get(&self.known()) {
            return Ok(n);
        }
        self.refresh_versions().await?;
        get(&self.known()).ok_or_else(|| CryptoError::KeyNotFound { key_id: self.key_id.to_string(), version: ordinal })
    }

    /// Maps a vault error; `version` is the ordinal the call concerned, if any.
    fn error(&self, e: AzureError, version: Option<u32>) -> CryptoError {
        let key_id = self.key_id.to_string();
        match e {
            AzureError::Vault { status: 401, .. } => {
                CryptoError::KeyUnavailable(format!("Key Vault refused the server's token for {key_id} (401)"))
            }
            AzureError::Vault { status: 403, .. } => CryptoError::KeyRevoked { key_id },
            AzureError::Vault { status: 404, .. } => CryptoError::KeyNotFound { key_id, version: version.unwrap_or(0) },
            AzureError::Vault { status, code, message } => {
                CryptoError::KeyUnavailable(format!("Key Vault answered {status} for {key_id}: {code} {message}"))
            }
            other => CryptoError::KeyUnavailable(other.to_string()),
        }
    }

    /// After a 403 on a version: was it retired by Conclave (tagged), or is the key revoked?
    async fn revoked_or_retired(&self, version_name: &str, ordinal: u32) -> CryptoError {
        match self.client.get_key(&self.key_name, Some(version_name)).await {
            Ok(bundle) if !bundle.enabled && bundle.tags.get(RETIRED_TAG).map(String::as_str) == Some("true") => {
                CryptoError::VersionRetired { key_id: self.key_id.to_string(), version: ordinal }
            }
            _ => CryptoError::KeyRevoked { key_id: self.key_id.to_string() },
        }
    }

    fn not_ours(&self, wrapped: &WrappedKey) -> CryptoError {
        CryptoError::KeyNotFound { key_id: wrapped.kek().id.to_string(), version: wrapped.kek().version }
    }
}

#[async_trait]
impl KeyProvider for KeyVaultKeyProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo { provider: "azure-key-vault".to_owned(), key_id: self.key_id.clone() }
    }

    async fn current_version(&self, _tenant: Uuid) -> Result<u32, CryptoError> {
        let bundle = self.client.get_key(&self.key_name, None).await.map_err(|e| self.error(e, None))?;
        if !bundle.enabled {
            return Err(CryptoError::KeyRevoked { key_id: self.key_id.to_string() });
        }
        self.ordinal(&bundle.version).await
    }

    async fn wrap(&self, tenant: Uuid, key: &Key, binding: &Binding) -> Result<WrappedKey, CryptoError> {
        check_tenant(tenant, binding)?;
        let intermediate = Key::generate();
        let (version, ciphertext) = self
            .client
            .wrap(&self.key_name, None, WRAP_ALGORITHM, intermediate.expose_secret())
            .await
            .map_err(|e| self.error(e, None))?;
        let ordinal = self.ordinal(&version).await?;
        let provider = ProviderWrap::new(version, ciphertext)?;
        wrap_key_v2(&intermediate, &KeyRef::new(self.key_id.clone(), ordinal), provider, key, binding)
    }

    async fn unwrap(&self, tenant: Uuid, wrapped: &WrappedKey, binding: &Binding) -> Result<Key, CryptoError> {
        check_tenant(tenant, binding)?;
        if wrapped.kek().id != self.key_id {
            return Err(self.not_ours(wrapped));
        }
        let Some(provider) = wrapped.provider_wrap() else {
            return Err(self.not_ours(wrapped));
        };
        let ordinal = wrapped.kek().version;
        let plain = match self
            .client
            .unwrap(&self.key_name, provider.version_name(), WRAP_ALGORITHM, provider.ciphertext())
            .await
        {
            Ok(plain) => plain,
            Err(AzureError::Vault { status: 403, .. }) => {
                return Err(self.revoked_or_retired(provider.version_name(), ordinal).await)
            }
            Err(AzureError::Vault { status: 400, .. }) => return Err(CryptoError::Integrity),
            Err(e) => return Err(self.error(e, Some(ordinal))),
        };
        let intermediate = Key::from_slice(&plain).map_err(|_| CryptoError::Integrity)?;
        unwrap_key(&intermediate, wrapped, binding)
    }

    async fn rotate(&self, _tenant: Uuid) -> Result<u32, CryptoError> {
        let bundle = self.client.rotate(&self.key_name).await.map_err(|e| self.error(e, None))?;
        let ordinal = self.ordinal(&bundle.version).await?;
        tracing::info!(key_id = %self.key_id, version = ordinal, "rotated the Key Vault key (all tenants)");
        Ok(ordinal)
    }

    async fn retire(&self, tenant: Uuid, version: u32) -> Result<(), CryptoError> {
        if self.current_version(tenant).await? == version {
            return Err(CryptoError::InvalidInput("the current KEK version cannot be retired: rotate first"));
        }
        let name = self.version_name(version).await?;
        let tags = HashMap::from([(RETIRED_TAG.to_owned(), "true".to_owned())]);
        self.client.update(&self.key_name, &name, false, Some(tags)).await.map_err(|e| self.error(e, Some(version)))?;
        tracing::warn!(key_id = %self.key_id, version, "retired (disabled) a Key Vault key version for all tenants");
        Ok(())
    }

    async fn check(&self) -> Result<(), CryptoError> {
        let bundle = self.client.get_key(&self.key_name, None).await.map_err(|e| self.error(e, None))?;
        if bundle.enabled {
            Ok(())
        } else {
            Err(CryptoError::KeyRevoked { key_id: self.key_id.to_string() })
        }
    }
}
