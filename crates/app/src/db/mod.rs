//! Storage on SQLite (the embedded default) or PostgreSQL: the connection pool,
//! per-connection set-up, embedded migrations (one directory per backend), and one module
//! of synchronous query functions per table. Query functions take `&mut AnyConnection`
//! and are written once for both backends; handlers call them inside `web::block`.

pub mod chat;
pub mod copy;
pub mod lives;
mod pool;
pub mod recordings;
pub mod schema;
pub mod sessions;
pub mod stream_keys;
pub mod users;

use std::path::PathBuf;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::{ExposeSecret, SecretString};

use crate::error::InternalError;

pub use pool::AnyConnectionManager;

/// A connection to either backend. Diesel's derive makes it one `Connection` whose
/// queries are built for whichever backend it holds.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgres(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// The one pool type of the app.
pub type DbPool = Pool<AnyConnectionManager>;
/// A connection checked out of [`DbPool`].
pub type DbConnection = PooledConnection<AnyConnectionManager>;

/// The top-level `migrations/` directory (SQLite), compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");
/// The top-level `migrations-postgres/` directory: the same versions for PostgreSQL.
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations-postgres");

/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database the app uses (`DATABASE_URL`).
#[derive(Debug, Clone)]
pub enum DatabaseLocation {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL (it may hold a password).
    Postgres(SecretString),
}

impl DatabaseLocation {
    /// What may be logged: the file, or the PostgreSQL host, port and database (never
    /// the user or password).
    pub fn display_for_log(&self) -> String {
        match self {
            DatabaseLocation::Sqlite(path) => format!("sqlite {}", path.display()),
            DatabaseLocation::Postgres(url) => {
                format!(
                    "postgres {}",
                    postgres_host_and_database(url.expose_secret())
                )
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseLocation::Postgres(_))
    }
}

/// `host:port/database` of a PostgreSQL URL, without credentials or parameters.
pub fn postgres_host_and_database(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.to_owned()
}

/// How the pool is sized and how long it waits.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Connections held at most (`DATABASE_POOL_SIZE`).
    pub max_size: u32,
    /// How long opening a connection, or waiting for a free one, may take before a
    /// request fails (`DATABASE_CONNECT_TIMEOUT_SECONDS`).
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

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

/// Opens a pool on the database (for SQLite, creating the file's directory and
/// switching the file to WAL first).
pub fn build_pool(
    location: &DatabaseLocation,
    options: PoolOptions,
) -> Result<DbPool, DbSetupError> {
    let manager = match location {
        DatabaseLocation::Sqlite(path) => pool::prepare_sqlite(path)?,
        DatabaseLocation::Postgres(url) => {
            AnyConnectionManager::postgres(url.expose_secret(), options.connect_timeout)
        }
    };
    let pool = Pool::builder()
        .max_size(options.max_size)
        .connection_timeout(options.connect_timeout)
        .build(manager)?;
    Ok(pool)
}

/// A pool on a SQLite file with the default options (tests and tools).
pub fn build_sqlite_pool(path: &std::path::Path) -> Result<DbPool, DbSetupError> {
    build_pool(
        &DatabaseLocation::Sqlite(path.to_owned()),
        PoolOptions::default(),
    )
}

/// Runs `work` in a transaction that writes: `BEGIN IMMEDIATE` on SQLite (the write
/// lock is taken at the start, so two writers never deadlock on an upgrade), a plain
/// transaction on PostgreSQL. On PostgreSQL an error inside aborts the transaction:
/// a statement whose failure is expected (a unique violation to catch) goes in a
/// nested `connection.transaction(...)`, a savepoint.
pub fn write_transaction<T, E, F>(connection: &mut AnyConnection, work: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    use diesel::Connection;
    let AnyConnection::Sqlite(sqlite) = connection else {
        return connection.transaction(work);
    };
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    match work(connection) {
        Ok(value) => {
            <AnyConnection as diesel::Connection>::TransactionManager::commit_transaction(
                connection,
            )?;
            Ok(value)
        }
        Err(error) => {
            <AnyConnection as diesel::Connection>::TransactionManager::rollback_transaction(
                connection,
            )?;
            Err(error)
        }
    }
}

/// Whether the database in use is PostgreSQL.
pub fn is_postgres(connection: &AnyConnection) -> bool {
    matches!(connection, AnyConnection::Postgres(_))
}

/// Applies pending migrations; returns how many ran.
pub fn run_migrations(pool: &DbPool) -> Result<usize, DbSetupError> {
    let mut connection = pool.get()?;
    migrate(&mut connection)
}

/// The PostgreSQL advisory lock held while migrating (any fixed number; "PHMIGRAT").
const MIGRATION_LOCK: i64 = 0x5048_4d49_4752_4154;

/// Applies the pending migrations of the connection's backend; returns how many ran.
pub fn migrate(connection: &mut AnyConnection) -> Result<usize, DbSetupError> {
    let applied = match connection {
        AnyConnection::Sqlite(sqlite) => sqlite
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len()),
        AnyConnection::Postgres(postgres) => {
            // Instances started at once (a rolling upgrade, a host reboot) take turns:
            // the first applies the migrations, the others then find none pending.
            postgres
                .batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .map_err(|error| {
                    DbSetupError::Migration(format!("taking the migration lock: {error}"))
                })?;
            let applied = postgres
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|applied| applied.len());
            let unlocked =
                postgres.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
            if let Err(error) = unlocked {
                tracing::warn!(%error, "releasing the migration lock failed (it goes with the connection)");
            }
            applied
        }
    };
    applied.map_err(|error| DbSetupError::Migration(error.to_string()))
}

/// Runs synchronous database work on the blocking thread pool with a pooled
/// connection. `E` is the caller's error type; pool and thread failures become its
/// internal variant.
pub async fn run<T, E, F>(pool: &DbPool, work: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
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

/// Cheap check used by `/healthz`: on SQLite it reads the schema, so it touches the
/// file (a bare `SELECT 1` would not); on PostgreSQL a round trip to the server.
pub fn ping(connection: &mut AnyConnection) -> diesel::QueryResult<()> {
    match connection {
        AnyConnection::Sqlite(sqlite) => sqlite.batch_execute("SELECT count(*) FROM sqlite_master"),
        AnyConnection::Postgres(postgres) => postgres.batch_execute("SELECT 1"),
    }
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
        let pool = build_sqlite_pool(&dir.path().join("nested/dir/test.sqlite")).unwrap();
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
