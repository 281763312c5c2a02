//! The accept loop: plain HTTP/1.1, or TLS with HTTP/2 or HTTP/1.1 as ALPN chose. Each
//! connection's requests carry the peer address (`ConnectInfo`) and, over mutual TLS, the
//! verified client certificate. A client gets `header_read_timeout` for its TLS handshake and
//! for each request's headers (slow-loris clients are cut). On shutdown the loop stops
//! accepting and every connection finishes its in-flight requests, within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use conclave_server::middleware::client_cert::ClientCertificate;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::tls::Tls;

pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<Tls>,
    pub header_read_timeout: Duration,
}

impl Listener {
    /// Serves `app` until `stop` resolves, then lets connections finish for up to `grace`.
    pub async fn serve(self, app: Router, stop: impl Future<Output = ()>, grace: Duration) {
        let graceful = GracefulShutdown::new();
        let tls = self.tls.map(|t| Arc::new(t.acceptor));
        let header_read_timeout = self.header_read_timeout;
        let accept = async {
            loop {
                let (stream, peer) = match self.tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Each SSE event is a small write that must leave at once: no Nagle delay.
                let _ = stream.set_nodelay(true);
                let watcher = graceful.watcher();
                let app = app.clone();
                let tls = tls.clone();
                // A task's future is as large as its largest state: each kind of connection is
                // spawned on its own, so a plain HTTP/1.1 connection (thousands of open streams)
                // does not carry room for a TLS session or an HTTP/2 connection.
                let Some(tls) = tls else {
                    tokio::spawn(http1(TokioIo::new(stream), peer, None, app, header_read_timeout, watcher));
                    continue;
                };
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(header_read_timeout, tls.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let (_, session) = stream.get_ref();
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let cert =
                        session.peer_certificates().and_then(|c| c.first()).map(|c| ClientCertificate::from_der(c));
                    let io = TokioIo::new(stream);
                    if h2 {
                        Box::pin(http2(io, peer, cert, app, watcher)).await;
                    } else {
                        Box::pin(http1(io, peer, cert, app, header_read_timeout, watcher)).await;
                    }
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = stop => {}
        }
        drop(self.tcp);
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!("grace period over: closing the remaining connections");
        }
    }
}

/// The service of one connection: the app, with the peer address and, over mutual TLS, the
/// client certificate in each request.
fn service(
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
    app: Router,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = tower::util::Oneshot<Router, axum::extract::Request>,
> {
    hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        app.clone().oneshot(req)
    })
}

/// Serves one HTTP/1.1 connection's requests until it closes or the server shuts down.
async fn http1<IO>(
    io: TokioIo<IO>,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
    app: Router,
    header_read_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).max_buf_size(H1_MAX_BUF);
    if let Err(e) = watcher.watch(builder.serve_connection(io, service(peer, cert, app))).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The largest read of an HTTP/1.1 connection (hyper's default is 400 KiB): a large upload
/// arrives in fewer, larger reads, which took about 5% off its CPU time (bench/RESULTS.md
/// "Documents"). The buffer grows only while reads fill it, so idle and small requests keep
/// small buffers. hyper also refuses (431) a request head that does not fit in it.
const H1_MAX_BUF: usize = 1 << 20;
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
const H2_MAX_STREAMS: u32 = 128;
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Serves one HTTP/2 connection's requests until it closes or the server shuts down.
async fn http2<IO>(
    io: TokioIo<IO>,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // HTTP/2 has no header-read timeout of its own: a peer that stops answering is found by
    // pings (also while streams are open; a PING does not touch them) and the connection closed;
    // a peer may not open more streams at once, nor send larger header blocks, than a browser.
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_PING_EVERY))
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST);
    if let Err(e) = watcher.watch(builder.serve_connection(io, service(peer, cert, app))).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
