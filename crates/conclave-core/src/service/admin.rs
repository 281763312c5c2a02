//! Tenant administration: users (create, role, disable, reset password, delete) and the
//! tenant's settings.

use crate::app::{AuditRecord, Conclave};
use crate::error::{Error, Result, StoreError};
use crate::ids::UserId;
use crate::page::{Page, PageRequest};
use crate::policy;
use crate::principal::{Caller, RequestMeta, Role};
use crate::records::{NewUser, UserPatch};
use crate::service::accounts::{email_conflict, validate_identity, validate_new_password};
use crate::settings::SettingsPatch;
use crate::views::{CreatedUserView, TenantView, UserView};

pub struct AdminNewUser {
    pub email: String,
    pub password: Option<String>,
    pub display_name: String,
    pub role: Role,
}

impl Conclave {
    pub async fn admin_list_users(&self, caller: &Caller, page: PageRequest) -> Result<Page<UserView>> {
        self.permit(caller, policy::require_admin(caller), "admin.user_list.denied", "user", None).await?;
        Ok(self.store.list_users(caller.tenant(), page).await?.map(|u| UserView::from(&u)))
    }

    pub async fn admin_create_user(&self, caller: &Caller, input: AdminNewUser) -> Result<CreatedUserView> {
        self.permit(caller, policy::require_admin(caller), "admin.user_create.denied", "user", None).await?;
        let created = self.create_local_user(caller.tenant(), input).await?;
        self.audit_by(
            caller,
            AuditRecord::new("user.create", "user", created.user.id)
                .detail(serde_json::json!({"role": created.user.role.as_str()})),
        )
        .await;
        Ok(created)
    }

    /// Creates an account in the default tenant from the command line (`conclave admin create`).
    pub async fn bootstrap_user(&self, input: AdminNewUser) -> Result<CreatedUserView> {
        let tenant = self.store.default_tenant(&self.config.default_tenant_name).await?;
        let created = self.create_local_user(tenant.id, input).await?;
        let meta = RequestMeta { request_id: Some("cli".into()), ..Default::default() };
        self.audit(
            tenant.id,
            &meta,
            AuditRecord::new("user.create", "user", created.user.id)
                .detail(serde_json::json!({"role": created.user.role.as_str(), "via": "cli"})),
        )
        .await;
        Ok(created)
    }

    async fn create_local_user(&self, tenant: crate::ids::TenantId, input: AdminNewUser) -> Result<CreatedUserView> {
        let (email, display_name) = validate_identity(&input.email, &input.display_name)?;
        let (password, temporary) = match input.password {
            Some(p) => {
                validate_new_password("password", &p, &email, &display_name)?;
                (p, None)
            }
            None => {
                let p = conclave_auth::random_password();
                (p.clone(), Some(p))
            }
        };
        let hash = self.hash_password(password).await?;
        let user = self
            .store
            .create_user(
                tenant,
                NewUser {
                    id: UserId::new(),
                    email,
                    display_name,
                    role: input.role,
                    first_user_becomes_admin: false,
                    password_hash: Some(hash),
                    must_change_password: temporary.is_some(),
                },
            )
            .await
            .map_err(email_conflict)?;
        Ok(CreatedUserView { user: UserView::from(&user), temporary_password: temporary })
    }

    pub async fn admin_update_user(&self, caller: &Caller, id: UserId, patch: UserPatch) -> Result<UserView> {
        self.permit(caller, policy::require_admin(caller), "admin.user_update.denied", "user", Some(id.to_string()))
            .await?;
        let mut patch = patch;
        if let Some(name) = patch.display_name.take() {
            let existing = self.store.get_user(caller.tenant(), id).await.map_err(user_not_found)?;
            patch.display_name = Some(validate_identity(&existing.email, &name)?.1);
        }
        let user = self.store.update_user(caller.tenant(), id, &patch).await.map_err(|e| match e {
            StoreError::Constraint(c) if c == "last_admin" => Error::Conflict(
                "This would leave the tenant without an active administrator; promote someone else first.".into(),
            ),
            other => user_not_found(other),
        })?;
        self.credentials.invalidate();
        if patch.disabled == Some(true) {
            self.end_user_sessions(caller.tenant(), id, None).await?;
        }
        self.audit_by(
            caller,
            AuditRecord::new("user.update", "user", id).detail(serde_json::json!({
                "role": patch.role.map(Role::as_str),
                "disabled": patch.disabled,
                "display_name_changed": patch.display_name.is_some(),
            })),
        )
        .await;
        Ok(UserView::from(&user))
    }

