//! A user-space `netem` for the media server's UDP ports on loopback: a relay between
//! browsers and the RTC ports that can delay, jitter and drop the datagrams of chosen
//! clients, and passes everyone else's through untouched.
//!
//! Why not `tc qdisc ... netem`: the kernels this suite runs on may have no `sch_netem`
//! (the test VM's kernel has neither `netem` nor `prio` nor `gact`), and a root qdisc on
//! `lo` is machine-wide state that every other test's loopback traffic would cross and a
//! killed test would leave behind. The relay needs no root, changes nothing on the
//! machine, sends only to loopback addresses, and stops when dropped (also on a panic).
//!
//! Wiring: the media server announces one loopback address (`127.0.0.2` by default) and
//! binds its RTC ports on another (`127.0.0.1`), see [`UdpRelay::media_env`]. The relay
//! listens on the announced address, same ports, and forwards each client's datagrams
//! from a socket of its own, so the media server sees one (peer-reflexive) address per
//! client; replies go back to the client the same way, unshaped. Datagrams from
//! addresses outside 127.0.0.0/8 (a browser's candidate on the machine's own network
//! address) are ignored, so the relay only ever sends to loopback addresses.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The address browsers are told to send media to when the relay is used.
pub const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The address the media server binds its RTC ports on behind the relay.
pub const MEDIA_BIND_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How often blocked relay threads look at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// Clients per RTC port the relay keeps a forwarding socket for (a test has a handful).
const MAX_CLIENTS_PER_PORT: usize = 64;
/// Larger than any datagram WebRTC sends.
const DATAGRAM_BYTES: usize = 65_536;

/// What happens to a shaped client's datagrams towards the media server, as
/// `tc netem delay <delay> <jitter> loss <loss>` does: each datagram is dropped with
/// probability `loss`, otherwise sent after `delay ± jitter` (uniform, at least zero),
/// so datagrams closer together than the jitter are reordered, as with netem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkShape {
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability of loss, 0.0 to 1.0.
    pub loss: f64,
}

impl std::fmt::Display for LinkShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delay {} ms ± {} ms (uniform), loss {:.1} %",
            self.delay.as_millis(),
            self.jitter.as_millis(),
            self.loss * 100.0
        )
    }
}

/// A bottleneck on what the media server sends to one client: at most `bits_per_second`,
/// queueing up to `max_queue` of sending time and dropping beyond (a router's tail drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownlinkLimit {
    pub bits_per_second: u64,
    pub max_queue: Duration,
}

/// Counts of the shaped clients' datagrams since the relay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShapedCounts {
    /// Datagrams from shaped clients.
    pub seen: u64,
    /// Of those, dropped.
    pub dropped: u64,
    /// Of those, sent on after their delay.
    pub delivered: u64,
    /// Datagrams to rate-limited clients dropped at their bottleneck.
    pub downlink_dropped: u64,
}

/// The relay; dropped, it stops its threads and closes its sockets.
pub struct UdpRelay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// The seed of the loss and jitter draws (printed by tests for reruns).
    pub seed: u64,
}

impl UdpRelay {
    /// The media server's environment for running behind the relay: announce
    /// [`RELAY_IP`], bind [`MEDIA_BIND_IP`] (pass to `StackOptions::media_env`).
    pub fn media_env() -> Vec<(String, String)> {
        vec![
            ("MEDIA_ANNOUNCED_IP".into(), RELAY_IP.to_string()),
            ("MEDIA_RTC_BIND_IP".into(), MEDIA_BIND_IP.to_string()),
        ]
    }

