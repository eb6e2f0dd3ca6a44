//! Every malformed or invalid request gets a clean 4xx with the right code, and
//! writes nothing.

use serde_json::{Value, json};

use crate::helpers::{ORIGIN, PASSWORD, assert_error, client, spawn_app};

/// How the body is sent.
enum Body {
    Json(Value),
    Raw(&'static str, String),
}

#[tokio::test]
async fn bad_signups_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    app.user("taken").await;
    let users_before = app.count("users");
    let sessions_before = app.count("sessions");

    let cases: Vec<(&str, Body, u16, &str)> = vec![
        (
            "malformed JSON",
            Body::Raw("application/json", r#"{"username": "x", "password""#.into()),
            400,
            "malformed_json",
        ),
        (
            "empty body",
            Body::Raw("application/json", String::new()),
            400,
            "malformed_json",
        ),
        (
            "not JSON at all",
            Body::Raw("application/json", "username=a&password=b".into()),
            400,
            "malformed_json",
        ),
        (
            "wrong type",
            Body::Json(json!({"username": 42, "password": PASSWORD})),
            400,
            "invalid_body",
        ),
        (
            "null field",
            Body::Json(json!({"username": null, "password": PASSWORD})),
            400,
            "invalid_body",
        ),
        (
            "missing field",
            Body::Json(json!({"username": "newuser"})),
            400,
            "invalid_body",
        ),
        (
            "unknown field",
            Body::Json(json!({"username": "newuser", "password": PASSWORD, "admin": true})),
            400,
            "invalid_body",
        ),
        (
            "array body",
            Body::Json(json!(["newuser", PASSWORD])),
            400,
            "invalid_body",
        ),
        (
            "form encoding",
            Body::Raw(
                "application/x-www-form-urlencoded",
                "username=newuser&password=12345678".into(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "text/plain",
            Body::Raw(
                "text/plain",
                json!({"username": "newuser", "password": PASSWORD}).to_string(),
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            Body::Json(json!({"username": "newuser", "password": "p".repeat(20_000)})),
            413,
            "payload_too_large",
        ),
        (
            "short username",
            Body::Json(json!({"username": "ab", "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "long username",
            Body::Json(json!({"username": "a".repeat(31), "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "username with space",
            Body::Json(json!({"username": "new user", "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "username with markup",
            Body::Json(json!({"username": "<script>", "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "non-ASCII username",
            Body::Json(json!({"username": "jos\u{e9}", "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "reserved username",
            Body::Json(json!({"username": "api", "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "reserved, other case",
            Body::Json(json!({"username": "Start-Live", "password": PASSWORD})),
            400,
            "invalid_username",
        ),
        (
            "short password",
            Body::Json(json!({"username": "newuser", "password": "1234567"})),
            400,
            "invalid_password",
        ),
        (
            "long password",
            Body::Json(json!({"username": "newuser", "password": "p".repeat(129)})),
            400,
            "invalid_password",
        ),
        (
            "blank password",
            Body::Json(json!({"username": "newuser", "password": " ".repeat(12)})),
            400,
            "invalid_password",
        ),
        (
            "duplicate, other case",
            Body::Json(json!({"username": "TAKEN", "password": PASSWORD})),
            409,
            "username_taken",
        ),
    ];

    for (name, body, status, code) in cases {
        let request = client()
            .post(app.url("/api/auth/signup"))
            .header("Origin", ORIGIN);
        let request = match body {
            Body::Json(value) => request.json(&value),
            Body::Raw(content_type, text) => {
                request.header("Content-Type", content_type).body(text)
            }
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "case: {name}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "case {name} set a cookie"
        );
        assert_error(response, status, code).await;
        assert_eq!(app.count("users"), users_before, "case {name} wrote a user");
        assert_eq!(
            app.count("sessions"),
            sessions_before,
            "case {name} wrote a session"
        );
    }
}

#[tokio::test]
async fn bad_logins_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    app.user("alice").await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "wrong password",
            json!({"username": "alice", "password": "nope nope"}),
            401,
            "invalid_credentials",
        ),
        (
            "unknown user",
            json!({"username": "zed", "password": PASSWORD}),
            401,
            "invalid_credentials",
        ),
        (
            "impossible username",
            json!({"username": "../etc", "password": PASSWORD}),
            401,
            "invalid_credentials",
        ),
        (
            "password too long",
            json!({"username": "alice", "password": "p".repeat(200)}),
            400,
            "invalid_password",
        ),
        (
            "wrong type",
            json!({"username": "alice", "password": 12345678}),
            400,
            "invalid_body",
        ),
    ];
    for (name, body, status, code) in cases {
        let response = app.post(&client(), "/api/auth/login", &body).await;
        assert_eq!(response.status().as_u16(), status, "case: {name}");
        assert_error(response, status, code).await;
        assert_eq!(app.count("sessions"), 1, "case {name} wrote a session");
    }
}

#[tokio::test]
async fn bad_live_requests_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "title too long",
            json!({"title": "t".repeat(121)}),
            400,
            "invalid_title",
        ),
        (
            "title with a NUL",
            json!({"title": "a\u{0}b"}),
            400,
            "invalid_title",
        ),
        ("title wrong type", json!({"title": 5}), 400, "invalid_body"),
        (
            "unknown field",
            json!({"title": "ok", "private": true}),
            400,
            "invalid_body",
        ),
        ("not an object", json!("title"), 400, "invalid_body"),
    ];
    for (name, body, status, code) in cases {
        let response = app.post(&alice, "/api/lives/start", &body).await;
        assert_eq!(response.status().as_u16(), status, "case: {name}");
        assert_error(response, status, code).await;
        assert_eq!(app.count("lives"), 0, "case {name} wrote a live");
    }
}

#[tokio::test]
async fn bad_queries_paths_and_methods() {
    let app = spawn_app().await;
    app.user("alice").await;
    let anonymous = client();
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=0",
        "limit=101",
        "limit=99999999",
        "other=1",
    ] {
        let response = app
            .get(&anonymous, &format!("/api/users/alice/lives?{query}"))
            .await;
        assert_error(response, 400, "invalid_query").await;
    }
    assert_eq!(
        app.get(&anonymous, "/api/users/alice/lives?limit=5")
            .await
            .status(),
        200
    );

    assert_error(
        app.get(&anonymous, "/api/nothing/here").await,
        404,
        "not_found",
    )
    .await;
    assert_error(app.get(&anonymous, "/api").await, 404, "not_found").await;
    assert_error(
        app.get(&anonymous, "/api/auth/signup").await,
        405,
        "method_not_allowed",
    )
    .await;
    let response = anonymous
        .delete(app.url("/api/lives"))
        .header("Origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn huge_chunked_body_is_refused_cleanly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    // No Content-Length: the limit must hold while streaming too.
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/auth/signup HTTP/1.1\r\nHost: {address}\r\nOrigin: {ORIGIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    for _ in 0..64 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // The server may close early once the limit is hit.
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#""code":"payload_too_large""#),
        "{response}"
    );
    assert_eq!(app.count("users"), 0);
}

/// A body announced but sent a few bytes at a time is not waited for forever: the
/// request is answered `408 body_timeout` and the connection closed, for a handler that
/// reads its body and for one that does not.
#[tokio::test]
async fn slowly_sent_bodies_time_out_and_free_the_connection() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut slow_clients = Vec::new();
    for path in ["/api/auth/login", "/api/auth/logout"] {
        let address = address.clone();
        slow_clients.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {address}\r\nOrigin: {ORIGIN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"user"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let started = Instant::now();
            let mut received = Vec::new();
            // Read until the server closes the connection (or 30 s pass).
            let read_all = async {
                let mut buffer = [0u8; 4096];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&buffer[..n]),
                    }
                }
            };
            let closed = tokio::time::timeout(Duration::from_secs(30), read_all)
                .await
                .is_ok();
            (
                path,
                closed,
                started.elapsed(),
                String::from_utf8_lossy(&received).into_owned(),
            )
        }));
    }
    for client in slow_clients {
        let (path, closed, took, response) = client.await.unwrap();
        assert!(closed, "{path}: connection still open after {took:?}");
        println!("{path}: closed after {took:?}");
        if path == "/api/auth/login" {
            assert!(response.starts_with("HTTP/1.1 408"), "{path}: {response}");
            assert!(response.contains("body_timeout"), "{path}: {response}");
        }
    }
}
