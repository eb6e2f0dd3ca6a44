use std::time::Duration;

use serde_json::json;

use crate::helpers::{ORIGIN, PASSWORD, assert_error, client, spawn_app_with};

#[tokio::test]
async fn failed_logins_are_limited_per_account() {
    let app = spawn_app_with(|settings| {
        settings.login_rate_limit.max_failures_per_account = 3;
        settings.login_rate_limit.max_failures_per_ip = 100;
    })
    .await;
    app.user("alice").await;
    app.user("bob").await;
    let attacker = client();
    for _ in 0..3 {
        let response = app
            .post(
                &attacker,
                "/api/auth/login",
                &json!({"username": "alice", "password": "guess guess"}),
            )
            .await;
        assert_error(response, 401, "invalid_credentials").await;
    }
    // Now even the right password is refused for a while, in any case of the name.
    let response = app
        .post(
            &client(),
            "/api/auth/login",
            &json!({"username": "ALICE", "password": PASSWORD}),
        )
        .await;
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
    assert_error(response, 429, "rate_limited").await;
    // Other accounts are unaffected.
    let response = app
        .post(
            &client(),
            "/api/auth/login",
            &json!({"username": "bob", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address() {
    let app = spawn_app_with(|settings| {
        settings.trust_proxy_headers = true;
        settings.login_rate_limit.max_failures_per_account = 100;
        settings.login_rate_limit.max_failures_per_ip = 3;
        settings.login_rate_limit.window = Duration::from_secs(600);
    })
    .await;
    app.user("carol").await;
    let login = |ip: &'static str, username: &'static str, password: &'static str| {
        let url = app.url("/api/auth/login");
        async move {
            client()
                .post(url)
                .header("Origin", ORIGIN)
                .header("X-Forwarded-For", ip)
                .json(&json!({"username": username, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    for name in ["nobody1", "nobody2", "nobody3"] {
        assert_error(
            login("203.0.113.9", name, "whatever1").await,
            401,
            "invalid_credentials",
        )
        .await;
    }
    // That address is blocked, whichever account it tries...
    assert_error(
        login("203.0.113.9", "carol", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    // ...a spoofed left-most entry does not help (the proxy appends the real one)...
    assert_error(
        login("198.51.100.1, 203.0.113.9", "carol", PASSWORD).await,
        429,
        "rate_limited",
    )
    .await;
    // ...while other addresses may still log in.
    assert_eq!(login("198.51.100.7", "carol", PASSWORD).await.status(), 200);
}
