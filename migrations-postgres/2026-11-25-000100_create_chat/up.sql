-- Chat of each live, and per-channel bans. Times are Unix milliseconds (UTC).
CREATE TABLE chat_messages (
    -- Given by the app's chat server (it numbers from the highest stored id).
    id BIGSERIAL PRIMARY KEY NOT NULL,
    live_id BIGINT NOT NULL REFERENCES lives (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body TEXT NOT NULL,
    sent_at_ms BIGINT NOT NULL,
    -- Set when the broadcaster deletes the message or bans its author.
    deleted_at_ms BIGINT
);

CREATE INDEX chat_messages_live_id ON chat_messages (live_id, id);
CREATE INDEX chat_messages_user_id ON chat_messages (user_id);

-- A ban keeps `banned_user_id` out of the chat of every live of `channel_user_id`.
CREATE TABLE chat_bans (
    channel_user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    banned_user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (channel_user_id, banned_user_id)
);
