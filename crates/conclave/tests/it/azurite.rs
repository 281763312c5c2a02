//! Documents on Azure Blob Storage, through Azurite (npm `azurite`, installed by `make test` into
//! tests/azurite): upload, versions, download, Range, deletion, and what the emulator's disk holds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::app::{s, Backend, TempDir, TestApp};

fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/azurite")
}

/// Azurite's blob service on a free port, stopped when dropped.
struct Azurite {
    child: tokio::process::Child,
    port: u16,
    dir: TempDir,
}

impl Azurite {
    async fn start() -> Result<Self> {
        let bin = tools().join("node_modules/.bin/azurite-blob");
        if !bin.exists() {
            bail!("Azurite is not installed in {}: run `make test` (or `make azurite`)", tools().display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = TempDir::new()?;
        let child = tokio::process::Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--silent", "--skipApiVersionCheck"])
            .arg("--location")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting Azurite")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                bail!("Azurite did not listen on port {port} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { child, port, dir })
    }

    async fn blobs(&self, command: &str, container: &str) -> Result<Vec<String>> {
        let out = tokio::process::Command::new("node")
            .arg(tools().join("blobs.mjs"))
            .args([command, &self.port.to_string(), container])
            .output()
            .await
            .context("running node tests/azurite/blobs.mjs")?;
        if !out.status.success() {
            bail!("blobs.mjs {command}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn upload(app: &TestApp, token: &str, library: &str, name: &str, content: &[u8]) -> Result<Value> {
    Ok(app.upload(token, library, name, "text/plain", content).await?.expect(201).body)
}

#[tokio::test]
async fn documents_on_azure_blob_through_azurite() -> Result<()> {
    let azurite = Azurite::start().await?;
    azurite.blobs("create", "documents").await?;
    let app = TestApp::builder(Backend::Sqlite)
        .env("CONCLAVE_OBJECT_STORE_URL", "az://documents")
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env("AZURITE_BLOB_STORAGE_URL", format!("http://127.0.0.1:{}", azurite.port))
        .start()
        .await?;
    let admin = app.admin().await?;
    let lib: Value = app
        .post("/api/v1/libraries")
        .bearer_auth(&admin.token)
        .json(&serde_json::json!({"name": "Blob"}))
        .send()
        .await?
        .json()
        .await?;
    let lib = s(&lib["id"]);

    let marker = "AZURITE-MARKER-9e41";
    let mut v1 = Vec::new();
    for i in 0..20_000 {
        v1.extend_from_slice(format!("{marker} line {i}\n").as_bytes());
    }
    let doc = upload(&app, &admin.token, &lib, "Deposition.txt", &v1).await?;
    let id = s(&doc["id"]);
    assert_eq!(doc["size"], v1.len() as u64);
    let blobs = azurite.blobs("list", "documents").await?;
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].contains(&id) && !blobs[0].contains("Deposition"), "object names carry ids only: {blobs:?}");

    let whole = app.get(&format!("/api/v1/documents/{id}/content")).bearer_auth(&admin.token).send().await?;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await?.as_ref(), &v1[..]);
    let part = app
        .get(&format!("/api/v1/documents/{id}/content"))
        .bearer_auth(&admin.token)
        .header("range", "bytes=200000-300000")
        .send()
        .await?;
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await?.as_ref(), &v1[200_000..=300_000]);

    let v2 = upload(&app, &admin.token, &lib, "Deposition.txt", b"second version").await?;
    assert_eq!(v2["version"], 2);
    assert_eq!(azurite.blobs("list", "documents").await?.len(), 2);
    let old = app.get(&format!("/api/v1/documents/{id}/content?version=1")).bearer_auth(&admin.token).send().await?;
    assert_eq!(old.bytes().await?.len(), v1.len());

    // Nothing readable on the emulator's disk.
    for path in walk(azurite.dir.path()) {
        let bytes = std::fs::read(&path)?;
        assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "{} holds the marker", path.display());
    }

    let deleted = app.delete(&format!("/api/v1/documents/{id}")).bearer_auth(&admin.token).send().await?;
    assert_eq!(deleted.status(), 204);
    assert!(azurite.blobs("list", "documents").await?.is_empty(), "both versions' blobs are removed");
    let gone = app.get(&format!("/api/v1/documents/{id}/content")).bearer_auth(&admin.token).send().await?;
    assert_eq!(gone.status(), 404);

    let ready = app.get("/readyz").send().await?;
    assert_eq!(ready.status(), 200);
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}
