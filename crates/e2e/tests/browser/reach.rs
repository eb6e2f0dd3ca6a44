//! Viewers whose network blocks UDP: they watch over ICE-TCP straight to the media
//! server, or through the site's TURN relay (a real coturn from the shipped
//! configuration) when the media server's TCP port is off too; a relay that refuses the
//! credentials leaves the page saying it cannot connect.

use std::time::Duration;

use privatehub_testkit::coturn::TurnServer;
use privatehub_testkit::{StackOptions, free_tcp_port, start_stack};
use serde_json::Value;

use crate::harness::{Browser, BrowserOptions, ChromeDriver};
use crate::pages::{self, LIVE_STATUS};

/// The local and remote candidates of the viewer's selected pair, from `getStats`.
const SELECTED_PAIR: &str = "(async () => {
    const pc = window.privatehubDebug?.peerConnection();
    if (!pc) return null;
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((report) => {
        if (report.type === 'transport' && report.selectedCandidatePairId) {
            pair = stats.get(report.selectedCandidatePairId);
        }
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
        state: pair.state,
        localType: local?.candidateType,
        localProtocol: local?.protocol,
        relayProtocol: local?.relayProtocol ?? null,
        remoteType: remote?.candidateType,
        remoteProtocol: remote?.protocol,
    };
})()";

async fn selected_pair(viewer: &Browser) -> Value {
    viewer.js(&format!("return {SELECTED_PAIR};"), vec![]).await
}

async fn open_broadcaster_and_viewer_without_udp(driver: &ChromeDriver) -> (Browser, Browser) {
    let (broadcaster_options, viewer_options) =
        (BrowserOptions::default(), BrowserOptions::without_udp());
    tokio::join!(
        Browser::open(driver, "alice (broadcaster)", &broadcaster_options),
        Browser::open(driver, "bob (viewer, no UDP)", &viewer_options),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_udp_watches_over_ice_tcp() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions {
        media_env: vec![("MEDIA_RTC_TCP_PORT".into(), free_tcp_port().to_string())],
        ..StackOptions::default()
    });
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let (alice, bob) = open_broadcaster_and_viewer_without_udp(&driver).await;
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Over TCP").await;
    pages::watch(&bob, &app, "alice").await;
    let pair = selected_pair(&bob).await;
    assert_eq!(pair["localProtocol"], "tcp", "selected pair: {pair}");
    assert_eq!(pair["remoteProtocol"], "tcp", "selected pair: {pair}");
    assert_eq!(
        pair["remoteType"], "host",
        "the media server's own candidate: {pair}"
    );
    assert_ne!(pair["localType"], "relay", "no relay is configured: {pair}");
    let metrics = reqwest::get(format!("{}/metrics", stack.media_url))
        .await
        .expect("media metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("media_connections_total{transport=\"tcp\"} 1"),
        "one TCP connection counted:\n{}",
        metrics
            .lines()
            .filter(|line| line.starts_with("media_connections_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_udp_watches_through_turn_and_is_told_when_turn_refuses() {
    let _guard = crate::exclusive().await;
    let secret = "turn-test-secret-0123456789abcdef";
    let turn = TurnServer::start(secret);
    // TCP only, as a browser behind a UDP-blocking firewall reaches the relay.
    let turn_url = format!("turn:127.0.0.1:{}?transport=tcp", turn.port);
    let stack = start_stack(StackOptions {
        app_env: vec![
            ("TURN_URLS".into(), turn_url.clone()),
            ("TURN_SECRET".into(), secret.into()),
        ],
        // The media server's ICE-TCP port stays off (testkit's default): the relay is
        // the only way in for this viewer.
        ..StackOptions::default()
    });
    let app = stack.app_url.clone();
    let driver = ChromeDriver::start().await;
    let (alice, bob) = open_broadcaster_and_viewer_without_udp(&driver).await;
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Through the relay").await;

    // The token response carries the relay with a credential minted for it.
    let token: Value = reqwest::Client::new()
        .post(format!("{app}/api/lives/alice/token"))
        .header("origin", &app)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    let servers = &token["ice_servers"];
    assert_eq!(servers[0]["urls"][0], turn_url.as_str(), "{token}");
    let username = servers[0]["username"].as_str().expect("a TURN username");
    assert!(username.contains(":watch-live"), "{username}");

    pages::watch(&bob, &app, "alice").await;
    let pair = selected_pair(&bob).await;
    assert_eq!(pair["localType"], "relay", "selected pair: {pair}");
    assert_eq!(pair["relayProtocol"], "tcp", "selected pair: {pair}");
    let log = turn.log();
    assert!(
        log.contains("ALLOCATE") || log.contains("allocate"),
        "coturn saw an allocation:\n{}",
        turn.log_tail(30)
    );

    // The relay is replaced by one with another secret: the app's credentials are now
    // wrong, coturn refuses them, and the page says it cannot connect (and keeps trying).
    let port = turn.stop();
    let refusing = TurnServer::start_on(port, "another-secret-0123456789abcdef");
    bob.js("location.reload();", vec![]).await;
    bob.wait_js(
        "the page says it cannot connect",
        &format!("{LIVE_STATUS} === 'unreachable'"),
        Duration::from_secs(30),
    )
    .await;
    let overlay = bob
        .js(
            "return document.querySelector('#player-overlay-text').textContent;",
            vec![],
        )
        .await;
    assert!(
        overlay.as_str().unwrap_or("").contains("Cannot connect"),
        "overlay: {overlay}"
    );
    let refused = refusing.log();
    assert!(
        refused.contains("401") || refused.to_lowercase().contains("unauthorized"),
        "coturn refused the credential:\n{}",
        refusing.log_tail(30)
    );
    alice.close().await;
    bob.close().await;
}
