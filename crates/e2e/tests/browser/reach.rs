//! Viewers (and a broadcaster) whose network blocks UDP: they watch and publish over
//! ICE-TCP straight to the media server, or through the site's TURN relay (a real coturn from the shipped
//! configuration) when the media server's TCP port is off too; a relay that refuses the
//! credentials leaves the page saying it cannot connect.

use std::time::Duration;

use privatehub_test_connection::turn;
use privatehub_testkit::coturn::TurnServer;
use privatehub_testkit::{StackOptions, free_tcp_port, start_stack};
use serde_json::Value;

use crate::harness::{Browser, BrowserOptions, ChromeDriver};
use crate::pages::{self, LIVE_STATUS};
use crate::whip_clients::ClientProcess;

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

/// An anonymous viewer's media token for alice's live, as the page fetches it.
async fn watch_token(app: &str) -> Value {
    reqwest::Client::new()
        .post(format!("{app}/api/lives/alice/token"))
        .header("origin", app)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json")
}

/// The `media_connections_total` lines of the media server's metrics.
async fn media_connection_counts(media_url: &str) -> String {
    let metrics = reqwest::get(format!("{media_url}/metrics"))
        .await
        .expect("media metrics")
        .text()
        .await
        .expect("metrics body");
    metrics
        .lines()
        .filter(|line| line.starts_with("media_connections_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Opens the player's Stats overlay and waits until it names the connection's path.
async fn wait_stats_path(viewer: &Browser, path: &str) {
    viewer.click("#stats-toggle").await;
    viewer
        .wait_js(
            &format!("the stats overlay showing the path {path}"),
            &format!(
                "document.querySelector('#stats-overlay').textContent.includes({})",
                serde_json::json!(format!("path      {path}"))
            ),
            Duration::from_secs(5),
        )
        .await;
}

async fn selected_pair(viewer: &Browser) -> Value {
    viewer.js(&format!("return {SELECTED_PAIR};"), vec![]).await
}

/// Alice goes live with `title` (from a browser that may not use UDP either when
/// `broadcaster_without_udp`); Bob's browser may not use UDP.
async fn live_and_viewer_without_udp(
    app: &str,
    title: &str,
    broadcaster_without_udp: bool,
) -> (ChromeDriver, Browser, Browser) {
    let driver = ChromeDriver::start().await;
    let broadcaster_options = if broadcaster_without_udp {
        BrowserOptions::without_udp()
    } else {
        BrowserOptions::default()
    };
    let viewer_options = BrowserOptions::without_udp();
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster)", &broadcaster_options),
        Browser::open(&driver, "bob (viewer, no UDP)", &viewer_options),
    );
    pages::sign_up(&alice, app, "alice").await;
    pages::go_live(&alice, app, "alice", title).await;
    (driver, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_udp_watches_over_ice_tcp() {
    let _guard = crate::exclusive().await;
    let stack = start_stack(StackOptions {
        media_env: vec![("MEDIA_RTC_TCP_PORT".into(), free_tcp_port().to_string())],
        ..StackOptions::default()
    });
    let app = stack.app_url.clone();
    let (_driver, alice, bob) = live_and_viewer_without_udp(&app, "Over TCP", true).await;
    pages::watch(&bob, &app, "alice").await;
    let pair = selected_pair(&bob).await;
    assert_eq!(pair["localProtocol"], "tcp", "selected pair: {pair}");
    assert_eq!(pair["remoteProtocol"], "tcp", "selected pair: {pair}");
    assert_eq!(
        pair["remoteType"], "host",
        "the media server's own candidate: {pair}"
    );
    assert_ne!(pair["localType"], "relay", "no relay is configured: {pair}");
    wait_stats_path(&bob, "direct TCP").await;
    // The broadcaster behind the same kind of network publishes over ICE-TCP too.
    let published = selected_pair(&alice).await;
    assert_eq!(
        published["localProtocol"], "tcp",
        "broadcaster's pair: {published}"
    );
    let connections = media_connection_counts(&stack.media_url).await;
    assert!(
        connections.contains("media_connections_total{transport=\"tcp\"} 2"),
        "the broadcaster's and the viewer's TCP connections counted:\n{connections}"
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
    let (_driver, alice, bob) = live_and_viewer_without_udp(&app, "Through the relay", false).await;

    // The token response carries the relay with a credential minted for it.
    let token = watch_token(&app).await;
    let servers = &token["ice_servers"];
    assert_eq!(servers[0]["urls"][0], turn_url.as_str(), "{token}");
    let username = servers[0]["username"].as_str().expect("a TURN username");
    assert!(username.contains(":watch-live"), "{username}");

    pages::watch(&bob, &app, "alice").await;
    let pair = selected_pair(&bob).await;
    assert_eq!(pair["localType"], "relay", "selected pair: {pair}");
    assert_eq!(pair["relayProtocol"], "tcp", "selected pair: {pair}");
    wait_stats_path(&bob, "relay (TURN over TCP)").await;
    let log = turn.log();
    assert!(
        log.contains("ALLOCATE") || log.contains("allocate"),
        "coturn saw an allocation:\n{}",
        turn.log_tail(30)
    );
    // The media server knows the peer came through a relay.
    let connections = media_connection_counts(&stack.media_url).await;
    assert!(
        connections.contains("media_connections_total{transport=\"relay\"} 1"),
        "the relayed viewer is counted as relay:\n{connections}"
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
    // It is coturn refusing what the app hands out, not the page giving up early: the
    // credential of a fresh token is refused with 401 on its authenticated request.
    let token = watch_token(&app).await;
    let server = &token["ice_servers"][0];
    let url = turn::TurnUrl::parse(server["urls"][0].as_str().unwrap()).unwrap();
    let outcome = turn::allocate(
        &url,
        server["username"].as_str().unwrap(),
        server["credential"].as_str().unwrap(),
        false,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(outcome, turn::AllocateOutcome::Refused { code: 401, .. }),
        "the refusing relay accepted the app's credential: {outcome:?}\n{}",
        refusing.log_tail(20)
    );
    alice.close().await;
    bob.close().await;
}

/// `Link: <url>; rel="ice-server"; username="..."; credential="..."` as
/// (url, username, credential).
fn ice_server_link(link: &str) -> (String, String, String) {
    let url = link
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map(|(url, _)| url.to_owned())
        .unwrap_or_else(|| panic!("no <url> in {link}"));
    assert!(link.contains("rel=\"ice-server\""), "{link}");
    let parameter = |name: &str| {
        link.split(';')
            .map(str::trim)
            .find_map(|part| part.strip_prefix(&format!("{name}=\"")))
            .and_then(|value| value.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {name} in {link}"))
            .to_owned()
    };
    assert_eq!(parameter("credential-type"), "password", "{link}");
    (url, parameter("username"), parameter("credential"))
}

/// OBS and WHEP players learn the relay from the `201`'s `Link` headers: every
/// announced credential really allocates on coturn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_answers_announce_the_relay_with_working_credentials() {
    let _guard = crate::exclusive().await;
    let secret = "turn-test-secret-for-link-headers-01";
    let turn = TurnServer::start(secret);
    let turn_urls = format!(
        "turn:127.0.0.1:{port}?transport=udp,turn:127.0.0.1:{port}?transport=tcp",
        port = turn.port
    );
    let turn_env = vec![
        ("TURN_URLS".to_owned(), turn_urls),
        ("TURN_SECRET".to_owned(), secret.to_owned()),
    ];
    let stack = start_stack(StackOptions {
        app_env: turn_env.clone(),
        media_env: turn_env,
        ..StackOptions::default()
    });
    let creator = crate::whip::account(&stack, "olga").await;
    let key = crate::whip::stream_key(&stack, &creator, false).await;
    let mut publisher =
        ClientProcess::whip_publish(&format!("{}/whip", stack.media_url), &key, &[]);
    let published = publisher
        .wait_event("published", Duration::from_secs(30))
        .await;
    publisher
        .wait_event("connected", Duration::from_secs(30))
        .await;
    let mut player = ClientProcess::whep_play(&format!("{}/whep/olga", stack.media_url), 10);
    let playing = player.wait_event("playing", Duration::from_secs(30)).await;
    for (answer, label) in [(&published, ":whip-live"), (&playing, ":whep-live")] {
        let links: Vec<&str> = answer["link"]
            .as_array()
            .expect("link headers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(links.len(), 2, "one Link per TURN URL: {answer}");
        for link in links {
            let (url, username, credential) = ice_server_link(link);
            assert!(username.contains(label), "{username}");
            let parsed = turn::TurnUrl::parse(&url).unwrap_or_else(|| panic!("{url}"));
            let outcome = turn::allocate(
                &parsed,
                &username,
                &credential,
                false,
                Duration::from_secs(5),
            )
            .await;
            assert!(
                matches!(outcome, turn::AllocateOutcome::Relayed { .. }),
                "{url} with the announced credential: {outcome:?}\n{}",
                turn.log_tail(20)
            );
        }
    }
    player.wait_event("frames", Duration::from_secs(30)).await;
}
