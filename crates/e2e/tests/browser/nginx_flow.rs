//! The same browser flow through the shipped nginx configuration over HTTPS (the
//! testkit's self-signed front): pages, the app's WebSocket and the media server's
//! signaling all go through nginx, with exact origins checked on both services.

use std::time::{Duration, Instant};

use privatehub_testkit::StackOptions;
use privatehub_testkit::nginx::NginxFront;

use crate::harness::{Browser, BrowserOptions, ChromeDriver, artifact_path, wait_until};
use crate::pages::{self, LIVE_STATUS};
use crate::whip_clients::ClientProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_through_nginx_over_https() {
    let _guard = crate::exclusive().await;
    let started = Instant::now();
    let (stack, front) = NginxFront::start_stack(StackOptions::default());
    let app = front.app_url.clone();
    assert!(app.starts_with("https://"), "nginx front URL: {app}");
    let driver = ChromeDriver::start().await;
    let mut extra_args = front.chromium_args();
    extra_args.push("--ignore-certificate-errors".into());
    let options = BrowserOptions {
        extra_args,
        ..BrowserOptions::default()
    };

    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster, https)", &options),
        Browser::open(&driver, "bob (viewer, https)", &options),
    );
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Through nginx").await;
    pages::sign_up(&bob, &app, "bob").await;
    pages::watch(&bob, &app, "alice").await;
    pages::wait_viewers(&alice, 1).await;
    println!(
        "[{:?}] bob plays alice's live through nginx",
        started.elapsed()
    );

    pages::send_chat(&bob, "hello over https").await;
    pages::wait_chat_line(&alice, "hello over https").await;
    bob.screenshot(&[artifact_path("live-https.png")]).await;

    pages::end_live(&alice).await;
    bob.wait_js(
        "ended state",
        &format!("{LIVE_STATUS} === 'ended'"),
        Duration::from_secs(5),
    )
    .await;
    println!("[{:?}] ended through nginx", started.elapsed());

    // OBS's way in, through the shipped site: WHIP with the stream key from the app.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let login = http
        .post(format!("{app}/api/auth/login"))
        .header("Origin", &app)
        .json(&serde_json::json!({"username": "alice", "password": pages::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let key: serde_json::Value = http
        .get(format!("{app}/api/me/stream-key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let whip_url = key["whip_url"].as_str().unwrap().to_owned();
    assert_eq!(whip_url, format!("{}/whip", front.media_url));
    let stream_key = key["stream_key"].as_str().unwrap().to_owned();
    // The internal APIs are not published.
    for url in [
        format!("{app}/internal/v1/whip/authorize"),
        format!("{}/internal/v1/publishers/end", front.media_url),
    ] {
        let response = http
            .post(&url)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{url}");
    }
    let mut publisher = ClientProcess::whip_publish(&whip_url, &stream_key, &["--insecure"]);
    publisher
        .wait_event("connected", Duration::from_secs(30))
        .await;
    pages::wait_playing(&bob, Duration::from_secs(30)).await;
    publisher.stop().await;
    bob.wait_js(
        "ended after the WHIP publish",
        &format!("{LIVE_STATUS} === 'ended'"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !front.access_log().contains(&stream_key["phk_".len()..]),
        "nginx logged the stream key"
    );
    println!("[{:?}] WHIP through nginx", started.elapsed());
    for browser in [alice, bob] {
        browser.close().await;
    }
    // nginx logs a WebSocket when it closes. Each browser had an app socket and a
    // media signaling socket (both `GET /ws`, on the two sites): four at least.
    wait_until(
        "nginx to log four WebSockets",
        Duration::from_secs(5),
        || async { front.access_log().matches("GET /ws ").count() >= 4 },
    )
    .await;
    drop(front);
    drop(stack);
}
