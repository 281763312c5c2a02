//! Where audit checkpoints are kept outside the database: the local append-only folder
//! (`conclave_core::checkpoint::FileSink`) or an object store container (one object per
//! checkpoint, created but never overwritten), and reading them back for `conclave audit verify`.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use conclave_core::checkpoint::{CheckpointDocument, CheckpointSink, FileSink, SourcedCheckpoint};
use conclave_core::records::AuditCheckpoint;
use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};

use crate::config::Config;

/// A location is an object store URL when it has a scheme (`az://`, `s3://`, `file://`,
/// `memory://`); anything else is a folder.
fn is_url(location: &str) -> bool {
    location.contains("://")
}

/// The sink for a location (see [`crate::config::Config::checkpoint_location`]).
pub fn open(config: &Config, location: &str) -> anyhow::Result<Arc<dyn CheckpointSink>> {
    if is_url(location) {
        Ok(Arc::new(ObjectStoreSink::open(config, location)?))
    } else {
        Ok(Arc::new(FileSink::new(location)))
    }
}

/// Every checkpoint kept at a location (all tenants), each with where it was read.
pub async fn read_all(config: &Config, location: &str) -> anyhow::Result<Vec<SourcedCheckpoint>> {
    if is_url(location) {
        ObjectStoreSink::open(config, location)?.read_all().await
    } else {
        let dir = std::path::PathBuf::from(location);
        if !dir.exists() {
            anyhow::bail!("the checkpoint folder {location} does not exist");
        }
        tokio::task::spawn_blocking(move || conclave_core::checkpoint::read_dir(&dir))
            .await?
            .with_context(|| format!("reading checkpoints in {location}"))
    }
}

/// One object per checkpoint, `<prefix>/<tenant>/<seq, 20 digits>-<at in µs, 20 digits>.json`,
/// so a listing gives each tenant's checkpoints in order. Written with `PutMode::Create`: an
/// existing object is never replaced (and the container's immutability policy refuses it too).
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

impl ObjectStoreSink {
    /// Azure Blob and S3 are reached as the document store is (`crate::serve::remote_store`:
    /// the `AZURE_*` / `AWS_*` variables, Entra ID tokens with `CONCLAVE_OBJECT_STORE_AUTH=entra`);
    /// the path after the container is the prefix. `file://` and `memory://` for tests.
    pub fn open(config: &Config, url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("checkpoint URL {url}"))?;
        let (scheme, prefix) =
            object_store::ObjectStoreScheme::parse(&parsed).with_context(|| format!("checkpoint URL {url}"))?;
        let store = match scheme {
            object_store::ObjectStoreScheme::Local | object_store::ObjectStoreScheme::Memory => {
                Arc::from(object_store::parse_url(&parsed).with_context(|| format!("checkpoint container {url}"))?.0)
            }
            _ => crate::serve::remote_store(config, url).with_context(|| format!("checkpoint container {url}"))?,
        };
        Ok(Self::new(store, prefix, url))
    }

    pub fn new(store: Arc<dyn ObjectStore>, prefix: ObjectPath, url: &str) -> Self {
        ObjectStoreSink { store, prefix, url: url.to_owned() }
    }

    fn name(&self, c: &AuditCheckpoint) -> ObjectPath {
        let micros = c.at.unix_timestamp_nanos() / 1_000;
        self.prefix
            .clone()
            .join(c.tenant_id.0.hyphenated().to_string())
            .join(format!("{:020}-{micros:020}.json", c.seq))
    }

    pub async fn read_all(&self) -> anyhow::Result<Vec<SourcedCheckpoint>> {
        let mut metas: Vec<_> =
            self.store.list(Some(&self.prefix)).try_collect().await.with_context(|| format!("listing {}", self.url))?;
        metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let bytes = async { self.store.get(&meta.location).await?.bytes().await }
                .await
                .with_context(|| format!("reading {}", meta.location))?;
            let text = String::from_utf8_lossy(&bytes);
            let mut parsed = conclave_core::checkpoint::parse_lines(meta.location.as_ref(), &text);
            if parsed.is_empty() {
                parsed.push(SourcedCheckpoint {
                    source: meta.location.to_string(),
                    checkpoint: Err("empty object".into()),
                });
            }
            out.extend(parsed);
        }
        Ok(out)
    }
}

#[async_trait]
impl CheckpointSink for ObjectStoreSink {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn append(&self, checkpoint: &AuditCheckpoint) -> conclave_core::Result<()> {
        let mut body =
            serde_json::to_vec(&CheckpointDocument::from(checkpoint)).map_err(conclave_core::Error::internal)?;
        body.push(b'\n');
        self.store
            .put_opts(&self.name(checkpoint), PutPayload::from(body), PutOptions::from(PutMode::Create))
            .await
            .map(|_| ())
            .map_err(|e| conclave_core::Error::Unavailable {
                service: "audit checkpoint container",
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_core::ids::TenantId;
    use conclave_core::records::SignatureAlgorithm;

    fn checkpoint(seq: i64) -> AuditCheckpoint {
        AuditCheckpoint {
            version: 1,
            tenant_id: TenantId(uuid::Uuid::nil()),
            seq,
            head: vec![7; 32],
            at: time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + seq).unwrap(),
            key_id: "k".into(),
            algorithm: SignatureAlgorithm::Ed25519,
            signature: vec![1; 64],
        }
    }

    #[tokio::test]
    async fn objects_are_created_in_order_and_never_overwritten() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let sink = ObjectStoreSink::new(store.clone(), ObjectPath::from("audit"), "memory:///audit");
        for seq in [9, 10, 2] {
            sink.append(&checkpoint(seq)).await.unwrap();
        }
        let again = sink.append(&checkpoint(10)).await;
        assert!(again.is_err(), "an existing checkpoint object is never replaced");
        let read = sink.read_all().await.unwrap();
        let seqs: Vec<i64> = read.iter().map(|s| s.checkpoint.as_ref().unwrap().seq).collect();
        assert_eq!(seqs, [2, 9, 10], "listing order is sequence order");
        assert_eq!(read[0].checkpoint.as_ref().unwrap(), &checkpoint(2));
    }

    #[tokio::test]
    async fn local_file_system_backend_works_too() {
        let dir = std::env::temp_dir().join(format!("conclave-cp-os-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("file://{}", dir.display());
        let sink = open(&Config::default(), &url).unwrap();
        sink.append(&checkpoint(1)).await.unwrap();
        assert!(sink.append(&checkpoint(1)).await.is_err());
        let read = read_all(&Config::default(), &url).await.unwrap();
        assert_eq!(read.len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }
}
