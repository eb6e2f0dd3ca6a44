//! `spawn_app()` and the HTTP/database helpers the tests share.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use privatehub_app::db::{DatabaseLocation, DbConnection};
use privatehub_app::{Application, Settings, state::AppState};
use privatehub_protocol::internal_api::{InternalCaller, issue_internal_token};
use privatehub_testkit::postgres::PostgresServer;
use reqwest::{Client, Response, redirect};
use secrecy::SecretString;
use serde_json::Value;

/// The origin the test apps believe they are served at (`APP_PUBLIC_URL`).
pub const ORIGIN: &str = "http://privatehub.test";
pub const MEDIA_URL: &str = "http://media.privatehub.test:5050";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestApp {
    pub address: String,
    /// The SQLite file (on PostgreSQL, a path that stays unused).
    pub db_path: PathBuf,
    /// The database the app uses: start another app on it to restart.
    pub database: DatabaseLocation,
    pub secret: String,
    pub state: AppState,
    /// Keeps the temporary directory (and database) alive for the test.
    _dir: tempfile::TempDir,
}

/// Whether this run tests on PostgreSQL (`PRIVATEHUB_TEST_DATABASE=postgres`) instead
/// of SQLite.
pub fn testing_postgres() -> bool {
    std::env::var("PRIVATEHUB_TEST_DATABASE").is_ok_and(|value| value == "postgres")
}

/// The one PostgreSQL server of this test binary, started on first use. It is never
/// dropped; the test kit's watchdog stops it when the binary exits.
pub fn shared_postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// A fresh database on the shared server.
pub fn fresh_postgres_database() -> DatabaseLocation {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    DatabaseLocation::Postgres(SecretString::from(shared_postgres().create_database(&name)))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], letting the test adjust the settings first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        privatehub_app::telemetry::init_tracing(privatehub_app::settings::LogFormat::Text);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A nested, not-yet-existing directory: start-up must create it.
    let db_path = dir.path().join("data/nested/test.sqlite");
    let secret = format!("test-secret-{}", "x".repeat(40));
    let vars: HashMap<&str, String> = HashMap::from([
        ("APP_PORT", "0".to_owned()),
        ("APP_WORKERS", "1".to_owned()),
        ("DATABASE_URL", format!("sqlite://{}", db_path.display())),
        ("APP_PUBLIC_URL", ORIGIN.to_owned()),
        ("MEDIA_PUBLIC_URL", MEDIA_URL.to_owned()),
        ("MEDIA_TOKEN_SECRET", secret.clone()),
        (
            "STREAM_KEY_SECRET",
            format!("stream-key-secret-{}", "y".repeat(40)),
        ),
        // No media server runs: its internal API is a closed port.
        ("MEDIA_INTERNAL_URL", "http://127.0.0.1:9".to_owned()),
    ]);
    let mut settings =
        Settings::from_lookup(|name| vars.get(name).cloned()).expect("test settings");
    // Every test client comes from 127.0.0.1: the per-address limits on sign-ups and on
    // concurrent password checks are raised here, and the tests of those limits set
    // their own values (or send from other addresses).
    settings.signup_rate_limit.max_per_network = 10_000;
    settings.hashing.queue = 64;
    settings.hashing.per_client = 64;
    if testing_postgres() {
        settings.database = tokio::task::spawn_blocking(fresh_postgres_database)
            .await
            .expect("database");
    }
    customize(&mut settings);
    let database = settings.database.clone();
    let application = Application::build(settings).await.expect("app starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let state = application.state().clone();
    tokio::spawn(application.run_until_stopped());
    TestApp {
        address,
        db_path,
        database,
        secret,
        state,
        _dir: dir,
    }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(redirect::Policy::none())
        .build()
        .expect("client")
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// POST with a JSON body and this site's `Origin`, like a browser page would.
    pub async fn post(&self, client: &Client, path: &str, body: &Value) -> Response {
        client
            .post(self.url(path))
            .header("Origin", ORIGIN)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, client: &Client, path: &str) -> Response {
        client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn signup(&self, client: &Client, username: &str) -> Response {
        self.post(
            client,
            "/api/auth/signup",
            &serde_json::json!({"username": username, "password": PASSWORD}),
        )
        .await
    }

    /// A new client signed up (and so signed in) as `username`.
    pub async fn user(&self, username: &str) -> Client {
        let client = client();
        let response = self.signup(&client, username).await;
        assert_eq!(response.status(), 201, "signup of {username}");
        client
    }

    pub async fn start_live(&self, client: &Client, title: &str) -> Value {
        let response = self
            .post(
                client,
                "/api/lives/start",
                &serde_json::json!({"title": title}),
            )
            .await;
        assert!(
            response.status().is_success(),
            "start: {}",
            response.status()
        );
        response.json().await.expect("json")
    }

    /// Waits (up to 5 s) until `table` holds `rows` rows: chat messages are stored a
    /// moment after they are shown.
    pub async fn wait_count(&self, table: &str, rows: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let now = self.count(table);
            if now == rows {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{table} has {now} rows, expected {rows}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Rows in `table`, read through the app's pool.
    pub fn count(&self, table: &str) -> i64 {
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
            .get_result::<Count>(&mut self.connection())
            .expect("count")
            .n
    }

    /// A connection from the app's pool (either backend).
    pub fn connection(&self) -> DbConnection {
        self.state.pool.get().expect("a database connection")
    }

    /// `sql` with its `?` placeholders as the database in use writes them (`$1`, `$2`…
    /// on PostgreSQL).
    pub fn sql(&self, sql: &str) -> String {
        if !self.database.is_postgres() {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        for (next, part) in sql.split('?').enumerate() {
            if next > 0 {
                out.push_str(&format!("${next}"));
            }
            out.push_str(part);
        }
        out
    }
}

/// A log-in attempt as `username` from `address` (in `X-Forwarded-For`: the app must
/// trust proxy headers).
pub async fn login_from(app: &TestApp, address: &str, username: &str, password: &str) -> Response {
    client()
        .post(app.url("/api/auth/login"))
        .header("Origin", ORIGIN)
        .header("X-Forwarded-For", address)
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .expect("request")
}

/// A call to the app's internal API as `caller` would make it.
pub async fn internal(app: &TestApp, caller: InternalCaller, path: &str, body: Value) -> Response {
    let token = issue_internal_token(caller, app.secret.as_bytes(), path).unwrap();
    client()
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Asserts the standard error body and returns the message.
pub async fn assert_error(response: Response, status: u16, code: &str) -> String {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status for expected code {code}"
    );
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "error responses are JSON"
    );
    let body: Value = response.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// The `Set-Cookie` header for the session cookie.
pub fn session_set_cookie(response: &Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("privatehub_session="))
        .expect("session cookie set")
        .to_owned()
}
