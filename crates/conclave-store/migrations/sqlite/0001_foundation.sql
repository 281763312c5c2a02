-- Conclave foundation schema (SQLite). Every table carries tenant_id and its primary key leads
-- with it, as in the PostgreSQL schema, so the two stay one design. Times are microseconds since
-- the Unix epoch (UTC); ids are UUIDv7 as 16-byte blobs; content columns are sealed blobs.

CREATE TABLE tenants (
    tenant_id     BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    is_default    INTEGER NOT NULL DEFAULT 0,
    settings      TEXT NOT NULL,
    users_created INTEGER NOT NULL DEFAULT 0,
    audit_seq     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX tenants_one_default ON tenants (is_default) WHERE is_default = 1;

CREATE TABLE users (
    tenant_id            BLOB NOT NULL REFERENCES tenants (tenant_id),
    user_id              BLOB NOT NULL,
    email                TEXT NOT NULL,
    display_name         TEXT NOT NULL,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'member', 'auditor')),
    password_hash        TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    disabled             INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, email);

-- Global lookups for what arrives without a tenant (reference tables under Citus).
CREATE TABLE user_emails (
    email     TEXT PRIMARY KEY,
    tenant_id BLOB NOT NULL,
    user_id   BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE credentials (
    credential_id BLOB PRIMARY KEY,
    tenant_id     BLOB NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('api_key', 'token'))
) WITHOUT ROWID;

CREATE TABLE sessions (
    tenant_id  BLOB NOT NULL,
    session_id BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    PRIMARY KEY (tenant_id, session_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

CREATE TABLE session_tokens (
    tenant_id   BLOB NOT NULL,
    token_id    BLOB NOT NULL,
    session_id  BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    secret_hash BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    PRIMARY KEY (tenant_id, token_id),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, session_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX session_tokens_session ON session_tokens (tenant_id, session_id);

CREATE TABLE api_keys (
    tenant_id    BLOB NOT NULL,
    api_key_id   BLOB NOT NULL,
    user_id      BLOB NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    PRIMARY KEY (tenant_id, api_key_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX api_keys_user ON api_keys (tenant_id, user_id, api_key_id);

CREATE TABLE agents (
    tenant_id    BLOB NOT NULL,
    agent_id     BLOB NOT NULL,
    owner_id     BLOB NOT NULL,
    name         BLOB NOT NULL,
    description  BLOB,
    instructions BLOB NOT NULL,
    model        TEXT NOT NULL,
    temperature  REAL,
    top_p        REAL,
    max_tokens   INTEGER,
    library_ids  TEXT NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('private', 'tenant')),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, agent_id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, user_id)
) WITHOUT ROWID;
CREATE INDEX agents_owner ON agents (tenant_id, owner_id, agent_id);
CREATE INDEX agents_visibility ON agents (tenant_id, visibility, agent_id);

-- agent_id has no foreign key: a conversation outlives its agent (posting to it is refused).
CREATE TABLE conversations (
    tenant_id       BLOB NOT NULL,
    conversation_id BLOB NOT NULL,
    owner_id        BLOB NOT NULL,
    agent_id        BLOB NOT NULL,
    title           BLOB,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX conversations_owner_recent ON conversations (tenant_id, owner_id, updated_at, conversation_id);

CREATE TABLE messages (
    tenant_id         BLOB NOT NULL,
    message_id        BLOB NOT NULL,
    conversation_id   BLOB NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content           BLOB NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('streaming', 'complete', 'cancelled', 'failed')),
    model             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    finish_reason     TEXT,
    error             TEXT,
    reply_to          BLOB,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, message_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, conversation_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX messages_conversation ON messages (tenant_id, conversation_id, message_id);

CREATE TABLE audit_events (
    tenant_id     BLOB NOT NULL,
    seq           INTEGER NOT NULL,
    event_id      BLOB NOT NULL,
    at            INTEGER NOT NULL,
    actor_id      BLOB,
    actor_kind    TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    outcome       TEXT NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
    ip            TEXT,
    request_id    TEXT,
    detail        TEXT,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
