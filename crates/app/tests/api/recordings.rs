//! Replays: the media server's recordings sync (`/internal/v1/recordings/sync`), the
//! videos pages, `/api/videos/{id}` with its replay URL and chat, the creator's deletion
//! (and the media server told of it), and the creator's recording setting.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::prelude::*;
use privatehub_protocol::MediaTokenError;
use privatehub_protocol::internal_api::{
    InternalCaller, issue_internal_token, verify_internal_token,
};
use privatehub_protocol::recordings::{RecordingId, verify_replay_token};
use reqwest::Client;
use serde_json::{Value, json};

use crate::helpers::{
    MEDIA_URL, ORIGIN, TestApp, assert_error, client, internal, spawn_app, spawn_app_with,
};

const SYNC: &str = "/internal/v1/recordings/sync";

/// A recording id made of one repeated hex digit.
fn id(digit: char) -> String {
    digit.to_string().repeat(RecordingId::LEN)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn report(id: &str, live_id: i64, started_at_ms: i64, duration_ms: i64, state: &str) -> Value {
    json!({
        "id": id,
        "live_id": live_id,
        "started_at_ms": started_at_ms,
        "duration_ms": duration_ms,
        "bytes": 1_234_567,
        "container": "webm",
        "state": state,
    })
}

/// The media server's sync; returns the ids the app asks it to delete.
async fn sync(app: &TestApp, reports: Vec<Value>) -> Vec<String> {
    let response = internal(
        app,
        InternalCaller::Media,
        SYNC,
        json!({ "recordings": reports }),
    )
    .await;
    assert_eq!(response.status(), 200, "sync");
    let body: Value = response.json().await.unwrap();
    body["delete"]
        .as_array()
        .expect("delete list")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// A live of `user` that has ended; returns its id and when it started (ms).
async fn past_live(app: &TestApp, user: &Client, title: &str) -> (i64, i64) {
    let live = app.start_live(user, title).await;
    let stopped = app.post(user, "/api/lives/stop", &json!({})).await;
    assert_eq!(stopped.status(), 200);
    let started: String = live["started_at"].as_str().unwrap().to_owned();
    let started =
        time::OffsetDateTime::parse(&started, &time::format_description::well_known::Rfc3339)
            .unwrap();
    (
        live["id"].as_i64().unwrap(),
        started.unix_timestamp() * 1000,
    )
}

async fn page(app: &TestApp, user: &Client, path: &str, status: u16) -> String {
    let response = app.get(user, path).await;
    assert_eq!(response.status().as_u16(), status, "{path}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{path}"
    );
    response.text().await.unwrap()
}

async fn video(app: &TestApp, id: &str) -> Value {
    let response = app.get(&client(), &format!("/api/videos/{id}")).await;
    assert_eq!(response.status(), 200, "video {id}");
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "the URL holds a token"
    );
    response.json().await.unwrap()
}

async fn delete(user: &Client, app: &TestApp, id: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = user.delete(app.url(&format!("/api/videos/{id}")));
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_synced_recording_is_listed_and_plays_from_the_media_server_with_a_replay_token() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Sunday <show> & more").await;
    let (long, short) = (id('a'), id('b'));
    let mut mp4 = report(&short, live, started + 3_800_000, 65_000, "recording");
    mp4["container"] = json!("mp4");
    let delete = sync(
        &app,
        vec![report(&long, live, started, 3_723_000, "finished"), mp4],
    )
    .await;
    assert_eq!(delete, Vec::<String>::new());

    // The list: newest first, title (escaped), duration, links to the video pages.
    let list = page(&app, &client(), "/alice/videos", 200).await;
    assert!(list.contains("Sunday &#60;show&#62; &#38; more"), "{list}");
    assert!(
        list.contains("1:02:03") && list.contains("0:01:05"),
        "{list}"
    );
    let (first, second) = (
        list.find(&format!("href=\"/alice/videos/{short}\""))
            .expect("short listed"),
        list.find(&format!("href=\"/alice/videos/{long}\""))
            .expect("long listed"),
    );
    assert!(first < second, "newest first");
    assert!(!list.contains("<show>"), "titles are escaped");

    // The video: what to play, and where.
    let asked_at = now_unix();
    let body = video(&app, &long).await;
    assert_eq!(body["id"], long.as_str());
    assert_eq!(body["username"], "alice");
    assert_eq!(body["title"], "Sunday <show> & more");
    assert_eq!(body["started_at_ms"], started);
    assert_eq!(body["duration_ms"], 3_723_000);
    assert_eq!(body["container"], "webm");
    assert_eq!(body["mime_type"], "video/webm");
    let url = body["url"].as_str().unwrap();
    let prefix = format!("{MEDIA_URL}/recordings/{long}.webm?token=");
    assert!(url.starts_with(&prefix), "{url}");
    let token = &url[prefix.len()..];
    let recording = RecordingId::parse(&long).unwrap();
    let secret = app.secret.as_bytes();
    assert_eq!(
        verify_replay_token(token, secret, &recording, now_unix()),
        Ok(())
    );
    let other = RecordingId::parse(&short).unwrap();
    assert!(verify_replay_token(token, secret, &other, now_unix()).is_err());
    // Valid for the video's length plus an hour, and it says so.
    let expires = body["url_expires_at"].as_u64().unwrap();
    assert!(
        expires >= asked_at + 3_723 + 3_600,
        "{expires} vs {asked_at}"
    );
    assert!(expires <= now_unix() + 3_723 + 3_600);
    assert_eq!(
        verify_replay_token(token, secret, &recording, expires - 1),
        Ok(())
    );
    assert_eq!(
        verify_replay_token(token, secret, &recording, expires),
        Err(MediaTokenError::Expired)
    );

    let body = video(&app, &short).await;
    assert_eq!(
        (&body["container"], &body["mime_type"]),
        (&json!("mp4"), &json!("video/mp4"))
    );
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{MEDIA_URL}/recordings/{short}.mp4?token="))
    );
}

