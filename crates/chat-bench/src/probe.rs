//! `/healthz` every 100 ms over a fresh connection, as a monitor would: whether the app
//! stays responsive while thousands of sockets come back at once.

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
    let mut stream = TcpStream::connect(app).await?;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {app}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    anyhow::ensure!(
        response.starts_with(b"HTTP/1.1 200"),
        "healthz did not answer 200"
    );
    Ok(())
}
