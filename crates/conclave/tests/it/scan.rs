//! Malware scanning of uploads through clamd's `INSTREAM` protocol (`CONCLAVE_CLAMD_ADDRESS`),
//! against a stand-in clamd in this file that finds the EICAR test string (ClamAV's signature
//! database cannot be fetched here). A clean file is stored; the EICAR file is refused with 422,
//! audited, and leaves no document and no object; with clamd gone, uploads are refused with
//! 503 and nothing is stored (scanning fails closed). Files cross several 64 KiB chunks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{s, Backend, Fetch, TestApp};

/// The standard antivirus test file.
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A clamd stand-in: answers `zPING`, and `zINSTREAM` with `FOUND` when the stream holds EICAR.
/// Counts the bytes it was sent.
async fn standin_clamd() -> Result<(u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut command = Vec::new();
                loop {
                    let Ok(b) = sock.read_u8().await else { return };
                    if b == 0 {
                        break;
                    }
                    command.push(b);
                }
                let reply: Vec<u8> = match command.as_slice() {
                    b"zPING" => b"PONG\0".to_vec(),
                    b"zINSTREAM" => {
                        let mut data = Vec::new();
                        loop {
                            let Ok(len) = sock.read_u32().await else { return };
                            if len == 0 {
                                break;
                            }
                            let mut chunk = vec![0u8; len as usize];
                            if sock.read_exact(&mut chunk).await.is_err() {
                                return;
                            }
                            assert!(len as usize <= 64 * 1024, "chunks of at most 64 KiB");
                            data.extend_from_slice(&chunk);
                        }
                        counter.fetch_add(data.len(), Ordering::SeqCst);
                        let found = data.windows(EICAR.len()).any(|w| w == EICAR.as_bytes());
                        if found {
                            b"stream: Eicar-Test-Signature FOUND\0".to_vec()
                        } else {
                            b"stream: OK\0".to_vec()
                        }
                    }
                    _ => b"UNKNOWN COMMAND\0".to_vec(),
                };
                let _ = sock.write_all(&reply).await;
            });
        }
    });
    Ok((port, received, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_scanned_and_malware_or_a_silent_scanner_stores_nothing() -> Result<()> {
    let (port, received, clamd) = standin_clamd().await?;
    let app =
        TestApp::builder(Backend::Sqlite).env("CONCLAVE_CLAMD_ADDRESS", format!("127.0.0.1:{port}")).start().await?;
    let admin = app.admin().await?;
    let lib = app.post("/api/v1/libraries").bearer_auth(&admin.token).json(&json!({"name": "Matters"})).fetch().await?;
    let lib = s(&lib.expect(201).body["id"]);
    let objects = std::path::PathBuf::from(app.site_var("CONCLAVE_DATA_DIR").expect("a data folder")).join("objects");

    // Clean, over several chunks: stored, and every byte went through the scanner.
    let clean = "Privileged and confidential.\n".repeat(10_000);
    let stored = app.upload(&admin.token, &lib, "memo.txt", "text/plain", clean.as_bytes()).await?.expect(201);
    assert_eq!(received.load(Ordering::SeqCst), clean.len(), "the whole plaintext was scanned");
    let before = crate::encryption::walk(&objects).len();
    assert!(before >= 1);

    // EICAR in the middle of a large text: refused, nothing kept, audited.
    let infected = format!("{}{EICAR}\n{}", "a".repeat(100_000), "b".repeat(100_000));
    let refused = app.upload(&admin.token, &lib, "invoice.txt", "text/plain", infected.as_bytes()).await?.problem(422);
    assert!(refused.text.contains("Eicar-Test-Signature"), "{}", refused.text);
    let docs =
        app.get(&format!("/api/v1/libraries/{lib}/documents")).bearer_auth(&admin.token).fetch().await?.expect(200);
    let names: Vec<&str> = docs.body["items"].as_array().unwrap().iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, vec!["memo.txt"], "{}", docs.text);
    assert_eq!(crate::encryption::walk(&objects).len(), before, "the refused file's object was removed");
    let audit =
        app.get("/api/v1/audit/events?action=document.upload").bearer_auth(&admin.token).fetch().await?.expect(200);
    let events: &Vec<Value> = audit.body["items"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["outcome"] == "failure" && e["detail"]["found"] == "Eicar-Test-Signature"),
        "{}",
        audit.text
    );

    // clamd goes away: uploads are refused, nothing is stored.
    clamd.abort();
    let _ = clamd.await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let refused = app.upload(&admin.token, &lib, "later.txt", "text/plain", b"a short note").await?.problem(503);
    assert!(refused.text.contains("malware scanner"), "{}", refused.text);
    assert_eq!(crate::encryption::walk(&objects).len(), before);
    // What was stored before stays readable.
    let id = s(&stored.body["id"]);
    let content =
        app.get(&format!("/api/v1/documents/{id}/content")).bearer_auth(&admin.token).fetch().await?.expect(200);
    assert_eq!(content.text.len(), clean.len());
    Ok(())
}
