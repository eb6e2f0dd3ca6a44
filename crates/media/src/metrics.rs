//! Process-wide counters, rendered in the Prometheus text format by `GET /metrics`.
//!
//! Plain atomics: the media workers bump them on the packet path without locking.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

mod recording;
mod transport;
pub use recording::RecordingMetrics;
pub use transport::{ConnectedOver, IceFailure, TcpRefusal, TransportMetrics};

/// Upper bounds (seconds) of the peer set-up time histogram buckets.
const SETUP_BUCKETS: [f64; 9] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0];
/// Upper bounds (seconds) of the forwarding delay histogram buckets.
pub const FORWARD_DELAY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Upper bounds (Mbit/s) of the viewers' bandwidth estimate histogram buckets.
const ESTIMATE_BUCKETS: [f64; 8] = [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0];
/// Labels of the viewers-by-layer gauge, by rank from the top layer; the last is paused.
const LAYER_RANK_LABELS: [&str; 5] = ["top", "second", "third", "fourth", "paused"];

/// A worker's own tally of forwarding delays, merged into [`Metrics`] once per flush so
/// the shared atomics are not touched per datagram.
#[derive(Debug, Default)]
pub struct ForwardDelayTally {
    buckets: [u64; FORWARD_DELAY_BUCKETS.len()],
    count: u64,
    sum_micros: u64,
}

impl ForwardDelayTally {
    pub fn observe(&mut self, delay: Duration) {
        let secs = delay.as_secs_f64();
        if let Some(index) = FORWARD_DELAY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
        {
            self.buckets[index] += 1;
        }
        self.count += 1;
        self.sum_micros += delay.as_micros() as u64;
    }

    /// Adds the tally to `metrics` and clears it.
    pub fn merge_into(&mut self, metrics: &Metrics) {
        if self.count == 0 {
            return;
        }
        for (shared, own) in metrics.forward_delay_buckets.iter().zip(&self.buckets) {
            if *own > 0 {
                shared.fetch_add(*own, Relaxed);
            }
        }
        metrics.forward_delay_count.fetch_add(self.count, Relaxed);
        metrics
            .forward_delay_sum_micros
            .fetch_add(self.sum_micros, Relaxed);
        *self = ForwardDelayTally::default();
    }
}

/// All counters and gauges of the media server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WHIP publishes accepted (`POST /whip` answered 201).
    pub whip_publishes: AtomicU64,
    /// WHEP plays accepted (`POST /whep/...` answered 201).
    pub whep_plays: AtomicU64,
    /// WHIP/WHEP requests refused by the per-client limits (429).
    pub whip_whep_refused: AtomicU64,
    pub rooms: AtomicI64,
    pub publishers: AtomicI64,
    pub viewers: AtomicI64,
    pub peers: AtomicI64,
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub udp_send_errors: AtomicU64,
    pub udp_recv_errors: AtomicU64,
    /// Media packets written to viewers (one per viewer per packet).
    pub packets_forwarded: AtomicU64,
    /// Media packets not written to a viewer because they were too stale (overload).
    pub packets_shed: AtomicU64,
    pub channel_drops: AtomicU64,
    pub keyframe_requests_sent: AtomicU64,
    pub keyframe_requests_from_viewers: AtomicU64,
    pub rtc_panics: AtomicU64,
    pub rtc_errors: AtomicU64,
    pub connect_timeouts: AtomicU64,
    pub stun_bindings_answered: AtomicU64,
    pub stun_bindings_rate_limited: AtomicU64,
    pub signaling_errors: AtomicU64,
    pub publisher_stalls: AtomicU64,
    pub sockets_refused: AtomicU64,
    pub notice_overflows: AtomicU64,
    /// Signaling sockets closed because a send to the client timed out.
    pub send_timeouts: AtomicU64,
    /// Open `/ws` sockets.
    pub signaling_sockets: AtomicI64,
    setup_buckets: [AtomicU64; SETUP_BUCKETS.len()],
    setup_count: AtomicU64,
    setup_sum_micros: AtomicU64,
    /// Not cumulative: per bucket, merged by [`ForwardDelayTally`].
    forward_delay_buckets: [AtomicU64; FORWARD_DELAY_BUCKETS.len()],
    forward_delay_count: AtomicU64,
    forward_delay_sum_micros: AtomicU64,
    /// Viewers by the rank of the layer they get (0: top), the last one paused.
    viewers_by_layer: [AtomicI64; LAYER_RANK_LABELS.len()],
    pub layer_switches_up: AtomicU64,
    pub layer_switches_down: AtomicU64,
    pub video_pauses: AtomicU64,
    pub video_resumes: AtomicU64,
    /// Keyframe requests a layer switch (or resume) caused, before coalescing.
    pub layer_switch_keyframe_requests: AtomicU64,
    estimate_buckets: [AtomicU64; ESTIMATE_BUCKETS.len()],
    estimate_count: AtomicU64,
    estimate_sum_bits: AtomicU64,
    /// Connections by transport, ICE failures, the ICE-TCP listener.
    pub transport: TransportMetrics,
    /// Recordings (see `recording/`).
    pub recording: RecordingMetrics,
}

