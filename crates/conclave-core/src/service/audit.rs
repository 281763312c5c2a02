//! Reading the audit log (administrators and auditors).

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::Conclave;
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::policy;
use crate::principal::Caller;
use crate::records::{AuditEvent, Outcome};
use crate::store::AuditFilter;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// Position in the tenant's log: 1, 2, 3… without gaps.
    pub seq: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor_id: Option<UserId>,
    /// `user`, `api_key`, `anonymous`, `command_line` (the CLI) or `system` (background work such
    /// as the orphan-object sweep).
    pub actor_kind: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub outcome: Outcome,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// Facts about the event (never content).
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    /// The event's link in the tenant's hash chain (hex SHA-256).
    pub hash: Option<String>,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        AuditEventView {
            seq: e.seq,
            at: e.at,
            actor_id: e.actor_id,
            actor_kind: e.actor_kind,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            outcome: e.outcome,
            ip: e.ip,
            request_id: e.request_id,
            detail: e.detail,
            hash: e.hash.as_deref().map(crate::records::hex),
        }
    }
}

pub use crate::checkpoint::{AuditVerification, CheckpointProblem};

impl Conclave {
    /// Recomputes the tenant's hash chain from the first event and checks the checkpoints
    /// recorded in the database against it (with the signing key's public key): an edited,
    /// deleted, inserted or reordered event, removed newest events, or a log rewritten behind a
    /// checkpoint is named by its sequence number; a forged checkpoint by its own.
    pub async fn verify_audit(&self, caller: &Caller) -> Result<AuditVerification> {
        self.permit(caller, policy::require_auditor(caller), "audit.verify.denied", "audit_log", None).await?;
        let tenant = caller.tenant();
        // The key comes from the key provider, never from the database the checkpoints are in.
        let keys = match self.checkpointer() {
            Some(c) => vec![c
                .signer
                .public_key()
                .await
                .map_err(|e| Error::Unavailable { service: "checkpoint signing key", detail: e.to_string() })?],
            None => Vec::new(),
        };
        // Without a signer there is no key to check checkpoints with: the chain alone is checked.
        let checkpoints = if keys.is_empty() {
            Vec::new()
        } else {
            crate::checkpoint::database_checkpoints(self.store.as_ref(), tenant).await?
        };
        crate::checkpoint::verify_log(self.store.as_ref(), tenant, checkpoints, &keys, &|_| {}).await
    }

    /// Events of the caller's tenant matching the filter, oldest first; the next page starts
    /// after the last `seq`.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        filter: AuditFilter,
    ) -> Result<(Vec<AuditEventView>, Option<i64>)> {
        self.permit(caller, policy::require_auditor(caller), "audit.read.denied", "audit_log", None).await?;
        if filter.after_seq < 0 {
            return Err(Error::field("after_seq", "Must be 0 or more."));
        }
        let limit = filter.limit;
        let events = self.store.list_audit(caller.tenant(), &filter).await?;
        let next = (events.len() == limit as usize).then(|| events.last().map(|e| e.seq)).flatten();
        Ok((events.into_iter().map(AuditEventView::from).collect(), next))
    }
}

/// The hash chain alone (no checkpoints): the same check as [`crate::checkpoint::verify_log`].
pub async fn verify_chain(store: &dyn crate::store::Store, tenant: crate::ids::TenantId) -> Result<AuditVerification> {
    crate::checkpoint::verify_log(store, tenant, Vec::new(), &[], &|_| {}).await
}

/// Which events an export covers.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    pub after_seq: i64,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Events read per database round trip while exporting.
pub const EXPORT_PAGE: u32 = 500;

/// The tenant's events matching `filter` with `seq <= upto`, as JSON Lines (one
/// [`AuditEventView`] per line), read from the store a page at a time as the stream is polled.
pub fn ndjson_stream(
    store: std::sync::Arc<dyn crate::store::Store>,
    tenant: crate::ids::TenantId,
    filter: ExportFilter,
    upto: i64,
) -> impl futures::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
    futures::stream::try_unfold(Some(filter.after_seq), move |after| {
        let store = store.clone();
        let (from, to) = (filter.from, filter.to);
        async move {
            let Some(after) = after.filter(|a| *a < upto) else { return Ok(None) };
            let page = AuditFilter { from, to, ..AuditFilter::after(after, EXPORT_PAGE) };
            let events = store.list_audit(tenant, &page).await?;
            let full = events.len() == EXPORT_PAGE as usize;
            let next = events.last().map(|e| e.seq);
            let mut chunk = Vec::with_capacity(events.len() * 400);
            for e in events.into_iter().filter(|e| e.seq <= upto) {
                serde_json::to_writer(&mut chunk, &AuditEventView::from(e)).map_err(Error::internal)?;
                chunk.push(b'\n');
            }
            let next = if full { next } else { None };
            Ok(Some((bytes::Bytes::from(chunk), next)))
        }
    })
}

impl Conclave {
    /// The caller's tenant's events as JSON Lines for a SIEM, up to the newest event at the time
    /// of the call, streamed from the database page by page. The export is audited.
    pub async fn export_audit(
        &self,
        caller: &Caller,
        filter: ExportFilter,
    ) -> Result<impl futures::Stream<Item = Result<bytes::Bytes>> + Send + 'static> {
        self.permit(caller, policy::require_auditor(caller), "audit.export.denied", "audit_log", None).await?;
        if filter.after_seq < 0 {
            return Err(Error::field("after_seq", "Must be 0 or more."));
        }
        let (upto, _) = self.store.audit_head(caller.tenant()).await?;
        self.audit_by(
            caller,
            crate::app::AuditRecord::new("audit.exported", "audit_log", caller.tenant())
                .detail(export_detail(&filter, upto)),
        )
        .await;
        Ok(ndjson_stream(self.store.clone(), caller.tenant(), filter, upto))
    }

    /// Records an export made from the command line (`conclave audit export`) in the tenant's log.
    pub async fn record_offline_export(&self, tenant: crate::ids::TenantId, filter: &ExportFilter, upto: i64) {
        let mut record =
            crate::app::AuditRecord::new("audit.exported", "audit_log", tenant).detail(export_detail(filter, upto));
        record.actor_kind = Some("command_line");
        self.audit(tenant, &crate::principal::RequestMeta::default(), record).await
    }
}

fn export_detail(filter: &ExportFilter, upto: i64) -> serde_json::Value {
    let rfc = |t: Option<OffsetDateTime>| t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
    serde_json::json!({"after_seq": filter.after_seq, "upto_seq": upto, "from": rfc(filter.from), "to": rfc(filter.to)})
}
