//! The orphan-object sweep: removes document objects that no document version refers to.
//!
//! An upload writes its object first and its rows after (`documents.rs`); a crash between the two
//! leaves an object whose key was never stored, so nobody can ever read it, and a delete whose
//! object removal failed leaves one whose key is destroyed. Neither is harmful (ciphertext under
//! a lost key) but both take space. The sweep lists the documents prefix and removes what no row
//! names, but only objects older than [`ORPHAN_MIN_AGE`]: an upload's object exists for at most
//! the moment between its completion and its row, so a young object may still be claimed.
//!
//! In a local folder, an upload is written under a staging name beside its object
//! (`<object>#<n>`, `objects/direct.rs`) and renamed into place when complete; a crash mid-upload
//! leaves the staging file. object_store's listing hides names with `#`, so the sweep also walks
//! the folder for staging files of document objects not written to for [`ORPHAN_MIN_AGE`].

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;

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
    /// Staging files of interrupted uploads removed from a local folder (counted in `removed`
    /// too).
    pub staging_removed: usize,
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
            let removed = RemovedObject {
                tenant,
                library,
                document,
                key: key.to_owned(),
                size: meta.size,
                modified: meta.last_modified.into(),
                interrupted_upload: false,
            };
            self.audit_orphan_removed(&removed).await;
        }
        if let Some(root) = self.objects.local_path("tenants") {
            let (root, budget) = (root?, max_removals.saturating_sub(report.removed));
            let staging = tokio::task::spawn_blocking(move || sweep_staging(&root, min_age, budget))
                .await
                .map_err(|e| crate::error::Error::Internal(format!("staging sweep: {e}")))?;
            for removed in staging.removed {
                report.removed += 1;
                report.staging_removed += 1;
                self.audit_orphan_removed(&removed).await;
            }
            report.left += staging.left;
        }
        Ok(report)
    }

    async fn audit_orphan_removed(&self, removed: &RemovedObject) {
        let modified = time::OffsetDateTime::from(removed.modified);
        let mut detail = serde_json::json!({
            "library_id": removed.library,
            "object": removed.key,
            "size": removed.size,
            "last_modified": modified.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        });
        if removed.interrupted_upload {
            detail["interrupted_upload"] = true.into();
        }
        let mut record = AuditRecord::new("document.orphan_removed", "document", removed.document).detail(detail);
        record.actor_kind = Some("system");
        self.audit(removed.tenant, &RequestMeta::default(), record).await;
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

/// An object the sweep removed, as its audit event describes it.
struct RemovedObject {
    tenant: TenantId,
    library: LibraryId,
    document: DocumentId,
    /// The object's key, as the store names it (a staging file's: `…/v<n>-<uuid>#<k>`).
    key: String,
    size: u64,
    modified: std::time::SystemTime,
    /// A staging file an interrupted upload left in a local folder.
    interrupted_upload: bool,
}

/// What [`sweep_staging`] removed, and how many it left for a later sweep.
#[derive(Default)]
struct StagingSweep {
    removed: Vec<RemovedObject>,
    left: usize,
}

/// Walks `<root>` (a local folder's `tenants`) for staging files of document objects
/// (`<document object>#<digits>`) last written more than `min_age` ago, and removes at most
/// `max_removals` of them. Nothing else in the folder is touched; what cannot be read is skipped
/// with a warning.
fn sweep_staging(root: &std::path::Path, min_age: Duration, max_removals: usize) -> StagingSweep {
    let mut sweep = StagingSweep::default();
    let Some(cutoff) = std::time::SystemTime::now().checked_sub(min_age) else { return sweep };
    let objects = root.parent().unwrap_or(root);
    // tenants/{t}/libraries/{l}/documents/{d}/{file}: the files are six levels down.
    for entry in walkdir::WalkDir::new(root).min_depth(6).max_depth(6) {
        let entry = match entry {
            Ok(entry) if entry.file_type().is_file() => entry,
            Ok(_) => continue,
            Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "the staging sweep cannot read part of the object folder");
                continue;
            }
        };
        let Some(key) = entry.path().strip_prefix(objects).ok().and_then(|p| p.to_str()) else { continue };
        let Some((object, n)) = key.rsplit_once('#') else { continue };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some((tenant, library, document)) = document_object(&Path::from(object)) else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else { continue };
        if modified > cutoff {
            continue;
        }
        if sweep.removed.len() >= max_removals {
            sweep.left += 1;
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => sweep.removed.push(RemovedObject {
                tenant,
                library,
                document,
                key: key.to_owned(),
                size: meta.len(),
                modified,
                interrupted_upload: true,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %entry.path().display(), error = %e, "an interrupted upload's file could not be removed");
                sweep.left += 1;
            }
        }
    }
    sweep
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
