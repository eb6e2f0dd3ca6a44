//! One load run: publisher, a burst of viewers, a measurement window, the report.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use privatehub_protocol::MediaRole;
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::Direction;
use str0m::{Candidate, Rtc, RtcConfig};

use crate::LoadgenError;
use crate::driver::DriverHandle;
use crate::metrics_scrape::{counter_deltas, scrape};
use crate::payload::epoch_micros;
use crate::peer::{
    Peer, PeerOutcome, PublisherState, Role, StreamSpec, ViewerOutcome, ViewerState,
};
use crate::proc_stats::{CpuClock, rss_kb, thread_cpu_times};
use crate::report::{RunReport, percentile};
use crate::sampled::VerifyMode;
use crate::signaling::{
    KeptSocket, ServerTarget, janus_create_room, janus_publish, janus_watch, make_offer,
    privatehub_join,
};

/// Janus room bitrate cap: far above any test stream.
const JANUS_ROOM_BITRATE_BPS: u64 = 50_000_000;
/// Errors kept in the report.
const MAX_ERRORS_REPORTED: usize = 5;
/// How often the keeper reads the signaling sockets.
const KEEPER_TICK: Duration = Duration::from_millis(500);
/// How often it sends the protocol's keep-alive.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: ServerTarget,
    pub viewers: usize,
    pub stream: StreamSpec,
    /// Address the bots bind and announce (127.0.0.2 for the Janus veth path).
    pub bind_ip: IpAddr,
    /// Viewer driver threads.
    pub driver_threads: usize,
    /// Viewers signaling at the same time during the burst.
    pub join_concurrency: usize,
    /// Longest wait for all viewers' first keyframe.
    pub join_timeout: Duration,
    /// Settling time between the last join and the window.
    pub warmup: Duration,
    /// Measurement window.
    pub window: Duration,
    /// Server process whose CPU and memory are measured.
    pub server_pid: Option<u32>,
    /// The server's Prometheus endpoint, scraped at the window's edges.
    pub metrics_url: Option<String>,
    /// How viewer bots verify what they receive ([`VerifyMode::Sampled`]: own header
    /// parsing for loss, str0m decryption of a sample for delays).
    pub verify: VerifyMode,
}

/// State shared by the run and its threads.
#[derive(Debug)]
pub struct Shared {
    pub stop: AtomicBool,
    pub publisher_connected: AtomicBool,
    pub viewers_with_keyframe: AtomicUsize,
    window_start_us: AtomicU64,
    window_end_us: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            stop: AtomicBool::new(false),
            publisher_connected: AtomicBool::new(false),
            viewers_with_keyframe: AtomicUsize::new(0),
            window_start_us: AtomicU64::new(u64::MAX),
            window_end_us: AtomicU64::new(u64::MAX),
        }
    }

    /// Whether a packet received at `now_us` falls in the measurement window.
    pub fn in_window(&self, now_us: u64) -> bool {
        now_us >= self.window_start_us.load(Ordering::Relaxed)
            && now_us < self.window_end_us.load(Ordering::Relaxed)
    }
}

/// Sets [`Shared::stop`] when dropped.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) struct Crypto {
    cert: DtlsCert,
    provider: Arc<CryptoProvider>,
}

impl Crypto {
    pub(crate) fn new() -> Result<Self, LoadgenError> {
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| LoadgenError::Setup("DTLS certificate generation failed".into()))?;
        Ok(Crypto {
            cert,
            provider: Arc::new(provider),
        })
    }

    fn config(&self, rtp_mode: bool) -> RtcConfig {
        Rtc::builder()
            .set_dtls_cert(self.cert.clone())
            .set_crypto_provider(self.provider.clone())
            .clear_codecs()
            .enable_vp8(true)
            .enable_opus(true, false)
            .set_rtp_mode(rtp_mode)
    }
}

