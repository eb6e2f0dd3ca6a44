//! The `stream_keys` table: one WHIP stream key per user (see `crate::stream_keys`).

use super::AnyConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

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
    connection: &mut AnyConnection,
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
    connection: &mut AnyConnection,
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
    connection: &mut AnyConnection,
    user: UserId,
    key: &SealedKey,
    now: i64,
) -> QueryResult<StoredStreamKey> {
    // In a savepoint, so a lost race (a unique violation) leaves any outer transaction
    // usable on PostgreSQL.
    let inserted = connection.transaction(|connection| {
        diesel::insert_into(stream_keys::table)
            .values(row(user, key, 1, now))
            .execute(connection)
    });
    match inserted {
        Ok(_) | Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
        Err(other) => return Err(other),
    }
    find_by_user(connection, user)?.ok_or(DieselError::NotFound)
}

/// Replaces the user's key (or stores a first one) and bumps its generation.
pub fn rotate(
    connection: &mut AnyConnection,
    user: UserId,
    key: &SealedKey,
    now: i64,
) -> QueryResult<StoredStreamKey> {
    super::write_transaction(connection, |connection| {
        // The update bumps the generation atomically (it locks the row on PostgreSQL);
        // a user without a key gets a first one.
        let updated = diesel::update(stream_keys::table.filter(stream_keys::user_id.eq(user.0)))
            .set((
                stream_keys::key_hash.eq(&key.key_hash),
                stream_keys::key_sealed.eq(&key.key_sealed),
                stream_keys::generation.eq(stream_keys::generation + 1),
                stream_keys::created_at.eq(now),
            ))
            .execute(connection)?;
        if updated == 0 {
            diesel::insert_into(stream_keys::table)
                .values(row(user, key, 1, now))
                .execute(connection)?;
        }
        find_by_user(connection, user)?.ok_or(DieselError::NotFound)
    })
}
