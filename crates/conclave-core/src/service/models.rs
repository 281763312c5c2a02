//! Which models a tenant may use: those configured on the server, narrowed by the tenant's
//! allow-list and provider-region pin.

use crate::app::Conclave;
use crate::error::Result;
use crate::principal::Caller;
use crate::provider::ModelRoute;
use crate::records::Tenant;
use crate::settings::TenantSettings;
use crate::views::ModelView;

impl Conclave {
    pub async fn list_models(&self, caller: &Caller) -> Result<Vec<ModelView>> {
        let allowed = crate::policy::require(caller, crate::principal::Scope::AgentsRead)
            .or_else(|_| crate::policy::require(caller, crate::principal::Scope::ConversationsRead));
        self.permit(caller, allowed, "model.list.denied", "model", None).await?;
        let tenant = self.tenant(caller.tenant()).await?;
        Ok(self
            .catalog()
            .routes()
            .iter()
            .filter(|r| permitted(&tenant.settings, r).is_ok())
            .map(|r| ModelView { id: r.id.clone(), provider: r.provider.name.clone() })
            .collect())
    }

    /// `Err` carries the reason, phrased for the person choosing the model.
    pub(crate) async fn check_model_allowed(
        &self,
        caller: &Caller,
        model: &str,
    ) -> std::result::Result<ModelRoute, String> {
        let tenant = self.tenant(caller.tenant()).await.map_err(|e| e.to_string())?;
        self.model_route(&tenant, model)
    }

    /// The route to `model` if the tenant's settings allow it.
    pub(crate) fn model_route(&self, tenant: &Tenant, model: &str) -> std::result::Result<ModelRoute, String> {
        let catalog = self.catalog();
        let route = catalog
            .route(model)
            .ok_or_else(|| format!("Unknown model '{model}'; available: {}", catalog.model_ids().join(", ")))?;
        permitted(&tenant.settings, route)?;
        Ok(route.clone())
    }
}

fn permitted(settings: &TenantSettings, route: &ModelRoute) -> std::result::Result<(), String> {
    if !settings.allows_model(&route.id) {
        return Err(format!("Model '{}' is not allowed in this organisation.", route.id));
    }
    if !settings.allows_region(route.provider.region.as_deref()) {
        return Err(format!(
            "Model '{}' is served from a region this organisation does not allow ({}).",
            route.id,
            route.provider.region.as_deref().unwrap_or("undeclared")
        ));
    }
    Ok(())
}
