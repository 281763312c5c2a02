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
    /// `user`, `api_key` or `anonymous`.
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
            hash: e.hash.as_deref().map(hex),
        }
    }
}

/// The result of checking the tenant's hash chain.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditVerification {
    /// True when every event is in place and unchanged.
    pub ok: bool,
    /// Events checked.
    pub events: i64,
    /// Hash of the newest event (hex).
    pub head: Option<String>,
    /// The first sequence number that is missing, out of place or altered.
    pub first_bad_seq: Option<i64>,
}

impl Conclave {
    /// Recomputes the tenant's hash chain from the first event: an edited, deleted, inserted or
    /// reordered event, or removed newest events, is named by its sequence number.
    pub async fn verify_audit(&self, caller: &Caller) -> Result<AuditVerification> {
        policy::require_auditor(caller)?;
        verify_chain(self.store.as_ref(), caller.tenant()).await
    }

    /// Events of the caller's tenant matching the filter, oldest first; the next page starts
    /// after the last `seq`.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        filter: AuditFilter,
    ) -> Result<(Vec<AuditEventView>, Option<i64>)> {
        policy::require_auditor(caller)?;
        if filter.after_seq < 0 {
            return Err(Error::field("after_seq", "Must be 0 or more."));
        }
        let limit = filter.limit;
        let events = self.store.list_audit(caller.tenant(), &filter).await?;
        let next = (events.len() == limit as usize).then(|| events.last().map(|e| e.seq)).flatten();
        Ok((events.into_iter().map(AuditEventView::from).collect(), next))
    }
}

/// The chain check itself, shared by the API and the offline `conclave audit verify`.
pub async fn verify_chain(store: &dyn crate::store::Store, tenant: crate::ids::TenantId) -> Result<AuditVerification> {
    const PAGE: u32 = 1000;
    let (last_seq, stored_head) = store.audit_head(tenant).await?;
    let mut prev = [0u8; 32];
    let mut expected = 1i64;
    let bad = |seq: i64, checked: i64, prev: &[u8; 32]| AuditVerification {
        ok: false,
        events: checked,
        head: Some(hex(prev)),
        first_bad_seq: Some(seq),
    };
    loop {
        let page = store.list_audit(tenant, &AuditFilter::after(expected - 1, PAGE)).await?;
        let n = page.len();
        for e in page {
            if e.seq != expected {
                return Ok(bad(expected, expected - 1, &prev));
            }
            let h = crate::records::audit_hash(&prev, &e);
            if e.hash.as_deref() != Some(&h[..]) {
                return Ok(bad(e.seq, expected - 1, &prev));
            }
            prev = h;
            expected += 1;
        }
        if n < PAGE as usize {
            break;
        }
    }
    let checked = expected - 1;
    // Newest events removed: the tenant's counter and head remember them.
    if checked != last_seq || (checked > 0 && stored_head.as_deref() != Some(&prev[..])) {
        return Ok(bad(checked + 1, checked, &prev));
    }
    Ok(AuditVerification { ok: true, events: checked, head: (checked > 0).then(|| hex(&prev)), first_bad_seq: None })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
