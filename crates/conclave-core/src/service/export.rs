//! The caller's own data, whole (GDPR access and portability).

use crate::app::Conclave;
use crate::error::Result;
use crate::page::{PageRequest, MAX_LIMIT};
use crate::principal::Caller;
use crate::views::{ConversationExport, ExportView, UserView};

impl Conclave {
    pub async fn export_me(&self, caller: &Caller) -> Result<ExportView> {
        let (tenant, me) = (caller.tenant(), caller.user());
        let user = self.store.get_user(tenant, me).await?;

        let mut agents = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_owned_agents(
                    tenant,
                    me,
                    PageRequest {
                        limit: MAX_LIMIT,
                        after,
                    },
                )
                .await?;
            for a in &page.items {
                agents.push(self.agent_view(a).await?);
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }

        let mut conversations = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_conversations(
                    tenant,
                    me,
                    PageRequest {
                        limit: MAX_LIMIT,
                        after,
                    },
                )
                .await?;
            for c in &page.items {
                let mut messages = Vec::new();
                let mut m_after = None;
                loop {
                    let mp = self
                        .store
                        .list_messages(
                            tenant,
                            c.id,
                            PageRequest {
                                limit: MAX_LIMIT,
                                after: m_after,
                            },
                        )
                        .await?;
                    for m in &mp.items {
                        messages.push(self.message_view(m).await?);
                    }
                    match mp.next {
                        Some(n) => m_after = Some(n),
                        None => break,
                    }
                }
                conversations.push(ConversationExport {
                    conversation: self.conversation_view(c).await?,
                    messages,
                });
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }

        let mut api_keys = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_api_keys(
                    tenant,
                    me,
                    PageRequest {
                        limit: MAX_LIMIT,
                        after,
                    },
                )
                .await?;
            api_keys.extend(page.items.iter().map(crate::service::api_keys::view));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }

        Ok(ExportView {
            exported_at: crate::clock::now(),
            user: UserView::from(&user),
            agents,
            conversations,
            api_keys,
        })
    }
}
