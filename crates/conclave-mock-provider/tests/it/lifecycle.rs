//! Starting and stopping: the address, closing the listener, cutting open streams.

use std::time::{Duration, Instant};

use conclave_mock_provider::{MockProvider, Script};
use reqwest::StatusCode;
use tokio::net::TcpStream;

use crate::support::{chat_request, post_chat, provider, read_until_error};

#[tokio::test]
async fn start_binds_a_free_local_port() {
    let provider = MockProvider::start().await.expect("starts");
    assert!(provider.addr().ip().is_loopback());
    assert_ne!(provider.addr().port(), 0);
    assert_eq!(provider.base_url(), format!("http://127.0.0.1:{}/v1", provider.addr().port()));
    let response = post_chat(&provider, &chat_request(false)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let provider = provider(Script::default()).await;
    let addr = provider.addr();
    post_chat(&provider, &chat_request(false)).await;
    provider.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn drop_closes_the_listener() {
    let provider = provider(Script::default()).await;
    let addr = provider.addr();
    drop(provider);
    let deadline = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening on {addr}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stop_cuts_an_open_stream() {
    let script = Script::text("abcdefgh").with_chunks(8).with_chunk_delay(Duration::from_millis(50));
    let provider = provider(script).await;
    let response = post_chat(&provider, &chat_request(true)).await;
    let reading = tokio::spawn(read_until_error(response));
    tokio::time::sleep(Duration::from_millis(80)).await;
    let started = Instant::now();
    provider.stop().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let (body, failed) = reading.await.expect("joined");
    assert!(failed, "{body}");
    assert!(!body.contains("[DONE]"));
}
