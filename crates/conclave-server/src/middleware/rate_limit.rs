//! Rate limits with GCRA (the generic cell rate algorithm): per principal (user or API key)
//! once signed in, per client address before, and for sign-in attempts per account and per
//! address. In process by default; shared by every replica through Redis when configured (one
//! Lua script, so the check and the update are atomic). If Redis cannot be reached, the limiter
//! fails open or closed as configured, and says so in the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use conclave_core::Error;

/// What a check decided, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until a request is allowed again (when refused) or the bucket is full again.
    pub reset: Duration,
}

impl Decision {
    pub fn headers(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset.as_secs().max(u64::from(!self.allowed))));
    }
}

/// A limit: `per_minute` requests a minute, all of them allowed in a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
}

impl Quota {
    /// Microseconds between two requests at the sustained rate (at least 1).
    fn interval_us(self) -> u64 {
        (60_000_000 / u64::from(self.per_minute.max(1))).max(1)
    }

    /// How far ahead of now the bucket may run: the burst.
    fn tolerance_us(self) -> u64 {
        self.interval_us() * u64::from(self.per_minute.max(1) - 1)
    }
}

/// The GCRA step on a theoretical arrival time (`tat`, µs): the new `tat` if allowed, and the
/// decision. Shared by the in-process limiter and mirrored by the Redis script.
fn gcra(now_us: u64, tat_us: u64, quota: Quota) -> (Option<u64>, Decision) {
    let t = quota.interval_us();
    let tau = quota.tolerance_us();
    let tat = tat_us.max(now_us);
    let allow_at = tat.saturating_sub(tau);
    if now_us < allow_at {
        let decision = Decision {
            allowed: false,
            limit: quota.per_minute,
            remaining: 0,
            reset: Duration::from_micros(allow_at - now_us),
        };
        return (None, decision);
    }
    let new_tat = tat + t;
    let used = new_tat - now_us;
    let remaining = u32::try_from((tau + t).saturating_sub(used) / t).unwrap_or(0);
    (Some(new_tat), Decision { allowed: true, limit: quota.per_minute, remaining, reset: Duration::from_micros(used) })
}

const SCRIPT: &str = r#"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now_us then tat = now_us end
local allow_at = tat - tau
if now_us < allow_at then
  return {0, allow_at - now_us, 0}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now_us) / 1000) + 1000)
local used = new_tat - now_us
return {1, used, math.floor(math.max(0, tau + t - used) / t)}
"#;

/// Longest wait for Redis before failing open or closed.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Hands out the current Redis connection: a renewed password (an Entra token) swaps it.
pub type RedisConnection = Arc<dyn Fn() -> redis::aio::ConnectionManager + Send + Sync>;

pub enum Backend {
    Local(Mutex<HashMap<String, (u64, Instant)>>),
    Redis { connection: RedisConnection, script: redis::Script, fail_open: bool, prefix: String },
}

pub struct RateLimiter {
    backend: Backend,
    epoch: Instant,
}

impl RateLimiter {
    pub fn local() -> RateLimiter {
        RateLimiter { backend: Backend::Local(Mutex::new(HashMap::new())), epoch: Instant::now() }
    }

    /// Shared through Redis; keys are prefixed so several deployments may share one Redis.
    pub fn redis(connection: RedisConnection, fail_open: bool, prefix: impl Into<String>) -> RateLimiter {
        RateLimiter {
            backend: Backend::Redis {
                connection,
                script: redis::Script::new(SCRIPT),
                fail_open,
                prefix: prefix.into(),
            },
            epoch: Instant::now(),
        }
    }

    /// Counts one request against `key`; `Err` is the 429 (or, failing closed, the 503).
    pub async fn check(&self, key: &str, quota: Quota) -> Result<Decision, Error> {
        let decision = match &self.backend {
            Backend::Local(map) => {
                let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                if map.len() > 100_000 {
                    // Forget buckets that are full again: they carry no state worth keeping.
                    map.retain(|_, (tat, _)| *tat > now);
                }
                let tat = map.get(key).map_or(0, |(tat, _)| *tat);
                let (new_tat, decision) = gcra(now, tat, quota);
                if let Some(tat) = new_tat {
                    map.insert(key.to_owned(), (tat, Instant::now()));
                }
                decision
            }
            Backend::Redis { connection, script, fail_open, prefix } => {
                let mut conn = connection();
                let mut invocation = script.key(format!("{prefix}{key}"));
                invocation.arg(quota.interval_us()).arg(quota.tolerance_us());
                let call = invocation.invoke_async::<(u8, u64, u64)>(&mut conn);
                // A Redis that went away must not hold requests: its answer is due at once.
                let result = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", REDIS_TIMEOUT.as_millis())),
                };
                match result {
                    Ok((allowed, ms, remaining)) => Decision {
                        allowed: allowed == 1,
                        limit: quota.per_minute,
                        remaining: u32::try_from(remaining).unwrap_or(0),
                        reset: Duration::from_micros(ms),
                    },
                    Err(e) if *fail_open => {
                        tracing::error!(error = %e, "rate limiter: Redis unavailable; letting the request through (fail open)");
                        return Ok(Decision {
                            allowed: true,
                            limit: quota.per_minute,
                            remaining: quota.per_minute,
                            reset: Duration::ZERO,
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "rate limiter: Redis unavailable; refusing the request (fail closed)");
                        return Err(Error::Unavailable { service: "rate limiter", detail: e });
                    }
                }
            }
        };
        if decision.allowed {
            Ok(decision)
        } else {
            Err(Error::RateLimited {
                retry_after: decision.reset.max(Duration::from_secs(1)),
                detail: format!(
                    "Too many requests: the limit is {} a minute. Try again in {} s.",
                    quota.per_minute,
                    decision.reset.as_secs().max(1)
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_one_per_interval() {
        let q = Quota { per_minute: 6 }; // one every 10 s, six at once
        let mut tat = 0;
        for i in 0..6 {
            let (next, d) = gcra(1_000_000, tat, q);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 5 - i);
            tat = next.unwrap();
        }
        let (next, d) = gcra(1_000_000, tat, q);
        assert!(!d.allowed && next.is_none());
        assert_eq!(d.reset, Duration::from_secs(10));
        let (_, d) = gcra(11_000_000, tat, q);
        assert!(d.allowed, "one more after an interval");
    }

    #[tokio::test]
    async fn local_limiter_keys_are_independent() {
        let l = RateLimiter::local();
        let q = Quota { per_minute: 2 };
        assert!(l.check("a", q).await.is_ok());
        assert!(l.check("a", q).await.is_ok());
        assert!(matches!(l.check("a", q).await, Err(Error::RateLimited { .. })));
        assert!(l.check("b", q).await.is_ok());
        // Very high limits (more than one request a millisecond) still work.
        let fast = Quota { per_minute: 10_000_000 };
        for _ in 0..1000 {
            assert!(l.check("fast", fast).await.is_ok());
        }
    }
}