#[tokio::test]
async fn the_replay_page_plays_the_video_beside_its_chat_and_only_its_creator_may_delete_it() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    let video_id = id('c');
    sync(
        &app,
        vec![report(&video_id, live, started, 60_000, "finished")],
    )
    .await;

    let path = format!("/alice/videos/{video_id}");
    for (viewer, owner) in [(&client(), false), (&bob, false), (&alice, true)] {
        let html = page(&app, viewer, &path, 200).await;
        assert!(
            html.contains("<video id=\"replay-video\" controls playsinline"),
            "{html}"
        );
        assert!(html.contains("id=\"replay-chat\""));
        assert!(html.contains("src=\"/static/replay-page.js\""));
        assert!(html.contains(&format!("data-video-id=\"{video_id}\"")));
        assert_eq!(html.contains("id=\"delete-video\""), owner, "delete button");
        for tag in html.split("<script").skip(1) {
            assert!(
                tag[..tag.find('>').unwrap()].contains("src=\"/static/"),
                "inline script"
            );
        }
    }
    page(&app, &client(), &format!("/ALICE/videos/{video_id}"), 200).await;
    // The media server's origin may serve media to the page; nothing else loosens.
    let response = app.get(&client(), &path).await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains(&format!("media-src 'self' blob: mediastream: {MEDIA_URL};")),
        "{csp}"
    );
    assert!(csp.contains("script-src 'self';"));
    let script = app.get(&client(), "/static/replay-page.js").await;
    assert_eq!(script.status(), 200);
    let script = script.text().await.unwrap();
    assert!(script.contains("textContent") && !script.contains("innerHTML"));

    // Another channel's page, an unknown user, a video that does not exist: 404 pages.
    page(&app, &client(), &format!("/bob/videos/{video_id}"), 404).await;
    page(&app, &client(), &format!("/ghost/videos/{video_id}"), 404).await;
    page(&app, &client(), &format!("/alice/videos/{}", id('d')), 404).await;
    page(&app, &client(), "/ghost/videos", 404).await;
    let empty = page(&app, &client(), "/bob/videos", 200).await;
    assert!(empty.contains("No recorded lives yet"));
    // The channel's live page links to its past lives.
    let live_page = page(&app, &client(), "/alice/live", 200).await;
    assert!(live_page.contains("href=\"/alice/videos\""));
}

