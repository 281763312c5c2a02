//! State shared by the handlers and the `MockProvider` handle: the current script, the log of
//! received requests and the stop signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::script::Script;

/// Whether the bodies and headers of chat-completion requests are kept for inspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recording {
    /// Tests read them back.
    On,
    /// Benchmarks send far more requests than anyone reads; keeping them would grow without
    /// bound. Requests are still counted.
    Off,
}

pub(crate) struct Shared {
    // The script sits behind an `Arc` so each request takes a cheap snapshot and keeps
    // answering from it even if a test swaps the script mid-stream.
    script: RwLock<Arc<Script>>,
    log: Mutex<RequestLog>,
    next_id: AtomicU64,
    stop: CancellationToken,
}

/// Bodies and headers in one lock so that entry `i` of each belongs to the same request.
struct RequestLog {
    recording: Recording,
    count: usize,
    bodies: Vec<Value>,
    headers: Vec<Vec<(String, String)>>,
}

impl Shared {
    pub(crate) fn new(script: Script, recording: Recording) -> Shared {
        Shared {
            script: RwLock::new(Arc::new(script)),
            log: Mutex::new(RequestLog { recording, count: 0, bodies: Vec::new(), headers: Vec::new() }),
            next_id: AtomicU64::new(1),
            stop: CancellationToken::new(),
        }
    }

    // Poisoning cannot leave these values half-written (every write is a single assignment or
    // push), so a panic elsewhere is no reason to stop serving.
    pub(crate) fn script(&self) -> Arc<Script> {
        Arc::clone(&self.script.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_script(&self, script: Script) {
        *self.script.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(script);
    }

    /// Notes a chat-completion request as it arrives, before any check, so tests can see what
    /// a client sent even when it was refused. A body that is not JSON is kept as a JSON string.
    pub(crate) fn record(&self, headers: &HeaderMap, body: &[u8], parsed: Option<&Value>) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.count += 1;
        if log.recording == Recording::Off {
            return;
        }
        let body = match parsed {
            Some(value) => value.clone(),
            None => Value::String(String::from_utf8_lossy(body).into_owned()),
        };
        // `HeaderName`s are lower-case already, which is what tests compare against.
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        log.bodies.push(body);
        log.headers.push(headers);
    }

    pub(crate) fn requests(&self) -> Vec<Value> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.bodies.clone()
    }

    pub(crate) fn request_headers(&self) -> Vec<Vec<(String, String)>> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.headers.clone()
    }

    pub(crate) fn request_count(&self) -> usize {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).count
    }

    /// A completion id unique within this provider.
    pub(crate) fn next_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("chatcmpl-mock{n:012}")
    }

    pub(crate) fn stop_signal(&self) -> &CancellationToken {
        &self.stop
    }

    /// Waits `delay`, cut short with the stopping error if the provider is stopped meanwhile,
    /// so that `stop()` never waits on a scripted delay.
    pub(crate) async fn pause(&self, delay: Duration) -> Result<(), ApiError> {
        if delay.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.stop.cancelled() => Err(ApiError::stopping()),
        }
    }
}
