//! The `lives` table: current lives (`ended_at IS NULL`) and the history.

use super::AnyConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use privatehub_protocol::LiveId;

use super::schema::{lives, users};
use super::users::UserId;
use crate::domain::{LiveTitle, Username};

/// A live with its owner's name.
#[derive(Debug, Clone)]
pub struct Live {
    pub id: LiveId,
    pub user_id: UserId,
    pub username: Username,
    pub title: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub peak_viewers: u32,
    pub source: LiveSource,
}

type LiveRow = (i64, i64, String, String, i64, Option<i64>, i32, String);

const LIVE_COLUMNS: (
    lives::id,
    lives::user_id,
    users::username,
    lives::title,
    lives::started_at,
    lives::ended_at,
    lives::peak_viewers,
    lives::source,
) = (
    lives::id,
    lives::user_id,
    users::username,
    lives::title,
    lives::started_at,
    lives::ended_at,
    lives::peak_viewers,
    lives::source,
);

fn to_live((id, user_id, username, title, started_at, ended_at, peak, source): LiveRow) -> Live {
    Live {
        id: LiveId(id),
        user_id: UserId(user_id),
        username: Username::from_trusted(username),
        title,
        started_at,
        ended_at,
        peak_viewers: u32::try_from(peak).unwrap_or(0),
        source: if source == LiveSource::Whip.as_str() {
            LiveSource::Whip
        } else {
            LiveSource::Browser
        },
    }
}

/// The user's current live, if any.
pub fn find_current_by_user(
    connection: &mut AnyConnection,
    user: UserId,
) -> QueryResult<Option<Live>> {
    lives::table
        .inner_join(users::table)
        .filter(lives::user_id.eq(user.0))
        .filter(lives::ended_at.is_null())
        .select(LIVE_COLUMNS)
        .first::<LiveRow>(connection)
        .optional()
        .map(|row| row.map(to_live))
}

/// The current live of the user with this name (case-insensitive), if any.
pub fn find_current_by_username(
    connection: &mut AnyConnection,
    username: &Username,
) -> QueryResult<Option<Live>> {
    lives::table
        .inner_join(users::table)
        .filter(users::username.eq(username.as_str()))
        .filter(lives::ended_at.is_null())
        .select(LIVE_COLUMNS)
        .first::<LiveRow>(connection)
        .optional()
        .map(|row| row.map(to_live))
}

/// Who publishes a live: the start-live page or a WHIP client (`lives.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveSource {
    Browser,
    Whip,
}

impl LiveSource {
    fn as_str(self) -> &'static str {
        match self {
            LiveSource::Browser => "browser",
            LiveSource::Whip => "whip",
        }
    }
}

/// Returns the user's current live, or starts one. `true` when it was created now.
/// `source` is recorded either way: the last one to publish owns the live (a WHIP
/// client taking over a browser live, or the other way round).
/// Runs in a write transaction; the partial unique index is the backstop.
pub fn start_or_get_current(
    connection: &mut AnyConnection,
    user: UserId,
    title: &LiveTitle,
    source: LiveSource,
    now: i64,
) -> QueryResult<(Live, bool)> {
    super::write_transaction(connection, |connection| {
        if let Some(live) = find_current_by_user(connection, user)? {
            diesel::update(lives::table.filter(lives::id.eq(live.id.0)))
                .set(lives::source.eq(source.as_str()))
                .execute(connection)?;
            return Ok((live, false));
        }
        // In a savepoint: on PostgreSQL a failed statement would abort the transaction.
        let inserted = connection.transaction(|connection| {
            diesel::insert_into(lives::table)
                .values((
                    lives::user_id.eq(user.0),
                    lives::title.eq(title.as_str()),
                    lives::started_at.eq(now),
                    lives::source.eq(source.as_str()),
                ))
                .execute(connection)
        });
        match inserted {
            Ok(_) => {}
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
            Err(other) => return Err(other),
        }
        let live = find_current_by_user(connection, user)?.ok_or(DieselError::NotFound)?;
        Ok((live, true))
    })
}

/// Ends the user's current live, recording `peak_viewers` (kept if already higher).
/// `None` when the user was not live.
pub fn end_current(
    connection: &mut AnyConnection,
    user: UserId,
    peak_viewers: u32,
    now: i64,
) -> QueryResult<Option<Live>> {
    super::write_transaction(connection, |connection| {
        let Some(mut live) = find_current_by_user(connection, user)? else {
            return Ok(None);
        };
        let peak = live.peak_viewers.max(peak_viewers);
        diesel::update(lives::table.filter(lives::id.eq(live.id.0)))
            .set((
                lives::ended_at.eq(Some(now)),
                lives::peak_viewers.eq(i32::try_from(peak).unwrap_or(i32::MAX)),
            ))
            .execute(connection)?;
        live.ended_at = Some(now);
        live.peak_viewers = peak;
        Ok(Some(live))
    })
}

/// Records who publishes the live now.
pub fn set_source(
    connection: &mut AnyConnection,
    live: LiveId,
    source: LiveSource,
) -> QueryResult<()> {
    diesel::update(lives::table.filter(lives::id.eq(live.0)))
        .set(lives::source.eq(source.as_str()))
        .execute(connection)
        .map(drop)
}

/// Current lives published by a WHIP client.
pub fn list_current_whip(connection: &mut AnyConnection) -> QueryResult<Vec<Live>> {
    lives::table
        .inner_join(users::table)
        .filter(lives::ended_at.is_null())
        .filter(lives::source.eq(LiveSource::Whip.as_str()))
        .select(LIVE_COLUMNS)
        .load::<LiveRow>(connection)
        .map(|rows| rows.into_iter().map(to_live).collect())
}

/// The title of the user's most recent live, if any.
pub fn last_title(connection: &mut AnyConnection, user: UserId) -> QueryResult<Option<String>> {
    lives::table
        .filter(lives::user_id.eq(user.0))
        .order((lives::started_at.desc(), lives::id.desc()))
        .select(lives::title)
        .first(connection)
        .optional()
}

/// Everyone live now, newest first.
pub fn list_current(connection: &mut AnyConnection) -> QueryResult<Vec<Live>> {
    lives::table
        .inner_join(users::table)
        .filter(lives::ended_at.is_null())
        .order((lives::started_at.desc(), lives::id.desc()))
        .select(LIVE_COLUMNS)
        .load::<LiveRow>(connection)
        .map(|rows| rows.into_iter().map(to_live).collect())
}

/// A user's ended lives, newest first.
pub fn list_past_by_user(
    connection: &mut AnyConnection,
    user: UserId,
    limit: i64,
) -> QueryResult<Vec<Live>> {
    lives::table
        .inner_join(users::table)
        .filter(lives::user_id.eq(user.0))
        .filter(lives::ended_at.is_not_null())
        .order((lives::started_at.desc(), lives::id.desc()))
        .limit(limit)
        .select(LIVE_COLUMNS)
        .load::<LiveRow>(connection)
        .map(|rows| rows.into_iter().map(to_live).collect())
}
