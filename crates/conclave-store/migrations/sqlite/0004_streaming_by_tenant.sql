-- Counting a user's replies in progress looks up streaming messages by tenant; without this
-- index SQLite's planner (which has no statistics on a fresh database) scans the tenant.
CREATE INDEX messages_streaming_by_tenant ON messages (tenant_id, status, conversation_id) WHERE status = 'streaming';
