//! Stream keys (`/api/me/stream-key`) and the internal API the media server calls for
//! WHIP and WHEP (`/internal/v1/...`).

use diesel::prelude::*;
use diesel::sql_types::Text;
use privatehub_protocol::internal_api::{InternalCaller, issue_internal_token};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, client, internal, spawn_app, spawn_app_with};

async fn stream_key(app: &TestApp, user: &reqwest::Client) -> Value {
    let response = app.get(user, "/api/me/stream-key").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "a secret must not be cached"
    );
    response.json().await.unwrap()
}

async fn rotate(app: &TestApp, user: &reqwest::Client) -> Value {
    let response = app
        .post(user, "/api/me/stream-key/rotate", &json!({}))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn authorize(app: &TestApp, key: &str) -> reqwest::Response {
    internal(
        app,
        InternalCaller::Media,
        "/internal/v1/whip/authorize",
        json!({"stream_key": key}),
    )
    .await
}

/// The body of `whip/start` for `user`'s first key, as the media server sends it after
/// `whip/authorize`.
async fn whip_start_body(app: &TestApp, user: &reqwest::Client) -> Value {
    let key = stream_key(app, user).await["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let authorized: Value = authorize(app, &key).await.json().await.unwrap();
    json!({"user_id": authorized["user_id"], "key_generation": 1})
}

#[derive(QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = Text)]
    key_hash: String,
    #[diesel(sql_type = Text)]
    key_sealed: String,
}

#[tokio::test]
async fn a_key_is_created_on_first_request_and_kept() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let first = stream_key(&app, &alice).await;
    let key = first["stream_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("phk_") && key.len() >= 68, "{key}");
    assert_eq!(
        first["whip_url"],
        format!("{}/whip", crate::helpers::MEDIA_URL)
    );
    assert_eq!(stream_key(&app, &alice).await["stream_key"], key.as_str());
    // Another user has their own key.
    let bob = app.user("bob").await;
    assert_ne!(stream_key(&app, &bob).await["stream_key"], key.as_str());
    // At rest the key is neither in the clear nor in its hash.
    let rows: Vec<SealedRow> = diesel::sql_query("SELECT key_hash, key_sealed FROM stream_keys")
        .load(&mut app.connection())
        .unwrap();
    assert_eq!(rows.len(), 2);
    let secret_part = &key["phk_".len()..];
    for row in rows {
        assert!(!row.key_sealed.contains(secret_part) && !row.key_hash.contains(secret_part));
    }
}

#[tokio::test]
async fn only_the_signed_in_owner_sees_or_rotates_a_key() {
    let app = spawn_app().await;
    let anonymous = client();
    assert_error(
        app.get(&anonymous, "/api/me/stream-key").await,
        401,
        "unauthenticated",
    )
    .await;
    let response = app
        .post(&anonymous, "/api/me/stream-key/rotate", &json!({}))
        .await;
    assert_error(response, 401, "unauthenticated").await;
    // A cross-site rotate is refused before anything changes.
    let alice = app.user("alice").await;
    let key = stream_key(&app, &alice).await["stream_key"].clone();
    let forged = alice
        .post(app.url("/api/me/stream-key/rotate"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_error(forged, 403, "csrf_origin_mismatch").await;
    assert_eq!(stream_key(&app, &alice).await["stream_key"], key);
    // The settings page needs a session too.
    let page = app.get(&anonymous, "/settings/stream").await;
    assert_eq!(page.status(), 303);
    let page = app.get(&alice, "/settings/stream").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("{}/whip", crate::helpers::MEDIA_URL)));
    assert!(
        !html.contains(key.as_str().unwrap()),
        "the key is fetched only when revealed"
    );
}

#[tokio::test]
async fn rotation_refuses_the_old_key_at_once_even_with_the_media_server_down() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let old = stream_key(&app, &alice).await["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let authorized: Value = authorize(&app, &old).await.json().await.unwrap();
    assert_eq!(authorized["username"], "alice");
    assert_eq!(authorized["key_generation"], 1);
    // No media server listens (MEDIA_INTERNAL_URL is a closed port): rotation still works.
    let new = rotate(&app, &alice).await["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    assert_error(authorize(&app, &old).await, 401, "invalid_stream_key").await;
    let authorized: Value = authorize(&app, &new).await.json().await.unwrap();
    assert_eq!(authorized["key_generation"], 2);
    assert_eq!(stream_key(&app, &alice).await["stream_key"], new.as_str());
    // A key of the right shape but unknown, and garbage, are refused alike.
    let unknown = format!("phk_{}", "0".repeat(64));
    assert_error(authorize(&app, &unknown).await, 401, "invalid_stream_key").await;
    assert_error(authorize(&app, "").await, 401, "invalid_stream_key").await;
}

#[tokio::test]
async fn internal_api_needs_a_token_from_the_media_server() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let key = stream_key(&app, &alice).await["stream_key"].clone();
    let path = "/internal/v1/whip/authorize";
    let bare = client()
        .post(app.url(path))
        .json(&json!({"stream_key": key}))
        .send()
        .await
        .unwrap();
    assert_error(bare, 401, "unauthenticated").await;
    // A token the app signs for itself, or a media token, is not the media server's.
    let own = internal(&app, InternalCaller::App, path, json!({"stream_key": key})).await;
    assert_error(own, 401, "unauthenticated").await;
    let other_secret = issue_internal_token(
        InternalCaller::Media,
        b"another-secret-entirely-0123456789",
        path,
    )
    .unwrap();
    let forged = client()
        .post(app.url(path))
        .bearer_auth(other_secret)
        .json(&json!({"stream_key": key}))
        .send()
        .await
        .unwrap();
    assert_error(forged, 401, "unauthenticated").await;
    // Malformed bodies get a JSON 400, not a 500.
    let malformed = internal(&app, InternalCaller::Media, path, json!({"key": 1})).await;
    assert_eq!(malformed.status(), 400);
}

#[tokio::test]
async fn whip_start_and_end_drive_the_live_seen_on_the_site() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    // Her last title is reused for a live started from OBS.
    app.start_live(&alice, "Painting with friends").await;
    assert_eq!(
        app.post(&alice, "/api/lives/stop", &json!({}))
            .await
            .status(),
        200
    );
    let key = stream_key(&app, &alice).await["stream_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let authorized: Value = authorize(&app, &key).await.json().await.unwrap();
    let user_id = authorized["user_id"].as_i64().unwrap();
    let start = json!({"user_id": user_id, "key_generation": 1});
    let started: Value = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        start.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(started["created"], true);
    assert_eq!(started["title"], "Painting with friends");
    let live_id = started["live_id"].as_i64().unwrap();
    let listed: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    assert_eq!(listed[0]["username"], "alice");
    assert_eq!(listed[0]["id"], live_id);
    // OBS reconnecting finds the same live.
    let again: Value = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        start.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (again["created"].clone(), again["live_id"].clone()),
        (json!(false), json!(live_id))
    );
    // WHEP finds it by username.
    let lookup = |name: &str| {
        let path = format!("/internal/v1/lives/{name}");
        let token =
            issue_internal_token(InternalCaller::Media, app.secret.as_bytes(), &path).unwrap();
        client().get(app.url(&path)).bearer_auth(token).send()
    };
    let current: Value = lookup("alice").await.unwrap().json().await.unwrap();
    assert_eq!(current["live_id"], live_id);
    let nobody = lookup("nobody").await.unwrap();
    assert_eq!(nobody.status(), 404);
    // A token made for one endpoint is refused by another.
    let sync_token = issue_internal_token(
        InternalCaller::Media,
        app.secret.as_bytes(),
        "/internal/v1/whip/sync",
    )
    .unwrap();
    let replayed = client()
        .get(app.url("/internal/v1/lives/alice"))
        .bearer_auth(sync_token)
        .send()
        .await
        .unwrap();
    assert_error(replayed, 401, "unauthenticated").await;
    // A report naming an old key generation is told to stop; a current one is not.
    let sync = |generation: i64| json!({"sessions": [{"user_id": user_id, "live_id": live_id, "key_generation": generation}]});
    let kept: Value = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/sync",
        sync(1),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(kept["revoked"], json!([]));
    let stale: Value = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/sync",
        sync(0),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(stale["revoked"], json!([live_id]));
    // A start with a rotated key is refused.
    let stale_start = json!({"user_id": user_id, "key_generation": 0});
    let refused = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        stale_start,
    )
    .await;
    assert_error(refused, 401, "invalid_stream_key").await;
    // The end of the publish ends the live; a second end is a no-op.
    let end = json!({"user_id": user_id, "live_id": live_id, "reason": "deleted"});
    let ended: Value = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/ended",
        end.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ended["ended"], true);
    let listed: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    assert_eq!(listed, json!([]));
    let ended: Value = internal(&app, InternalCaller::Media, "/internal/v1/whip/ended", end)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ended["ended"], false);
}