    /// Sets a temporary password the user must change at next sign-in, and signs them out.
    pub async fn admin_reset_password(&self, caller: &Caller, id: UserId, new_password: &str) -> Result<()> {
        self.permit(caller, policy::require_admin(caller), "admin.password_reset.denied", "user", Some(id.to_string()))
            .await?;
        let user = self.store.get_user(caller.tenant(), id).await.map_err(user_not_found)?;
        validate_new_password("new_password", new_password, &user.email, &user.display_name)?;
        let hash = self.hash_password(new_password.to_owned()).await?;
        self.store.set_password(caller.tenant(), id, &hash, true).await?;
        self.end_user_sessions(caller.tenant(), id, None).await?;
        self.audit_by(caller, AuditRecord::new("user.password_reset", "user", id)).await;
        Ok(())
    }

    /// Deletes a user with their conversations; their tenant-visible agents pass to the caller.
    pub async fn admin_delete_user(&self, caller: &Caller, id: UserId) -> Result<()> {
        self.permit(caller, policy::require_admin(caller), "admin.user_delete.denied", "user", Some(id.to_string()))
            .await?;
        if id == caller.user() {
            return Err(Error::Conflict("You cannot delete your own account; ask another administrator.".into()));
        }
        let user = self.store.get_user(caller.tenant(), id).await.map_err(user_not_found)?;
        if user.role == Role::Admin && !user.disabled {
            // Refuses if this is the last active admin (it cannot be: the caller is one).
            self.store.update_user(caller.tenant(), id, &UserPatch::default()).await?;
        }
        self.store.delete_user(caller.tenant(), id, caller.user()).await.map_err(user_not_found)?;
        self.credentials.invalidate();
        self.audit_by(caller, AuditRecord::new("user.delete", "user", id)).await;
        Ok(())
    }

    pub async fn tenant_settings(&self, caller: &Caller) -> Result<TenantView> {
        self.permit(caller, policy::require_admin(caller), "tenant.read.denied", "tenant", None).await?;
        let t = self.store.get_tenant(caller.tenant()).await?;
        Ok(TenantView { id: t.id, name: t.name, settings: t.settings, updated_at: t.updated_at })
    }

    pub async fn update_tenant_settings(
        &self,
        caller: &Caller,
        name: Option<String>,
        patch: Option<SettingsPatch>,
    ) -> Result<TenantView> {
        self.permit(caller, policy::require_admin(caller), "tenant.update.denied", "tenant", None).await?;
        let tenant = self.store.get_tenant(caller.tenant()).await?;
        let catalog = self.catalog();
        let mut errors = Vec::new();
        let name = match name {
            Some(n) => {
                let n = n.trim().to_owned();
                if n.is_empty() || n.chars().count() > 100 {
                    errors
                        .push(crate::error::FieldError::new("name", "Give the tenant a name of 1 to 100 characters."));
                }
                n
            }
            None => tenant.name.clone(),
        };
        let settings = match patch {
            Some(p) => match tenant.settings.apply(p, &catalog.model_ids(), &catalog.regions()) {
                Ok(s) => s,
                Err(mut e) => {
                    errors.append(&mut e);
                    tenant.settings.clone()
                }
            },
            None => tenant.settings.clone(),
        };
        if !errors.is_empty() {
            return Err(Error::Validation(errors));
        }
        let t = self.store.update_tenant(caller.tenant(), &name, &settings).await?;
        self.forget_tenant(caller.tenant());
        // Cached principals carry what the settings decide (MFA enrolment pending).
        self.credentials.invalidate();
        self.audit_by(
            caller,
            AuditRecord::new("tenant.update", "tenant", t.id)
                .detail(serde_json::to_value(&settings).unwrap_or_default()),
        )
        .await;
        Ok(TenantView { id: t.id, name: t.name, settings: t.settings, updated_at: t.updated_at })
    }
}

pub(crate) fn user_not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound("user"),
        other => other.into(),
    }
}
