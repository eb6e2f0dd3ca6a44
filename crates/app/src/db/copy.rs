//! `privatehub-app copy-database --from sqlite://… --to postgres://…`: moves a SQLite
//! database to PostgreSQL. The target is migrated first; every table is copied in one
//! PostgreSQL transaction with its ids, as upserts by primary key (a rerun changes
//! nothing); the sequences are moved past the copied ids; then the rows of each table
//! are counted on both sides, and a mismatch rolls the whole copy back.
//!
//! The source is read in one SQLite read transaction (a consistent snapshot); stop the
//! app first all the same, or messages sent during the copy stay behind.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::MigrationHarness;

use super::schema::{chat_bans, chat_messages, lives, recordings, sessions, stream_keys, users};
use super::{MIGRATIONS, POSTGRES_MIGRATIONS};

/// Rows read from the source and written to the target per statement.
const BATCH: i64 = 1_000;

/// The tables in the order they are copied (every reference points back up the list).
pub const TABLES: [&str; 7] = [
    "users",
    "sessions",
    "lives",
    "stream_keys",
    "chat_messages",
    "chat_bans",
    "recordings",
];

/// One table's rows on both sides after the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    pub source: i64,
    pub target: i64,
}

/// Why the copy failed (the target is left as it was).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source SQLite file {0} does not exist")]
    NoSource(PathBuf),
    #[error("cannot open the source: {0}")]
    OpenSource(diesel::ConnectionError),
    #[error("cannot connect to the target: {0}")]
    OpenTarget(diesel::ConnectionError),
    #[error(
        "the source database is not fully migrated: start this version of the app on it \
         once (or use the version that created it), then copy"
    )]
    SourceNotMigrated,
    #[error("cannot migrate {side}: {message}")]
    Migration { side: &'static str, message: String },
    #[error("copying {table}: {source}")]
    Copy {
        table: &'static str,
        source: diesel::result::Error,
    },
    #[error("row counts differ after the copy (nothing was kept): {0:?}")]
    CountMismatch(Vec<TableCount>),
}

/// Copies the SQLite database at `source` into the PostgreSQL database at `target_url`.
/// Returns the row count of every table, equal on both sides.
pub fn copy_sqlite_to_postgres(
    source: &Path,
    target_url: &str,
) -> Result<Vec<TableCount>, CopyError> {
    if !source.is_file() {
        return Err(CopyError::NoSource(source.to_owned()));
    }
    let mut sqlite =
        SqliteConnection::establish(&source.to_string_lossy()).map_err(CopyError::OpenSource)?;
    let pending =
        sqlite
            .has_pending_migration(MIGRATIONS)
            .map_err(|error| CopyError::Migration {
                side: "the source",
                message: error.to_string(),
            })?;
    if pending {
        return Err(CopyError::SourceNotMigrated);
    }
    let mut postgres = PgConnection::establish(target_url).map_err(CopyError::OpenTarget)?;
    postgres
        .run_pending_migrations(POSTGRES_MIGRATIONS)
        .map_err(|error| CopyError::Migration {
            side: "the target",
            message: error.to_string(),
        })?;

    let outcome: Result<Vec<TableCount>, Abort> = sqlite.transaction(|sqlite| {
        postgres.transaction(|postgres| {
            copy_tables(sqlite, postgres).map_err(Abort)?;
            let counts = count_tables(sqlite, postgres).map_err(Abort)?;
            if counts.iter().all(|count| count.source == count.target) {
                Ok(counts)
            } else {
                // An error out of the transaction rolls it back.
                Err(Abort(CopyError::CountMismatch(counts)))
            }
        })
    });
    outcome.map_err(|Abort(error)| error)
}

/// A copy error that rolls both transactions back.
struct Abort(CopyError);

impl From<diesel::result::Error> for Abort {
    fn from(source: diesel::result::Error) -> Self {
        Abort(CopyError::Copy {
            table: "(transaction)",
            source,
        })
    }
}

fn failed(table: &'static str) -> impl Fn(diesel::result::Error) -> CopyError {
    move |source| CopyError::Copy { table, source }
}

