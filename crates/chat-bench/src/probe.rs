//! What the tool asks the app over plain HTTP: `/healthz` every 100 ms over a fresh
//! connection, as a monitor would (is the app responsive while thousands of sockets come
//! back at once?), and the app's own delivery histogram from `/metrics`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probe latencies (ms) until `stop` turns true; a probe that fails or takes more than
/// 10 s counts as 10,000 ms.
pub(crate) async fn probe_health(
    app: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = every.tick() => {
                let started = Instant::now();
                let answered = tokio::time::timeout(Duration::from_secs(10), get_health(app)).await;
                latencies.push(match answered {
                    Ok(Ok(())) => started.elapsed().as_secs_f64() * 1000.0,
                    _ => 10_000.0,
                });
            }
        }
    }
    latencies
}

async fn get_health(app: SocketAddr) -> anyhow::Result<()> {
    get(app, "/healthz").await.map(|_| ())
}

/// `GET path`; the body of a `200`.
async fn get(app: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(app).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {app}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    anyhow::ensure!(
        response.starts_with(b"HTTP/1.1 200"),
        "{path} did not answer 200"
    );
    let text = String::from_utf8_lossy(&response);
    Ok(text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned())
}

/// The app's `app_chat_delivery_seconds` buckets now: (upper bound, cumulative count),
/// `+Inf` last. Empty if `/metrics` cannot be read.
pub(crate) async fn delivery_histogram(app: SocketAddr) -> Vec<(f64, u64)> {
    let Ok(metrics) = get(app, "/metrics").await else {
        return Vec::new();
    };
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("app_chat_delivery_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}
