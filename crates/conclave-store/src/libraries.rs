//! Libraries, members, documents and the master-key rotation queries, written once for both
//! backends like `queries.rs`.

use async_trait::async_trait;
use conclave_core::content::Sealed;
use conclave_core::ids::*;
use conclave_core::libraries::*;
use conclave_core::page::{Page, PageRequest};
use conclave_core::store::StoreResult;
use conclave_core::StoreError;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db_time::DbTime;
use crate::error::{is_unique_violation, store_error};
use crate::{PgStore, SqliteStore};

const LIBRARY_COLUMNS: &str =
    "l.tenant_id, l.library_id, l.name, l.description, l.legal_hold, l.wrapped_key, l.key_version, \
     l.created_by, l.created_at, l.updated_at";
const DOCUMENT_COLUMNS: &str =
    "d.tenant_id, d.document_id, d.library_id, d.name, d.name_tag, d.current_version, d.created_at, d.updated_at";
const VERSION_COLUMNS: &str = "v.tenant_id, v.document_id, v.version, v.object_key, v.size, v.content_type, v.sha256, \
     v.wrapped_key, v.created_by, v.created_at";

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn role(s: &str) -> Result<LibraryRole, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| sqlx::Error::Decode(format!("unexpected library role '{s}' in the database").into()))
}

fn kind_table(kind: WrappedKeyKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        WrappedKeyKind::Tenant => ("tenant_keys", "tenant_id", ""),
        WrappedKeyKind::Library => ("libraries", "library_id", ""),
        WrappedKeyKind::Conversation => ("conversations", "conversation_id", " AND wrapped_key IS NOT NULL"),
    }
}

const KINDS: [WrappedKeyKind; 3] = [WrappedKeyKind::Tenant, WrappedKeyKind::Library, WrappedKeyKind::Conversation];