#[tokio::test]
async fn a_whip_live_no_media_server_reports_is_ended() {
    let app = spawn_app_with(|settings| {
        settings.whip_unreported_live = std::time::Duration::from_secs(2);
    })
    .await;
    let alice = app.user("alice").await;
    let start = whip_start_body(&app, &alice).await;
    let started = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        start,
    )
    .await;
    assert_eq!(started.status(), 200);
    // A browser live is left alone by the sweep.
    let bob = app.user("bob").await;
    app.start_live(&bob, "bob's").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let listed: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
        let names: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["username"].as_str())
            .collect();
        if names == ["bob"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still listed: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn obs_cannot_take_back_a_live_the_browser_took_over_or_the_owner_ended() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let start = whip_start_body(&app, &alice).await;
    let whip_start = || {
        internal(
            &app,
            InternalCaller::Media,
            "/internal/v1/whip/start",
            start.clone(),
        )
    };
    assert_eq!(whip_start().await.status(), 200);
    // Alice goes live from the start-live page while OBS streams: the browser takes over,
    // and OBS reconnecting (as it does when its connection is closed) is refused.
    app.start_live(&alice, "").await;
    assert_error(whip_start().await, 409, "live_taken_over").await;
    // Still refused for a while after that live ends (OBS would start a new one).
    assert_eq!(
        app.post(&alice, "/api/lives/stop", &json!({}))
            .await
            .status(),
        200
    );
    assert_error(whip_start().await, 409, "live_taken_over").await;

    // Bob ends his OBS live on the site: OBS reconnecting does not start another.
    let bob = app.user("bob").await;
    let start = whip_start_body(&app, &bob).await;
    let started = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        start.clone(),
    )
    .await;
    assert_eq!(started.status(), 200);
    assert_eq!(
        app.post(&bob, "/api/lives/stop", &json!({})).await.status(),
        200
    );
    let again = internal(
        &app,
        InternalCaller::Media,
        "/internal/v1/whip/start",
        start,
    )
    .await;
    assert_error(again, 409, "live_taken_over").await;
    let listed: Value = app.get(&client(), "/api/lives").await.json().await.unwrap();
    assert_eq!(listed, json!([]));
}
