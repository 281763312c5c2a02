//! Notices between replicas about replies: "reply X has N bytes saved" and "cancel reply X".
//! They carry ids and offsets, never content; a replica that follows a reply it does not own
//! reads the text from the store when told it grew. PostgreSQL carries them with LISTEN/NOTIFY;
//! a single process (SQLite) keeps them in memory.

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::ids::MessageId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The reply's saved text reached `offset` bytes (or the reply ended).
    Progress { message: MessageId, offset: usize },
    /// Someone asked to stop the reply.
    Cancel { message: MessageId },
}

impl Notice {
    pub fn message(&self) -> MessageId {
        match self {
            Notice::Progress { message, .. } | Notice::Cancel { message } => *message,
        }
    }

    /// `p:<uuid>:<offset>` or `c:<uuid>`.
    pub fn encode(&self) -> String {
        match self {
            Notice::Progress { message, offset } => format!("p:{message}:{offset}"),
            Notice::Cancel { message } => format!("c:{message}"),
        }
    }

    pub fn decode(s: &str) -> Option<Notice> {
        let mut parts = s.split(':');
        match (parts.next()?, parts.next()?, parts.next()) {
            ("p", id, Some(offset)) => {
                Some(Notice::Progress { message: id.parse().ok()?, offset: offset.parse().ok()? })
            }
            ("c", id, None) => Some(Notice::Cancel { message: id.parse().ok()? }),
            _ => None,
        }
    }
}

#[async_trait]
pub trait Notifier: Send + Sync {
    /// Tells every replica, this one included.
    async fn publish(&self, notice: Notice);
    fn subscribe(&self) -> broadcast::Receiver<Notice>;
}

/// One process: notices go round in memory.
pub struct LocalNotifier {
    tx: broadcast::Sender<Notice>,
}

impl Default for LocalNotifier {
    fn default() -> Self {
        Self { tx: broadcast::channel(1024).0 }
    }
}

impl LocalNotifier {
    /// The sender, for a transport that receives notices from elsewhere and re-broadcasts them.
    pub fn sender(&self) -> broadcast::Sender<Notice> {
        self.tx.clone()
    }
}

#[async_trait]
impl Notifier for LocalNotifier {
    async fn publish(&self, notice: Notice) {
        let _ = self.tx.send(notice);
    }

    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_garbage_is_ignored() {
        let id = MessageId::new();
        for n in [Notice::Progress { message: id, offset: 42 }, Notice::Cancel { message: id }] {
            assert_eq!(Notice::decode(&n.encode()), Some(n));
        }
        for bad in ["", "p:x:1", "c", "x:1", &format!("p:{id}"), &format!("c:{id}:3")] {
            assert_eq!(Notice::decode(bad), None, "{bad}");
        }
    }
}