/// Writes a chat message straight into the database (the replay reads what is stored).
fn store_message(
    app: &TestApp,
    live: i64,
    author: &str,
    body: &str,
    sent_at_ms: i64,
    deleted: bool,
) {
    let mut connection = app.connection();
    diesel::sql_query(app.sql(
        "INSERT INTO chat_messages (live_id, user_id, body, sent_at_ms, deleted_at_ms) \
         VALUES (?, (SELECT id FROM users WHERE username = ?), ?, ?, ?)",
    ))
    .bind::<diesel::sql_types::BigInt, _>(live)
    .bind::<diesel::sql_types::Text, _>(author)
    .bind::<diesel::sql_types::Text, _>(body)
    .bind::<diesel::sql_types::BigInt, _>(sent_at_ms)
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::BigInt>, _>(
        deleted.then_some(sent_at_ms),
    )
    .execute(&mut connection)
    .unwrap();
}

#[tokio::test]
async fn a_video_carries_its_lives_chat_from_5_s_before_to_5_s_after_oldest_first() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.user("bob").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    let (other_live, _) = past_live(&app, &alice, "Another show").await;
    let duration = 60_000;
    let start = started + 10_000;
    let video_id = id('e');
    sync(
        &app,
        vec![report(&video_id, live, start, duration, "finished")],
    )
    .await;
    let end = start + duration;
    store_message(&app, live, "bob", "too early", start - 5_001, false);
    store_message(&app, live, "bob", "last", end + 5_000, false);
    store_message(
        &app,
        live,
        "bob",
        "<img src=x onerror=alert(1)>",
        start + 1_000,
        false,
    );
    store_message(&app, live, "alice", "first", start - 5_000, false);
    store_message(&app, live, "bob", "deleted", start + 2_000, true);
    store_message(&app, live, "bob", "too late", end + 5_001, false);
    store_message(
        &app,
        other_live,
        "bob",
        "another live",
        start + 3_000,
        false,
    );

    let body = video(&app, &video_id).await;
    let chat: Vec<(String, String, i64)> = body["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| {
            assert!(message["id"].as_i64().is_some());
            (
                message["username"].as_str().unwrap().to_owned(),
                message["body"].as_str().unwrap().to_owned(),
                message["sent_at_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        chat,
        [
            ("alice".to_owned(), "first".to_owned(), start - 5_000),
            (
                "bob".to_owned(),
                "<img src=x onerror=alert(1)>".to_owned(),
                start + 1_000
            ),
            ("bob".to_owned(), "last".to_owned(), end + 5_000),
        ]
    );
}

#[tokio::test]
async fn a_replays_chat_is_bounded_to_its_first_5000_messages() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Chatty").await;
    let video_id = id('f');
    sync(
        &app,
        vec![report(&video_id, live, started, 600_000, "finished")],
    )
    .await;
    let mut connection = app.connection();
    diesel::sql_query(app.sql(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 5009) \
         INSERT INTO chat_messages (live_id, user_id, body, sent_at_ms) \
         SELECT ?, (SELECT id FROM users WHERE username = 'alice'), 'm' || i, ? + i FROM n",
    ))
    .bind::<diesel::sql_types::BigInt, _>(live)
    .bind::<diesel::sql_types::BigInt, _>(started)
    .execute(&mut connection)
    .unwrap();
    let body = video(&app, &video_id).await;
    let chat = body["chat"].as_array().unwrap();
    assert_eq!(chat.len(), 5_000);
    assert_eq!(
        (&chat[0]["body"], &chat[4_999]["body"]),
        (&json!("m0"), &json!("m4999"))
    );
}

