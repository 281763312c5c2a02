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
        }
    }
}

impl Conclave {
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
