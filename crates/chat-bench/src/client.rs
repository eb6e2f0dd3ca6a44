//! One bench socket: connect, join, receive (and send what the ticker hands it) until
//! the run stops; in a reconnect storm, drop the connection at the signal and come back
//! after its own random delay, as pages do after `server:restarting`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::load::Tally;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// When a storm starts and over how long the sockets come back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Storm {
    pub at: Instant,
    pub spread: Duration,
}

pub(crate) struct Client {
    pub target: SocketAddr,
    pub source: IpAddr,
    pub url: String,
    pub origin: String,
    pub channel: String,
    pub cookie: Option<String>,
    pub commands: mpsc::Receiver<String>,
    pub tally: Arc<Tally>,
    pub live: usize,
    /// Which app instance the socket is on (several-instance runs).
    pub instance: usize,
    pub watches_count: bool,
    pub handshakes: Arc<Semaphore>,
    pub stop: watch::Receiver<bool>,
    pub storm: watch::Receiver<Option<Storm>>,
}

/// What one socket measured.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    /// Delays (µs) of the counted messages it received.
    pub delays_us: Vec<u32>,
    /// Of those, the ones sent through another app instance (through Redis).
    pub cross_instance_delays_us: Vec<u32>,
    /// And the ones sent through the socket's own instance.
    pub same_instance_delays_us: Vec<u32>,
    /// For a sender: from sending to `chat:stored` (µs).
    pub stored_acks_us: Vec<u32>,
}

/// Why a connection's loop ended.
enum Ended {
    Stopped,
    /// The connection failed; `joined`: after its history arrived.
    Lost {
        joined: bool,
    },
    Storm(Storm),
}

pub(crate) async fn client(mut client: Client) -> Measured {
    let mut measured = Measured::default();
    let permit = client.handshakes.clone().acquire_owned().await;
    let connected = connect(&client).await;
    drop(permit);
    let Ok(mut socket) = connected else {
        client.tally.failed.fetch_add(1, Relaxed);
        return measured;
    };
    let mut rejoin_started = None;
    loop {
        match session(&mut client, &mut socket, &mut measured, rejoin_started).await {
            Ended::Stopped => break,
            Ended::Lost { joined } => {
                if !joined {
                    let counter = match rejoin_started {
                        Some(_) => &client.tally.storm_lost,
                        None => &client.tally.failed,
                    };
                    counter.fetch_add(1, Relaxed);
                }
                return measured;
            }
            Ended::Storm(storm) => {
                let _ = socket.close(None).await;
                let delay = storm.spread.mul_f64(rand::random::<f64>());
                tokio::time::sleep_until((storm.at + delay).into()).await;
                rejoin_started = Some(Instant::now());
                match connect(&client).await {
                    Ok(fresh) => socket = fresh,
                    Err(_) => {
                        client.tally.storm_lost.fetch_add(1, Relaxed);
                        return measured;
                    }
                }
            }
        }
    }
    let _ = socket.close(None).await;
    measured
}

