//! The `sessions` table. Rows are keyed by the hash of the cookie token.

use super::AnyConnection;
use diesel::prelude::*;

use super::schema::{sessions, users};
use super::users::{User, UserId};
use crate::domain::Username;

pub fn create_session(
    connection: &mut AnyConnection,
    user: UserId,
    token_hash: &str,
    now: i64,
    expires_at: i64,
) -> QueryResult<()> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::token_hash.eq(token_hash),
            sessions::user_id.eq(user.0),
            sessions::created_at.eq(now),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(connection)
        .map(drop)
}

/// The user behind an unexpired session.
pub fn find_user_by_session(
    connection: &mut AnyConnection,
    token_hash: &str,
    now: i64,
) -> QueryResult<Option<User>> {
    sessions::table
        .inner_join(users::table)
        .filter(sessions::token_hash.eq(token_hash))
        .filter(sessions::expires_at.gt(now))
        .select((
            users::id,
            users::username,
            users::password_hash,
            users::created_at,
            users::record_lives,
        ))
        .first::<(i64, String, String, i64, bool)>(connection)
        .optional()
        .map(|row| {
            row.map(
                |(id, username, password_hash, created_at, record_lives)| User {
                    id: UserId(id),
                    username: Username::from_trusted(username),
                    password_hash,
                    created_at,
                    record_lives,
                },
            )
        })
}

pub fn delete_session(connection: &mut AnyConnection, token_hash: &str) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::token_hash.eq(token_hash))).execute(connection)
}

/// Removes expired sessions; run at start-up.
pub fn delete_expired(connection: &mut AnyConnection, now: i64) -> QueryResult<usize> {
    diesel::delete(sessions::table.filter(sessions::expires_at.le(now))).execute(connection)
}
