//! Back-pressure: a client that opens a streamed reply of several MB and never reads it leaves
//! the reply to be generated and stored in full while it stalls, and the server's memory stays
//! within a few tens of MB; clients that attach to it and then stop reading do not each cost a
//! copy of it; a reader that keeps up gets all of it meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::app::{rss_kib, s, Backend, EventStream, Session, TestApp};
use crate::streaming::{check_events, slow};

/// The reply: 2 MiB in 700 chunks of about 3 KiB, 1 ms apart (about 2 s on a debug build).
const REPLY_BYTES: usize = 2 * 1024 * 1024;
const CHUNKS: usize = 700;
/// How far the server's peak memory may rise over its idle size for one such reply whose post
/// is never read (and one reader that keeps up): "a few tens of MB". A debug build measures 30
/// to 60 MiB here (the text, the copies sealed and saved every 0.5 s, the `done` event, what the
/// allocator keeps), so this guards against gross growth, such as memory quadratic in the
/// reply, rather than against one copy too many.
const GROWTH_LIMIT_KIB: u64 = 64 * 1024;
/// Clients that attach half way through and then never read.
const STALLED: usize = 20;
/// What those stalled clients together may add to the peak: 1.5 MiB each, room for the HTTP
/// write buffer of each connection, the connection itself and the run-to-run noise (measured:
/// about 1 MiB each); a copy of the whole 2 MiB reply each would exceed it. (On loopback the kernel takes up to 4 MiB of unread data per connection, so a 2 MiB
/// reply reaches its `done` event even for a client that reads nothing: the cost of that event,
/// which carries the whole text, is part of what is measured.)
const STALLED_LIMIT_KIB: u64 = 30 * 1024;

/// About `bytes` of distinct words, so that a lost or repeated piece shows.
fn big_text(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 16);
    let mut i = 0u64;
    while text.len() < bytes {
        text.push_str(&format!("w{i} "));
        i += 1;
    }
    text
}

