//! The `recordings` table: what the media server last reported of each recording of a
//! live (`/internal/v1/recordings/sync`), and whether its creator deleted it. Every query
//! of recordings is in this module.
//!
//! A recording is *visible* (listed and playable) while its creator has not deleted it
//! and the media server has not reported it `deleted`. Both ends keep the row: a
//! creator's deletion is repeated in every sync answer until the media server reports
//! the file gone, and a `deleted` report is final (a later report cannot bring it back).

use std::collections::HashMap;

use super::AnyConnection;
use diesel::prelude::*;
use privatehub_protocol::LiveId;
use privatehub_protocol::recordings::{
    RecordingContainer, RecordingId, RecordingReport, RecordingState,
};

use super::schema::{lives, recordings, users};
use super::users::UserId;
use crate::domain::Username;

/// Most recordings a channel's videos page lists (newest first).
pub const MAX_LISTED: i64 = 200;

/// A visible recording with its live's title and its creator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: RecordingId,
    pub live_id: LiveId,
    pub user_id: UserId,
    pub username: Username,
    pub title: String,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    pub container: RecordingContainer,
    pub state: RecordingState,
}

/// A report skipped by [`store_reports`]: its live is unknown here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedReport {
    pub id: RecordingId,
    pub live_id: LiveId,
}

/// Stores the media server's reports in one transaction: a new recording is inserted
/// (its creator is its live's owner), a known one takes the report's figures and state.
/// A report whose live is unknown is skipped (returned, for the caller to log); a
/// recording already reported `deleted` stays so.
pub fn store_reports(
    connection: &mut AnyConnection,
    reports: &[RecordingReport],
    now_ms: i64,
) -> QueryResult<Vec<SkippedReport>> {
    super::write_transaction(connection, |connection| {
        let mut owners: HashMap<LiveId, Option<i64>> = HashMap::new();
        let mut skipped = Vec::new();
        for report in reports {
            let owner = match owners.get(&report.live_id) {
                Some(owner) => *owner,
                None => {
                    let owner = lives::table
                        .filter(lives::id.eq(report.live_id.0))
                        .select(lives::user_id)
                        .first::<i64>(connection)
                        .optional()?;
                    owners.insert(report.live_id, owner);
                    owner
                }
            };
            let Some(owner) = owner else {
                skipped.push(SkippedReport {
                    id: report.id.clone(),
                    live_id: report.live_id,
                });
                continue;
            };
            store_report(connection, report, owner, now_ms)?;
        }
        Ok(skipped)
    })
}

fn store_report(
    connection: &mut AnyConnection,
    report: &RecordingReport,
    owner: i64,
    now_ms: i64,
) -> QueryResult<()> {
    let id = report.id.as_str();
    let known = recordings::table
        .find(id)
        .select(recordings::state)
        .first::<String>(connection)
        .optional()?;
    let figures = (
        recordings::started_at_ms.eq(report.started_at_ms),
        recordings::duration_ms.eq(report.duration_ms.max(0)),
        recordings::bytes.eq(i64::try_from(report.bytes).unwrap_or(i64::MAX)),
        recordings::container.eq(container_text(report.container)),
        recordings::state.eq(state_text(report.state)),
        recordings::updated_at_ms.eq(now_ms),
    );
    match known {
        Some(state) if state == state_text(RecordingState::Deleted) => Ok(()),
        Some(_) => diesel::update(recordings::table.find(id))
            .set(figures)
            .execute(connection)
            .map(drop),
        None => diesel::insert_into(recordings::table)
            .values((
                recordings::id.eq(id),
                recordings::live_id.eq(report.live_id.0),
                recordings::user_id.eq(owner),
                figures,
            ))
            .execute(connection)
            .map(drop),
    }
}

type RecordingRow = (
    String,
    i64,
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    String,
);

const RECORDING_COLUMNS: (
    recordings::id,
    recordings::live_id,
    recordings::user_id,
    users::username,
    lives::title,
    recordings::started_at_ms,
    recordings::duration_ms,
    recordings::bytes,
    recordings::container,
    recordings::state,
) = (
    recordings::id,
    recordings::live_id,
    recordings::user_id,
    users::username,
    lives::title,
    recordings::started_at_ms,
    recordings::duration_ms,
    recordings::bytes,
    recordings::container,
    recordings::state,
);

