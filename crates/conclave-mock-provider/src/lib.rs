//! A local stand-in for an OpenAI-compatible model provider, for integration tests and
//! benchmarks: plain and streamed chat completions (OpenAI and Azure OpenAI paths) with a
//! scripted reply, scripted delays, usage and failures, and a log of what clients sent.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use conclave_mock_provider::{MockProvider, Script};
//!
//! let provider = MockProvider::start().await?;
//! provider.set_script(Script::text("Hi!").with_chunks(2));
//! // point the client under test at provider.base_url() ...
//! assert_eq!(provider.request_count(), 0);
//! provider.stop().await;
//! # Ok(())
//! # }
//! ```

mod completion;
mod error;
mod routes;
mod script;
mod state;
mod stream;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

pub use script::{Failure, Reply, Script, Usage};

use state::{Recording, Shared};

/// Benchmarks open thousands of connections at once; the usual backlog of 1024 would turn a
/// burst of connects into SYN retries measured as provider latency. The kernel caps this at
/// `net.core.somaxconn`.
const BACKLOG: u32 = 8192;

/// How long `stop()` waits for open connections to close after telling them to. Streams and
/// hanging requests end as soon as they are told; this only bounds a client that stopped
/// reading.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A running mock provider. Dropping it stops it too.
pub struct MockProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
}

impl MockProvider {
    /// Binds 127.0.0.1:0 with Script::default().
    pub async fn start() -> io::Result<MockProvider> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        MockProvider::start_with(addr, Script::default()).await
    }

    pub async fn start_with(addr: SocketAddr, script: Script) -> io::Result<MockProvider> {
        MockProvider::launch(addr, script, Recording::On)
    }

    /// Like [`MockProvider::start_with`], but keeps no request log: `requests()` and
    /// `request_headers()` stay empty while `request_count()` still counts. For long benchmark
    /// runs, where the log would grow without bound.
    pub async fn start_unrecorded(addr: SocketAddr, script: Script) -> io::Result<MockProvider> {
        MockProvider::launch(addr, script, Recording::Off)
    }

    fn launch(addr: SocketAddr, script: Script, recording: Recording) -> io::Result<MockProvider> {
        let listener = bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(script, recording));
        let app = routes::router(Arc::clone(&shared));
        let stopped = shared.stop_signal().clone().cancelled_owned();
        let listener = listener.tap_io(|tcp| {
            // Events are small and spaced out; Nagle's algorithm would hold each one back until
            // the previous is acknowledged. A socket that refuses still works, only slower.
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            // Serving with axum cannot fail once bound: accept errors are retried inside.
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
        });
        Ok(MockProvider { shared, addr, server: Some(server) })
    }

    /// "http://127.0.0.1:PORT/v1"
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies to requests that arrive afterwards.
    pub fn set_script(&self, script: Script) {
        self.shared.set_script(script);
    }

    /// JSON bodies of the chat-completion requests received so far, in order.
    ///
    /// Every request to a chat-completion path is kept, including those refused for a missing
    /// key or a bad body; a body that is not JSON is kept as a JSON string of its text.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests()
    }

    /// Headers of those requests, lower-cased names (so tests can check Authorization / api-key).
    pub fn request_headers(&self) -> Vec<Vec<(String, String)>> {
        self.shared.request_headers()
    }

    pub fn request_count(&self) -> usize {
        self.shared.request_count()
    }

    /// Stops accepting and closes the listener; also done on Drop.
    ///
    /// Open streams are cut (the client sees the connection drop), hanging and delayed requests
    /// get a 503, and this returns once their connections are closed.
    pub async fn stop(mut self) {
        self.shared.stop_signal().cancel();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(STOP_GRACE, server).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        // The server task sees this, closes the listener and winds down on its own.
        self.shared.stop_signal().cancel();
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Lets a benchmark restart on the port it just used while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
