-- The audit log as a hash chain: each event's hash covers the previous event's hash and the
-- event itself, so editing, removing, inserting or reordering events breaks the chain.
ALTER TABLE audit_events ADD COLUMN hash BLOB;
ALTER TABLE tenants ADD COLUMN audit_head BLOB;