    /// Listens on [`RELAY_IP`] at each port of `rtc_ports` (first, last) and forwards to
    /// [`MEDIA_BIND_IP`] at the same port. Nothing is shaped until [`UdpRelay::shape`].
    pub fn start(rtc_ports: (u16, u16)) -> io::Result<UdpRelay> {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            shapes: Mutex::new(HashMap::new()),
            downlinks: Mutex::new(HashMap::new()),
            clients: Mutex::new(Vec::new()),
            counts: Mutex::new(ShapedCounts::default()),
            random: Mutex::new(SplitMix64(seed)),
            queue: Mutex::new(BinaryHeap::new()),
            queue_changed: Condvar::new(),
            next_sequence: AtomicU64::new(0),
            ignored_non_loopback: AtomicU64::new(0),
        });
        let mut relay = UdpRelay {
            shared: shared.clone(),
            threads: Vec::new(),
            seed,
        };
        for port in rtc_ports.0..=rtc_ports.1 {
            let front = UdpSocket::bind(SocketAddr::new(RELAY_IP, port)).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("relay cannot bind {RELAY_IP}:{port}: {error}"),
                )
            })?;
            front.set_read_timeout(Some(STOP_CHECK))?;
            let media = SocketAddr::new(MEDIA_BIND_IP, port);
            let shared = shared.clone();
            relay
                .threads
                .push(spawn_named(format!("relay-{port}"), move || {
                    run_front(front, media, shared)
                })?);
        }
        let scheduler = shared.clone();
        relay
            .threads
            .push(spawn_named("relay-delay".into(), move || {
                run_delay_queue(scheduler)
            })?);
        Ok(relay)
    }

    /// Every client address that has sent to the relay so far, in order of arrival.
    pub fn clients(&self) -> Vec<SocketAddr> {
        lock(&self.shared.clients).clone()
    }

    /// Shapes the datagrams `client` sends from now on (replaces an earlier shape).
    pub fn shape(&self, client: SocketAddr, shape: LinkShape) {
        lock(&self.shared.shapes).insert(client, shape);
    }

    /// Stops shaping every client (datagrams already delayed are still delivered).
    pub fn unshape_all(&self) {
        lock(&self.shared.shapes).clear();
        lock(&self.shared.downlinks).clear();
    }

    /// Limits what the media server sends to `client` from now on (`None`: no limit).
    pub fn limit_downlink(&self, client: SocketAddr, limit: Option<DownlinkLimit>) {
        let mut downlinks = lock(&self.shared.downlinks);
        match limit {
            Some(limit) => downlinks.insert(client, limit),
            None => downlinks.remove(&client),
        };
    }

    pub fn shaped_counts(&self) -> ShapedCounts {
        *lock(&self.shared.counts)
    }

    /// Datagrams ignored because they came from outside 127.0.0.0/8.
    pub fn ignored_non_loopback(&self) -> u64 {
        self.shared.ignored_non_loopback.load(Relaxed)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.queue_changed.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

struct Shared {
    stop: AtomicBool,
    shapes: Mutex<HashMap<SocketAddr, LinkShape>>,
    downlinks: Mutex<HashMap<SocketAddr, DownlinkLimit>>,
    clients: Mutex<Vec<SocketAddr>>,
    counts: Mutex<ShapedCounts>,
    random: Mutex<SplitMix64>,
    queue: Mutex<BinaryHeap<Delayed>>,
    queue_changed: Condvar,
    /// Orders datagrams due at the same instant by arrival.
    next_sequence: AtomicU64,
    ignored_non_loopback: AtomicU64,
}

/// Locks, ignoring poisoning: a panicking relay thread must not hide the test's own
/// failure behind a second panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn spawn_named(name: String, body: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(body)
}

