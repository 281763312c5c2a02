-- Signed audit checkpoints: now and then the head of each tenant's hash chain (sequence number and
-- hash), signed with a key the database does not hold. They are also written to an append-only
-- sink outside the database; the copy here lets the API's verify check them online.
CREATE TABLE audit_checkpoints (
    tenant_id BLOB NOT NULL,
    seq       INTEGER NOT NULL,
    head      BLOB NOT NULL,
    at        INTEGER NOT NULL,
    version   INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
) WITHOUT ROWID;
