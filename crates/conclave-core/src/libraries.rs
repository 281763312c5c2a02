//! Libraries, their members and documents, as stored, and the store traits for them and for key
//! rotation. Names and descriptions are [`Sealed`]; document content lives in the object store,
//! encrypted in segments under a key per document version.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::content::Sealed;
use crate::ids::{ConversationId, DocumentId, LibraryId, TenantId, UserId};
use crate::page::{Page, PageRequest};
use crate::store::StoreResult;

/// A member's rights in a library. Ordered: each role has the rights of the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LibraryRole {
    /// Lists and reads documents.
    Reader,
    /// Also uploads new documents and versions.
    Editor,
    /// Also deletes documents, renames the library and manages its members.
    Manager,
}

impl LibraryRole {
    pub fn as_str(self) -> &'static str {
        match self {
            LibraryRole::Reader => "reader",
            LibraryRole::Editor => "editor",
            LibraryRole::Manager => "manager",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LibraryRecord {
    pub tenant_id: TenantId,
    pub id: LibraryId,
    /// Under the tenant's key.
    pub name: Sealed,
    pub description: Option<Sealed>,
    pub legal_hold: bool,
    /// The library's key (LEK), wrapped by the tenant's master key.
    pub wrapped_key: Vec<u8>,
    /// The master-key version that wrapped it.
    pub key_version: u32,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A library as one user sees it: with their role, if they are a member.
#[derive(Debug, Clone)]
pub struct LibraryAccess {
    pub library: LibraryRecord,
    pub role: Option<LibraryRole>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryMember {
    pub user_id: UserId,
    pub email: String,
    pub display_name: String,
    pub role: LibraryRole,
    pub added_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct DocumentRecord {
    pub tenant_id: TenantId,
    pub id: DocumentId,
    pub library_id: LibraryId,
    /// Under the library's key.
    pub name: Sealed,
    /// Keyed hash of the normalised name, under the library's key: finds the document a
    /// re-upload adds a version to.
    pub name_tag: Vec<u8>,
    pub current_version: u64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct DocumentVersionRecord {
    pub tenant_id: TenantId,
    pub document_id: DocumentId,
    pub version: u64,
    /// Where the encrypted content is, in the object store.
    pub object_key: String,
    /// Plaintext bytes.
    pub size: u64,
    pub content_type: String,
    /// SHA-256 of the plaintext, sealed under the library's key (a hash in clear would let
    /// whoever holds the database confirm a guess of the content).
    pub sha256: Sealed,
    /// The version's key (FEK), wrapped by the library's key.
    pub wrapped_key: Vec<u8>,
    pub created_by: UserId,
    pub created_at: OffsetDateTime,
}

/// A document with the version a call is about.
#[derive(Debug, Clone)]
pub struct DocumentWithVersion {
    pub document: DocumentRecord,
    pub version: DocumentVersionRecord,
}

/// What storing an uploaded version found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionInsert {
    Stored,
    /// Another upload stored this version number first.
    Conflict,
}

#[async_trait]
pub trait LibraryStore: Send + Sync {
    /// Stores a library and makes its creator a manager, in one transaction.
    async fn create_library(&self, library: &LibraryRecord) -> StoreResult<()>;
    /// The library and `viewer`'s role in it. `NotFound` if absent.
    async fn get_library(&self, tenant: TenantId, viewer: UserId, id: LibraryId) -> StoreResult<LibraryAccess>;
    /// Libraries `viewer` is a member of, or every library of the tenant when `all`, newest first.
    async fn list_libraries(
        &self,
        tenant: TenantId,
        viewer: UserId,
        all: bool,
        page: PageRequest,
    ) -> StoreResult<Page<LibraryAccess>>;
    async fn update_library(
        &self,
        tenant: TenantId,
        id: LibraryId,
        name: &Sealed,
        description: Option<&Sealed>,
        legal_hold: bool,
        at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Deletes the library, its members, documents and versions (their keys with them) unless it
    /// is on legal hold (`Constraint("legal_hold")`). Returns the object keys to remove.
    async fn delete_library(&self, tenant: TenantId, id: LibraryId) -> StoreResult<Vec<String>>;
    /// The library's wrapped key (LEK).
    async fn library_key(&self, tenant: TenantId, id: LibraryId) -> StoreResult<Option<Vec<u8>>>;

    async fn list_members(&self, tenant: TenantId, library: LibraryId) -> StoreResult<Vec<LibraryMember>>;
    /// Adds or changes a member. `NotFound` if the user is not in the tenant.
    async fn put_member(
        &self,
        tenant: TenantId,
        library: LibraryId,
        user: UserId,
        role: LibraryRole,
        at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// `Ok(false)` if the user was not a member.
    async fn remove_member(&self, tenant: TenantId, library: LibraryId, user: UserId) -> StoreResult<bool>;

    /// The document with this name tag in the library, if any.
    async fn find_document(
        &self,
        tenant: TenantId,
        library: LibraryId,
        name_tag: &[u8],
    ) -> StoreResult<Option<DocumentRecord>>;
    /// Stores a new document with its first version, or a further version of an existing one
    /// (when `document.current_version > 1`), atomically. A version number taken meanwhile by
    /// another upload gives [`VersionInsert::Conflict`] and changes nothing.
    async fn insert_document_version(
        &self,
        document: &DocumentRecord,
        version: &DocumentVersionRecord,
    ) -> StoreResult<VersionInsert>;
    async fn get_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<DocumentRecord>;
    /// A version of the document; `None` for the current one.
    async fn get_document_version(
        &self,
        tenant: TenantId,
        id: DocumentId,
        version: Option<u64>,
    ) -> StoreResult<DocumentWithVersion>;
    /// The library's documents with their current version, newest first.
    async fn list_documents(
        &self,
        tenant: TenantId,
        library: LibraryId,
        page: PageRequest,
    ) -> StoreResult<Page<DocumentWithVersion>>;
    /// Every version of a document, newest first.
    async fn list_document_versions(&self, tenant: TenantId, id: DocumentId)
        -> StoreResult<Vec<DocumentVersionRecord>>;
    /// Deletes the document and its versions (their keys with them) unless its library is on
    /// legal hold (`Constraint("legal_hold")`). Returns the object keys to remove.
    async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Vec<String>>;
    /// Every object the tenant's document versions name, in key order (what a backup copies).
    async fn document_objects(&self, tenant: TenantId) -> StoreResult<Vec<String>>;
}

/// The kinds of key wrapped directly by a tenant's master key (KEK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WrappedKeyKind {
    /// The tenant's key (agent, library and tenant fields).
    Tenant,
    /// A library's key (document names, document keys).
    Library,
    /// A conversation's key (titles, messages).
    Conversation,
}

/// One key wrapped by the KEK, as rotation reads it.
#[derive(Debug, Clone)]
pub struct KekWrapped {
    pub kind: WrappedKeyKind,
    /// The library or conversation id; the tenant id for the tenant's key.
    pub id: uuid::Uuid,
    pub wrapped: Vec<u8>,
    /// `None` for keys wrapped before versions were recorded.
    pub key_version: Option<u32>,
}

/// How many keys of a kind are wrapped under a KEK version (`None`: not recorded yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionCount {
    pub kind: WrappedKeyKind,
    pub key_version: Option<u32>,
    pub count: u64,
}

/// What rotating the master key needs of the store.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn count_wrapped_keys(&self, tenant: TenantId) -> StoreResult<Vec<KeyVersionCount>>;
    /// Up to `limit` keys of the tenant wrapped under a version below `version` (or unrecorded),
    /// in a stable order, after `after` (kind, id) when given.
    async fn wrapped_keys_below(
        &self,
        tenant: TenantId,
        version: u32,
        after: Option<(WrappedKeyKind, uuid::Uuid)>,
        limit: u32,
    ) -> StoreResult<Vec<KekWrapped>>;
    /// Replaces a wrapped key if it is still `old` (compare-and-set, so a concurrent rewrap or
    /// deletion wins). `Ok(false)` if it changed or is gone.
    async fn replace_wrapped_key(
        &self,
        tenant: TenantId,
        key: &KekWrapped,
        new_wrapped: &[u8],
        new_version: u32,
    ) -> StoreResult<bool>;
    /// Tenants that hold any wrapped key (for `conclave keys` across tenants).
    async fn tenants_with_keys(&self) -> StoreResult<Vec<TenantId>>;
    /// Stores a conversation's wrapped key unless one exists; returns the one in force.
    async fn put_conversation_key(
        &self,
        tenant: TenantId,
        conversation: ConversationId,
        wrapped: &[u8],
        key_version: u32,
    ) -> StoreResult<Vec<u8>>;
    /// Stores the tenant's wrapped key unless one exists; returns the one in force.
    async fn put_tenant_key(&self, tenant: TenantId, wrapped: &[u8], key_version: u32) -> StoreResult<Vec<u8>>;
}
