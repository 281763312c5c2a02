-- Session lifetimes and session management. A session now has an absolute end (`expires_at`,
-- set at sign-in and never moved) and records its last use (`last_used_at`, sign-in and each
-- refresh) for the idle timeout, plus the user agent and address of its sign-in so the user can
-- tell sessions apart. Sessions from before this migration end 12 hours after they began (the
-- default maximum lifetime); their last use is their newest refresh. `users.tokens_valid_after`
-- refuses single sign-on tokens issued before it (set when a user's sessions are ended).
-- Times are integer microseconds, as everywhere in this schema.
ALTER TABLE sessions ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;

UPDATE sessions SET
    expires_at = created_at + 43200000000,
    last_used_at = COALESCE(
        (SELECT MAX(t.used_at) FROM session_tokens t
         WHERE t.tenant_id = sessions.tenant_id AND t.session_id = sessions.session_id),
        created_at);

ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER;
