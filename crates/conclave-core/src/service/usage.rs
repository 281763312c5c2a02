//! Usage and budgets: every model call records its tokens and estimated cost; monthly budgets
//! (per tenant and per user, in tokens or dollars) refuse new calls once reached.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::{Date, Month, OffsetDateTime, Time};

use crate::app::Conclave;
use crate::error::{Error, Result};
use crate::ids::{ApiKeyId, MessageId, TenantId, UserId};
use crate::policy;
use crate::principal::{Caller, Credential, Scope};
use crate::records::{Tenant, Usage, UsageRecord, UsageSource, UsageTotals};

/// Price of a model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
pub struct Price {
    pub input_per_million_usd: f64,
    pub output_per_million_usd: f64,
}

impl Price {
    pub fn cost_micro_usd(&self, usage: Usage) -> i64 {
        // Dollars per million tokens is exactly micro-dollars per token.
        let micro = f64::from(usage.prompt_tokens) * self.input_per_million_usd
            + f64::from(usage.completion_tokens) * self.output_per_million_usd;
        micro.round().clamp(0.0, i64::MAX as f64) as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    Model,
    User,
    Day,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageLine {
    /// The model id, user id or day (YYYY-MM-DD), or `total`.
    pub key: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Estimated from the configured price table; 0 for unpriced models.
    pub cost_usd: f64,
    pub requests: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub group_by: UsageGroup,
    /// `tenant` (administrators) or `user` (everyone else: their own usage).
    pub scope: &'static str,
    pub items: Vec<UsageLine>,
    pub total: UsageLine,
}

/// Who a model call is charged to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Payer {
    pub tenant: TenantId,
    pub user: UserId,
    pub api_key: Option<ApiKeyId>,
}

impl Payer {
    pub fn of(caller: &Caller) -> Payer {
        let api_key = match &caller.principal.credential {
            Credential::ApiKey { id, .. } => Some(*id),
            Credential::Session(_) => None,
        };
        Payer { tenant: caller.tenant(), user: caller.user(), api_key }
    }
}

impl Conclave {
    /// Refuses a new model call when a monthly budget of the tenant or the user is spent.
    pub(crate) async fn check_budget(&self, caller: &Caller, tenant: &Tenant) -> Result<()> {
        let b = &tenant.settings.budgets;
        let now = crate::clock::now();
        let (start, next) = month_bounds(now);
        let reset = Duration::from_secs(u64::try_from((next - now).whole_seconds()).unwrap_or(1).max(1));
        let over = |who: &str, totals: UsageTotals, tokens: Option<u64>, dollars: Option<f64>| -> Option<Error> {
            let used = totals.prompt_tokens + totals.completion_tokens;
            let spent = totals.cost_micro_usd as f64 / 1e6;
            let detail = match (tokens, dollars) {
                (Some(t), _) if used >= i64::try_from(t).unwrap_or(i64::MAX) => {
                    format!("{who} monthly budget of {t} tokens is spent ({used} used)")
                }
                (_, Some(d)) if spent >= d => format!("{who} monthly budget of ${d:.2} is spent (${spent:.2} used)"),
                _ => return None,
            };
            Some(Error::RateLimited {
                retry_after: reset,
                detail: format!("{detail}; it renews on {}. An administrator can raise it.", next.date()),
            })
        };
        if b.tenant_monthly_tokens.is_some() || b.tenant_monthly_cost_usd.is_some() {
            let totals = self.store.usage_totals(caller.tenant(), None, start, next).await?;
            if let Some(e) = over("Your organisation's", totals, b.tenant_monthly_tokens, b.tenant_monthly_cost_usd) {
                return Err(e);
            }
        }
        if b.user_monthly_tokens.is_some() || b.user_monthly_cost_usd.is_some() {
            let totals = self.store.usage_totals(caller.tenant(), Some(caller.user()), start, next).await?;
            if let Some(e) = over("Your", totals, b.user_monthly_tokens, b.user_monthly_cost_usd) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stores one call's usage; failures are logged, never fatal to the reply.
    pub(crate) async fn record_usage(
        &self,
        payer: Payer,
        source: UsageSource,
        message: Option<MessageId>,
        model: &str,
        usage: Usage,
        estimated: bool,
    ) {
        let record = self.usage_record(payer, source, message, model, usage, estimated);
        if let Err(e) = self.store.record_usage(&record).await {
            tracing::error!(error = %e, model, "could not record usage");
        }
    }

    /// The row [`Self::record_usage`] would store, priced.
    pub(crate) fn usage_record(
        &self,
        payer: Payer,
        source: UsageSource,
        message: Option<MessageId>,
        model: &str,
        usage: Usage,
        estimated: bool,
    ) -> UsageRecord {
        let cost = self.config.prices.get(model).map_or(0, |p| p.cost_micro_usd(usage));
        UsageRecord {
            tenant_id: payer.tenant,
            id: uuid::Uuid::now_v7(),
            user_id: payer.user,
            api_key_id: payer.api_key,
            source,
            message_id: message,
            model: model.to_owned(),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            estimated,
            cost_micro_usd: cost,
            at: crate::clock::now(),
        }
    }

    /// Tokens and estimated cost in `[from, to)` (default: this month), grouped. Administrators
    /// see the tenant; everyone else their own usage.
    pub async fn usage_report(
        &self,
        caller: &Caller,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
        group_by: UsageGroup,
    ) -> Result<UsageReport> {
        self.permit(caller, policy::require(caller, Scope::UsageRead), "usage.read.denied", "usage", None).await?;
        let now = crate::clock::now();
        let from = from.unwrap_or_else(|| month_bounds(now).0);
        let to = to.unwrap_or(now + time::Duration::seconds(1));
        if from >= to {
            return Err(Error::field("from", "`from` must be before `to`."));
        }
        if to - from > time::Duration::days(366) {
            return Err(Error::field("to", "A report covers at most 366 days."));
        }
        let (user, scope) = if caller.principal.is_admin() { (None, "tenant") } else { (Some(caller.user()), "user") };
        let records = self.store.usage_records(caller.tenant(), user, from, to).await?;
        let mut groups: BTreeMap<String, UsageLine> = BTreeMap::new();
        let mut total = line("total");
        for r in &records {
            let key = match group_by {
                UsageGroup::Model => r.model.clone(),
                UsageGroup::User => r.user_id.to_string(),
                UsageGroup::Day => r.at.date().to_string(),
            };
            for l in [groups.entry(key.clone()).or_insert_with(|| line(&key)), &mut total] {
                l.prompt_tokens += i64::from(r.prompt_tokens);
                l.completion_tokens += i64::from(r.completion_tokens);
                l.total_tokens += i64::from(r.prompt_tokens) + i64::from(r.completion_tokens);
                l.cost_usd += r.cost_micro_usd as f64 / 1e6;
                l.requests += 1;
            }
        }
        Ok(UsageReport { from, to, group_by, scope, items: groups.into_values().collect(), total })
    }
}

fn line(key: &str) -> UsageLine {
    UsageLine {
        key: key.to_owned(),
        prompt_tokens: 0,
        completion_tokens: 0,
        total_tokens: 0,
        cost_usd: 0.0,
        requests: 0,
    }
}

/// The first instants of this month and of the next (UTC).
pub fn month_bounds(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let first = |year: i32, month: Month| {
        Date::from_calendar_date(year, month, 1).map(|d| d.with_time(Time::MIDNIGHT).assume_utc()).unwrap_or(now)
    };
    let start = first(now.year(), now.month());
    let next = if now.month() == Month::December {
        first(now.year() + 1, Month::January)
    } else {
        first(now.year(), now.month().next())
    };
    (start, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_per_million_tokens() {
        let p = Price { input_per_million_usd: 0.15, output_per_million_usd: 0.60 };
        assert_eq!(p.cost_micro_usd(Usage { prompt_tokens: 1_000_000, completion_tokens: 0 }), 150_000);
        assert_eq!(p.cost_micro_usd(Usage { prompt_tokens: 1000, completion_tokens: 1000 }), 750);
    }

    #[test]
    fn month_bounds_roll_over_the_year() {
        let (s, n) = month_bounds(time::macros::datetime!(2026-12-31 23:59 UTC));
        assert_eq!(
            (s, n),
            (time::macros::datetime!(2026-12-01 0:00 UTC), time::macros::datetime!(2027-01-01 0:00 UTC))
        );
        let (s, n) = month_bounds(time::macros::datetime!(2026-03-15 12:00 UTC));
        assert_eq!(
            (s, n),
            (time::macros::datetime!(2026-03-01 0:00 UTC), time::macros::datetime!(2026-04-01 0:00 UTC))
        );
    }
}
