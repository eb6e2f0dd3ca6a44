-- Accounts and login sessions (PostgreSQL; the same version as migrations/ for SQLite).
-- Times are Unix seconds (UTC).

-- Case is kept for display; this collation makes uniqueness and lookups
-- case-insensitive, as SQLite's NOCASE does (usernames are ASCII-only).
CREATE COLLATION privatehub_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY NOT NULL,
    username TEXT COLLATE privatehub_nocase NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id BIGSERIAL PRIMARY KEY NOT NULL,
    -- BLAKE2s-256 of the random cookie token, hex; the token itself is never stored.
    token_hash TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
