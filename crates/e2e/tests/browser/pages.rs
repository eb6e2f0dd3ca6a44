//! What a PrivateHub user does in the browser: sign up, go live, watch, chat. The element
//! ids used here are the pages' contract with these tests (see templates/live.html and
//! templates/start_live.html in crates/app).

use std::time::Duration;

use serde_json::json;

use crate::harness::Browser;

pub const PASSWORD: &str = "correct horse battery staple";

/// The player's state element; `data-state` is offline|connecting|live|stalled|ended.
pub const LIVE_STATUS: &str = "document.querySelector('#live-status')?.dataset.state";

/// Signs up `username` through the app's JSON API from a page of the app, so the session
/// cookie lands in this browser.
pub async fn sign_up(browser: &Browser, app_url: &str, username: &str) {
    browser.goto(&format!("{app_url}/signup")).await;
    let status = browser
        .js(
            "return fetch('/api/auth/signup', {method: 'POST', credentials: 'same-origin', \
             headers: {'content-type': 'application/json'}, \
             body: JSON.stringify({username: arguments[0], password: arguments[1]})}) \
             .then(async r => r.status + ' ' + await r.text());",
            vec![json!(username), json!(PASSWORD)],
        )
        .await;
    let status = status.as_str().unwrap_or_default().to_owned();
    assert!(
        status.starts_with("200") || status.starts_with("201"),
        "{}: sign up as {username} failed: {status}",
        browser.name
    );
}

/// Opens the start-live page, waits for the camera preview, sets a title and goes live.
pub async fn go_live(browser: &Browser, app_url: &str, username: &str, title: &str) {
    browser
        .goto(&format!("{app_url}/{username}/start-live"))
        .await;
    browser
        .wait_js(
            "camera preview",
            "document.querySelector('#preview')?.videoWidth > 0",
            Duration::from_secs(15),
        )
        .await;
    browser.type_into("#live-title", title).await;
    browser.click("#go-live").await;
    browser
        .wait_js(
            "broadcast is live",
            &format!("{LIVE_STATUS} === 'live'"),
            Duration::from_secs(20),
        )
        .await;
}

pub async fn end_live(browser: &Browser) {
    browser.click("#end-live").await;
    browser
        .wait_js(
            "broadcast ended",
            &format!("{LIVE_STATUS} === 'ended'"),
            Duration::from_secs(10),
        )
        .await;
}

/// Total decoded frames of the player (or preview) `<video>`.
pub const PLAYER_FRAMES: &str =
    "document.querySelector('#player')?.getVideoPlaybackQuality().totalVideoFrames";

/// Audio RTP packets received so far, from the player's peer connection stats.
pub const AUDIO_PACKETS: &str = "window.privatehubDebug?.inboundAudioPackets()";

/// Opens `channel`'s live page and waits until video is decoding and audio arrives.
pub async fn watch(browser: &Browser, app_url: &str, channel: &str) {
    browser.goto(&format!("{app_url}/{channel}/live")).await;
    wait_playing(browser, Duration::from_secs(20)).await;
}

/// Opens the home page, finds `channel` in the list of who is live and follows the link.
pub async fn watch_from_home(browser: &Browser, app_url: &str, channel: &str) {
    browser.goto(&format!("{app_url}/")).await;
    let link = format!("a[href=\"/{channel}/live\"]");
    browser
        .wait_js(
            &format!("{channel} listed as live on the home page"),
            &format!("document.querySelector({}) !== null", json!(link)),
            Duration::from_secs(5),
        )
        .await;
    browser.click(&link).await;
    wait_playing(browser, Duration::from_secs(20)).await;
}

/// Waits until the player shows live video (frames rising) with a live audio track
/// whose packets keep arriving.
pub async fn wait_playing(browser: &Browser, timeout: Duration) {
    browser
        .wait_js(
            "player state live",
            &format!("{LIVE_STATUS} === 'live'"),
            timeout,
        )
        .await;
    browser
        .wait_js(
            "decoded video",
            "document.querySelector('#player')?.videoWidth > 0",
            timeout,
        )
        .await;
    browser
        .wait_rising("decoded frames", PLAYER_FRAMES, 10.0, timeout)
        .await;
    browser
        .wait_js(
            "a live audio track",
            "document.querySelector('#player')?.srcObject?.getAudioTracks().some(t => t.readyState === 'live')",
            timeout,
        )
        .await;
    browser
        .wait_rising("audio packets", AUDIO_PACKETS, 20.0, timeout)
        .await;
}

/// Sends a chat message from the page's chat form.
pub async fn send_chat(browser: &Browser, text: &str) {
    browser.type_into("#chat-input", text).await;
    browser.click("#chat-send").await;
}

/// Waits until a chat line with exactly `text` is shown.
pub async fn wait_chat_line(browser: &Browser, text: &str) {
    browser
        .wait_js(
            &format!("chat line {text:?}"),
            &format!(
                "[...document.querySelectorAll('#chat-log .chat-text')].some(e => e.textContent === {})",
                json!(text)
            ),
            Duration::from_secs(5),
        )
        .await;
}

/// Waits until the viewer count shown is `count`.
pub async fn wait_viewers(browser: &Browser, count: u32) {
    browser
        .wait_js(
            &format!("viewer count {count}"),
            &format!("document.querySelector('#viewer-count')?.dataset.count === '{count}'"),
            Duration::from_secs(5),
        )
        .await;
}
