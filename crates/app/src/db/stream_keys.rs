//! The `stream_keys` table: one WHIP stream key per user (see `crate::stream_keys`).

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::schema::{stream_keys, users};
use super::users::UserId;
use crate::domain::Username;
use crate::stream_keys::SealedKey;

/// A stored key: its lookup hash, the sealed key, and how often it was rotated.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stream_keys)]
pub struct StoredStreamKey {
    pub user_id: i64,
    pub key_hash: String,
    pub key_sealed: String,
    pub generation: i64,
}

/// A `stream_keys` row to write.
#[derive(Insertable)]
#[diesel(table_name = stream_keys)]
struct NewRow<'a> {
    user_id: i64,
    key_hash: &'a str,
    key_sealed: &'a str,
    generation: i64,
    created_at: i64,
}

fn row(user: UserId, key: &SealedKey, generation: i64, now: i64) -> NewRow<'_> {
    NewRow {
        user_id: user.0,
        key_hash: &key.key_hash,
        key_sealed: &key.key_sealed,
        generation,
        created_at: now,
    }
}

pub fn find_by_user(
    connection: &mut SqliteConnection,
    user: UserId,
) -> QueryResult<Option<StoredStreamKey>> {
    stream_keys::table
        .filter(stream_keys::user_id.eq(user.0))
        .select(StoredStreamKey::as_select())
        .first(connection)
        .optional()
}

/// The key with this lookup hash and its owner's name.
pub fn find_by_hash(
    connection: &mut SqliteConnection,
    key_hash: &str,
) -> QueryResult<Option<(StoredStreamKey, Username)>> {
    stream_keys::table
        .inner_join(users::table)
        .filter(stream_keys::key_hash.eq(key_hash))
        .select((StoredStreamKey::as_select(), users::username))
        .first::<(StoredStreamKey, String)>(connection)
        .optional()
        .map(|row| row.map(|(key, name)| (key, Username::from_trusted(name))))
}

/// Stores a first key unless the user has one already (two tabs asking at once), and
/// returns whichever key is stored.
pub fn insert_if_missing(
    connection: &mut SqliteConnection,
    user: UserId,
    key: &SealedKey,
    now: i64,
) -> QueryResult<StoredStreamKey> {
    diesel::insert_or_ignore_into(stream_keys::table)
        .values(row(user, key, 1, now))
        .execute(connection)?;
    find_by_user(connection, user)?.ok_or(diesel::result::Error::NotFound)
}

/// Replaces the user's key (or stores a first one) and bumps its generation.
pub fn rotate(
    connection: &mut SqliteConnection,
    user: UserId,
    key: &SealedKey,
    now: i64,
) -> QueryResult<StoredStreamKey> {
    connection.immediate_transaction(|connection| {
        let generation = find_by_user(connection, user)?.map_or(1, |old| old.generation + 1);
        diesel::replace_into(stream_keys::table)
            .values(row(user, key, generation, now))
            .execute(connection)?;
        find_by_user(connection, user)?.ok_or(diesel::result::Error::NotFound)
    })
}
