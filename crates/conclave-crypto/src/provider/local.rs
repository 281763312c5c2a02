//! [`LocalKeyProvider`]: per-tenant KEK versions kept in a key file on the server's disk (format
//! in [`super::keyfile`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::keyfile::{self, FileMeta};
use super::keyring::{Keyring, SigningEntry};
use super::{check_tenant, KeyProvider, ProviderInfo};
use crate::binding::Binding;
use crate::error::{CryptoError, Result};
use crate::key::{Key, KeyId, KeyRef};
use crate::wrapped::{unwrap_key, wrap_key, WrappedKey};

/// A key provider backed by a local key file (or by memory only, for tests).
///
/// The file is created on first use (mode `0600`, its folder `0700`); each tenant gets its first
/// KEK version the first time a key is wrapped for it. Keep the file outside what `conclave
/// backup` copies: a backup must never contain a KEK.
pub struct LocalKeyProvider {
    path: Option<PathBuf>,
    meta: FileMeta,
    ring: RwLock<Keyring>,
    /// Serialises changes, so each one is written to disk before the next starts.
    write: tokio::sync::Mutex<()>,
}

impl LocalKeyProvider {
    /// Opens the key file at `path`, creating it (and its folder) if it does not exist. Refuses a
    /// file that group or others may read.
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let load_path = path.clone();
        let (meta, ring) = tokio::task::spawn_blocking(move || keyfile::load_or_create(&load_path))
            .await
            .map_err(|e| CryptoError::KeyUnavailable(format!("key file task failed: {e}")))??;
        Ok(Self { path: Some(path), meta, ring: RwLock::new(ring), write: tokio::sync::Mutex::new(()) })
    }

    /// A provider whose keys live only in memory and die with it: for tests and throwaway
    /// development instances.
    pub fn ephemeral() -> Self {
        let meta = FileMeta { key_id: KeyId::new_local(), created_at: OffsetDateTime::now_utc() };
        Self { path: None, meta, ring: RwLock::new(Keyring::default()), write: tokio::sync::Mutex::new(()) }
    }

    /// The key file, unless the provider is ephemeral.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The local kill switch: every wrap and unwrap for the tenant fails with
    /// [`CryptoError::KeyRevoked`] until [`enable`](Self::enable).
    pub async fn disable(&self, tenant: Uuid) -> Result<()> {
        let key_id = self.meta.key_id.clone();
        self.change(|ring| ring.set_disabled(&key_id, tenant, true).map(|changed| ((), changed))).await?;
        tracing::warn!(%tenant, key_id = %self.meta.key_id, "tenant KEK disabled");
        Ok(())
    }

    /// Undoes [`disable`](Self::disable).
    pub async fn enable(&self, tenant: Uuid) -> Result<()> {
        let key_id = self.meta.key_id.clone();
        self.change(|ring| ring.set_disabled(&key_id, tenant, false).map(|changed| ((), changed))).await?;
        tracing::info!(%tenant, key_id = %self.meta.key_id, "tenant KEK enabled");
        Ok(())
    }

    /// The signer of audit checkpoints: the key file's Ed25519 key, generated (and saved, under
    /// the file lock, atomically) the first time it is asked for.
    pub async fn checkpoint_signer(&self) -> Result<LocalCheckpointSigner> {
        let entry = match self.read(|ring| ring.signing.clone()) {
            Some(entry) => entry,
            None => {
                let entry = self
                    .change(|ring| match &ring.signing {
                        Some(existing) => Ok((existing.clone(), false)),
                        None => {
                            let fresh = SigningEntry::generate();
                            ring.signing = Some(fresh.clone());
                            Ok((fresh, true))
                        }
                    })
                    .await?;
                tracing::info!(key_id = %entry.key_id, "audit checkpoint signing key ready");
                entry
            }
        };
        Ok(LocalCheckpointSigner { key_id: entry.key_id, key: entry.key })
    }

    /// The checkpoint public key (DER SPKI) if the key file has a signing key; never creates
    /// one (for offline verification, where a new key would prove nothing).
    pub async fn checkpoint_public_key(&self) -> Result<Option<Vec<u8>>> {
        self.reload().await?;
        self.read(|ring| ring.signing.as_ref().map(|s| crate::signing::ed25519_public_key_der(&s.key.verifying_key())))
            .transpose()
    }

    fn read<T>(&self, f: impl FnOnce(&Keyring) -> T) -> T {
        f(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the key file again: another process on this machine (a second replica sharing the
    /// data folder) may have added a tenant or a version since this one loaded it.
    async fn reload(&self) -> Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let loaded = tokio::task::spawn_blocking(move || keyfile::load(&path))
            .await
            .map_err(|e| CryptoError::KeyUnavailable(format!("key file task failed: {e}")))??;
        if let Some((_, ring)) = loaded {
            *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
        }
        Ok(())
    }

    /// An exclusive lock on `<key file>.lock`, held while a change is read, made and written, so
    /// that processes sharing the key file never overwrite each other's keys.
    async fn lock_file(&self) -> Result<Option<std::fs::File>> {
        let Some(path) = self.path.clone() else { return Ok(None) };
        let lock_path = path.with_extension("lock");
        tokio::task::spawn_blocking(move || {
            let mut options = std::fs::OpenOptions::new();
            options.create(true).truncate(false).write(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let file =
                options.open(&lock_path).map_err(|source| CryptoError::Io { path: lock_path.clone(), source })?;
            file.lock().map_err(|source| CryptoError::Io { path: lock_path, source })?;
            Ok(Some(file))
        })
        .await
        .map_err(|e| CryptoError::KeyUnavailable(format!("key file task failed: {e}")))?
    }

    /// Applies a change to a copy of the keyring, writes the copy to the key file, and only then
    /// makes it the live state: a change that cannot be saved is not made. The change is made on
    /// the file's latest content, under the file lock.
    async fn change<T>(&self, f: impl FnOnce(&mut Keyring) -> Result<(T, bool)>) -> Result<T> {
        let _guard = self.write.lock().await;
        let _file_lock = self.lock_file().await?;
        self.reload().await?;
        let mut next = self.read(Keyring::clone);
        let (out, changed) = f(&mut next)?;
        if !changed {
            return Ok(out);
        }
        if let Some(path) = &self.path {
            let bytes = keyfile::encode(&self.meta, &next)?;
            let path = path.clone();
            tokio::task::spawn_blocking(move || keyfile::replace(&path, &bytes).map_err(|source| (path, source)))
                .await
                .map_err(|e| CryptoError::KeyUnavailable(format!("key file task failed: {e}")))?
                .map_err(|(path, source)| CryptoError::Io { path, source })?;
        }
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = next;
        Ok(out)
    }

    /// The tenant's current version, creating its first one if needed.
    async fn ensure(&self, tenant: Uuid) -> Result<u32> {
        if let Some(current) = self.read(|ring| ring.current(tenant)) {
            return Ok(current);
        }
        let current = self
            .change(|ring| {
                let existed = ring.current(tenant).is_some();
                Ok((ring.ensure(tenant), !existed))
            })
            .await?;
        tracing::info!(%tenant, key_id = %self.meta.key_id, "created tenant KEK version 1");
        Ok(current)
    }

    fn not_ours(&self, wrapped: &WrappedKey) -> Option<CryptoError> {
        let kek = wrapped.kek();
        (kek.id != self.meta.key_id)
            .then(|| CryptoError::KeyNotFound { key_id: kek.id.to_string(), version: kek.version })
    }
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("path", &self.path)
            .field("key_id", &self.meta.key_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn describe(&self) -> ProviderInfo {
        ProviderInfo { provider: "local".to_owned(), key_id: self.meta.key_id.clone() }
    }

    async fn current_version(&self, tenant: Uuid) -> Result<u32> {
        self.ensure(tenant).await
    }

    async fn wrap(&self, tenant: Uuid, key: &Key, binding: &Binding) -> Result<WrappedKey> {
        check_tenant(tenant, binding)?;
        self.ensure(tenant).await?;
        let (version, kek) = self.read(|ring| ring.current_kek(&self.meta.key_id, tenant))?;
        wrap_key(&kek, &KeyRef::new(self.meta.key_id.clone(), version), key, binding)
    }

    async fn unwrap(&self, tenant: Uuid, wrapped: &WrappedKey, binding: &Binding) -> Result<Key> {
        check_tenant(tenant, binding)?;
        if let Some(err) = self.not_ours(wrapped) {
            return Err(err);
        }
        let version = wrapped.kek().version;
        let kek: Arc<Key> = match self.read(|ring| ring.kek(&self.meta.key_id, tenant, version)) {
            Ok(kek) => kek,
            Err(CryptoError::KeyNotFound { .. }) => {
                // Made by another process sharing the key file since this one read it?
                self.reload().await?;
                self.read(|ring| ring.kek(&self.meta.key_id, tenant, version))?
            }
            Err(e) => return Err(e),
        };
        unwrap_key(&kek, wrapped, binding)
    }

    async fn rotate(&self, tenant: Uuid) -> Result<u32> {
        let version = self.change(|ring| ring.rotate(tenant).map(|v| (v, true))).await?;
        tracing::info!(%tenant, key_id = %self.meta.key_id, version, "rotated tenant KEK");
        Ok(version)
    }

    async fn retire(&self, tenant: Uuid, version: u32) -> Result<()> {
        let key_id = self.meta.key_id.clone();
        let changed = self.change(|ring| ring.retire(&key_id, tenant, version).map(|c| (c, c))).await?;
        if changed {
            tracing::warn!(%tenant, key_id = %self.meta.key_id, version, "retired tenant KEK version: its material is destroyed");
        }
        Ok(())
    }
}

/// Signs audit checkpoints with the local key file's Ed25519 key.
#[derive(Clone)]
pub struct LocalCheckpointSigner {
    key_id: String,
    key: Arc<ed25519_dalek::SigningKey>,
}

impl std::fmt::Debug for LocalCheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCheckpointSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

#[async_trait]
impl crate::signing::CheckpointSigner for LocalCheckpointSigner {
    fn algorithm(&self) -> crate::signing::SignatureAlgorithm {
        crate::signing::SignatureAlgorithm::Ed25519
    }

    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    async fn public_key(&self) -> Result<Vec<u8>> {
        crate::signing::ed25519_public_key_der(&self.key.verifying_key())
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes().to_vec())
    }
}