#[tokio::test]
async fn a_report_for_a_live_the_app_does_not_know_is_skipped() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Known").await;
    let (stray, known) = (id('1'), id('2'));
    let delete = sync(
        &app,
        vec![
            report(&stray, live + 1_000, started, 1_000, "finished"),
            report(&known, live, started, 2_000, "finished"),
        ],
    )
    .await;
    assert_eq!(delete, Vec::<String>::new());
    assert_eq!(app.count("recordings"), 1);
    assert_error(
        app.get(&client(), &format!("/api/videos/{stray}")).await,
        404,
        "video_not_found",
    )
    .await;
    assert_eq!(video(&app, &known).await["username"], "alice");
}

/// A stand-in for the media server's internal API: keeps each `recordings/delete` call
/// (whether its internal token was the app's, and the body) and answers 204.
struct FakeMediaServer {
    url: String,
    calls: Arc<Mutex<Vec<(bool, Value)>>>,
}

impl FakeMediaServer {
    async fn start(secret: String) -> FakeMediaServer {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let kept = calls.clone();
        let server = actix_web::HttpServer::new(move || {
            let kept = kept.clone();
            let secret = secret.clone();
            actix_web::App::new().route(
                "/internal/v1/recordings/delete",
                actix_web::web::post().to(
                    move |request: actix_web::HttpRequest, body: actix_web::web::Json<Value>| {
                        let path = request.path().to_owned();
                        let authorized = request
                            .headers()
                            .get("authorization")
                            .and_then(|value| value.to_str().ok())
                            .and_then(|value| value.strip_prefix("Bearer "))
                            .is_some_and(|token| {
                                verify_internal_token(
                                    token,
                                    secret.as_bytes(),
                                    InternalCaller::App,
                                    &path,
                                )
                                .is_ok()
                            });
                        kept.lock().unwrap().push((authorized, body.into_inner()));
                        async { actix_web::HttpResponse::NoContent().finish() }
                    },
                ),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        FakeMediaServer { url, calls }
    }

    fn calls(&self) -> Vec<(bool, Value)> {
        self.calls.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn a_deleted_video_is_gone_and_the_media_server_is_asked_to_delete_it_until_it_has() {
    let secret = format!("test-secret-{}", "x".repeat(40));
    let media = FakeMediaServer::start(secret.clone()).await;
    let internal_url = media.url.clone();
    let app = spawn_app_with(move |settings| settings.media_internal_url = internal_url).await;
    assert_eq!(
        app.secret, secret,
        "the fake media server checks the app's tokens"
    );
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    let (gone, kept) = (id('7'), id('8'));
    let reports = vec![
        report(&gone, live, started, 1_000, "finished"),
        report(&kept, live, started + 5_000, 1_000, "finished"),
    ];
    assert_eq!(sync(&app, reports.clone()).await, Vec::<String>::new());

    let response = delete(&alice, &app, &gone, Some(ORIGIN)).await;
    assert_eq!(response.status(), 204);
    assert_eq!(media.calls(), [(true, json!({ "ids": [gone] }))]);
    assert_error(
        app.get(&client(), &format!("/api/videos/{gone}")).await,
        404,
        "video_not_found",
    )
    .await;
    page(&app, &client(), &format!("/alice/videos/{gone}"), 404).await;
    let list = page(&app, &client(), "/alice/videos", 200).await;
    assert!(!list.contains(&gone) && list.contains(&kept), "{list}");
    assert_error(
        delete(&alice, &app, &gone, Some(ORIGIN)).await,
        404,
        "video_not_found",
    )
    .await;

    // The media server still holds it: every sync answer asks, and it stays hidden.
    let asked = [gone.as_str()];
    assert_eq!(sync(&app, vec![]).await, asked);
    assert_eq!(sync(&app, reports.clone()).await, asked);
    assert!(
        !page(&app, &client(), "/alice/videos", 200)
            .await
            .contains(&gone)
    );
    // Until it reports the file deleted.
    let done = report(&gone, live, started, 1_000, "deleted");
    assert_eq!(sync(&app, vec![done]).await, Vec::<String>::new());
    assert_eq!(sync(&app, reports).await, Vec::<String>::new());
    assert!(
        !page(&app, &client(), "/alice/videos", 200)
            .await
            .contains(&gone)
    );
    assert_eq!(video(&app, &kept).await["id"], kept.as_str());
}

#[tokio::test]
async fn a_video_deleted_on_the_media_server_is_no_longer_listed() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    let video_id = id('9');
    sync(
        &app,
        vec![report(&video_id, live, started, 1_000, "finished")],
    )
    .await;
    assert!(
        page(&app, &client(), "/alice/videos", 200)
            .await
            .contains(&video_id)
    );
    // Retention removed the file: a `deleted` report is final.
    sync(
        &app,
        vec![report(&video_id, live, started, 1_000, "deleted")],
    )
    .await;
    assert!(
        !page(&app, &client(), "/alice/videos", 200)
            .await
            .contains(&video_id)
    );
    sync(
        &app,
        vec![report(&video_id, live, started, 1_000, "finished")],
    )
    .await;
    assert!(
        !page(&app, &client(), "/alice/videos", 200)
            .await
            .contains(&video_id)
    );
    let response = app.get(&client(), &format!("/api/videos/{video_id}")).await;
    assert_error(response, 404, "video_not_found").await;
}

#[tokio::test]
async fn only_its_creator_deletes_a_video_and_only_from_this_site() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    let video_id = id('a');
    sync(
        &app,
        vec![report(&video_id, live, started, 1_000, "finished")],
    )
    .await;

    assert_error(
        delete(&bob, &app, &video_id, Some(ORIGIN)).await,
        403,
        "not_owner",
    )
    .await;
    assert_error(
        delete(&client(), &app, &video_id, Some(ORIGIN)).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_error(
        delete(&alice, &app, &video_id, None).await,
        403,
        "csrf_origin_missing",
    )
    .await;
    assert_error(
        delete(&alice, &app, &video_id, Some("http://evil.test")).await,
        403,
        "csrf_origin_mismatch",
    )
    .await;
    assert_error(
        delete(&alice, &app, &id('b'), Some(ORIGIN)).await,
        404,
        "video_not_found",
    )
    .await;
    // None of them deleted anything.
    assert_eq!(video(&app, &video_id).await["id"], video_id.as_str());
    assert_eq!(sync(&app, vec![]).await, Vec::<String>::new());
}

#[tokio::test]
async fn malformed_video_ids_are_404_and_never_reach_a_file() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    sync(
        &app,
        vec![report(&id('a'), live, started, 1_000, "finished")],
    )
    .await;
    let upper = "A".repeat(32);
    let short = "a".repeat(31);
    let long = "a".repeat(33);
    let dotted = format!("{}.webm", "a".repeat(32));
    for bad in [
        "..%2Fx",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E%2Fx",
        upper.as_str(),
        short.as_str(),
        long.as_str(),
        dotted.as_str(),
    ] {
        let path = format!("/api/videos/{bad}");
        assert_error(app.get(&client(), &path).await, 404, "video_not_found").await;
        let response = alice
            .delete(app.url(&path))
            .header("Origin", ORIGIN)
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "video_not_found").await;
        page(&app, &client(), &format!("/alice/videos/{bad}"), 404).await;
    }
    // A path with `..` is resolved before routing: still a JSON 404.
    let response = app.get(&client(), "/api/videos/../x").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["code"].is_string());
}

async fn put_recording(
    app: &TestApp,
    user: &Client,
    body: Value,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = user.put(app.url("/api/account/recording")).json(&body);
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

async fn publish_token_records(app: &TestApp, user: &Client) -> bool {
    let response = app.post(user, "/api/lives/alice/token", &json!({})).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["role"], "publish");
    privatehub_protocol::verify_media_token(body["token"].as_str().unwrap(), app.secret.as_bytes())
        .unwrap()
        .record
}

async fn whip_authorize_records(app: &TestApp, user: &Client) -> bool {
    let key: Value = app
        .get(user, "/api/me/stream-key")
        .await
        .json()
        .await
        .unwrap();
    let authorized = internal(
        app,
        InternalCaller::Media,
        "/internal/v1/whip/authorize",
        json!({ "stream_key": key["stream_key"] }),
    )
    .await;
    assert_eq!(authorized.status(), 200);
    let body: Value = authorized.json().await.unwrap();
    body["record"].as_bool().expect("record")
}

#[tokio::test]
async fn the_recording_setting_flips_the_record_claim_of_publish_tokens_and_whip() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    app.start_live(&alice, "Show").await;
    // On by default, and shown so.
    assert!(publish_token_records(&app, &alice).await);
    assert!(whip_authorize_records(&app, &alice).await);
    let settings = page(&app, &alice, "/settings/stream", 200).await;
    assert!(
        settings.contains("id=\"record-lives\" type=\"checkbox\" checked"),
        "{settings}"
    );
    assert!(settings.contains("Record my lives (replays)"));

