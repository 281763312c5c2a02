//! Libraries and their members. Only members see a library's documents; tenant administrators
//! see every library's name and members, manage membership and legal holds, and must add
//! themselves (audited) to read documents.

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::{AuditRecord, Conclave};
use crate::content::SealScope;
use crate::error::{Error, FieldError, Result, StoreError};
use crate::ids::{LibraryId, UserId};
use crate::libraries::{LibraryAccess, LibraryRecord, LibraryRole};
use crate::page::{Page, PageRequest};
use crate::policy;
use crate::principal::{Caller, Scope};

pub const MAX_LIBRARY_NAME_CHARS: usize = 100;
pub const MAX_LIBRARY_DESCRIPTION_CHARS: usize = 1_000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LibraryView {
    pub id: LibraryId,
    pub name: String,
    pub description: Option<String>,
    /// Nothing in the library can be deleted while this is set.
    pub legal_hold: bool,
    /// The caller's role; absent for an administrator who is not a member.
    pub role: Option<LibraryRole>,
    pub created_by: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: LibraryRole,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

/// What a library update may set.
#[derive(Debug, Clone, Default)]
pub struct LibraryInput {
    pub name: Option<String>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    pub legal_hold: Option<bool>,
}

impl Conclave {
    pub async fn create_library(&self, caller: &Caller, input: LibraryInput) -> Result<LibraryView> {
        self.permit(caller, policy::require(caller, Scope::LibrariesWrite), "library.create.denied", "library", None)
            .await?;
        if input.legal_hold.is_some() {
            return Err(Error::field("legal_hold", "Set a legal hold on an existing library (administrators)."));
        }
        let (name, description) = check_library_fields(input.name.as_deref(), input.description.clone(), true)?;
        let tenant = caller.tenant();
        let id = LibraryId::new();
        let (wrapped_key, key_version) = self.codec.new_library_key(tenant, id).await?;
        let now = crate::clock::now();
        let record = LibraryRecord {
            tenant_id: tenant,
            id,
            name: self.codec.seal(SealScope::LibraryName { tenant, library: id }, &name.unwrap_or_default()).await?,
            description: match description.flatten() {
                Some(d) => Some(self.codec.seal(SealScope::LibraryDescription { tenant, library: id }, &d).await?),
                None => None,
            },
            legal_hold: false,
            wrapped_key,
            key_version,
            created_by: caller.user(),
            created_at: now,
            updated_at: now,
        };
        self.store.create_library(&record).await?;
        self.audit_by(caller, AuditRecord::new("library.create", "library", id)).await;
        self.library_view(&LibraryAccess { library: record, role: Some(LibraryRole::Manager) }).await
    }

    pub async fn get_library(&self, caller: &Caller, id: LibraryId) -> Result<LibraryView> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesRead),
            "library.read.denied",
            "library",
            Some(id.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, id).await?;
        self.library_view(&access).await
    }

    /// The caller's libraries (administrators: every library of the tenant), newest first.
    pub async fn list_libraries(&self, caller: &Caller, page: PageRequest) -> Result<Page<LibraryView>> {
        self.permit(caller, policy::require(caller, Scope::LibrariesRead), "library.list.denied", "library", None)
            .await?;
        let all = caller.principal.is_admin();
        let rows = self.store.list_libraries(caller.tenant(), caller.user(), all, page).await?;
        let mut items = Vec::with_capacity(rows.items.len());
        for access in &rows.items {
            items.push(self.library_view(access).await?);
        }
        Ok(Page { items, next: rows.next })
    }

    pub async fn update_library(&self, caller: &Caller, id: LibraryId, input: LibraryInput) -> Result<LibraryView> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesWrite),
            "library.update.denied",
            "library",
            Some(id.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, id).await?;
        if input.legal_hold.is_some() && input.legal_hold != Some(access.library.legal_hold) {
            self.permit(caller, policy::require_admin(caller), "library.legal_hold", "library", Some(id.to_string()))
                .await?;
        }
        if input.name.is_some() || input.description.is_some() {
            self.require_library_role(caller, &access, LibraryRole::Manager, "rename or describe").await?;
        }
        let (name, description) = check_library_fields(input.name.as_deref(), input.description.clone(), false)?;
        let tenant = caller.tenant();
        let lib = &access.library;
        let name = match name {
            Some(n) => self.codec.seal(SealScope::LibraryName { tenant, library: id }, &n).await?,
            None => lib.name.clone(),
        };
        let description = match description {
            Some(Some(d)) => Some(self.codec.seal(SealScope::LibraryDescription { tenant, library: id }, &d).await?),
            Some(None) => None,
            None => lib.description.clone(),
        };
        let legal_hold = input.legal_hold.unwrap_or(lib.legal_hold);
        let now = crate::clock::now();
        self.store.update_library(tenant, id, &name, description.as_ref(), legal_hold, now).await?;
        if legal_hold != lib.legal_hold {
            let action = if legal_hold { "library.legal_hold.set" } else { "library.legal_hold.lift" };
            self.audit_by(caller, AuditRecord::new(action, "library", id)).await;
        }
        if input.name.is_some() || input.description.is_some() {
            self.audit_by(caller, AuditRecord::new("library.update", "library", id)).await;
        }
        let updated = LibraryRecord { name, description, legal_hold, updated_at: now, ..lib.clone() };
        self.library_view(&LibraryAccess { library: updated, role: access.role }).await
    }

    /// Deletes the library with its documents and its key; refused while on legal hold.
    pub async fn delete_library(&self, caller: &Caller, id: LibraryId) -> Result<()> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesWrite),
            "library.delete.denied",
            "library",
            Some(id.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, id).await?;
        self.require_library_role(caller, &access, LibraryRole::Manager, "delete").await?;
        let objects = self.store.delete_library(caller.tenant(), id).await.map_err(legal_hold_error)?;
        self.remove_objects(&objects).await;
        self.audit_by(
            caller,
            AuditRecord::new("library.delete", "library", id).detail(serde_json::json!({"objects": objects.len()})),
        )
        .await;
        Ok(())
    }

    pub async fn list_library_members(&self, caller: &Caller, id: LibraryId) -> Result<Vec<MemberView>> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesRead),
            "library.member.list.denied",
            "library",
            Some(id.to_string()),
        )
        .await?;
        self.visible_library(caller, id).await?;
        let members = self.store.list_members(caller.tenant(), id).await?;
        Ok(members
            .into_iter()
            .map(|m| MemberView {
                user_id: m.user_id,
                email: m.email,
                display_name: m.display_name,
                role: m.role,
                added_at: m.added_at,
            })
            .collect())
    }

    /// Adds a member or changes their role (library managers and administrators).
    pub async fn put_library_member(
        &self,
        caller: &Caller,
        id: LibraryId,
        user: UserId,
        role: LibraryRole,
    ) -> Result<Vec<MemberView>> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesWrite),
            "library.member.put.denied",
            "library",
            Some(id.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, id).await?;
        self.require_library_role(caller, &access, LibraryRole::Manager, "manage the members of").await?;
        self.store.put_member(caller.tenant(), id, user, role, crate::clock::now()).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound("user"),
            other => other.into(),
        })?;
        self.audit_by(
            caller,
            AuditRecord::new("library.member.put", "library", id)
                .detail(serde_json::json!({"user_id": user, "role": role.as_str()})),
        )
        .await;
        self.list_library_members(caller, id).await
    }

    pub async fn remove_library_member(&self, caller: &Caller, id: LibraryId, user: UserId) -> Result<()> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesWrite),
            "library.member.remove.denied",
            "library",
            Some(id.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, id).await?;
        self.require_library_role(caller, &access, LibraryRole::Manager, "manage the members of").await?;
        if !self.store.remove_member(caller.tenant(), id, user).await? {
            return Err(Error::NotFound("member"));
        }
        self.audit_by(
            caller,
            AuditRecord::new("library.member.remove", "library", id).detail(serde_json::json!({"user_id": user})),
        )
        .await;
        Ok(())
    }

    /// The library if the caller is a member or an administrator; otherwise it does not exist.
    pub(crate) async fn visible_library(&self, caller: &Caller, id: LibraryId) -> Result<LibraryAccess> {
        let access = self.store.get_library(caller.tenant(), caller.user(), id).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound("library"),
            other => other.into(),
        })?;
        if access.role.is_none() && !caller.principal.is_admin() {
            return Err(Error::NotFound("library"));
        }
        Ok(access)
    }

    /// The caller holds at least `needed` in the library (administrators manage every library,
    /// but read and write documents only as members). Denials are audited.
    pub(crate) async fn require_library_role(
        &self,
        caller: &Caller,
        access: &LibraryAccess,
        needed: LibraryRole,
        what: &str,
    ) -> Result<()> {
        let admin_manages = needed == LibraryRole::Manager && caller.principal.is_admin();
        if access.role.is_some_and(|r| r >= needed) || admin_manages {
            return Ok(());
        }
        let refusal = Error::Forbidden(match access.role {
            None => "You are not a member of this library: an administrator can add you.".into(),
            Some(role) => format!(
                "Your role in this library ({}) does not allow you to {what} it; {} needed.",
                role.as_str(),
                needed.as_str()
            ),
        });
        Err(self.deny(caller, refusal, "library.access", "library", Some(access.library.id.to_string())).await)
    }

    async fn library_view(&self, access: &LibraryAccess) -> Result<LibraryView> {
        let l = &access.library;
        let (tenant, library) = (l.tenant_id, l.id);
        Ok(LibraryView {
            id: l.id,
            name: self.codec.open(SealScope::LibraryName { tenant, library }, &l.name).await?,
            description: match &l.description {
                Some(d) => Some(self.codec.open(SealScope::LibraryDescription { tenant, library }, d).await?),
                None => None,
            },
            legal_hold: l.legal_hold,
            role: access.role,
            created_by: l.created_by,
            created_at: l.created_at,
            updated_at: l.updated_at,
        })
    }

    /// Removes objects whose rows are gone. Their keys went with the rows, so an object left
    /// behind by a failure here is unreadable; it is logged for the operator.
    pub(crate) async fn remove_objects(&self, objects: &[String]) {
        for key in objects {
            if let Err(e) = self.objects.delete(key).await {
                tracing::warn!(object = %key, error = %e, "a deleted document's object could not be removed (its key is destroyed)");
            }
        }
    }
}

