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

pub use crate::checkpoint::{AuditVerification, CheckpointProblem};

impl Conclave {
    /// Recomputes the tenant's hash chain from the first event and checks the checkpoints
    /// recorded in the database against it (with the signing key's public key): an edited,
    /// deleted, inserted or reordered event, removed newest events, or a log rewritten behind a
    /// checkpoint is named by its sequence number; a forged checkpoint by its own.
    pub async fn verify_audit(&self, caller: &Caller) -> Result<AuditVerification> {
        policy::require_auditor(caller)?;
        let tenant = caller.tenant();
        // The key comes from the key provider, never from the database the checkpoints are in.
        let keys = match self.checkpointer() {
            Some(c) => vec![c.signer.public_key().await.map_err(|e| Error::Unavailable {
                service: "checkpoint signing key",
                detail: e.to_string(),
            })?],
            None => Vec::new(),
        };
        let checkpoints = crate::checkpoint::database_checkpoints(self.store.as_ref(), tenant).await?;
        crate::checkpoint::verify_log(self.store.as_ref(), tenant, checkpoints, &keys, &|_| {}).await
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

fn hex(bytes: &[u8]) -> String {
    crate::records::hex(bytes)
}
