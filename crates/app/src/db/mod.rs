//! SQLite storage: the connection pool, per-connection pragmas, embedded migrations,
//! and one module of synchronous query functions per table. Query functions take
//! `&mut SqliteConnection`; handlers call them inside `web::block`.

pub mod chat;
pub mod lives;
pub mod recordings;
pub mod schema;
pub mod sessions;
pub mod stream_keys;
pub mod users;

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::InternalError;

/// The one pool type of the app.
pub type DbPool = Pool<ConnectionManager<SqliteConnection>>;
/// A connection checked out of [`DbPool`].
pub type DbConnection = PooledConnection<ConnectionManager<SqliteConnection>>;

/// The top-level `migrations/` directory, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    /// The directory for the database file could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    CreateDirectory {
        path: String,
        source: std::io::Error,
    },
    /// The pool could not open its first connection.
    #[error("cannot open the database: {0}")]
    Pool(#[from] r2d2::Error),
    /// A migration failed.
    #[error("cannot migrate the database: {0}")]
    Migration(String),
    /// The file could not be opened or put in WAL mode.
    #[error("cannot prepare the database: {0}")]
    Prepare(String),
}

/// Sets the pragmas every connection needs, each time the pool opens one.
#[derive(Debug, Clone, Copy)]
pub struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, connection: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        // busy_timeout first, so that switching to WAL waits for a concurrent opener.
        connection
            .batch_execute(&format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                BUSY_TIMEOUT.as_millis()
            ))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Creates the file's directory if needed and opens a pool on it.
pub fn build_pool(path: &Path) -> Result<DbPool, DbSetupError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| DbSetupError::CreateDirectory {
            path: parent.display().to_string(),
            source,
        })?;
    }
    switch_to_wal(path)?;
    let manager = ConnectionManager::<SqliteConnection>::new(path.to_string_lossy());
    let pool = Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(5))
        .connection_customizer(Box::new(SqlitePragmas))
        .build(manager)?;
    Ok(pool)
}

/// Puts a new database file in WAL mode on one connection, before the pool opens its
/// connections in parallel: switching needs an exclusive lock, and pool connections
/// racing for it log `database is locked` (r2d2 retries, but the log line alarms).
fn switch_to_wal(path: &Path) -> Result<(), DbSetupError> {
    use diesel::Connection;
    let mut connection = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(|error| DbSetupError::Prepare(format!("opening: {error}")))?;
    connection
        .batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
            BUSY_TIMEOUT.as_millis()
        ))
        .map_err(|error| DbSetupError::Prepare(format!("switching to WAL: {error}")))
}

/// Applies pending migrations; returns how many ran.
pub fn run_migrations(pool: &DbPool) -> Result<usize, DbSetupError> {
    let mut connection = pool.get()?;
    connection
        .run_pending_migrations(MIGRATIONS)
        .map(|applied| applied.len())
        .map_err(|error| DbSetupError::Migration(error.to_string()))
}

/// Runs synchronous database work on the blocking thread pool with a pooled
/// connection. `E` is the caller's error type; pool and thread failures become its
/// internal variant.
pub async fn run<T, E, F>(pool: &DbPool, work: F) -> Result<T, E>
where
    F: FnOnce(&mut SqliteConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<InternalError> + Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || {
        let mut connection = pool.get().map_err(InternalError::from)?;
        work(&mut connection)
    })
    .await
    .map_err(InternalError::from)?
}

/// Cheap check used by `/healthz`: reads the schema, so it touches the file (a bare
/// `SELECT 1` would not).
pub fn ping(connection: &mut SqliteConnection) -> diesel::QueryResult<()> {
    connection.batch_execute("SELECT count(*) FROM sqlite_master")
}

/// Seconds since the Unix epoch: how the schema stores times.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;
    use diesel::sql_types::{BigInt, Text};

    #[derive(diesel::QueryableByName)]
    struct ForeignKeys {
        #[diesel(sql_type = BigInt)]
        foreign_keys: i64,
    }

    #[derive(diesel::QueryableByName)]
    struct JournalMode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }

    #[derive(diesel::QueryableByName)]
    struct BusyTimeout {
        #[diesel(sql_type = BigInt)]
        timeout: i64,
    }

    #[test]
    fn every_connection_has_the_pragmas_and_migrations_apply() {
        let dir = tempfile::tempdir().unwrap();
        let pool = build_pool(&dir.path().join("nested/dir/test.sqlite")).unwrap();
        let migration_dirs =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
                .unwrap()
                .filter(|entry| entry.as_ref().is_ok_and(|entry| entry.path().is_dir()))
                .count();
        assert_eq!(run_migrations(&pool).unwrap(), migration_dirs);
        assert_eq!(run_migrations(&pool).unwrap(), 0);
        // Hold two connections at once so both come from the customizer.
        let mut first = pool.get().unwrap();
        let mut second = pool.get().unwrap();
        for connection in [&mut first, &mut second] {
            let fk: ForeignKeys = diesel::sql_query("PRAGMA foreign_keys")
                .get_result(&mut **connection)
                .unwrap();
            assert_eq!(fk.foreign_keys, 1);
            let mode: JournalMode = diesel::sql_query("PRAGMA journal_mode")
                .get_result(&mut **connection)
                .unwrap();
            assert_eq!(mode.journal_mode, "wal");
            let busy: BusyTimeout = diesel::sql_query("PRAGMA busy_timeout")
                .get_result(&mut **connection)
                .unwrap();
            assert_eq!(busy.timeout, 5000);
        }
    }
}
