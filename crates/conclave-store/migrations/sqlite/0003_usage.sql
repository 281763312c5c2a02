-- Token usage and estimated cost of every model call (conversation replies and the gateway),
-- for GET /api/v1/usage and the monthly budgets. cost is in millionths of a US dollar.
CREATE TABLE usage_events (
    tenant_id         BLOB NOT NULL,
    usage_id          BLOB NOT NULL,
    user_id           BLOB NOT NULL,
    api_key_id        BLOB,
    source            TEXT NOT NULL CHECK (source IN ('conversation', 'gateway')),
    message_id        BLOB,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    estimated         INTEGER NOT NULL,
    cost_micro_usd    INTEGER NOT NULL,
    at                INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, usage_id)
) WITHOUT ROWID;
CREATE INDEX usage_events_time ON usage_events (tenant_id, at);
CREATE INDEX usage_events_user_time ON usage_events (tenant_id, user_id, at);