/// `None` for a row this version cannot read (it never writes one).
fn to_recording(row: RecordingRow) -> Option<Recording> {
    let (id, live_id, user_id, username, title, started, duration, bytes, container, state) = row;
    Some(Recording {
        id: RecordingId::parse(&id).ok()?,
        live_id: LiveId(live_id),
        user_id: UserId(user_id),
        username: Username::from_trusted(username),
        title,
        started_at_ms: started,
        duration_ms: duration,
        bytes,
        container: parse_container(&container)?,
        state: parse_state(&state)?,
    })
}

/// The user's visible recordings, newest first, at most `limit`.
pub fn list_visible_by_user(
    connection: &mut AnyConnection,
    user: UserId,
    limit: i64,
) -> QueryResult<Vec<Recording>> {
    recordings::table
        .inner_join(lives::table)
        .inner_join(users::table)
        .filter(recordings::user_id.eq(user.0))
        .filter(recordings::deleted_at_ms.is_null())
        .filter(recordings::state.ne(state_text(RecordingState::Deleted)))
        .order((recordings::started_at_ms.desc(), recordings::id.desc()))
        .limit(limit)
        .select(RECORDING_COLUMNS)
        .load::<RecordingRow>(connection)
        .map(|rows| rows.into_iter().filter_map(to_recording).collect())
}

/// One visible recording.
pub fn find_visible(
    connection: &mut AnyConnection,
    id: &RecordingId,
) -> QueryResult<Option<Recording>> {
    recordings::table
        .inner_join(lives::table)
        .inner_join(users::table)
        .filter(recordings::id.eq(id.as_str()))
        .filter(recordings::deleted_at_ms.is_null())
        .filter(recordings::state.ne(state_text(RecordingState::Deleted)))
        .select(RECORDING_COLUMNS)
        .first::<RecordingRow>(connection)
        .optional()
        .map(|row| row.and_then(to_recording))
}

/// What [`delete_by_creator`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatorDeletion {
    /// Marked deleted now.
    Deleted,
    /// No visible recording has this id.
    NotFound,
    /// It is another user's.
    NotOwner,
}

/// The creator deletes a visible recording: it is never shown again, and the media
/// server is asked to delete it (see [`pending_deletions`]).
pub fn delete_by_creator(
    connection: &mut AnyConnection,
    id: &RecordingId,
    creator: UserId,
    now_ms: i64,
) -> QueryResult<CreatorDeletion> {
    super::write_transaction(connection, |connection| {
        let Some(recording) = find_visible(connection, id)? else {
            return Ok(CreatorDeletion::NotFound);
        };
        if recording.user_id != creator {
            return Ok(CreatorDeletion::NotOwner);
        }
        diesel::update(
            recordings::table
                .find(id.as_str())
                .filter(recordings::deleted_at_ms.is_null()),
        )
        .set(recordings::deleted_at_ms.eq(Some(now_ms)))
        .execute(connection)?;
        Ok(CreatorDeletion::Deleted)
    })
}

/// Recordings their creators deleted that the media server has not yet reported
/// `deleted`, oldest deletion first, at most `limit`: the sync answer's `delete`.
pub fn pending_deletions(
    connection: &mut AnyConnection,
    limit: i64,
) -> QueryResult<Vec<RecordingId>> {
    recordings::table
        .filter(recordings::deleted_at_ms.is_not_null())
        .filter(recordings::state.ne(state_text(RecordingState::Deleted)))
        .order((recordings::deleted_at_ms.asc(), recordings::id.asc()))
        .limit(limit)
        .select(recordings::id)
        .load::<String>(connection)
        .map(|ids| {
            ids.iter()
                .filter_map(|id| RecordingId::parse(id).ok())
                .collect()
        })
}

fn container_text(container: RecordingContainer) -> &'static str {
    match container {
        RecordingContainer::Webm => "webm",
        RecordingContainer::Mp4 => "mp4",
    }
}

