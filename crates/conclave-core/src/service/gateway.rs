//! The OpenAI-compatible gateway: chat completions for existing clients (the `openai` SDKs,
//! editors, scripts), with the tenant's model allow-list, budgets, usage records and audit.
//! `model` is an allowed model id, or `agent:<id>` to apply that agent's instructions and
//! parameters. Nothing is stored but usage and the audit event: a gateway call is not a
//! conversation. The audit event (`gateway.completion`) is appended when the call ends, in the
//! same transaction as its usage record; a call the provider refuses at once is audited then.

use std::sync::Arc;

use futures::StreamExt;

use crate::app::{AuditRecord, Conclave};
use crate::content::SealScope;
use crate::error::{Error, Result};
use crate::ids::AgentId;
use crate::policy;
use crate::principal::{Caller, Scope};
use crate::provider::{ChatEvent, ChatMessage, ChatRequest, ChatStream, ProviderError};
use crate::records::{NewAuditEvent, Usage, UsageRecord, UsageSource};
use crate::service::replies::{estimate_tokens, MAX_MESSAGE_BYTES};
use crate::service::usage::Payer;

/// Most messages one request may carry, and most bytes of text over all of them.
pub const MAX_GATEWAY_MESSAGES: usize = 1_000;
pub const MAX_GATEWAY_TEXT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct GatewayMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Default)]
pub struct GatewayRequest {
    pub model: String,
    pub messages: Vec<GatewayMessage>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
}

/// A started completion: the model's events, and the meter that records usage when the call
/// ends (or is abandoned).
pub struct GatewayCall {
    /// The model id answered with (an agent's model for `agent:<id>`).
    pub model: String,
    pub events: ChatStream,
    pub meter: UsageMeter,
}

impl Conclave {
    pub async fn gateway_start(self: &Arc<Self>, caller: &Caller, req: GatewayRequest) -> Result<GatewayCall> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "gateway.request.denied",
            "model",
            None,
        )
        .await?;
        if req.messages.is_empty() {
            return Err(Error::field("messages", "Send at least one message."));
        }
        if req.messages.len() > MAX_GATEWAY_MESSAGES {
            return Err(Error::field("messages", format!("At most {MAX_GATEWAY_MESSAGES} messages a request.")));
        }
        let total: usize = req.messages.iter().map(|m| m.content.len()).sum();
        if total > MAX_GATEWAY_TEXT_BYTES {
            return Err(Error::field(
                "messages",
                format!("At most {} MiB of text a request.", MAX_GATEWAY_TEXT_BYTES >> 20),
            ));
        }
        for (field, value, range) in [("temperature", req.temperature, 0.0..=2.0), ("top_p", req.top_p, 0.0..=1.0)] {
            if value.is_some_and(|v| !range.contains(&v)) {
                return Err(Error::field(field, format!("Must be between {} and {}.", range.start(), range.end())));
            }
        }
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        let (model, mut params, agent_id) = match req.model.strip_prefix("agent:") {
            Some(id) => {
                let id: AgentId = id.parse().map_err(|_| Error::NotFound("model"))?;
                let agent = self.visible_agent(caller, id).await.map_err(|_| Error::NotFound("model"))?;
                let instructions = self
                    .codec
                    .open(
                        SealScope::AgentInstructions { tenant: agent.tenant_id, agent: agent.id },
                        &agent.instructions,
                    )
                    .await?;
                if !instructions.trim().is_empty() {
                    messages.push(ChatMessage { role: "system", content: instructions });
                }
                (agent.model.clone(), (agent.temperature, agent.top_p, agent.max_tokens), Some(agent.id))
            }
            None => (req.model.clone(), (None, None, None), None),
        };
        let tenant = self.tenant(caller.tenant()).await?;
        let route = match self.model_route(&tenant, &model) {
            Ok(route) => route,
            Err(_) if self.catalog().route(&model).is_none() => return Err(Error::NotFound("model")),
            Err(reason) => {
                let refused = Error::Forbidden(reason);
                return Err(self.deny(caller, refused, "gateway.model.denied", "model", Some(model.clone())).await);
            }
        };
        for (i, m) in req.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(Error::field(
                        format!("messages[{i}].role"),
                        format!("Role '{other}' is not supported; use system, user or assistant."),
                    ))
                }
            };
            if m.content.len() > MAX_MESSAGE_BYTES * 16 {
                return Err(Error::field(format!("messages[{i}].content"), "This message is too long."));
            }
            messages.push(ChatMessage { role, content: m.content });
        }
        params.0 = req.temperature.or(params.0);
        params.1 = req.top_p.or(params.1);
        params.2 = req.max_tokens.or(params.2);
        self.check_budget(caller, &tenant).await?;
        let prompt_estimate = estimate_tokens(messages.iter().map(|m| m.content.as_str()));
        let request = ChatRequest {
            model: model.clone(),
            messages,
            temperature: params.0,
            top_p: params.1,
            max_tokens: params.2,
            stop: req.stop,
            user: Some(caller.user().to_string()),
        };
        let audit = Self::audit_event(
            caller.tenant(),
            &caller.meta,
            AuditRecord::new("gateway.completion", "model", &model).by(caller).detail(serde_json::json!({
                "agent_id": agent_id,
                "stream": req.stream,
            })),
        );
        let events = match route.provider.client.stream_chat(request).await {
            Ok(events) => events,
            Err(e) => {
                self.append_audit_event(&audit, None).await;
                return Err(e.into());
            }
        };
        let meter = UsageMeter {
            core: Arc::clone(self),
            payer: Payer::of(caller),
            model: model.clone(),
            prompt_estimate,
            completion_chars: 0,
            reported: None,
            audit: Some(audit),
        };
        Ok(GatewayCall { model, events, meter })
    }
}

