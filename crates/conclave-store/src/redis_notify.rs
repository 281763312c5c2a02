//! Reply notices between replicas over Redis pub/sub, when `CONCLAVE_REDIS_URL` is set (the
//! replicas then need not share a PostgreSQL connection for LISTEN). Payloads are the encoded
//! [`Notice`]: ids and offsets, never content. A lost subscription is re-established; notices
//! missed meanwhile cost followers only latency (they also re-read the store periodically).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conclave_core::notify::{LocalNotifier, Notice, Notifier};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::broadcast;

/// The channel replicas share.
pub const REDIS_CHANNEL: &str = "conclave:replies";

pub struct RedisNotifier {
    publisher: ConnectionManager,
    channel: String,
    local: LocalNotifier,
}

impl RedisNotifier {
    /// Subscribes to `channel` and relays what arrives (from every replica, this one included)
    /// to local subscribers.
    pub async fn start(client: redis::Client, channel: &str) -> redis::RedisResult<Arc<RedisNotifier>> {
        let publisher = ConnectionManager::new(client.clone()).await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        let notifier =
            Arc::new(RedisNotifier { publisher, channel: channel.to_owned(), local: LocalNotifier::default() });
        let tx = notifier.local.sender();
        let channel = channel.to_owned();
        tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            loop {
                while let Some(msg) = stream.next().await {
                    if let Some(notice) = msg.get_payload::<String>().ok().as_deref().and_then(Notice::decode) {
                        // No receiver right now is fine: replicas subscribe when they follow.
                        let _ = tx.send(notice);
                    }
                }
                tracing::warn!("reply notices: Redis subscription lost; reconnecting");
                stream = loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match client.get_async_pubsub().await {
                        Ok(mut p) => match p.subscribe(&channel).await {
                            Ok(()) => break p.into_on_message(),
                            Err(e) => tracing::warn!(error = %e, "reply notices: Redis subscribe failed"),
                        },
                        Err(e) => tracing::warn!(error = %e, "reply notices: Redis unreachable"),
                    }
                };
            }
        });
        Ok(notifier)
    }
}

#[async_trait]
impl Notifier for RedisNotifier {
    async fn publish(&self, notice: Notice) {
        let mut conn = self.publisher.clone();
        let sent: redis::RedisResult<i64> =
            redis::cmd("PUBLISH").arg(&self.channel).arg(notice.encode()).query_async(&mut conn).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "reply notices: could not publish to Redis");
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.local.subscribe()
    }
}
