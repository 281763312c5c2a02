//! The `conclave-mock-provider` binary as benchmarks run it: announce, serve, stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{chunks, client, contents, events};

#[tokio::test]
async fn serves_until_sigterm_then_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave-mock-provider"))
        .args(["--listen", "127.0.0.1:0", "--chunks", "4", "--chunk-delay-ms", "1"])
        .args(["--reply-bytes", "100", "--api-key", "bench-key"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("announces in time")
        .expect("reads stdout")
        .expect("one line");
    assert!(line.starts_with(r#"{"msg":"listening","addr":""#), "{line}");
    let announced: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(announced["msg"], "listening");
    let addr = announced["addr"].as_str().expect("an address");
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");

    let response = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth("bench-key")
        .json(&json!({
            "model": "bench",
            "messages": [{ "role": "user", "content": "go" }],
            "stream": true,
        }))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let events = events(&response.text().await.expect("read"));
    let parts = contents(&chunks(&events));
    assert_eq!(parts.len(), 4);
    assert_eq!(parts.concat().len(), 100);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
    assert!(killed.success());
    let status =
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits in time").expect("waits");
    assert!(status.success(), "{status:?}");
    assert_eq!(lines.next_line().await.expect("reads stdout"), None);
}