    let response = put_recording(&app, &alice, json!({"enabled": false}), Some(ORIGIN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"enabled": false})
    );
    assert!(!publish_token_records(&app, &alice).await);
    assert!(!whip_authorize_records(&app, &alice).await);
    let settings = page(&app, &alice, "/settings/stream", 200).await;
    assert!(
        settings.contains("id=\"record-lives\" type=\"checkbox\">"),
        "{settings}"
    );
    let own_videos = page(&app, &alice, "/alice/videos", 200).await;
    assert!(own_videos.contains("data-role=\"recording-off\""));
    assert!(
        !page(&app, &client(), "/alice/videos", 200)
            .await
            .contains("recording-off")
    );

    // Refused changes change nothing.
    let on = json!({"enabled": true});
    assert_error(
        put_recording(&app, &client(), on.clone(), Some(ORIGIN)).await,
        401,
        "unauthenticated",
    )
    .await;
    assert_error(
        put_recording(&app, &alice, on.clone(), None).await,
        403,
        "csrf_origin_missing",
    )
    .await;
    assert_error(
        put_recording(&app, &alice, on.clone(), Some("http://evil.test")).await,
        403,
        "csrf_origin_mismatch",
    )
    .await;
    for bad in [
        json!({"enabled": "yes"}),
        json!({}),
        json!({"enabled": true, "all": true}),
        json!([true]),
    ] {
        assert_error(
            put_recording(&app, &alice, bad, Some(ORIGIN)).await,
            400,
            "invalid_body",
        )
        .await;
    }
    assert!(!publish_token_records(&app, &alice).await);

    let response = put_recording(&app, &alice, on, Some(ORIGIN)).await;
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"enabled": true})
    );
    assert!(publish_token_records(&app, &alice).await);
    assert!(whip_authorize_records(&app, &alice).await);
}