/// A bound bot socket and its `Rtc` with the host candidate added.
pub(crate) fn new_bot(
    crypto: &Crypto,
    bind_ip: IpAddr,
    rtp_mode: bool,
) -> Result<(Rtc, UdpSocket, SocketAddr), LoadgenError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).map_err(LoadgenError::Io)?;
    socket.set_nonblocking(true).map_err(LoadgenError::Io)?;
    let local = socket.local_addr().map_err(LoadgenError::Io)?;
    let mut rtc = crypto.config(rtp_mode).build(Instant::now());
    let candidate = Candidate::host(local, "udp")
        .map_err(|error| LoadgenError::Setup(format!("host candidate {local}: {error}")))?;
    rtc.add_local_candidate(candidate);
    Ok((rtc, socket, local))
}

/// Runs one load run and returns its report.
pub fn run(config: &RunConfig) -> Result<RunReport, LoadgenError> {
    let crypto = Arc::new(Crypto::new()?);
    let shared = Arc::new(Shared::new());
    // Any early return stops every thread of this run at once.
    let _stop_on_return = StopOnDrop(shared.clone());
    let cpu_clock = CpuClock::default();
    let started = Instant::now();
    let hard_deadline =
        started + config.join_timeout + config.warmup + config.window + Duration::from_secs(60);

    if let ServerTarget::Janus { ws_url, room } = &config.target {
        janus_create_room(ws_url, *room, JANUS_ROOM_BITRATE_BPS)?;
    }

    // Signaling sockets stay open in the keeper until the end.
    let (keep_sender, keep_receiver) = channel::<KeptSocket>();
    let keeper_shared = shared.clone();
    let keeper = std::thread::Builder::new()
        .name("loadgen-keeper".into())
        .spawn(move || keep_sockets(keep_receiver, &keeper_shared, hard_deadline))
        .map_err(LoadgenError::Io)?;

    // Publisher on its own driver thread, so its timing does not suffer from viewers.
    let publisher_driver =
        DriverHandle::spawn("loadgen-publisher".into(), shared.clone(), hard_deadline)?;
    let (mut rtc, socket, local) = new_bot(&crypto, config.bind_ip, false)?;
    let offer = make_offer(&mut rtc, Direction::SendOnly, config.stream.simulcast)?;
    let (audio_mid, video_mid) = (offer.audio_mid, offer.video_mid);
    let (kept, janus_feed) = match &config.target {
        target @ ServerTarget::PrivateHub { .. } => (
            privatehub_join(
                target,
                MediaRole::Publish,
                "bench-publisher",
                &mut rtc,
                offer,
            )?,
            None,
        ),
        ServerTarget::Janus { ws_url, room } => {
            let (kept, feed) = janus_publish(ws_url, *room, &mut rtc, offer)?;
            (kept, Some(feed))
        }
    };
    let _ = keep_sender.send(kept);
    publisher_driver.add(Peer::new(
        rtc,
        mio::net::UdpSocket::from_std(socket),
        local,
        Role::Publisher(Box::new(PublisherState::new(
            video_mid,
            audio_mid,
            config.stream,
        ))),
        shared.clone(),
    ));
    let connect_deadline = Instant::now() + Duration::from_secs(10);
    while !shared.publisher_connected.load(Ordering::Relaxed) {
        if Instant::now() > connect_deadline {
            shared.stop.store(true, Ordering::Relaxed);
            let _ = publisher_driver.join();
            return Err(LoadgenError::Setup(
                "publisher did not connect within 10 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the server settle with the publisher alone, then take the memory baseline.
    std::thread::sleep(Duration::from_millis(500));
    let rss_baseline_kb = config
        .server_pid
        .and_then(|pid| rss_kb(Some(pid)))
        .unwrap_or(0);

    // The viewers join in a burst.
    let drivers: Vec<DriverHandle> = (0..config.driver_threads.max(1))
        .map(|index| {
            DriverHandle::spawn(
                format!("loadgen-viewers-{index}"),
                shared.clone(),
                hard_deadline,
            )
        })
        .collect::<Result<_, _>>()?;
    let drivers = Arc::new(drivers);
    let next_viewer = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let joined = Arc::new(AtomicUsize::new(0));
    let signalers: Vec<_> = (0..config.join_concurrency.clamp(1, config.viewers.max(1)))
        .map(|_| {
            let drivers = drivers.clone();
            let next_viewer = next_viewer.clone();
            let errors = errors.clone();
            let joined = joined.clone();
            let crypto = crypto.clone();
            let shared = shared.clone();
            let keep_sender = keep_sender.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                loop {
                    let index = next_viewer.fetch_add(1, Ordering::Relaxed);
                    if index >= config.viewers || shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match join_viewer(&config, &crypto, index, janus_feed, &shared) {
                        Ok((peer, kept)) => {
                            drivers[index % drivers.len()].add(peer);
                            let _ = keep_sender.send(kept);
                            joined.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                            errors.push(format!("viewer {index}: {error}"));
                        }
                    }
                }
            })
        })
        .collect();
    for signaler in signalers {
        let _ = signaler.join();
    }
    let joined = joined.load(Ordering::Relaxed);
    let join_deadline = started + config.join_timeout + Duration::from_secs(10);
    while shared.viewers_with_keyframe.load(Ordering::Relaxed) < joined
        && Instant::now() < join_deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }

    // Measurement window.
    std::thread::sleep(config.warmup);
    let server_cpu_start = config
        .server_pid
        .and_then(|pid| cpu_clock.cpu_time(Some(pid)));
    let own_cpu_start = cpu_clock.cpu_time(None);
    let threads_start = config
        .server_pid
        .map(|pid| thread_cpu_times(&cpu_clock, pid))
        .unwrap_or_default();
    let metrics_before = config.metrics_url.as_deref().map(scrape);
    let window_start = Instant::now();
    shared
        .window_start_us
        .store(epoch_micros(), Ordering::Relaxed);
    std::thread::sleep(config.window);
    shared
        .window_end_us
        .store(epoch_micros(), Ordering::Relaxed);
    let window = window_start.elapsed();
    let server_cpu_end = config
        .server_pid
        .and_then(|pid| cpu_clock.cpu_time(Some(pid)));
    let own_cpu_end = cpu_clock.cpu_time(None);
    let threads_end = config
        .server_pid
        .map(|pid| thread_cpu_times(&cpu_clock, pid))
        .unwrap_or_default();
    let metrics_after = config.metrics_url.as_deref().map(scrape);
    let rss_loaded_kb = config
        .server_pid
        .and_then(|pid| rss_kb(Some(pid)))
        .unwrap_or(0);

    shared.stop.store(true, Ordering::Relaxed);
    drop(keep_sender);
    let publisher_outcomes = publisher_driver.join();
    let drivers = Arc::try_unwrap(drivers)
        .map_err(|_| LoadgenError::Setup("driver handles still shared".into()))?;
    let mut viewers: Vec<ViewerOutcome> = Vec::with_capacity(config.viewers);
    for driver in drivers {
        for outcome in driver.join() {
            if let PeerOutcome::Viewer(viewer) = outcome {
                viewers.push(viewer);
            }
        }
    }
    let _ = keeper.join();
    let publisher = publisher_outcomes
        .into_iter()
        .find_map(|outcome| match outcome {
            PeerOutcome::Publisher(publisher) => Some(publisher),
            PeerOutcome::Viewer(_) => None,
        })
        .unwrap_or_default();

    let errors = errors
        .lock()
        .map(|errors| errors.clone())
        .unwrap_or_default();
    let server_cpu = match (server_cpu_start, server_cpu_end) {
        (Some(start), Some(end)) => end.saturating_sub(start).as_secs_f64(),
        _ => 0.0,
    };
    let own_cpu = match (own_cpu_start, own_cpu_end) {
        (Some(start), Some(end)) => end.saturating_sub(start).as_secs_f64(),
        _ => 0.0,
    };
    let window_s = window.as_secs_f64();
    let receiving = viewers
        .iter()
        .filter(|viewer| viewer.join_time.is_some())
        .count();
    let packets_forwarded: u64 = viewers.iter().map(|viewer| viewer.packets_in_window).sum();
    let packets_lost: u64 = viewers.iter().map(|viewer| viewer.lost_in_window).sum();
    let loss_pct = |viewer: &ViewerOutcome| {
        if viewer.expected_in_window == 0 {
            // A viewer that got nothing in the window lost everything.
            if viewer.join_time.is_some() {
                0.0
            } else {
                100.0
            }
        } else {
            viewer.lost_in_window as f64 * 100.0 / viewer.expected_in_window as f64
        }
    };
    let (worst_viewer, loss_pct_worst) = viewers
        .iter()
        .map(|viewer| (viewer.index, loss_pct(viewer)))
        .fold((None, 0.0f64), |(worst, worst_loss), (index, loss)| {
            if loss > worst_loss {
                (Some(index), loss)
            } else {
                (worst, worst_loss)
            }
        });
    let failed_viewers = config.viewers - receiving;
    let loss_pct_worst = if failed_viewers > 0 {
        100.0
    } else {
        loss_pct_worst
    };
    let loss_pct_mean = if viewers.is_empty() {
        100.0
    } else {
        viewers.iter().map(loss_pct).sum::<f64>() / viewers.len() as f64
    };
    let mut video_delays: Vec<u32> = viewers
        .iter()
        .flat_map(|viewer| viewer.video_delays_us.iter().copied())
        .collect();
    let mut audio_delays: Vec<u32> = viewers
        .iter()
        .flat_map(|viewer| viewer.audio_delays_us.iter().copied())
        .collect();
    let mut delays: Vec<u32> = video_delays.iter().chain(&audio_delays).copied().collect();
    let millis =
        |time: Option<Duration>| time.map(|t| t.as_millis().min(u128::from(u32::MAX)) as u32);
    let mut signaling: Vec<u32> = viewers
        .iter()
        .filter_map(|v| millis(v.signaling_time))
        .collect();
    let mut connects: Vec<u32> = viewers
        .iter()
        .filter_map(|v| millis(v.connect_time))
        .collect();
    let mut joins: Vec<u32> = viewers
        .iter()
        .filter_map(|viewer| viewer.join_time)
        .map(|join| join.as_millis().min(u128::from(u32::MAX)) as u32)
        .collect();
    let rss_kb_per_viewer = if joined == 0 {
        0.0
    } else {
        rss_loaded_kb.saturating_sub(rss_baseline_kb) as f64 / joined as f64
    };
    Ok(RunReport {
        server: config.target.name().to_owned(),
        viewer_verify: config.verify.name().to_owned(),
        viewers: config.viewers,
        viewers_joined: joined,
        viewers_receiving: receiving,
        bitrate_kbps: config.stream.video_kbps,
        fps: config.stream.fps,
        publisher_kbps: publisher.window_media_bytes as f64 * 8.0 / 1000.0 / window_s,
        window_s,
        packets_forwarded,
        packets_min_viewer: if viewers.len() < config.viewers {
            0
        } else {
            viewers
                .iter()
                .map(|viewer| viewer.packets_in_window)
                .min()
                .unwrap_or(0)
        },
        packets_per_viewer_per_s: if receiving == 0 {
            0.0
        } else {
            packets_forwarded as f64 / receiving as f64 / window_s
        },
        server_cpu_s: server_cpu,
        server_cpu_pct: server_cpu * 100.0 / window_s,
        cpu_us_per_packet: if packets_forwarded == 0 {
            0.0
        } else {
            server_cpu * 1e6 / packets_forwarded as f64
        },
        server_threads: busiest_threads(&threads_start, &threads_end, window_s),
        loadgen_cpu_pct: own_cpu * 100.0 / window_s,
        rss_baseline_kb,
        rss_loaded_kb,
        rss_kb_per_viewer,
        loss_pct_mean,
        loss_pct_worst,
        worst_viewer,
        packets_lost,
        packets_duplicate: viewers
            .iter()
            .map(|viewer| viewer.duplicates_in_window)
            .sum(),
        delay_p50_ms: percentile(&mut delays, 50.0) / 1000.0,
        delay_p99_ms: percentile(&mut delays, 99.0) / 1000.0,
        delay_max_ms: percentile(&mut delays, 100.0) / 1000.0,
        delay_video_p99_ms: percentile(&mut video_delays, 99.0) / 1000.0,
        delay_audio_p99_ms: percentile(&mut audio_delays, 99.0) / 1000.0,
        join_signaling_p95_ms: percentile(&mut signaling, 95.0),
        join_connected_p95_ms: percentile(&mut connects, 95.0),
        join_p50_ms: percentile(&mut joins, 50.0),
        join_p95_ms: percentile(&mut joins, 95.0),
        join_max_ms: percentile(&mut joins, 100.0),
        join_failures: failed_viewers,
        server_metrics_delta: match (&metrics_before, &metrics_after) {
            (Some(before), Some(after)) => counter_deltas(before, after),
            _ => Default::default(),
        },
        errors: errors.into_iter().take(MAX_ERRORS_REPORTED).collect(),
    })
}

/// Most threads listed in the report.
const MAX_THREADS_REPORTED: usize = 6;

/// "name: pct" of the threads that used the most CPU between the two samples.
fn busiest_threads(
    start: &[(u32, String, Duration)],
    end: &[(u32, String, Duration)],
    window_s: f64,
) -> Vec<String> {
    let mut used: Vec<(f64, &str)> = end
        .iter()
        .map(|(tid, name, time)| {
            let before = start
                .iter()
                .find(|(old, _, _)| old == tid)
                .map_or(Duration::ZERO, |(_, _, time)| *time);
            (
                time.saturating_sub(before).as_secs_f64() * 100.0 / window_s,
                name.as_str(),
            )
        })
        .filter(|(pct, _)| *pct > 0.0)
        .collect();
    used.sort_by(|a, b| b.0.total_cmp(&a.0));
    let shown: Vec<String> = used
        .iter()
        .take(MAX_THREADS_REPORTED)
        .map(|(pct, name)| format!("{name}: {pct:.0}%"))
        .collect();
    let rest: f64 = used
        .iter()
        .skip(MAX_THREADS_REPORTED)
        .map(|(pct, _)| pct)
        .sum();
    let mut shown = shown;
    if used.len() > MAX_THREADS_REPORTED {
        shown.push(format!(
            "{} other threads: {rest:.0}%",
            used.len() - MAX_THREADS_REPORTED
        ));
    }
    shown
}

fn join_viewer(
    config: &RunConfig,
    crypto: &Crypto,
    index: usize,
    janus_feed: Option<u64>,
    shared: &Arc<Shared>,
) -> Result<(Peer, KeptSocket), LoadgenError> {
    let join_started = Instant::now();
    let (mut rtc, socket, local) = new_bot(crypto, config.bind_ip, true)?;
    let kept = match &config.target {
        target @ ServerTarget::PrivateHub { .. } => {
            let offer = make_offer(&mut rtc, Direction::RecvOnly, false)?;
            privatehub_join(
                target,
                MediaRole::Watch,
                &format!("bench-viewer-{index}"),
                &mut rtc,
                offer,
            )?
        }
        ServerTarget::Janus { ws_url, room } => {
            let feed = janus_feed.ok_or_else(|| LoadgenError::Setup("no Janus feed".into()))?;
            janus_watch(ws_url, *room, feed, &mut rtc)?
        }
    };
    let peer = Peer::new(
        rtc,
        mio::net::UdpSocket::from_std(socket),
        local,
        Role::Viewer(Box::new(ViewerState::new(
            index,
            join_started,
            shared.clone(),
            config.verify,
        ))),
        shared.clone(),
    );
    Ok((peer, kept))
}

fn keep_sockets(
    receiver: std::sync::mpsc::Receiver<KeptSocket>,
    shared: &Shared,
    hard_deadline: Instant,
) {
    let mut sockets: Vec<KeptSocket> = Vec::new();
    let mut last_keepalive = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
        while let Ok(socket) = receiver.try_recv() {
            sockets.push(socket);
        }
        for socket in &mut sockets {
            socket.drain();
        }
        if last_keepalive.elapsed() >= KEEPALIVE_EVERY {
            last_keepalive = Instant::now();
            for socket in &mut sockets {
                socket.keepalive();
            }
        }
        std::thread::sleep(KEEPER_TICK);
    }
    while let Ok(socket) = receiver.try_recv() {
        sockets.push(socket);
    }
    for socket in sockets {
        socket.close();
    }
}

