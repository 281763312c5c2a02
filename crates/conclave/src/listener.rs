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
                tokio::spawn(async move {
                    let Some(tls) = tls else {
                        return connection(stream, peer, None, false, app, header_read_timeout, watcher).await;
                    };
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
                    connection(stream, peer, cert, h2, app, header_read_timeout, watcher).await;
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

/// Serves one connection's requests until it closes or the server shuts down.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
    h2: bool,
    app: Router,
    header_read_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        app.clone().oneshot(req)
    });
    let io = TokioIo::new(io);
    let result = if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        watcher.watch(builder.serve_connection(io, service)).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
        watcher.watch(builder.serve_connection(io, service)).await
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
