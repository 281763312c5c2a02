//! Replies: a user message and the assistant message answering it (state `streaming`) are
//! stored first; then a task that does not belong to the HTTP request asks the model, relays its
//! text to every subscriber, saves the partial text at short intervals under a lease its replica
//! renews, and stores the outcome. A caller that waits (the non-streamed post) awaits that task's
//! end, so a dropped client never stops a reply.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::app::{AuditRecord, Conclave};
use crate::content::{SealScope, Sealed};
use crate::error::{Error, Result};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::live::{EndedMessage, LiveReply, ReplyEnd};
use crate::notify::Notice;
use crate::page::all_pages;
use crate::policy;
use crate::principal::{Caller, Scope};
use crate::provider::{ChatEvent, ChatMessage, ChatRequest, ModelRoute, ProviderError};
use crate::records::*;
use crate::service::conversations::auto_title;
use crate::store::Lease;
use crate::views::{ExchangeView, MessageView};

pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// How often the text so far is saved (and the lease renewed, and a cancel looked for).
pub const SAVE_INTERVAL: Duration = Duration::from_millis(500);

/// A reply that has started: the user message it answers and the assistant message being
/// generated.
pub struct StartedReply {
    pub user_message: Option<MessageView>,
    pub reply: MessageView,
    pub live: Arc<LiveReply>,
}

/// Everything the detached task needs; no borrow of the request.
struct ReplyJob {
    payer: crate::service::usage::Payer,
    tenant: TenantId,
    conversation: ConversationId,
    route: ModelRoute,
    request: Option<ChatRequest>,
    live: Arc<LiveReply>,
    /// The reply's stored creation time and model, for its final view.
    created_at: time::OffsetDateTime,
    model: Option<String>,
}

impl Conclave {
    /// Posts a message and waits for the whole reply.
    pub async fn post_message(
        self: &Arc<Self>,
        caller: &Caller,
        conversation: ConversationId,
        content: String,
    ) -> Result<ExchangeView> {
        let started = self.start_reply(caller, conversation, content).await?;
        let user_message = started.user_message.clone().ok_or_else(|| Error::Internal("no user message".into()))?;
        let assistant_message = wait_for_end(&started.live).await?;
        Ok(ExchangeView { user_message, assistant_message })
    }

