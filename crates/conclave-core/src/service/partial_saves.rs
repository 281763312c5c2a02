//! Partial saves of the replies this process is generating, written by one task in batches:
//! each reply still saves its text (and renews its lease) every [`SAVE_INTERVAL`], but thousands
//! of replies share one statement instead of each taking a database connection, the write lock
//! and a commit of its own (which made posts queue behind them, and their queued copies of the
//! text weighed on every open stream). One save per reply at most is queued (its task waits for
//! the answer), so the queue is never longer than the replies running.
//!
//! [`SAVE_INTERVAL`]: crate::service::replies::SAVE_INTERVAL

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::app::Conclave;
use crate::store::{PartialSave, PartialSaved, Store, StoreResult};

/// Most replies saved in one statement: enough to share a commit among many replies, few enough
/// that a post waiting for the write lock is not held up for long.
const MAX_BATCH: usize = 256;

#[derive(Default)]
pub(crate) struct PartialSaveQueue {
    sender: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
}

struct Queued {
    save: PartialSave,
    saved: oneshot::Sender<StoreResult<PartialSaved>>,
}

impl Conclave {
    /// Saves a reply's text so far with the others waiting; returns once it is written.
    pub(crate) async fn queue_partial_save(&self, save: PartialSave) -> StoreResult<PartialSaved> {
        let (saved, answer) = oneshot::channel();
        let refused = {
            let mut sender = self.partial_saves.sender.lock().unwrap_or_else(|e| e.into_inner());
            let tx = sender.get_or_insert_with(|| start_writer(Arc::clone(&self.store)));
            tx.send(Queued { save, saved }).err().map(|e| e.0)
        };
        match refused {
            // The writer is gone (shutting down): write it here.
            Some(q) => self.store.save_partial(q.save.tenant, q.save.id, &q.save.content, q.save.lease).await,
            None => match answer.await {
                Ok(saved) => saved,
                Err(_) => Err(crate::StoreError::Other("the partial-save writer stopped".into())),
            },
        }
    }
}

/// The writer: whatever has gathered, in one statement, until every sender is dropped.
fn start_writer(store: Arc<dyn Store>) -> mpsc::UnboundedSender<Queued> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let (saves, answers): (Vec<PartialSave>, Vec<_>) = batch.drain(..).map(|q| (q.save, q.saved)).unzip();
            match store.save_partials(&saves).await {
                Ok(saved) if saved.len() == saves.len() => {
                    for (answer, saved) in answers.into_iter().zip(saved) {
                        let _ = answer.send(Ok(saved));
                    }
                }
                outcome => {
                    // One at a time, so that one reply's failure is not every reply's.
                    if let Err(e) = outcome {
                        tracing::warn!(error = %e, replies = saves.len(), "a batch of partial saves failed; saving them one by one");
                    }
                    for (answer, s) in answers.into_iter().zip(&saves) {
                        let _ = answer.send(store.save_partial(s.tenant, s.id, &s.content, s.lease).await);
                    }
                }
            }
        }
    });
    tx
}
