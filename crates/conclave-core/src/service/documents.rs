//! Documents: uploads streamed through the segmented encryption into the object store in
//! constant memory, versions, and downloads decrypted on the fly, whole or by byte range.
//!
//! An upload is checked before anything is written (the caller's role, the name, the claimed
//! type against the allow-list and against the content's first bytes), then encrypted under a
//! fresh key for the version (FEK) as it arrives. The rows are stored only once the object is
//! complete, by a task the request cannot cancel; an upload that stops half-way aborts its object,
//! so it leaves neither an object nor a row.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use conclave_crypto::segment::{
    RangeDecryptor, RangePlan, SegmentDecryptor, SegmentEncryptor, SegmentHeader, HEADER_LEN,
};
use conclave_crypto::{Binding, Key};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, GetResultPayload, ObjectStoreExt, WriteMultipart};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::app::{AuditRecord, Conclave};
use crate::content::SealScope;
use crate::error::{Error, FieldError, Result, StoreError};
use crate::ids::{DocumentId, LibraryId, UserId};
use crate::libraries::{DocumentRecord, DocumentVersionRecord, DocumentWithVersion, LibraryRole, VersionInsert};
use crate::objects::direct::{AlignedBuffer, DirectReader, LocalObjectWriter, BLOCK_CAPACITY, WRITE_BLOCK};
use crate::objects::{unavailable, Objects};
use crate::page::{Page, PageRequest};
use crate::policy;
use crate::principal::{Caller, Scope};
use crate::scan::Verdict;
use crate::service::libraries::legal_hold_error;

/// Longest file name kept, in bytes of UTF-8.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// How much of the start of an upload decides its type.
const SNIFF_LEN: usize = 8 * 1024;
/// Object-store parts in flight at once (their size is the store's, `Objects::part_size`): few
/// enough to keep memory flat.
const PARTS_IN_FLIGHT: usize = 2;
/// Blocks of ciphertext waiting for the writer while it writes another: one task switch per
/// block ([`WRITE_BLOCK`]) rather than one per network read.
const BLOCKS_IN_FLIGHT: usize = 1;
/// Stored bytes read at a time from a local object (rounded down to whole segments when the
/// blocks are decrypted in place). object_store's own file stream reads 8 KiB per blocking-pool
/// task: 130 of them for a 1 MiB range, which took 6.4 ms of server CPU per range request
/// against 2.4 ms with 1 MiB blocks (bench/documents.py).
const FILE_READ_BLOCK: u64 = 1 << 20;

/// What uploads may be.
#[derive(Debug, Clone)]
pub struct UploadPolicy {
    /// Largest document, in bytes (413 beyond).
    pub max_bytes: u64,
    /// Accepted media types.
    pub allowed_types: Vec<String>,
}

impl Default for UploadPolicy {
    fn default() -> Self {
        Self { max_bytes: 1 << 30, allowed_types: DEFAULT_TYPES.iter().map(|t| t.to_string()).collect() }
    }
}

/// The types accepted unless configured otherwise: office documents, PDF, text, mail, images.
pub const DEFAULT_TYPES: &[&str] = &[
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/rtf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "text/html",
    "application/json",
    "message/rfc822",
    "application/vnd.ms-outlook",
    "image/png",
    "image/jpeg",
];

