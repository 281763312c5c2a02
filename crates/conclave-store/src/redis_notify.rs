//! Reply notices between replicas over Redis pub/sub, when `CONCLAVE_REDIS_URL` is set (the
//! replicas then need not share a PostgreSQL connection for LISTEN). Payloads are the encoded
//! [`Notice`]: ids and offsets, never content. A lost subscription is re-established, and remade
//! with the new credentials when the password (an Entra token) is renewed; notices missed
//! meanwhile cost followers only latency (they also re-read the store periodically).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use conclave_core::notify::{LocalNotifier, Notice, Notifier};
use futures::StreamExt;
use tokio::sync::broadcast;

use crate::SharedRedis;

/// The channel replicas share.
pub const REDIS_CHANNEL: &str = "conclave:replies";

pub struct RedisNotifier {
    redis: Arc<SharedRedis>,
    channel: String,
    local: LocalNotifier,
}

impl RedisNotifier {
    /// Subscribes to `channel` and relays what arrives (from every replica, this one included)
    /// to local subscribers.
    pub async fn start(redis: Arc<SharedRedis>, channel: &str) -> redis::RedisResult<Arc<RedisNotifier>> {
        let mut stream = subscription(&redis.client(), channel).await?;
        let mut changes = redis.changes();
        let notifier = Arc::new(RedisNotifier {
            redis: redis.clone(),
            channel: channel.to_owned(),
            local: LocalNotifier::default(),
        });
        let tx = notifier.local.sender();
        let channel = channel.to_owned();
        let redis = Arc::downgrade(&redis);
        tokio::spawn(async move {
            loop {
                let renewed = loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                if let Some(notice) = msg.get_payload::<String>().ok().as_deref().and_then(Notice::decode) {
                                    // No receiver right now is fine: replicas subscribe when they follow.
                                    let _ = tx.send(notice);
                                }
                            }
                            None => break false,
                        },
                        changed = changes.changed() => {
                            if changed.is_err() { return }
                            break true;
                        }
                    }
                };
                if renewed {
                    tracing::info!("reply notices: subscribing again with the renewed Redis credentials");
                } else {
                    tracing::warn!("reply notices: Redis subscription lost; reconnecting");
                }
                // The new subscription is made before the old one is dropped, so a renewal
                // loses nothing (a notice may arrive twice, which costs a follower one read).
                stream = loop {
                    let Some(shared) = redis.upgrade() else { return };
                    let client = shared.client();
                    drop(shared);
                    match subscription(&client, &channel).await {
                        Ok(s) => break s,
                        Err(e) => tracing::warn!(error = %e, "reply notices: Redis subscribe failed"),
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                };
            }
        });
        Ok(notifier)
    }
}

async fn subscription(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<impl futures::Stream<Item = redis::Msg> + Send + Unpin + 'static> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub.into_on_message())
}

#[async_trait]
impl Notifier for RedisNotifier {
    async fn publish(&self, notice: Notice) {
        let mut conn = self.redis.manager();
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
