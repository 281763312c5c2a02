//! The store, written once. SQLite and PostgreSQL accept the same SQL here (`$n` parameters,
//! `RETURNING`, row values, `ON CONFLICT`), and the types bound are encoded natively by each
//! backend; the macro compiles this one body for both pools.
//!
//! Write transactions begin with a write, so SQLite takes its write lock at once and concurrent
//! writers queue on the busy timeout instead of failing on a stale snapshot.

use async_trait::async_trait;
use conclave_core::content::Sealed;
use conclave_core::ids::*;
use conclave_core::page::{Page, PageRequest};
use conclave_core::principal::{Role, Scope};
use conclave_core::records::*;
use conclave_core::settings::TenantSettings;
use conclave_core::store::{
    constraints, AuditFilter, Lease, PartialSave, PartialSaved, ReplyContext, Store, StoreResult,
};
use conclave_core::StoreError;
use sqlx::types::Json;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db_time::DbTime;
use crate::error::{is_unique_violation, store_error};
use crate::{PgStore, SqliteStore};

const USER_COLUMNS: &str = "tenant_id, user_id, email, display_name, role, password_hash, must_change_password, disabled, created_at, updated_at, tokens_valid_after";
/// A new tenant: id, name, whether it is the default one, settings, creation time.
const INSERT_TENANT: &str = "INSERT INTO tenants (tenant_id, name, is_default, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)";

/// A unique violation as the named constraint; anything else as it is.
fn unique_as(constraint: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy {
    move |e| if is_unique_violation(&e) { StoreError::Constraint(constraint.into()) } else { store_error(e) }
}

/// Moves a user's single sign-on cut-off forward to `$3`, never back.
const CUT_OFF_FORWARD_TO_3: &str =
    "tokens_valid_after = CASE WHEN tokens_valid_after IS NULL OR tokens_valid_after < $3 THEN $3 ELSE tokens_valid_after END";
const SESSION_COLUMNS: &str = "tenant_id, session_id, user_id, created_at, expires_at, last_used_at, user_agent, ip";
const AGENT_COLUMNS: &str = "tenant_id, agent_id, owner_id, name, description, instructions, model, temperature, top_p, max_tokens, library_ids, visibility, created_at, updated_at";
const CONVERSATION_COLUMNS: &str = "tenant_id, conversation_id, owner_id, agent_id, title, created_at, updated_at";
const MESSAGE_COLUMNS: &str = "tenant_id, message_id, conversation_id, role, content, status, model, prompt_tokens, completion_tokens, finish_reason, error, reply_to, created_at, updated_at";
const API_KEY_COLUMNS: &str =
    "tenant_id, api_key_id, user_id, name, secret_hash, scopes, created_at, expires_at, last_used_at";

/// A column name with `prefix` (aliased columns of a join); borrowed when there is none.
fn prefixed(prefix: &str, name: &'static str) -> std::borrow::Cow<'static, str> {
    if prefix.is_empty() {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(format!("{prefix}{name}"))
    }
}

fn now() -> DbTime {
    DbTime(OffsetDateTime::now_utc())
}

fn bad_value(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unexpected {what} '{value}' in the database").into())
}

/// A stored enum from its text, by the same names the API uses (serde's snake_case, which each
/// enum's `as_str` writes).
fn text_enum<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| bad_value(what, s))
}

