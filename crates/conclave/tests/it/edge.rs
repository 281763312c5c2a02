//! The request path at the edge: slow clients cut, W3C trace context continued to the provider,
//! and body limits by route class.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::app::{s, start_mock, Backend, Fetch, TestApp};

/// Reads until the server closes the connection (or 20 s pass, which fails the test).
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Result<String> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buf)).await;
    read.context("the server kept the connection open")?.ok();
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_headers_is_cut() -> Result<()> {
    let app = TestApp::builder(Backend::Sqlite).env("CONCLAVE_HEADER_READ_TIMEOUT_SECONDS", "1").start().await?;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: conclave\r\n").await?;
    // ...and never the blank line that ends the headers.
    let answer = read_to_close(&mut slow).await?;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "no answer to unfinished headers: {answer}");

    // Saying nothing at all is cut the same way.
    let mut silent = tokio::net::TcpStream::connect(app.addr).await?;
    read_to_close(&mut silent).await?;

    // A complete request on a new connection is served as usual.
    app.get("/healthz").fetch().await?.expect(200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_body_is_cut_with_a_problem() -> Result<()> {
    let app = TestApp::builder(Backend::Sqlite).env("CONCLAVE_BODY_IDLE_TIMEOUT_SECONDS", "1").start().await?;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await?;
    slow.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: conclave\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"email\":",
    )
    .await?;
    let answer = read_to_close(&mut slow).await?;
    assert!(answer.starts_with("HTTP/1.1 400"), "a stalled body is answered 400: {answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("sent nothing for 1 s"), "{answer}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_trace_continues_to_the_provider() -> Result<()> {
    let mock = start_mock().await?;
    let app = TestApp::builder(Backend::Sqlite).provider(&mock).start().await?;
    let admin = app.admin().await?;
    let agent = app.create_agent(&admin.token, json!({"name": "Echo", "model": "mock-model"})).await?;
    let conversation = app.create_conversation(&admin.token, &agent["id"], None).await?;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace}-00f067aa0ba902b7-01");
    let response = app
        .post(&format!("/api/v1/conversations/{}/messages", s(&conversation["id"])))
        .bearer_auth(&admin.token)
        .header("traceparent", &incoming)
        .json(&json!({"content": "trace me"}))
        .fetch()
        .await?
        .expect(201);
    let returned = response.header("traceparent").context("no traceparent on the response")?;
    let parts: Vec<&str> = returned.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"), "same trace: {returned}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "this server's own span: {returned}");

    let sent = mock.request_headers();
    let to_provider = sent
        .iter()
        .flatten()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .context("no traceparent sent to the provider")?;
    assert_eq!(to_provider, returned, "the provider call is a child of this server's span");

    // Invalid or absent: a new trace each time.
    for bad in [None, Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), Some("garbage")] {
        let mut req = app.get("/healthz");
        if let Some(bad) = bad {
            req = req.header("traceparent", bad);
        }
        let fresh = req.fetch().await?.expect(200).header("traceparent").context("no traceparent")?;
        assert!(fresh.len() == 55 && fresh.starts_with("00-") && !fresh.contains(trace), "{fresh}");
        assert!(!fresh.contains("00000000000000000000000000000000"), "{fresh}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_a_request_name_its_trace() -> Result<()> {
    // Every request is refused here, and each refusal is logged.
    let app = TestApp::builder(Backend::Sqlite).env("CONCLAVE_IP_ALLOWLIST", "192.0.2.0/24").start().await?;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let refused = app
        .get("/api/v1/me")
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-00"))
        .fetch()
        .await?
        .expect(403);
    let request_id = refused.header("x-request-id").context("no x-request-id")?;
    let returned = refused.header("traceparent").context("no traceparent")?;
    assert!(returned.starts_with(&format!("00-{trace}-")) && returned.ends_with("-00"), "{returned}");
    // The server's output is read by another task: wait for the line to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = app.logs().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.iter().any(|l| l.to_string().contains(&request_id)) || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let of_request: Vec<&Value> = lines.iter().filter(|l| l.to_string().contains(&request_id)).collect();
    assert!(!of_request.is_empty(), "the refusal is logged");
    assert!(of_request.iter().all(|l| l.to_string().contains(trace)), "{of_request:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_route_class_limit_are_refused() -> Result<()> {
    let app = TestApp::builder(Backend::Sqlite).env("CONCLAVE_MAX_JSON_BYTES", "2048").start().await?;
    let admin = app.admin().await?;
    let big = json!({"name": "x".repeat(4096), "model": "conclave-demo"});
    for path in ["/api/v1/agents", "/api/v1/auth/login", "/api/v1/conversations/x/messages"] {
        let refused = app.post(path).bearer_auth(&admin.token).json(&big).fetch().await?.expect(413);
        assert_eq!(refused.header("content-type").as_deref(), Some("application/problem+json"), "{path}");
        assert!(refused.body["detail"].as_str().unwrap_or_default().contains("2048 bytes"), "{}", refused.text);
    }
    // The gateway answers in OpenAI's shape.
    let refused = app.post("/v1/chat/completions").bearer_auth(&admin.token).json(&big).fetch().await?.expect(413);
    assert_eq!(refused.body["error"]["code"], "request_too_large", "{}", refused.text);
    Ok(())
}

/// Every answer has an access-log line; refusals are `warn` lines with an `event` and the
/// client's address, and nothing the client sent (email, password, token, query) is in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_with_the_address_and_nothing_secret() -> Result<()> {
    let app = TestApp::builder(Backend::Sqlite).start().await?;
    let unknown = json!({"email": "nobody-here@example.com", "password": "Wrong horse battery staple 9"});
    let refused = app.post("/api/v1/auth/login").json(&unknown).fetch().await?.problem(401);
    let request_id = refused.header("x-request-id").context("no x-request-id")?;
    app.get("/api/v1/me").bearer_auth("ck_not-a-real-key_secretpart").fetch().await?.problem(401);
    app.get("/api/v1/conversations?q=privileged-search-text").fetch().await?.problem(401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = app.logs().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let refusals = lines.iter().filter(|l| l.to_string().contains("auth.refused")).count();
        if refusals >= 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let login = lines
        .iter()
        .find(|l| l.to_string().contains(&request_id) && l.to_string().contains("auth.refused"))
        .context("no access-log line for the refused sign-in")?;
    let text = login.to_string();
    assert!(text.contains("\"status\":401") && text.contains("127.0.0.1"), "{text}");
    assert_eq!(login["level"], "warn", "{text}");
    assert_eq!(login["path"], "/api/v1/auth/login", "span fields are plain JSON keys: {text}");
    let all = app.logs().join("\n");
    for secret in ["nobody-here@example.com", "Wrong horse", "secretpart", "privileged-search-text"] {
        assert!(!all.contains(secret), "'{secret}' reached the log");
    }
    Ok(())
}