/// File extensions and the type they claim.
const EXTENSIONS: &[(&str, &str)] = &[
    ("pdf", "application/pdf"),
    ("doc", "application/msword"),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("xls", "application/vnd.ms-excel"),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("ppt", "application/vnd.ms-powerpoint"),
    ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("rtf", "application/rtf"),
    ("txt", "text/plain"),
    ("text", "text/plain"),
    ("md", "text/markdown"),
    ("markdown", "text/markdown"),
    ("csv", "text/csv"),
    ("htm", "text/html"),
    ("html", "text/html"),
    ("json", "application/json"),
    ("eml", "message/rfc822"),
    ("msg", "application/vnd.ms-outlook"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("exe", "application/vnd.microsoft.portable-executable"),
];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub id: DocumentId,
    pub library_id: LibraryId,
    pub name: String,
    pub content_type: String,
    /// Bytes of the version's content.
    pub size: u64,
    /// SHA-256 of the version's content, hex.
    pub sha256: String,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When this version was uploaded.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentVersionView {
    pub version: u64,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub created_by: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A byte range as asked for (`Range: bytes=…`), before the size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-b` (inclusive) or `a-` (to the end).
    From { start: u64, end: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The half-open range of a `size`-byte content this asks for; `None` if unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::From { start, end } if start < size => {
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                (start < end).then_some(start..end)
            }
            ByteRange::From { .. } => None,
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some(size.saturating_sub(n)..size).filter(|r| r.start < r.end),
        }
    }
}

/// What a download answers with.
pub enum ContentRange {
    Full,
    Partial(Range<u64>),
    /// The range lies outside the content.
    Unsatisfiable,
}

pub struct DocumentContent {
    pub document: DocumentView,
    pub range: ContentRange,
    /// The plaintext (or the asked range), decrypted as it is read. An error mid-way means the
    /// stored object failed its integrity check: the response must be cut, not completed.
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

/// The upload's size, as the request reads it.
struct Reading {
    size: u64,
}

impl Conclave {
    /// Whether the caller may upload to the library: checked before a request body is read.
    pub async fn check_upload_allowed(&self, caller: &Caller, library: LibraryId) -> Result<()> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesWrite),
            "document.upload.denied",
            "library",
            Some(library.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, library).await?;
        self.require_library_role(caller, &access, LibraryRole::Editor, "upload to").await
    }

    /// Stores an upload as a new document, or as the next version of the library's document of
    /// the same name.
    pub async fn upload_document<S, E>(
        &self,
        caller: &Caller,
        library: LibraryId,
        file_name: &str,
        part_type: Option<&str>,
        mut body: S,
    ) -> Result<DocumentView>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        self.check_upload_allowed(caller, library).await?;
        let name = sanitize_file_name(file_name)?;
        let limits = &self.config.uploads;
        let claimed = claimed_type(&name, part_type, &limits.allowed_types)?;

        // The first bytes decide the type before anything is written.
        let mut reading = Reading { size: 0 };
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;
        let mut ended = false;
        while head_len < SNIFF_LEN {
            match next_chunk(&mut body, &mut reading, limits.max_bytes).await? {
                Some(chunk) => {
                    head_len += chunk.len();
                    head.push(chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let window: Vec<u8> = head.iter().flat_map(|c| c.iter().copied()).take(SNIFF_LEN).collect();
        check_content(&claimed, &window, ended)?;

        let tenant = caller.tenant();
        let tag = self.codec.name_tag(tenant, library, &name.to_lowercase()).await?;
        let existing = self.store.find_document(tenant, library, &tag).await?;
        let (document, version) = existing.as_ref().map_or((DocumentId::new(), 1), |d| (d.id, d.current_version + 1));
        let (fek, wrapped_fek) = self.codec.new_document_key(tenant, library, document, version).await?;
        let object_key = Objects::new_key(tenant, library, document, version);
        let binding = Binding::document_segment(tenant.0, library.0, document.0, version);

        let (blocks, receiver) = mpsc::channel::<Sealed>(BLOCKS_IN_FLIGHT);
        let (spares, spare_blocks) = std::sync::mpsc::channel::<AlignedBuffer>();
        let mut sealer = BlockSealer::new(SegmentEncryptor::new(&fek, &binding), spare_blocks)?;
        let me = self.me.upgrade().ok_or_else(|| Error::Internal("the server is shutting down".into()))?;
        let job = UploadJob {
            caller: caller.clone(),
            library,
            document,
            version,
            name: name.clone(),
            tag,
            existing,
            content_type: claimed,
            object_key,
            wrapped_fek,
        };
        let task = tokio::spawn(async move { me.store_upload(job, fek, binding, receiver, spares).await });

        // Hash and seal the body as it arrives, while each piece is still in the CPU's cache, and
        // hand the writer whole blocks of ciphertext; stop at the first problem. Dropping `blocks`
        // before the last one makes the writer abort its object.
        let relayed: Result<()> = async {
            let mut full = Vec::new();
            let mut head = head.into_iter();
            loop {
                let chunk = match head.next() {
                    Some(chunk) => chunk,
                    None if ended => break,
                    None => match next_chunk(&mut body, &mut reading, limits.max_bytes).await? {
                        Some(chunk) => chunk,
                        None => break,
                    },
                };
                sealer.push(&chunk, &mut full)?;
                for block in full.drain(..) {
                    if blocks.send(Sealed::Block(block)).await.is_err() {
                        return Ok(()); // the writer failed: its error is the answer
                    }
                }
            }
            let (block, sha) = sealer.finish()?;
            let last = Sealed::Last { block, size: reading.size, sha };
            let _ = blocks.send(last).await;
            Ok(())
        }
        .await;
        drop(blocks);
        let stored = task.await.map_err(|e| Error::Internal(format!("upload task: {e}")))?;
        relayed?;
        stored
    }

    /// The writer side of an upload: writes the object, then stores the rows and the audit event.
    /// Runs as its own task, so a client that leaves after sending everything still gets its
    /// document stored, and one that leaves before gets nothing stored.
    async fn store_upload(
        self: Arc<Self>,
        job: UploadJob,
        fek: Arc<Key>,
        binding: Binding,
        receiver: mpsc::Receiver<Sealed>,
        spares: std::sync::mpsc::Sender<AlignedBuffer>,
    ) -> Result<DocumentView> {
        let (size, sha) = match self.objects.local_path(&job.object_key) {
            Some(dest) => write_local(dest?, &job.object_key, receiver, spares).await?,
            None => self.write_remote(&job.object_key, receiver).await?,
        };

        if let Err(e) = self.scan_upload(&job, &fek, &binding).await {
            self.remove_objects(std::slice::from_ref(&job.object_key)).await;
            return Err(e);
        }
        match self.record_upload(&job, size, sha).await {
            Ok(view) => Ok(view),
            Err(e) => {
                self.remove_objects(std::slice::from_ref(&job.object_key)).await;
                Err(e)
            }
        }
    }

    /// Writes an upload to a remote store as a multipart upload of the store's part size; the
    /// upload is completed only once the request has handed over its last block, and aborted
    /// otherwise.
    async fn write_remote(&self, object: &str, mut receiver: mpsc::Receiver<Sealed>) -> Result<(u64, [u8; 32])> {
        let path = Path::from(object);
        let upload = self.objects.store().put_multipart(&path).await.map_err(unavailable)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.objects.part_size());
        let written: Result<Option<(u64, [u8; 32])>> = async {
            while let Some(sealed) = receiver.recv().await {
                match sealed {
                    Sealed::Block(block) => {
                        writer.put(block.into_bytes());
                        writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(unavailable)?;
                    }
                    Sealed::Last { block, size, sha } => {
                        writer.put(block.into_bytes());
                        return Ok(Some((size, sha)));
                    }
                }
            }
            Ok(None)
        }
        .await;
        match written {
            Ok(Some(done)) => {
                writer.finish().await.map_err(unavailable)?;
                Ok(done)
            }
            written => {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(object = %object, error = %e, "an interrupted upload could not be aborted");
                }
                Err(interrupted(written.map(drop)))
            }
        }
    }

    /// With a scanner configured, reads the stored object back, decrypted, through it: only a
    /// clean verdict lets the version be recorded. A refusal is audited with what was found.
    async fn scan_upload(&self, job: &UploadJob, fek: &Key, binding: &Binding) -> Result<()> {
        let Some(scanner) = self.config.scanner.clone() else { return Ok(()) };
        let path = Path::from(job.object_key.as_str());
        let source = object_stream(self.objects.store().get(&path).await.map_err(object_error)?);
        let plaintext =
            decrypting(source, Decryptor::Whole(SegmentDecryptor::new(fek, binding)), job.object_key.clone());
        let verdict = scanner.scan(plaintext).await.map_err(|e| {
            tracing::error!(scanner = %scanner.describe(), error = %e, "an upload could not be scanned; it is refused");
            Error::Unavailable {
                service: "malware scanner",
                detail: "The malware scanner did not answer; the document was not stored. Try again later.".into(),
            }
        })?;
        match verdict {
            Verdict::Clean => Ok(()),
            Verdict::Infected(found) => {
                self.audit_by(
                    &job.caller,
                    AuditRecord::new("document.upload", "document", job.document)
                        .outcome(crate::records::Outcome::Failure)
                        .detail(serde_json::json!({"reason": "malware", "found": found, "library_id": job.library})),
                )
                .await;
                Err(Error::Validation(vec![FieldError::new(
                    "file",
                    format!("The malware scanner refused this file ({found}); it was not stored."),
                )]))
            }
        }
    }

    async fn record_upload(&self, job: &UploadJob, size: u64, sha: [u8; 32]) -> Result<DocumentView> {
        let tenant = job.caller.tenant();
        let (library, document, version) = (job.library, job.document, job.version);
        let now = crate::clock::now();
        let sha_hex = crate::records::hex(&sha);
        let sealed_sha =
            self.codec.seal(SealScope::DocumentDigest { tenant, library, document, version }, &sha_hex).await?;
        let record = match &job.existing {
            Some(d) => DocumentRecord { current_version: version, updated_at: now, ..d.clone() },
            None => DocumentRecord {
                tenant_id: tenant,
                id: document,
                library_id: library,
                name: self.codec.seal(SealScope::DocumentName { tenant, library, document }, &job.name).await?,
                name_tag: job.tag.clone(),
                current_version: 1,
                created_at: now,
                updated_at: now,
            },
        };
        let row = DocumentVersionRecord {
            tenant_id: tenant,
            document_id: document,
            version,
            object_key: job.object_key.clone(),
            size,
            content_type: job.content_type.clone(),
            sha256: sealed_sha,
            wrapped_key: job.wrapped_fek.clone(),
            created_by: job.caller.user(),
            created_at: now,
        };
        match self.store.insert_document_version(&record, &row).await.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound("library"),
            other => other.into(),
        })? {
            VersionInsert::Stored => {}
            VersionInsert::Conflict => {
                return Err(Error::Conflict(
                    "Another upload of a document with this name finished first; upload again to add a new version."
                        .into(),
                ))
            }
        }
        self.audit_by(
            &job.caller,
            AuditRecord::new("document.upload", "document", document).detail(serde_json::json!({
                "library_id": library, "version": version, "size": size, "content_type": job.content_type,
            })),
        )
        .await;
        self.document_view(&DocumentWithVersion { document: record, version: row }).await
    }

    pub async fn list_documents(
        &self,
        caller: &Caller,
        library: LibraryId,
        page: PageRequest,
    ) -> Result<Page<DocumentView>> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesRead),
            "document.list.denied",
            "library",
            Some(library.to_string()),
        )
        .await?;
        let access = self.visible_library(caller, library).await?;
        self.require_library_role(caller, &access, LibraryRole::Reader, "list the documents of").await?;
        let rows = self.store.list_documents(caller.tenant(), library, page).await?;
        let mut items = Vec::with_capacity(rows.items.len());
        for d in &rows.items {
            items.push(self.document_view(d).await?);
        }
        Ok(Page { items, next: rows.next })
    }

    pub async fn get_document(&self, caller: &Caller, id: DocumentId) -> Result<DocumentView> {
        let d = self.readable_document(caller, id, None).await?;
        self.document_view(&d).await
    }

    pub async fn list_document_versions(&self, caller: &Caller, id: DocumentId) -> Result<Vec<DocumentVersionView>> {
        let d = self.readable_document(caller, id, None).await?;
        let versions = self.store.list_document_versions(caller.tenant(), id).await?;
        let mut out = Vec::with_capacity(versions.len());
        for v in &versions {
            out.push(DocumentVersionView {
                version: v.version,
                content_type: v.content_type.clone(),
                size: v.size,
                sha256: self.open_digest(&d.document, v).await?,
                created_by: v.created_by,
                created_at: v.created_at,
            });
        }
        Ok(out)
    }

    /// The content of a version (the current one by default), whole or a byte range.
    pub async fn document_content(
        &self,
        caller: &Caller,
        id: DocumentId,
        version: Option<u64>,
        range: Option<ByteRange>,
    ) -> Result<DocumentContent> {
        let d = self.readable_document(caller, id, version).await?;
        let document = self.document_view(&d).await?;
        let size = d.version.size;
        let range = match range.map(|r| r.resolve(size)) {
            None => ContentRange::Full,
            Some(Some(r)) if r.start == 0 && r.end == size => ContentRange::Full,
            Some(Some(r)) => ContentRange::Partial(r),
            Some(None) => {
                return Ok(DocumentContent {
                    document,
                    range: ContentRange::Unsatisfiable,
                    body: futures::stream::empty().boxed(),
                })
            }
        };
        let tenant = caller.tenant();
        let (library, version) = (d.document.library_id, d.version.version);
        let key = self.codec.document_key(tenant, library, id, version, &d.version.wrapped_key).await?;
        let binding = Binding::document_segment(tenant.0, library.0, id.0, version);
        let path = Path::from(d.version.object_key.as_str());
        let store = self.objects.store().clone();
        let object = d.version.object_key.clone();
        let body = match &range {
            ContentRange::Partial(r) => {
                let header = store.get_range(&path, 0..HEADER_LEN as u64).await.map_err(object_error)?;
                let header = SegmentHeader::parse(&header).map_err(|e| integrity_error(&d, e))?;
                let plan = RangePlan::new(&header, size, r.clone()).map_err(|e| integrity_error(&d, e))?;
                let options =
                    GetOptions { range: Some(GetRange::Bounded(plan.ciphertext_range())), ..Default::default() };
                let result = store.get_opts(&path, options).await.map_err(object_error)?;
                let decryptor = RangeDecryptor::new(&key, &binding, plan.clone());
                match result.payload {
                    GetResultPayload::File(file, _) => {
                        local_plaintext(DirectReader::cached(file), &plan, decryptor, object)
                    }
                    GetResultPayload::Stream(stream) => decrypting(stream, Decryptor::Range(decryptor), object),
                }
            }
            _ => {
                let result = store.get(&path).await.map_err(object_error)?;
                match result.payload {
                    // An empty document is still read through the whole-object reader, which
                    // checks its one (empty, last) segment.
                    GetResultPayload::File(file, path) if size > 0 => {
                        let (reader, header) = read_header(DirectReader::new(file, path)).await.map_err(|e| {
                            tracing::error!(object = %object, error = %e, "cannot read a document's header");
                            Error::Internal("the document's stored content cannot be read".into())
                        })?;
                        let header = SegmentHeader::parse(&header).map_err(|e| integrity_error(&d, e))?;
                        let plan = RangePlan::new(&header, size, 0..size).map_err(|e| integrity_error(&d, e))?;
                        let decryptor = RangeDecryptor::new(&key, &binding, plan.clone());
                        local_plaintext(reader, &plan, decryptor, object)
                    }
                    payload => {
                        let source = object_stream(GetResult { payload, ..result });
                        decrypting(source, Decryptor::Whole(SegmentDecryptor::new(&key, &binding)), object)
                    }
                }
            }
        };
        self.audit_by(
            caller,
            AuditRecord::new("document.read", "document", id).detail(serde_json::json!({"version": version})),
        )
        .await;
        Ok(DocumentContent { document, range, body })
    }

    /// Deletes a document, every version and their keys; refused while its library is on hold.
    pub async fn delete_document(&self, caller: &Caller, id: DocumentId) -> Result<()> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesWrite),
            "document.delete.denied",
            "document",
            Some(id.to_string()),
        )
        .await?;
        let document = self.store.get_document(caller.tenant(), id).await.map_err(not_found)?;
        let access =
            self.visible_library(caller, document.library_id).await.map_err(|_| Error::NotFound("document"))?;
        if access.role.is_none() {
            return Err(Error::NotFound("document"));
        }
        self.require_library_role(caller, &access, LibraryRole::Manager, "delete documents of").await?;
        let objects = self.store.delete_document(caller.tenant(), id).await.map_err(legal_hold_error)?;
        self.remove_objects(&objects).await;
        self.audit_by(
            caller,
            AuditRecord::new("document.delete", "document", id)
                .detail(serde_json::json!({"library_id": document.library_id, "versions": objects.len()})),
        )
        .await;
        Ok(())
    }

    /// The document (at a version) if the caller is a member of its library; otherwise it does
    /// not exist, administrators included.
    async fn readable_document(
        &self,
        caller: &Caller,
        id: DocumentId,
        version: Option<u64>,
    ) -> Result<DocumentWithVersion> {
        self.permit(
            caller,
            policy::require(caller, Scope::LibrariesRead),
            "document.read.denied",
            "document",
            Some(id.to_string()),
        )
        .await?;
        let d = self.store.get_document_version(caller.tenant(), id, version).await.map_err(not_found)?;
        let access =
            self.store.get_library(caller.tenant(), caller.user(), d.document.library_id).await.map_err(not_found)?;
        if access.role.is_none() {
            return Err(Error::NotFound("document"));
        }
        Ok(d)
    }

    async fn document_view(&self, d: &DocumentWithVersion) -> Result<DocumentView> {
        let (tenant, library, document) = (d.document.tenant_id, d.document.library_id, d.document.id);
        Ok(DocumentView {
            id: document,
            library_id: library,
            name: self.codec.open(SealScope::DocumentName { tenant, library, document }, &d.document.name).await?,
            content_type: d.version.content_type.clone(),
            size: d.version.size,
            sha256: self.open_digest(&d.document, &d.version).await?,
            version: d.version.version,
            created_at: d.document.created_at,
            updated_at: d.version.created_at,
        })
    }

    async fn open_digest(&self, d: &DocumentRecord, v: &DocumentVersionRecord) -> Result<String> {
        let scope = SealScope::DocumentDigest {
            tenant: d.tenant_id,
            library: d.library_id,
            document: d.id,
            version: v.version,
        };
        self.codec.open(scope, &v.sha256).await
    }
}

struct UploadJob {
    caller: Caller,
    library: LibraryId,
    document: DocumentId,
    version: u64,
    name: String,
    tag: Vec<u8>,
    existing: Option<DocumentRecord>,
    content_type: String,
    object_key: String,
    wrapped_fek: Vec<u8>,
}

/// Why an upload's object was not completed: the writer failed, or the request stopped before
/// handing over the whole upload.
fn interrupted(written: Result<()>) -> Error {
    written.err().unwrap_or_else(|| Error::BadRequest("The upload was interrupted.".into()))
}

/// Writes an upload into a local folder on the blocking pool, each block with direct I/O
/// (`objects::direct`), handing the written blocks back to the sealer for reuse. The object is
/// published (renamed into place) with the last block; an upload that stops before it leaves
/// nothing.
async fn write_local(
    dest: std::path::PathBuf,
    object: &str,
    mut receiver: mpsc::Receiver<Sealed>,
    spares: std::sync::mpsc::Sender<AlignedBuffer>,
) -> Result<(u64, [u8; 32])> {
    let written = tokio::task::spawn_blocking(move || {
        let mut writer = LocalObjectWriter::create(&dest)?;
        while let Some(sealed) = receiver.blocking_recv() {
            match sealed {
                Sealed::Block(block) => {
                    writer.write_block(&block)?;
                    // The sealer may have finished already: then the block is simply freed.
                    let _ = spares.send(block);
                }
                Sealed::Last { block, size, sha } => {
                    writer.publish(block)?;
                    return Ok(Some((size, sha)));
                }
            }
        }
        // Dropping the writer removes its file.
        Ok::<_, std::io::Error>(None)
    })
    .await
    .map_err(|e| Error::Internal(format!("upload writer: {e}")))?;
    match written {
        Ok(Some(done)) => Ok(done),
        Ok(None) => Err(interrupted(Ok(()))),
        Err(e) => {
            tracing::error!(object = %object, error = %e, "an upload could not be written to the object folder");
            Err(Error::Unavailable { service: "object store", detail: "the object folder could not be written".into() })
        }
    }
}

/// What the request hands its writer: whole blocks of ciphertext, then the last one with the
/// upload's size and SHA-256.
enum Sealed {
    Block(AlignedBuffer),
    Last { block: AlignedBuffer, size: u64, sha: [u8; 32] },
}

/// Hashes and seals an upload into blocks of about [`WRITE_BLOCK`] bytes of ciphertext, each
/// block a whole number of aligned units but the last, reusing the blocks the writer hands back.
/// Each segment is hashed right before it is sealed, so both read it from the CPU's cache.
struct BlockSealer {
    encryptor: SegmentEncryptor,
    sha: Sha256,
    block: AlignedBuffer,
    spares: std::sync::mpsc::Receiver<AlignedBuffer>,
}

impl BlockSealer {
    fn new(encryptor: SegmentEncryptor, spares: std::sync::mpsc::Receiver<AlignedBuffer>) -> Result<Self> {
        Ok(Self { encryptor, sha: Sha256::new(), block: new_block()?, spares })
    }

    /// Hashes and seals a piece of the upload, adding to `full` the blocks it fills. The piece
    /// is sealed in parts that end on segment boundaries and fit the block, so no segment is
    /// copied aside and no block outgrows its room.
    fn push(&mut self, mut piece: &[u8], full: &mut Vec<AlignedBuffer>) -> Result<()> {
        while !piece.is_empty() {
            let fits = self.encryptor.fitting(BLOCK_CAPACITY - self.block.len()).min(piece.len());
            if fits == 0 {
                return Err(Error::Internal("an upload block has no room for a segment".into()));
            }
            let (now, rest) = piece.split_at(fits);
            let sha = &mut self.sha;
            self.encryptor
                .push_inspecting(now, &mut self.block, |segment| sha.update(segment))
                .map_err(|e| Error::Internal(format!("encryption: {e}")))?;
            piece = rest;
            if self.block.len() >= WRITE_BLOCK {
                let mut next = match self.spares.try_recv() {
                    Ok(spare) => spare,
                    Err(_) => new_block()?,
                };
                self.block.take_aligned(&mut next);
                full.push(std::mem::replace(&mut self.block, next));
            }
        }
        Ok(())
    }

    /// The last block (the rest of the ciphertext and the last segment) and the upload's SHA-256.
    fn finish(mut self) -> Result<(AlignedBuffer, [u8; 32])> {
        let sha = &mut self.sha;
        self.encryptor
            .finish_inspecting(&mut self.block, |segment| sha.update(segment))
            .map_err(|e| Error::Internal(format!("encryption: {e}")))?;
        Ok((self.block, self.sha.finalize().into()))
    }
}

/// A fresh block for an upload's ciphertext; a system out of memory fails the upload (503).
fn new_block() -> Result<AlignedBuffer> {
    AlignedBuffer::new(BLOCK_CAPACITY).map_err(|e| {
        tracing::error!(error = %e, "no memory for an upload's block");
        Error::Unavailable { service: "server memory", detail: "the server has no memory for this upload now".into() }
    })
}

/// The next chunk of an upload, counted against the limit.
async fn next_chunk<S, E>(body: &mut S, reading: &mut Reading, max: u64) -> Result<Option<Bytes>>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    match body.next().await {
        None => Ok(None),
        Some(Err(e)) => Err(Error::BadRequest(format!("The upload could not be read to its end: {e}"))),
        Some(Ok(chunk)) => {
            reading.size += chunk.len() as u64;
            if reading.size > max {
                return Err(Error::TooLarge(format!(
                    "Documents are limited to {} bytes ({}); this one is larger.",
                    max,
                    human_bytes(max)
                )));
            }
            Ok(Some(chunk))
        }
    }
}

/// An object's bytes as they arrive from a remote store (or a local file, for the one-segment
/// object of an empty document).
pub(crate) fn object_stream(result: GetResult) -> BoxStream<'static, object_store::Result<Bytes>> {
    let GetResult { payload, range, .. } = result;
    match payload {
        GetResultPayload::File(file, path) => file_blocks(file, path, range),
        GetResultPayload::Stream(stream) => stream,
    }
}

/// Reads `range` of a local file in blocks of [`FILE_READ_BLOCK`], each on the blocking pool.
fn file_blocks(
    file: std::fs::File,
    path: std::path::PathBuf,
    range: Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let failed =
        |source: std::io::Error| object_store::Error::Generic { store: "LocalFileSystem", source: source.into() };
    let reader = DirectReader::new(file, path.clone());
    futures::stream::try_unfold((reader, path, range), move |(mut reader, path, range)| async move {
        if range.is_empty() {
            return Ok(None);
        }
        let read = tokio::task::spawn_blocking(move || {
            let len = (range.end - range.start).min(FILE_READ_BLOCK);
            let block = reader
                .read(range.start, len)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            Ok::<_, std::io::Error>((reader, path, range, block))
        })
        .await
        .map_err(|e| failed(std::io::Error::other(e)))?;
        let (reader, path, range, (block, at)) = read.map_err(failed)?;
        let next = range.start + at.len() as u64..range.end;
        Ok(Some((Bytes::from(block).slice(at), (reader, path, next))))
    })
    .boxed()
}

/// The first [`HEADER_LEN`] bytes of a local object, read on the blocking pool.
async fn read_header(mut reader: DirectReader) -> std::io::Result<(DirectReader, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        let (block, at) = reader.read(0, HEADER_LEN as u64)?;
        Ok((reader, block[at].to_vec()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The planned plaintext of a local object. Each step reads a block of whole segments (about
/// [`FILE_READ_BLOCK`]) on the blocking pool (directly for whole objects, `objects::direct`;
/// through the page cache for ranges) and decrypts it
/// there, in place, while it is still in the CPU's cache; the plaintext of each segment then goes
/// out as a slice of that block, so this process never copies the document between reading it and
/// sending it. A block that fails its check ends the stream with an error; the segments before it
/// in the block are not sent.
fn local_plaintext(
    reader: DirectReader,
    plan: &RangePlan,
    decryptor: RangeDecryptor,
    object: String,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let block = plan.whole_segments_len(FILE_READ_BLOCK);
    let fail = move |failure: BlockFailure| match failure {
        BlockFailure::Read(e) => {
            tracing::error!(object = %object, error = %e, "a stored document could not be read");
            std::io::Error::other("the stored document could not be read")
        }
        BlockFailure::Integrity(e) => {
            tracing::error!(object = %object, problem = %e, "a stored document failed its integrity check while being read");
            std::io::Error::other("the stored document failed its integrity check")
        }
    };
    let state = Some((reader, decryptor, plan.ciphertext_range(), fail));
    futures::stream::unfold(state, move |state| async move {
        let (mut reader, mut decryptor, range, fail) = state?;
        if range.is_empty() {
            return match decryptor.finish() {
                Ok(()) => None,
                Err(e) => Some((Err(fail(BlockFailure::Integrity(e))), None)),
            };
        }
        let len = (range.end - range.start).min(block);
        let start = range.start;
        let read = tokio::task::spawn_blocking(move || {
            let (mut block, at) = reader.read(start, len).map_err(BlockFailure::Read)?;
            let parts = decryptor.open_in_place(&mut block[at.clone()]).map_err(BlockFailure::Integrity)?;
            let parts: Vec<Range<usize>> = parts.into_iter().map(|r| at.start + r.start..at.start + r.end).collect();
            Ok((reader, decryptor, block, parts))
        })
        .await
        .unwrap_or_else(|e| Err(BlockFailure::Read(std::io::Error::other(e))));
        match read {
            Ok((reader, decryptor, block, parts)) => {
                let block = Bytes::from(block);
                let parts: Vec<Bytes> = parts.into_iter().filter(|r| !r.is_empty()).map(|r| block.slice(r)).collect();
                Some((Ok(parts), Some((reader, decryptor, start + len..range.end, fail))))
            }
            Err(failure) => Some((Err(fail(failure)), None)),
        }
    })
    .map_ok(|parts| futures::stream::iter(parts.into_iter().map(Ok)))
    .try_flatten()
    .boxed()
}

/// Why a block of a local object could not be sent.
enum BlockFailure {
    Read(std::io::Error),
    Integrity(conclave_crypto::CryptoError),
}

enum Decryptor {
    Whole(SegmentDecryptor),
    Range(RangeDecryptor),
}

/// Decrypts an object's stream as it is read. The end is checked too: a truncated object ends
/// the stream with an error instead of a clean end.
fn decrypting(
    source: BoxStream<'static, object_store::Result<Bytes>>,
    decryptor: Decryptor,
    object: String,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let fail = move |what: String| {
        tracing::error!(object = %object, problem = %what, "a stored document failed its integrity check while being read");
        std::io::Error::other("the stored document failed its integrity check")
    };
    futures::stream::unfold(Some((source, decryptor, fail)), |state| async move {
        let (mut source, mut decryptor, fail) = state?;
        loop {
            match source.next().await {
                Some(Ok(data)) => {
                    let mut out = Vec::with_capacity(data.len());
                    let pushed = match &mut decryptor {
                        Decryptor::Whole(d) => d.push(&data, &mut out),
                        Decryptor::Range(d) => d.push(&data, &mut out),
                    };
                    if let Err(e) = pushed {
                        return Some((Err(fail(e.to_string())), None));
                    }
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), Some((source, decryptor, fail))));
                    }
                }
                Some(Err(e)) => return Some((Err(std::io::Error::other(format!("object store: {e}"))), None)),
                None => {
                    let mut out = Vec::new();
                    let finished = match decryptor {
                        Decryptor::Whole(d) => d.finish(&mut out),
                        Decryptor::Range(d) => d.finish(),
                    };
                    return match finished {
                        Err(e) => Some((Err(fail(e.to_string())), None)),
                        Ok(()) if out.is_empty() => None,
                        Ok(()) => Some((Ok(Bytes::from(out)), None)),
                    };
                }
            }
        }
    })
    .boxed()
}

fn not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound("document"),
        other => other.into(),
    }
}

fn object_error(e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => {
            tracing::error!(error = %e, "a document's object is missing from the object store");
            Error::Internal("the document's stored content is missing".into())
        }
        other => unavailable(other),
    }
}

fn integrity_error(d: &DocumentWithVersion, e: conclave_crypto::CryptoError) -> Error {
    tracing::error!(object = %d.version.object_key, error = %e, "a stored document failed its integrity check");
    Error::Internal("the stored document failed its integrity check".into())
}

/// The name kept for an uploaded file: its last path component, without control characters or
/// characters that file systems reserve, trimmed; 422 when nothing usable is left.
pub fn sanitize_file_name(raw: &str) -> Result<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .map(|c| if matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim_end_matches(['.', ' ']).trim().to_owned();
    if trimmed.is_empty() {
        return Err(Error::field("file", "The file needs a name (the filename of the multipart part)."));
    }
    if trimmed.len() > MAX_FILE_NAME_BYTES {
        return Err(Error::field("file", format!("File names are limited to {MAX_FILE_NAME_BYTES} bytes.")));
    }
    Ok(trimmed)
}

fn extension_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    EXTENSIONS.iter().find(|(e, _)| *e == ext).map(|(_, t)| *t)
}

/// The type the upload claims: by its extension, else by the part's `Content-Type`; it must be
/// allowed, and the two must not disagree.
fn claimed_type(name: &str, part_type: Option<&str>, allowed: &[String]) -> Result<String> {
    let part = part_type
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "application/octet-stream");
    let by_name = extension_type(name);
    let claimed = match (by_name, part.as_deref()) {
        (Some(n), Some(p)) if n != p && !(is_text(n) && is_text(p)) => {
            return Err(Error::UnsupportedMediaType(format!(
                "The file's name says {n} but the upload says {p}; they must agree."
            )))
        }
        (Some(n), _) => n.to_owned(),
        (None, Some(p)) => p.to_owned(),
        (None, None) => {
            return Err(Error::UnsupportedMediaType(
                "The file's type cannot be told: give it an extension such as .pdf or .docx.".into(),
            ))
        }
    };
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&claimed)) {
        return Err(Error::UnsupportedMediaType(format!(
            "Documents of type {claimed} are not accepted here; accepted: {}.",
            allowed.join(", ")
        )));
    }
    Ok(claimed)
}

fn is_text(t: &str) -> bool {
    t.starts_with("text/") || t == "application/json" || t == "message/rfc822"
}

/// The content's first bytes must be what the claimed type says: a signature for binary types,
/// readable text without NUL bytes for text types.
fn check_content(claimed: &str, window: &[u8], whole: bool) -> Result<()> {
    let sniffed = infer::get(window).map(|t| t.mime_type());
    let refuse = |what: &str| {
        Err(Error::UnsupportedMediaType(format!("The content is {what}, not the {claimed} its name claims.")))
    };
    if is_text(claimed) {
        return match sniffed {
            Some("text/html") if claimed == "text/html" => Ok(()),
            Some("text/xml") if claimed != "application/json" => Ok(()),
            Some(other) => refuse(other),
            None if window.contains(&0) => refuse("binary data"),
            None => match std::str::from_utf8(window) {
                Ok(_) => Ok(()),
                // A multi-byte character cut by the end of the window is fine.
                Err(e) if !whole && e.error_len().is_none() => Ok(()),
                Err(_) => refuse("not UTF-8 text"),
            },
        };
    }
    let fits = match (claimed, sniffed) {
        (_, None) => false,
        (c, Some(s)) if c == s => true,
        // Office Open XML and OpenDocument files are ZIP archives; the legacy Office formats
        // and Outlook messages are OLE compound files.
        (c, Some("application/zip")) => c.starts_with("application/vnd.openxmlformats") || c.contains("opendocument"),
        (
            c,
            Some(
                "application/x-ole-storage"
                | "application/msword"
                | "application/vnd.ms-excel"
                | "application/vnd.ms-powerpoint",
            ),
        ) => {
            matches!(
                c,
                "application/msword"
                    | "application/vnd.ms-excel"
                    | "application/vnd.ms-powerpoint"
                    | "application/vnd.ms-outlook"
            )
        }
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        refuse(sniffed.unwrap_or("of an unrecognised kind"))
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever pieces an upload arrives in, the sealer's blocks never outgrow their room, are
    /// written in whole aligned units, and together (with the last) are the object: it opens to
    /// the upload, whose SHA-256 it reports.
    #[test]
    fn sealed_blocks_keep_their_room_and_make_the_object() {
        let key = Key::generate();
        let binding =
            Binding::document_segment(uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2), uuid::Uuid::from_u128(3), 1);
        let upload: Vec<u8> = (0..5 * WRITE_BLOCK + 12_345).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect();
        for piece in [1usize, 4096, 65_536, 65_537, 700_000, 1 << 20, 3 * WRITE_BLOCK] {
            let (spares, spare_blocks) = std::sync::mpsc::channel();
            let mut sealer = BlockSealer::new(SegmentEncryptor::new(&key, &binding), spare_blocks).unwrap();
            let (mut object, mut full) = (Vec::new(), Vec::new());
            for chunk in upload.chunks(piece) {
                sealer.push(chunk, &mut full).unwrap();
                assert!(sealer.block.len() <= BLOCK_CAPACITY, "pieces of {piece}: the block outgrew its room");
                for block in full.drain(..) {
                    assert_eq!(block.len() % 4096, 0, "pieces of {piece}: a block ends mid-unit");
                    assert!(block.len() >= WRITE_BLOCK - 4096 && block.len() <= BLOCK_CAPACITY);
                    object.extend_from_slice(block.as_slice());
                    spares.send(block).unwrap();
                }
            }
            let (last, sha) = sealer.finish().unwrap();
            assert!(last.len() <= BLOCK_CAPACITY);
            object.extend_from_slice(last.as_slice());
            let opened = conclave_crypto::segment::decrypt(&key, &binding, &object).unwrap();
            assert!(opened == upload, "pieces of {piece}: the object does not open to the upload");
            assert_eq!(sha, <[u8; 32]>::from(Sha256::digest(&upload)), "pieces of {piece}");
        }
    }

    #[test]
    fn names_lose_paths_and_reserved_characters() {
        assert_eq!(sanitize_file_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(sanitize_file_name("C:\\Users\\x\\brief.pdf").unwrap(), "brief.pdf");
        assert_eq!(sanitize_file_name("a<b>:c|d?.pdf").unwrap(), "a_b__c_d_.pdf");
        assert_eq!(sanitize_file_name("  ..hidden.txt ").unwrap(), "hidden.txt");
        assert_eq!(sanitize_file_name("report\u{202e}fdp.exe").unwrap(), "reportfdp.exe");
        assert!(sanitize_file_name("..").is_err());
        assert!(sanitize_file_name("dir/").is_err());
        assert!(sanitize_file_name(&"a".repeat(300)).is_err());
    }

    #[test]
    fn types_are_claimed_by_name_and_checked_against_content() {
        let allowed: Vec<String> = DEFAULT_TYPES.iter().map(|t| t.to_string()).collect();
        assert_eq!(claimed_type("a.PDF", None, &allowed).unwrap(), "application/pdf");
        assert_eq!(claimed_type("a.txt", Some("text/plain; charset=utf-8"), &allowed).unwrap(), "text/plain");
        assert!(matches!(claimed_type("a.exe", None, &allowed), Err(Error::UnsupportedMediaType(_))));
        assert!(matches!(claimed_type("a.pdf", Some("image/png"), &allowed), Err(Error::UnsupportedMediaType(_))));
        assert!(matches!(claimed_type("noext", None, &allowed), Err(Error::UnsupportedMediaType(_))));

        assert!(check_content("application/pdf", b"%PDF-1.7\n...", true).is_ok());
        let elf = [0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0];
        assert!(matches!(check_content("application/pdf", &elf, true), Err(Error::UnsupportedMediaType(_))));
        assert!(matches!(check_content("text/plain", &elf, true), Err(Error::UnsupportedMediaType(_))));
        assert!(check_content("text/plain", "Privileged — é".as_bytes(), true).is_ok());
        assert!(check_content("text/plain", &"é".as_bytes()[..1], false).is_ok());
        assert!(check_content("text/plain", &"é".as_bytes()[..1], true).is_err());
        assert!(check_content("application/pdf", b"just text", true).is_err());
    }

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        let r = |start, end| ByteRange::From { start, end };
        assert_eq!(r(0, Some(9)).resolve(100), Some(0..10));
        assert_eq!(r(90, None).resolve(100), Some(90..100));
        assert_eq!(r(90, Some(500)).resolve(100), Some(90..100));
        assert_eq!(r(100, None).resolve(100), None);
        assert_eq!(ByteRange::Suffix(10).resolve(100), Some(90..100));
        assert_eq!(ByteRange::Suffix(500).resolve(100), Some(0..100));
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
        assert_eq!(r(0, None).resolve(0), None);
    }
}
