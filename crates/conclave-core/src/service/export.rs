//! The caller's own data, whole (GDPR access and portability).

use crate::app::Conclave;
use crate::error::Result;
use crate::page::all_pages;
use crate::principal::Caller;
use crate::views::{ConversationExport, ExportView, UserView};

impl Conclave {
    pub async fn export_me(&self, caller: &Caller) -> Result<ExportView> {
        let (tenant, me) = (caller.tenant(), caller.user());
        let store = &self.store;
        let user = store.get_user(tenant, me).await?;

        let mut agents = Vec::new();
        for a in all_pages(|page| store.list_owned_agents(tenant, me, page)).await? {
            agents.push(self.agent_view(&a).await?);
        }

        let mut conversations = Vec::new();
        for c in all_pages(|page| store.list_conversations(tenant, me, page)).await? {
            let mut messages = Vec::new();
            for m in all_pages(|page| store.list_messages(tenant, c.id, page)).await? {
                messages.push(self.message_view(&m).await?);
            }
            conversations.push(ConversationExport { conversation: self.conversation_view(&c).await?, messages });
        }

        let api_keys = all_pages(|page| store.list_api_keys(tenant, me, page))
            .await?
            .iter()
            .map(crate::service::api_keys::view)
            .collect();

        Ok(ExportView {
            exported_at: crate::clock::now(),
            user: UserView::from(&user),
            agents,
            conversations,
            api_keys,
        })
    }
}
