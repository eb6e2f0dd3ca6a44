//! Replays: a live from Chromium's fake camera is recorded as the media server forwards
//! it; the file (read by ffprobe) has the codecs and the length the live had; another
//! Chromium plays it on the replay page, seeks, and sees the live's chat follow the
//! position both ways. A recording cut by a SIGKILL of the media server is repaired when
//! it starts again, and a deleted replay is gone from the app and the media server.

use std::path::Path;
use std::time::{Duration, Instant};

use privatehub_testkit::ffprobe::ffprobe;
use privatehub_testkit::{StackOptions, start_stack};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Browser, BrowserOptions, ChromeDriver, artifact_path, wait_until};
use crate::pages;

/// The replay page's `<video>`.
const VIDEO: &str = "document.querySelector('#replay-video')";
/// Decoded frames of the replay page's `<video>`.
const REPLAY_FRAMES: &str =
    "document.querySelector('#replay-video').getVideoPlaybackQuality().totalVideoFrames";
const REPLAY_TIME: &str = "document.querySelector('#replay-video').currentTime";
/// A recording closes 5 s after its publisher leaves and is reported within 3 s: this
/// leaves room for a loaded machine.
const UNTIL_FINISHED: Duration = Duration::from_secs(30);
const PAGE_WAIT: Duration = Duration::from_secs(15);

