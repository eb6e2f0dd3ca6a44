-- Recordings of lives (replays), as the media server reports them
-- (`/internal/v1/recordings/sync`). The media server records and stores the files; a
-- row is what the app knows of one. Times are Unix milliseconds (UTC).
CREATE TABLE recordings (
    -- 32 lowercase hex digits chosen by the media server (also its file name there).
    id TEXT PRIMARY KEY NOT NULL,
    live_id BIGINT NOT NULL REFERENCES lives (id) ON DELETE CASCADE,
    -- The live's owner, kept here so a channel's videos list without a join.
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    started_at_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL CHECK (duration_ms >= 0),
    bytes BIGINT NOT NULL CHECK (bytes >= 0),
    container TEXT NOT NULL CHECK (container IN ('webm', 'mp4')),
    -- The media server's last word: 'deleted' means the file is gone for good.
    state TEXT NOT NULL CHECK (state IN ('recording', 'finished', 'stopped', 'deleted')),
    -- Set when the creator deletes the video: never shown again, and every sync answer
    -- asks the media server to delete it until it reports 'deleted'.
    deleted_at_ms BIGINT,
    updated_at_ms BIGINT NOT NULL
);

CREATE INDEX recordings_user_started ON recordings (user_id, started_at_ms);
CREATE INDEX recordings_live_id ON recordings (live_id);
-- What the sync answer reads: deleted by the creator, not yet by the media server.
CREATE INDEX recordings_pending_deletion ON recordings (deleted_at_ms)
    WHERE deleted_at_ms IS NOT NULL AND state <> 'deleted';

-- Whether the media server records the creator's lives. Existing creators start with
-- recording on, as new ones do.
ALTER TABLE users ADD COLUMN record_lives BOOLEAN NOT NULL DEFAULT TRUE;