pub(crate) fn legal_hold_error(e: StoreError) -> Error {
    match e {
        StoreError::Constraint(c) if c == "legal_hold" => Error::Conflict(
            "The library is on legal hold: nothing in it can be deleted until an administrator lifts the hold.".into(),
        ),
        StoreError::NotFound => Error::NotFound("resource"),
        other => other.into(),
    }
}

type CheckedFields = (Option<String>, Option<Option<String>>);

fn check_library_fields(
    name: Option<&str>,
    description: Option<Option<String>>,
    creating: bool,
) -> Result<CheckedFields> {
    let mut errors = Vec::new();
    let name = match name {
        Some(n) => {
            let n = n.trim().to_owned();
            let count = n.chars().count();
            if count == 0 || count > MAX_LIBRARY_NAME_CHARS || n.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    "name",
                    format!("Give a name of 1 to {MAX_LIBRARY_NAME_CHARS} characters, without control characters."),
                ));
            }
            Some(n)
        }
        None if creating => {
            errors.push(FieldError::new("name", "A library needs a name."));
            None
        }
        None => None,
    };
    let description = description.map(|d| d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()));
    if description.as_ref().and_then(|d| d.as_ref()).is_some_and(|d| d.chars().count() > MAX_LIBRARY_DESCRIPTION_CHARS)
    {
        errors.push(FieldError::new("description", format!("At most {MAX_LIBRARY_DESCRIPTION_CHARS} characters.")));
    }
    if errors.is_empty() {
        Ok((name, description))
    } else {
        Err(Error::Validation(errors))
    }
}
