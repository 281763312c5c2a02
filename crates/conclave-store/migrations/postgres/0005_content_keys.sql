-- Content keys: each tenant's key (TEK) for agent fields, each conversation's key (CEK) for its
-- title and messages, both stored only wrapped by the tenant's master key (KEK). Deleting the
-- conversation row destroys its key (crypto-shredding).
CREATE TABLE tenant_keys (
    tenant_id   UUID PRIMARY KEY,
    wrapped_key BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
ALTER TABLE conversations ADD COLUMN wrapped_key BYTEA;