    /// Stores the user message and a `streaming` assistant message, then starts the reply task.
    pub async fn start_reply(
        self: &Arc<Self>,
        caller: &Caller,
        conversation_id: ConversationId,
        content: String,
    ) -> Result<StartedReply> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "message.create.denied",
            "conversation",
            None,
        )
        .await?;
        if content.trim().is_empty() {
            return Err(Error::field("content", "Write a message first."));
        }
        if content.len() > MAX_MESSAGE_BYTES {
            return Err(Error::field(
                "content",
                format!(
                    "A message is limited to {} KiB; this one is {} bytes.",
                    MAX_MESSAGE_BYTES / 1024,
                    content.len()
                ),
            ));
        }
        // The conversation, its agent, the caller's running replies and the conversation's key
        // in one read: each store round trip costs more than the work it does here.
        let context = self
            .store
            .reply_context(caller.tenant(), caller.user(), conversation_id)
            .await
            .map_err(super::conversations::conversation_not_found)?;
        let conversation = &context.conversation;
        let (route, agent) = self.reply_route(caller, context.agent.clone()).await?;
        self.check_server_reply_limit()?;
        self.check_user_reply_limit(context.streaming)?;

        let tenant = caller.tenant();
        self.codec.prepare_conversation_key(tenant, conversation_id, context.wrapped_key.as_deref()).await?;
        let mut messages = self.system_prompt(&agent).await?;
        if context.has_messages {
            messages.extend(self.history(tenant, conversation_id, None).await?);
        }
        messages.push(ChatMessage { role: "user", content: content.clone() });

        let now = crate::clock::now();
        let user_id = MessageId::new();
        let user_record = MessageRecord {
            tenant_id: tenant,
            id: user_id,
            conversation_id,
            role: MessageRole::User,
            content: self.seal_message(tenant, conversation_id, user_id, &content).await?,
            status: MessageStatus::Complete,
            model: None,
            usage: None,
            finish_reason: None,
            error: None,
            reply_to: None,
            created_at: now,
            updated_at: now,
        };
        let reply_record = self.pending_reply(&user_record, &agent.model).await?;
        let title = match conversation.title {
            None => Some(
                self.codec
                    .seal(SealScope::ConversationTitle { tenant, conversation: conversation_id }, &auto_title(&content))
                    .await?,
            ),
            Some(_) => None,
        };
        self.store.insert_exchange(Some(&user_record), &reply_record, self.lease(), title.as_ref()).await?;
        self.audit_by(
            caller,
            AuditRecord::new("message.create", "conversation", conversation_id).detail(serde_json::json!({
                "message_id": user_id,
                "reply_id": reply_record.id,
                "model": agent.model,
            })),
        )
        .await;
        let live = self.spawn_reply(caller, conversation_id, &reply_record, route, &agent, messages);
        Ok(StartedReply {
            user_message: Some(self.message_view(&user_record).await?),
            reply: self.message_view(&reply_record).await?,
            live,
        })
    }

    /// A new reply to a user message (or to the user message an assistant message answered).
    pub async fn regenerate(
        self: &Arc<Self>,
        caller: &Caller,
        conversation_id: ConversationId,
        message_id: MessageId,
    ) -> Result<StartedReply> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "message.regenerate.denied",
            "conversation",
            None,
        )
        .await?;
        let conversation = self.owned_conversation(caller, conversation_id).await?;
        let target =
            self.store.get_message(caller.tenant(), conversation_id, message_id).await.map_err(|e| match e {
                crate::StoreError::NotFound => Error::NotFound("message"),
                other => other.into(),
            })?;
        let user_message = match (target.role, target.reply_to) {
            (MessageRole::User, _) => target,
            (MessageRole::Assistant, Some(question)) => {
                self.store.get_message(caller.tenant(), conversation_id, question).await?
            }
            (MessageRole::Assistant, None) => {
                return Err(Error::Conflict("This message answers no user message.".into()))
            }
        };
        let (route, agent) = self.conversation_agent(caller, &conversation).await?;
        self.check_reply_limits(caller).await?;
        let mut messages = self.system_prompt(&agent).await?;
        messages.extend(self.history(caller.tenant(), conversation_id, Some(user_message.id)).await?);
        let reply_record = self.pending_reply(&user_message, &agent.model).await?;
        self.store.insert_exchange(None, &reply_record, self.lease(), None).await?;
        self.audit_by(
            caller,
            AuditRecord::new("message.regenerate", "conversation", conversation_id).detail(serde_json::json!({
                "message_id": user_message.id,
                "reply_id": reply_record.id,
                "model": agent.model,
            })),
        )
        .await;
        let live = self.spawn_reply(caller, conversation_id, &reply_record, route, &agent, messages);
        Ok(StartedReply {
            user_message: Some(self.message_view(&user_message).await?),
            reply: self.message_view(&reply_record).await?,
            live,
        })
    }

    /// Stops a reply being generated, here or on another replica. The reply ends `cancelled`
    /// with the text so far; cancelling a finished reply changes nothing.
    pub async fn cancel_reply(
        &self,
        caller: &Caller,
        conversation_id: ConversationId,
        message_id: MessageId,
    ) -> Result<()> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "message.cancel.denied",
            "conversation",
            None,
        )
        .await?;
        self.owned_conversation(caller, conversation_id).await?;
        let message =
            self.store.get_message(caller.tenant(), conversation_id, message_id).await.map_err(|e| match e {
                crate::StoreError::NotFound => Error::NotFound("message"),
                other => other.into(),
            })?;
        if message.role != MessageRole::Assistant {
            return Err(Error::Conflict("Only a reply can be cancelled.".into()));
        }
        match self.hub.get(caller.tenant(), message_id) {
            Some(live) => live.cancel.cancel(),
            None => {
                if self.store.request_cancel(caller.tenant(), conversation_id, message_id).await? {
                    self.notifier.publish(Notice::Cancel { message: message_id }).await;
                }
            }
        }
        self.audit_by(caller, AuditRecord::new("message.cancel", "message", message_id)).await;
        Ok(())
    }

    /// The agent a conversation talks to and the route to its model, checked against the
    /// tenant's allow-list, region pin and budgets.
    async fn conversation_agent(
        &self,
        caller: &Caller,
        conversation: &ConversationRecord,
    ) -> Result<(ModelRoute, AgentRecord)> {
        let agent = match self.visible_agent(caller, conversation.agent_id).await {
            Ok(agent) => Some(agent),
            Err(Error::NotFound(_)) => None,
            Err(other) => return Err(other),
        };
        self.reply_route(caller, agent).await
    }

    /// The route to the model of a conversation's agent (`None`: no longer visible to the
    /// caller), checked against the tenant's allow-list, region pin and budgets.
    async fn reply_route(&self, caller: &Caller, agent: Option<AgentRecord>) -> Result<(ModelRoute, AgentRecord)> {
        let agent = agent.ok_or_else(|| {
            Error::Conflict("This conversation's agent was deleted; start a new conversation.".into())
        })?;
        let tenant = self.tenant(caller.tenant()).await?;
        let route = self.model_route(&tenant, &agent.model).map_err(|reason| {
            Error::Conflict(format!("This conversation's agent cannot be used right now: {reason}"))
        })?;
        self.check_budget(caller, &tenant).await?;
        Ok((route, agent))
    }

    async fn check_reply_limits(&self, caller: &Caller) -> Result<()> {
        self.check_server_reply_limit()?;
        let running = self.store.count_streaming(caller.tenant(), caller.user()).await?;
        self.check_user_reply_limit(running)
    }

    fn check_server_reply_limit(&self) -> Result<()> {
        if self.hub.len() >= self.config.limits.max_replies_per_server {
            return Err(Error::RateLimited {
                retry_after: Duration::from_secs(5),
                detail: "This server is generating as many replies as it may; try again in a few seconds.".into(),
            });
        }
        Ok(())
    }

    /// `running`: the caller's replies being generated, across replicas.
    fn check_user_reply_limit(&self, running: i64) -> Result<()> {
        let limits = &self.config.limits;
        if running >= i64::from(limits.max_replies_per_user) {
            return Err(Error::RateLimited {
                retry_after: Duration::from_secs(2),
                detail: format!(
                    "You already have {running} replies being generated (at most {}); wait for one to finish or cancel it.",
                    limits.max_replies_per_user
                ),
            });
        }
        Ok(())
    }

    async fn system_prompt(&self, agent: &AgentRecord) -> Result<Vec<ChatMessage>> {
        let instructions = self
            .codec
            .open(SealScope::AgentInstructions { tenant: agent.tenant_id, agent: agent.id }, &agent.instructions)
            .await?;
        Ok(if instructions.trim().is_empty() {
            vec![]
        } else {
            vec![ChatMessage { role: "system", content: instructions }]
        })
    }

    async fn pending_reply(&self, question: &MessageRecord, model: &str) -> Result<MessageRecord> {
        let id = MessageId::new();
        let now = crate::clock::now();
        Ok(MessageRecord {
            tenant_id: question.tenant_id,
            id,
            conversation_id: question.conversation_id,
            role: MessageRole::Assistant,
            content: self.seal_message(question.tenant_id, question.conversation_id, id, "").await?,
            status: MessageStatus::Streaming,
            model: Some(model.to_owned()),
            usage: None,
            finish_reason: None,
            error: None,
            reply_to: Some(question.id),
            created_at: now,
            updated_at: now,
        })
    }

    pub(crate) fn lease(&self) -> Lease {
        Lease { owner: self.replica, expires_at: crate::clock::now() + self.config.reply_lease }
    }

    fn spawn_reply(
        self: &Arc<Self>,
        caller: &Caller,
        conversation: ConversationId,
        reply: &MessageRecord,
        route: ModelRoute,
        agent: &AgentRecord,
        messages: Vec<ChatMessage>,
    ) -> Arc<LiveReply> {
        let live = self.hub.register(caller.tenant(), conversation, reply.id, reply.reply_to.unwrap_or(reply.id));
        let request = ChatRequest {
            model: agent.model.clone(),
            messages,
            temperature: agent.temperature,
            top_p: agent.top_p,
            max_tokens: agent.max_tokens,
            stop: Vec::new(),
            user: Some(caller.user().to_string()),
        };
        let job = ReplyJob {
            payer: crate::service::usage::Payer::of(caller),
            tenant: caller.tenant(),
            conversation,
            route,
            request: Some(request),
            live: live.clone(),
            created_at: crate::clock::truncate_micros(reply.created_at),
            model: reply.model.clone(),
        };
        // The reply outlives the request: it keeps the request's trace for the provider call.
        self.replies.spawn(crate::trace::carried(Arc::clone(self).run_reply(job)));
        live
    }

    /// The conversation so far, as the model should see it: user messages and the text of
    /// finished replies. With `until`, stops after that (user) message.
    async fn history(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        until: Option<MessageId>,
    ) -> Result<Vec<ChatMessage>> {
        let mut out = Vec::new();
        for m in all_pages(|page| self.store.list_messages(tenant, conversation, page)).await? {
            let content =
                self.codec.open(SealScope::MessageContent { tenant, conversation, message: m.id }, &m.content).await?;
            let keep = match m.role {
                MessageRole::User => true,
                MessageRole::Assistant => m.status != MessageStatus::Streaming && !content.is_empty(),
            };
            if keep {
                out.push(ChatMessage { role: m.role.as_str(), content });
            }
            if Some(m.id) == until {
                break;
            }
        }
        Ok(out)
    }

    async fn seal_message(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        message: MessageId,
        text: &str,
    ) -> Result<Sealed> {
        self.codec.seal(SealScope::MessageContent { tenant, conversation, message }, text).await
    }

    /// The detached task: relays the provider's text, saves it as it grows, stores the end.
    ///
    /// Thousands of these wait at once on a slow provider, so what they keep while waiting is
    /// small: the ending and the lost-reply paths run boxed (their futures exist only then), and
    /// a save holds the sealed text, not a copy of the plaintext too.
    async fn run_reply(self: Arc<Self>, mut job: ReplyJob) {
        let live = job.live.clone();
        let reply_id = live.id;
        let request = job.request.take().unwrap_or_default();
        let prompt_estimate = estimate_tokens(request.messages.iter().map(|m| m.content.as_str()));
        let mut end = ReplyEnding { prompt_estimate, ..ReplyEnding::default() };
        let mut saved_len = 0usize;
        let mut last_save = tokio::time::Instant::now();
        let renew_every = self.config.reply_lease / 3;
        let mut tick = tokio::time::interval(SAVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;

        // Waiting for the provider to start answering can take long: keep the lease alive and
        // listen for cancel requests meanwhile, as during the reply itself.
        let stream = {
            let start = job.route.provider.client.stream_chat(request);
            tokio::pin!(start);
            loop {
                tokio::select! {
                    s = &mut start => break Some(s),
                    () = live.cancel.cancelled() => break None,
                    () = live.abort.cancelled() => break None,
                    _ = tick.tick() => {
                        if last_save.elapsed() < renew_every {
                            continue;
                        }
                        last_save = tokio::time::Instant::now();
                        match self.save_partial(&job, String::new()).await {
                            Some(saved) if saved.cancel_requested => live.cancel.cancel(),
                            Some(saved) if !saved.still_owned => return Box::pin(self.lost_reply(&job)).await,
                            _ => {}
                        }
                    }
                }
            }
        };
        match stream {
            None if live.abort.is_cancelled() => end.failure = Some(ProviderError::Stream(SHUTDOWN.into())),
            None => end.status = MessageStatus::Cancelled,
            Some(Err(e)) => end.failure = Some(e),
            Some(Ok(mut events)) => loop {
                tokio::select! {
                    event = events.next() => match event {
                        None => break,
                        Some(Ok(ChatEvent::Delta(delta))) => live.push(&delta),
                        Some(Ok(ChatEvent::Finish { reason })) => end.finish_reason = reason,
                        Some(Ok(ChatEvent::Usage(u))) => end.usage = Some(u),
                        Some(Err(e)) => {
                            end.failure = Some(e);
                            break;
                        }
                    },
                    _ = tick.tick() => {
                        if live.len() == saved_len && last_save.elapsed() < renew_every {
                            continue;
                        }
                        let text = live.text();
                        let len = text.len();
                        last_save = tokio::time::Instant::now();
                        match self.save_partial(&job, text).await {
                            Some(saved) if saved.cancel_requested => live.cancel.cancel(),
                            Some(saved) if !saved.still_owned => return Box::pin(self.lost_reply(&job)).await,
                            Some(_) => {
                                if len != saved_len {
                                    self.notifier.publish(Notice::Progress { message: reply_id, offset: len }).await;
                                }
                                saved_len = len;
                            }
                            None => {}
                        }
                    }
                    () = live.cancel.cancelled() => {
                        end.status = MessageStatus::Cancelled;
                        break;
                    }
                    () = live.abort.cancelled() => {
                        end.failure = Some(ProviderError::Stream(SHUTDOWN.into()));
                        break;
                    }
                }
            },
        }
        Box::pin(self.end_reply(job, end)).await;
    }

    /// Stores how the reply ended, records its usage and tells its subscribers.
    async fn end_reply(&self, job: ReplyJob, end: ReplyEnding) {
        let ReplyEnding { prompt_estimate, mut status, finish_reason, usage, failure } = end;
        let live = &job.live;
        let reply_id = live.id;
        let text = live.text();
        if failure.is_some() {
            status = MessageStatus::Failed;
        }
        let estimated = usage.is_none();
        let usage = usage.or_else(|| {
            (status == MessageStatus::Complete || !text.is_empty()).then(|| Usage {
                prompt_tokens: prompt_estimate,
                completion_tokens: estimate_tokens(std::iter::once(text.as_str())),
            })
        });
        if let Some(u) = usage {
            self.record_usage(job.payer, UsageSource::Conversation, Some(reply_id), &job.route.id, u, estimated).await;
        }
        let outcome = match self.seal_message(job.tenant, job.conversation, reply_id, &text).await {
            Ok(content) => Some(ReplyOutcome {
                content,
                status,
                usage,
                finish_reason: match status {
                    MessageStatus::Complete => finish_reason.or(Some("stop".into())),
                    _ => None,
                },
                error: failure.as_ref().map(|e| e.to_string()),
            }),
            Err(e) => {
                tracing::error!(error = %e, message_id = %reply_id, "could not seal a reply");
                None
            }
        };
        let finished = match &outcome {
            Some(outcome) => match self.store.finish_reply(job.tenant, reply_id, outcome).await {
                Ok(finished) => finished,
                Err(e) => {
                    tracing::error!(error = %e, message_id = %reply_id, "could not store the end of a reply");
                    false
                }
            },
            None => false,
        };
        // Stored just now as known here: no need to read it back. Otherwise (it ended elsewhere,
        // or the write failed) the store says how it stands.
        let stored = match (&outcome, finished) {
            (Some(outcome), true) => Some(MessageView {
                id: reply_id,
                conversation_id: job.conversation,
                role: MessageRole::Assistant,
                content: text.clone(),
                status: outcome.status,
                model: job.model.clone(),
                usage: outcome.usage,
                finish_reason: outcome.finish_reason.clone(),
                error: outcome.error.clone(),
                created_at: job.created_at,
            }),
            _ => match self.store.get_message(job.tenant, job.conversation, reply_id).await {
                Ok(m) => self.message_view(&m).await.ok(),
                Err(_) => None,
            },
        };
        let message = stored.unwrap_or_else(|| MessageView {
            id: reply_id,
            conversation_id: job.conversation,
            role: MessageRole::Assistant,
            content: text.clone(),
            status,
            model: Some(job.route.id.clone()),
            usage,
            finish_reason: None,
            error: failure.as_ref().map(|e| e.to_string()),
            created_at: crate::clock::now(),
        });
        self.notifier.publish(Notice::Progress { message: reply_id, offset: text.len() }).await;
        match failure {
            Some(error) => {
                tracing::warn!(message_id = %reply_id, error = %error, "reply failed");
                live.end(ReplyEnd::Failed { error, message: EndedMessage::new(message) });
            }
            None => live.end(ReplyEnd::Done(EndedMessage::new(message))),
        }
        self.hub.remove(reply_id);
    }

    /// The reply ended elsewhere (its lease expired while this process was stalled and another
    /// replica marked it failed): stop, and tell subscribers how it stands in the store.
    async fn lost_reply(&self, job: &ReplyJob) {
        let live = &job.live;
        tracing::warn!(message_id = %live.id, "the reply was ended elsewhere while this server generated it; stopping");
        let stored = match self.store.get_message(job.tenant, job.conversation, live.id).await {
            Ok(m) => self.message_view(&m).await.ok(),
            Err(_) => None,
        };
        let message = stored.unwrap_or_else(|| MessageView {
            id: live.id,
            conversation_id: job.conversation,
            role: MessageRole::Assistant,
            content: live.text(),
            status: MessageStatus::Failed,
            model: Some(job.route.id.clone()),
            usage: None,
            finish_reason: None,
            error: Some(crate::app::ORPHANED.into()),
            created_at: crate::clock::now(),
        });
        let end = match message.status {
            MessageStatus::Complete | MessageStatus::Cancelled => ReplyEnd::Done(EndedMessage::new(message)),
            _ => {
                let why = message.error.clone().unwrap_or_else(|| crate::app::ORPHANED.into());
                ReplyEnd::Failed { error: ProviderError::Stream(why), message: EndedMessage::new(message) }
            }
        };
        live.end(end);
        self.hub.remove(live.id);
    }

    /// Saves the text so far (sealed; the plaintext copy is dropped first) with the other
    /// replies' saves, renewing the lease.
    async fn save_partial(&self, job: &ReplyJob, text: String) -> Option<crate::store::PartialSaved> {
        let content = self.seal_message(job.tenant, job.conversation, job.live.id, &text).await.ok()?;
        drop(text);
        let save = crate::store::PartialSave { tenant: job.tenant, id: job.live.id, content, lease: self.lease() };
        match self.queue_partial_save(save).await {
            Ok(saved) => Some(saved),
            Err(e) => {
                // The reply goes on; the next save retries. The lease outlives several misses.
                tracing::warn!(error = %e, message_id = %job.live.id, "could not save a partial reply");
                None
            }
        }
    }
}

