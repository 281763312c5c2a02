//! Documents on an S3-compatible store, through moto's S3 server (PyPI `moto[server]`, installed
//! by `make test` into the project venv): a multipart upload, Range, versions, deletion, and the
//! stored objects holding ciphertext under id-only names.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::app::{run_cli, s, Backend, TempDir, TestApp, TestAppBuilder};

const BUCKET: &str = "documents";

fn moto_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

/// moto's S3 server on a free port, stopped when dropped.
struct Moto {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Moto {
    async fn start() -> Result<Self> {
        let bin = moto_server();
        if !bin.exists() {
            bail!("moto is not installed at {}: run `make test` (or `make s3-emulator`)", bin.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = tokio::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting moto_server")?;
        let moto = Self { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = moto.http.put(format!("{}/{BUCKET}", moto.base)).send().await {
                if r.status().is_success() {
                    return Ok(moto);
                }
            }
            if Instant::now() > deadline {
                bail!("moto's S3 server did not create the bucket on port {port} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The bucket's object names (ListObjectsV2; moto does not check signatures).
    async fn keys(&self) -> Result<Vec<String>> {
        let xml = self.http.get(format!("{}/{BUCKET}?list-type=2", self.base)).send().await?.text().await?;
        Ok(xml.split("<Key>").skip(1).filter_map(|rest| rest.split("</Key>").next()).map(str::to_owned).collect())
    }

    async fn object(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.http.get(format!("{}/{BUCKET}/{key}", self.base)).send().await?.bytes().await?.to_vec())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Moto {
    /// The variables that point Conclave at the bucket.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("CONCLAVE_OBJECT_STORE_URL", format!("s3://{BUCKET}")),
            ("AWS_ENDPOINT", self.base.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "conclave-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "conclave-test-secret".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

fn on_s3(moto: &Moto) -> TestAppBuilder {
    moto.env().into_iter().fold(TestApp::builder(Backend::Sqlite), |b, (k, v)| b.env(&k, v))
}

#[tokio::test]
async fn documents_on_s3_through_moto() -> Result<()> {
    let moto = Moto::start().await?;
    let app = on_s3(&moto).start().await?;
    let admin = app.admin().await?;
    let lib: Value = app
        .post("/api/v1/libraries")
        .bearer_auth(&admin.token)
        .json(&serde_json::json!({"name": "Bucket"}))
        .send()
        .await?
        .json()
        .await?;
    let lib = s(&lib["id"]);

    // Over 5 MiB, so the object goes up in more than one multipart part.
    let marker = "S3-MARKER-51c7";
    let mut v1 = Vec::new();
    let mut i = 0;
    while v1.len() < 12 * 1024 * 1024 {
        v1.extend_from_slice(format!("{marker} line {i}\n").as_bytes());
        i += 1;
    }
    let doc = app.upload(&admin.token, &lib, "Brief.txt", "text/plain", &v1).await?.expect(201).body;
    let id = s(&doc["id"]);
    assert_eq!(doc["size"], v1.len() as u64);
    let keys = moto.keys().await?;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].contains(&id) && !keys[0].contains("Brief"), "object names carry ids only: {keys:?}");
    let stored = moto.object(&keys[0]).await?;
    assert!(stored.len() > v1.len(), "ciphertext with its segment tags");
    assert!(!stored.windows(marker.len()).any(|w| w == marker.as_bytes()), "the stored object is ciphertext");

    let whole = app.get(&format!("/api/v1/documents/{id}/content")).bearer_auth(&admin.token).send().await?;
    assert_eq!(whole.status(), 200);
    assert!(whole.bytes().await?.as_ref() == v1.as_slice(), "the download equals the upload");
    let part = app
        .get(&format!("/api/v1/documents/{id}/content"))
        .bearer_auth(&admin.token)
        .header("range", "bytes=6000000-6100000")
        .send()
        .await?;
    assert_eq!(part.status(), 206);
    assert!(part.bytes().await?.as_ref() == &v1[6_000_000..=6_100_000], "the range is exact");

    let v2 = app.upload(&admin.token, &lib, "Brief.txt", "text/plain", b"second version").await?.expect(201).body;
    assert_eq!(v2["version"], 2);
    assert_eq!(moto.keys().await?.len(), 2);
    let old = app.get(&format!("/api/v1/documents/{id}/content?version=1")).bearer_auth(&admin.token).send().await?;
    assert_eq!(old.bytes().await?.len(), v1.len());

    // A backup reads both objects out of the bucket.
    let data = PathBuf::from(app.site_var("CONCLAVE_DATA_DIR").expect("a data folder"));
    let key_file = data.join("keys").join("conclave-kek.json");
    let scratch = TempDir::new()?;
    let backup = scratch.path().join("backup");
    let mut site = moto.env();
    site.push(("CONCLAVE_DATA_DIR".into(), data.display().to_string()));
    let taken = run_cli(&["backup", &backup.display().to_string()], &site, Duration::from_secs(120)).await?;
    assert!(taken.status.success() && taken.stdout.contains("2 objects"), "{taken}");

    let deleted = app.delete(&format!("/api/v1/documents/{id}")).bearer_auth(&admin.token).send().await?;
    assert_eq!(deleted.status(), 204);
    assert!(moto.keys().await?.is_empty(), "both versions' objects are removed");
    let gone = app.get(&format!("/api/v1/documents/{id}/content")).bearer_auth(&admin.token).send().await?;
    assert_eq!(gone.status(), 404);
    assert_eq!(app.get("/readyz").send().await?.status(), 200);
    let _site = app.into_site();

    // Restored into a new data folder, the objects go back into the bucket in parts.
    let restored = scratch.path().join("restored");
    let mut env = moto.env();
    env.push(("CONCLAVE_DATA_DIR".into(), restored.display().to_string()));
    env.push(("CONCLAVE_KEY_FILE".into(), key_file.display().to_string()));
    let done = run_cli(&["restore", &backup.display().to_string()], &env, Duration::from_secs(120)).await?;
    assert!(done.status.success(), "{done}");
    assert_eq!(moto.keys().await?.len(), 2);
    let app = on_s3(&moto)
        .env("CONCLAVE_DATA_DIR", restored.display().to_string())
        .env("CONCLAVE_KEY_FILE", key_file.display().to_string())
        .start()
        .await?;
    let admin = app.login(&admin.email, &admin.password).await?;
    let back = app.get(&format!("/api/v1/documents/{id}/content?version=1")).bearer_auth(&admin.token).send().await?;
    assert_eq!(back.status(), 200);
    assert!(back.bytes().await?.as_ref() == v1.as_slice(), "the restored document equals the upload");
    Ok(())
}
