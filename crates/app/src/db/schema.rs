//! Diesel table definitions, matching `migrations/` (written by hand in the form
//! `diesel print-schema` produces).

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        created_at -> BigInt,
        record_lives -> Bool,
    }
}

diesel::table! {
    sessions (id) {
        id -> BigInt,
        token_hash -> Text,
        user_id -> BigInt,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    lives (id) {
        id -> BigInt,
        user_id -> BigInt,
        title -> Text,
        started_at -> BigInt,
        ended_at -> Nullable<BigInt>,
        peak_viewers -> Integer,
        source -> Text,
    }
}

diesel::table! {
    stream_keys (user_id) {
        user_id -> BigInt,
        key_hash -> Text,
        key_sealed -> Text,
        generation -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    chat_messages (id) {
        id -> BigInt,
        live_id -> BigInt,
        user_id -> BigInt,
        body -> Text,
        sent_at_ms -> BigInt,
        deleted_at_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    chat_bans (channel_user_id, banned_user_id) {
        channel_user_id -> BigInt,
        banned_user_id -> BigInt,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    recordings (id) {
        id -> Text,
        live_id -> BigInt,
        user_id -> BigInt,
        started_at_ms -> BigInt,
        duration_ms -> BigInt,
        bytes -> BigInt,
        container -> Text,
        state -> Text,
        deleted_at_ms -> Nullable<BigInt>,
        updated_at_ms -> BigInt,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(chat_messages -> users (user_id));
diesel::joinable!(chat_messages -> lives (live_id));
diesel::joinable!(lives -> users (user_id));
diesel::joinable!(stream_keys -> users (user_id));
diesel::joinable!(recordings -> lives (live_id));
diesel::joinable!(recordings -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    lives,
    chat_messages,
    chat_bans,
    stream_keys,
    recordings
);