/// How the relay ended, for [`Conclave::end_reply`].
struct ReplyEnding {
    prompt_estimate: u32,
    status: MessageStatus,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    failure: Option<ProviderError>,
}

impl Default for ReplyEnding {
    fn default() -> Self {
        ReplyEnding {
            prompt_estimate: 0,
            status: MessageStatus::Complete,
            finish_reason: None,
            usage: None,
            failure: None,
        }
    }
}

const SHUTDOWN: &str = "the server shut down before the reply was complete";

/// Waits for a live reply to end: its stored message, or the provider's error.
pub async fn wait_for_end(live: &LiveReply) -> Result<MessageView> {
    let mut progress = live.subscribe();
    let end = progress
        .wait_for(|p| p.end.is_some())
        .await
        .map_err(|_| Error::Internal("the reply task ended without an outcome".into()))?
        .end
        .clone();
    match end {
        Some(ReplyEnd::Done(message)) => Ok(message.view.clone()),
        Some(ReplyEnd::Failed { error, .. }) => Err(Error::Provider(error)),
        None => Err(Error::Internal("the reply has no end".into())),
    }
}

/// A rough token count (about four characters a token) for providers that report no usage.
pub fn estimate_tokens<'a>(texts: impl Iterator<Item = &'a str>) -> u32 {
    let mut chars = 0usize;
    let mut pieces = 0usize;
    for t in texts {
        chars += t.chars().count();
        pieces += 1;
    }
    let tokens = chars.div_ceil(4) + pieces * 3;
    u32::try_from(tokens.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_positive_and_grow_with_text() {
        assert!(estimate_tokens(std::iter::once("")) >= 1);
        let short = estimate_tokens(std::iter::once("hello"));
        let long = estimate_tokens(std::iter::once("hello ".repeat(100).as_str()));
        assert!(long > short);
    }
}
