//! Conversations and their messages. Only the owner sees a conversation.

use crate::app::{AuditRecord, Conclave};
use crate::content::SealScope;
use crate::error::{Error, Result, StoreError};
use crate::ids::{AgentId, ConversationId};
use crate::page::{Page, PageRequest, MAX_LIMIT};
use crate::policy;
use crate::principal::{Caller, Scope};
use crate::records::{ConversationRecord, MessageRecord};
use crate::views::{ConversationView, MessageView};

pub const MAX_TITLE_CHARS: usize = 200;
/// How much of the first message becomes the title of an untitled conversation.
pub const AUTO_TITLE_CHARS: usize = 80;

impl Conclave {
    pub async fn create_conversation(
        &self,
        caller: &Caller,
        agent_id: AgentId,
        title: Option<String>,
    ) -> Result<ConversationView> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "conversation.create.denied",
            "conversation",
            None,
        )
        .await?;
        let title = normalise_title(title)?;
        self.visible_agent(caller, agent_id).await.map_err(|e| match e {
            Error::NotFound(_) => Error::field("agent_id", "No agent with this id is visible to you."),
            other => other,
        })?;
        let id = ConversationId::new();
        let now = crate::clock::now();
        let record = ConversationRecord {
            tenant_id: caller.tenant(),
            id,
            owner_id: caller.user(),
            agent_id,
            title: None,
            created_at: now,
            updated_at: now,
        };
        self.store.create_conversation(&record).await?;
        // The title is sealed under the conversation's own key, which needs the row to exist.
        if let Some(t) = &title {
            let sealed = self.codec.seal(title_scope(caller, id), t).await?;
            self.store.update_conversation_title(caller.tenant(), caller.user(), id, Some(&sealed)).await?;
        }
        self.audit_by(caller, AuditRecord::new("conversation.create", "conversation", id)).await;
        if title.is_some() {
            // The title's write moved `updated_at`: answer with the row as stored.
            let stored = self.owned_conversation(caller, id).await?;
            return self.conversation_view(&stored).await;
        }
        Ok(ConversationView { id, agent_id, title, created_at: now, updated_at: now })
    }

    /// The caller's conversations, most recently active first; `q` keeps those whose title
    /// contains it (case-insensitive). Titles are sealed, so the filter runs here, not in SQL.
    pub async fn list_conversations(
        &self,
        caller: &Caller,
        q: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<ConversationView>> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsRead),
            "conversation.list.denied",
            "conversation",
            None,
        )
        .await?;
        let needle = q.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
        let Some(needle) = needle else {
            let records = self.store.list_conversations(caller.tenant(), caller.user(), page).await?;
            let mut items = Vec::with_capacity(records.items.len());
            for r in &records.items {
                items.push(self.conversation_view(r).await?);
            }
            return Ok(Page { items, next: records.next });
        };
        let mut items = Vec::new();
        let mut cursor = page.after;
        loop {
            let scan = PageRequest { limit: MAX_LIMIT, after: cursor };
            let records = self.store.list_conversations(caller.tenant(), caller.user(), scan).await?;
            for r in &records.items {
                let view = self.conversation_view(r).await?;
                if view.title.as_deref().is_some_and(|t| t.to_lowercase().contains(&needle)) {
                    items.push(view);
                    if items.len() > page.limit as usize {
                        items.truncate(page.limit as usize);
                        let next = items.last().map(|c| c.id.0);
                        return Ok(Page { items, next });
                    }
                }
            }
            match records.next {
                Some(next) => cursor = Some(next),
                None => return Ok(Page { items, next: None }),
            }
        }
    }

    pub async fn get_conversation(&self, caller: &Caller, id: ConversationId) -> Result<ConversationView> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsRead),
            "conversation.read.denied",
            "conversation",
            Some(id.to_string()),
        )
        .await?;
        let record = self.owned_conversation(caller, id).await?;
        self.conversation_view(&record).await
    }

    pub async fn rename_conversation(
        &self,
        caller: &Caller,
        id: ConversationId,
        title: Option<String>,
    ) -> Result<ConversationView> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "conversation.update.denied",
            "conversation",
            Some(id.to_string()),
        )
        .await?;
        let title = normalise_title(title)?;
        self.owned_conversation(caller, id).await?;
        let sealed = match &title {
            Some(t) => Some(self.codec.seal(title_scope(caller, id), t).await?),
            None => None,
        };
        self.store.update_conversation_title(caller.tenant(), caller.user(), id, sealed.as_ref()).await?;
        self.audit_by(caller, AuditRecord::new("conversation.rename", "conversation", id)).await;
        let record = self.owned_conversation(caller, id).await?;
        self.conversation_view(&record).await
    }

    pub async fn delete_conversation(&self, caller: &Caller, id: ConversationId) -> Result<()> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsWrite),
            "conversation.delete.denied",
            "conversation",
            Some(id.to_string()),
        )
        .await?;
        self.store.delete_conversation(caller.tenant(), caller.user(), id).await.map_err(conversation_not_found)?;
        self.audit_by(caller, AuditRecord::new("conversation.delete", "conversation", id)).await;
        Ok(())
    }

    pub async fn list_messages(
        &self,
        caller: &Caller,
        id: ConversationId,
        page: PageRequest,
    ) -> Result<Page<MessageView>> {
        self.permit(
            caller,
            policy::require(caller, Scope::ConversationsRead),
            "message.list.denied",
            "conversation",
            None,
        )
        .await?;
        self.owned_conversation(caller, id).await?;
        let records = self.store.list_messages(caller.tenant(), id, page).await?;
        let mut items = Vec::with_capacity(records.items.len());
        for r in &records.items {
            items.push(self.message_view(r).await?);
        }
        Ok(Page { items, next: records.next })
    }

    pub(crate) async fn owned_conversation(&self, caller: &Caller, id: ConversationId) -> Result<ConversationRecord> {
        self.store.get_conversation(caller.tenant(), caller.user(), id).await.map_err(conversation_not_found)
    }

    pub(crate) async fn conversation_view(&self, r: &ConversationRecord) -> Result<ConversationView> {
        let title = match &r.title {
            Some(t) => Some(
                self.codec.open(SealScope::ConversationTitle { tenant: r.tenant_id, conversation: r.id }, t).await?,
            ),
            None => None,
        };
        Ok(ConversationView {
            id: r.id,
            agent_id: r.agent_id,
            title,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }

    pub(crate) async fn message_view(&self, r: &MessageRecord) -> Result<MessageView> {
        let content = self
            .codec
            .open(
                SealScope::MessageContent { tenant: r.tenant_id, conversation: r.conversation_id, message: r.id },
                &r.content,
            )
            .await?;
        Ok(MessageView {
            id: r.id,
            conversation_id: r.conversation_id,
            role: r.role,
            content,
            status: r.status,
            model: r.model.clone(),
            usage: r.usage,
            finish_reason: r.finish_reason.clone(),
            error: r.error.clone(),
            created_at: r.created_at,
        })
    }
}

fn title_scope(caller: &Caller, conversation: ConversationId) -> SealScope {
    SealScope::ConversationTitle { tenant: caller.tenant(), conversation }
}

fn normalise_title(title: Option<String>) -> Result<Option<String>> {
    let Some(title) = title else { return Ok(None) };
    let title = title.trim().to_owned();
    if title.chars().count() > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(Error::field(
            "title",
            format!("A title has at most {MAX_TITLE_CHARS} characters, without control characters."),
        ));
    }
    Ok(Some(title).filter(|t| !t.is_empty()))
}

/// The title an untitled conversation takes from its first message.
pub(crate) fn auto_title(content: &str) -> String {
    let line = content.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut title: String = line.chars().filter(|c| !c.is_control()).take(AUTO_TITLE_CHARS).collect();
    if line.chars().count() > AUTO_TITLE_CHARS {
        title.push('…');
    }
    title
}

pub(crate) fn conversation_not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound("conversation"),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_title_takes_the_first_line_truncated() {
        assert_eq!(auto_title("\n  Draft the NDA  \nmore"), "Draft the NDA");
        let long = "x".repeat(100);
        assert_eq!(auto_title(&long).chars().count(), AUTO_TITLE_CHARS + 1);
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(normalise_title(Some("  a  ".into())).unwrap(), Some("a".into()));
        assert_eq!(normalise_title(Some("   ".into())).unwrap(), None);
        assert!(normalise_title(Some("x".repeat(201))).is_err());
        assert!(normalise_title(Some("a\u{7}b".into())).is_err());
    }
}
