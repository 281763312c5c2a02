//! Keeps a token-fed secret fresh: the PostgreSQL password of new connections, the Redis AUTH
//! token. The credential's [`TokenCache`](crate::TokenCache) decides when a new token is
//! fetched (before expiry); this task asks it regularly and hands every new token on.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::credential::TokenCredential;

/// How often the refresher asks the credential: well inside the five minutes before expiry at
/// which the cache fetches a new token.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);

/// Calls `apply` with each new token for `scope`, starting after `current` (the token already in
/// use). Asks every `every`, or sooner when the token in hand is short-lived (a quarter of its
/// remaining life, at least a second), so a renewal is never missed. Failures are logged and
/// retried at the next check; the task runs until aborted.
pub fn spawn_token_refresher(
    credential: Arc<dyn TokenCredential>,
    scope: &'static str,
    current: String,
    every: Duration,
    apply: impl Fn(&str) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = current;
        let mut wait = Duration::ZERO;
        loop {
            tokio::time::sleep(wait).await;
            wait = every;
            match credential.token(scope).await {
                Ok(token) => {
                    if token.token.expose_secret() != last {
                        apply(token.token.expose_secret());
                        last = token.token.expose_secret().to_owned();
                        tracing::info!(scope, expires_on = %token.expires_on, "applied a refreshed Entra ID token");
                    }
                    let left = token.expires_on - time::OffsetDateTime::now_utc();
                    let quarter = Duration::try_from(left / 4).unwrap_or(Duration::ZERO);
                    wait = every.min(quarter.max(Duration::from_secs(1)));
                }
                Err(e) => tracing::warn!(scope, error = %e, "refreshing an Entra ID token failed; retrying"),
            }
        }
    })
}
