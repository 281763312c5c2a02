-- Token usage and estimated cost of every model call (conversation replies and the gateway),
-- for GET /api/v1/usage and the monthly budgets. cost is in millionths of a US dollar.
CREATE TABLE usage_events (
    tenant_id         UUID NOT NULL,
    usage_id          UUID NOT NULL,
    user_id           UUID NOT NULL,
    api_key_id        UUID,
    source            TEXT NOT NULL CHECK (source IN ('conversation', 'gateway')),
    message_id        UUID,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated         BOOLEAN NOT NULL,
    cost_micro_usd    BIGINT NOT NULL,
    at                TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, usage_id)
);
CREATE INDEX usage_events_time ON usage_events (tenant_id, at);
CREATE INDEX usage_events_user_time ON usage_events (tenant_id, user_id, at);
