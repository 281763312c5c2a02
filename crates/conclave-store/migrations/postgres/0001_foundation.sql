-- Conclave foundation schema (PostgreSQL). Every table carries tenant_id and its primary key leads
-- with it, as in the SQLite schema, so the two stay one design. Times are timestamptz (UTC);
-- ids are UUIDv7; content columns are sealed blobs.

CREATE TABLE tenants (
    tenant_id     UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    is_default    BOOLEAN NOT NULL DEFAULT FALSE,
    settings      JSONB NOT NULL,
    users_created BIGINT NOT NULL DEFAULT 0,
    audit_seq     BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX tenants_one_default ON tenants (is_default) WHERE is_default;

CREATE TABLE users (
    tenant_id            UUID NOT NULL REFERENCES tenants (tenant_id),
    user_id              UUID NOT NULL,
    email                TEXT NOT NULL,
    display_name         TEXT NOT NULL,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'member', 'auditor')),
    password_hash        TEXT,
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    disabled             BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, email);

-- Global lookups for what arrives without a tenant (reference tables under Citus).
CREATE TABLE user_emails (
    email     TEXT PRIMARY KEY,
    tenant_id UUID NOT NULL,
    user_id   UUID NOT NULL
);

CREATE TABLE credentials (
    credential_id UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('api_key', 'token'))
);

CREATE TABLE sessions (
    tenant_id  UUID NOT NULL,
    session_id UUID NOT NULL,
    user_id    UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, session_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

CREATE TABLE session_tokens (
    tenant_id   UUID NOT NULL,
    token_id    UUID NOT NULL,
    session_id  UUID NOT NULL,
    user_id     UUID NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    secret_hash BYTEA NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, token_id),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, session_id) ON DELETE CASCADE
);
CREATE INDEX session_tokens_session ON session_tokens (tenant_id, session_id);

CREATE TABLE api_keys (
    tenant_id    UUID NOT NULL,
    api_key_id   UUID NOT NULL,
    user_id      UUID NOT NULL,
    name         TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    scopes       JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    PRIMARY KEY (tenant_id, api_key_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX api_keys_user ON api_keys (tenant_id, user_id, api_key_id);

CREATE TABLE agents (
    tenant_id    UUID NOT NULL,
    agent_id     UUID NOT NULL,
    owner_id     UUID NOT NULL,
    name         BYTEA NOT NULL,
    description  BYTEA,
    instructions BYTEA NOT NULL,
    model        TEXT NOT NULL,
    temperature  DOUBLE PRECISION,
    top_p        DOUBLE PRECISION,
    max_tokens   BIGINT,
    library_ids  JSONB NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('private', 'tenant')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, agent_id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, user_id)
);
CREATE INDEX agents_owner ON agents (tenant_id, owner_id, agent_id);
CREATE INDEX agents_visibility ON agents (tenant_id, visibility, agent_id);

-- agent_id has no foreign key: a conversation outlives its agent (posting to it is refused).
CREATE TABLE conversations (
    tenant_id       UUID NOT NULL,
    conversation_id UUID NOT NULL,
    owner_id        UUID NOT NULL,
    agent_id        UUID NOT NULL,
    title           BYTEA,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX conversations_owner_recent ON conversations (tenant_id, owner_id, updated_at, conversation_id);

CREATE TABLE messages (
    tenant_id         UUID NOT NULL,
    message_id        UUID NOT NULL,
    conversation_id   UUID NOT NULL,
    role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content           BYTEA NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('streaming', 'complete', 'cancelled', 'failed')),
    model             TEXT,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    finish_reason     TEXT,
    error             TEXT,
    reply_to          UUID,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, message_id),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES conversations (tenant_id, conversation_id) ON DELETE CASCADE
);
CREATE INDEX messages_conversation ON messages (tenant_id, conversation_id, message_id);

CREATE TABLE audit_events (
    tenant_id     UUID NOT NULL,
    seq           BIGINT NOT NULL,
    event_id      UUID NOT NULL,
    at            TIMESTAMPTZ NOT NULL,
    actor_id      UUID,
    actor_kind    TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id   TEXT,
    outcome       TEXT NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
    ip            TEXT,
    request_id    TEXT,
    detail        JSONB,
    PRIMARY KEY (tenant_id, seq)
);

-- The audit log is append-only: the database itself refuses to change or remove an event.
CREATE FUNCTION conclave_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION conclave_audit_append_only();
