//! Replies: a user message and the assistant message answering it are stored first; then a task
//! that does not belong to the HTTP request asks the model and stores the outcome. A caller that
//! waits (the non-streamed post) simply awaits that task, so a dropped client never stops a reply.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::oneshot;

use crate::app::{AuditRecord, Conclave};
use crate::content::{SealScope, Sealed};
use crate::error::{Error, Result};
use crate::ids::{ConversationId, MessageId, TenantId};
use crate::page::all_pages;
use crate::policy;
use crate::principal::{Caller, Scope};
use crate::provider::{ChatEvent, ChatMessage, ChatRequest, ModelRoute, ProviderError};
use crate::records::*;
use crate::service::conversations::auto_title;
use crate::views::{ExchangeView, MessageView};

pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A reply being generated: the stored user message, the assistant message in state
/// `streaming`, and the end of the reply when it comes.
pub struct ReplyHandle {
    pub user_message: MessageView,
    pub reply: MessageView,
    pub done: oneshot::Receiver<std::result::Result<MessageView, ProviderError>>,
}

/// Everything the detached task needs; no borrow of the request.
struct ReplyJob {
    tenant: TenantId,
    conversation: ConversationId,
    reply_id: MessageId,
    route: ModelRoute,
    request: ChatRequest,
}

impl Conclave {
    /// Posts a message and waits for the whole reply.
    pub async fn post_message(
        self: &Arc<Self>,
        caller: &Caller,
        conversation: ConversationId,
        content: String,
    ) -> Result<ExchangeView> {
        let handle = self.start_reply(caller, conversation, content).await?;
        let outcome =
            handle.done.await.map_err(|_| Error::Internal("the reply task ended without an outcome".into()))?;
        let assistant_message = outcome?;
        Ok(ExchangeView { user_message: handle.user_message, assistant_message })
    }

    /// Stores the user message and a `streaming` assistant message, then starts the reply task.
    pub async fn start_reply(
        self: &Arc<Self>,
        caller: &Caller,
        conversation_id: ConversationId,
        content: String,
    ) -> Result<ReplyHandle> {
        policy::require(caller, Scope::ConversationsWrite)?;
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
        let conversation = self.owned_conversation(caller, conversation_id).await?;
        let agent = self.visible_agent(caller, conversation.agent_id).await.map_err(|e| match e {
            Error::NotFound(_) => {
                Error::Conflict("This conversation's agent was deleted; start a new conversation.".into())
            }
            other => other,
        })?;
        let route = self.check_model_allowed(caller, &agent.model).await.map_err(|reason| {
            Error::Conflict(format!("This conversation's agent cannot be used right now: {reason}"))
        })?;

        let mut messages = Vec::new();
        let instructions = self
            .codec
            .open(SealScope::AgentInstructions { tenant: agent.tenant_id, agent: agent.id }, &agent.instructions)
            .await?;
        if !instructions.trim().is_empty() {
            messages.push(ChatMessage { role: "system", content: instructions });
        }
        messages.extend(self.history(caller.tenant(), conversation_id).await?);
        messages.push(ChatMessage { role: "user", content: content.clone() });

        let now = crate::clock::now();
        let tenant = caller.tenant();
        let user_id = MessageId::new();
        let reply_id = MessageId::new();
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
        let reply_record = MessageRecord {
            id: reply_id,
            role: MessageRole::Assistant,
            content: self.seal_message(tenant, conversation_id, reply_id, "").await?,
            status: MessageStatus::Streaming,
            model: Some(agent.model.clone()),
            reply_to: Some(user_id),
            ..user_record.clone()
        };
        self.store.insert_exchange(&user_record, &reply_record).await?;
        if conversation.title.is_none() {
            let title = self
                .codec
                .seal(SealScope::ConversationTitle { tenant, conversation: conversation_id }, &auto_title(&content))
                .await?;
            self.store.update_conversation_title(tenant, caller.user(), conversation_id, Some(&title)).await?;
        }
        self.audit_by(
            caller,
            AuditRecord::new("message.create", "conversation", conversation_id).detail(serde_json::json!({
                "message_id": user_id,
                "reply_id": reply_id,
                "model": agent.model,
            })),
        )
        .await;

        let request = ChatRequest {
            model: agent.model.clone(),
            messages,
            temperature: agent.temperature,
            top_p: agent.top_p,
            max_tokens: agent.max_tokens,
            stop: Vec::new(),
            user: Some(caller.user().to_string()),
        };
        let job = ReplyJob { tenant, conversation: conversation_id, reply_id, route, request };
        let (tx, done) = oneshot::channel();
        let this = Arc::clone(self);
        self.replies.spawn(async move {
            let outcome = this.run_reply(job).await;
            let _ = tx.send(outcome);
        });
        Ok(ReplyHandle {
            user_message: self.message_view(&user_record).await?,
            reply: self.message_view(&reply_record).await?,
            done,
        })
    }

    /// The conversation so far, as the model should see it: user messages and the text of
    /// replies that produced some.
    async fn history(&self, tenant: TenantId, conversation: ConversationId) -> Result<Vec<ChatMessage>> {
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

    /// The detached task: asks the provider, then stores how the reply ended.
    async fn run_reply(&self, job: ReplyJob) -> std::result::Result<MessageView, ProviderError> {
        let prompt_estimate = estimate_tokens(job.request.messages.iter().map(|m| m.content.as_str()));
        let mut text = String::new();
        let mut usage = None;
        let mut finish_reason = None;
        let mut failure = None;
        match job.route.provider.client.stream_chat(job.request).await {
            Err(e) => failure = Some(e),
            Ok(mut stream) => {
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(ChatEvent::Delta(delta)) => text.push_str(&delta),
                        Ok(ChatEvent::Finish { reason }) => finish_reason = reason,
                        Ok(ChatEvent::Usage(u)) => usage = Some(u),
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        let usage = usage.or_else(|| {
            (failure.is_none() || !text.is_empty()).then(|| Usage {
                prompt_tokens: prompt_estimate,
                completion_tokens: estimate_tokens(std::iter::once(text.as_str())),
            })
        });
        let status = if failure.is_some() { MessageStatus::Failed } else { MessageStatus::Complete };
        let content = match self.seal_message(job.tenant, job.conversation, job.reply_id, &text).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "could not seal a reply");
                return Err(ProviderError::InvalidResponse("the reply could not be stored".into()));
            }
        };
        let outcome = ReplyOutcome {
            content,
            status,
            usage,
            finish_reason: if failure.is_some() { None } else { finish_reason.or(Some("stop".into())) },
            error: failure.as_ref().map(|e| e.to_string()),
        };
        if let Err(e) = self.store.finish_reply(job.tenant, job.reply_id, &outcome).await {
            tracing::error!(error = %e, message_id = %job.reply_id, "could not store the end of a reply");
        }
        if let Some(e) = failure {
            tracing::warn!(message_id = %job.reply_id, error = %e, "reply failed");
            return Err(e);
        }
        let stored = self.store.get_message(job.tenant, job.conversation, job.reply_id).await.map_err(|e| {
            ProviderError::InvalidResponse(format!("the reply was produced but could not be read back: {e}"))
        })?;
        self.message_view(&stored)
            .await
            .map_err(|e| ProviderError::InvalidResponse(format!("the reply could not be opened: {e}")))
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
