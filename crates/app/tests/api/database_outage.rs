//! PostgreSQL going away and coming back: meanwhile requests that need the database get
//! a 503 `database_unavailable` JSON error and `/healthz` reports it; once it is back,
//! the same requests succeed without restarting the app. Runs on its own PostgreSQL
//! server whatever `PRIVATEHUB_TEST_DATABASE` says.

use std::time::{Duration, Instant};

use privatehub_app::db::DatabaseLocation;
use privatehub_testkit::postgres::PostgresServer;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app_with};

/// Runs a blocking server operation off the test's runtime thread, which the app's
/// tasks share.
async fn with_server(
    server: PostgresServer,
    operation: impl FnOnce(&mut PostgresServer) + Send + 'static,
) -> PostgresServer {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        operation(&mut server);
        server
    })
    .await
    .expect("server operation")
}

#[tokio::test]
async fn requests_fail_fast_with_503_while_postgres_is_down_and_work_again_after() {
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let url = server.create_database("outage");
    let app = spawn_app_with(move |settings| {
        settings.database = DatabaseLocation::Postgres(SecretString::from(url));
        settings.database_pool.connect_timeout = Duration::from_secs(1);
    })
    .await;
    let alice = app.user("alice").await;
    assert_eq!(app.get(&alice, "/api/auth/me").await.status(), 200);

    let server = with_server(server, PostgresServer::stop).await;
    for _ in 0..3 {
        let asked = Instant::now();
        let response = app.get(&alice, "/api/auth/me").await;
        let message = assert_error(response, 503, "database_unavailable").await;
        assert!(
            !message.contains("127.0.0.1") && !message.contains("pool"),
            "no detail leaks: {message}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "failed fast: {:?}",
            asked.elapsed()
        );
    }
    let response = app.get(&alice, "/api/lives").await;
    assert_error(response, 503, "database_unavailable").await;
    let health = app.get(&alice, "/healthz").await;
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "unavailable", "database": "unreachable"})
    );

    let _server = with_server(server, PostgresServer::start_again).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.get(&alice, "/api/auth/me").await.status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} 10 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get(&alice, "/healthz").await.status(), 200);
    // Writes work again too.
    app.user("bob").await;
}