/// The highest resident size of a process while it is sampled (every 20 ms).
struct PeakRss {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn start(pid: u32) -> Result<Self> {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)?));
        let running = Arc::new(AtomicBool::new(true));
        let task = {
            let (peak, running) = (peak.clone(), running.clone());
            tokio::spawn(async move {
                while running.load(Ordering::Relaxed) {
                    if let Ok(kib) = rss_kib(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Ok(Self { peak, running, task })
    }

    async fn stop(self) -> Result<u64> {
        self.running.store(false, Ordering::Relaxed);
        self.task.await?;
        Ok(self.peak.load(Ordering::Relaxed))
    }
}

/// A server wired to a mock that streams `text`, warmed up, with the admin, an agent and the
/// server's idle resident size.
async fn warmed_up(
    backend: Backend,
    text: &str,
) -> Result<(TestApp, conclave_mock_provider::MockProvider, Session, Value, u64)> {
    let mock = crate::app::start_mock().await?;
    let app = TestApp::builder(backend).provider(&mock).start().await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({})).await?;
    let conv = app.create_conversation(&admin.token, &agent["id"], None).await?;
    mock.set_script(slow("warm up", 2, Duration::from_millis(1)));
    app.post_streamed(&admin.token, &conv["id"], "warm up").await?.until_end(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = app.rss_kib()?;
    mock.set_script(slow(text, CHUNKS, Duration::from_millis(1)));
    Ok((app, mock, admin, agent["id"].clone(), idle))
}

/// Posts a streamed message in a new conversation and reads only its opening event (for the
/// reply's id): the post's client then never reads again.
async fn post_and_stall(app: &TestApp, who: &Session, agent: &Value) -> Result<(EventStream, Value, Value)> {
    let conv = app.create_conversation(&who.token, agent, None).await?["id"].clone();
    let mut post = app.post_streamed(&who.token, &conv, "a long one please").await?;
    let reply_id = post.expect_event().await?.json()["reply_id"].clone();
    Ok((post, conv, reply_id))
}

/// Reads a reply's events to the end, after `first` already read, and checks it is `text`.
async fn read_to_end(
    reader: &mut EventStream,
    first: Vec<crate::app::SseEvent>,
    reply_id: &Value,
    text: &str,
) -> Result<()> {
    let mut events = first;
    events.extend(reader.until_end(Duration::from_secs(30)).await?);
    let got = check_events(&events, Some(reply_id), None)?;
    assert_eq!(got.end.event, "done", "{}", got.end);
    assert!(got.text == text, "the reader got {} bytes, not the {} of the reply", got.text.len(), text.len());
    Ok(())
}

/// Checks that the stored reply is complete and whole (while the stalled clients still hold
/// their connections).
async fn assert_stored(app: &TestApp, who: &Session, conv: &Value, reply_id: &Value, text: &str) -> Result<()> {
    let stored = app.message(&who.token, conv, reply_id).await?;
    assert_eq!(stored["status"], "complete");
    assert!(stored["content"] == json!(text), "the stored reply is not the whole text");
    Ok(())
}

async fn a_long_reply_is_stored_and_clients_that_never_read_cost_no_copy_of_it(backend: Backend) -> Result<()> {
    let text = big_text(REPLY_BYTES);
    let (app, _mock, admin, agent, idle) = warmed_up(backend, &text).await?;

    // The same reply twice, its post never read: followed by one reader, then by one reader
    // and, from half way, twenty clients that attach and never read.
    let mut peaks = Vec::new();
    for stalled in [0, STALLED] {
        let sampler = PeakRss::start(app.pid())?;
        let (post, conv, reply_id) = post_and_stall(&app, &admin, &agent).await?;
        let mut reader = app.reply_events(&admin.token, &conv, &reply_id, None).await?;
        let mut first = Vec::new();
        let mut read = 0;
        while read < text.len() / 2 {
            let e = reader.expect_event().await?;
            anyhow::ensure!(!e.is_end(), "the reply ended before half way: {e}");
            read = e.offset().unwrap_or(0);
            first.push(e);
        }
        let path = format!("/api/v1/conversations/{}/messages/{}/events", s(&conv), s(&reply_id));
        let attaching: Vec<_> =
            (0..stalled).map(|_| tokio::spawn(EventStream::open(app.get(&path).bearer_auth(&admin.token)))).collect();
        let mut idle_clients = vec![post];
        for a in attaching {
            idle_clients.push(a.await?.context("attaching a client that will not read")?);
        }
        read_to_end(&mut reader, first, &reply_id, &text).await?;
        assert_stored(&app, &admin, &conv, &reply_id, &text).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        peaks.push(sampler.stop().await?);
        drop(idle_clients);
    }
    let (alone, crowded) = (peaks[0], peaks[1]);
    eprintln!(
        "backpressure: idle {idle} KiB; peak {alone} KiB with the post unread, {crowded} KiB with {STALLED} more \
         clients that stopped reading"
    );
    let mut failures = Vec::new();
    let growth = alone.saturating_sub(idle);
    if growth >= GROWTH_LIMIT_KIB {
        failures.push(format!(
            "one {} KiB reply whose post is never read raised the server's memory by {growth} KiB (idle {idle}, \
             peak {alone}); at most {GROWTH_LIMIT_KIB} KiB expected",
            REPLY_BYTES / 1024
        ));
    }
    if crowded >= alone + STALLED_LIMIT_KIB {
        failures.push(format!(
            "{STALLED} clients that attached half way through a {} KiB reply and stopped reading raised the \
             peak from {alone} to {crowded} KiB, about {} KiB each (at most {STALLED_LIMIT_KIB} KiB in all expected)",
            REPLY_BYTES / 1024,
            crowded.saturating_sub(alone) / STALLED as u64
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

backend_tests!(a_long_reply_is_stored_and_clients_that_never_read_cost_no_copy_of_it);