/// One RTC port: reads clients' datagrams and forwards each through that client's own
/// socket towards the media server, shaped or not.
fn run_front(front: UdpSocket, media: SocketAddr, shared: Arc<Shared>) {
    let front = Arc::new(front);
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut readers = Vec::new();
    let mut buf = vec![0u8; DATAGRAM_BYTES];
    while !shared.stop.load(Relaxed) {
        let (len, client) = match front.recv_from(&mut buf) {
            Ok(received) => received,
            Err(error) if is_timeout(&error) => continue,
            // E.g. ECONNREFUSED surfacing from an earlier send: about one datagram.
            Err(_) => continue,
        };
        if !client.ip().is_loopback() {
            // Answering would send to a non-loopback address.
            shared.ignored_non_loopback.fetch_add(1, Relaxed);
            continue;
        }
        let upstream = match upstreams.get(&client) {
            Some(upstream) => upstream.clone(),
            None if upstreams.len() >= MAX_CLIENTS_PER_PORT => continue,
            None => match open_upstream(media) {
                Ok(upstream) => {
                    let upstream = Arc::new(upstream);
                    upstreams.insert(client, upstream.clone());
                    lock(&shared.clients).push(client);
                    let (reader_upstream, reader_front, reader_shared) =
                        (upstream.clone(), front.clone(), shared.clone());
                    if let Ok(reader) = spawn_named(format!("relay-{client}"), move || {
                        run_replies(reader_upstream, reader_front, client, reader_shared)
                    }) {
                        readers.push(reader);
                    }
                    upstream
                }
                Err(_) => continue,
            },
        };
        let shape = lock(&shared.shapes).get(&client).copied();
        match shape {
            None => {
                let _ = upstream.send(&buf[..len]);
            }
            Some(shape) => shaped(&shared, shape, upstream, &buf[..len]),
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
}

fn open_upstream(media: SocketAddr) -> io::Result<UdpSocket> {
    let upstream = UdpSocket::bind(SocketAddr::new(MEDIA_BIND_IP, 0))?;
    upstream.connect(media)?;
    upstream.set_read_timeout(Some(STOP_CHECK))?;
    Ok(upstream)
}

/// The media server's replies to one client, sent back from the port it sent to.
fn run_replies(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES];
    // When this client's bottleneck is done sending what it holds.
    let mut busy_until: Option<Instant> = None;
    while !shared.stop.load(Relaxed) {
        match upstream.recv(&mut buf) {
            Ok(len) => {
                let limit = lock(&shared.downlinks).get(&client).copied();
                match limit {
                    None => {
                        busy_until = None;
                        let _ = front.send_to(&buf[..len], client);
                    }
                    Some(limit) => {
                        let now = Instant::now();
                        let start = busy_until.map_or(now, |busy| busy.max(now));
                        if start.saturating_duration_since(now) > limit.max_queue {
                            lock(&shared.counts).downlink_dropped += 1;
                            continue;
                        }
                        let sending = Duration::from_secs_f64(
                            len as f64 * 8.0 / limit.bits_per_second.max(1) as f64,
                        );
                        busy_until = Some(start + sending);
                        let sequence = shared.next_sequence.fetch_add(1, Relaxed);
                        lock(&shared.queue).push(Delayed {
                            due: start + sending,
                            sequence,
                            upstream: front.clone(),
                            destination: Some(client),
                            datagram: buf[..len].to_vec(),
                        });
                        shared.queue_changed.notify_one();
                    }
                }
            }
            Err(error) if is_timeout(&error) => {}
            Err(_) => {}
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Drops the datagram or queues it for its delay.
fn shaped(shared: &Shared, shape: LinkShape, upstream: Arc<UdpSocket>, datagram: &[u8]) {
    let (lost, delay) = {
        let mut random = lock(&shared.random);
        let lost = random.next_unit() < shape.loss;
        // delay ± jitter, uniform, clamped at zero (netem's default distribution).
        let jitter = shape.jitter.as_secs_f64() * (2.0 * random.next_unit() - 1.0);
        let delay = (shape.delay.as_secs_f64() + jitter).max(0.0);
        (lost, Duration::from_secs_f64(delay))
    };
    {
        let mut counts = lock(&shared.counts);
        counts.seen += 1;
        if lost {
            counts.dropped += 1;
            return;
        }
    }
    let sequence = shared.next_sequence.fetch_add(1, Relaxed);
    let mut queue = lock(&shared.queue);
    queue.push(Delayed {
        due: Instant::now() + delay,
        sequence,
        upstream,
        destination: None,
        datagram: datagram.to_vec(),
    });
    shared.queue_changed.notify_one();
}

/// Sends delayed datagrams when they are due.
fn run_delay_queue(shared: Arc<Shared>) {
    let mut queue = lock(&shared.queue);
    while !shared.stop.load(Relaxed) {
        let now = Instant::now();
        let wait = match queue.peek() {
            Some(next) if next.due <= now => {
                if let Some(due) = queue.pop() {
                    match due.destination {
                        Some(client) => {
                            let _ = due.upstream.send_to(&due.datagram, client);
                        }
                        None => {
                            let _ = due.upstream.send(&due.datagram);
                            lock(&shared.counts).delivered += 1;
                        }
                    }
                }
                continue;
            }
            Some(next) => (next.due - now).min(STOP_CHECK),
            None => STOP_CHECK,
        };
        queue = shared
            .queue_changed
            .wait_timeout(queue, wait)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

/// A datagram waiting for its delay; the heap's top is the earliest due.
struct Delayed {
    due: Instant,
    sequence: u64,
    /// The socket it leaves from: a client's upstream socket, or the front socket for a
    /// rate-limited reply (then sent to `destination`).
    upstream: Arc<UdpSocket>,
    destination: Option<SocketAddr>,
    datagram: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest due must come out first.
        (other.due, other.sequence).cmp(&(self.due, self.sequence))
    }
}

/// A small seeded generator (SplitMix64): enough for loss and jitter draws.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_client_loses_about_the_share_asked_and_others_lose_nothing() {
        let media = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = media.local_addr().unwrap().port();
        // The relay binds RELAY_IP at the media port; the "media server" here is on
        // 127.0.0.1 at that port.
        let relay = UdpRelay::start((port, port)).unwrap();
        media
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let shaped_client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let plain_client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = SocketAddr::new(RELAY_IP, port);
        shaped_client.send_to(b"hello", target).unwrap();
        plain_client.send_to(b"hello", target).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            media.recv_from(&mut buf).unwrap();
        }
        relay.shape(
            shaped_client.local_addr().unwrap(),
            LinkShape {
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(5),
                loss: 0.2,
            },
        );
        // Read while sending: a thousand datagrams would overflow a default buffer.
        let reader = std::thread::spawn(move || {
            let (mut shaped, mut plain) = (0, 0);
            let mut buf = [0u8; 64];
            while let Ok((len, _)) = media.recv_from(&mut buf) {
                match &buf[..len] {
                    b"s" => shaped += 1,
                    b"p" => plain += 1,
                    _ => {}
                }
            }
            (shaped, plain)
        });
        for _ in 0..500 {
            shaped_client.send_to(b"s", target).unwrap();
            plain_client.send_to(b"p", target).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        let (shaped, plain) = reader.join().unwrap();
        assert_eq!(plain, 500);
        assert!((300..=460).contains(&shaped), "shaped arrived: {shaped}");
        let counts = relay.shaped_counts();
        assert_eq!(counts.seen, 500);
        assert_eq!(counts.dropped + counts.delivered, 500);
    }
}
