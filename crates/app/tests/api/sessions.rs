use serde_json::json;

use crate::helpers::{assert_error, client, session_set_cookie, spawn_app, spawn_app_with};

#[tokio::test]
async fn session_cookie_flags_over_http() {
    let app = spawn_app().await;
    let response = app.signup(&client(), "alice").await;
    let cookie = session_set_cookie(&response);
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("privatehub_session=");
    assert_eq!(value.len(), 64, "256-bit random token, hex");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(cookie.contains("Max-Age="), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain-http site: {cookie}");
}

#[tokio::test]
async fn session_cookie_is_secure_when_the_public_url_is_https() {
    let app = spawn_app_with(|settings| {
        settings.public_origin =
            privatehub_app::domain::Origin::parse_url("https://privatehub.test").unwrap();
    })
    .await;
    let response = reqwest::Client::new()
        .post(app.url("/api/auth/signup"))
        .header("Origin", "https://privatehub.test")
        .json(&json!({"username": "alice", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let cookie = session_set_cookie(&response);
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
}

#[tokio::test]
async fn forwarded_https_makes_cookies_secure_only_when_trusted() {
    for (trust, expect_secure) in [(false, false), (true, true)] {
        let app = spawn_app_with(|settings| settings.trust_proxy_headers = trust).await;
        let response = client()
            .post(app.url("/api/auth/signup"))
            .header("Origin", crate::helpers::ORIGIN)
            .header("X-Forwarded-Proto", "https")
            .json(&json!({"username": "alice", "password": crate::helpers::PASSWORD}))
            .send()
            .await
            .unwrap();
        let cookie = session_set_cookie(&response);
        assert_eq!(
            cookie.contains("Secure"),
            expect_secure,
            "trust={trust}: {cookie}"
        );
    }
}

#[tokio::test]
async fn only_a_hash_of_the_token_is_stored() {
    let app = spawn_app().await;
    let response = app.signup(&client(), "alice").await;
    let cookie = session_set_cookie(&response);
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("privatehub_session=");
    assert_eq!(
        app.count(&format!("sessions WHERE token_hash = '{token}'")),
        0
    );
    assert_eq!(app.count("sessions"), 1);
}

#[tokio::test]
async fn forged_or_garbage_cookies_are_not_sessions() {
    let app = spawn_app().await;
    app.user("alice").await;
    for cookie in [
        format!("privatehub_session={}", "a".repeat(64)),
        "privatehub_session=not-hex".to_owned(),
        "privatehub_session=".to_owned(),
    ] {
        let response = reqwest::Client::new()
            .get(app.url("/api/auth/me"))
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "unauthenticated").await;
    }
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let app = spawn_app().await;
    let client = app.user("alice").await;
    assert_eq!(app.get(&client, "/api/auth/me").await.status(), 200);
    {
        use diesel::prelude::*;
        diesel::sql_query("UPDATE sessions SET expires_at = 0")
            .execute(&mut app.connection())
            .unwrap();
    }
    assert_error(
        app.get(&client, "/api/auth/me").await,
        401,
        "unauthenticated",
    )
    .await;
}
