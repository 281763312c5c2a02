//! The orphan-object sweep: removes document objects that no document version refers to.
//!
//! An upload writes its object first and its rows after (`documents.rs`); a crash between the two
//! leaves an object whose key was never stored, so nobody can ever read it, and a delete whose
//! object removal failed leaves one whose key is destroyed. Neither is harmful (ciphertext under
//! a lost key) but both take space. The sweep lists the documents prefix and removes what no row
//! names, but only objects older than [`ORPHAN_MIN_AGE`]: an upload's object exists for at most
//! the moment between its completion and its row, so a young object may still be claimed.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::ObjectMeta;

use crate::app::{AuditRecord, Conclave};
use crate::error::Result;
use crate::ids::{DocumentId, LibraryId, TenantId};
use crate::objects::unavailable;
use crate::principal::RequestMeta;

/// Objects younger than this are never removed: far longer than any upload takes between its
/// object's completion and its row.
pub const ORPHAN_MIN_AGE: Duration = Duration::from_secs(3600);
/// How often a serving process sweeps (the first sweep runs [`SWEEP_FIRST_AFTER`] after start).
pub const SWEEP_EVERY: Duration = Duration::from_secs(6 * 3600);
/// Delay before the first sweep, so start-up is not slowed by listing the store.
pub const SWEEP_FIRST_AFTER: Duration = Duration::from_secs(60);
/// Most objects one sweep removes; the rest wait for the next sweep. Bounds the audit events and
/// store requests one sweep makes.
pub const SWEEP_MAX_REMOVALS: usize = 1000;

/// What one sweep found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Document objects listed.
    pub examined: usize,
    /// Objects no version refers to, removed.
    pub removed: usize,
    /// Objects younger than the minimum age, not looked at further (an upload may still claim
    /// them).
    pub young: usize,
    /// Orphans left for a later sweep: over the removal bound, or whose removal failed.
    pub left: usize,
}

/// Whether `location` is a document object's key (what backups copy and restores accept).
pub(crate) fn is_document_object(location: &Path) -> bool {
    document_object(location).is_some()
}

/// The ids in a document object's key (`tenants/{t}/libraries/{l}/documents/{d}/v{n}-{uuid}`, as
/// `Objects::new_key` makes them); `None` for anything else, which the sweep never touches.
fn document_object(location: &Path) -> Option<(TenantId, LibraryId, DocumentId)> {
    let parts: Vec<&str> = location.as_ref().split('/').collect();
    match parts.as_slice() {
        ["tenants", tenant, "libraries", library, "documents", document, name] => {
            // `v<version>-<uuid>` exactly: nothing else (a store's staging file, say) is ours.
            let (version, random) = name.strip_prefix('v')?.split_once('-')?;
            version.parse::<u64>().ok()?;
            uuid::Uuid::try_parse(random).ok()?;
            Some((tenant.parse().ok()?, library.parse().ok()?, document.parse().ok()?))
        }
        _ => None,
    }
}

impl Conclave {
    /// Removes document objects that no document version refers to and that were last written
    /// more than `min_age` ago, at most `max_removals` of them. Each removal is audited in its
    /// tenant's log as `document.orphan_removed` by the `system`.
    pub async fn sweep_orphan_objects(&self, min_age: Duration, max_removals: usize) -> Result<SweepReport> {
        let cutoff = crate::clock::now().unix_timestamp() - i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX);
        let mut report = SweepReport::default();
        // Each tenant's named objects, read once when its first old object is met.
        let mut named: HashMap<TenantId, HashSet<String>> = HashMap::new();
        let mut listing = self.objects.store().list(Some(&Path::from("tenants")));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(unavailable)?;
            let Some((tenant, library, document)) = document_object(&meta.location) else { continue };
            report.examined += 1;
            if meta.last_modified.timestamp() > cutoff {
                report.young += 1;
                continue;
            }
            let key = meta.location.as_ref();
            let tenant_objects = match named.entry(tenant) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.store.document_objects(tenant).await?.into_iter().collect()),
            };
            if tenant_objects.contains(key) {
                continue;
            }
            if report.removed >= max_removals {
                report.left += 1;
                continue;
            }
            if let Err(e) = self.objects.delete(key).await {
                tracing::warn!(object = %key, error = %e, "an orphaned object could not be removed");
                report.left += 1;
                continue;
            }
            report.removed += 1;
            self.audit_orphan_removed(tenant, library, document, &meta).await;
        }
        Ok(report)
    }

    async fn audit_orphan_removed(
        &self,
        tenant: TenantId,
        library: LibraryId,
        document: DocumentId,
        meta: &ObjectMeta,
    ) {
        let mut record = AuditRecord::new("document.orphan_removed", "document", document).detail(serde_json::json!({
            "library_id": library,
            "object": meta.location.as_ref(),
            "size": meta.size,
            "last_modified": meta.last_modified.to_rfc3339(),
        }));
        record.actor_kind = Some("system");
        self.audit(tenant, &RequestMeta::default(), record).await;
    }

    /// Sweeps orphaned objects [`SWEEP_FIRST_AFTER`] after start and then every [`SWEEP_EVERY`],
    /// until the process ends. Several replicas may sweep at once: removing an object twice is
    /// harmless.
    pub(crate) fn start_orphan_sweep(self: &std::sync::Arc<Self>) {
        let this = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(SWEEP_FIRST_AFTER).await;
            loop {
                let Some(core) = this.upgrade() else { return };
                match core.sweep_orphan_objects(ORPHAN_MIN_AGE, SWEEP_MAX_REMOVALS).await {
                    Ok(r) if r.removed > 0 || r.left > 0 => {
                        tracing::warn!(
                            removed = r.removed,
                            left = r.left,
                            young = r.young,
                            examined = r.examined,
                            "removed document objects that no document refers to"
                        )
                    }
                    Ok(r) => {
                        tracing::debug!(examined = r.examined, young = r.young, "orphan-object sweep found nothing")
                    }
                    Err(e) => tracing::warn!(error = %e, "the orphan-object sweep failed"),
                }
                drop(core);
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_document_object_keys_are_recognised() {
        let (t, l, d) = (TenantId::new(), LibraryId::new(), DocumentId::new());
        let key = format!("tenants/{t}/libraries/{l}/documents/{d}/v3-{}", uuid::Uuid::new_v4());
        assert_eq!(document_object(&Path::from(key.as_str())), Some((t, l, d)));
        for other in [
            format!("tenants/{t}/libraries/{l}/documents/{d}"),
            format!("tenants/{t}/libraries/{l}/documents/{d}/x3"),
            format!("tenants/{t}/libraries/{l}/documents/{d}/v3-{}#1", uuid::Uuid::new_v4()),
            format!("tenants/{t}/libraries/{l}/documents/{d}/vx-{}", uuid::Uuid::new_v4()),
            format!("tenants/{t}/libraries/{l}/documents/not-a-uuid/v1-{d}"),
            format!("tenants/{t}/checkpoints/{d}/v1-{d}"),
            format!("backups/{t}/libraries/{l}/documents/{d}/v1-{d}"),
            format!("tenants/{t}/libraries/{l}/documents/{d}/v1-{d}/extra"),
        ] {
            assert_eq!(document_object(&Path::from(other.as_str())), None, "{other}");
        }
    }
}