fn parse_container(text: &str) -> Option<RecordingContainer> {
    [RecordingContainer::Webm, RecordingContainer::Mp4]
        .into_iter()
        .find(|container| container_text(*container) == text)
}

fn state_text(state: RecordingState) -> &'static str {
    match state {
        RecordingState::Recording => "recording",
        RecordingState::Finished => "finished",
        RecordingState::Stopped => "stopped",
        RecordingState::Deleted => "deleted",
    }
}

fn parse_state(text: &str) -> Option<RecordingState> {
    [
        RecordingState::Recording,
        RecordingState::Finished,
        RecordingState::Stopped,
        RecordingState::Deleted,
    ]
    .into_iter()
    .find(|state| state_text(*state) == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{
        AnyConnection, DbPool, MIGRATIONS, build_sqlite_pool, lives, run_migrations, users,
    };
    use crate::domain::LiveTitle;
    use diesel::migration::{MigrationConnection, MigrationSource};
    use diesel_migrations::MigrationHarness;

    fn database() -> (tempfile::TempDir, DbPool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = build_sqlite_pool(&dir.path().join("test.sqlite")).unwrap();
        run_migrations(&pool).unwrap();
        (dir, pool)
    }

    /// A user with one live; returns their id and the live's.
    fn creator(connection: &mut AnyConnection, name: &str) -> (UserId, LiveId) {
        let username = Username::parse(name).unwrap();
        let user = users::create_user(connection, &username, "hash", 1_000).unwrap();
        let (live, _) = lives::start_or_get_current(
            connection,
            user.id,
            &LiveTitle::default_for(name),
            lives::LiveSource::Browser,
            1_000,
        )
        .unwrap();
        (user.id, live.id)
    }

    fn report(id: char, live: LiveId, duration_ms: i64, state: RecordingState) -> RecordingReport {
        RecordingReport {
            id: RecordingId::parse(&id.to_string().repeat(32)).unwrap(),
            live_id: live,
            started_at_ms: 1_000_000,
            duration_ms,
            bytes: 4_096,
            container: RecordingContainer::Webm,
            state,
        }
    }

    fn listed(connection: &mut AnyConnection, user: UserId) -> Vec<(String, i64)> {
        list_visible_by_user(connection, user, MAX_LISTED)
            .unwrap()
            .into_iter()
            .map(|recording| (recording.id.to_string(), recording.duration_ms))
            .collect()
    }

    #[test]
    fn reports_update_their_recording_and_a_deleted_one_stays_deleted() {
        let (_dir, pool) = database();
        let connection = &mut *pool.get().unwrap();
        let (alice, live) = creator(connection, "alice");
        let a = "a".repeat(32);
        let first = report('a', live, 1_000, RecordingState::Recording);
        assert_eq!(store_reports(connection, &[first], 1).unwrap(), []);
        assert_eq!(listed(connection, alice), [(a.clone(), 1_000)]);
        let later = report('a', live, 60_000, RecordingState::Finished);
        store_reports(connection, std::slice::from_ref(&later), 2).unwrap();
        let found = find_visible(connection, &later.id).unwrap().unwrap();
        assert_eq!(
            (found.duration_ms, found.state),
            (60_000, RecordingState::Finished)
        );
        assert_eq!(
            (found.user_id, found.title.as_str()),
            (alice, "alice's live")
        );

        let gone = report('a', live, 60_000, RecordingState::Deleted);
        store_reports(connection, &[gone], 3).unwrap();
        assert_eq!(listed(connection, alice), []);
        assert_eq!(find_visible(connection, &later.id).unwrap(), None);
        // A stale report after the file was deleted does not bring it back.
        store_reports(connection, &[later], 4).unwrap();
        assert_eq!(listed(connection, alice), []);
    }

    #[test]
    fn a_report_of_an_unknown_live_is_skipped() {
        let (_dir, pool) = database();
        let connection = &mut *pool.get().unwrap();
        let (alice, live) = creator(connection, "alice");
        let known = report('a', live, 1_000, RecordingState::Finished);
        let stray = report('b', LiveId(live.0 + 100), 1_000, RecordingState::Finished);
        let skipped = store_reports(connection, &[stray.clone(), known], 1).unwrap();
        assert_eq!(
            skipped,
            [SkippedReport {
                id: stray.id,
                live_id: stray.live_id
            }]
        );
        assert_eq!(listed(connection, alice), [("a".repeat(32), 1_000)]);
    }

    #[test]
    fn a_creator_deletion_is_pending_until_the_media_server_reports_it_deleted() {
        let (_dir, pool) = database();
        let connection = &mut *pool.get().unwrap();
        let (alice, live) = creator(connection, "alice");
        let (bob, _) = creator(connection, "bob");
        let recording = report('a', live, 1_000, RecordingState::Finished);
        store_reports(connection, std::slice::from_ref(&recording), 1).unwrap();
        let id = recording.id.clone();
        assert_eq!(
            delete_by_creator(connection, &id, bob, 2).unwrap(),
            CreatorDeletion::NotOwner
        );
        assert_eq!(pending_deletions(connection, 10).unwrap(), []);
        assert_eq!(
            delete_by_creator(connection, &id, alice, 2).unwrap(),
            CreatorDeletion::Deleted
        );
        assert_eq!(
            delete_by_creator(connection, &id, alice, 3).unwrap(),
            CreatorDeletion::NotFound
        );
        assert_eq!(listed(connection, alice), []);
        // The media server still reports the file: it is asked again, and not shown.
        store_reports(connection, std::slice::from_ref(&recording), 3).unwrap();
        assert_eq!(pending_deletions(connection, 10).unwrap(), [id]);
        assert_eq!(listed(connection, alice), []);
        let gone = report('a', live, 1_000, RecordingState::Deleted);
        store_reports(connection, &[gone], 4).unwrap();
        assert_eq!(pending_deletions(connection, 10).unwrap(), []);
    }

    #[test]
    fn lists_are_newest_first_and_bounded() {
        let (_dir, pool) = database();
        let connection = &mut *pool.get().unwrap();
        let (alice, live) = creator(connection, "alice");
        let mut older = report('a', live, 1_000, RecordingState::Finished);
        older.started_at_ms = 1_000;
        let mut newer = report('b', live, 2_000, RecordingState::Stopped);
        newer.started_at_ms = 2_000;
        store_reports(connection, &[older, newer], 1).unwrap();
        let ids: Vec<String> = list_visible_by_user(connection, alice, MAX_LISTED)
            .unwrap()
            .into_iter()
            .map(|recording| recording.id.to_string())
            .collect();
        assert_eq!(ids, ["b".repeat(32), "a".repeat(32)]);
        assert_eq!(list_visible_by_user(connection, alice, 1).unwrap().len(), 1);
    }

    /// A database made before recordings existed: its users keep their accounts and
    /// start with recording on.
    #[test]
    fn the_migration_upgrades_an_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        let pool = build_sqlite_pool(&dir.path().join("old.sqlite")).unwrap();
        let connection = &mut *pool.get().unwrap();
        let migrations =
            MigrationSource::<diesel::sqlite::Sqlite>::migrations(&MIGRATIONS).unwrap();
        let recordings_at = migrations
            .iter()
            .position(|migration| migration.name().to_string().ends_with("_create_recordings"))
            .expect("the recordings migration");
        let AnyConnection::Sqlite(sqlite) = connection else {
            unreachable!("a SQLite pool");
        };
        sqlite.setup().unwrap();
        for migration in &migrations[..recordings_at] {
            sqlite.run_migration(&**migration).unwrap();
        }
        diesel::sql_query(
            "INSERT INTO users (username, password_hash, created_at) VALUES ('old', 'h', 1)",
        )
        .execute(connection)
        .unwrap();
        let pending = migrations.len() - recordings_at;
        drop(migrations);
        assert_eq!(run_migrations(&pool).unwrap(), pending);
        let old = users::find_by_username(connection, &Username::parse("old").unwrap())
            .unwrap()
            .unwrap();
        assert!(old.record_lives);
        assert_eq!(listed(connection, old.id), []);
    }
}