const EARLY_LINE: &str = "early: the coffee is on";
const LATE_LINE: &str = "late: see you tomorrow";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_plays_seeks_and_follows_its_chat() {
    let _guard = crate::exclusive().await;
    let started = Instant::now();
    let stack = start_stack(StackOptions::default());
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, viewer) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &options),
        Browser::open(&driver, "viewer (replay)", &options),
    );

    // A 10 s live with a chat line at ~2 s and one at ~8 s.
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Replay me").await;
    let live_at = Instant::now();
    tokio::time::sleep_until((live_at + Duration::from_secs(2)).into()).await;
    pages::send_chat(&alice, EARLY_LINE).await;
    pages::wait_chat_line(&alice, EARLY_LINE).await;
    tokio::time::sleep_until((live_at + Duration::from_secs(8)).into()).await;
    pages::send_chat(&alice, LATE_LINE).await;
    pages::wait_chat_line(&alice, LATE_LINE).await;
    tokio::time::sleep_until((live_at + Duration::from_secs(10)).into()).await;
    let published = live_at.elapsed();
    pages::end_live(&alice).await;
    let ended = Instant::now();
    println!("[{:?}] alice was live for {published:?}", started.elapsed());

    // The app lists it, and the media server closes it and reports it finished.
    let id = wait_listed_video(&app, "alice").await;
    let video = wait_finished(&app, &id).await;
    println!(
        "[{:?}] video {id} finished {:?} after the end: {}",
        started.elapsed(),
        ended.elapsed(),
        summary(&video)
    );
    let file = stack.media_recordings_dir().join(format!("{id}.webm"));
    let probe = ffprobe(&file);
    println!(
        "ffprobe: {probe}; measured live {:.2} s",
        published.as_secs_f64()
    );
    assert_eq!(probe.video_codec.as_deref(), Some("vp8"), "{probe:?}");
    assert_eq!(probe.audio_codec.as_deref(), Some("opus"), "{probe:?}");
    assert!(
        (probe.duration - published.as_secs_f64()).abs() <= 1.0,
        "the file lasts {:.2} s, the live {:.2} s",
        probe.duration,
        published.as_secs_f64()
    );
    // The broadcaster sends three simulcast layers; the recording holds the top one.
    let (width, _) = probe.video_size.expect("a video size");
    assert!(
        width >= 640,
        "recorded {width} px wide: not the top layer? {probe}"
    );
    // Chromium sends a keyframe only when asked: the recorder asks every 5 s
    // (MEDIA_RECORDINGS_SEEK_POINT_SECONDS), so a seek never decodes from the start.
    let mut points = probe.keyframes.clone();
    points.push(probe.duration);
    assert!(
        points.windows(2).all(|pair| pair[1] - pair[0] < 6.5),
        "seek points far apart: {probe}"
    );
    let reported_s = video["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    assert!(
        (reported_s - probe.duration).abs() <= 0.5,
        "the report says {reported_s} s, the file {} s",
        probe.duration
    );

    // Where the two lines fall in the video.
    let early_s = chat_offset_s(&video, EARLY_LINE);
    let late_s = chat_offset_s(&video, LATE_LINE);
    println!("chat offsets in the video: early {early_s:.2} s, late {late_s:.2} s");

    // The replay page, from a browser that is not signed in.
    let duration = open_replay(&viewer, &app, "alice", &id).await;
    println!("the page's <video> lasts {duration:.2} s");
    assert!(
        (duration - probe.duration).abs() <= 0.5,
        "<video> duration {duration} s, file {} s",
        probe.duration
    );
    assert!(
        !line_visible(&viewer, EARLY_LINE).await && !line_visible(&viewer, LATE_LINE).await,
        "no chat line is shown before the video plays"
    );
    play_muted(&viewer).await;
    viewer
        .wait_rising("replay position", REPLAY_TIME, 0.5, PAGE_WAIT)
        .await;
    viewer
        .wait_rising("replay frames", REPLAY_FRAMES, 10.0, PAGE_WAIT)
        .await;
    viewer
        .wait_js(
            "the early chat line shown",
            &line_visible_js(EARLY_LINE),
            Duration::from_secs_f64(early_s.max(0.0)) + PAGE_WAIT,
        )
        .await;
    let at = viewer.number(REPLAY_TIME).await;
    assert!(
        at < late_s && !line_visible(&viewer, LATE_LINE).await,
        "at {at:.2} s the late line ({late_s:.2} s) must not be shown yet"
    );
    let audio_bytes = viewer
        .number(&format!("{VIDEO}.webkitAudioDecodedByteCount"))
        .await;
    println!("playing: at {at:.2} s the early line is shown; {audio_bytes} audio bytes decoded");
    assert!(audio_bytes > 0.0, "no audio decoded");

    // Seek to the middle: frames are decoded there, the chat is between the lines.
    let middle = duration / 2.0;
    let middle_seek = seek(&viewer, middle).await;
    println!("seek to the middle: {middle_seek}");
    let landed = middle_seek["frame_media_time"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (landed - middle).abs() <= 0.5,
        "seeked to {middle:.2} s, the first frame shown is at {landed} s: {middle_seek}"
    );
    viewer
        .wait_rising("frames after the seek", REPLAY_FRAMES, 5.0, PAGE_WAIT)
        .await;
    let at = viewer.number(REPLAY_TIME).await;
    assert!(
        at >= middle - 0.25 && at < middle + 3.0,
        "seeked to {middle:.2} s, now at {at:.2} s"
    );
    if middle > early_s && middle < late_s {
        assert!(line_visible(&viewer, EARLY_LINE).await);
        assert!(!line_visible(&viewer, LATE_LINE).await);
    }

    // Near the end: the late line appears.
    let near_end = (duration - 1.0).max(late_s + 0.1);
    let seek_end = seek(&viewer, near_end).await;
    println!("seek near the end: {seek_end}");
    viewer
        .wait_js(
            "the late chat line shown",
            &line_visible_js(LATE_LINE),
            PAGE_WAIT,
        )
        .await;
    viewer.screenshot(&[artifact_path("replay.png")]).await;

    // The early line's time button plays from there: the late line goes again.
    viewer
        .js(
            "[...document.querySelectorAll('#replay-chat .chat-line')] \
             .find(line => line.querySelector('.chat-text').textContent === arguments[0]) \
             .querySelector('.chat-time').click();",
            vec![json!(EARLY_LINE)],
        )
        .await;
    viewer
        .wait_js(
            "the late chat line hidden after the early line's time button",
            &format!("!({})", line_visible_js(LATE_LINE)),
            PAGE_WAIT,
        )
        .await;
    let at = viewer.number(REPLAY_TIME).await;
    println!("the early line's time button took the video to {at:.2} s");
    assert!(
        at >= early_s - 0.25 && at < early_s + 3.0,
        "the early line's button ({early_s:.2} s) took the video to {at:.2} s"
    );
    assert!(line_visible(&viewer, EARLY_LINE).await);

    // Back to the start: both lines are hidden again (paused there, so the early
    // line's moment does not come while this is checked).
    let seek_start = seek(&viewer, 0.0).await;
    viewer.js(&format!("{VIDEO}.pause();"), vec![]).await;
    println!("seek back to 0: {seek_start}");
    viewer
        .wait_js(
            "both chat lines hidden again",
            &format!(
                "!({}) && !({}) && document.querySelector('#replay-chat').dataset.shown === '0'",
                line_visible_js(LATE_LINE),
                line_visible_js(EARLY_LINE)
            ),
            PAGE_WAIT,
        )
        .await;
    let at = viewer.number(REPLAY_TIME).await;
    assert!(at < early_s, "paused at {at:.2} s, before the early line");
    println!("[{:?}] replay checked", started.elapsed());

    for browser in [alice, viewer] {
        browser.close().await;
    }
    std::fs::write(artifact_path("replay-media.log"), stack.media.log()).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_a_kill_of_the_media_server() {
    let _guard = crate::exclusive().await;
    let mut stack = start_stack(StackOptions::default());
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, viewer) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &options),
        Browser::open(&driver, "viewer (replay)", &options),
    );
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Cut short").await;
    let live_at = Instant::now();
    let dir = stack.media_recordings_dir();
    let id = wait_recording_file(&dir).await;

    // While it is being recorded, what is written so far plays.
    wait_until("the app knows the recording", UNTIL_FINISHED, || async {
        video_state(&app, &id).await.as_deref() == Some("recording")
    })
    .await;
    let so_far = open_replay(&viewer, &app, "alice", &id).await;
    play_muted(&viewer).await;
    viewer
        .wait_rising("frames while recording", REPLAY_FRAMES, 10.0, PAGE_WAIT)
        .await;
    println!(
        "[{:?} live] the replay plays while recording (its <video> lasts {so_far:.2} s so far)",
        live_at.elapsed()
    );
    tokio::time::sleep_until((live_at + Duration::from_secs(6)).into()).await;

    // SIGKILL mid-live: the file is left open (no duration, no seek index). The
    // broadcaster's browser goes too, so it does not publish again once the server is back.
    let before_kill = live_at.elapsed();
    stack.media.kill();
    alice.close().await;
    let left = report_on_disk(&dir, &id);
    println!(
        "killed after {before_kill:?} live; the report on disk says {}",
        left["state"]
    );
    assert_eq!(
        left["state"], "recording",
        "the kill must leave the recording open for this test to mean anything"
    );

    let restarting = Instant::now();
    stack.restart_media();
    let video = wait_finished(&app, &id).await;
    println!(
        "repaired and reported finished {:?} after the restart: {}",
        restarting.elapsed(),
        summary(&video)
    );
    let probe = ffprobe(&dir.join(format!("{id}.webm")));
    println!(
        "ffprobe: {probe}; measured before the kill {:.2} s",
        before_kill.as_secs_f64()
    );
    assert_eq!(probe.video_codec.as_deref(), Some("vp8"), "{probe:?}");
    assert_eq!(probe.audio_codec.as_deref(), Some("opus"), "{probe:?}");
    assert!(
        (probe.duration - before_kill.as_secs_f64()).abs() <= 2.0,
        "the repaired file lasts {:.2} s, the live ran {:.2} s before the kill",
        probe.duration,
        before_kill.as_secs_f64()
    );

    // It plays, and seeks (the repair wrote the seek index).
    let duration = open_replay(&viewer, &app, "alice", &id).await;
    println!("the page's <video> lasts {duration:.2} s");
    assert!(
        (duration - probe.duration).abs() <= 0.5,
        "<video> duration {duration} s, file {} s",
        probe.duration
    );
    play_muted(&viewer).await;
    viewer
        .wait_rising("replay position", REPLAY_TIME, 1.0, PAGE_WAIT)
        .await;
    viewer
        .wait_rising("replay frames", REPLAY_FRAMES, 10.0, PAGE_WAIT)
        .await;
    let middle_seek = seek(&viewer, duration / 2.0).await;
    println!("seek to the middle of the repaired file: {middle_seek}");
    viewer
        .wait_rising("frames after the seek", REPLAY_FRAMES, 5.0, PAGE_WAIT)
        .await;
    viewer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_replay_is_gone() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions::default());
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (owner)", &options),
        Browser::open(&driver, "bob (another user)", &options),
    );
    tokio::join!(
        pages::sign_up(&alice, &app, "alice"),
        pages::sign_up(&bob, &app, "bob")
    );
    pages::go_live(&alice, &app, "alice", "Not for keeps").await;
    let live_at = Instant::now();
    tokio::time::sleep_until((live_at + Duration::from_secs(3)).into()).await;
    pages::end_live(&alice).await;
    let id = wait_listed_video(&app, "alice").await;
    let video = wait_finished(&app, &id).await;
    let url = video["url"].as_str().expect("a replay URL").to_owned();
    let http = reqwest::Client::new();

    // The replay URL serves the file, by ranges too; a tampered or missing token does not.
    let whole = http.get(&url).send().await.expect("GET the replay URL");
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(
        whole.headers()["content-type"].to_str().unwrap_or_default(),
        "video/webm"
    );
    let ranged = http
        .get(&url)
        .header("Range", "bytes=0-99")
        .send()
        .await
        .expect("GET a range");
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes().await.map(|body| body.len()).ok(), Some(100));
    assert_eq!(
        status_of(&http, &tampered(&url)).await,
        StatusCode::FORBIDDEN
    );
    let untokened = url.split('?').next().unwrap_or_default().to_owned();
    assert_eq!(status_of(&http, &untokened).await, StatusCode::UNAUTHORIZED);

    // Nobody else deletes it: not another signed-in user (no button, 403), not a
    // cross-site request riding alice's cookie, not an anonymous one.
    bob.goto(&format!("{app}/alice/videos/{id}")).await;
    bob.wait_js(
        "the replay page ready",
        "document.querySelector('#replay-page')?.dataset.state === 'ready'",
        PAGE_WAIT,
    )
    .await;
    assert_eq!(
        bob.js(
            "return document.querySelector('#delete-video') === null;",
            vec![]
        )
        .await,
        true,
        "bob is shown a delete button"
    );
    let bob_delete = bob
        .js(
            "return fetch(arguments[0], {method: 'DELETE', credentials: 'same-origin'}) \
             .then(async r => [r.status, await r.text()]);",
            vec![json!(format!("/api/videos/{id}"))],
        )
        .await;
    assert_eq!(bob_delete[0], 403, "bob's delete: {bob_delete}");
    assert!(
        bob_delete[1]
            .as_str()
            .unwrap_or_default()
            .contains("not_owner"),
        "bob's delete: {bob_delete}"
    );
    let cookies = session_cookies(&alice).await;
    let api = format!("{app}/api/videos/{id}");
    let cross_site = http
        .delete(&api)
        .header("Cookie", &cookies)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .expect("cross-site DELETE");
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let anonymous = http
        .delete(&api)
        .header("Origin", &app)
        .send()
        .await
        .expect("anonymous DELETE");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&http, &api).await, StatusCode::OK);
    assert_eq!(status_of(&http, &url).await, StatusCode::OK);

    // Alice deletes it with the page's button and lands on her (now empty) list.
    alice.goto(&format!("{app}/alice/videos/{id}")).await;
    alice
        .wait_js(
            "the replay page ready",
            "document.querySelector('#replay-page')?.dataset.state === 'ready'",
            PAGE_WAIT,
        )
        .await;
    alice.js("window.confirm = () => true;", vec![]).await;
    let deleting = Instant::now();
    alice.click("#delete-video").await;
    alice
        .wait_js(
            "back on the (empty) videos list",
            "location.pathname === '/alice/videos' && document.querySelector('[data-role=no-videos]') !== null",
            PAGE_WAIT,
        )
        .await;
    println!("deleted through the page in {:?}", deleting.elapsed());

    // Gone everywhere: the API, the page, and the file URL whose token is still valid.
    assert_eq!(status_of(&http, &api).await, StatusCode::NOT_FOUND);
    assert_eq!(
        status_of(&http, &format!("{app}/alice/videos/{id}")).await,
        StatusCode::NOT_FOUND
    );
    assert!(
        video["url_expires_at"].as_u64().unwrap_or(0) > unix_now() + 60,
        "the token is still valid"
    );
    assert_eq!(status_of(&http, &url).await, StatusCode::NOT_FOUND);
    let file = stack.media_recordings_dir().join(format!("{id}.webm"));
    wait_until("the file removed", Duration::from_secs(10), || async {
        !file.exists()
    })
    .await;
    println!(
        "the file was removed {:?} after the click",
        deleting.elapsed()
    );

    for browser in [alice, bob] {
        browser.close().await;
    }
}

