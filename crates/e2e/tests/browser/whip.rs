//! WHIP ingest and WHEP playback with clients we did not write: aiortc and GStreamer's
//! simple-whip-client publish as OBS would, real Chromium viewers watch on the live
//! page, and an aiortc WHEP player plays.

use std::time::Duration;

use privatehub_testkit::{RunningStack, StackOptions, start_stack};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Browser, BrowserOptions, ChromeDriver, artifact_path, workspace_root};
use crate::pages::{self, LIVE_STATUS, PLAYER_FRAMES};
use crate::whip_clients::ClientProcess;

/// Longest wait for a client to connect or a page to notice a change.
const WAIT: Duration = Duration::from_secs(30);

/// A signed-in HTTP client of the app (cookies kept).
pub(crate) async fn account(stack: &RunningStack, username: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let response = client
        .post(format!("{}/api/auth/signup", stack.app_url))
        .header("Origin", &stack.app_url)
        .json(&json!({"username": username, "password": pages::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    client
}

pub(crate) async fn stream_key(
    stack: &RunningStack,
    client: &reqwest::Client,
    rotate: bool,
) -> String {
    let request = if rotate {
        client
            .post(format!("{}/api/me/stream-key/rotate", stack.app_url))
            .header("Origin", &stack.app_url)
    } else {
        client.get(format!("{}/api/me/stream-key", stack.app_url))
    };
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(body["whip_url"], format!("{}/whip", stack.media_url));
    body["stream_key"].as_str().unwrap().to_owned()
}

async fn live_usernames(stack: &RunningStack) -> Vec<String> {
    let lives: Value = reqwest::get(format!("{}/api/lives", stack.app_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    lives
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|live| live["username"].as_str().map(str::to_owned))
        .collect()
}

async fn media_health(stack: &RunningStack) -> Value {
    reqwest::get(format!("{}/healthz", stack.media_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The stream key the settings page shows.
async fn shown_key(page: &Browser) -> String {
    page.js(
        "return document.querySelector('#stream-key').value;",
        vec![],
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

/// The test artifact, and docs/screenshots too with UPDATE_SCREENSHOTS=1.
fn screenshot_targets(name: &str) -> Vec<std::path::PathBuf> {
    let mut paths = vec![artifact_path(name)];
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        paths.push(workspace_root().join("docs").join("screenshots").join(name));
    }
    paths
}

async fn wait_state(browser: &Browser, state: &str, timeout: Duration) {
    browser
        .wait_js(
            &format!("player state {state}"),
            &format!("{LIVE_STATUS} === '{state}'"),
            timeout,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_refuse_bad_requests_and_leave_nothing_behind() {
    let stack = start_stack(StackOptions {
        // The flood below comes "from" one forwarded address; every other request
        // names its own, so only the flood meets the per-client limits.
        media_env: vec![("MEDIA_TRUST_PROXY_HEADERS".into(), "true".into())],
        ..StackOptions::default()
    });
    let alice = account(&stack, "alice").await;
    let key = stream_key(&stack, &alice, false).await;
    let whip = format!("{}/whip", stack.media_url);
    let http = reqwest::Client::new();
    let mut address = 0u8;
    let mut from = move |request: reqwest::RequestBuilder| {
        address += 1;
        request.header("X-Forwarded-For", format!("203.0.113.{address}"))
    };
    let sdp = "application/sdp";
    let error_code = |body: &Value| body["error"]["code"].as_str().unwrap_or("").to_owned();

    // A POST to /whip with an optional key, a content type and a body.
    let mut post = |key: Option<&str>, content_type: &str, body: String| {
        let mut request = from(http.post(&whip))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let offer = || "v=0\r\n".to_owned();
    let missing = post(None, sdp, offer()).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let unknown = format!("phk_{}", "1".repeat(64));
    assert_eq!(
        post(Some(&unknown), sdp, offer()).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some(&key), "text/plain", offer())
            .await
            .unwrap()
            .status(),
        415
    );
    let garbage = post(Some(&key), sdp, "v=0\r\nnot an offer at all\r\n".into())
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert_eq!(error_code(&garbage.json().await.unwrap()), "invalid_sdp");
    let oversized = post(Some(&key), sdp, "a".repeat(100 * 1024)).await.unwrap();
    assert_eq!(oversized.status(), 413);
    // Browser-based WHIP clients: the preflight, and CORS headers on answers.
    let preflight = from(http.request(reqwest::Method::OPTIONS, &whip))
        .header("Origin", "https://studio.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["accept-post"], "application/sdp");
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    let get = from(http.get(&whip)).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST, OPTIONS");
    let session = format!("{whip}/session/{}", "ab".repeat(16));
    let delete = from(http.delete(&session))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let patch = from(http.patch(&session))
        .bearer_auth(&key)
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .body("a=end-of-candidates\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 404);
    // WHEP: only a current live can be watched.
    for user in ["alice", "nobody"] {
        let whep = from(http.post(format!("{}/whep/{user}", stack.media_url)))
            .header("Content-Type", sdp)
            .body("v=0\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(whep.status(), 404, "WHEP of {user}");
    }
    // The media server's internal API wants the app's token.
    let internal = from(http.post(format!("{}/internal/v1/publishers/end", stack.media_url)))
        .json(&json!({"user_id": 1, "key_generation": 99}))
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status(), 401);

    // A flood from one address is cut off; another address is not disturbed.
    let mut limited = 0;
    for _ in 0..40 {
        let response = http
            .post(&whip)
            .header("X-Forwarded-For", "198.51.100.7")
            .header("Content-Type", sdp)
            .body("v=0\r\n")
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "40 POSTs in a burst from one address were all served"
    );
    let other = from(http.post(&whip))
        .header("Content-Type", sdp)
        .body("v=0\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 401);

    // Nothing was started or kept.
    assert!(live_usernames(&stack).await.is_empty());
    let health = media_health(&stack).await;
    assert_eq!(
        (health["peers"].clone(), health["rooms"].clone()),
        (json!(0), json!(0))
    );
    let metrics = reqwest::get(format!("{}/metrics", stack.media_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("media_whip_publishes_total 0"),
        "{metrics}"
    );
    // The stream key never reached a log.
    for log in [stack.app.log(), stack.media.log()] {
        assert!(
            !log.contains(&key["phk_".len()..]),
            "a log holds the stream key"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_to_chromium_and_whep_viewers() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions {
        media_env: vec![("MEDIA_WHIP_GRACE_SECONDS".into(), "6".into())],
        ..StackOptions::default()
    });
    let app = stack.app_url.clone();
    let whip = format!("{}/whip", stack.media_url);
    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (creator)", &options),
        Browser::open(&driver, "bob (viewer)", &options),
    );

    // The creator's settings page: the WHIP URL shown, the key hidden until revealed.
    pages::sign_up(&alice, &app, "alice").await;
    alice.goto(&format!("{app}/settings/stream")).await;
    let shown = alice
        .js(
            "return [document.querySelector('#whip-url').value, \
                     document.querySelector('#stream-key').type, \
                     document.querySelector('#stream-key').value];",
            vec![],
        )
        .await;
    assert_eq!(shown, json!([whip, "password", ""]));
    alice
        .screenshot(&screenshot_targets("obs-settings.png"))
        .await;
    alice.click("#reveal-key").await;
    alice
        .wait_js(
            "the key revealed",
            "document.querySelector('#stream-key').type === 'text' && \
             document.querySelector('#stream-key').value.startsWith('phk_')",
            WAIT,
        )
        .await;
    let key = shown_key(&alice).await;

    // OBS's part: publish with the key. The live starts on the site.
    let mut publisher = ClientProcess::whip_publish(&whip, &key, &[]);
    let published = publisher.wait_event("published", WAIT).await;
    assert!(
        published["location"]
            .as_str()
            .unwrap()
            .contains("/whip/session/")
    );
    assert!(published["etag"].is_string());
    publisher.wait_event("connected", WAIT).await;
    assert_eq!(live_usernames(&stack).await, ["alice"]);

    // A viewer finds it on the home page and plays it; a WHEP player plays it too.
    pages::watch_from_home(&bob, &app, "alice").await;
    let mut player = ClientProcess::whep_play(&format!("{}/whep/alice", stack.media_url), 30);
    player.wait_event("playing", WAIT).await;
    let frames = player.wait_event("frames", WAIT).await;
    assert!(
        frames["video"].as_u64().unwrap() >= 30 && frames["audio"].as_u64().unwrap() > 0,
        "{frames}"
    );
    assert_eq!(
        (frames["width"].clone(), frames["height"].clone()),
        (json!(640), json!(360))
    );
    player.wait_event("deleted", WAIT).await;

    // OBS reconnecting after its connection failed: it sends DELETE while connected, then
    // a new POST. The same live goes on; the viewer never sees it end.
    let lives_before: Value = reqwest::get(format!("{app}/api/lives"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delete = reqwest::Client::new()
        .delete(published["location"].as_str().unwrap())
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    publisher.kill().await;
    let mut publisher = ClientProcess::whip_publish(&whip, &key, &[]);
    publisher.wait_event("connected", WAIT).await;
    pages::wait_playing(&bob, WAIT).await;
    let lives_after: Value = reqwest::get(format!("{app}/api/lives"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        lives_after[0]["id"], lives_before[0]["id"],
        "the reconnect started another live"
    );
    let history = bob
        .js("return window.privatehubDebug.history;", vec![])
        .await;
    assert!(
        !history
            .as_array()
            .unwrap()
            .iter()
            .any(|state| state == "ended"),
        "{history}"
    );

    // No picture for a while, sound going on: the viewer is told so, not left stalled,
    // and the picture comes back.
    publisher.signal("USR1");
    wait_state(&bob, "novideo", WAIT).await;
    publisher.signal("USR1");
    wait_state(&bob, "live", WAIT).await;
    bob.wait_rising("decoded frames after the pause", PLAYER_FRAMES, 10.0, WAIT)
        .await;

    // Rotating the key (confirmed on the page) ends the publish and the live at once;
    // the old key is refused.
    alice.js("window.confirm = () => true;", vec![]).await;
    alice.click("#rotate-key").await;
    alice
        .wait_js(
            "a new key on the page",
            &format!("document.querySelector('#stream-key').value.startsWith('phk_') && document.querySelector('#stream-key').value !== {}", json!(key)),
            WAIT,
        )
        .await;
    let new_key = shown_key(&alice).await;
    wait_state(&bob, "ended", WAIT).await;
    assert!(live_usernames(&stack).await.is_empty());
    let old = ClientProcess::whip_publish(&whip, &key, &[]);
    assert_eq!(
        old.exit_code(WAIT).await,
        Some(3),
        "the old key was accepted"
    );
    drop(publisher);

    // With the new key the live comes back; the open page plays it by itself.
    let mut publisher = ClientProcess::whip_publish(&whip, &new_key, &[]);
    publisher.wait_event("connected", WAIT).await;
    pages::wait_playing(&bob, WAIT).await;
    // OBS's "Stop Streaming" (close the connection, then DELETE) ends it for the viewers
    // at once: sooner than the 6 s grace period a reconnect would get.
    let seen = publisher.stop().await;
    assert!(
        seen.iter()
            .any(|line| line.contains("\"deleted\"") && line.contains("200")),
        "{seen:?}"
    );
    wait_state(&bob, "ended", Duration::from_secs(4)).await;

    // A lost connection (no DELETE) ends the live once the grace period is over.
    let mut publisher = ClientProcess::whip_publish(&whip, &new_key, &[]);
    publisher.wait_event("connected", WAIT).await;
    pages::wait_playing(&bob, WAIT).await;
    publisher.kill().await;
    wait_state(&bob, "ended", Duration::from_secs(40)).await;
    assert!(live_usernames(&stack).await.is_empty());
    let health = media_health(&stack).await;
    assert_eq!(health["peers"], 0, "a peer was left behind: {health}");
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_over_whip_plays_in_chromium() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions::default());
    let whip = format!("{}/whip", stack.media_url);
    let alice = account(&stack, "alice").await;
    let key = stream_key(&stack, &alice, false).await;
    let driver = ChromeDriver::start().await;
    let bob = Browser::open(&driver, "bob (viewer)", &BrowserOptions::default()).await;
    // H.264 (constrained baseline, packetization mode 1: what OBS offers) from aiortc's
    // libx264 encoder.
    let mut publisher = ClientProcess::whip_publish(&whip, &key, &["--codec", "h264"]);
    let published = publisher.wait_event("published", WAIT).await;
    publisher.wait_event("connected", WAIT).await;
    let connected_at = std::time::Instant::now();
    pages::watch(&bob, &stack.app_url, "alice").await;
    let codec = bob
        .js(
            "return window.privatehubDebug.peerConnection().getStats().then(report => { \
               const stats = [...report.values()]; \
               const video = stats.find(s => s.type === 'inbound-rtp' && s.kind === 'video'); \
               return stats.find(s => s.id === video?.codecId)?.mimeType ?? null; });",
            vec![],
        )
        .await;
    assert_eq!(codec, json!("video/H264"));

    // Trickle ICE as simple-whip-client sends it (PATCH, If-Match with the ETag).
    let session = published["location"].as_str().unwrap().to_owned();
    let etag = published["etag"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let patch = |if_match: &str, key: &str, fragment: &str| {
        http.patch(&session)
            .bearer_auth(key)
            .header("Content-Type", "application/trickle-ice-sdpfrag")
            .header("If-Match", if_match)
            .body(fragment.to_owned())
            .send()
    };
    let candidates =
        "a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    assert_eq!(patch(&etag, &key, candidates).await.unwrap().status(), 204);
    assert_eq!(
        patch("\"stale\"", &key, candidates).await.unwrap().status(),
        412
    );
    let restart = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n";
    assert_eq!(patch("*", &key, restart).await.unwrap().status(), 422);
    assert_eq!(
        patch(&etag, "phk_wrong", candidates)
            .await
            .unwrap()
            .status(),
        401
    );
    let delete = http.delete(&session).send().await.unwrap();
    assert_eq!(delete.status(), 401, "DELETE without the stream key");
    bob.wait_rising("frames still decoded", PLAYER_FRAMES, 10.0, WAIT)
        .await;

    publisher.stop().await;
    let published_for = connected_at.elapsed().as_secs_f64();
    wait_state(&bob, "ended", WAIT).await;
    assert!(live_usernames(&stack).await.is_empty());

    // The live was recorded as fragmented MP4 (H.264 + Opus), and its replay plays and
    // seeks in Chromium.
    let video = finished_video(&stack, "alice").await;
    assert_eq!(video["container"], "mp4");
    let file = tempfile::NamedTempFile::new().unwrap();
    let bytes = reqwest::get(video["url"].as_str().unwrap())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(file.path(), &bytes).unwrap();
    let probe = privatehub_testkit::ffprobe::ffprobe(file.path());
    let duration = probe.duration;
    eprintln!("H.264 over WHIP: ffprobe {probe}, {published_for:.2} s published");
    assert_eq!(probe.video_codec.as_deref(), Some("h264"), "{probe}");
    assert_eq!(probe.audio_codec.as_deref(), Some("opus"), "{probe}");
    assert!(
        (duration - published_for).abs() < 1.5,
        "ffprobe: {duration:.2} s recorded of {published_for:.2} s published"
    );
    bob.goto(&format!(
        "{}/alice/videos/{}",
        stack.app_url,
        video["id"].as_str().unwrap()
    ))
    .await;
    let frames =
        "document.getElementById('replay-video').getVideoPlaybackQuality().totalVideoFrames";
    bob.js("document.getElementById('replay-video').muted = true; document.getElementById('replay-video').play();", vec![]).await;
    bob.wait_rising("replay frames decoded", frames, 10.0, WAIT)
        .await;
    bob.js(
        "const v = document.getElementById('replay-video'); v.currentTime = v.duration / 2;",
        vec![],
    )
    .await;
    bob.wait_js(
        "the seek done",
        "(() => { const v = document.getElementById('replay-video');            return !v.seeking && Math.abs(v.currentTime - v.duration / 2) < 2.5; })()",
        WAIT,
    )
    .await;
    bob.wait_rising("frames decoded after the seek", frames, 10.0, WAIT)
        .await;
    bob.close().await;
}

/// The channel's one recording, once the media server reported it closed.
async fn finished_video(stack: &RunningStack, username: &str) -> Value {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let page = http
            .get(format!("{}/{username}/videos", stack.app_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("/{username}/videos/");
        let id = page.split(&prefix).nth(1).map(|rest| rest[..32].to_owned());
        if let Some(id) = id {
            let video: Value = http
                .get(format!("{}/api/videos/{id}", stack.app_url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if video["state"] == "finished" {
                return video;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished recording of {username}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A WHIP "studio" page on another site: publishes the fake camera with three simulcast
/// layers over WHIP, as a browser-based WHIP client would.
const STUDIO_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>WHIP studio</title>
<script>
window.whip = async (url, key) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: { width: 1280, height: 720, frameRate: 30 } });
  const pc = new RTCPeerConnection();
  pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly' });
  pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', sendEncodings: [
    { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: 'f', maxBitrate: 1500000 } ] });
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === 'complete') done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done();
    setTimeout(done, 3000);
  });
  const response = await fetch(url, { method: 'POST', body: pc.localDescription.sdp,
    headers: { 'Content-Type': 'application/sdp', Authorization: 'Bearer ' + key } });
  const result = { status: response.status, location: response.headers.get('Location'),
    etag: response.headers.get('ETag') };
  if (response.status === 201) {
    await pc.setRemoteDescription({ type: 'answer', sdp: await response.text() });
    window.session = new URL(result.location, url).href;
    window.key = key;
    window.pc = pc;
  }
  return result;
};
window.whipStop = async () => {
  window.pc.close();  // as OBS's "Stop Streaming": the connection first, then DELETE
  return (await fetch(window.session, { method: 'DELETE',
    headers: { Authorization: 'Bearer ' + window.key } })).status;
};
</script>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whip_client_on_another_site_publishes_simulcast() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions::default());
    let whip = format!("{}/whip", stack.media_url);
    let alice = account(&stack, "alice").await;
    let key = stream_key(&stack, &alice, false).await;
    // The studio is served from another origin than the app and the media server.
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("studio.html"), STUDIO_PAGE).unwrap();
    let port = privatehub_testkit::free_tcp_port();
    let _studio_server = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(site.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start python3 -m http.server");
    let studio_url = format!("http://127.0.0.1:{port}/studio.html");
    crate::harness::wait_until("the studio page served", WAIT, || async {
        reqwest::get(&studio_url)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    let driver = ChromeDriver::start().await;
    let options = BrowserOptions::default();
    let (studio, bob) = tokio::join!(
        Browser::open(&driver, "alice's WHIP studio", &options),
        Browser::open(&driver, "bob (viewer)", &options),
    );
    studio.goto(&studio_url).await;
    let result = studio
        .js(
            "return window.whip(arguments[0], arguments[1]);",
            vec![json!(whip), json!(key)],
        )
        .await;
    // CORS lets the page read the status and the headers it needs.
    assert_eq!(result["status"], 201, "{result}");
    assert!(
        result["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("/whip/session/")),
        "{result}"
    );
    assert!(result["etag"].is_string(), "{result}");

    // The viewer gets the layers to choose from, as with the start-live page.
    pages::watch(&bob, &stack.app_url, "alice").await;
    bob.wait_js(
        "three layers offered",
        "(window.privatehubDebug.quality?.layers?.length ?? 0) >= 3",
        Duration::from_secs(20),
    )
    .await;
    let status = studio.js("return window.whipStop();", vec![]).await;
    assert_eq!(status, 200);
    wait_state(&bob, "ended", WAIT).await;
    studio.close().await;
    bob.close().await;
}

/// Reads the wall clock the publisher painted into each presented frame (32 cells of
/// the top strip, `--paint-clock`) and returns `now - painted` in ms for `count` frames.
const READ_PAINTED_CLOCK: &str = r#"
const [count] = arguments;
const video = document.querySelector('#player');
const canvas = document.createElement('canvas');
const context = canvas.getContext('2d', { willReadFrequently: true });
return new Promise((done) => {
  const delays = [];
  const onFrame = (now) => {
    const width = video.videoWidth, height = video.videoHeight;
    canvas.width = width; canvas.height = height;
    context.drawImage(video, 0, 0, width, height);
    const row = context.getImageData(0, Math.floor(height / 16), width, 1).data;
    const cell = Math.floor(width / 32);
    let painted = 0;
    for (let bit = 0; bit < 32; bit++) {
      const i = (bit * cell + Math.floor(cell / 2)) * 4;
      const luma = 0.299 * row[i] + 0.587 * row[i + 1] + 0.114 * row[i + 2];
      if (luma > 128) painted += 2 ** bit;
    }
    const shown = Math.floor(performance.timeOrigin + now) % 2 ** 32;
    delays.push((shown - painted + 2 ** 32) % 2 ** 32);
    if (delays.length < count) video.requestVideoFrameCallback(onFrame);
    else done(delays);
  };
  video.requestVideoFrameCallback(onFrame);
});
"#;

/// Glass-to-glass delay of a WHIP publish as a viewer sees it: aiortc paints the wall
/// clock into its frames, Chromium reads it back from the pixels it presents. A
/// measurement, not a check: run it on an idle machine with release binaries,
/// `cargo test --release -p privatehub-e2e --test browser -- --ignored --nocapture whip_glass`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run by hand on an idle machine (docs/benchmarks.md)"]
async fn whip_glass_to_glass_delay() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions::default());
    let alice = account(&stack, "alice").await;
    let key = stream_key(&stack, &alice, false).await;
    let whip = format!("{}/whip", stack.media_url);
    let mut publisher = ClientProcess::whip_publish(&whip, &key, &["--paint-clock"]);
    publisher.wait_event("connected", WAIT).await;
    let driver = ChromeDriver::start().await;
    let bob = Browser::open(&driver, "bob (viewer)", &BrowserOptions::default()).await;
    pages::watch(&bob, &stack.app_url, "alice").await;
    // Settle, then 10 s of frames.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let delays = bob.js(READ_PAINTED_CLOCK, vec![json!(300)]).await;
    let mut delays: Vec<f64> = delays
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        // A misread cell gives a wild value: keep plausible ones, and say how many.
        .collect();
    let all = delays.len();
    delays.retain(|d| *d < 10_000.0);
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    println!(
        "WHIP glass-to-glass (aiortc 640x360 VP8 -> SFU -> Chromium): {} frames read ({} misread), \
         median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        delays.len(),
        all - delays.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
    assert!(delays.len() > all / 2, "most frames must be readable");
    publisher.stop().await;
    bob.close().await;
}