/// Counts what a gateway call produced and records its usage with the call's audit event once:
/// when told the call ended, or, if the client went away first, when dropped.
pub struct UsageMeter {
    core: Arc<Conclave>,
    payer: Payer,
    model: String,
    prompt_estimate: u32,
    completion_chars: usize,
    reported: Option<Usage>,
    /// The call's audit event, until it is written (with the usage).
    audit: Option<NewAuditEvent>,
}

impl UsageMeter {
    /// Notes one event on its way to the client.
    pub fn observe(&mut self, event: &Result<ChatEvent, ProviderError>) {
        match event {
            Ok(ChatEvent::Delta(text)) => self.completion_chars += text.chars().count(),
            Ok(ChatEvent::Usage(u)) => self.reported = Some(*u),
            _ => {}
        }
    }

    /// The usage to report to the client: the provider's, or the estimate.
    pub fn usage(&self) -> Usage {
        self.reported.unwrap_or(Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: u32::try_from(self.completion_chars.div_ceil(4)).unwrap_or(u32::MAX),
        })
    }

    /// The usage row and the audit event, stamped now; `None` once taken.
    fn take_records(&mut self) -> Option<(UsageRecord, NewAuditEvent)> {
        let mut audit = self.audit.take()?;
        audit.at = crate::clock::now();
        let (usage, estimated) = (self.usage(), self.reported.is_none());
        let record = self.core.usage_record(self.payer, UsageSource::Gateway, None, &self.model, usage, estimated);
        Some((record, audit))
    }

    /// Records the call's usage and audit event, and returns once they are stored.
    pub async fn finish(mut self) {
        if let Some((usage, audit)) = self.take_records() {
            self.core.queue_audit(audit, Some(usage)).await;
        }
    }
}

impl Drop for UsageMeter {
    fn drop(&mut self) {
        let Some((usage, audit)) = self.take_records() else {
            return;
        };
        let core = self.core.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                core.queue_audit(audit, Some(usage)).await;
            });
        }
    }
}

/// Audit events (with their usage rows, for the ends of gateway calls) waiting to be written.
/// One task writes whatever has gathered in one transaction, in arrival order: concurrent
/// requests share a commit and never contend for the tenant's audit lock.
#[derive(Default)]
pub(crate) struct RecordQueue {
    sender: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<QueuedCall>>>,
}

struct QueuedCall {
    audit: NewAuditEvent,
    usage: Option<UsageRecord>,
    stored: tokio::sync::oneshot::Sender<()>,
}

/// Most events written in one transaction.
const MAX_BATCH: usize = 64;

impl Conclave {
    /// Stores an audit event (and a gateway call's usage row with it) through the shared
    /// writer; returns once they are written (or their failure handled as any audit failure is).
    pub(crate) async fn queue_audit(&self, audit: NewAuditEvent, usage: Option<UsageRecord>) {
        let (stored, done) = tokio::sync::oneshot::channel();
        let call = QueuedCall { audit, usage, stored };
        let refused = {
            let mut sender = self.gateway_records.sender.lock().unwrap_or_else(|e| e.into_inner());
            let tx = sender.get_or_insert_with(|| self.start_record_writer());
            tx.send(call).err().map(|e| e.0)
        };
        match refused {
            // The writer is gone (shutting down): write it here.
            Some(call) => self.append_audit_event(&call.audit, call.usage.as_ref()).await,
            None => {
                let _ = done.await;
            }
        }
    }

    fn start_record_writer(&self) -> tokio::sync::mpsc::UnboundedSender<QueuedCall> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<QueuedCall>();
        let store = Arc::clone(&self.store);
        // Weak: the writer must not keep the service alive; it ends when the service (and so
        // the sender) is dropped.
        let me = self.me.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                let pairs: Vec<(NewAuditEvent, Option<UsageRecord>)> =
                    batch.iter().map(|c| (c.audit.clone(), c.usage.clone())).collect();
                let written = store.append_audit_with_usage(&pairs).await;
                if let (Err(e), Some(core)) = (&written, me.upgrade()) {
                    // One at a time, so one bad call does not lose the others; failures are
                    // counted and logged there.
                    tracing::warn!(error = %e, events = batch.len(), "a batch of audit events failed; writing them one by one");
                    for call in &batch {
                        core.append_audit_event(&call.audit, call.usage.as_ref()).await;
                    }
                } else if let Some(core) = me.upgrade() {
                    core.audit_unwritable.store(false, std::sync::atomic::Ordering::Relaxed);
                }
                for call in batch {
                    let _ = call.stored.send(());
                }
            }
        });
        tx
    }
}

/// Drives a call to its end, collecting the whole text (for the non-streamed answer).
pub async fn collect(mut call: GatewayCall) -> Result<(String, Option<String>, Usage, String)> {
    let mut text = String::new();
    let mut finish = None;
    while let Some(event) = call.events.next().await {
        call.meter.observe(&event);
        match event? {
            ChatEvent::Delta(d) => text.push_str(&d),
            ChatEvent::Finish { reason } => finish = reason,
            ChatEvent::Usage(_) => {}
        }
    }
    let usage = call.meter.usage();
    let model = call.model.clone();
    call.meter.finish().await;
    Ok((text, finish, usage, model))
}
