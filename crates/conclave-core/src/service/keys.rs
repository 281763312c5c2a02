//! The tenant's master key (KEK): which versions wrap how many keys, rotation (a new version,
//! then every key it wraps rewrapped, content untouched) and retirement of old versions.
//!
//! Rotation is resumable: a rewrap is a compare-and-set on the row, so running it again (after a
//! crash, from the CLI) continues with the keys still under older versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::app::{AuditRecord, Conclave};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::libraries::{KeyVersionCount, WrappedKeyKind};
use crate::policy;
use crate::principal::Caller;

/// Wrapped keys read per page (rotation, checks).
const KEY_BATCH: u32 = 200;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyVersionView {
    /// The master-key version; `null` for keys wrapped before versions were recorded (the next
    /// rotation records them).
    pub version: Option<u32>,
    pub tenant_keys: u64,
    pub library_keys: u64,
    pub conversation_keys: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeysView {
    /// `local` or `azure-key-vault`.
    pub provider: String,
    /// The master key's id in its provider.
    pub key_id: String,
    /// The version new keys are wrapped under.
    pub current_version: u32,
    /// How many wrapped keys each version holds.
    pub versions: Vec<KeyVersionView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RotationView {
    /// The new current version.
    pub version: u32,
    /// Keys still to rewrap when the answer left; `GET /api/v1/admin/keys` shows the progress.
    pub pending: u64,
}

/// What a rewrap pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// Changed or deleted meanwhile: nothing to do.
    pub skipped: u64,
}

impl Conclave {
    pub async fn keys_status(&self, caller: &Caller) -> Result<KeysView> {
        self.permit(caller, policy::require_admin(caller), "keys.status.denied", "tenant", None).await?;
        self.tenant_keys_status(caller.tenant()).await
    }

    /// Starts a rotation: a new master-key version now, the rewrap in the background.
    pub async fn rotate_keys(&self, caller: &Caller) -> Result<RotationView> {
        self.permit(caller, policy::require_admin(caller), "keys.rotate.denied", "tenant", None).await?;
        let tenant = caller.tenant();
        let version = self.rotate_tenant_key(tenant).await?;
        let pending = self.keys_below(tenant, version).await?;
        self.audit_by(
            caller,
            AuditRecord::new("keys.rotate", "tenant", tenant)
                .detail(serde_json::json!({"version": version, "pending": pending})),
        )
        .await;
        let me = self.me.upgrade().ok_or_else(|| Error::Internal("the server is shutting down".into()))?;
        self.replies.spawn(async move {
            match me.rewrap_tenant(tenant, version, |_| {}).await {
                Ok(report) => {
                    tracing::info!(%tenant, version, rewrapped = report.rewrapped, "master key rotation finished")
                }
                Err(e) => {
                    tracing::error!(%tenant, version, error = %e, "master key rotation stopped; run it again to resume")
                }
            }
        });
        Ok(RotationView { version, pending })
    }

    /// Status for one tenant (also for `conclave keys status`).
    pub async fn tenant_keys_status(&self, tenant: TenantId) -> Result<KeysView> {
        let provider = self.provider()?;
        let info = provider.describe();
        let current_version = provider.current_version(tenant.0).await.map_err(key_error)?;
        let counts = self.store.count_wrapped_keys(tenant).await?;
        Ok(KeysView {
            provider: info.provider,
            key_id: info.key_id.to_string(),
            current_version,
            versions: group(&counts),
        })
    }

    /// A new master-key version for the tenant, made current.
    pub async fn rotate_tenant_key(&self, tenant: TenantId) -> Result<u32> {
        self.provider()?.rotate(tenant.0).await.map_err(key_error)
    }

    /// Keys of the tenant under a version below `version` (or unrecorded).
    pub async fn keys_below(&self, tenant: TenantId, version: u32) -> Result<u64> {
        let counts = self.store.count_wrapped_keys(tenant).await?;
        Ok(counts.iter().filter(|c| c.key_version.is_none_or(|v| v < version)).map(|c| c.count).sum())
    }

    /// Rewraps every key of the tenant under a version below `version`; `progress` gets the
    /// number done so far after each key.
    pub async fn rewrap_tenant(&self, tenant: TenantId, version: u32, progress: impl Fn(u64)) -> Result<RewrapReport> {
        let mut report = RewrapReport::default();
        let mut after = None;
        loop {
            let batch = self.wrapped_keys_page(tenant, version, &mut after).await?;
            if batch.is_empty() {
                break;
            }
            for key in &batch {
                let (wrapped, new_version) = self.codec.rewrap(tenant, key.kind, key.id, &key.wrapped).await?;
                if self.store.replace_wrapped_key(tenant, key, &wrapped, new_version).await? {
                    report.rewrapped += 1;
                } else {
                    report.skipped += 1;
                }
                progress(report.rewrapped + report.skipped);
            }
        }
        Ok(report)
    }

    /// The next page of the tenant's keys wrapped under a version below `below` (all of them
    /// with `u32::MAX`), after the cursor `after`, which it moves on.
    pub(crate) async fn wrapped_keys_page(
        &self,
        tenant: TenantId,
        below: u32,
        after: &mut Option<(WrappedKeyKind, uuid::Uuid)>,
    ) -> Result<Vec<crate::libraries::KekWrapped>> {
        let batch = self.store.wrapped_keys_below(tenant, below, *after, KEY_BATCH).await?;
        if let Some(last) = batch.last() {
            *after = Some((last.kind, last.id));
        }
        Ok(batch)
    }

    /// Destroys a master-key version. Refused while any key is still wrapped under it (or under
    /// an unrecorded version): rotate and let the rewrap finish first.
    pub async fn retire_tenant_key(&self, tenant: TenantId, version: u32) -> Result<()> {
        let counts = self.store.count_wrapped_keys(tenant).await?;
        let in_use: u64 = counts.iter().filter(|c| c.key_version.is_none_or(|v| v == version)).map(|c| c.count).sum();
        if in_use > 0 {
            return Err(Error::Conflict(format!(
                "{in_use} keys are still wrapped under version {version} (or an unrecorded version): rotate and let the rewrap finish first"
            )));
        }
        self.provider()?.retire(tenant.0, version).await.map_err(key_error)
    }

    /// The provider of the tenants' master keys, where one is configured.
    pub fn master_keys(&self) -> Option<Arc<dyn conclave_crypto::KeyProvider>> {
        self.codec.key_provider()
    }

    fn provider(&self) -> Result<Arc<dyn conclave_crypto::KeyProvider>> {
        self.codec.key_provider().ok_or_else(|| Error::Internal("no key provider is configured".into()))
    }
}

/// Provider outages map as for content (503); a refused rotation or retirement is a conflict.
fn key_error(e: conclave_crypto::CryptoError) -> Error {
    use conclave_crypto::CryptoError as C;
    match e {
        C::KeyUnavailable { .. } | C::KeyRevoked { .. } => crate::envelope::key_error(e),
        C::InvalidInput(m) => Error::Conflict(m.to_string()),
        other => Error::Conflict(other.to_string()),
    }
}

fn group(counts: &[KeyVersionCount]) -> Vec<KeyVersionView> {
    let mut by_version: BTreeMap<Option<u32>, KeyVersionView> = BTreeMap::new();
    for c in counts {
        let view = by_version.entry(c.key_version).or_insert(KeyVersionView {
            version: c.key_version,
            tenant_keys: 0,
            library_keys: 0,
            conversation_keys: 0,
        });
        match c.kind {
            WrappedKeyKind::Tenant => view.tenant_keys += c.count,
            WrappedKeyKind::Library => view.library_keys += c.count,
            WrappedKeyKind::Conversation => view.conversation_keys += c.count,
        }
    }
    by_version.into_values().collect()
}
