//! Two app instances on PostgreSQL and Redis behind the shipped nginx site (an upstream
//! per instance): going live, watching and chatting in real Chromium pass through them,
//! sockets on one instance hear what is said on the other, the viewer count is over
//! both, and killing an instance drops its viewers from the count while the pages on it
//! reconnect to the other without a reload, and the media server's reports go to the
//! instance left.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use privatehub_testkit::cluster::ClusterStack;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{Browser, BrowserOptions, ChromeDriver};
use crate::pages;

/// An anonymous chat socket straight to one instance (as nginx would forward it, with
/// the client address in `X-Forwarded-For`).
struct RawSocket {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawSocket {
    async fn join(instance_url: &str, origin: &str, client_address: &str, channel: &str) -> Self {
        let url = format!("{}/ws", instance_url.replacen("http", "ws", 1));
        let mut request = url.into_client_request().expect("request");
        let headers = request.headers_mut();
        headers.insert("Origin", origin.parse().expect("origin"));
        headers.insert("X-Forwarded-For", client_address.parse().expect("address"));
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("socket to an instance");
        let mut socket = RawSocket { ws };
        socket
            .ws
            .send(Message::text(
                json!({"type": "live:join", "channel": channel}).to_string(),
            ))
            .await
            .expect("join");
        socket
            .wait_for("chat:history", Duration::from_secs(10))
            .await;
        socket
    }

    /// The next message for which `wanted` holds, or `None` after `within`.
    async fn next(&mut self, within: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        tokio::time::timeout(within, async {
            while let Some(Ok(frame)) = self.ws.next().await {
                if let Message::Text(text) = frame
                    && let Ok(message) = serde_json::from_str::<Value>(text.as_str())
                    && wanted(&message)
                {
                    return Some(message);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    async fn wait_for(&mut self, kind: &str, within: Duration) -> Value {
        self.next(within, |message| message["type"] == kind)
            .await
            .unwrap_or_else(|| panic!("no {kind} within {within:?}"))
    }

    async fn wait_count(&mut self, count: u64, within: Duration) {
        let wanted =
            |message: &Value| message["type"] == "live:viewers" && message["count"] == count;
        assert!(
            self.next(within, wanted).await.is_some(),
            "the viewer count never became {count}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_app_instances_behind_nginx_share_chat_and_counts_and_survive_one_dying() {
    let _guard = crate::exclusive().await;
    let started = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(|| ClusterStack::start(2))
        .await
        .expect("cluster");
    let app = cluster.front.app_url.clone();
    // The media server calls the first instance while it answers: that one is killed.
    let (doomed_url, survivor_url) = (cluster.app_urls[0].clone(), cluster.app_urls[1].clone());
    println!("[{:?}] two instances behind nginx", started.elapsed());

    let driver = ChromeDriver::start().await;
    let mut extra_args = cluster.front.chromium_args();
    extra_args.push("--ignore-certificate-errors".into());
    let options = BrowserOptions {
        extra_args,
        ..BrowserOptions::default()
    };
    let (alice, bob) = tokio::join!(
        Browser::open(&driver, "alice (broadcaster, two instances)", &options),
        Browser::open(&driver, "bob (viewer, two instances)", &options),
    );
    // nginx spreads the requests of one page over both instances: the session cookie,
    // CSRF check and media token must hold on whichever answers.
    pages::sign_up(&alice, &app, "alice").await;
    pages::go_live(&alice, &app, "alice", "Two instances").await;
    pages::sign_up(&bob, &app, "bob").await;
    pages::watch(&bob, &app, "alice").await;
    pages::wait_playing(&bob, Duration::from_secs(30)).await;
    pages::wait_viewers(&alice, 1).await;
    println!("[{:?}] bob plays alice's live", started.elapsed());

    // Sockets straight to each instance: what bob says reaches both, whichever
    // instance his page's socket is on.
    let mut reader = RawSocket::join(&survivor_url, &app, "127.0.0.21", "alice").await;
    let mut viewer_on_doomed = RawSocket::join(&doomed_url, &app, "127.0.0.22", "alice").await;
    let _other_on_doomed = RawSocket::join(&doomed_url, &app, "127.0.0.23", "alice").await;
    // bob, the reader and the two viewers on the other instance.
    reader.wait_count(4, Duration::from_secs(10)).await;
    pages::wait_viewers(&alice, 4).await;

    pages::send_chat(&bob, "hello both instances").await;
    pages::wait_chat_line(&alice, "hello both instances").await;
    for socket in [&mut reader, &mut viewer_on_doomed] {
        let message = socket
            .wait_for("chat:message", Duration::from_secs(5))
            .await;
        assert_eq!(message["message"]["text"], "hello both instances");
    }
    println!(
        "[{:?}] chat and count over both instances",
        started.elapsed()
    );

    // The first instance dies. Its two raw viewers are gone; pages whose socket was on
    // it reconnect through nginx to the other, without reloading.
    for browser in [&alice, &bob] {
        browser.js("window.beforeTheKill = true;", vec![]).await;
    }
    let killed_at = Instant::now();
    cluster.apps[0].kill();
    reader.wait_count(2, Duration::from_secs(20)).await;
    println!(
        "[{:?}] an instance killed: its viewers left the count after {:?}",
        started.elapsed(),
        killed_at.elapsed()
    );
    pages::wait_viewers(&alice, 2).await;
    pages::send_chat(&bob, "still here").await;
    pages::wait_chat_line(&alice, "still here").await;
    let message = reader
        .wait_for("chat:message", Duration::from_secs(10))
        .await;
    assert_eq!(message["message"]["text"], "still here");
    for browser in [&alice, &bob] {
        assert_eq!(
            browser
                .js("return window.beforeTheKill === true;", vec![])
                .await,
            json!(true),
            "{} reloaded",
            browser.name
        );
    }
    pages::wait_playing(&bob, Duration::from_secs(10)).await;
    println!(
        "[{:?}] the pages went on without a reload",
        started.elapsed()
    );

    // The live ends; the media server closes its recording and reports it finished to
    // the instance left (the one it called before is gone).
    pages::end_live(&alice).await;
    let id = crate::replay::wait_listed_video(&survivor_url, "alice").await;
    let video = crate::replay::wait_finished(&survivor_url, &id).await;
    println!(
        "[{:?}] the recording was reported finished to the instance left: {}",
        started.elapsed(),
        video["duration_ms"]
    );
    for browser in [alice, bob] {
        browser.close().await;
    }
}
