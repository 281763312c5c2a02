//! Replies being generated in this process: their text so far, their progress, and how to stop
//! them. Subscribers never queue deltas: they read the text past their own offset whenever the
//! progress moves, so a client that reads slowly (or not at all) costs nothing but the reply
//! itself, which is kept in full anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ids::{ConversationId, MessageId, TenantId};
use crate::provider::ProviderError;
use crate::views::MessageView;

/// A reply's final message, with its JSON encoding made once: every watcher of the reply
/// shares these bytes instead of holding a copy of a possibly long text each.
#[derive(Debug)]
pub struct EndedMessage {
    pub view: MessageView,
    pub json: bytes::Bytes,
}

impl EndedMessage {
    pub fn new(view: MessageView) -> Arc<EndedMessage> {
        let json = bytes::Bytes::from(serde_json::to_vec(&view).unwrap_or_default());
        Arc::new(EndedMessage { view, json })
    }
}

/// How a reply ended, as subscribers learn it.
#[derive(Debug, Clone)]
pub enum ReplyEnd {
    /// Complete or cancelled: the stored message.
    Done(Arc<EndedMessage>),
    /// The provider failed; the stored message (status `failed`) keeps the text so far.
    Failed { error: ProviderError, message: Arc<EndedMessage> },
}

#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Bytes of text produced so far (always on a character boundary).
    pub len: usize,
    pub end: Option<ReplyEnd>,
}

pub struct LiveReply {
    pub tenant: TenantId,
    pub conversation: ConversationId,
    pub id: MessageId,
    /// The user message it answers.
    pub question: MessageId,
    text: RwLock<String>,
    progress: watch::Sender<Progress>,
    /// A person asked to stop the reply.
    pub cancel: CancellationToken,
    /// The server is shutting down and its grace period is over.
    pub abort: CancellationToken,
}

impl LiveReply {
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Text from byte `from` to the current end (`from` must be a boundary this reply gave out).
    pub fn text_from(&self, from: usize) -> String {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        text.get(from..).unwrap_or("").to_owned()
    }

    pub fn text(&self) -> String {
        self.text_from(0)
    }

    pub fn len(&self) -> usize {
        self.progress.borrow().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `from..to` of the text, if both are character boundaries within it.
    pub fn piece(&self, from: usize, to: usize) -> Option<String> {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        text.get(from..to).map(str::to_owned)
    }

    /// At most `max` bytes of the text from `from` towards `to`, cut on a character boundary,
    /// with the offset where the piece ends. `None` if `from` is not a boundary.
    pub fn bounded_piece(&self, from: usize, to: usize, max: usize) -> Option<(String, usize)> {
        let text = self.text.read().unwrap_or_else(|e| e.into_inner());
        bounded(&text, from, to, max)
    }

    pub(crate) fn push(&self, delta: &str) {
        let len = {
            let mut text = self.text.write().unwrap_or_else(|e| e.into_inner());
            text.push_str(delta);
            text.len()
        };
        self.progress.send_modify(|p| p.len = len);
    }

    pub(crate) fn end(&self, end: ReplyEnd) {
        self.progress.send_modify(|p| p.end = Some(end));
    }
}

/// The replies this process is generating.
#[derive(Default)]
pub struct ReplyHub {
    replies: Mutex<HashMap<MessageId, Arc<LiveReply>>>,
}

impl ReplyHub {
    pub(crate) fn register(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        id: MessageId,
        question: MessageId,
    ) -> Arc<LiveReply> {
        let (progress, _) = watch::channel(Progress::default());
        let live = Arc::new(LiveReply {
            tenant,
            conversation,
            id,
            question,
            text: RwLock::new(String::new()),
            progress,
            cancel: CancellationToken::new(),
            abort: CancellationToken::new(),
        });
        self.lock().insert(id, live.clone());
        live
    }

    pub fn get(&self, tenant: TenantId, id: MessageId) -> Option<Arc<LiveReply>> {
        self.lock().get(&id).filter(|r| r.tenant == tenant).cloned()
    }

    /// The reply with this id, whatever its tenant (for notices, which carry ids only).
    pub(crate) fn get_any(&self, id: MessageId) -> Option<Arc<LiveReply>> {
        self.lock().get(&id).cloned()
    }

    pub(crate) fn remove(&self, id: MessageId) {
        self.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops every reply still running (end of the shutdown grace period).
    pub(crate) fn abort_all(&self) {
        for r in self.lock().values() {
            r.abort.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, Arc<LiveReply>>> {
        self.replies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `text[from..end]` with `end` at most `to` and `from + max`, on a character boundary.
pub fn bounded(text: &str, from: usize, to: usize, max: usize) -> Option<(String, usize)> {
    if !text.is_char_boundary(from) {
        return None;
    }
    let mut end = to.min(text.len()).min(from.saturating_add(max.max(4)));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some((text[from..end].to_owned(), end))
}

#[cfg(test)]
mod tests {
    use super::bounded;

    #[test]
    fn pieces_are_bounded_and_cut_on_characters() {
        let text = "ab日本語cd";
        assert_eq!(bounded(text, 0, text.len(), 4), Some(("ab".to_owned(), 2)));
        assert_eq!(bounded(text, 2, text.len(), 4), Some(("日".to_owned(), 5)));
        assert_eq!(bounded(text, 5, 8, 100), Some(("本".to_owned(), 8)));
        assert_eq!(bounded(text, 3, text.len(), 4), None);
    }
}
