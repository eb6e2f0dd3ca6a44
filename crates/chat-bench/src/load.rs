//! The load: real WebSocket clients of the app's `/ws` (origin header as a browser
//! sends it, senders with a session cookie), each joining its live's room; senders post
//! `bench:<seq>:<sent µs>` messages at a fixed total rate; every client notes the delay
//! of every message it receives. The app's CPU and memory come from /proc.
//!
//! Two optional phases: a stalled database (another connection holds SQLite's write
//! lock for a while in the middle of the measured window: delivery must not notice,
//! only the senders' `chat:stored` acknowledgements wait), and a reconnect storm after
//! the window (every socket drops and comes back within the spread, as after a
//! restart: rejoin times, history served, sockets lost, and `/healthz` meanwhile).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};

use crate::client::{Client, Storm, client, unix_micros};
use crate::plan::Plan;
use crate::probe::{delivery_histogram, probe_health};
use crate::report::{Report, Samples, StormFigures, proc_sample, proc_sample_all};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The app's base URLs, `http://127.0.0.1:PORT`: one per instance (several share
    /// PostgreSQL and Redis); sockets are spread over them round robin, and the first
    /// is the public origin they all send.
    pub app_urls: Vec<String>,
    pub plan: Plan,
    /// Sockets in each live's room, senders included.
    pub sockets_per_live: usize,
    /// Messages per second into all rooms together.
    pub messages_per_second: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// The app's processes (one per instance), for their CPU time and memory.
    pub app_pids: Vec<u32>,
    /// Sockets come from 127.0.0.2 … 127.0.0.(1+N), round robin.
    pub source_addresses: u8,
    /// Pause after the last join before the idle memory is read.
    pub settle: Duration,
    /// Hold the app's SQLite write lock (this database file) for this long in the
    /// middle of the measured window.
    pub stall_database: Option<(PathBuf, Duration)>,
    /// After the window, every socket reconnects within this spread.
    pub reconnect_storm: Option<Duration>,
}

/// What the sockets count together.
pub(crate) struct Tally {
    /// Per message: deliveries seen (index = seq).
    pub deliveries: Vec<AtomicU32>,
    /// The first counted message (those before are the warm-up).
    pub counted_from: AtomicUsize,
    pub joined: AtomicUsize,
    pub failed: AtomicUsize,
    /// The last `live:viewers` count each room's first socket saw.
    pub viewer_counts: Vec<AtomicU32>,
    /// `error` messages the app sent, and the first of them.
    pub errors: AtomicUsize,
    pub first_error: std::sync::Mutex<Option<String>>,
    /// Reconnect storm: time from reconnecting to `chat:history` (µs), and sockets that
    /// did not get back.
    pub rejoins_us: std::sync::Mutex<Vec<u32>>,
    pub storm_lost: AtomicUsize,
}

