//! The local provider's state: each tenant's KEK versions, and the rules for rotating, retiring
//! and disabling them. Pure logic; [`super::keyfile`] stores it and [`super::local`] serves it.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{CryptoError, Result};
use crate::key::{Key, KeyId};

#[derive(Clone, Default)]
pub(crate) struct Keyring {
    pub(crate) tenants: BTreeMap<Uuid, TenantKeys>,
    /// The Ed25519 key that signs audit checkpoints; generated on first use.
    pub(crate) signing: Option<SigningEntry>,
}

/// The checkpoint signing key (the secret half zeroizes on drop).
#[derive(Clone)]
pub(crate) struct SigningEntry {
    pub(crate) key_id: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) key: Arc<ed25519_dalek::SigningKey>,
}

impl SigningEntry {
    pub(crate) fn generate() -> Self {
        SigningEntry {
            key_id: format!("local-ed25519:{}", Uuid::new_v4()),
            created_at: OffsetDateTime::now_utc(),
            key: Arc::new(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)),
        }
    }
}

#[derive(Clone)]
pub(crate) struct TenantKeys {
    pub(crate) current: u32,
    pub(crate) disabled: bool,
    pub(crate) versions: BTreeMap<u32, KekVersion>,
}

#[derive(Clone)]
pub(crate) struct KekVersion {
    pub(crate) created_at: OffsetDateTime,
    pub(crate) retired_at: Option<OffsetDateTime>,
    /// `None` once retired: the material is gone.
    pub(crate) material: Option<Arc<Key>>,
}

impl KekVersion {
    fn fresh() -> Self {
        Self { created_at: OffsetDateTime::now_utc(), retired_at: None, material: Some(Arc::new(Key::generate())) }
    }
}

impl Keyring {
    pub(crate) fn current(&self, tenant: Uuid) -> Option<u32> {
        self.tenants.get(&tenant).map(|t| t.current)
    }

    /// Gives the tenant a first KEK version if it has none; returns its current version.
    pub(crate) fn ensure(&mut self, tenant: Uuid) -> u32 {
        self.tenants
            .entry(tenant)
            .or_insert_with(|| TenantKeys {
                current: 1,
                disabled: false,
                versions: BTreeMap::from([(1, KekVersion::fresh())]),
            })
            .current
    }

    pub(crate) fn rotate(&mut self, tenant: Uuid) -> Result<u32> {
        let Some(keys) = self.tenants.get_mut(&tenant) else {
            return Ok(self.ensure(tenant));
        };
        let next = keys
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(CryptoError::InvalidInput("no KEK version numbers left"))?;
        keys.versions.insert(next, KekVersion::fresh());
        keys.current = next;
        Ok(next)
    }

    /// Destroys a version's material. Returns whether anything changed (retiring twice is fine).
    pub(crate) fn retire(&mut self, key_id: &KeyId, tenant: Uuid, version: u32) -> Result<bool> {
        let not_found = || CryptoError::KeyNotFound { key_id: key_id.to_string(), version };
        let keys = self.tenants.get_mut(&tenant).ok_or_else(not_found)?;
        if keys.current == version {
            return Err(CryptoError::InvalidInput("the current KEK version cannot be retired; rotate first"));
        }
        let entry = keys.versions.get_mut(&version).ok_or_else(not_found)?;
        if entry.material.is_none() {
            return Ok(false);
        }
        entry.material = None;
        entry.retired_at = Some(OffsetDateTime::now_utc());
        Ok(true)
    }

    /// Turns a tenant's KEK off or on (all versions). Returns whether anything changed.
    pub(crate) fn set_disabled(&mut self, key_id: &KeyId, tenant: Uuid, disabled: bool) -> Result<bool> {
        let keys = self
            .tenants
            .get_mut(&tenant)
            .ok_or_else(|| CryptoError::KeyNotFound { key_id: key_id.to_string(), version: 0 })?;
        let changed = keys.disabled != disabled;
        keys.disabled = disabled;
        Ok(changed)
    }

    /// The tenant's current version and its material, for wrapping.
    pub(crate) fn current_kek(&self, key_id: &KeyId, tenant: Uuid) -> Result<(u32, Arc<Key>)> {
        let not_found = |version| CryptoError::KeyNotFound { key_id: key_id.to_string(), version };
        let keys = self.tenants.get(&tenant).ok_or_else(|| not_found(0))?;
        let kek = self.kek(key_id, tenant, keys.current)?;
        Ok((keys.current, kek))
    }

    /// The material of one version, for unwrapping; a distinct error for each reason it is not
    /// there.
    pub(crate) fn kek(&self, key_id: &KeyId, tenant: Uuid, version: u32) -> Result<Arc<Key>> {
        let not_found = || CryptoError::KeyNotFound { key_id: key_id.to_string(), version };
        let keys = self.tenants.get(&tenant).ok_or_else(not_found)?;
        if keys.disabled {
            return Err(CryptoError::KeyRevoked { key_id: key_id.to_string() });
        }
        let entry = keys.versions.get(&version).ok_or_else(not_found)?;
        entry.material.clone().ok_or_else(|| CryptoError::VersionRetired { key_id: key_id.to_string(), version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> KeyId {
        KeyId::new("local:test").unwrap()
    }

    #[test]
    fn lifecycle() {
        let mut ring = Keyring::default();
        let t = Uuid::now_v7();
        assert_eq!(ring.current(t), None);
        assert!(matches!(ring.kek(&id(), t, 1), Err(CryptoError::KeyNotFound { .. })));
        assert_eq!(ring.ensure(t), 1);
        assert_eq!(ring.ensure(t), 1);
        assert_eq!(ring.rotate(t).unwrap(), 2);
        assert_eq!(ring.current_kek(&id(), t).unwrap().0, 2);
        assert!(matches!(ring.retire(&id(), t, 2), Err(CryptoError::InvalidInput(_))));
        assert!(matches!(ring.retire(&id(), t, 9), Err(CryptoError::KeyNotFound { version: 9, .. })));
        assert!(ring.retire(&id(), t, 1).unwrap());
        assert!(!ring.retire(&id(), t, 1).unwrap());
        assert!(matches!(ring.kek(&id(), t, 1), Err(CryptoError::VersionRetired { version: 1, .. })));
        assert!(ring.kek(&id(), t, 2).is_ok());
        assert!(ring.set_disabled(&id(), t, true).unwrap());
        assert!(matches!(ring.kek(&id(), t, 2), Err(CryptoError::KeyRevoked { .. })));
        assert!(matches!(ring.current_kek(&id(), t), Err(CryptoError::KeyRevoked { .. })));
        // A version retired stays retired, and says so, even while the key is enabled again.
        assert!(ring.set_disabled(&id(), t, false).unwrap());
        assert!(matches!(ring.kek(&id(), t, 1), Err(CryptoError::VersionRetired { .. })));
        assert_eq!(ring.rotate(t).unwrap(), 3);
    }

    #[test]
    fn rotate_creates_a_first_version() {
        let mut ring = Keyring::default();
        let t = Uuid::now_v7();
        assert_eq!(ring.rotate(t).unwrap(), 1);
        assert_eq!(ring.rotate(t).unwrap(), 2);
    }
}