impl Metrics {
    /// Records the time from the offer reaching the server to `Connected`.
    pub fn observe_setup(&self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bucket, bound) in self.setup_buckets.iter().zip(SETUP_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.setup_count.fetch_add(1, Relaxed);
        self.setup_sum_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// A viewer moved from one layer rank to another (`None`: not counted).
    pub fn move_viewer_rank(&self, from: Option<usize>, to: Option<usize>) {
        if from == to {
            return;
        }
        let last = LAYER_RANK_LABELS.len() - 1;
        if let Some(rank) = from {
            self.viewers_by_layer[rank.min(last)].fetch_sub(1, Relaxed);
        }
        if let Some(rank) = to {
            self.viewers_by_layer[rank.min(last)].fetch_add(1, Relaxed);
        }
    }

    /// One viewer's downstream estimate (sampled every couple of seconds per viewer).
    pub fn observe_viewer_estimate(&self, bits_per_second: u64) {
        let mbps = bits_per_second as f64 / 1e6;
        for (bucket, bound) in self.estimate_buckets.iter().zip(ESTIMATE_BUCKETS) {
            if mbps <= bound {
                bucket.fetch_add(1, Relaxed);
            }
        }
        self.estimate_count.fetch_add(1, Relaxed);
        self.estimate_sum_bits.fetch_add(bits_per_second, Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauges: [(&str, &str, &AtomicI64); 5] = [
            ("media_rooms", "Lives with at least one peer.", &self.rooms),
            (
                "media_publishers",
                "Connected or connecting publishers.",
                &self.publishers,
            ),
            (
                "media_viewers",
                "Connected or connecting viewers.",
                &self.viewers,
            ),
            ("media_peers", "All peers held by the workers.", &self.peers),
            (
                "media_signaling_sockets",
                "Open /ws signaling sockets.",
                &self.signaling_sockets,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                value.load(Relaxed)
            );
        }
        let counters: [(&str, &str, &AtomicU64); 29] = [
            (
                "media_whip_publishes_total",
                "WHIP publishes accepted.",
                &self.whip_publishes,
            ),
            (
                "media_whep_plays_total",
                "WHEP plays accepted.",
                &self.whep_plays,
            ),
            (
                "media_whip_whep_refused_total",
                "WHIP/WHEP requests refused by the per-client limits.",
                &self.whip_whep_refused,
            ),
            (
                "media_packets_in_total",
                "UDP datagrams received.",
                &self.packets_in,
            ),
            (
                "media_bytes_in_total",
                "UDP bytes received.",
                &self.bytes_in,
            ),
            (
                "media_packets_out_total",
                "UDP datagrams sent.",
                &self.packets_out,
            ),
            ("media_bytes_out_total", "UDP bytes sent.", &self.bytes_out),
            (
                "media_udp_send_errors_total",
                "Datagrams the socket refused.",
                &self.udp_send_errors,
            ),
            (
                "media_udp_recv_errors_total",
                "UDP reads that failed (skipped; reads pause briefly if they keep failing).",
                &self.udp_recv_errors,
            ),
            (
                "media_packets_forwarded_total",
                "Media packets written to viewers (one per viewer and packet).",
                &self.packets_forwarded,
            ),
            (
                "media_packets_shed_total",
                "Media packets dropped for a viewer because they were too stale to send (overload).",
                &self.packets_shed,
            ),
            (
                "media_channel_drops_total",
                "Messages dropped because a worker's inbound channel was full.",
                &self.channel_drops,
            ),
            (
                "media_keyframe_requests_sent_total",
                "Keyframe requests sent to publishers.",
                &self.keyframe_requests_sent,
            ),
            (
                "media_keyframe_requests_from_viewers_total",
                "PLI/FIR received from viewers (coalesced).",
                &self.keyframe_requests_from_viewers,
            ),
            (
                "media_rtc_panics_total",
                "Peers removed because their Rtc panicked.",
                &self.rtc_panics,
            ),
            (
                "media_rtc_errors_total",
                "Peers removed because their Rtc returned an error.",
                &self.rtc_errors,
            ),
            (
                "media_connect_timeouts_total",
                "Peers removed because they never connected.",
                &self.connect_timeouts,
            ),
            (
                "media_stun_bindings_answered_total",
                "Plain STUN binding requests answered.",
                &self.stun_bindings_answered,
            ),
            (
                "media_stun_bindings_rate_limited_total",
                "Plain STUN binding requests ignored by the rate limit.",
                &self.stun_bindings_rate_limited,
            ),
            (
                "media_signaling_errors_total",
                "Error messages sent on signaling sockets.",
                &self.signaling_errors,
            ),
            (
                "media_publisher_stalls_total",
                "Times a connected publisher's video stopped arriving.",
                &self.publisher_stalls,
            ),
            (
                "media_signaling_sockets_refused_total",
                "/ws sockets refused by the per-IP limits (rate_limited).",
                &self.sockets_refused,
            ),
            (
                "media_notice_overflows_total",
                "Signaling sockets closed because they fell too far behind reading notices.",
                &self.notice_overflows,
            ),
            (
                "media_layer_switches_up_total",
                "Viewers switched to a higher simulcast layer.",
                &self.layer_switches_up,
            ),
            (
                "media_layer_switches_down_total",
                "Viewers switched to a lower simulcast layer.",
                &self.layer_switches_down,
            ),
            (
                "media_video_pauses_total",
                "Viewers whose video was paused because no layer fits their link.",
                &self.video_pauses,
            ),
            (
                "media_video_resumes_total",
                "Viewers whose paused video resumed.",
                &self.video_resumes,
            ),
            (
                "media_layer_switch_keyframe_requests_total",
                "Keyframe requests caused by layer switches and resumes, before coalescing.",
                &self.layer_switch_keyframe_requests,
            ),
            (
                "media_signaling_send_timeouts_total",
                "Signaling sockets closed because the client stopped reading (a send timed out).",
                &self.send_timeouts,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
        self.transport.render(&mut out);
        self.recording.render(&mut out);
        if let Some(rss) = resident_memory_bytes() {
            let name = "process_resident_memory_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Resident memory size in bytes.\n# TYPE {name} gauge\n{name} {rss}"
            );
        }
        let name = "media_viewers_by_layer";
        let _ = writeln!(
            out,
            "# HELP {name} Connected viewers by the simulcast layer they get (rank from the top; a live without simulcast counts as top).\n# TYPE {name} gauge"
        );
        for (label, value) in LAYER_RANK_LABELS.iter().zip(&self.viewers_by_layer) {
            let _ = writeln!(out, "{name}{{layer=\"{label}\"}} {}", value.load(Relaxed));
        }
        let estimates = load_all(&self.estimate_buckets);
        write_histogram(
            &mut out,
            "media_viewer_bandwidth_estimate_megabits",
            "Viewers' downstream bandwidth estimates (Mbit/s), sampled every 2 s per estimating viewer.",
            &ESTIMATE_BUCKETS,
            &estimates,
            self.estimate_count.load(Relaxed),
            self.estimate_sum_bits.load(Relaxed),
        );
        let setup = load_all(&self.setup_buckets);
        write_histogram(
            &mut out,
            "media_peer_setup_seconds",
            "Time from offer to ICE+DTLS connected.",
            &SETUP_BUCKETS,
            &setup,
            self.setup_count.load(Relaxed),
            self.setup_sum_micros.load(Relaxed),
        );
        // Forwarding-delay buckets are kept per bucket (see `ForwardDelayTally`).
        let mut cumulative = 0;
        let forward: Vec<u64> = self
            .forward_delay_buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Relaxed);
                cumulative
            })
            .collect();
        write_histogram(
            &mut out,
            "media_forward_delay_seconds",
            "From a publisher packet's receipt to the return of the send carrying it to a viewer.",
            &FORWARD_DELAY_BUCKETS,
            &forward,
            self.forward_delay_count.load(Relaxed),
            self.forward_delay_sum_micros.load(Relaxed),
        );
        out
    }
}

