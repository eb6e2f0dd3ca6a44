-- One stream key per user, for WHIP ingest (OBS). The key is stored twice: a hash for
-- the lookup when a WHIP request arrives, and sealed (AES-256-GCM with a key derived
-- from STREAM_KEY_SECRET) so the settings page can reveal it. Rotation replaces both
-- and bumps generation, which running WHIP publishes are checked against.
CREATE TABLE stream_keys (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    key_sealed TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- How a live was started: 'browser' (the start-live page) or 'whip' (a WHIP client
-- with the owner's stream key; the media server ends it when the publish ends).
ALTER TABLE lives ADD COLUMN source TEXT NOT NULL DEFAULT 'browser'
    CHECK (source IN ('browser', 'whip'));
