-- Single sign-on: who an issuer's subject is here, and which Conclave tenant an issuer's tenant
-- claim stands for. The (issuer, subject) pair is the identity key, never the email address.
CREATE TABLE user_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    tenant_id  UUID NOT NULL,
    user_id    UUID NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, subject),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, user_id) ON DELETE CASCADE
);
CREATE INDEX user_identities_user ON user_identities (tenant_id, user_id);

CREATE TABLE sso_tenants (
    issuer      TEXT NOT NULL,
    external_id TEXT NOT NULL,
    tenant_id   UUID NOT NULL REFERENCES tenants (tenant_id),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (issuer, external_id)
);