#[tokio::test]
async fn the_recordings_sync_needs_the_media_servers_internal_token() {
    let app = spawn_app().await;
    let alice = app.user("alice").await;
    let (live, started) = past_live(&app, &alice, "Show").await;
    let body = json!({ "recordings": [report(&id('a'), live, started, 1_000, "finished")] });
    let without = client()
        .post(app.url(SYNC))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(without, 401, "unauthenticated").await;
    let from_app = internal(&app, InternalCaller::App, SYNC, body.clone()).await;
    assert_error(from_app, 401, "unauthenticated").await;
    let other_path = issue_internal_token(
        InternalCaller::Media,
        app.secret.as_bytes(),
        "/internal/v1/whip/sync",
    )
    .unwrap();
    let other_secret = issue_internal_token(
        InternalCaller::Media,
        b"another-secret-another-secret-another",
        SYNC,
    )
    .unwrap();
    for token in [other_path, other_secret] {
        let response = client()
            .post(app.url(SYNC))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "unauthenticated").await;
    }
    assert_eq!(app.count("recordings"), 0, "nothing stored");
    // More reports than one sync may carry.
    let many: Vec<Value> = (0..201)
        .map(|n| report(&format!("{n:032x}"), live, started, 1_000, "finished"))
        .collect();
    let response = internal(
        &app,
        InternalCaller::Media,
        SYNC,
        json!({ "recordings": many }),
    )
    .await;
    assert_error(response, 400, "too_many_recordings").await;
    assert_eq!(app.count("recordings"), 0);
}
