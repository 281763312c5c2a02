//! A tenant's settings: which models and provider regions it allows, its budgets, its IP
//! allow-list, retention periods and feature flags. Stored as one JSON document, validated here.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::FieldError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct TenantSettings {
    /// Model ids the tenant may use; `null` means every configured model.
    pub allowed_models: Option<Vec<String>>,
    /// Provider regions the tenant's data may be sent to (e.g. `["eu"]`); `null` means any.
    pub provider_regions: Option<Vec<String>>,
    pub budgets: Budgets,
    /// Addresses allowed to call the API for this tenant (CIDR); empty means any.
    #[schema(value_type = Vec<String>, example = json!(["10.0.0.0/8", "2001:db8::/32"]))]
    pub ip_allowlist: Vec<IpNet>,
    pub retention: Retention,
    /// Named on/off switches.
    pub features: BTreeMap<String, bool>,
    /// Local accounts must enrol a second factor (TOTP): until they do, their sessions may only
    /// read `GET /api/v1/me`, enrol, and sign out. Single sign-on users are exempt (their issuer
    /// decides), and so are API keys.
    pub require_mfa: bool,
}

/// Monthly limits; `null` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Budgets {
    pub tenant_monthly_tokens: Option<u64>,
    pub tenant_monthly_cost_usd: Option<f64>,
    pub user_monthly_tokens: Option<u64>,
    pub user_monthly_cost_usd: Option<f64>,
}

/// How long data is kept, in days; `null` means until deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    pub conversation_days: Option<u32>,
    pub audit_days: Option<u32>,
}

/// A change to some settings: each field present replaces the current value; `null` clears a
/// nullable one.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_models: Option<Option<Vec<String>>>,
    #[serde(deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub provider_regions: Option<Option<Vec<String>>>,
    pub budgets: Option<Budgets>,
    #[schema(value_type = Option<Vec<String>>)]
    pub ip_allowlist: Option<Vec<String>>,
    pub retention: Option<Retention>,
    pub features: Option<BTreeMap<String, bool>>,
    pub require_mfa: Option<bool>,
}

/// Distinguishes an absent field (outer `None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub const MAX_RETENTION_DAYS: u32 = 36_500;
const MAX_LIST: usize = 256;

impl TenantSettings {
    /// Applies a patch, checking every field. `known_models` are the models configured on this
    /// server; `known_regions` the regions of its providers.
    pub fn apply(
        &self,
        patch: SettingsPatch,
        known_models: &[String],
        known_regions: &[String],
    ) -> Result<TenantSettings, Vec<FieldError>> {
        let mut next = self.clone();
        let mut errors = Vec::new();

        if let Some(models) = patch.allowed_models {
            if let Some(list) = &models {
                check_list(&mut errors, "settings.allowed_models", list, |m| {
                    known_models
                        .iter()
                        .any(|k| k == m)
                        .then_some(())
                        .ok_or_else(|| format!("Unknown model '{m}'; configured models: {}", known_models.join(", ")))
                });
            }
            next.allowed_models = models;
        }
        if let Some(regions) = patch.provider_regions {
            if let Some(list) = &regions {
                check_list(&mut errors, "settings.provider_regions", list, |r| {
                    let ok = !r.is_empty()
                        && r.len() <= 64
                        && r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if !ok {
                        return Err(
                            "A region is lower-case letters, digits and '-', e.g. 'eu' or 'francecentral'".into()
                        );
                    }
                    if !known_regions.is_empty() && !known_regions.iter().any(|k| k == r) {
                        return Err(format!(
                            "No configured provider is in region '{r}'; configured regions: {}",
                            known_regions.join(", ")
                        ));
                    }
                    Ok(())
                });
            }
            next.provider_regions = regions;
        }
        if let Some(budgets) = patch.budgets {
            for (field, value) in [
                ("tenant_monthly_cost_usd", budgets.tenant_monthly_cost_usd),
                ("user_monthly_cost_usd", budgets.user_monthly_cost_usd),
            ] {
                if let Some(v) = value {
                    if !v.is_finite() || v < 0.0 {
                        errors.push(FieldError::new(
                            format!("settings.budgets.{field}"),
                            "Must be a number of dollars, 0 or more",
                        ));
                    }
                }
            }
            next.budgets = budgets;
        }
        if let Some(list) = patch.ip_allowlist {
            if list.len() > MAX_LIST {
                errors.push(FieldError::new("settings.ip_allowlist", format!("At most {MAX_LIST} entries")));
            }
            let mut nets = Vec::with_capacity(list.len());
            for (i, entry) in list.iter().enumerate() {
                match parse_net(entry) {
                    Some(net) => nets.push(net),
                    None => errors.push(FieldError::new(
                        format!("settings.ip_allowlist[{i}]"),
                        format!("'{entry}' is not an IP address or CIDR block such as 10.0.0.0/8"),
                    )),
                }
            }
            next.ip_allowlist = nets;
        }
        if let Some(retention) = patch.retention {
            for (field, value) in
                [("conversation_days", retention.conversation_days), ("audit_days", retention.audit_days)]
            {
                if let Some(days) = value {
                    if days == 0 || days > MAX_RETENTION_DAYS {
                        errors.push(FieldError::new(
                            format!("settings.retention.{field}"),
                            format!("Must be between 1 and {MAX_RETENTION_DAYS} days, or null to keep until deleted"),
                        ));
                    }
                }
            }
            next.retention = retention;
        }
        if let Some(features) = patch.features {
            if features.len() > 64 {
                errors.push(FieldError::new("settings.features", "At most 64 feature flags"));
            }
            for name in features.keys() {
                if !is_flag_name(name) {
                    errors.push(FieldError::new(
                        format!("settings.features.{name}"),
                        "A flag name is a lower-case letter then up to 63 letters, digits or '_'",
                    ));
                }
            }
            next.features = features;
        }
        if let Some(require_mfa) = patch.require_mfa {
            next.require_mfa = require_mfa;
        }

        if errors.is_empty() {
            Ok(next)
        } else {
            Err(errors)
        }
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|list| list.iter().any(|m| m == model))
    }

    pub fn allows_region(&self, region: Option<&str>) -> bool {
        match (&self.provider_regions, region) {
            (None, _) => true,
            (Some(list), Some(region)) => list.iter().any(|r| r == region),
            (Some(_), None) => false,
        }
    }
}

