-- Session lifetimes and session management. A session now has an absolute end (`expires_at`,
-- set at sign-in and never moved) and records its last use (`last_used_at`, sign-in and each
-- refresh) for the idle timeout, plus the user agent and address of its sign-in so the user can
-- tell sessions apart. Sessions from before this migration end 12 hours after they began (the
-- default maximum lifetime); their last use is their newest refresh. `users.tokens_valid_after`
-- refuses single sign-on tokens issued before it (set when a user's sessions are ended).
ALTER TABLE sessions
    ADD COLUMN expires_at   TIMESTAMPTZ,
    ADD COLUMN last_used_at TIMESTAMPTZ,
    ADD COLUMN user_agent   TEXT,
    ADD COLUMN ip           TEXT;

UPDATE sessions s SET
    expires_at = s.created_at + INTERVAL '12 hours',
    last_used_at = COALESCE(
        (SELECT MAX(t.used_at) FROM session_tokens t
         WHERE t.tenant_id = s.tenant_id AND t.session_id = s.session_id),
        s.created_at);

ALTER TABLE sessions
    ALTER COLUMN expires_at SET NOT NULL,
    ALTER COLUMN last_used_at SET NOT NULL;

ALTER TABLE users ADD COLUMN tokens_valid_after TIMESTAMPTZ;