#[cfg(test)]
mod tests {
    //! A viewer bot against an in-process str0m sender set up like the SFU's viewer side
    //! (ICE-lite, VP8 with RTX + Opus, frame mode), over loopback UDP: what each
    //! verification mode reports, and what the sender sees (NACKs, receiver-report loss).

    use std::net::UdpSocket;

    use str0m::change::SdpOffer;
    use str0m::format::Codec;
    use str0m::media::{Frequency, MediaKind, MediaTime};
    use str0m::net::{Protocol, Receive};
    use str0m::{Event, Input, Output};

    use super::*;
    use crate::payload::{audio_packet, vp8_frame};

    /// What the sender saw: NACKs received and the highest receiver-report loss.
    #[derive(Debug, Default)]
    struct SenderView {
        nacks: u64,
        worst_reported_loss: f32,
        frames: u64,
    }

    fn run_viewer(verify: VerifyMode, media_for: Duration) -> (ViewerOutcome, SenderView) {
        let crypto = Crypto::new().unwrap();
        let localhost = IpAddr::from([127, 0, 0, 1]);
        let (mut bot, bot_socket, bot_local) = new_bot(&crypto, localhost, true).unwrap();
        let mut changes = bot.sdp_api();
        let audio_mid = changes.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let video_mid = changes.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = changes.apply().unwrap();

        let socket = UdpSocket::bind((localhost, 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        let sender_addr = socket.local_addr().unwrap();
        let mut sender = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(crypto.cert.clone())
            .set_crypto_provider(crypto.provider.clone())
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_stats_interval(Some(Duration::from_millis(200)))
            .build(Instant::now());
        sender.add_local_candidate(Candidate::host(sender_addr, "udp").unwrap());
        let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
        let answer = sender.sdp_api().accept_offer(offer).unwrap();
        bot.sdp_api().accept_answer(pending, answer).unwrap();

        let shared = Arc::new(Shared::new());
        let driver = DriverHandle::spawn(
            "test-viewer".into(),
            shared.clone(),
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        driver.add(Peer::new(
            bot,
            mio::net::UdpSocket::from_std(bot_socket),
            bot_local,
            Role::Viewer(Box::new(ViewerState::new(
                0,
                Instant::now(),
                shared.clone(),
                verify,
            ))),
            shared.clone(),
        ));

        let mut view = SenderView::default();
        let mut buffer = vec![0u8; 2048];
        let mut connected_at = None;
        let mut pts = None;
        let mut next_frame = Instant::now();
        let mut next_audio = Instant::now();
        let mut audio_packets = 0u64;
        let give_up = Instant::now() + Duration::from_secs(10) + media_for;
        loop {
            let now = Instant::now();
            assert!(now < give_up, "the bot never connected");
            if connected_at.is_some_and(|at| now >= at + media_for) {
                break;
            }
            while let Ok((length, source)) = socket.recv_from(&mut buffer) {
                if let Ok(receive) =
                    Receive::new(Protocol::Udp, source, sender_addr, &buffer[..length])
                {
                    sender.handle_input(Input::Receive(now, receive)).unwrap();
                }
            }
            sender.handle_input(Input::Timeout(now)).unwrap();
            if let Some(at) = connected_at {
                let (video_pt, audio_pt) = *pts.get_or_insert_with(|| {
                    let mut pt = |mid, codec| {
                        sender
                            .writer(mid)
                            .unwrap()
                            .payload_params()
                            .find(|params| params.spec().codec == codec)
                            .unwrap()
                            .pt()
                    };
                    (pt(video_mid, Codec::Vp8), pt(audio_mid, Codec::Opus))
                });
                // The window: from 1 s into the media (after the join) to the end.
                if now >= at + Duration::from_secs(1) {
                    let _ = shared.window_start_us.compare_exchange(
                        u64::MAX,
                        epoch_micros(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                if now >= next_frame {
                    next_frame += Duration::from_millis(33);
                    let keyframe = view.frames % 30 == 0;
                    let data = vp8_frame(
                        if keyframe { 12_000 } else { 4_000 },
                        keyframe,
                        epoch_micros(),
                    );
                    let time = MediaTime::new(view.frames * 3000, Frequency::NINETY_KHZ);
                    let writer = sender.writer(video_mid).unwrap();
                    writer.write(video_pt, now, time, data).unwrap();
                    view.frames += 1;
                }
                if now >= next_audio {
                    next_audio += Duration::from_millis(20);
                    let time = MediaTime::new(audio_packets * 960, Frequency::FORTY_EIGHT_KHZ);
                    let writer = sender.writer(audio_mid).unwrap();
                    writer
                        .write(audio_pt, now, time, audio_packet(epoch_micros()))
                        .unwrap();
                    audio_packets += 1;
                }
            }
            loop {
                match sender.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(transmit) => {
                        let _ = socket.send_to(&transmit.contents, transmit.destination);
                    }
                    Output::Event(Event::Connected) => {
                        connected_at = Some(Instant::now());
                        next_frame = Instant::now();
                        next_audio = Instant::now();
                    }
                    Output::Event(Event::MediaEgressStats(stats)) => {
                        view.nacks = view.nacks.max(stats.nacks);
                        if let Some(loss) = stats.loss {
                            view.worst_reported_loss = view.worst_reported_loss.max(loss);
                        }
                    }
                    Output::Event(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the last packets arrive, then close the window and stop the bot.
        std::thread::sleep(Duration::from_millis(100));
        shared
            .window_end_us
            .store(epoch_micros(), Ordering::Relaxed);
        shared.stop.store(true, Ordering::Relaxed);
        let outcome = driver
            .join()
            .into_iter()
            .find_map(|outcome| match outcome {
                PeerOutcome::Viewer(viewer) => Some(viewer),
                PeerOutcome::Publisher(_) => None,
            })
            .unwrap();
        (outcome, view)
    }

    fn check(verify: VerifyMode) -> (ViewerOutcome, SenderView) {
        let (outcome, view) = run_viewer(verify, Duration::from_secs(3));
        let summary = format!("{verify:?}: {outcome:?} {view:?}");
        assert!(
            outcome.connected && outcome.join_time.is_some(),
            "{summary}"
        );
        // ~2 s window: ~60 frames of 4+ packets and ~100 audio packets.
        assert!(outcome.packets_in_window > 250, "{summary}");
        assert_eq!(outcome.lost_in_window, 0, "{summary}");
        assert_eq!(outcome.duplicates_in_window, 0, "{summary}");
        assert_eq!(
            outcome.expected_in_window, outcome.packets_in_window,
            "{summary}"
        );
        assert!(!outcome.video_delays_us.is_empty(), "{summary}");
        assert!(!outcome.audio_delays_us.is_empty(), "{summary}");
        // No NACK, so the sender never retransmits.
        assert_eq!(view.nacks, 0, "{summary}");
        (outcome, view)
    }

    #[test]
    fn sampled_viewer_counts_every_packet_decrypts_a_sample_and_never_nacks() {
        let (full, full_view) = check(VerifyMode::Full);
        let (sampled, sampled_view) = check(VerifyMode::Sampled);
        let summary =
            format!("full: {full:?} {full_view:?}\nsampled: {sampled:?} {sampled_view:?}");
        // Full: every frame and audio packet gives a delay; sampled: about 1 in 16.
        let ratio = |full: usize, sampled: usize| full as f64 / sampled.max(1) as f64;
        let video = ratio(full.video_delays_us.len(), sampled.video_delays_us.len());
        let audio = ratio(full.audio_delays_us.len(), sampled.audio_delays_us.len());
        assert!((8.0..32.0).contains(&video), "video {video}: {summary}");
        assert!((8.0..32.0).contains(&audio), "audio {audio}: {summary}");
        // str0m saw the sampling gaps (its receiver reports claim loss) yet sent no NACK.
        eprintln!("{summary}");
        assert!(full_view.worst_reported_loss < 0.01, "{summary}");
        assert!(sampled_view.worst_reported_loss > 0.5, "{summary}");
    }
}
