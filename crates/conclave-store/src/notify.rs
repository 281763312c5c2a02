//! Reply notices between replicas over PostgreSQL LISTEN/NOTIFY (channel `conclave_replies`).
//! Payloads are the encoded [`Notice`]: ids and offsets, never content.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conclave_core::notify::{LocalNotifier, Notice, Notifier};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;

pub const CHANNEL: &str = "conclave_replies";

pub struct PgNotifier {
    pool: PgPool,
    local: LocalNotifier,
}

impl PgNotifier {
    /// Listens on the channel and relays what arrives (from every replica, this one included)
    /// to local subscribers. The listener reconnects by itself after a lost connection.
    pub async fn start(pool: PgPool) -> Result<Arc<PgNotifier>, sqlx::Error> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let notifier = Arc::new(PgNotifier { pool, local: LocalNotifier::default() });
        let tx = notifier.local.sender();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if let Some(notice) = Notice::decode(n.payload()) {
                            let _ = tx.send(notice);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reply notices: listener error; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(notifier)
    }
}

#[async_trait]
impl Notifier for PgNotifier {
    async fn publish(&self, notice: Notice) {
        let sent =
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(notice.encode()).execute(&self.pool).await;
        if let Err(e) = sent {
            // Followers fall back to reading the store periodically; nothing is lost.
            tracing::warn!(error = %e, "reply notices: could not publish");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.local.subscribe()
    }
}
