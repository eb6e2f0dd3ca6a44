use serde_json::json;

use crate::helpers::{ORIGIN, PASSWORD, assert_error, client, spawn_app};

fn credentials(username: &str) -> serde_json::Value {
    json!({"username": username, "password": PASSWORD})
}

#[tokio::test]
async fn state_changing_requests_without_origin_or_referer_are_refused() {
    let app = spawn_app().await;
    let response = client()
        .post(app.url("/api/auth/signup"))
        .json(&credentials("alice"))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "csrf_origin_missing").await;
    assert_eq!(app.count("users"), 0, "nothing written");
}

#[tokio::test]
async fn wrong_origin_is_refused_even_with_a_good_referer() {
    let app = spawn_app().await;
    for origin in [
        "http://evil.test",
        "https://privatehub.test",
        "http://privatehub.test:8080",
        "null",
    ] {
        let response = client()
            .post(app.url("/api/auth/signup"))
            .header("Origin", origin)
            .header("Referer", format!("{ORIGIN}/signup"))
            .json(&credentials("alice"))
            .send()
            .await
            .unwrap();
        assert_error(response, 403, "csrf_origin_mismatch").await;
    }
    assert_eq!(app.count("users"), 0);
}

#[tokio::test]
async fn referer_is_the_fallback_when_origin_is_absent() {
    let app = spawn_app().await;
    let bad = client()
        .post(app.url("/api/auth/signup"))
        .header("Referer", "http://evil.test/signup")
        .json(&credentials("alice"))
        .send()
        .await
        .unwrap();
    assert_error(bad, 403, "csrf_origin_mismatch").await;
    assert_eq!(app.count("users"), 0);

    let good = client()
        .post(app.url("/api/auth/signup"))
        .header("Referer", format!("{ORIGIN}/signup?x=1"))
        .json(&credentials("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 201);
    assert_eq!(app.count("users"), 1);
}

#[tokio::test]
async fn signed_in_writes_need_the_origin_too() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    // Browsers do not attach SameSite=Lax cookies to cross-site POSTs; the Origin
    // check is the second, independent layer (it also covers sibling subdomains).
    let response = alice
        .post(app.url("/api/lives/start"))
        .header("Origin", "http://evil.test")
        .json(&json!({"title": "hijacked"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "csrf_origin_mismatch").await;
    let response = alice
        .post(app.url("/api/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "csrf_origin_missing").await;
    assert_eq!(app.count("lives"), 0);
    assert_eq!(app.count("sessions"), 1, "logout without proof did nothing");
    // Reads need no proof.
    assert_eq!(app.get(&alice, "/api/auth/me").await.status(), 200);
}
