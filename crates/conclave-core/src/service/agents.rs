//! Agents: named instructions bound to a model and its parameters, private or shared with the
//! tenant.

use time::OffsetDateTime;

use crate::app::{AuditRecord, Conclave};
use crate::content::SealScope;
use crate::error::{Error, FieldError, Result, StoreError};
use crate::ids::{AgentId, LibraryId};
use crate::page::{Page, PageRequest};
use crate::policy;
use crate::principal::{Caller, Scope};
use crate::records::{AgentRecord, Visibility};
use crate::views::AgentView;

pub const MAX_AGENT_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
pub const MAX_INSTRUCTIONS_BYTES: usize = 32 * 1024;
pub const MAX_MAX_TOKENS: u32 = 1_000_000;

/// The agent fields a create or update may set.
#[derive(Debug, Clone, Default)]
pub struct AgentInput {
    pub name: Option<String>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    pub instructions: Option<String>,
    pub model: Option<String>,
    pub temperature: Option<Option<f64>>,
    pub top_p: Option<Option<f64>>,
    pub max_tokens: Option<Option<u32>>,
    pub library_ids: Option<Vec<LibraryId>>,
    pub visibility: Option<Visibility>,
}

/// An agent's plain fields, checked.
struct AgentFields {
    name: String,
    description: Option<String>,
    instructions: String,
    model: String,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    library_ids: Vec<LibraryId>,
    visibility: Visibility,
}

impl Conclave {
    pub async fn create_agent(&self, caller: &Caller, input: AgentInput) -> Result<AgentView> {
        self.permit(caller, policy::require(caller, Scope::AgentsWrite), "agent.create.denied", "agent", None).await?;
        let mut errors = Vec::new();
        if input.name.is_none() {
            errors.push(FieldError::new("name", "An agent needs a name."));
        }
        if input.model.is_none() {
            errors.push(FieldError::new("model", "Choose a model (GET /api/v1/models lists them)."));
        }
        let base = AgentFields {
            name: String::new(),
            description: None,
            instructions: String::new(),
            model: String::new(),
            temperature: None,
            top_p: None,
            max_tokens: None,
            library_ids: Vec::new(),
            visibility: Visibility::Private,
        };
        let fields = self.merge_agent(caller, base, input, errors).await?;
        let now = crate::clock::now();
        let id = AgentId::new();
        let record = self.seal_agent(caller, id, caller.user(), fields, now, now).await?;
        self.store.create_agent(&record).await?;
        self.audit_by(caller, AuditRecord::new("agent.create", "agent", id)).await;
        self.agent_view(&record).await
    }

    pub async fn get_agent(&self, caller: &Caller, id: AgentId) -> Result<AgentView> {
        self.permit(
            caller,
            policy::require(caller, Scope::AgentsRead),
            "agent.read.denied",
            "agent",
            Some(id.to_string()),
        )
        .await?;
        let record = self.visible_agent(caller, id).await?;
        self.agent_view(&record).await
    }

    pub async fn list_agents(&self, caller: &Caller, page: PageRequest) -> Result<Page<AgentView>> {
        self.permit(caller, policy::require(caller, Scope::AgentsRead), "agent.list.denied", "agent", None).await?;
        let records = self.store.list_agents(caller.tenant(), caller.user(), page).await?;
        let mut items = Vec::with_capacity(records.items.len());
        for r in &records.items {
            items.push(self.agent_view(r).await?);
        }
        Ok(Page { items, next: records.next })
    }

    pub async fn update_agent(&self, caller: &Caller, id: AgentId, input: AgentInput) -> Result<AgentView> {
        let existing = self.visible_agent(caller, id).await?;
        self.permit(
            caller,
            policy::require_agent_editor(caller, &existing),
            "agent.update.denied",
            "agent",
            Some(id.to_string()),
        )
        .await?;
        let current = self.open_agent(&existing).await?;
        let fields = self.merge_agent(caller, current, input, Vec::new()).await?;
        let record =
            self.seal_agent(caller, id, existing.owner_id, fields, existing.created_at, crate::clock::now()).await?;
        self.store.update_agent(&record).await?;
        self.audit_by(caller, AuditRecord::new("agent.update", "agent", id)).await;
        self.agent_view(&record).await
    }

    pub async fn delete_agent(&self, caller: &Caller, id: AgentId) -> Result<()> {
        let existing = self.visible_agent(caller, id).await?;
        self.permit(
            caller,
            policy::require_agent_editor(caller, &existing),
            "agent.delete.denied",
            "agent",
            Some(id.to_string()),
        )
        .await?;
        self.store.delete_agent(caller.tenant(), id).await?;
        self.audit_by(caller, AuditRecord::new("agent.delete", "agent", id)).await;
        Ok(())
    }

