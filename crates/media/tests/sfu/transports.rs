//! How peers reach the server: one UDP port shared by every worker, ICE-TCP, and what
//! the TCP listener does with connections that are not ICE.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use privatehub_media::MediaSettings;
use privatehub_media::config::RtcUdpPorts;
use privatehub_protocol::MediaRole;

use crate::bot::{Bot, BotRole, BotTransport};
use crate::helpers::{SECRET, Ws, get_text, metric, spawn_server_with, token, wait_for_empty};

async fn metric_now(http: SocketAddr, name: &str) -> f64 {
    metric(&get_text(http, "/metrics").await, name)
}

/// Waits until the metric's value satisfies `wanted` (described by `what`).
async fn wait_for_metric(
    http: SocketAddr,
    name: &str,
    what: &str,
    wanted: impl Fn(f64) -> bool,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let value = metric_now(http, name).await;
        if wanted(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, want {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn video_grows(bot: &Bot, what: &str) {
    let before = bot.stats().video_frames;
    bot.wait_for(what, Duration::from_secs(10), |s| {
        s.video_frames > before + 10
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_udp_port_serves_viewers_on_every_worker() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 0, 3);
    settings.rtc_udp = RtcUdpPorts::Shared(0);
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    assert_eq!(server.rtc_ports.len(), 1, "one port for three workers");
    let health: serde_json::Value =
        serde_json::from_str(&get_text(http, "/healthz").await).unwrap();
    assert_eq!(health["rtc_port_mode"], "shared");
    assert_eq!(health["rtc_ports"], serde_json::json!(server.rtc_ports));

    let publisher = Bot::start(
        http,
        &token(40, MediaRole::Publish),
        BotRole::Publisher { tag: 4 },
    )
    .await;
    publisher
        .wait_for("publisher connected", Duration::from_secs(10), |s| {
            s.connected_at.is_some()
        })
        .await;
    let mut viewers = Vec::new();
    for _ in 0..12 {
        viewers.push(Bot::start(http, &token(40, MediaRole::Watch), BotRole::Viewer).await);
    }
    for viewer in &viewers {
        viewer
            .wait_for("video on the shared port", Duration::from_secs(15), |s| {
                s.video_frames > 10 && s.last_video_tag == Some(4)
            })
            .await;
        assert_eq!(
            viewer.stats().server_addr.map(|a| a.port()),
            Some(server.rtc_ports[0])
        );
    }
    // Thirteen peers over three workers: the kernel's hash put some sources on
    // another worker's socket, and their datagrams were passed on.
    let metrics = get_text(http, "/metrics").await;
    assert!(
        metric(&metrics, "media_datagrams_passed_between_workers_total") > 0.0,
        "no datagram crossed workers"
    );
    assert_eq!(
        metric(&metrics, "media_connections_total{transport=\"udp\"}"),
        13.0
    );
    assert_eq!(metric(&metrics, "media_channel_drops_total"), 0.0);
    drop(viewers);
    drop(publisher);
    wait_for_empty(&server, Duration::from_secs(30)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_connect_over_ice_tcp() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42120, 2);
    settings.rtc_tcp_port = Some(0);
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    let tcp = SocketAddr::from(([127, 0, 0, 1], server.rtc_tcp_port.expect("TCP listener")));

    let publisher = Bot::start_over(
        Ws::connect(http, None).await,
        &token(41, MediaRole::Publish),
        BotRole::Publisher { tag: 5 },
        BotTransport::Tcp(tcp),
    )
    .await;
    let mut viewers = Vec::new();
    for transport in [
        BotTransport::Tcp(tcp),
        BotTransport::Tcp(tcp),
        BotTransport::Udp,
    ] {
        viewers.push(
            Bot::start_over(
                Ws::connect(http, None).await,
                &token(41, MediaRole::Watch),
                BotRole::Viewer,
                transport,
            )
            .await,
        );
    }
    for viewer in &viewers {
        viewer
            .wait_for("video from a TCP publisher", Duration::from_secs(15), |s| {
                s.video_frames > 10 && s.last_video_tag == Some(5)
            })
            .await;
    }
    let metrics = get_text(http, "/metrics").await;
    assert_eq!(
        metric(&metrics, "media_connections_total{transport=\"tcp\"}"),
        3.0
    );
    assert_eq!(
        metric(&metrics, "media_connections_total{transport=\"udp\"}"),
        1.0
    );
    assert_eq!(metric(&metrics, "media_tcp_connections"), 3.0);
    drop(viewers);
    drop(publisher);
    wait_for_empty(&server, Duration::from_secs(30)).await;
    wait_for_metric(
        http,
        "media_tcp_connections",
        "0",
        |v| v <= 0.0,
        Duration::from_secs(40),
    )
    .await;
    server.stop().await;
}

/// Whether the server closed the connection (read gives 0 or an error) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_tcp_port_is_refused_and_counted() {
    let _heap = crate::alloc::shared().await;
    let mut settings = MediaSettings::for_tests(SECRET, 42130, 1);
    settings.rtc_tcp_port = Some(0);
    let server = spawn_server_with(settings).await;
    let http = server.http_addr;
    let tcp = SocketAddr::from(([127, 0, 0, 1], server.rtc_tcp_port.unwrap()));
    let _publisher = Bot::start(
        http,
        &token(42, MediaRole::Publish),
        BotRole::Publisher { tag: 6 },
    )
    .await;
    let viewer = Bot::start_over(
        Ws::connect(http, None).await,
        &token(42, MediaRole::Watch),
        BotRole::Viewer,
        BotTransport::Tcp(tcp),
    )
    .await;
    video_grows(&viewer, "video before the abuse").await;

    // A plain STUN binding request is answered on the connection (what
    // scripts/test-connection sends).
    let mut stun = TcpStream::connect(tcp).unwrap();
    let request = crate::stun::binding_request([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    stun.write_all(&[0, 20]).unwrap();
    stun.write_all(&request).unwrap();
    stun.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut header = [0u8; 2];
    stun.read_exact(&mut header).unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(header))];
    stun.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[8..20], &request[8..20], "same transaction");
    assert_eq!(
        crate::stun::decode_xor_mapped(&answer),
        stun.local_addr().unwrap(),
        "the address the server saw"
    );
    drop(stun);

    // A frame that is not STUN, an HTTP request (its first bytes read as a length far
    // above the limit), a length of 65535, and a connection that sends nothing.
    let mut not_ice = TcpStream::connect(tcp).unwrap();
    not_ice.write_all(&[0, 4, 1, 2, 3, 4]).unwrap();
    assert!(closed_within(&mut not_ice, Duration::from_secs(5)));
    let mut http_request = TcpStream::connect(tcp).unwrap();
    http_request
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut http_request, Duration::from_secs(5)));
    let mut oversized = TcpStream::connect(tcp).unwrap();
    oversized.write_all(&[0xff, 0xff, 0, 1, 0, 0]).unwrap();
    assert!(closed_within(&mut oversized, Duration::from_secs(5)));
    let started = Instant::now();
    let mut silent = TcpStream::connect(tcp).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(15)));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a half-open connection is closed"
    );

    // A flood of connections from one address: past the per-address limits, refused.
    let mut flood = Vec::new();
    for _ in 0..60 {
        if let Ok(stream) = TcpStream::connect(tcp) {
            flood.push(stream);
        }
    }
    wait_for_metric(
        http,
        "media_tcp_refused_total{reason=\"per_address_limit\"}",
        "at least 1",
        |v| v >= 1.0,
        Duration::from_secs(5),
    )
    .await;
    video_grows(&viewer, "video during the flood").await;
    drop(flood);

    let metrics = get_text(http, "/metrics").await;
    assert_eq!(
        metric(&metrics, "media_tcp_refused_total{reason=\"not_ice\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "media_tcp_refused_total{reason=\"oversized\"}"),
        2.0
    );
    assert_eq!(
        metric(&metrics, "media_tcp_refused_total{reason=\"idle\"}"),
        1.0
    );
    assert_eq!(metric(&metrics, "media_stun_bindings_answered_total"), 1.0);
    assert_eq!(metric(&metrics, "media_rtc_panics_total"), 0.0);
    video_grows(&viewer, "video after the abuse").await;
    assert_eq!(
        server.counts().1,
        2,
        "the publisher and the viewer, nothing else"
    );
    server.stop().await;
}