/// The values of `counters`, in order.
fn load_all(counters: &[AtomicU64]) -> Vec<u64> {
    counters
        .iter()
        .map(|counter| counter.load(Relaxed))
        .collect()
}

/// One Prometheus histogram from cumulative bucket counts.
fn write_histogram(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[f64],
    cumulative: &[u64],
    count: u64,
    sum_micros: u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, value) in bounds.iter().zip(cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {value}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {count}");
}

/// Resident set size of this process: `/proc/self/statm`'s second field (pages) times
/// the page size. `None` where procfs is missing (not Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// The page size from the aux vector (`AT_PAGESZ`), read once; 4096 if unreadable.
fn page_size() -> u64 {
    static PAGE_SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        const AT_PAGESZ: u64 = 6;
        const WORD: usize = std::mem::size_of::<usize>();
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        auxv.chunks_exact(2 * WORD)
            .map(|pair| {
                let word = |bytes: &[u8]| {
                    let mut buf = [0u8; 8];
                    buf[..WORD].copy_from_slice(bytes);
                    u64::from_ne_bytes(buf)
                };
                (word(&pair[..WORD]), word(&pair[WORD..]))
            })
            .find(|(key, _)| *key == AT_PAGESZ)
            .map(|(_, value)| value)
            .filter(|size| size.is_power_of_two())
            .unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_and_counters() {
        let m = Metrics::default();
        m.observe_setup(Duration::from_millis(80));
        m.packets_in.fetch_add(3, Relaxed);
        let text = m.render();
        assert!(text.contains("media_packets_in_total 3"));
        assert!(text.contains("media_peer_setup_seconds_bucket{le=\"0.05\"} 0"));
        assert!(text.contains("media_peer_setup_seconds_bucket{le=\"0.1\"} 1"));
        assert!(text.contains("media_peer_setup_seconds_count 1"));
        let mut tally = ForwardDelayTally::default();
        tally.observe(Duration::from_micros(800));
        tally.observe(Duration::from_millis(4));
        tally.observe(Duration::from_secs(2));
        tally.merge_into(&m);
        let text = m.render();
        assert!(text.contains("media_forward_delay_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("media_forward_delay_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("media_forward_delay_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("media_forward_delay_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("media_forward_delay_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("media_forward_delay_seconds_count 3"));
        if cfg!(target_os = "linux") {
            let rss = resident_memory_bytes().unwrap();
            assert!(rss > 1 << 20, "rss {rss}");
            assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
            assert!(page_size() >= 4096);
        }
    }
}
