//! The load: real WebSocket clients of the app's `/ws` (origin header as a browser
//! sends it, senders with a session cookie), each joining its live's room; senders post
//! `bench:<seq>:<sent µs>` messages at a fixed total rate; every client notes the delay
//! of every message it receives. The app's CPU and memory come from /proc.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::plan::Plan;
use crate::report::{Report, Samples, proc_sample};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The app's base URL, `http://127.0.0.1:PORT`.
    pub app_url: String,
    pub plan: Plan,
    /// Sockets in each live's room, senders included.
    pub sockets_per_live: usize,
    /// Messages per second into all rooms together.
    pub messages_per_second: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// The app's process, for its CPU time and memory.
    pub app_pid: Option<u32>,
    /// Sockets come from 127.0.0.2 … 127.0.0.(1+N), round robin.
    pub source_addresses: u8,
    /// Pause after the last join before the idle memory is read.
    pub settle: Duration,
}

/// Per message: deliveries seen (index = seq).
struct Tally {
    deliveries: Vec<AtomicU32>,
    /// Delays in µs of counted deliveries, per socket task, merged at the end.
    counted_from: AtomicUsize,
    joined: AtomicUsize,
    failed: AtomicUsize,
    /// The last `live:viewers` count each room's first socket saw.
    viewer_counts: Vec<AtomicU32>,
    /// `error` messages the app sent, and the first of them.
    errors: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

/// Runs the load and returns its report.
pub async fn run(options: LoadOptions) -> anyhow::Result<Report> {
    let lives = options.plan.lives.len();
    let total_sockets = lives * options.sockets_per_live;
    let planned_messages = ((options.warmup + options.duration).as_secs_f64()
        * options.messages_per_second)
        .ceil() as usize
        + 16;
    let tally = Arc::new(Tally {
        deliveries: (0..planned_messages).map(|_| AtomicU32::new(0)).collect(),
        counted_from: AtomicUsize::new(usize::MAX),
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        viewer_counts: (0..lives).map(|_| AtomicU32::new(0)).collect(),
        errors: AtomicUsize::new(0),
        first_error: std::sync::Mutex::new(None),
    });
    let host = options
        .app_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let target: SocketAddr = tokio::net::lookup_host(&host)
        .await
        .context("resolve the app's address")?
        .next()
        .context("the app's address")?;
    let before = options.app_pid.map(proc_sample);
    let started = Instant::now();

    // Connect every socket (a few hundred handshakes at a time), senders first in each room.
    let handshakes = Arc::new(Semaphore::new(256));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut senders: Vec<Vec<mpsc::Sender<String>>> = vec![Vec::new(); lives];
    let mut tasks = Vec::with_capacity(total_sockets);
    for index in 0..total_sockets {
        let live = index % lives;
        let slot = index / lives;
        let planned = &options.plan.lives[live];
        let cookie = planned.sender_tokens.get(slot).cloned();
        let (command_tx, command_rx) = mpsc::channel::<String>(64);
        if cookie.is_some() {
            senders[live].push(command_tx);
        }
        tasks.push(tokio::spawn(client(Client {
            target,
            source: source_address(index, options.source_addresses),
            url: format!("ws://{host}/ws"),
            origin: options.app_url.trim_end_matches('/').to_owned(),
            channel: planned.channel.clone(),
            cookie,
            commands: command_rx,
            tally: tally.clone(),
            live,
            watches_count: slot == 0,
            handshakes: handshakes.clone(),
            stop: stop_rx.clone(),
        })));
    }
    let join_deadline = Instant::now() + Duration::from_secs(120);
    while tally.joined.load(Relaxed) + tally.failed.load(Relaxed) < total_sockets {
        anyhow::ensure!(
            Instant::now() < join_deadline,
            "sockets did not join within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let join_seconds = started.elapsed().as_secs_f64();
    // Let the join burst's count updates settle before the idle memory is read.
    tokio::time::sleep(options.settle).await;
    let joined = options.app_pid.map(proc_sample);

    // Send: one ticker spreads the total rate over the lives and their senders.
    let interval = Duration::from_secs_f64(1.0 / options.messages_per_second.max(0.1));
    let warmup_messages =
        (options.warmup.as_secs_f64() * options.messages_per_second).round() as usize;
    let mut sent = 0usize;
    let mut measured_from: Option<(Instant, Option<crate::report::ProcSample>)> = None;
    let mut tool_from = None;
    let send_started = Instant::now();
    let end = send_started + options.warmup + options.duration;
    let mut round_robin = vec![0usize; lives];
    while Instant::now() < end && sent < planned_messages - 16 {
        if sent == warmup_messages {
            tally.counted_from.store(sent, Relaxed);
            measured_from = Some((Instant::now(), options.app_pid.map(proc_sample)));
            tool_from = Some(proc_sample(std::process::id()));
        }
        let live = sent % lives;
        if !senders[live].is_empty() {
            let sender = &senders[live][round_robin[live] % senders[live].len()];
            round_robin[live] += 1;
            let text = format!("bench:{sent}:{}", unix_micros());
            let _ = sender.try_send(text);
        }
        sent += 1;
        let next = send_started + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    let (measure_start, measure_proc) = measured_from.unwrap_or((Instant::now(), None));
    let measured_for = measure_start.elapsed();
    let after_window = options.app_pid.map(proc_sample);
    let tool_window = tool_from.map(|start| (start, proc_sample(std::process::id())));
    // In-flight messages arrive within 3 s or count as lost.
    let counted_from = tally.counted_from.load(Relaxed).min(sent);
    let expected = (sent - counted_from) as u64 * options.sockets_per_live as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_deadline && delivered(&tally, counted_from, sent) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read before the stop: the closing sockets lower the count the watchers see.
    let viewer_counts: Vec<u32> = tally
        .viewer_counts
        .iter()
        .map(|count| count.load(Relaxed))
        .collect();
    let _ = stop_tx.send(true);
    let mut samples = Samples::default();
    for task in tasks {
        if let Ok(Ok(delays)) = tokio::time::timeout(Duration::from_secs(10), task).await {
            samples.delays_us.extend(delays);
        }
    }
    let per_live = options.sockets_per_live as u64;
    let counted = sent - counted_from;
    let deliveries = delivered(&tally, counted_from, sent);
    // docs/protocol.md's definition: each signed-in session once, anonymous sockets once
    // per client address.
    let viewer_counts_expected = (0..lives)
        .map(|live| {
            let mut anonymous = std::collections::HashSet::new();
            let mut sessions = 0u32;
            for slot in 0..options.sockets_per_live {
                if slot < options.plan.lives[live].sender_tokens.len() {
                    sessions += 1;
                } else {
                    anonymous.insert(source_address(
                        slot * lives + live,
                        options.source_addresses,
                    ));
                }
            }
            sessions + anonymous.len() as u32
        })
        .collect();
    let first_error = tally
        .first_error
        .lock()
        .ok()
        .and_then(|first| first.clone());
    Ok(Report::build(crate::report::Inputs {
        lives,
        sockets: total_sockets,
        failed_sockets: tally.failed.load(Relaxed),
        join_seconds,
        messages_counted: counted as u64,
        deliveries_expected: counted as u64 * per_live,
        deliveries,
        measured_for,
        samples,
        before,
        joined,
        window: measure_proc.zip(after_window),
        tool_window,
        viewer_counts,
        viewer_counts_expected,
        server_errors: tally.errors.load(Relaxed),
        first_server_error: first_error,
    }))
}

struct Client {
    target: SocketAddr,
    source: IpAddr,
    url: String,
    origin: String,
    channel: String,
    cookie: Option<String>,
    commands: mpsc::Receiver<String>,
    tally: Arc<Tally>,
    live: usize,
    watches_count: bool,
    handshakes: Arc<Semaphore>,
    stop: tokio::sync::watch::Receiver<bool>,
}

/// One socket: connect, join, then receive (and send what the ticker hands it) until
/// the run stops. Returns the delays (µs) of the counted messages it received.
async fn client(mut client: Client) -> Vec<u32> {
    let permit = client.handshakes.clone().acquire_owned().await;
    let connected = connect(&client).await;
    drop(permit);
    let Ok(socket) = connected else {
        client.tally.failed.fetch_add(1, Relaxed);
        return Vec::new();
    };
    let mut socket = socket;
    let join = serde_json::json!({"type": "live:join", "channel": client.channel}).to_string();
    if socket.send(Message::text(join)).await.is_err() {
        client.tally.failed.fetch_add(1, Relaxed);
        return Vec::new();
    }
    let mut joined = false;
    let mut delays = Vec::new();
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    // One waiter on the shared stop signal for the whole run, not one per frame.
    let mut stop = client.stop.clone();
    let stopped = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            frame = socket.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, None | Some(Err(_))) {
                        if !joined { client.tally.failed.fetch_add(1, Relaxed); }
                        break;
                    }
                    continue;
                };
                let text = text.as_str();
                if !joined && (text.contains("\"chat:history\"") || text.contains("\"live:state\"")) {
                    joined = true;
                    client.tally.joined.fetch_add(1, Relaxed);
                }
                if text.contains("\"chat:message\"") {
                    note_delivery(&client.tally, text, &mut delays);
                } else if text.contains("\"type\":\"error\"") {
                    client.tally.errors.fetch_add(1, Relaxed);
                    if let Ok(mut first) = client.tally.first_error.lock() {
                        first.get_or_insert_with(|| text.to_owned());
                    }
                } else if client.watches_count
                    && text.contains("\"live:viewers\"")
                    && let Some(count) = viewer_count(text)
                {
                    client.tally.viewer_counts[client.live].store(count, Relaxed);
                }
            }
            command = client.commands.recv(), if client.cookie.is_some() => {
                let Some(text) = command else { continue };
                let message = serde_json::json!({"type": "chat:send", "text": text}).to_string();
                if socket.send(Message::text(message)).await.is_err() {
                    break;
                }
            }
            _ = ping.tick() => {
                let _ = socket.send(Message::text(r#"{"type":"ping"}"#)).await;
            }
        }
    }
    let _ = socket.close(None).await;
    delays
}

async fn connect(
    client: &Client,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
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

/// `…"text":"bench:SEQ:MICROS"…`: counts the delivery and, when counted, its delay.
fn note_delivery(tally: &Tally, text: &str, delays: &mut Vec<u32>) {
    let Some(start) = text.find("bench:") else {
        return;
    };
    let mut parts = text[start + 6..].split([':', '"']);
    let (Some(seq), Some(sent)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(seq), Ok(sent)) = (seq.parse::<usize>(), sent.parse::<u64>()) else {
        return;
    };
    if let Some(count) = tally.deliveries.get(seq) {
        count.fetch_add(1, Relaxed);
    }
    if seq >= tally.counted_from.load(Relaxed) {
        let delay = unix_micros().saturating_sub(sent);
        delays.push(u32::try_from(delay).unwrap_or(u32::MAX));
    }
}

/// Deliveries of messages `from..to` so far.
fn delivered(tally: &Tally, from: usize, to: usize) -> u64 {
    tally.deliveries[from..to]
        .iter()
        .map(|count| u64::from(count.load(Relaxed)))
        .sum()
}

/// Socket `index` comes from 127.0.0.2 … 127.0.0.(1+`addresses`), round robin.
fn source_address(index: usize, addresses: u8) -> IpAddr {
    let offset = index % usize::from(addresses.max(1));
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + offset as u8))
}

fn viewer_count(text: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value["count"]
        .as_u64()
        .and_then(|count| u32::try_from(count).ok())
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}
