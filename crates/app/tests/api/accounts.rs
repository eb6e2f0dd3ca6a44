use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_error, client, spawn_app};

#[tokio::test]
async fn signup_creates_the_account_and_signs_in() {
    let app = spawn_app().await;
    let client = client();
    let response = app.signup(&client, "Alice").await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "Alice");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(app.count("users"), 1);
    assert_eq!(app.count("sessions"), 1);

    let me: Value = app.get(&client, "/api/auth/me").await.json().await.unwrap();
    assert_eq!(me["username"], "Alice");
}

#[tokio::test]
async fn usernames_are_unique_ignoring_case() {
    let app = spawn_app().await;
    app.user("alice").await;
    for name in ["alice", "ALICE", "aLiCe"] {
        assert_error(app.signup(&client(), name).await, 409, "username_taken").await;
    }
    assert_eq!(app.count("users"), 1);
}

#[tokio::test]
async fn login_checks_the_password() {
    let app = spawn_app().await;
    app.user("alice").await;

    let wrong = client();
    let response = app
        .post(
            &wrong,
            "/api/auth/login",
            &json!({"username": "alice", "password": "wrong password"}),
        )
        .await;
    assert_error(response, 401, "invalid_credentials").await;
    assert_error(
        app.get(&wrong, "/api/auth/me").await,
        401,
        "unauthenticated",
    )
    .await;

    // Unknown users look exactly like wrong passwords.
    let response = app
        .post(
            &wrong,
            "/api/auth/login",
            &json!({"username": "nobody", "password": PASSWORD}),
        )
        .await;
    let message = assert_error(response, 401, "invalid_credentials").await;
    assert_eq!(message, "wrong username or password");

    // Right password, any case of the name.
    let right = client();
    let response = app
        .post(
            &right,
            "/api/auth/login",
            &json!({"username": "ALICE", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["username"], "alice", "stored case is returned");
    let me: Value = app.get(&right, "/api/auth/me").await.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(app.count("sessions"), 2);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let app = spawn_app().await;
    let client = client();
    let signup = app.signup(&client, "alice").await;
    let cookie = crate::helpers::session_set_cookie(&signup);
    let cookie_pair = cookie.split(';').next().unwrap().to_owned();

    let response = app.post(&client, "/api/auth/logout", &json!({})).await;
    assert_eq!(response.status(), 204);
    let removal = crate::helpers::session_set_cookie(&response);
    assert!(removal.contains("Max-Age=0"), "{removal}");
    assert_eq!(app.count("sessions"), 0);
    assert_error(
        app.get(&client, "/api/auth/me").await,
        401,
        "unauthenticated",
    )
    .await;

    // Replaying the old cookie does not work either.
    let replay = reqwest::Client::new()
        .get(app.url("/api/auth/me"))
        .header("Cookie", cookie_pair)
        .send()
        .await
        .unwrap();
    assert_error(replay, 401, "unauthenticated").await;

    // Logging out again is harmless.
    assert_eq!(
        app.post(&client, "/api/auth/logout", &json!({}))
            .await
            .status(),
        204
    );
}

#[tokio::test]
async fn me_requires_a_session() {
    let app = spawn_app().await;
    assert_error(
        app.get(&client(), "/api/auth/me").await,
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn health_reports_the_database() {
    let app = spawn_app().await;
    let response = app.get(&client(), "/healthz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"status": "ok", "database": "ok"}));
    assert!(
        app.database.is_postgres() || app.db_path.exists(),
        "database created in a fresh nested directory"
    );
}
