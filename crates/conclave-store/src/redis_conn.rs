//! One Redis for the whole process (rate limits, reply notices), whose password can change while
//! it runs: with `CONCLAVE_REDIS_AUTH=entra` the password is an Entra ID access token that
//! expires within the hour.
//!
//! `redis`'s [`ConnectionManager`] reconnects with the credentials it was built with, so a
//! renewed token cannot be handed to it. Instead [`SharedRedis::set_password`] makes a new
//! [`redis::Client`] at once (pub/sub subscribers read it through [`SharedRedis::client`] and are
//! told through [`SharedRedis::changes`]) and a background task builds a new manager with it,
//! retrying until Redis takes it; [`SharedRedis::manager`] hands out the old one meanwhile, which
//! keeps working until its token expires. Old managers close when their last clone is dropped.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, IntoConnectionInfo};
use tokio::sync::watch;

/// How long connecting may take before the attempt counts as failed.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is and how to trust it.
#[derive(Clone)]
pub struct RedisTarget {
    info: ConnectionInfo,
    /// PEM roots for `rediss://` instead of the system's (a private CA).
    ca_pem: Option<Vec<u8>>,
}

impl RedisTarget {
    /// `url` is `redis://` or `rediss://` (TLS), with the user and password it may carry.
    pub fn new(url: &str, ca_pem: Option<Vec<u8>>) -> redis::RedisResult<RedisTarget> {
        Ok(RedisTarget { info: url.into_connection_info()?, ca_pem })
    }

    /// The user name in the URL, if any.
    pub fn username(&self) -> Option<&str> {
        self.info.redis.username.as_deref()
    }

    /// Whether connections use TLS.
    pub fn uses_tls(&self) -> bool {
        matches!(self.info.addr, redis::ConnectionAddr::TcpTls { .. })
    }

    /// A client signing in as `username` (when given) with `password` (when given), instead
    /// of what the URL says.
    fn client(&self, username: Option<&str>, password: Option<&str>) -> redis::RedisResult<redis::Client> {
        let mut info = self.info.clone();
        if let Some(username) = username {
            info.redis.username = Some(username.to_owned());
        }
        if let Some(password) = password {
            info.redis.password = Some(password.to_owned());
        }
        if self.uses_tls() {
            ensure_tls_provider();
        }
        match &self.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
            None => redis::Client::open(info),
        }
    }
}

/// `redis` builds its TLS configuration from rustls's process-wide provider, which must be
/// chosen when more than one is compiled in: ring, as for the server's own listener. The binary
/// installs it at start; this covers tests and other embedders.
fn ensure_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is then in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

struct Current {
    client: redis::Client,
    manager: ConnectionManager,
}

/// The process's Redis: a client and a connection manager for the current credentials.
pub struct SharedRedis {
    target: RedisTarget,
    username: Option<String>,
    current: RwLock<Current>,
    /// Bumped by every new password; the rebuild task and subscribers watch it.
    generation: watch::Sender<u64>,
}

impl SharedRedis {
    /// Connects with the URL's credentials, or `username`/`password` when given (an Entra
    /// token and the identity's object id), within [`REDIS_CONNECT_TIMEOUT`].
    pub async fn connect(
        target: RedisTarget,
        username: Option<String>,
        password: Option<&str>,
    ) -> redis::RedisResult<Arc<SharedRedis>> {
        let client = target.client(username.as_deref(), password)?;
        let manager = new_manager(client.clone()).await?;
        let (generation, _) = watch::channel(0);
        let redis =
            Arc::new(SharedRedis { target, username, current: RwLock::new(Current { client, manager }), generation });
        tokio::spawn(rebuild_on_change(Arc::downgrade(&redis), redis.generation.subscribe()));
        Ok(redis)
    }

    /// A handle on the current connection (cheap: the manager multiplexes one connection).
    pub fn manager(&self) -> ConnectionManager {
        self.current.read().unwrap_or_else(PoisonError::into_inner).manager.clone()
    }

    /// A client with the newest credentials, for connections of their own (pub/sub).
    pub fn client(&self) -> redis::Client {
        self.current.read().unwrap_or_else(PoisonError::into_inner).client.clone()
    }

    /// Told of every new password, so long-lived connections can be remade with it.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Signs in with `password` from now on: new connections at once, the shared manager as
    /// soon as a connection with it succeeds (retried in the background).
    pub fn set_password(&self, password: &str) -> redis::RedisResult<()> {
        let client = self.target.client(self.username.as_deref(), Some(password))?;
        self.current.write().unwrap_or_else(PoisonError::into_inner).client = client;
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }
}

async fn new_manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
        .set_number_of_retries(2)
        .set_max_delay(1000);
    match tokio::time::timeout(REDIS_CONNECT_TIMEOUT, ConnectionManager::new_with_config(client, config)).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", REDIS_CONNECT_TIMEOUT.as_secs()),
        ))),
    }
}

/// Builds a manager for each new password, retrying with back-off until one connects or a
/// newer password supersedes it; ends when the [`SharedRedis`] is dropped.
async fn rebuild_on_change(redis: std::sync::Weak<SharedRedis>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let mut delay = Duration::from_millis(250);
        loop {
            let Some(shared) = redis.upgrade() else { return };
            let wanted = *changes.borrow_and_update();
            let client = shared.client();
            drop(shared);
            match new_manager(client.clone()).await {
                Ok(manager) => {
                    let Some(shared) = redis.upgrade() else { return };
                    if *shared.generation.borrow() == wanted {
                        shared.current.write().unwrap_or_else(PoisonError::into_inner).manager = manager;
                        tracing::info!("Redis: signed in with the renewed credentials");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis: signing in with the renewed credentials failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // A newer password: try that one at once.
                        changed = changes.changed() => if changed.is_err() { return },
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_keeps_the_address_and_takes_new_credentials() {
        let target = RedisTarget::new("redis://oid-in-url@127.0.0.1:6390/2", None).unwrap();
        assert_eq!(target.username(), Some("oid-in-url"));
        assert!(!target.uses_tls());
        let client = target.client(Some("other"), Some("token")).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.redis.username.as_deref(), Some("other"));
        assert_eq!(info.redis.password.as_deref(), Some("token"));
        assert_eq!(info.redis.db, 2);
        assert!(RedisTarget::new("rediss://cache.example:6380", None).unwrap().uses_tls());
        assert!(RedisTarget::new("http://nope", None).is_err());
    }
}
