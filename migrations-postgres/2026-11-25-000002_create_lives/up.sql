-- One row per broadcast. A live is current while ended_at is NULL; the live's id is
-- also its chat room and media room id.
CREATE TABLE lives (
    id BIGSERIAL PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    peak_viewers INTEGER NOT NULL DEFAULT 0 CHECK (peak_viewers >= 0)
);

-- At most one current live per user, enforced by the database.
CREATE UNIQUE INDEX lives_one_current_per_user ON lives (user_id) WHERE ended_at IS NULL;
CREATE INDEX lives_user_started ON lives (user_id, started_at);