    pub(crate) async fn visible_agent(&self, caller: &Caller, id: AgentId) -> Result<AgentRecord> {
        self.store.get_agent(caller.tenant(), caller.user(), id).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound("agent"),
            other => other.into(),
        })
    }

    async fn merge_agent(
        &self,
        caller: &Caller,
        mut f: AgentFields,
        input: AgentInput,
        mut errors: Vec<FieldError>,
    ) -> Result<AgentFields> {
        if let Some(name) = input.name {
            let name = name.trim().to_owned();
            let n = name.chars().count();
            if n == 0 || n > MAX_AGENT_NAME_CHARS || name.chars().any(char::is_control) {
                errors.push(FieldError::new("name", format!("Give a name of 1 to {MAX_AGENT_NAME_CHARS} characters.")));
            }
            f.name = name;
        }
        if let Some(description) = input.description {
            if description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
                errors.push(FieldError::new("description", format!("At most {MAX_DESCRIPTION_CHARS} characters.")));
            }
            f.description = description.filter(|d| !d.trim().is_empty());
        }
        if let Some(instructions) = input.instructions {
            if instructions.len() > MAX_INSTRUCTIONS_BYTES {
                errors.push(FieldError::new(
                    "instructions",
                    format!(
                        "Instructions are limited to {} KiB; these are {} bytes.",
                        MAX_INSTRUCTIONS_BYTES / 1024,
                        instructions.len()
                    ),
                ));
            }
            f.instructions = instructions;
        }
        if let Some(model) = input.model {
            if let Err(message) = self.check_model_allowed(caller, &model).await {
                errors.push(FieldError::new("model", message));
            }
            f.model = model;
        }
        if let Some(t) = input.temperature {
            if t.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
                errors.push(FieldError::new("temperature", "Must be between 0 and 2."));
            }
            f.temperature = t;
        }
        if let Some(p) = input.top_p {
            if p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
                errors.push(FieldError::new("top_p", "Must be between 0 and 1."));
            }
            f.top_p = p;
        }
        if let Some(m) = input.max_tokens {
            if m.is_some_and(|m| m == 0 || m > MAX_MAX_TOKENS) {
                errors.push(FieldError::new("max_tokens", format!("Must be between 1 and {MAX_MAX_TOKENS}.")));
            }
            f.max_tokens = m;
        }
        if let Some(libraries) = input.library_ids {
            // The agent reads them on its owner's behalf: its owner must be able to read them.
            for (i, id) in libraries.iter().enumerate() {
                let readable = match self.store.get_library(caller.tenant(), caller.user(), *id).await {
                    Ok(access) => access.role.is_some(),
                    Err(StoreError::NotFound) => false,
                    Err(e) => return Err(e.into()),
                };
                if !readable {
                    errors.push(FieldError::new(
                        format!("library_ids[{i}]"),
                        format!("No library {id} is readable by you: only its members can attach it."),
                    ));
                }
            }
            if libraries.len() > 20 {
                errors.push(FieldError::new("library_ids", "An agent reads at most 20 libraries."));
            }
            f.library_ids = libraries;
        }
        if let Some(v) = input.visibility {
            f.visibility = v;
        }
        if errors.is_empty() {
            Ok(f)
        } else {
            Err(Error::Validation(errors))
        }
    }

    async fn seal_agent(
        &self,
        caller: &Caller,
        id: AgentId,
        owner: crate::ids::UserId,
        f: AgentFields,
        created_at: OffsetDateTime,
        updated_at: OffsetDateTime,
    ) -> Result<AgentRecord> {
        let tenant = caller.tenant();
        let name = self.codec.seal(SealScope::AgentName { tenant, agent: id }, &f.name).await?;
        let description = match &f.description {
            Some(d) => Some(self.codec.seal(SealScope::AgentDescription { tenant, agent: id }, d).await?),
            None => None,
        };
        let instructions = self.codec.seal(SealScope::AgentInstructions { tenant, agent: id }, &f.instructions).await?;
        Ok(AgentRecord {
            tenant_id: tenant,
            id,
            owner_id: owner,
            name,
            description,
            instructions,
            model: f.model,
            temperature: f.temperature,
            top_p: f.top_p,
            max_tokens: f.max_tokens,
            library_ids: f.library_ids,
            visibility: f.visibility,
            created_at,
            updated_at,
        })
    }

    async fn open_agent(&self, r: &AgentRecord) -> Result<AgentFields> {
        let (tenant, agent) = (r.tenant_id, r.id);
        Ok(AgentFields {
            name: self.codec.open(SealScope::AgentName { tenant, agent }, &r.name).await?,
            description: match &r.description {
                Some(d) => Some(self.codec.open(SealScope::AgentDescription { tenant, agent }, d).await?),
                None => None,
            },
            instructions: self.codec.open(SealScope::AgentInstructions { tenant, agent }, &r.instructions).await?,
            model: r.model.clone(),
            temperature: r.temperature,
            top_p: r.top_p,
            max_tokens: r.max_tokens,
            library_ids: r.library_ids.clone(),
            visibility: r.visibility,
        })
    }

    pub(crate) async fn agent_view(&self, r: &AgentRecord) -> Result<AgentView> {
        let f = self.open_agent(r).await?;
        Ok(AgentView {
            id: r.id,
            owner_id: r.owner_id,
            name: f.name,
            description: f.description,
            instructions: f.instructions,
            model: f.model,
            temperature: f.temperature,
            top_p: f.top_p,
            max_tokens: f.max_tokens,
            library_ids: f.library_ids,
            visibility: f.visibility,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}