macro_rules! library_store_impl {
    ($store:ty, $db:ty) => {
        impl $store {
            fn library_row(r: &<$db as sqlx::Database>::Row) -> Result<LibraryRecord, sqlx::Error> {
                Ok(LibraryRecord {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: LibraryId(r.try_get("library_id")?),
                    name: Sealed(r.try_get("name")?),
                    description: r.try_get::<Option<Vec<u8>>, _>("description")?.map(Sealed),
                    legal_hold: r.try_get("legal_hold")?,
                    wrapped_key: r.try_get("wrapped_key")?,
                    key_version: r.try_get::<Option<i64>, _>("key_version")?.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
                    created_by: UserId(r.try_get("created_by")?),
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    updated_at: r.try_get::<DbTime, _>("updated_at")?.0,
                })
            }

            fn access_row(r: &<$db as sqlx::Database>::Row) -> Result<LibraryAccess, sqlx::Error> {
                let member: Option<&str> = r.try_get("member_role")?;
                Ok(LibraryAccess { library: Self::library_row(r)?, role: member.map(role).transpose()? })
            }

            fn document_row(r: &<$db as sqlx::Database>::Row) -> Result<DocumentRecord, sqlx::Error> {
                Ok(DocumentRecord {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: DocumentId(r.try_get("document_id")?),
                    library_id: LibraryId(r.try_get("library_id")?),
                    name: Sealed(r.try_get("name")?),
                    name_tag: r.try_get("name_tag")?,
                    current_version: to_u64(r.try_get("current_version")?),
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    updated_at: r.try_get::<DbTime, _>("updated_at")?.0,
                })
            }

            fn version_row(r: &<$db as sqlx::Database>::Row, prefix: &str) -> Result<DocumentVersionRecord, sqlx::Error> {
                let col = |c: &str| format!("{prefix}{c}");
                Ok(DocumentVersionRecord {
                    tenant_id: TenantId(r.try_get(col("tenant_id").as_str())?),
                    document_id: DocumentId(r.try_get(col("document_id").as_str())?),
                    version: to_u64(r.try_get(col("version").as_str())?),
                    object_key: r.try_get(col("object_key").as_str())?,
                    size: to_u64(r.try_get(col("size").as_str())?),
                    content_type: r.try_get(col("content_type").as_str())?,
                    sha256: Sealed(r.try_get(col("sha256").as_str())?),
                    wrapped_key: r.try_get(col("wrapped_key").as_str())?,
                    created_by: UserId(r.try_get(col("created_by").as_str())?),
                    created_at: r.try_get::<DbTime, _>(col("created_at").as_str())?.0,
                })
            }

            fn document_with_version(r: &<$db as sqlx::Database>::Row) -> Result<DocumentWithVersion, sqlx::Error> {
                Ok(DocumentWithVersion { document: Self::document_row(r)?, version: Self::version_row(r, "v_")? })
            }

            /// Locks the library row (a write first, so SQLite takes its lock at once) and tells
            /// whether it is on legal hold. `NotFound` if absent.
            async fn lock_library(
                tx: &mut sqlx::Transaction<'static, $db>,
                tenant: TenantId,
                library: LibraryId,
            ) -> StoreResult<bool> {
                let hold: Option<bool> = sqlx::query_scalar(
                    "UPDATE libraries SET updated_at = updated_at WHERE tenant_id = $1 AND library_id = $2 RETURNING legal_hold",
                )
                .bind(tenant.0)
                .bind(library.0)
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error)?;
                hold.ok_or(StoreError::NotFound)
            }
        }

        #[async_trait]
        impl LibraryStore for $store {
            async fn create_library(&self, l: &LibraryRecord) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                sqlx::query(
                    "INSERT INTO libraries (tenant_id, library_id, name, description, legal_hold, wrapped_key, key_version, \
                     created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(l.tenant_id.0)
                .bind(l.id.0)
                .bind(&l.name.0)
                .bind(l.description.as_ref().map(|d| &d.0))
                .bind(l.legal_hold)
                .bind(&l.wrapped_key)
                .bind(i64::from(l.key_version))
                .bind(l.created_by.0)
                .bind(DbTime(l.created_at))
                .bind(DbTime(l.updated_at))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                sqlx::query(
                    "INSERT INTO library_members (tenant_id, library_id, user_id, role, added_at) VALUES ($1, $2, $3, 'manager', $4)",
                )
                .bind(l.tenant_id.0)
                .bind(l.id.0)
                .bind(l.created_by.0)
                .bind(DbTime(l.created_at))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                tx.commit().await.map_err(store_error)
            }

            async fn get_library(&self, tenant: TenantId, viewer: UserId, id: LibraryId) -> StoreResult<LibraryAccess> {
                let sql = format!(
                    "SELECT {LIBRARY_COLUMNS}, m.role AS member_role FROM libraries l \
                     LEFT JOIN library_members m ON m.tenant_id = l.tenant_id AND m.library_id = l.library_id AND m.user_id = $3 \
                     WHERE l.tenant_id = $1 AND l.library_id = $2"
                );
                let row =
                    sqlx::query(&sql).bind(tenant.0).bind(id.0).bind(viewer.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::access_row(&row).map_err(store_error)
            }

            async fn list_libraries(
                &self,
                tenant: TenantId,
                viewer: UserId,
                all: bool,
                page: PageRequest,
            ) -> StoreResult<Page<LibraryAccess>> {
                let join = if all { "LEFT JOIN" } else { "JOIN" };
                let sql = format!(
                    "SELECT {LIBRARY_COLUMNS}, m.role AS member_role FROM libraries l \
                     {join} library_members m ON m.tenant_id = l.tenant_id AND m.library_id = l.library_id AND m.user_id = $2 \
                     WHERE l.tenant_id = $1 AND l.library_id < $3 ORDER BY l.library_id DESC LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(viewer.0)
                    .bind(page.after.unwrap_or(Uuid::max()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let items = rows.iter().map(Self::access_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(items, page, |a| a.library.id.0))
            }

            async fn update_library(
                &self,
                tenant: TenantId,
                id: LibraryId,
                name: &Sealed,
                description: Option<&Sealed>,
                legal_hold: bool,
                at: OffsetDateTime,
            ) -> StoreResult<()> {
                let r = sqlx::query(
                    "UPDATE libraries SET name = $3, description = $4, legal_hold = $5, updated_at = $6 \
                     WHERE tenant_id = $1 AND library_id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(&name.0)
                .bind(description.map(|d| &d.0))
                .bind(legal_hold)
                .bind(DbTime(at))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn delete_library(&self, tenant: TenantId, id: LibraryId) -> StoreResult<Vec<String>> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                if Self::lock_library(&mut tx, tenant, id).await? {
                    return Err(StoreError::Constraint("legal_hold".into()));
                }
                let objects: Vec<String> = sqlx::query_scalar(
                    "SELECT v.object_key FROM document_versions v JOIN documents d \
                     ON d.tenant_id = v.tenant_id AND d.document_id = v.document_id \
                     WHERE d.tenant_id = $1 AND d.library_id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await
                .map_err(store_error)?;
                for sql in [
                    "DELETE FROM document_versions WHERE tenant_id = $1 AND document_id IN \
                     (SELECT document_id FROM documents WHERE tenant_id = $1 AND library_id = $2)",
                    "DELETE FROM documents WHERE tenant_id = $1 AND library_id = $2",
                    "DELETE FROM library_members WHERE tenant_id = $1 AND library_id = $2",
                    "DELETE FROM libraries WHERE tenant_id = $1 AND library_id = $2",
                ] {
                    sqlx::query(sql).bind(tenant.0).bind(id.0).execute(&mut *tx).await.map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)?;
                Ok(objects)
            }

            async fn library_key(&self, tenant: TenantId, id: LibraryId) -> StoreResult<Option<Vec<u8>>> {
                sqlx::query_scalar("SELECT wrapped_key FROM libraries WHERE tenant_id = $1 AND library_id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)
            }

            async fn list_members(&self, tenant: TenantId, library: LibraryId) -> StoreResult<Vec<LibraryMember>> {
                let rows = sqlx::query(
                    "SELECT m.user_id, u.email, u.display_name, m.role, m.added_at FROM library_members m \
                     JOIN users u ON u.tenant_id = m.tenant_id AND u.user_id = m.user_id \
                     WHERE m.tenant_id = $1 AND m.library_id = $2 ORDER BY u.email",
                )
                .bind(tenant.0)
                .bind(library.0)
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                rows.iter()
                    .map(|r| -> Result<LibraryMember, sqlx::Error> {
                        Ok(LibraryMember {
                            user_id: UserId(r.try_get("user_id")?),
                            email: r.try_get("email")?,
                            display_name: r.try_get("display_name")?,
                            role: role(r.try_get::<&str, _>("role")?)?,
                            added_at: r.try_get::<DbTime, _>("added_at")?.0,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(store_error)
            }

            async fn put_member(
                &self,
                tenant: TenantId,
                library: LibraryId,
                user: UserId,
                member_role: LibraryRole,
                at: OffsetDateTime,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                Self::lock_library(&mut tx, tenant, library).await?;
                let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.0)
                    .bind(user.0)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(store_error)?;
                if exists == 0 {
                    return Err(StoreError::NotFound);
                }
                sqlx::query(
                    "INSERT INTO library_members (tenant_id, library_id, user_id, role, added_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (tenant_id, library_id, user_id) DO UPDATE SET role = excluded.role",
                )
                .bind(tenant.0)
                .bind(library.0)
                .bind(user.0)
                .bind(member_role.as_str())
                .bind(DbTime(at))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                tx.commit().await.map_err(store_error)
            }

            async fn remove_member(&self, tenant: TenantId, library: LibraryId, user: UserId) -> StoreResult<bool> {
                let r = sqlx::query("DELETE FROM library_members WHERE tenant_id = $1 AND library_id = $2 AND user_id = $3")
                    .bind(tenant.0)
                    .bind(library.0)
                    .bind(user.0)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(r.rows_affected() > 0)
            }

            async fn find_document(
                &self,
                tenant: TenantId,
                library: LibraryId,
                name_tag: &[u8],
            ) -> StoreResult<Option<DocumentRecord>> {
                let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM documents d WHERE d.tenant_id = $1 AND d.library_id = $2 AND d.name_tag = $3");
                let row = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(library.0)
                    .bind(name_tag)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                row.as_ref().map(Self::document_row).transpose().map_err(store_error)
            }

            async fn insert_document_version(
                &self,
                d: &DocumentRecord,
                v: &DocumentVersionRecord,
            ) -> StoreResult<VersionInsert> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                Self::lock_library(&mut tx, d.tenant_id, d.library_id).await?;
                if d.current_version <= 1 {
                    let r = sqlx::query(
                        "INSERT INTO documents (tenant_id, document_id, library_id, name, name_tag, current_version, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(d.tenant_id.0)
                    .bind(d.id.0)
                    .bind(d.library_id.0)
                    .bind(&d.name.0)
                    .bind(&d.name_tag)
                    .bind(to_i64(d.current_version))
                    .bind(DbTime(d.created_at))
                    .bind(DbTime(d.updated_at))
                    .execute(&mut *tx)
                    .await;
                    match r {
                        Ok(_) => {}
                        Err(e) if is_unique_violation(&e) => return Ok(VersionInsert::Conflict),
                        Err(e) => return Err(store_error(e)),
                    }
                } else {
                    let r = sqlx::query(
                        "UPDATE documents SET current_version = $3, updated_at = $4 \
                         WHERE tenant_id = $1 AND document_id = $2 AND current_version = $5",
                    )
                    .bind(d.tenant_id.0)
                    .bind(d.id.0)
                    .bind(to_i64(d.current_version))
                    .bind(DbTime(d.updated_at))
                    .bind(to_i64(d.current_version - 1))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                    if r.rows_affected() == 0 {
                        return Ok(VersionInsert::Conflict);
                    }
                }
                sqlx::query(
                    "INSERT INTO document_versions (tenant_id, document_id, version, object_key, size, content_type, sha256, \
                     wrapped_key, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(v.tenant_id.0)
                .bind(v.document_id.0)
                .bind(to_i64(v.version))
                .bind(&v.object_key)
                .bind(to_i64(v.size))
                .bind(&v.content_type)
                .bind(&v.sha256.0)
                .bind(&v.wrapped_key)
                .bind(v.created_by.0)
                .bind(DbTime(v.created_at))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(VersionInsert::Stored)
            }

            async fn get_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<DocumentRecord> {
                let sql = format!("SELECT {DOCUMENT_COLUMNS} FROM documents d WHERE d.tenant_id = $1 AND d.document_id = $2");
                let row = sqlx::query(&sql).bind(tenant.0).bind(id.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::document_row(&row).map_err(store_error)
            }

            async fn get_document_version(
                &self,
                tenant: TenantId,
                id: DocumentId,
                version: Option<u64>,
            ) -> StoreResult<DocumentWithVersion> {
                let sql = format!(
                    "SELECT {DOCUMENT_COLUMNS}, {} FROM documents d JOIN document_versions v \
                     ON v.tenant_id = d.tenant_id AND v.document_id = d.document_id \
                     WHERE d.tenant_id = $1 AND d.document_id = $2 AND v.version = COALESCE($3, d.current_version)",
                    prefixed_versions()
                );
                let row = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(version.map(to_i64))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                Self::document_with_version(&row).map_err(store_error)
            }

            async fn list_documents(
                &self,
                tenant: TenantId,
                library: LibraryId,
                page: PageRequest,
            ) -> StoreResult<Page<DocumentWithVersion>> {
                let sql = format!(
                    "SELECT {DOCUMENT_COLUMNS}, {} FROM documents d JOIN document_versions v \
                     ON v.tenant_id = d.tenant_id AND v.document_id = d.document_id AND v.version = d.current_version \
                     WHERE d.tenant_id = $1 AND d.library_id = $2 AND d.document_id < $3 ORDER BY d.document_id DESC LIMIT $4",
                    prefixed_versions()
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(library.0)
                    .bind(page.after.unwrap_or(Uuid::max()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let items = rows.iter().map(Self::document_with_version).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(items, page, |d| d.document.id.0))
            }

            async fn list_document_versions(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Vec<DocumentVersionRecord>> {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS} FROM document_versions v WHERE v.tenant_id = $1 AND v.document_id = $2 ORDER BY v.version DESC"
                );
                let rows = sqlx::query(&sql).bind(tenant.0).bind(id.0).fetch_all(&self.pool).await.map_err(store_error)?;
                rows.iter().map(|r| Self::version_row(r, "")).collect::<Result<Vec<_>, _>>().map_err(store_error)
            }

            async fn delete_document(&self, tenant: TenantId, id: DocumentId) -> StoreResult<Vec<String>> {
                let library: Option<Uuid> =
                    sqlx::query_scalar("SELECT library_id FROM documents WHERE tenant_id = $1 AND document_id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(store_error)?;
                let library = LibraryId(library.ok_or(StoreError::NotFound)?);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                if Self::lock_library(&mut tx, tenant, library).await? {
                    return Err(StoreError::Constraint("legal_hold".into()));
                }
                let objects: Vec<String> =
                    sqlx::query_scalar("SELECT object_key FROM document_versions WHERE tenant_id = $1 AND document_id = $2")
                        .bind(tenant.0)
                        .bind(id.0)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(store_error)?;
                sqlx::query("DELETE FROM document_versions WHERE tenant_id = $1 AND document_id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let r = sqlx::query("DELETE FROM documents WHERE tenant_id = $1 AND document_id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                tx.commit().await.map_err(store_error)?;
                Ok(objects)
            }

            async fn document_objects(&self, tenant: TenantId) -> StoreResult<Vec<String>> {
                sqlx::query_scalar("SELECT object_key FROM document_versions WHERE tenant_id = $1 ORDER BY object_key")
                    .bind(tenant.0)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)
            }
        }

        #[async_trait]
        impl KeyStore for $store {
            async fn count_wrapped_keys(&self, tenant: TenantId) -> StoreResult<Vec<KeyVersionCount>> {
                let mut out = Vec::new();
                for kind in KINDS {
                    let (table, _, extra) = kind_table(kind);
                    let sql = format!(
                        "SELECT key_version, COUNT(*) AS n FROM {table} WHERE tenant_id = $1{extra} GROUP BY key_version ORDER BY key_version"
                    );
                    let rows = sqlx::query(&sql).bind(tenant.0).fetch_all(&self.pool).await.map_err(store_error)?;
                    for r in rows {
                        let version: Option<i64> = r.try_get("key_version").map_err(store_error)?;
                        let n: i64 = r.try_get("n").map_err(store_error)?;
                        out.push(KeyVersionCount {
                            kind,
                            key_version: version.and_then(|v| u32::try_from(v).ok()),
                            count: to_u64(n),
                        });
                    }
                }
                Ok(out)
            }

            async fn wrapped_keys_below(
                &self,
                tenant: TenantId,
                version: u32,
                after: Option<(WrappedKeyKind, Uuid)>,
                limit: u32,
            ) -> StoreResult<Vec<KekWrapped>> {
                let mut out = Vec::new();
                let start = after.map_or(0, |(k, _)| KINDS.iter().position(|x| *x == k).unwrap_or(0));
                for (i, kind) in KINDS.iter().copied().enumerate().skip(start) {
                    let remaining = i64::from(limit) - out.len() as i64;
                    if remaining <= 0 {
                        break;
                    }
                    let (table, id_col, extra) = kind_table(kind);
                    let after_id = match after {
                        Some((k, id)) if i == start && k == kind => id,
                        _ => Uuid::nil(),
                    };
                    let sql = format!(
                        "SELECT {id_col} AS id, wrapped_key, key_version FROM {table} WHERE tenant_id = $1{extra} \
                         AND (key_version IS NULL OR key_version < $2) AND {id_col} > $3 ORDER BY {id_col} LIMIT $4"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(tenant.0)
                        .bind(i64::from(version))
                        .bind(after_id)
                        .bind(remaining)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(store_error)?;
                    for r in rows {
                        out.push(KekWrapped {
                            kind,
                            id: r.try_get("id").map_err(store_error)?,
                            wrapped: r.try_get("wrapped_key").map_err(store_error)?,
                            key_version: r
                                .try_get::<Option<i64>, _>("key_version")
                                .map_err(store_error)?
                                .and_then(|v| u32::try_from(v).ok()),
                        });
                    }
                }
                Ok(out)
            }

            async fn replace_wrapped_key(
                &self,
                tenant: TenantId,
                key: &KekWrapped,
                new_wrapped: &[u8],
                new_version: u32,
            ) -> StoreResult<bool> {
                let (table, id_col, _) = kind_table(key.kind);
                let sql = format!(
                    "UPDATE {table} SET wrapped_key = $3, key_version = $4 WHERE tenant_id = $1 AND {id_col} = $2 AND wrapped_key = $5"
                );
                let r = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(key.id)
                    .bind(new_wrapped)
                    .bind(i64::from(new_version))
                    .bind(&key.wrapped)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(r.rows_affected() > 0)
            }

            async fn tenants_with_keys(&self) -> StoreResult<Vec<TenantId>> {
                let ids: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT tenant_id FROM tenant_keys UNION SELECT tenant_id FROM libraries \
                     UNION SELECT tenant_id FROM conversations WHERE wrapped_key IS NOT NULL",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(ids.into_iter().map(TenantId).collect())
            }

            async fn put_conversation_key(
                &self,
                tenant: TenantId,
                conversation: ConversationId,
                wrapped: &[u8],
                key_version: u32,
            ) -> StoreResult<Vec<u8>> {
                let key: Option<Vec<u8>> = sqlx::query_scalar(
                    "UPDATE conversations SET key_version = CASE WHEN wrapped_key IS NULL THEN $4 ELSE key_version END, \
                     wrapped_key = COALESCE(wrapped_key, $3) WHERE tenant_id = $1 AND conversation_id = $2 RETURNING wrapped_key",
                )
                .bind(tenant.0)
                .bind(conversation.0)
                .bind(wrapped)
                .bind(i64::from(key_version))
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?
                .flatten();
                key.ok_or(StoreError::NotFound)
            }

            async fn put_tenant_key(&self, tenant: TenantId, wrapped: &[u8], key_version: u32) -> StoreResult<Vec<u8>> {
                sqlx::query(
                    "INSERT INTO tenant_keys (tenant_id, wrapped_key, key_version, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(tenant.0)
                .bind(wrapped)
                .bind(i64::from(key_version))
                .bind(DbTime(OffsetDateTime::now_utc()))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?
                    .ok_or(StoreError::NotFound)
            }
        }
    };
}

/// The version columns again, renamed `v_*`, for queries that read a document and a version.
fn prefixed_versions() -> String {
    VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("{c} AS v_{}", c.trim_start_matches("v.")))
        .collect::<Vec<_>>()
        .join(", ")
}

library_store_impl!(SqliteStore, sqlx::Sqlite);
library_store_impl!(PgStore, sqlx::Postgres);
