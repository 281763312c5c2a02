-- Single sign-on: who an issuer's subject is here, and which Conclave tenant an issuer's tenant
-- claim stands for. The (issuer, subject) pair is the identity key, never the email address.
CREATE TABLE user_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    tenant_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX user_identities_user ON user_identities (tenant_id, user_id);

CREATE TABLE sso_tenants (
    issuer      TEXT NOT NULL,
    external_id TEXT NOT NULL,
    tenant_id   BLOB NOT NULL REFERENCES tenants (tenant_id),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (issuer, external_id)
) WITHOUT ROWID;

-- TOTP second factor of local accounts. The secret is sealed under the tenant key (TEK), bound
-- to the user; `last_step` is the last TOTP time step accepted, so no code is accepted twice.
CREATE TABLE user_mfa (
    tenant_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    secret     BLOB NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 0,
    last_step  INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;

-- One-time recovery codes, stored hashed; a used code keeps its row with `used_at` set.
CREATE TABLE mfa_recovery_codes (
    tenant_id BLOB NOT NULL,
    user_id   BLOB NOT NULL,
    code_hash BLOB NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
) WITHOUT ROWID;
