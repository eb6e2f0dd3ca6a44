-- Accounts and login sessions. Times are Unix seconds (UTC).
CREATE TABLE users (
    id INTEGER PRIMARY KEY NOT NULL,
    -- Case is kept for display; NOCASE makes uniqueness and lookups case-insensitive
    -- (usernames are ASCII-only, which is all NOCASE folds).
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id INTEGER PRIMARY KEY NOT NULL,
    -- BLAKE2s-256 of the random cookie token, hex; the token itself is never stored.
    token_hash TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
