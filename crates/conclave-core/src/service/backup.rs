//! What `conclave backup` and `conclave restore` need of the core: the document objects a
//! database names, copied out of and into the object store as they are (ciphertext: a backup
//! never holds a plaintext byte nor a master key), and a check that every wrapped key of a
//! tenant still opens with the configured master key.

use std::collections::HashMap;
use std::path::Path as FsPath;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::Conclave;
use crate::content::KeyCheck;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::libraries::WrappedKeyKind;
use crate::objects::unavailable;
use crate::service::orphans::is_document_object;
use crate::store::Store;

const PARTS_IN_FLIGHT: usize = 4;

/// One object copied: its stored bytes and their SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedObject {
    pub size: u64,
    pub sha256: String,
}

/// A wrapped key that does not open, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableKey {
    pub kind: WrappedKeyKind,
    pub id: uuid::Uuid,
    pub reason: String,
}

/// What checking a tenant's wrapped keys found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyCheckReport {
    pub opened: u64,
    pub unreadable: Vec<UnreadableKey>,
}

/// Whether `key` is exactly a document object's name (`tenants/{t}/libraries/{l}/documents/{d}/v{n}-{uuid}`):
/// what a backup's manifest may name, and so the only paths a restore writes.
pub fn is_document_object_key(key: &str) -> bool {
    let location = Path::from(key);
    is_document_object(&location) && location.as_ref() == key
}

/// Every document object `store` names (all tenants holding keys), in key order.
pub async fn referenced_objects(store: &dyn Store) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for tenant in store.tenants_with_keys().await? {
        keys.extend(store.document_objects(tenant).await?);
    }
    keys.sort();
    Ok(keys)
}

impl Conclave {
    /// The size of every document object in the store, by key (one listing).
    pub async fn document_object_sizes(&self) -> Result<HashMap<String, u64>> {
        let mut sizes = HashMap::new();
        let mut listing = self.objects.store().list(Some(&Path::from("tenants")));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(unavailable)?;
            if is_document_object(&meta.location) {
                sizes.insert(meta.location.to_string(), meta.size);
            }
        }
        Ok(sizes)
    }

    /// Streams the object `key` into `file` as stored; `progress` gets each piece's length.
    /// `NotFound` if the object is gone.
    pub async fn export_object(
        &self,
        key: &str,
        file: &mut tokio::fs::File,
        progress: impl Fn(u64),
    ) -> Result<CopiedObject> {
        let got = match self.objects.store().get(&Path::from(key)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound("object")),
            Err(e) => return Err(unavailable(e)),
        };
        // Local objects are read past the page cache, as downloads read them.
        let mut stream = crate::service::documents::object_stream(got);
        let (mut size, mut digest) = (0u64, Sha256::new());
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(unavailable)?;
            digest.update(&piece);
            file.write_all(&piece).await.map_err(io_error)?;
            size += piece.len() as u64;
            progress(piece.len() as u64);
        }
        file.flush().await.map_err(io_error)?;
        Ok(CopiedObject { size, sha256: crate::records::hex(&digest.finalize()) })
    }

    /// Writes the file at `path` into the object store as `key` (a document object's key only:
    /// a backup's manifest is not trusted to name anything else). `progress` gets each part's
    /// length.
    pub async fn import_object(&self, key: &str, path: &FsPath, progress: impl Fn(u64)) -> Result<()> {
        if !is_document_object_key(key) {
            return Err(Error::BadRequest(format!("'{key}' is not a document object's name")));
        }
        let location = Path::from(key);
        let mut file = tokio::fs::File::open(path).await.map_err(io_error)?;
        let upload = self.objects.store().put_multipart(&location).await.map_err(unavailable)?;
        let part = self.objects.part_size();
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let copied: Result<()> = async {
            loop {
                let mut buf = Vec::with_capacity(part);
                let n = (&mut file).take(part as u64).read_to_end(&mut buf).await.map_err(io_error)?;
                if n == 0 {
                    return Ok(());
                }
                writer.put(buf.into());
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(unavailable)?;
                progress(n as u64);
            }
        }
        .await;
        match copied {
            Ok(()) => writer.finish().await.map(drop).map_err(unavailable),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Unwraps every key the tenant's master key wraps (tenant, library and conversation keys)
    /// and says which do not open. `progress` gets the number checked so far. An unreachable
    /// key provider stops the check with an error.
    pub async fn check_tenant_keys(&self, tenant: TenantId, progress: impl Fn(u64)) -> Result<KeyCheckReport> {
        let mut report = KeyCheckReport::default();
        let mut after = None;
        loop {
            let batch = self.wrapped_keys_page(tenant, u32::MAX, &mut after).await?;
            if batch.is_empty() {
                break;
            }
            for key in &batch {
                match self.codec.check_wrapped(tenant, key.kind, key.id, &key.wrapped).await? {
                    KeyCheck::Opens => report.opened += 1,
                    KeyCheck::Unreadable(reason) => {
                        report.unreadable.push(UnreadableKey { kind: key.kind, id: key.id, reason })
                    }
                }
                progress(report.opened + report.unreadable.len() as u64);
            }
        }
        Ok(report)
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::Internal(format!("backup file: {e}"))
}