/// One connection: join, then read until stopped, lost or a storm.
async fn session(
    client: &mut Client,
    socket: &mut Socket,
    measured: &mut Measured,
    rejoin_started: Option<Instant>,
) -> Ended {
    let join = serde_json::json!({"type": "live:join", "channel": client.channel}).to_string();
    if socket.send(Message::text(join)).await.is_err() {
        return Ended::Lost { joined: false };
    }
    let mut joined = false;
    // A sender's own messages: sequence → sent (µs), then id → sent once shown.
    let mut sent_by_me: HashMap<usize, u64> = HashMap::new();
    let mut shown: HashMap<i64, u64> = HashMap::new();
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    // One waiter on each shared signal for the connection, not one per frame.
    let mut stop = client.stop.clone();
    let stopped = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::pin!(stopped);
    let mut storm_signal = client.storm.clone();
    storm_signal.borrow_and_update();
    let storm = async move {
        loop {
            if storm_signal.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(storm) = *storm_signal.borrow_and_update() {
                return storm;
            }
        }
    };
    tokio::pin!(storm);
    loop {
        tokio::select! {
            _ = &mut stopped => return Ended::Stopped,
            storm = &mut storm => return Ended::Storm(storm),
            frame = socket.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, None | Some(Err(_))) {
                        return Ended::Lost { joined };
                    }
                    continue;
                };
                let text = text.as_str();
                if !joined && text.contains("\"chat:history\"") {
                    joined = true;
                    match rejoin_started {
                        None => {
                            client.tally.joined.fetch_add(1, Relaxed);
                        }
                        Some(started) => client.tally.note_rejoin(started.elapsed()),
                    }
                }
                if text.contains("\"chat:message\"") {
                    let seq = note_delivery(&client.tally, text, client.instance, measured);
                    if let Some(sent) = seq.and_then(|seq| sent_by_me.remove(&seq))
                        && let Some(id) = json_field(text, "message", "id")
                    {
                        shown.insert(id, sent);
                    }
                } else if text.contains("\"chat:stored\"") {
                    if let Some(sent) = json_field(text, "message_id", "").and_then(|id| shown.remove(&id)) {
                        let ack = unix_micros().saturating_sub(sent);
                        measured.stored_acks_us.push(u32::try_from(ack).unwrap_or(u32::MAX));
                    }
                } else if text.contains("\"type\":\"error\"") {
                    client.tally.note_error(text);
                } else if client.watches_count
                    && text.contains("\"live:viewers\"")
                    && let Some(count) = json_field(text, "count", "")
                {
                    client.tally.viewer_counts[client.live]
                        .store(u32::try_from(count).unwrap_or(u32::MAX), Relaxed);
                }
            }
            command = client.commands.recv(), if client.cookie.is_some() => {
                let Some(text) = command else { continue };
                if let Some((seq, sent, _)) = parse_bench_text(&text) {
                    sent_by_me.insert(seq, sent);
                }
                let message = serde_json::json!({"type": "chat:send", "text": text}).to_string();
                if socket.send(Message::text(message)).await.is_err() {
                    return Ended::Lost { joined };
                }
            }
            _ = ping.tick() => {
                let _ = socket.send(Message::text(r#"{"type":"ping"}"#)).await;
            }
        }
    }
}

async fn connect(client: &Client) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(client.source, 0))?;
    let stream = socket.connect(client.target).await?;
    let mut request = client.url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Origin", client.origin.parse()?);
    if let Some(token) = &client.cookie {
        request
            .headers_mut()
            .insert("Cookie", format!("privatehub_session={token}").parse()?);
    }
    // tungstenite zero-fills its whole read buffer on every read: 128 KiB by default,
    // most of this tool's CPU with 10,000 sockets; chat messages are small.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(socket)
}

/// `bench:SEQ:MICROS:INSTANCE` → (seq, sent µs, the sender's app instance).
pub(crate) fn parse_bench_text(text: &str) -> Option<(usize, u64, usize)> {
    let start = text.find("bench:")?;
    let mut parts = text[start + 6..].split([':', '"']);
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    let instance = parts.next().and_then(|part| part.parse().ok()).unwrap_or(0);
    Some((seq, sent, instance))
}

/// Counts the delivery of `…"text":"bench:SEQ:MICROS:INSTANCE"…` and, when counted,
/// its delay (apart too when it crossed instances); returns its sequence number.
fn note_delivery(
    tally: &Tally,
    text: &str,
    instance: usize,
    measured: &mut Measured,
) -> Option<usize> {
    let (seq, sent, sent_through) = parse_bench_text(text)?;
    if let Some(count) = tally.deliveries.get(seq) {
        count.fetch_add(1, Relaxed);
    }
    if seq >= tally.counted_from.load(Relaxed) {
        let delay = u32::try_from(unix_micros().saturating_sub(sent)).unwrap_or(u32::MAX);
        measured.delays_us.push(delay);
        if sent_through == instance {
            measured.same_instance_delays_us.push(delay);
        } else {
            measured.cross_instance_delays_us.push(delay);
        }
    }
    Some(seq)
}

/// An integer field of the message (`outer.inner`, or `outer` when `inner` is empty).
fn json_field(text: &str, outer: &str, inner: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let field = &value[outer];
    if inner.is_empty() {
        field.as_i64()
    } else {
        field[inner].as_i64()
    }
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}
