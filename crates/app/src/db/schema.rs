//! Diesel table definitions, matching `migrations/` (written by hand in the form
//! `diesel print-schema` produces).

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        created_at -> BigInt,
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
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(lives -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(users, sessions, lives);
