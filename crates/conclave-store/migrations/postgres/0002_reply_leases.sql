-- Replies in progress hold a lease that their replica renews; a reply whose lease expired (its
-- process died) is marked failed by whichever replica notices. A cancel request is a flag the
-- owning replica reads, so any replica can cancel any reply.
ALTER TABLE messages ADD COLUMN lease_owner UUID;
ALTER TABLE messages ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE messages ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX messages_streaming ON messages (status, lease_expires_at) WHERE status = 'streaming';