/// Copies a table with one integer primary key, `BATCH` rows at a time in id order.
macro_rules! copy_by_id {
    ($sqlite:expr, $postgres:expr, $table:ident, $id:ident: $id_type:ty,
     ($($column:ident: $type:ty),+ $(,)?)) => {{
        let mut after: Option<$id_type> = None;
        loop {
            let mut query = $table::table
                .select(($table::$id, $($table::$column),+))
                .order($table::$id.asc())
                .limit(BATCH)
                .into_boxed();
            if let Some(after) = after.clone() {
                query = query.filter($table::$id.gt(after));
            }
            let rows: Vec<($id_type, $($type),+)> = query
                .load($sqlite)
                .map_err(failed(stringify!($table)))?;
            let Some(last) = rows.last() else { break };
            after = Some(last.0.clone());
            let values: Vec<_> = rows
                .into_iter()
                .map(|row| {
                    #[allow(non_snake_case)]
                    let ($id, $($column),+) = row;
                    ($table::$id.eq($id), $($table::$column.eq($column)),+)
                })
                .collect();
            diesel::insert_into($table::table)
                .values(&values)
                .on_conflict($table::$id)
                .do_update()
                .set(($($table::$column.eq(excluded($table::$column))),+))
                .execute($postgres)
                .map_err(failed(stringify!($table)))?;
        }
    }};
}

fn copy_tables(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<(), CopyError> {
    copy_by_id!(sqlite, postgres, users, id: i64, (
        username: String,
        password_hash: String,
        created_at: i64,
        record_lives: bool,
    ));
    copy_by_id!(sqlite, postgres, sessions, id: i64, (
        token_hash: String,
        user_id: i64,
        created_at: i64,
        expires_at: i64,
    ));
    copy_by_id!(sqlite, postgres, lives, id: i64, (
        user_id: i64,
        title: String,
        started_at: i64,
        ended_at: Option<i64>,
        peak_viewers: i32,
        source: String,
    ));
    copy_by_id!(sqlite, postgres, stream_keys, user_id: i64, (
        key_hash: String,
        key_sealed: String,
        generation: i64,
        created_at: i64,
    ));
    copy_by_id!(sqlite, postgres, chat_messages, id: i64, (
        live_id: i64,
        user_id: i64,
        body: String,
        sent_at_ms: i64,
        deleted_at_ms: Option<i64>,
    ));
    copy_chat_bans(sqlite, postgres)?;
    copy_by_id!(sqlite, postgres, recordings, id: String, (
        live_id: i64,
        user_id: i64,
        started_at_ms: i64,
        duration_ms: i64,
        bytes: i64,
        container: String,
        state: String,
        deleted_at_ms: Option<i64>,
        updated_at_ms: i64,
    ));
    // Explicit ids leave the sequences behind: new rows would collide with copied ones.
    for table in ["users", "sessions", "lives", "chat_messages"] {
        postgres
            .batch_execute(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ))
            .map_err(failed("(sequences)"))?;
    }
    Ok(())
}

/// `chat_bans` has a two-column key; bans are few, so they come in one read.
fn copy_chat_bans(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<(), CopyError> {
    let rows: Vec<(i64, i64, i64)> = chat_bans::table
        .select((
            chat_bans::channel_user_id,
            chat_bans::banned_user_id,
            chat_bans::created_at_ms,
        ))
        .load(sqlite)
        .map_err(failed("chat_bans"))?;
    for chunk in rows.chunks(BATCH as usize) {
        let values: Vec<_> = chunk
            .iter()
            .map(|(channel, banned, created)| {
                (
                    chat_bans::channel_user_id.eq(*channel),
                    chat_bans::banned_user_id.eq(*banned),
                    chat_bans::created_at_ms.eq(*created),
                )
            })
            .collect();
        diesel::insert_into(chat_bans::table)
            .values(&values)
            .on_conflict((chat_bans::channel_user_id, chat_bans::banned_user_id))
            .do_update()
            .set(chat_bans::created_at_ms.eq(excluded(chat_bans::created_at_ms)))
            .execute(postgres)
            .map_err(failed("chat_bans"))?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count_tables(
    sqlite: &mut SqliteConnection,
    postgres: &mut PgConnection,
) -> Result<Vec<TableCount>, CopyError> {
    TABLES
        .iter()
        .map(|&table| {
            let query = format!("SELECT COUNT(*) AS n FROM {table}");
            let source = diesel::sql_query(&query)
                .get_result::<Count>(sqlite)
                .map_err(failed(table))?
                .n;
            let target = diesel::sql_query(&query)
                .get_result::<Count>(postgres)
                .map_err(failed(table))?
                .n;
            Ok(TableCount {
                table,
                source,
                target,
            })
        })
        .collect()
}
