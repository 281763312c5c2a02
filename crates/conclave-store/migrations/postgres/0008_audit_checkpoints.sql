-- Signed audit checkpoints: now and then the head of each tenant's hash chain (sequence number and
-- hash), signed with a key the database does not hold. They are also written to an append-only
-- sink outside the database; the copy here lets the API's verify check them online.
CREATE TABLE audit_checkpoints (
    tenant_id UUID NOT NULL,
    seq       BIGINT NOT NULL,
    head      BYTEA NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    version   INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    signature BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- Append-only, like the events they vouch for.
CREATE FUNCTION conclave_audit_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_checkpoints is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION conclave_audit_checkpoints_append_only();