fn to_u32(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// Maps a row-returning update's "no row" to `NotFound`.
fn expect_one(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

macro_rules! store_impl {
    ($store:ty, $db:ty) => {
        impl $store {
            fn user_row(r: &<$db as sqlx::Database>::Row) -> Result<User, sqlx::Error> {
                Ok(User {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: UserId(r.try_get("user_id")?),
                    email: r.try_get("email")?,
                    display_name: r.try_get("display_name")?,
                    role: text_enum("role", r.try_get::<&str, _>("role")?)?,
                    disabled: r.try_get("disabled")?,
                    must_change_password: r.try_get("must_change_password")?,
                    tokens_valid_after: r.try_get::<Option<DbTime>, _>("tokens_valid_after")?.map(|t| t.0),
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    updated_at: r.try_get::<DbTime, _>("updated_at")?.0,
                })
            }

            fn login_row(r: &<$db as sqlx::Database>::Row) -> Result<LoginRecord, sqlx::Error> {
                Ok(LoginRecord { user: Self::user_row(r)?, password_hash: r.try_get("password_hash")? })
            }

            fn tenant_row(r: &<$db as sqlx::Database>::Row) -> Result<Tenant, sqlx::Error> {
                Ok(Tenant {
                    id: TenantId(r.try_get("tenant_id")?),
                    name: r.try_get("name")?,
                    settings: r.try_get::<Json<TenantSettings>, _>("settings")?.0,
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    updated_at: r.try_get::<DbTime, _>("updated_at")?.0,
                })
            }

            fn api_key_row(r: &<$db as sqlx::Database>::Row) -> Result<ApiKeyRecord, sqlx::Error> {
                Ok(ApiKeyRecord {
                    key: ApiKey {
                        tenant_id: TenantId(r.try_get("tenant_id")?),
                        id: ApiKeyId(r.try_get("api_key_id")?),
                        user_id: UserId(r.try_get("user_id")?),
                        name: r.try_get("name")?,
                        scopes: r.try_get::<Json<Vec<Scope>>, _>("scopes")?.0,
                        created_at: r.try_get::<DbTime, _>("created_at")?.0,
                        expires_at: r.try_get::<Option<DbTime>, _>("expires_at")?.map(|t| t.0),
                        last_used_at: r.try_get::<Option<DbTime>, _>("last_used_at")?.map(|t| t.0),
                    },
                    secret_hash: r.try_get("secret_hash")?,
                })
            }

            fn agent_row(r: &<$db as sqlx::Database>::Row) -> Result<AgentRecord, sqlx::Error> {
                Self::agent_row_as(r, "")
            }

            /// An agent from columns named with `prefix` (joined with another table's).
            fn agent_row_as(r: &<$db as sqlx::Database>::Row, prefix: &str) -> Result<AgentRecord, sqlx::Error> {
                let col = |name: &'static str| prefixed(prefix, name);
                Ok(AgentRecord {
                    tenant_id: TenantId(r.try_get(&*col("tenant_id"))?),
                    id: AgentId(r.try_get(&*col("agent_id"))?),
                    owner_id: UserId(r.try_get(&*col("owner_id"))?),
                    name: Sealed(r.try_get(&*col("name"))?),
                    description: r.try_get::<Option<Vec<u8>>, _>(&*col("description"))?.map(Sealed),
                    instructions: Sealed(r.try_get(&*col("instructions"))?),
                    model: r.try_get(&*col("model"))?,
                    temperature: r.try_get(&*col("temperature"))?,
                    top_p: r.try_get(&*col("top_p"))?,
                    max_tokens: to_u32(r.try_get(&*col("max_tokens"))?),
                    library_ids: r.try_get::<Json<Vec<LibraryId>>, _>(&*col("library_ids"))?.0,
                    visibility: text_enum("visibility", r.try_get::<&str, _>(&*col("visibility"))?)?,
                    created_at: r.try_get::<DbTime, _>(&*col("created_at"))?.0,
                    updated_at: r.try_get::<DbTime, _>(&*col("updated_at"))?.0,
                })
            }

            fn conversation_row(r: &<$db as sqlx::Database>::Row) -> Result<ConversationRecord, sqlx::Error> {
                Ok(ConversationRecord {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: ConversationId(r.try_get("conversation_id")?),
                    owner_id: UserId(r.try_get("owner_id")?),
                    agent_id: AgentId(r.try_get("agent_id")?),
                    title: r.try_get::<Option<Vec<u8>>, _>("title")?.map(Sealed),
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    updated_at: r.try_get::<DbTime, _>("updated_at")?.0,
                })
            }

            fn message_row(r: &<$db as sqlx::Database>::Row) -> Result<MessageRecord, sqlx::Error> {
                let prompt: Option<i64> = r.try_get("prompt_tokens")?;
                let completion: Option<i64> = r.try_get("completion_tokens")?;
                Ok(MessageRecord {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: MessageId(r.try_get("message_id")?),
                    conversation_id: ConversationId(r.try_get("conversation_id")?),
                    role: text_enum("message role", r.try_get::<&str, _>("role")?)?,
                    content: Sealed(r.try_get("content")?),
                    status: text_enum("message status", r.try_get::<&str, _>("status")?)?,
                    model: r.try_get("model")?,
                    usage: match (to_u32(prompt), to_u32(completion)) {
                        (Some(p), Some(c)) => Some(Usage { prompt_tokens: p, completion_tokens: c }),
                        _ => None,
                    },
                    finish_reason: r.try_get("finish_reason")?,
                    error: r.try_get("error")?,
                    reply_to: r.try_get::<Option<Uuid>, _>("reply_to")?.map(MessageId),
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    updated_at: r.try_get::<DbTime, _>("updated_at")?.0,
                })
            }

            fn token_row(r: &<$db as sqlx::Database>::Row) -> Result<TokenRecord, sqlx::Error> {
                Ok(TokenRecord {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: TokenId(r.try_get("token_id")?),
                    session_id: SessionId(r.try_get("session_id")?),
                    user_id: UserId(r.try_get("user_id")?),
                    kind: text_enum("token kind", r.try_get::<&str, _>("kind")?)?,
                    secret_hash: r.try_get("secret_hash")?,
                    expires_at: r.try_get::<DbTime, _>("expires_at")?.0,
                    used_at: r.try_get::<Option<DbTime>, _>("used_at")?.map(|t| t.0),
                    session_revoked: r.try_get::<Option<DbTime>, _>("revoked_at")?.is_some(),
                    session: SessionTimes {
                        created_at: r.try_get::<DbTime, _>("session_created_at")?.0,
                        expires_at: r.try_get::<DbTime, _>("session_expires_at")?.0,
                        last_used_at: r.try_get::<DbTime, _>("session_last_used_at")?.0,
                    },
                })
            }

            fn session_row(r: &<$db as sqlx::Database>::Row) -> Result<SessionRecord, sqlx::Error> {
                Ok(SessionRecord {
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    id: SessionId(r.try_get("session_id")?),
                    user_id: UserId(r.try_get("user_id")?),
                    times: SessionTimes {
                        created_at: r.try_get::<DbTime, _>("created_at")?.0,
                        expires_at: r.try_get::<DbTime, _>("expires_at")?.0,
                        last_used_at: r.try_get::<DbTime, _>("last_used_at")?.0,
                    },
                    user_agent: r.try_get("user_agent")?,
                    ip: r.try_get("ip")?,
                })
            }

            /// Refuses (`last_admin`) a change that leaves the tenant without an active
            /// administrator; the caller's transaction is then dropped, which rolls it back.
            async fn an_admin_remains(tx: &mut sqlx::Transaction<'_, $db>, tenant: TenantId) -> StoreResult<()> {
                let admins: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND role = 'admin' AND disabled = FALSE",
                )
                .bind(tenant.0)
                .fetch_one(&mut **tx)
                .await
                .map_err(store_error)?;
                if admins == 0 {
                    return Err(StoreError::Constraint("last_admin".into()));
                }
                Ok(())
            }

            /// The user row and its global email entry, inside the caller's transaction.
            async fn insert_user(tx: &mut sqlx::Transaction<'_, $db>, tenant: TenantId, user: NewUser) -> StoreResult<User> {
                // Counting through the tenant row serialises concurrent sign-ups: exactly one
                // of them can be the first.
                let created: i64 = sqlx::query_scalar(
                    "UPDATE tenants SET users_created = users_created + 1 WHERE tenant_id = $1 RETURNING users_created",
                )
                .bind(tenant.0)
                .fetch_one(&mut **tx)
                .await
                .map_err(store_error)?;
                let role = if user.first_user_becomes_admin && created == 1 { Role::Admin } else { user.role };
                let email_taken = unique_as(constraints::USER_EMAIL_UNIQUE);
                sqlx::query("INSERT INTO user_emails (email, tenant_id, user_id) VALUES ($1, $2, $3)")
                    .bind(&user.email)
                    .bind(tenant.0)
                    .bind(user.id.0)
                    .execute(&mut **tx)
                    .await
                    .map_err(email_taken)?;
                let t = now();
                let sql = format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, $8, $8, NULL) RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(user.id.0)
                    .bind(&user.email)
                    .bind(&user.display_name)
                    .bind(role.as_str())
                    .bind(&user.password_hash)
                    .bind(user.must_change_password)
                    .bind(t)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(email_taken)?;
                Self::user_row(&row).map_err(store_error)
            }

            /// Replaces the user's recovery codes, inside the caller's transaction.
            async fn insert_recovery_codes(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant: TenantId,
                user: UserId,
                hashes: &[Vec<u8>],
            ) -> Result<(), sqlx::Error> {
                sqlx::query("DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.0)
                    .bind(user.0)
                    .execute(&mut **tx)
                    .await?;
                for hash in hashes {
                    sqlx::query("INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash, used_at) VALUES ($1, $2, $3, NULL)")
                        .bind(tenant.0)
                        .bind(user.0)
                        .bind(hash)
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            async fn insert_tokens(
                tx: &mut sqlx::Transaction<'_, $db>,
                tokens: &[TokenRecord],
            ) -> Result<(), sqlx::Error> {
                for t in tokens {
                    sqlx::query("INSERT INTO credentials (credential_id, tenant_id, kind) VALUES ($1, $2, 'token')")
                        .bind(t.id.0)
                        .bind(t.tenant_id.0)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO session_tokens (tenant_id, token_id, session_id, user_id, kind, secret_hash, expires_at, used_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
                    )
                    .bind(t.tenant_id.0)
                    .bind(t.id.0)
                    .bind(t.session_id.0)
                    .bind(t.user_id.0)
                    .bind(t.kind.as_str())
                    .bind(&t.secret_hash)
                    .bind(DbTime(t.expires_at))
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }

            /// Removes the global lookup rows of a session set before its tokens cascade away.
            async fn forget_session_tokens(
                tx: &mut sqlx::Transaction<'_, $db>,
                tenant: TenantId,
                where_sessions: &str,
                arg: Uuid,
            ) -> Result<(), sqlx::Error> {
                let sql = format!(
                    "DELETE FROM credentials WHERE credential_id IN \
                     (SELECT token_id FROM session_tokens WHERE tenant_id = $1 AND session_id IN \
                      (SELECT session_id FROM sessions WHERE tenant_id = $1 AND {where_sessions}))"
                );
                sqlx::query(&sql).bind(tenant.0).bind(arg).execute(&mut **tx).await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(store_error)?;
                Ok(())
            }

            async fn default_tenant(&self, name: &str) -> StoreResult<Tenant> {
                let select = "SELECT tenant_id, name, settings, created_at, updated_at FROM tenants WHERE is_default = TRUE";
                if let Some(row) = sqlx::query(select).fetch_optional(&self.pool).await.map_err(store_error)? {
                    return Self::tenant_row(&row).map_err(store_error);
                }
                let t = now();
                sqlx::query(&format!("{INSERT_TENANT} ON CONFLICT DO NOTHING"))
                .bind(TenantId::new().0)
                .bind(name)
                .bind(true)
                .bind(Json(TenantSettings::default()))
                .bind(t)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                let row = sqlx::query(select).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::tenant_row(&row).map_err(store_error)
            }

            async fn create_tenant(&self, name: &str) -> StoreResult<Tenant> {
                let row = sqlx::query(&format!("{INSERT_TENANT} RETURNING tenant_id, name, settings, created_at, updated_at"))
                .bind(TenantId::new().0)
                .bind(name)
                .bind(false)
                .bind(Json(TenantSettings::default()))
                .bind(now())
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
                Self::tenant_row(&row).map_err(store_error)
            }

            async fn get_tenant(&self, tenant: TenantId) -> StoreResult<Tenant> {
                let row = sqlx::query("SELECT tenant_id, name, settings, created_at, updated_at FROM tenants WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                Self::tenant_row(&row).map_err(store_error)
            }

            async fn update_tenant(&self, tenant: TenantId, name: &str, settings: &TenantSettings) -> StoreResult<Tenant> {
                let row = sqlx::query(
                    "UPDATE tenants SET name = $2, settings = $3, updated_at = $4 WHERE tenant_id = $1 \
                     RETURNING tenant_id, name, settings, created_at, updated_at",
                )
                .bind(tenant.0)
                .bind(name)
                .bind(Json(settings))
                .bind(now())
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
                Self::tenant_row(&row).map_err(store_error)
            }

            async fn create_user(&self, tenant: TenantId, user: NewUser) -> StoreResult<User> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let created = Self::insert_user(&mut tx, tenant, user).await?;
                tx.commit().await.map_err(store_error)?;
                Ok(created)
            }

            async fn find_login(&self, email: &str) -> StoreResult<Option<(TenantId, LoginRecord)>> {
                let sql = format!(
                    "SELECT {} FROM users u JOIN user_emails e ON e.tenant_id = u.tenant_id AND e.user_id = u.user_id WHERE e.email = $1",
                    USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ")
                );
                let row = sqlx::query(&sql).bind(email).fetch_optional(&self.pool).await.map_err(store_error)?;
                row.map(|r| Self::login_row(&r).map(|l| (l.user.tenant_id, l))).transpose().map_err(store_error)
            }

            async fn get_login(&self, tenant: TenantId, user: UserId) -> StoreResult<LoginRecord> {
                let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND user_id = $2");
                let row = sqlx::query(&sql).bind(tenant.0).bind(user.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::login_row(&row).map_err(store_error)
            }

            async fn get_user(&self, tenant: TenantId, user: UserId) -> StoreResult<User> {
                Ok(self.get_login(tenant, user).await?.user)
            }

            async fn list_users(&self, tenant: TenantId, page: PageRequest) -> StoreResult<Page<User>> {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(page.after.unwrap_or(Uuid::nil()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let users = rows.iter().map(Self::user_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(users, page, |u| u.id.0))
            }

            async fn update_user(&self, tenant: TenantId, user: UserId, patch: &UserPatch) -> StoreResult<User> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                // Locks the tenant row so two admins demoting each other cannot both succeed.
                sqlx::query("UPDATE tenants SET users_created = users_created WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let sql = format!(
                    "UPDATE users SET role = COALESCE($3, role), disabled = COALESCE($4, disabled), \
                     display_name = COALESCE($5, display_name), updated_at = $6 \
                     WHERE tenant_id = $1 AND user_id = $2 RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(user.0)
                    .bind(patch.role.map(Role::as_str))
                    .bind(patch.disabled)
                    .bind(patch.display_name.as_deref())
                    .bind(now())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(store_error)?;
                Self::an_admin_remains(&mut tx, tenant).await?;
                let updated = Self::user_row(&row).map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(updated)
            }

            async fn set_password(&self, tenant: TenantId, user: UserId, hash: &str, must_change: bool) -> StoreResult<()> {
                let r = sqlx::query(
                    "UPDATE users SET password_hash = $3, must_change_password = $4, updated_at = $5 WHERE tenant_id = $1 AND user_id = $2",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(hash)
                .bind(must_change)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                expect_one(r.rows_affected())
            }

            async fn delete_user(&self, tenant: TenantId, user: UserId, heir: UserId) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let q = |sql: &'static str| sqlx::query(sql).bind(tenant.0).bind(user.0);
                q("UPDATE agents SET owner_id = $3 WHERE tenant_id = $1 AND owner_id = $2 AND visibility = 'tenant'")
                    .bind(heir.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                q("DELETE FROM agents WHERE tenant_id = $1 AND owner_id = $2").execute(&mut *tx).await.map_err(store_error)?;
                q("DELETE FROM credentials WHERE credential_id IN (SELECT api_key_id FROM api_keys WHERE tenant_id = $1 AND user_id = $2)")
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                Self::forget_session_tokens(&mut tx, tenant, "user_id = $2", user.0).await.map_err(store_error)?;
                q("DELETE FROM user_emails WHERE tenant_id = $1 AND user_id = $2").execute(&mut *tx).await.map_err(store_error)?;
                // Conversations, messages, API keys, sessions and tokens follow by cascade.
                let r = q("DELETE FROM users WHERE tenant_id = $1 AND user_id = $2").execute(&mut *tx).await.map_err(store_error)?;
                expect_one(r.rows_affected())?;
                tx.commit().await.map_err(store_error)
            }

            // --- identities and MFA ------------------------------------------------------------
            async fn find_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<(TenantId, UserId)>> {
                let row = sqlx::query("SELECT tenant_id, user_id FROM user_identities WHERE issuer = $1 AND subject = $2")
                    .bind(issuer)
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                row.map(|r| -> Result<_, sqlx::Error> {
                    Ok((TenantId(r.try_get("tenant_id")?), UserId(r.try_get("user_id")?)))
                })
                .transpose()
                .map_err(store_error)
            }

            async fn provision_identity(&self, tenant: TenantId, user: NewUser, issuer: &str, subject: &str) -> StoreResult<User> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let created = Self::insert_user(&mut tx, tenant, user).await?;
                sqlx::query(
                    "INSERT INTO user_identities (issuer, subject, tenant_id, user_id, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(issuer)
                .bind(subject)
                .bind(tenant.0)
                .bind(created.id.0)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(unique_as(constraints::IDENTITY_UNIQUE))?;
                tx.commit().await.map_err(store_error)?;
                Ok(created)
            }

            async fn update_identity_profile(
                &self,
                tenant: TenantId,
                user: UserId,
                email: &str,
                display_name: &str,
                role: Role,
            ) -> StoreResult<User> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                // Locks the tenant row, as `update_user` does, for the last-admin check.
                sqlx::query("UPDATE tenants SET users_created = users_created WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let email_taken = unique_as(constraints::USER_EMAIL_UNIQUE);
                sqlx::query("UPDATE user_emails SET email = $3 WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.0)
                    .bind(user.0)
                    .bind(email)
                    .execute(&mut *tx)
                    .await
                    .map_err(email_taken)?;
                let sql = format!(
                    "UPDATE users SET email = $3, display_name = $4, role = $5, updated_at = $6 \
                     WHERE tenant_id = $1 AND user_id = $2 RETURNING {USER_COLUMNS}"
                );
                let row = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(user.0)
                    .bind(email)
                    .bind(display_name)
                    .bind(role.as_str())
                    .bind(now())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(email_taken)?;
                Self::an_admin_remains(&mut tx, tenant).await?;
                let updated = Self::user_row(&row).map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(updated)
            }

            async fn find_sso_tenant(&self, issuer: &str, external_id: &str) -> StoreResult<Option<TenantId>> {
                let id: Option<Uuid> =
                    sqlx::query_scalar("SELECT tenant_id FROM sso_tenants WHERE issuer = $1 AND external_id = $2")
                        .bind(issuer)
                        .bind(external_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(store_error)?;
                Ok(id.map(TenantId))
            }

            async fn create_sso_tenant(&self, issuer: &str, external_id: &str, name: &str) -> StoreResult<TenantId> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let tenant = TenantId::new();
                let t = now();
                sqlx::query(INSERT_TENANT)
                .bind(tenant.0)
                .bind(name)
                .bind(false)
                .bind(Json(TenantSettings::default()))
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                let linked = sqlx::query(
                    "INSERT INTO sso_tenants (issuer, external_id, tenant_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(issuer)
                .bind(external_id)
                .bind(tenant.0)
                .bind(t)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                if linked.rows_affected() == 0 {
                    // A concurrent first sign-in linked it first: use that tenant.
                    tx.rollback().await.map_err(store_error)?;
                    return self.find_sso_tenant(issuer, external_id).await?.ok_or(StoreError::NotFound);
                }
                tx.commit().await.map_err(store_error)?;
                Ok(tenant)
            }

            async fn get_mfa(&self, tenant: TenantId, user: UserId) -> StoreResult<Option<MfaRecord>> {
                let row = sqlx::query(
                    "SELECT secret, enabled, last_step, \
                     (SELECT COUNT(*) FROM mfa_recovery_codes c WHERE c.tenant_id = m.tenant_id AND c.user_id = m.user_id AND c.used_at IS NULL) AS codes_left \
                     FROM user_mfa m WHERE tenant_id = $1 AND user_id = $2",
                )
                .bind(tenant.0)
                .bind(user.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
                row.map(|r| -> Result<MfaRecord, sqlx::Error> {
                    Ok(MfaRecord {
                        secret: Sealed(r.try_get("secret")?),
                        enabled: r.try_get("enabled")?,
                        last_step: r.try_get("last_step")?,
                        recovery_codes_left: r.try_get("codes_left")?,
                    })
                })
                .transpose()
                .map_err(store_error)
            }

            async fn put_pending_mfa(&self, tenant: TenantId, user: UserId, secret: &Sealed) -> StoreResult<()> {
                let t = now();
                let r = sqlx::query(
                    "INSERT INTO user_mfa (tenant_id, user_id, secret, enabled, last_step, created_at, updated_at) \
                     VALUES ($1, $2, $3, FALSE, NULL, $4, $4) \
                     ON CONFLICT (tenant_id, user_id) DO UPDATE SET secret = $3, last_step = NULL, updated_at = $4 \
                     WHERE user_mfa.enabled = FALSE",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(&secret.0)
                .bind(t)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                if r.rows_affected() == 0 {
                    return Err(StoreError::Constraint("mfa_enabled".into()));
                }
                Ok(())
            }

            async fn enable_mfa(&self, tenant: TenantId, user: UserId, step: i64, recovery: &[Vec<u8>]) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let r = sqlx::query(
                    "UPDATE user_mfa SET enabled = TRUE, last_step = $3, updated_at = $4 \
                     WHERE tenant_id = $1 AND user_id = $2 AND enabled = FALSE",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(step)
                .bind(now())
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                if r.rows_affected() == 0 {
                    tx.rollback().await.map_err(store_error)?;
                    return Ok(false);
                }
                Self::insert_recovery_codes(&mut tx, tenant, user, recovery).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(true)
            }

            async fn use_totp_step(&self, tenant: TenantId, user: UserId, step: i64) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE user_mfa SET last_step = $3 \
                     WHERE tenant_id = $1 AND user_id = $2 AND enabled = TRUE AND (last_step IS NULL OR last_step < $3)",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(step)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected() == 1)
            }

            async fn use_recovery_code(&self, tenant: TenantId, user: UserId, hash: &[u8]) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE mfa_recovery_codes SET used_at = $4 \
                     WHERE tenant_id = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(hash)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected() == 1)
            }

            async fn replace_recovery_codes(&self, tenant: TenantId, user: UserId, hashes: &[Vec<u8>]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                Self::insert_recovery_codes(&mut tx, tenant, user, hashes).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)
            }

            async fn delete_mfa(&self, tenant: TenantId, user: UserId) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let r = sqlx::query("DELETE FROM user_mfa WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.0)
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                sqlx::query("DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2")
                    .bind(tenant.0)
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(r.rows_affected() == 1)
            }

            async fn find_credential(&self, id: Uuid) -> StoreResult<Option<CredentialRef>> {
                let row = sqlx::query("SELECT tenant_id, kind FROM credentials WHERE credential_id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                let Some(row) = row else { return Ok(None) };
                let tenant = TenantId(row.try_get("tenant_id").map_err(store_error)?);
                let kind: &str = row.try_get("kind").map_err(store_error)?;
                Ok(match kind {
                    "api_key" => Some(CredentialRef::ApiKey(tenant)),
                    "token" => Some(CredentialRef::Token(tenant)),
                    _ => None,
                })
            }

            async fn create_session(&self, tenant: TenantId, session: &NewSession, tokens: &[TokenRecord]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let sql = format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
                sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(session.id.0)
                    .bind(session.user_id.0)
                    .bind(DbTime(session.times.created_at))
                    .bind(DbTime(session.times.expires_at))
                    .bind(DbTime(session.times.last_used_at))
                    .bind(&session.user_agent)
                    .bind(&session.ip)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                Self::insert_tokens(&mut tx, tokens).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)
            }

            async fn get_token(&self, tenant: TenantId, id: TokenId) -> StoreResult<TokenRecord> {
                let row = sqlx::query(
                    "SELECT t.tenant_id, t.token_id, t.session_id, t.user_id, t.kind, t.secret_hash, t.expires_at, t.used_at, s.revoked_at, \
                     s.created_at AS session_created_at, s.expires_at AS session_expires_at, s.last_used_at AS session_last_used_at \
                     FROM session_tokens t JOIN sessions s ON s.tenant_id = t.tenant_id AND s.session_id = t.session_id \
                     WHERE t.tenant_id = $1 AND t.token_id = $2",
                )
                .bind(tenant.0)
                .bind(id.0)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
                Self::token_row(&row).map_err(store_error)
            }

            async fn rotate_refresh(&self, tenant: TenantId, used: TokenId, at: OffsetDateTime, successors: &[TokenRecord]) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let session: Option<Uuid> = sqlx::query_scalar(
                    "UPDATE session_tokens SET used_at = $3 \
                     WHERE tenant_id = $1 AND token_id = $2 AND kind = 'refresh' AND used_at IS NULL RETURNING session_id",
                )
                .bind(tenant.0)
                .bind(used.0)
                .bind(DbTime(at))
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
                let Some(session) = session else {
                    tx.rollback().await.map_err(store_error)?;
                    return Ok(false);
                };
                sqlx::query("UPDATE sessions SET last_used_at = $3 WHERE tenant_id = $1 AND session_id = $2")
                    .bind(tenant.0)
                    .bind(session)
                    .bind(DbTime(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                Self::insert_tokens(&mut tx, successors).await.map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok(true)
            }

            async fn revoke_session(&self, tenant: TenantId, session: SessionId) -> StoreResult<()> {
                sqlx::query("UPDATE sessions SET revoked_at = $3 WHERE tenant_id = $1 AND session_id = $2 AND revoked_at IS NULL")
                    .bind(tenant.0)
                    .bind(session.0)
                    .bind(now())
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(())
            }

            async fn revoke_own_session(&self, tenant: TenantId, user: UserId, session: SessionId) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE sessions SET revoked_at = $4 WHERE tenant_id = $1 AND user_id = $2 AND session_id = $3 AND revoked_at IS NULL",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(session.0)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected() == 1)
            }

            async fn revoke_user_sessions(&self, tenant: TenantId, user: UserId, keep: Option<SessionId>) -> StoreResult<u64> {
                let r = sqlx::query(
                    "UPDATE sessions SET revoked_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL \
                     AND ($4 IS NULL OR session_id <> $4)",
                )
                .bind(tenant.0)
                .bind(user.0)
                .bind(now())
                .bind(keep.map(|s| s.0))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected())
            }

            async fn list_sessions(
                &self,
                tenant: TenantId,
                user: UserId,
                cutoffs: SessionCutoffs,
                page: PageRequest,
            ) -> StoreResult<Page<SessionRecord>> {
                let sql = format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL \
                     AND expires_at > $3 AND created_at > $4 AND last_used_at > $5 AND session_id < $6 \
                     ORDER BY session_id DESC LIMIT $7"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(user.0)
                    .bind(DbTime(cutoffs.now))
                    .bind(DbTime(cutoffs.created_since))
                    .bind(DbTime(cutoffs.used_since))
                    .bind(page.after.unwrap_or(Uuid::max()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let sessions = rows.iter().map(Self::session_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(sessions, page, |s| s.id.0))
            }

            async fn set_tokens_valid_after(&self, tenant: TenantId, user: UserId, at: OffsetDateTime) -> StoreResult<()> {
                let sql = format!("UPDATE users SET {CUT_OFF_FORWARD_TO_3} WHERE tenant_id = $1 AND user_id = $2");
                let r = sqlx::query(&sql)
                .bind(tenant.0)
                .bind(user.0)
                .bind(DbTime(at))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                expect_one(r.rows_affected())
            }

            async fn revoke_tenant_sessions(
                &self,
                tenant: TenantId,
                except: UserId,
                keep: Option<SessionId>,
                at: OffsetDateTime,
            ) -> StoreResult<(u64, u64)> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let sessions = sqlx::query(
                    "UPDATE sessions SET revoked_at = $2 WHERE tenant_id = $1 AND revoked_at IS NULL \
                     AND ($3 IS NULL OR session_id <> $3)",
                )
                .bind(tenant.0)
                .bind(now())
                .bind(keep.map(|s| s.0))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?
                .rows_affected();
                let sql = format!("UPDATE users SET {CUT_OFF_FORWARD_TO_3} WHERE tenant_id = $1 AND user_id <> $2");
                sqlx::query(&sql)
                .bind(tenant.0)
                .bind(except.0)
                .bind(DbTime(at))
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
                let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(store_error)?;
                Ok((u64::try_from(users).unwrap_or(0), sessions))
            }

            async fn create_api_key(&self, record: &ApiKeyRecord) -> StoreResult<()> {
                let k = &record.key;
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                sqlx::query("INSERT INTO credentials (credential_id, tenant_id, kind) VALUES ($1, $2, 'api_key')")
                    .bind(k.id.0)
                    .bind(k.tenant_id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                let sql = format!("INSERT INTO api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)");
                sqlx::query(&sql)
                    .bind(k.tenant_id.0)
                    .bind(k.id.0)
                    .bind(k.user_id.0)
                    .bind(&k.name)
                    .bind(&record.secret_hash)
                    .bind(Json(&k.scopes))
                    .bind(DbTime(k.created_at))
                    .bind(k.expires_at.map(DbTime))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(store_error)
            }

            async fn get_api_key(&self, tenant: TenantId, id: ApiKeyId) -> StoreResult<ApiKeyRecord> {
                let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND api_key_id = $2");
                let row = sqlx::query(&sql).bind(tenant.0).bind(id.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::api_key_row(&row).map_err(store_error)
            }

            async fn list_api_keys(&self, tenant: TenantId, user: UserId, page: PageRequest) -> StoreResult<Page<ApiKey>> {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND user_id = $2 AND api_key_id < $3 \
                     ORDER BY api_key_id DESC LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(user.0)
                    .bind(page.after.unwrap_or(Uuid::max()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let keys = rows
                    .iter()
                    .map(|r| Self::api_key_row(r).map(|k| k.key))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(store_error)?;
                Ok(Page::from_rows(keys, page, |k| k.id.0))
            }

            async fn delete_api_key(&self, tenant: TenantId, user: UserId, id: ApiKeyId) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let r = sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1 AND user_id = $2 AND api_key_id = $3")
                    .bind(tenant.0)
                    .bind(user.0)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                expect_one(r.rows_affected())?;
                sqlx::query("DELETE FROM credentials WHERE credential_id = $1")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                tx.commit().await.map_err(store_error)
            }

            async fn touch_api_key(&self, tenant: TenantId, id: ApiKeyId, at: OffsetDateTime) -> StoreResult<()> {
                sqlx::query("UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND api_key_id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(DbTime(at))
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(())
            }

            async fn create_agent(&self, a: &AgentRecord) -> StoreResult<()> {
                let sql = format!(
                    "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                );
                sqlx::query(&sql)
                    .bind(a.tenant_id.0)
                    .bind(a.id.0)
                    .bind(a.owner_id.0)
                    .bind(&a.name.0)
                    .bind(a.description.as_ref().map(|d| &d.0))
                    .bind(&a.instructions.0)
                    .bind(&a.model)
                    .bind(a.temperature)
                    .bind(a.top_p)
                    .bind(a.max_tokens.map(i64::from))
                    .bind(Json(&a.library_ids))
                    .bind(a.visibility.as_str())
                    .bind(DbTime(a.created_at))
                    .bind(DbTime(a.updated_at))
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(())
            }

            async fn get_agent(&self, tenant: TenantId, viewer: UserId, id: AgentId) -> StoreResult<AgentRecord> {
                let sql = format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND agent_id = $2 AND (owner_id = $3 OR visibility = 'tenant')"
                );
                let row = sqlx::query(&sql).bind(tenant.0).bind(id.0).bind(viewer.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::agent_row(&row).map_err(store_error)
            }

            async fn list_agents(&self, tenant: TenantId, viewer: UserId, page: PageRequest) -> StoreResult<Page<AgentRecord>> {
                let sql = format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND (owner_id = $2 OR visibility = 'tenant') \
                     AND agent_id < $3 ORDER BY agent_id DESC LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(viewer.0)
                    .bind(page.after.unwrap_or(Uuid::max()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let agents = rows.iter().map(Self::agent_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(agents, page, |a| a.id.0))
            }

            async fn list_owned_agents(&self, tenant: TenantId, owner: UserId, page: PageRequest) -> StoreResult<Page<AgentRecord>> {
                let sql = format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE tenant_id = $1 AND owner_id = $2 \
                     AND agent_id < $3 ORDER BY agent_id DESC LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(owner.0)
                    .bind(page.after.unwrap_or(Uuid::max()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let agents = rows.iter().map(Self::agent_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(agents, page, |a| a.id.0))
            }

            async fn update_agent(&self, a: &AgentRecord) -> StoreResult<()> {
                let r = sqlx::query(
                    "UPDATE agents SET name = $3, description = $4, instructions = $5, model = $6, temperature = $7, top_p = $8, \
                     max_tokens = $9, library_ids = $10, visibility = $11, updated_at = $12 WHERE tenant_id = $1 AND agent_id = $2",
                )
                .bind(a.tenant_id.0)
                .bind(a.id.0)
                .bind(&a.name.0)
                .bind(a.description.as_ref().map(|d| &d.0))
                .bind(&a.instructions.0)
                .bind(&a.model)
                .bind(a.temperature)
                .bind(a.top_p)
                .bind(a.max_tokens.map(i64::from))
                .bind(Json(&a.library_ids))
                .bind(a.visibility.as_str())
                .bind(DbTime(a.updated_at))
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                expect_one(r.rows_affected())
            }

            async fn delete_agent(&self, tenant: TenantId, id: AgentId) -> StoreResult<()> {
                let r = sqlx::query("DELETE FROM agents WHERE tenant_id = $1 AND agent_id = $2")
                    .bind(tenant.0)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                expect_one(r.rows_affected())
            }

            async fn create_conversation(&self, c: &ConversationRecord) -> StoreResult<()> {
                let sql = format!("INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
                sqlx::query(&sql)
                    .bind(c.tenant_id.0)
                    .bind(c.id.0)
                    .bind(c.owner_id.0)
                    .bind(c.agent_id.0)
                    .bind(c.title.as_ref().map(|t| &t.0))
                    .bind(DbTime(c.created_at))
                    .bind(DbTime(c.updated_at))
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(())
            }

            async fn get_conversation(&self, tenant: TenantId, owner: UserId, id: ConversationId) -> StoreResult<ConversationRecord> {
                let sql = format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant_id = $1 AND conversation_id = $2 AND owner_id = $3"
                );
                let row = sqlx::query(&sql).bind(tenant.0).bind(id.0).bind(owner.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::conversation_row(&row).map_err(store_error)
            }

            async fn list_conversations(&self, tenant: TenantId, owner: UserId, page: PageRequest) -> StoreResult<Page<ConversationRecord>> {
                // Most recently active first; the cursor row's (updated_at, id) is the position.
                let sql = format!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE tenant_id = $1 AND owner_id = $2 \
                     AND ($3 IS NULL OR (updated_at, conversation_id) < \
                         (SELECT c.updated_at, c.conversation_id FROM conversations c WHERE c.tenant_id = $1 AND c.conversation_id = $3)) \
                     ORDER BY updated_at DESC, conversation_id DESC LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(owner.0)
                    .bind(page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let items = rows.iter().map(Self::conversation_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(items, page, |c| c.id.0))
            }

            async fn update_conversation_title(
                &self,
                tenant: TenantId,
                owner: UserId,
                id: ConversationId,
                title: Option<&Sealed>,
            ) -> StoreResult<()> {
                let r = sqlx::query(
                    "UPDATE conversations SET title = $4, updated_at = $5 WHERE tenant_id = $1 AND conversation_id = $2 AND owner_id = $3",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(owner.0)
                .bind(title.map(|t| &t.0))
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                expect_one(r.rows_affected())
            }

            async fn delete_conversation(&self, tenant: TenantId, owner: UserId, id: ConversationId) -> StoreResult<()> {
                let r = sqlx::query("DELETE FROM conversations WHERE tenant_id = $1 AND conversation_id = $2 AND owner_id = $3")
                    .bind(tenant.0)
                    .bind(id.0)
                    .bind(owner.0)
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                expect_one(r.rows_affected())
            }

            async fn reply_context(&self, tenant: TenantId, owner: UserId, conversation: ConversationId) -> StoreResult<ReplyContext> {
                // One statement instead of four: the conversation, its agent as the owner may see
                // it, the owner's streaming replies, whether it has messages, and its wrapped key.
                // Built once: it runs for every message posted.
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    let columns = |prefix: &str, alias: &str, list: &str| {
                        list.split(", ").map(|c| format!("{prefix}.{c} AS {alias}{c}")).collect::<Vec<_>>().join(", ")
                    };
                    format!(
                    "SELECT {}, c.wrapped_key AS conversation_wrapped_key, a.agent_id AS visible_agent_id, {}, \
                     (SELECT COUNT(*) FROM messages m JOIN conversations o \
                         ON o.tenant_id = m.tenant_id AND o.conversation_id = m.conversation_id \
                         WHERE m.tenant_id = $1 AND o.owner_id = $3 AND m.status = 'streaming') AS streaming, \
                     EXISTS (SELECT 1 FROM messages h WHERE h.tenant_id = $1 AND h.conversation_id = $2) AS has_messages \
                     FROM conversations c LEFT JOIN agents a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id \
                         AND (a.owner_id = $3 OR a.visibility = 'tenant') \
                     WHERE c.tenant_id = $1 AND c.conversation_id = $2 AND c.owner_id = $3",
                        columns("c", "", CONVERSATION_COLUMNS),
                        columns("a", "agent_", AGENT_COLUMNS)
                    )
                });
                let row = sqlx::query(SQL.as_str())
                    .bind(tenant.0)
                    .bind(conversation.0)
                    .bind(owner.0)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                let read = || -> Result<ReplyContext, sqlx::Error> {
                    let visible: Option<Uuid> = row.try_get("visible_agent_id")?;
                    Ok(ReplyContext {
                        conversation: Self::conversation_row(&row)?,
                        agent: visible.map(|_| Self::agent_row_as(&row, "agent_")).transpose()?,
                        streaming: row.try_get("streaming")?,
                        has_messages: row.try_get("has_messages")?,
                        wrapped_key: row.try_get("conversation_wrapped_key")?,
                    })
                };
                read().map_err(store_error)
            }

            async fn insert_exchange(
                &self,
                user: Option<&MessageRecord>,
                reply: &MessageRecord,
                lease: Lease,
                title: Option<&Sealed>,
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                // The title of a conversation's first exchange goes with its activity touch.
                let r = sqlx::query(
                    "UPDATE conversations SET updated_at = $3, title = COALESCE($4, title) WHERE tenant_id = $1 AND conversation_id = $2",
                )
                    .bind(reply.tenant_id.0)
                    .bind(reply.conversation_id.0)
                    .bind(DbTime(reply.created_at))
                    .bind(title.map(|t| &t.0))
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                expect_one(r.rows_affected())?;
                let sql = format!(
                    "INSERT INTO messages ({MESSAGE_COLUMNS}, lease_owner, lease_expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                );
                for (m, lease) in user.map(|u| (u, None)).into_iter().chain([(reply, Some(lease))]) {
                    sqlx::query(&sql)
                        .bind(m.tenant_id.0)
                        .bind(m.id.0)
                        .bind(m.conversation_id.0)
                        .bind(m.role.as_str())
                        .bind(&m.content.0)
                        .bind(m.status.as_str())
                        .bind(&m.model)
                        .bind(m.usage.map(|u| i64::from(u.prompt_tokens)))
                        .bind(m.usage.map(|u| i64::from(u.completion_tokens)))
                        .bind(&m.finish_reason)
                        .bind(&m.error)
                        .bind(m.reply_to.map(|r| r.0))
                        .bind(DbTime(m.created_at))
                        .bind(DbTime(m.updated_at))
                        .bind(lease.map(|l| l.owner))
                        .bind(lease.map(|l| DbTime(l.expires_at)))
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)
            }

            async fn save_partial(&self, tenant: TenantId, id: MessageId, content: &Sealed, lease: Lease) -> StoreResult<PartialSaved> {
                let row = sqlx::query(
                    "UPDATE messages SET content = $3, lease_expires_at = $5, updated_at = $6 \
                     WHERE tenant_id = $1 AND message_id = $2 AND status = 'streaming' AND lease_owner = $4 \
                     RETURNING cancel_requested",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(&content.0)
                .bind(lease.owner)
                .bind(DbTime(lease.expires_at))
                .bind(now())
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(match row {
                    Some(row) => PartialSaved {
                        still_owned: true,
                        cancel_requested: row.try_get("cancel_requested").map_err(store_error)?,
                    },
                    None => PartialSaved { still_owned: false, cancel_requested: false },
                })
            }

            async fn save_partials(&self, saves: &[PartialSave]) -> StoreResult<Vec<PartialSaved>> {
                if saves.is_empty() {
                    return Ok(Vec::new());
                }
                // One statement for the whole batch: one round trip and one commit, however many
                // replies. A reply appears at most once in a batch (its task waits for the answer).
                let rows = (0..saves.len())
                    .map(|i| {
                        let p = 2 + 5 * i;
                        format!("(${}, ${}, ${}, ${}, ${})", p, p + 1, p + 2, p + 3, p + 4)
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE messages SET content = v.column3, lease_expires_at = v.column5, updated_at = $1 \
                     FROM (VALUES {rows}) AS v \
                     WHERE messages.tenant_id = v.column1 AND messages.message_id = v.column2 \
                     AND messages.status = 'streaming' AND messages.lease_owner = v.column4 \
                     RETURNING messages.message_id AS message_id, messages.cancel_requested AS cancel_requested"
                );
                let mut query = sqlx::query(&sql).bind(now());
                for s in saves {
                    query = query
                        .bind(s.tenant.0)
                        .bind(s.id.0)
                        .bind(&s.content.0)
                        .bind(s.lease.owner)
                        .bind(DbTime(s.lease.expires_at));
                }
                // Each batch size is a statement of its own: not worth a place in the cache.
                let updated = query.persistent(false).fetch_all(&self.pool).await.map_err(store_error)?;
                let mut cancel_requested = std::collections::HashMap::with_capacity(updated.len());
                for row in &updated {
                    let id: Uuid = row.try_get("message_id").map_err(store_error)?;
                    cancel_requested.insert(id, row.try_get::<bool, _>("cancel_requested").map_err(store_error)?);
                }
                Ok(saves
                    .iter()
                    .map(|s| match cancel_requested.get(&s.id.0) {
                        Some(&cancel_requested) => PartialSaved { still_owned: true, cancel_requested },
                        None => PartialSaved { still_owned: false, cancel_requested: false },
                    })
                    .collect())
            }

            async fn request_cancel(&self, tenant: TenantId, conversation: ConversationId, id: MessageId) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE messages SET cancel_requested = TRUE \
                     WHERE tenant_id = $1 AND conversation_id = $2 AND message_id = $3 AND status = 'streaming'",
                )
                .bind(tenant.0)
                .bind(conversation.0)
                .bind(id.0)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected() == 1)
            }

            async fn expire_leases(&self, at: OffsetDateTime, error: &str) -> StoreResult<u64> {
                let r = sqlx::query(
                    "UPDATE messages SET status = 'failed', error = $2, updated_at = $1 \
                     WHERE status = 'streaming' AND lease_expires_at < $1",
                )
                .bind(DbTime(at))
                .bind(error)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected())
            }

            async fn count_streaming(&self, tenant: TenantId, owner: UserId) -> StoreResult<i64> {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM messages m JOIN conversations c \
                     ON c.tenant_id = m.tenant_id AND c.conversation_id = m.conversation_id \
                     WHERE m.tenant_id = $1 AND c.owner_id = $2 AND m.status = 'streaming'",
                )
                .bind(tenant.0)
                .bind(owner.0)
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)
            }

            async fn list_messages(&self, tenant: TenantId, conversation: ConversationId, page: PageRequest) -> StoreResult<Page<MessageRecord>> {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND conversation_id = $2 \
                     AND message_id > $3 ORDER BY message_id LIMIT $4"
                );
                let rows = sqlx::query(&sql)
                    .bind(tenant.0)
                    .bind(conversation.0)
                    .bind(page.after.unwrap_or(Uuid::nil()))
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                let items = rows.iter().map(Self::message_row).collect::<Result<Vec<_>, _>>().map_err(store_error)?;
                Ok(Page::from_rows(items, page, |m| m.id.0))
            }

            async fn get_message(&self, tenant: TenantId, conversation: ConversationId, id: MessageId) -> StoreResult<MessageRecord> {
                let sql = format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND message_id = $3"
                );
                let row = sqlx::query(&sql).bind(tenant.0).bind(conversation.0).bind(id.0).fetch_one(&self.pool).await.map_err(store_error)?;
                Self::message_row(&row).map_err(store_error)
            }

            async fn finish_reply(&self, tenant: TenantId, id: MessageId, o: &ReplyOutcome) -> StoreResult<bool> {
                let r = sqlx::query(
                    "UPDATE messages SET content = $3, status = $4, prompt_tokens = $5, completion_tokens = $6, finish_reason = $7, \
                     error = $8, updated_at = $9 WHERE tenant_id = $1 AND message_id = $2 AND status = 'streaming'",
                )
                .bind(tenant.0)
                .bind(id.0)
                .bind(&o.content.0)
                .bind(o.status.as_str())
                .bind(o.usage.map(|u| i64::from(u.prompt_tokens)))
                .bind(o.usage.map(|u| i64::from(u.completion_tokens)))
                .bind(&o.finish_reason)
                .bind(&o.error)
                .bind(now())
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(r.rows_affected() == 1)
            }

            async fn tenant_key(&self, tenant: TenantId) -> StoreResult<Option<Vec<u8>>> {
                sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)
            }

            async fn conversation_key(&self, tenant: TenantId, conversation: ConversationId) -> StoreResult<Option<Vec<u8>>> {
                let key: Option<Option<Vec<u8>>> =
                    sqlx::query_scalar("SELECT wrapped_key FROM conversations WHERE tenant_id = $1 AND conversation_id = $2")
                        .bind(tenant.0)
                        .bind(conversation.0)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(store_error)?;
                Ok(key.flatten())
            }

            async fn record_usage(&self, u: &UsageRecord) -> StoreResult<()> {
                let mut conn = self.pool.acquire().await.map_err(store_error)?;
                Self::record_usage_in(&mut conn, u).await
            }

            async fn usage_totals(&self, tenant: TenantId, user: Option<UserId>, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<UsageTotals> {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS p, CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS c, \
                     CAST(COALESCE(SUM(cost_micro_usd), 0) AS BIGINT) AS cost, COUNT(*) AS n FROM usage_events \
                     WHERE tenant_id = $1 AND ($2 IS NULL OR user_id = $2) AND at >= $3 AND at < $4",
                )
                .bind(tenant.0)
                .bind(user.map(|u| u.0))
                .bind(DbTime(from))
                .bind(DbTime(to))
                .fetch_one(&self.pool)
                .await
                .map_err(store_error)?;
                let get = |name: &str| -> StoreResult<i64> { row.try_get::<i64, _>(name).map_err(store_error) };
                Ok(UsageTotals { prompt_tokens: get("p")?, completion_tokens: get("c")?, cost_micro_usd: get("cost")?, requests: get("n")? })
            }

            async fn usage_records(&self, tenant: TenantId, user: Option<UserId>, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<Vec<UsageRecord>> {
                let rows = sqlx::query(
                    "SELECT tenant_id, usage_id, user_id, api_key_id, source, message_id, model, prompt_tokens, completion_tokens, \
                     estimated, cost_micro_usd, at FROM usage_events \
                     WHERE tenant_id = $1 AND ($2 IS NULL OR user_id = $2) AND at >= $3 AND at < $4 ORDER BY at",
                )
                .bind(tenant.0)
                .bind(user.map(|u| u.0))
                .bind(DbTime(from))
                .bind(DbTime(to))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                rows.iter()
                    .map(|r| -> Result<UsageRecord, sqlx::Error> {
                        let source: &str = r.try_get("source")?;
                        Ok(UsageRecord {
                            tenant_id: TenantId(r.try_get("tenant_id")?),
                            id: r.try_get("usage_id")?,
                            user_id: UserId(r.try_get("user_id")?),
                            api_key_id: r.try_get::<Option<Uuid>, _>("api_key_id")?.map(ApiKeyId),
                            source: if source == "gateway" { UsageSource::Gateway } else { UsageSource::Conversation },
                            message_id: r.try_get::<Option<Uuid>, _>("message_id")?.map(MessageId),
                            model: r.try_get("model")?,
                            prompt_tokens: to_u32(r.try_get("prompt_tokens")?).unwrap_or(0),
                            completion_tokens: to_u32(r.try_get("completion_tokens")?).unwrap_or(0),
                            estimated: r.try_get("estimated")?,
                            cost_micro_usd: r.try_get("cost_micro_usd")?,
                            at: r.try_get::<DbTime, _>("at")?.0,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(store_error)
            }

            async fn append_audit(&self, e: &NewAuditEvent) -> StoreResult<i64> {
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                let seq = Self::append_audit_in(&mut tx, e).await?;
                tx.commit().await.map_err(store_error)?;
                Ok(seq)
            }

            async fn audit_head(&self, tenant: TenantId) -> StoreResult<(i64, Option<Vec<u8>>)> {
                let row = sqlx::query("SELECT audit_seq, audit_head FROM tenants WHERE tenant_id = $1")
                    .bind(tenant.0)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok((row.try_get("audit_seq").map_err(store_error)?, row.try_get("audit_head").map_err(store_error)?))
            }

            async fn list_audit(&self, tenant: TenantId, f: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT tenant_id, seq, event_id, at, actor_id, actor_kind, action, resource_type, resource_id, outcome, ip, \
                     request_id, detail, hash FROM audit_events WHERE tenant_id = $1 AND seq > $2 \
                     AND ($4 IS NULL OR actor_id = $4) AND ($5 IS NULL OR action = $5) AND ($6 IS NULL OR resource_type = $6) \
                     AND ($7 IS NULL OR at >= $7) AND ($8 IS NULL OR at < $8) ORDER BY seq LIMIT $3",
                )
                .bind(tenant.0)
                .bind(f.after_seq)
                .bind(i64::from(f.limit))
                .bind(f.actor_id.map(|a| a.0))
                .bind(f.action.as_deref())
                .bind(f.resource_type.as_deref())
                .bind(f.from.map(DbTime))
                .bind(f.to.map(DbTime))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                rows.iter()
                    .map(|r| -> Result<AuditEvent, sqlx::Error> {
                        Ok(AuditEvent {
                            hash: r.try_get("hash")?,
                            tenant_id: TenantId(r.try_get("tenant_id")?),
                            seq: r.try_get("seq")?,
                            id: AuditEventId(r.try_get("event_id")?),
                            at: r.try_get::<DbTime, _>("at")?.0,
                            actor_id: r.try_get::<Option<Uuid>, _>("actor_id")?.map(UserId),
                            actor_kind: r.try_get("actor_kind")?,
                            action: r.try_get("action")?,
                            resource_type: r.try_get("resource_type")?,
                            resource_id: r.try_get("resource_id")?,
                            outcome: text_enum("outcome", r.try_get::<&str, _>("outcome")?)?,
                            ip: r.try_get("ip")?,
                            request_id: r.try_get("request_id")?,
                            detail: r.try_get::<Option<Json<serde_json::Value>>, _>("detail")?.map(|j| j.0),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(store_error)
            }

            // --- audit checkpoints ----------------------------------------------------------
            async fn audit_heads(&self) -> StoreResult<Vec<(TenantId, i64, Option<Vec<u8>>)>> {
                let rows = sqlx::query("SELECT tenant_id, audit_seq, audit_head FROM tenants ORDER BY tenant_id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                rows.iter()
                    .map(|r| -> Result<_, sqlx::Error> {
                        Ok((TenantId(r.try_get("tenant_id")?), r.try_get("audit_seq")?, r.try_get("audit_head")?))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(store_error)
            }

            async fn append_checkpoint(&self, c: &AuditCheckpoint) -> StoreResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO audit_checkpoints (tenant_id, seq, head, at, version, key_id, algorithm, signature) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (tenant_id, seq) DO NOTHING",
                )
                .bind(c.tenant_id.0)
                .bind(c.seq)
                .bind(&c.head)
                .bind(DbTime(c.at))
                .bind(i32::try_from(c.version).unwrap_or(i32::MAX))
                .bind(&c.key_id)
                .bind(c.algorithm.as_str())
                .bind(&c.signature)
                .execute(&self.pool)
                .await
                .map_err(store_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_checkpoints(
                &self,
                tenant: TenantId,
                after_seq: i64,
                limit: u32,
            ) -> StoreResult<Vec<AuditCheckpoint>> {
                let rows = sqlx::query(
                    "SELECT tenant_id, seq, head, at, version, key_id, algorithm, signature FROM audit_checkpoints \
                     WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(tenant.0)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(store_error)?;
                rows.iter().map(|r| Self::checkpoint_row(r)).collect::<Result<Vec<_>, _>>().map_err(store_error)
            }

            async fn latest_checkpoint(&self, tenant: TenantId) -> StoreResult<Option<AuditCheckpoint>> {
                let row = sqlx::query(
                    "SELECT tenant_id, seq, head, at, version, key_id, algorithm, signature FROM audit_checkpoints \
                     WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(tenant.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
                row.as_ref().map(|r| Self::checkpoint_row(r)).transpose().map_err(store_error)
            }

            // --- gateway calls: usage and audit together ----------------------
            async fn append_audit_with_usage(&self, calls: &[(NewAuditEvent, Option<UsageRecord>)]) -> StoreResult<()> {
                // One tenant after another (a stable sort keeps each tenant's order, which is all
                // its hash chain needs): replicas writing batches of the same tenants then lock
                // their rows in the same order and cannot deadlock on PostgreSQL.
                let mut calls: Vec<_> = calls.iter().collect();
                calls.sort_by_key(|(e, _)| e.tenant_id.0);
                let mut tx = self.pool.begin().await.map_err(store_error)?;
                for (e, u) in calls {
                    if let Some(u) = u {
                        Self::record_usage_in(&mut tx, u).await?;
                    }
                    Self::append_audit_in(&mut tx, e).await?;
                }
                tx.commit().await.map_err(store_error)
            }
        }

        impl $store {
            /// Appends an audit event on `conn`, which must be in a transaction: the tenant row
            /// is the lock that orders the tenant's events.
            async fn append_audit_in(conn: &mut <$db as sqlx::Database>::Connection, e: &NewAuditEvent) -> StoreResult<i64> {
                // The tenant row is the lock that orders the tenant's events: sequence and head
                // of the hash chain move together.
                let row = sqlx::query(
                    "UPDATE tenants SET audit_seq = audit_seq + 1 WHERE tenant_id = $1 RETURNING audit_seq, audit_head",
                )
                .bind(e.tenant_id.0)
                .fetch_one(&mut *conn)
                .await
                .map_err(store_error)?;
                let seq: i64 = row.try_get("audit_seq").map_err(store_error)?;
                let prev: Option<Vec<u8>> = row.try_get("audit_head").map_err(store_error)?;
                // Stored times have microsecond precision: hash what will be read back.
                let at = DbTime(e.at);
                let mut event = AuditEvent::from(e);
                event.seq = seq;
                event.at = conclave_core::clock::truncate_micros(e.at);
                let hash = audit_hash(prev.as_deref().unwrap_or(&[0u8; 32]), &event);
                sqlx::query(
                    "INSERT INTO audit_events (tenant_id, seq, event_id, at, actor_id, actor_kind, action, resource_type, resource_id, \
                     outcome, ip, request_id, detail, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(e.tenant_id.0)
                .bind(seq)
                .bind(e.id.0)
                .bind(at)
                .bind(e.actor_id.map(|a| a.0))
                .bind(e.actor_kind)
                .bind(e.action)
                .bind(e.resource_type)
                .bind(&e.resource_id)
                .bind(e.outcome.as_str())
                .bind(&e.ip)
                .bind(&e.request_id)
                .bind(e.detail.as_ref().map(Json))
                .bind(&hash[..])
                .execute(&mut *conn)
                .await
                .map_err(store_error)?;
                sqlx::query("UPDATE tenants SET audit_head = $2 WHERE tenant_id = $1")
                    .bind(e.tenant_id.0)
                    .bind(&hash[..])
                    .execute(&mut *conn)
                    .await
                    .map_err(store_error)?;
                Ok(seq)
            }

            async fn record_usage_in(conn: &mut <$db as sqlx::Database>::Connection, u: &UsageRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO usage_events (tenant_id, usage_id, user_id, api_key_id, source, message_id, model, prompt_tokens, \
                     completion_tokens, estimated, cost_micro_usd, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(u.tenant_id.0)
                .bind(u.id)
                .bind(u.user_id.0)
                .bind(u.api_key_id.map(|k| k.0))
                .bind(u.source.as_str())
                .bind(u.message_id.map(|m| m.0))
                .bind(&u.model)
                .bind(i64::from(u.prompt_tokens))
                .bind(i64::from(u.completion_tokens))
                .bind(u.estimated)
                .bind(u.cost_micro_usd)
                .bind(DbTime(u.at))
                .execute(&mut *conn)
                .await
                .map_err(store_error)?;
                Ok(())
            }

            fn checkpoint_row(r: &<$db as sqlx::Database>::Row) -> Result<AuditCheckpoint, sqlx::Error> {
                let algorithm: &str = r.try_get("algorithm")?;
                Ok(AuditCheckpoint {
                    version: {
                        let v: i32 = r.try_get("version")?;
                        u32::try_from(v).map_err(|_| bad_value("checkpoint version", &v.to_string()))?
                    },
                    tenant_id: TenantId(r.try_get("tenant_id")?),
                    seq: r.try_get("seq")?,
                    head: r.try_get("head")?,
                    at: r.try_get::<DbTime, _>("at")?.0,
                    key_id: r.try_get("key_id")?,
                    algorithm: text_enum("algorithm", algorithm)?,
                    signature: r.try_get("signature")?,
                })
            }
        }
    };
}

store_impl!(SqliteStore, sqlx::Sqlite);
store_impl!(PgStore, sqlx::Postgres);
