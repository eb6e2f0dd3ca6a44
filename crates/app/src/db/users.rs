//! The `users` table.

use super::AnyConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::users;
use crate::domain::Username;

/// Database id of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// A stored account.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub password_hash: String,
    pub created_at: i64,
    /// The media server records their lives (replays); on unless they turned it off.
    pub record_lives: bool,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = users)]
struct UserRow {
    id: i64,
    username: String,
    password_hash: String,
    created_at: i64,
    record_lives: bool,
}

/// `UserRow`'s columns, for `RETURNING` (a `Selectable` cannot be returned through
/// `AnyConnection`).
const USER_COLUMNS: (
    users::id,
    users::username,
    users::password_hash,
    users::created_at,
    users::record_lives,
) = (
    users::id,
    users::username,
    users::password_hash,
    users::created_at,
    users::record_lives,
);

impl From<UserRow> for User {
    fn from(row: UserRow) -> User {
        User {
            id: UserId(row.id),
            username: Username::from_trusted(row.username),
            password_hash: row.password_hash,
            created_at: row.created_at,
            record_lives: row.record_lives,
        }
    }
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// Another account has the same name, ignoring case.
    #[error("the username is taken")]
    UsernameTaken,
    #[error(transparent)]
    Database(#[from] DieselError),
}

pub fn create_user(
    connection: &mut AnyConnection,
    username: &Username,
    password_hash: &str,
    now: i64,
) -> Result<User, CreateUserError> {
    diesel::insert_into(users::table)
        .values((
            users::username.eq(username.as_str()),
            users::password_hash.eq(password_hash),
            users::created_at.eq(now),
        ))
        .returning(USER_COLUMNS)
        .get_result::<UserRow>(connection)
        .map(User::from)
        .map_err(|error| match error {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                CreateUserError::UsernameTaken
            }
            other => CreateUserError::Database(other),
        })
}

/// Case-insensitive lookup (the column is `COLLATE NOCASE`).
pub fn find_by_username(
    connection: &mut AnyConnection,
    username: &Username,
) -> QueryResult<Option<User>> {
    users::table
        .filter(users::username.eq(username.as_str()))
        .select(UserRow::as_select())
        .first(connection)
        .optional()
        .map(|row| row.map(User::from))
}

pub fn username_exists(connection: &mut AnyConnection, username: &Username) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        users::table.filter(users::username.eq(username.as_str())),
    ))
    .get_result(connection)
}

pub fn find_by_id(connection: &mut AnyConnection, user: UserId) -> QueryResult<Option<User>> {
    users::table
        .filter(users::id.eq(user.0))
        .select(UserRow::as_select())
        .first(connection)
        .optional()
        .map(|row| row.map(User::from))
}

/// Turns the recording of the user's lives on or off (for lives published from now on).
pub fn set_record_lives(
    connection: &mut AnyConnection,
    user: UserId,
    enabled: bool,
) -> QueryResult<()> {
    diesel::update(users::table.filter(users::id.eq(user.0)))
        .set(users::record_lives.eq(enabled))
        .execute(connection)
        .map(drop)
}