impl Tally {
    pub(crate) fn note_rejoin(&self, took: Duration) {
        if let Ok(mut rejoins) = self.rejoins_us.lock() {
            rejoins.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }

    pub(crate) fn note_error(&self, text: &str) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| text.to_owned());
        }
    }

    fn rejoined(&self) -> usize {
        self.rejoins_us.lock().map_or(0, |rejoins| rejoins.len())
    }
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
        rejoins_us: std::sync::Mutex::new(Vec::new()),
        storm_lost: AtomicUsize::new(0),
    });
    anyhow::ensure!(!options.app_urls.is_empty(), "no app URL");
    let mut instances = Vec::with_capacity(options.app_urls.len());
    for url in &options.app_urls {
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let address: SocketAddr = tokio::net::lookup_host(&host)
            .await
            .context("resolve the app's address")?
            .next()
            .context("the app's address")?;
        instances.push((host, address));
    }
    let target = instances[0].1;
    let origin = options.app_urls[0].trim_end_matches('/').to_owned();
    let pids = options.app_pids.clone();
    let app_sample = move || (!pids.is_empty()).then(|| proc_sample_all(&pids));
    let before = app_sample();
    let started = Instant::now();

    // Connect every socket (a few hundred handshakes at a time), senders first in each room.
    let handshakes = Arc::new(Semaphore::new(256));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (storm_tx, storm_rx) = tokio::sync::watch::channel(None);
    // Per live: each sender's channel and the instance its socket is on.
    let mut senders: Vec<Vec<(mpsc::Sender<String>, usize)>> = vec![Vec::new(); lives];
    let mut tasks = Vec::with_capacity(total_sockets);
    for index in 0..total_sockets {
        let live = index % lives;
        let slot = index / lives;
        let planned = &options.plan.lives[live];
        let cookie = planned.sender_tokens.get(slot).cloned();
        let (command_tx, command_rx) = mpsc::channel::<String>(64);
        // Spread by slot, so each room has sockets (and senders) on every instance.
        let instance = slot % instances.len();
        if cookie.is_some() {
            senders[live].push((command_tx, instance));
        }
        let (host, address) = &instances[instance];
        tasks.push(tokio::spawn(client(Client {
            target: *address,
            source: source_address(index, options.source_addresses),
            url: format!("ws://{host}/ws"),
            origin: origin.clone(),
            instance,
            channel: planned.channel.clone(),
            cookie,
            commands: command_rx,
            tally: tally.clone(),
            live,
            watches_count: slot == 0,
            handshakes: handshakes.clone(),
            stop: stop_rx.clone(),
            storm: storm_rx.clone(),
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
    let joined = app_sample();

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
    let mut stall = None;
    let mut histogram_from = Vec::new();
    while Instant::now() < end && sent < planned_messages - 16 {
        if sent == warmup_messages {
            tally.counted_from.store(sent, Relaxed);
            measured_from = Some((Instant::now(), app_sample()));
            tool_from = Some(proc_sample(std::process::id()));
            histogram_from = delivery_histogram(target).await;
            if let Some((database, hold)) = options.stall_database.clone() {
                let wait = options.duration.saturating_sub(hold) / 2;
                stall = Some(tokio::spawn(hold_write_lock(database, wait, hold)));
            }
        }
        let live = sent % lives;
        if !senders[live].is_empty() {
            let (sender, instance) = &senders[live][round_robin[live] % senders[live].len()];
            round_robin[live] += 1;
            let text = format!("bench:{sent}:{}:{instance}", unix_micros());
            let _ = sender.try_send(text);
        }
        sent += 1;
        let next = send_started + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(next.into()).await;
    }
    if let Some(stall) = stall {
        stall.await.context("the stall task")??;
    }
    let (measure_start, measure_proc) = measured_from.unwrap_or((Instant::now(), None));
    let measured_for = measure_start.elapsed();
    let after_window = app_sample();
    let tool_window = tool_from.map(|start| (start, proc_sample(std::process::id())));
    // In-flight messages arrive within 3 s or count as lost.
    let counted_from = tally.counted_from.load(Relaxed).min(sent);
    let expected = (sent - counted_from) as u64 * options.sockets_per_live as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_deadline && delivered(&tally, counted_from, sent) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let histogram_to = delivery_histogram(target).await;
    // Read before the storm and the stop: closing sockets lower the count watchers see.
    let viewer_counts: Vec<u32> = tally
        .viewer_counts
        .iter()
        .map(|count| count.load(Relaxed))
        .collect();
    let storm = match options.reconnect_storm {
        Some(spread) => Some(reconnect_storm(&tally, &storm_tx, spread, target).await),
        None => None,
    };
    let _ = stop_tx.send(true);
    let mut samples = Samples::default();
    for task in tasks {
        if let Ok(Ok(measured)) = tokio::time::timeout(Duration::from_secs(10), task).await {
            samples.delays_us.extend(measured.delays_us);
            samples
                .cross_instance_delays_us
                .extend(measured.cross_instance_delays_us);
            samples
                .same_instance_delays_us
                .extend(measured.same_instance_delays_us);
            samples.stored_acks_us.extend(measured.stored_acks_us);
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
        instances: instances.len(),
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
        stall_seconds: options.stall_database.map(|(_, hold)| hold.as_secs_f64()),
        app_histogram: crate::report::histogram_delta(&histogram_from, &histogram_to),
        storm,
    }))
}

/// Holds SQLite's write lock on `database` for `hold`, after `wait`.
async fn hold_write_lock(database: PathBuf, wait: Duration, hold: Duration) -> anyhow::Result<()> {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, SqliteConnection};
    tokio::time::sleep(wait).await;
    tokio::task::spawn_blocking(move || {
        let path = database.to_str().context("database path")?;
        let mut connection = SqliteConnection::establish(path)?;
        connection.batch_execute("PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE")?;
        std::thread::sleep(hold);
        connection.batch_execute("COMMIT")?;
        Ok(())
    })
    .await?
}

/// Every joined socket drops and reconnects within `spread`; returns once all are back
/// (or lost), with `/healthz` probed meanwhile.
async fn reconnect_storm(
    tally: &Tally,
    storm: &tokio::sync::watch::Sender<Option<Storm>>,
    spread: Duration,
    app: SocketAddr,
) -> StormFigures {
    let sockets = tally.joined.load(Relaxed);
    let (probing, probes) = tokio::sync::watch::channel(false);
    let health = tokio::spawn(probe_health(app, probes));
    let started = Instant::now();
    let _ = storm.send(Some(Storm {
        at: started,
        spread,
    }));
    let deadline = started + spread + Duration::from_secs(60);
    while tally.rejoined() + tally.storm_lost.load(Relaxed) < sockets && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let _ = probing.send(true);
    let health_ms = health.await.unwrap_or_default();
    let rejoins_us = tally
        .rejoins_us
        .lock()
        .map(|rejoins| rejoins.clone())
        .unwrap_or_default();
    StormFigures::build(
        sockets,
        spread,
        took,
        rejoins_us,
        tally.storm_lost.load(Relaxed),
        health_ms,
    )
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
