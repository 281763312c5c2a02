//! Where encrypted document content lives: any `object_store` backend (a local folder by default,
//! Azure Blob, S3-compatible). Objects hold only ciphertext in the segmented format; their names
//! carry ids, never document names.

pub(crate) mod direct;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::ids::{DocumentId, LibraryId, TenantId};

const REMOTE_PART_SIZE: usize = 5 * 1024 * 1024;
const LOCAL_PART_SIZE: usize = 1024 * 1024;

/// The object store and what to call it in logs and errors.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    describe: String,
    part_size: usize,
    /// The folder's store, when objects are local files: uploads write them directly.
    local: Option<Arc<LocalFileSystem>>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Objects({})", self.describe)
    }
}

impl Objects {
    /// `describe` names the store for operators (a folder, a container), without secrets.
    pub fn new(store: Arc<dyn ObjectStore>, describe: impl Into<String>) -> Self {
        Self { store, describe: describe.into(), part_size: REMOTE_PART_SIZE, local: None }
    }

    /// Objects in a local folder, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("cannot create the object folder {}: {e}", dir.display())))?;
        let store = Arc::new(
            LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::Internal(format!("object folder {}: {e}", dir.display())))?,
        );
        Ok(Self {
            part_size: LOCAL_PART_SIZE,
            local: Some(store.clone()),
            ..Self::new(store, dir.display().to_string())
        })
    }

    /// Objects in memory (tests).
    pub fn in_memory() -> Self {
        Self { part_size: LOCAL_PART_SIZE, ..Self::new(Arc::new(object_store::memory::InMemory::new()), "memory") }
    }

    /// The size of the parts an upload is written in: S3's 5 MiB minimum for remote stores, less
    /// for a local folder, where a part is only a write to a file (memory stays flatter).
    pub(crate) fn part_size(&self) -> usize {
        self.part_size
    }

    /// The file an object is, for a local folder (the path `LocalFileSystem` reads it from).
    pub(crate) fn local_path(&self, key: &str) -> Option<Result<PathBuf>> {
        let local = self.local.as_ref()?;
        Some(local.path_to_filesystem(&Path::from(key)).map_err(unavailable))
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A fresh object name for one upload of a document version: ids only, and a random part
    /// so two uploads racing for one version never write the same object.
    pub(crate) fn new_key(tenant: TenantId, library: LibraryId, document: DocumentId, version: u64) -> String {
        format!(
            "tenants/{}/libraries/{}/documents/{}/v{version}-{}",
            tenant.0,
            library.0,
            document.0,
            uuid::Uuid::new_v4()
        )
    }

    /// Removes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Answers when the store does (readiness).
    pub async fn ping(&self) -> Result<()> {
        match self.store.head(&Path::from("conclave-readiness-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

pub(crate) fn unavailable(e: object_store::Error) -> Error {
    Error::Unavailable { service: "object store", detail: e.to_string() }
}