fn check_list(errors: &mut Vec<FieldError>, field: &str, list: &[String], check: impl Fn(&str) -> Result<(), String>) {
    if list.len() > MAX_LIST {
        errors.push(FieldError::new(field, format!("At most {MAX_LIST} entries")));
    }
    for (i, item) in list.iter().enumerate() {
        if let Err(message) = check(item) {
            errors.push(FieldError::new(format!("{field}[{i}]"), message));
        }
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from)).map(|n| n.trunc())
}

fn is_flag_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<String> {
        vec!["mock-model".into(), "mock-large".into()]
    }

    fn patch(json: serde_json::Value) -> SettingsPatch {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn valid_patch_applies_and_null_clears() {
        let s = TenantSettings::default()
            .apply(
                patch(serde_json::json!({"allowed_models": ["mock-model"], "ip_allowlist": ["10.1.2.3/8", "::1"]})),
                &models(),
                &[],
            )
            .unwrap();
        assert_eq!(s.allowed_models, Some(vec!["mock-model".to_string()]));
        assert_eq!(s.ip_allowlist[0].to_string(), "10.0.0.0/8");
        assert!(s.allows_model("mock-model") && !s.allows_model("mock-large"));
        let cleared = s.apply(patch(serde_json::json!({"allowed_models": null})), &models(), &[]).unwrap();
        assert_eq!(cleared.allowed_models, None);
        assert_eq!(cleared.ip_allowlist.len(), 2, "absent fields are kept");
    }

    #[test]
    fn every_invalid_field_is_named() {
        let errors = TenantSettings::default()
            .apply(
                patch(serde_json::json!({
                    "allowed_models": ["nope"],
                    "ip_allowlist": ["10.0.0.0/8", "not-an-ip"],
                    "budgets": {"tenant_monthly_cost_usd": -1.0},
                    "retention": {"conversation_days": 0, "audit_days": 40000},
                    "features": {"Bad-Name": true},
                    "provider_regions": ["EU"]
                })),
                &models(),
                &[],
            )
            .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "settings.allowed_models[0]",
            "settings.ip_allowlist[1]",
            "settings.budgets.tenant_monthly_cost_usd",
            "settings.retention.conversation_days",
            "settings.retention.audit_days",
            "settings.features.Bad-Name",
            "settings.provider_regions[0]",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn regions_pin_providers() {
        let s = TenantSettings::default()
            .apply(patch(serde_json::json!({"provider_regions": ["eu"]})), &models(), &["eu".into(), "us".into()])
            .unwrap();
        assert!(s.allows_region(Some("eu")));
        assert!(!s.allows_region(Some("us")));
        assert!(!s.allows_region(None), "a provider with no declared region is refused under a pin");
    }
}
