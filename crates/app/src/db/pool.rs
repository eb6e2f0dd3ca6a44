//! The r2d2 connection manager for [`AnyConnection`]: it opens connections of the
//! configured backend only (never guessing from the URL), with SQLite's pragmas on
//! every connection, and PostgreSQL's connect timeout and lock timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{Error as PoolError, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};

use super::{AnyConnection, BUSY_TIMEOUT, DbSetupError};

/// Opens the pool's connections.
#[derive(Debug, Clone)]
pub struct AnyConnectionManager {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Sqlite(PathBuf),
    /// The URL with `connect_timeout` added (it may hold a password: not `Debug`).
    Postgres(String),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(path) => write!(formatter, "Sqlite({})", path.display()),
            Target::Postgres(url) => write!(
                formatter,
                "Postgres({})",
                super::postgres_host_and_database(url)
            ),
        }
    }
}

impl AnyConnectionManager {
    /// Connections to the PostgreSQL server at `url`, each giving up connecting after
    /// `connect_timeout` (unless the URL sets its own `connect_timeout`).
    pub fn postgres(url: &str, connect_timeout: Duration) -> Self {
        AnyConnectionManager {
            target: Target::Postgres(with_connect_timeout(url, connect_timeout)),
        }
    }
}

/// Creates the file's directory if needed, switches the file to WAL, and returns a
/// manager for it.
pub(super) fn prepare_sqlite(path: &Path) -> Result<AnyConnectionManager, DbSetupError> {
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
    Ok(AnyConnectionManager {
        target: Target::Sqlite(path.to_owned()),
    })
}

/// Puts a new database file in WAL mode on one connection, before the pool opens its
/// connections in parallel: switching needs an exclusive lock, and pool connections
/// racing for it log `database is locked` (r2d2 retries, but the log line alarms).
fn switch_to_wal(path: &Path) -> Result<(), DbSetupError> {
    let mut connection = SqliteConnection::establish(&path.to_string_lossy())
        .map_err(|error| DbSetupError::Prepare(format!("opening: {error}")))?;
    connection
        .batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
            BUSY_TIMEOUT.as_millis()
        ))
        .map_err(|error| DbSetupError::Prepare(format!("switching to WAL: {error}")))
}

/// The pragmas every SQLite connection needs; busy_timeout first, so that switching to
/// WAL waits for a concurrent opener.
fn sqlite_pragmas(connection: &mut SqliteConnection) -> diesel::QueryResult<()> {
    connection.batch_execute(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
         PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
        BUSY_TIMEOUT.as_millis()
    ))
}

/// Adds libpq's `connect_timeout` (whole seconds, at least 1) unless the URL has one.
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}connect_timeout={}",
        timeout.as_secs().max(1)
    )
}

impl r2d2::ManageConnection for AnyConnectionManager {
    type Connection = AnyConnection;
    type Error = PoolError;

    fn connect(&self) -> Result<AnyConnection, PoolError> {
        match &self.target {
            Target::Sqlite(path) => {
                let mut connection = SqliteConnection::establish(&path.to_string_lossy())
                    .map_err(PoolError::ConnectionError)?;
                sqlite_pragmas(&mut connection).map_err(PoolError::QueryError)?;
                Ok(AnyConnection::Sqlite(connection))
            }
            Target::Postgres(url) => {
                let mut connection =
                    PgConnection::establish(url).map_err(PoolError::ConnectionError)?;
                // As SQLite's busy timeout: a write waiting for another's lock fails
                // after a while instead of holding its request (and connection) forever.
                connection
                    .batch_execute(&format!("SET lock_timeout = {}", BUSY_TIMEOUT.as_millis()))
                    .map_err(PoolError::QueryError)?;
                Ok(AnyConnection::Postgres(connection))
            }
        }
    }

    fn is_valid(&self, connection: &mut AnyConnection) -> Result<(), PoolError> {
        connection.ping().map_err(PoolError::QueryError)
    }

    fn has_broken(&self, connection: &mut AnyConnection) -> bool {
        std::thread::panicking() || connection.is_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_timeout_is_added_once() {
        let second = Duration::from_secs(3);
        assert_eq!(
            with_connect_timeout("postgres://u:p@h/db", second),
            "postgres://u:p@h/db?connect_timeout=3"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?sslmode=require", second),
            "postgres://h/db?sslmode=require&connect_timeout=3"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=9", second),
            "postgres://h/db?connect_timeout=9"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let manager = AnyConnectionManager::postgres(
            "postgres://user:hunter2@db.internal:5432/privatehub",
            Duration::from_secs(5),
        );
        let shown = format!("{manager:?}");
        assert!(shown.contains("db.internal:5432/privatehub"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("user"),
            "{shown}"
        );
    }
}
