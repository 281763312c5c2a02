-- Replies in progress hold a lease that their replica renews; a reply whose lease expired (its
-- process died) is marked failed by whichever replica notices. A cancel request is a flag the
-- owning replica reads, so any replica can cancel any reply.
ALTER TABLE messages ADD COLUMN lease_owner BLOB;
ALTER TABLE messages ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE messages ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_streaming ON messages (status, lease_expires_at) WHERE status = 'streaming';