/// The id of the newest video on `username`'s videos page, once there is one.
pub(crate) async fn wait_listed_video(app: &str, username: &str) -> String {
    let page = format!("{app}/{username}/videos");
    let deadline = Instant::now() + UNTIL_FINISHED;
    loop {
        if let Ok(response) = reqwest::get(&page).await
            && let Ok(html) = response.text().await
            && let Some(id) = first_video_id(&html)
        {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no video listed on {page} after {UNTIL_FINISHED:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn first_video_id(html: &str) -> Option<String> {
    const MARK: &str = "data-video-id=\"";
    let start = html.find(MARK)? + MARK.len();
    let length = html[start..].find('"')?;
    Some(html[start..start + length].to_owned())
}

/// Polls `/api/videos/{id}` until its state is `finished`; returns that answer.
pub(crate) async fn wait_finished(app: &str, id: &str) -> Value {
    let url = format!("{app}/api/videos/{id}");
    let deadline = Instant::now() + UNTIL_FINISHED;
    let mut last = String::from("no answer");
    loop {
        if let Ok(response) = reqwest::get(&url).await {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == StatusCode::OK
                && let Ok(video) = serde_json::from_str::<Value>(&text)
                && video["state"] == "finished"
            {
                return video;
            }
            last = format!("{status} {}", text.chars().take(300).collect::<String>());
        }
        assert!(
            Instant::now() < deadline,
            "{url} not finished after {UNTIL_FINISHED:?}: last {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `state` of `/api/videos/{id}`, if it answers.
async fn video_state(app: &str, id: &str) -> Option<String> {
    let response = reqwest::get(format!("{app}/api/videos/{id}")).await.ok()?;
    let video: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
    video["state"].as_str().map(str::to_owned)
}

/// The video's answer without its token and chat, for the log.
fn summary(video: &Value) -> String {
    format!(
        "state {}, duration_ms {}, {} chat lines",
        video["state"],
        video["duration_ms"],
        video["chat"].as_array().map_or(0, Vec::len)
    )
}

/// When the chat line with `body` was sent, in seconds into the video.
fn chat_offset_s(video: &Value, body: &str) -> f64 {
    let started = video["started_at_ms"].as_f64().expect("started_at_ms");
    let sent = video["chat"]
        .as_array()
        .and_then(|chat| chat.iter().find(|line| line["body"] == body))
        .and_then(|line| line["sent_at_ms"].as_f64())
        .unwrap_or_else(|| panic!("{body:?} is not in the video's chat: {video}"));
    (sent - started) / 1000.0
}

/// The id of the first recording file to appear in `dir`.
async fn wait_recording_file(dir: &Path) -> String {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries.filter_map(Result::ok).find_map(|entry| {
                let path = entry.path();
                (path.extension()? == "webm")
                    .then(|| path.file_stem()?.to_str().map(str::to_owned))
                    .flatten()
            })
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no recording in {} after {PAGE_WAIT:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `{id}.json` report beside a recording (null if unreadable).
fn report_on_disk(dir: &Path, id: &str) -> Value {
    std::fs::read_to_string(dir.join(format!("{id}.json")))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// Opens the replay page and waits for the video's metadata; returns its duration (NaN
/// if not finite).
async fn open_replay(browser: &Browser, app: &str, username: &str, id: &str) -> f64 {
    browser.goto(&format!("{app}/{username}/videos/{id}")).await;
    browser
        .wait_js(
            "the replay's metadata",
            &format!(
                "document.querySelector('#replay-page')?.dataset.state === 'ready' \
                 && {VIDEO}.readyState >= 1"
            ),
            PAGE_WAIT,
        )
        .await;
    browser.number(&format!("{VIDEO}.duration")).await
}

/// Starts playback (muted: no user gesture is needed for that).
async fn play_muted(browser: &Browser) {
    let played = browser
        .js(
            &format!(
                "const video = {VIDEO}; video.muted = true; \
                 return video.play().then(() => 'playing', error => String(error));"
            ),
            vec![],
        )
        .await;
    assert_eq!(played, "playing", "{}: play() refused", browser.name);
}

/// Sets the replay's position to `to` seconds and waits for `seeked` and the first frame
/// shown after it. Returns the timings (ms from the seek) and that frame's media time.
async fn seek(browser: &Browser, to: f64) -> Value {
    let result = browser
        .js(
            &format!(
                "const video = {VIDEO}; const to = arguments[0];
                 const frames = () => video.getVideoPlaybackQuality().totalVideoFrames;
                 const start = performance.now();
                 const framesBefore = frames();
                 const seeked = new Promise(resolve =>
                     video.addEventListener('seeked', resolve, {{ once: true }}));
                 video.currentTime = to;
                 const timeout = ms => new Promise(resolve => setTimeout(() => resolve('timeout'), ms));
                 if (await Promise.race([seeked, timeout(15000)]) === 'timeout') {{
                     return {{ error: 'no seeked event', current_time: video.currentTime }};
                 }}
                 const seekedMs = performance.now() - start;
                 const framesAtSeeked = frames();
                 const frame = new Promise(resolve =>
                     video.requestVideoFrameCallback((now, meta) => resolve(meta)));
                 const meta = await Promise.race([frame, timeout(10000)]);
                 if (meta === 'timeout') {{
                     return {{ error: 'no frame after the seek', seeked_ms: seekedMs }};
                 }}
                 return {{
                     to, seeked_ms: Math.round(seekedMs),
                     first_frame_ms: Math.round(performance.now() - start),
                     frame_media_time: meta.mediaTime,
                     frames_before: framesBefore, frames_at_seeked: framesAtSeeked,
                     current_time: video.currentTime, paused: video.paused,
                 }};"
            ),
            vec![json!(to)],
        )
        .await;
    assert!(
        result.get("error").is_none(),
        "{}: seek to {to}: {result}",
        browser.name
    );
    result
}

fn line_visible_js(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#replay-chat .chat-line')].some(line => \
         line.querySelector('.chat-text')?.textContent === {} && !line.hidden && line.checkVisibility())",
        json!(text)
    )
}

async fn line_visible(browser: &Browser, text: &str) -> bool {
    browser
        .js(&format!("return {};", line_visible_js(text)), vec![])
        .await
        == Value::Bool(true)
}

/// A copy of the replay URL with one character of its token's signature changed.
fn tampered(url: &str) -> String {
    let signature_start = url.rfind('.').expect("a JWT in the URL") + 1;
    let index = signature_start + (url.len() - signature_start) / 2;
    let mut bytes = url.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("an ASCII URL")
}

async fn status_of(http: &reqwest::Client, url: &str) -> StatusCode {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .status()
}

/// The browser's cookies for the app as one `Cookie` header value (the session cookie is
/// HttpOnly: WebDriver reads it, page scripts cannot).
async fn session_cookies(browser: &Browser) -> String {
    let cookies = browser
        .client
        .get_all_cookies()
        .await
        .expect("read the browser's cookies");
    cookies
        .iter()
        .map(|cookie| format!("{}={}", cookie.name(), cookie.value()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
