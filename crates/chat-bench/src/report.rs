//! The run's figures: delivery (count, loss, delay percentiles), rates, and the app's
//! CPU time per delivered message and memory per socket from /proc, with the kernel's
//! TCP buffer memory (`/proc/net/sockstat`) reported apart.

use std::time::Duration;

use serde::Serialize;

/// One look at the app's process and the kernel's TCP memory.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcSample {
    /// user + system CPU time, µs.
    pub cpu_us: u64,
    pub rss_kb: u64,
    /// TCP socket buffers of the whole machine, KiB.
    pub kernel_tcp_kb: u64,
}

/// Reads /proc for `pid` (zeros where a file cannot be read).
pub fn proc_sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3, utime 14 and stime 15 (clock ticks).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_us = (ticks(11) + ticks(12)) * 10_000;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let pages: u64 = sockstat
        .lines()
        .find(|line| line.starts_with("TCP:"))
        .and_then(|line| {
            line.split_whitespace()
                .skip_while(|word| *word != "mem")
                .nth(1)
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    ProcSample {
        cpu_us,
        rss_kb,
        kernel_tcp_kb: pages * 4,
    }
}

/// [`proc_sample`] of several processes (the instances of one app), added up.
pub fn proc_sample_all(pids: &[u32]) -> ProcSample {
    let samples: Vec<ProcSample> = pids.iter().map(|pid| proc_sample(*pid)).collect();
    ProcSample {
        cpu_us: samples.iter().map(|sample| sample.cpu_us).sum(),
        rss_kb: samples.iter().map(|sample| sample.rss_kb).sum(),
        kernel_tcp_kb: samples.first().map_or(0, |sample| sample.kernel_tcp_kb),
    }
}

/// Delays gathered from every socket.
#[derive(Debug, Default)]
pub struct Samples {
    pub delays_us: Vec<u32>,
    /// Deliveries of messages sent through another app instance.
    pub cross_instance_delays_us: Vec<u32>,
    /// Deliveries to sockets on the sender's own instance.
    pub same_instance_delays_us: Vec<u32>,
    /// Senders' waits from sending to `chat:stored`.
    pub stored_acks_us: Vec<u32>,
}

/// Everything [`Report::build`] needs.
pub struct Inputs {
    /// App instances the sockets were spread over.
    pub instances: usize,
    pub lives: usize,
    pub sockets: usize,
    pub failed_sockets: usize,
    pub join_seconds: f64,
    pub messages_counted: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub measured_for: Duration,
    pub samples: Samples,
    pub before: Option<ProcSample>,
    pub joined: Option<ProcSample>,
    pub window: Option<(ProcSample, ProcSample)>,
    /// This tool's own process over the window (it shares the machine's cores).
    pub tool_window: Option<(ProcSample, ProcSample)>,
    pub viewer_counts: Vec<u32>,
    pub viewer_counts_expected: Vec<u32>,
    pub server_errors: usize,
    pub first_server_error: Option<String>,
    pub stall_seconds: Option<f64>,
    pub storm: Option<StormFigures>,
    /// The app's own delivery histogram over the window: (bound, cumulative count).
    pub app_histogram: Vec<(f64, u64)>,
}

/// The run's report (`--out` writes it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// App instances the sockets were spread over (round robin); with more than one,
    /// the `cross_instance_*` figures are the deliveries that went through Redis.
    pub instances: usize,
    pub lives: usize,
    pub sockets: usize,
    pub failed_sockets: usize,
    pub join_seconds: f64,
    pub messages: u64,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub deliveries_per_second: f64,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    pub cross_instance_deliveries: usize,
    pub cross_instance_delay_p50_ms: Option<f64>,
    pub cross_instance_delay_p99_ms: Option<f64>,
    /// Deliveries to sockets on the sender's own instance.
    pub same_instance_delay_p50_ms: Option<f64>,
    pub same_instance_delay_p99_ms: Option<f64>,
    pub app_cpu_pct: Option<f64>,
    pub load_tool_cpu_pct: Option<f64>,
    pub app_cpu_us_per_delivery: Option<f64>,
    pub app_rss_kb_per_socket: Option<f64>,
    pub kernel_tcp_kb_per_socket: Option<f64>,
    /// The last `live:viewers` count seen in each room.
    pub viewer_counts: Vec<u32>,
    /// What docs/protocol.md's definition gives for the sockets of each room.
    pub viewer_counts_expected: Vec<u32>,
    /// `error` messages the app sent the clients (refusals, rate limits), and the first.
    pub server_errors: usize,
    pub first_server_error: Option<String>,
    /// Senders: from sending to `chat:stored` (the message is saved).
    pub stored_acks: usize,
    pub stored_ack_p50_ms: f64,
    pub stored_ack_p99_ms: f64,
    pub stored_ack_max_ms: f64,
    /// How long the database's write lock was held mid-window (stalled-database runs).
    pub stall_seconds: Option<f64>,
    /// The reconnect storm after the window, if one was asked for.
    pub storm: Option<StormFigures>,
    /// Inside the app (`app_chat_delivery_seconds`, from the broadcast to the socket's
    /// connection taking the message, without the tool's share of the cores): the share
    /// of the window's chat deliveries taken within 100 ms, and the histogram bound
    /// below which 99 % were.
    pub app_delivered_within_100ms_pct: Option<f64>,
    pub app_delivery_p99_at_most_ms: Option<f64>,
}

/// The window's increase of each cumulative bucket.
pub fn histogram_delta(from: &[(f64, u64)], to: &[(f64, u64)]) -> Vec<(f64, u64)> {
    to.iter()
        .map(|(bound, count)| {
            let before = from
                .iter()
                .find(|(earlier, _)| earlier == bound)
                .map_or(0, |(_, count)| *count);
            (*bound, count.saturating_sub(before))
        })
        .collect()
}

/// A reconnect storm: every socket dropped and came back within `spread_seconds`.
#[derive(Debug, Clone, Serialize)]
pub struct StormFigures {
    pub sockets: usize,
    pub spread_seconds: f64,
    /// Until the last socket had its history again.
    pub seconds: f64,
    /// Sockets that got `chat:history` again, and those that did not come back.
    pub rejoined: usize,
    pub lost: usize,
    /// From reconnecting to `chat:history`.
    pub rejoin_p50_ms: f64,
    pub rejoin_p99_ms: f64,
    pub rejoin_max_ms: f64,
    /// `/healthz` answers meanwhile (a failed probe counts 10,000 ms).
    pub health_probes: usize,
    pub health_p50_ms: f64,
    pub health_p99_ms: f64,
    pub health_max_ms: f64,
}

impl StormFigures {
    pub fn build(
        sockets: usize,
        spread: Duration,
        took: Duration,
        mut rejoins_us: Vec<u32>,
        lost: usize,
        mut health_ms: Vec<f64>,
    ) -> StormFigures {
        rejoins_us.sort_unstable();
        health_ms.sort_by(f64::total_cmp);
        let rejoin = |fraction| percentile_us(&rejoins_us, fraction);
        let health = |fraction: f64| {
            if health_ms.is_empty() {
                return 0.0;
            }
            health_ms[((health_ms.len() as f64 - 1.0) * fraction).round() as usize]
        };
        StormFigures {
            sockets,
            spread_seconds: spread.as_secs_f64(),
            seconds: took.as_secs_f64(),
            rejoined: rejoins_us.len(),
            lost,
            rejoin_p50_ms: rejoin(0.5),
            rejoin_p99_ms: rejoin(0.99),
            rejoin_max_ms: rejoin(1.0),
            health_probes: health_ms.len(),
            health_p50_ms: health(0.5),
            health_p99_ms: health(0.99),
            health_max_ms: health(1.0),
        }
    }
}

/// The `fraction` percentile of sorted µs values, in ms.
fn percentile_us(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

impl Report {
    pub fn build(inputs: Inputs) -> Report {
        let mut delays = inputs.samples.delays_us;
        delays.sort_unstable();
        let mut cross = inputs.samples.cross_instance_delays_us;
        cross.sort_unstable();
        let mut same = inputs.samples.same_instance_delays_us;
        same.sort_unstable();
        let several = inputs.instances > 1;
        let split =
            |sorted: &[u32], fraction: f64| several.then(|| percentile_us(sorted, fraction));
        let percentile = |fraction: f64| percentile_us(&delays, fraction);
        let mut acks = inputs.samples.stored_acks_us;
        acks.sort_unstable();
        let seconds = inputs.measured_for.as_secs_f64().max(1e-3);
        let window_cpu = inputs
            .window
            .map(|(start, end)| end.cpu_us.saturating_sub(start.cpu_us) as f64);
        let per_socket = |pick: fn(&ProcSample) -> u64| {
            inputs.before.zip(inputs.joined).map(|(before, joined)| {
                (pick(&joined) as f64 - pick(&before) as f64) / inputs.sockets.max(1) as f64
            })
        };
        Report {
            instances: inputs.instances,
            cross_instance_deliveries: cross.len(),
            cross_instance_delay_p50_ms: split(&cross, 0.5),
            cross_instance_delay_p99_ms: split(&cross, 0.99),
            same_instance_delay_p50_ms: split(&same, 0.5),
            same_instance_delay_p99_ms: split(&same, 0.99),
            lives: inputs.lives,
            sockets: inputs.sockets,
            failed_sockets: inputs.failed_sockets,
            join_seconds: inputs.join_seconds,
            messages: inputs.messages_counted,
            deliveries_expected: inputs.deliveries_expected,
            deliveries: inputs.deliveries,
            lost: inputs.deliveries_expected.saturating_sub(inputs.deliveries),
            deliveries_per_second: inputs.deliveries as f64 / seconds,
            delay_p50_ms: percentile(0.5),
            delay_p99_ms: percentile(0.99),
            delay_max_ms: percentile(1.0),
            app_cpu_pct: window_cpu.map(|cpu| cpu / seconds / 1e4),
            load_tool_cpu_pct: inputs
                .tool_window
                .map(|(start, end)| end.cpu_us.saturating_sub(start.cpu_us) as f64 / seconds / 1e4),
            app_cpu_us_per_delivery: window_cpu
                .filter(|_| inputs.deliveries > 0)
                .map(|cpu| cpu / inputs.deliveries as f64),
            app_rss_kb_per_socket: per_socket(|sample| sample.rss_kb),
            kernel_tcp_kb_per_socket: per_socket(|sample| sample.kernel_tcp_kb),
            viewer_counts: inputs.viewer_counts,
            viewer_counts_expected: inputs.viewer_counts_expected,
            server_errors: inputs.server_errors,
            first_server_error: inputs.first_server_error,
            stored_acks: acks.len(),
            stored_ack_p50_ms: percentile_us(&acks, 0.5),
            stored_ack_p99_ms: percentile_us(&acks, 0.99),
            stored_ack_max_ms: percentile_us(&acks, 1.0),
            stall_seconds: inputs.stall_seconds,
            storm: inputs.storm,
            app_delivered_within_100ms_pct: histogram_share(&inputs.app_histogram, 0.1),
            app_delivery_p99_at_most_ms: histogram_bound(&inputs.app_histogram, 0.99),
        }
    }
}

/// The share (%) of observations at most `bound` seconds.
fn histogram_share(histogram: &[(f64, u64)], bound: f64) -> Option<f64> {
    let total = histogram.last()?.1;
    let within = histogram.iter().find(|(upper, _)| *upper == bound)?.1;
    (total > 0).then(|| within as f64 * 100.0 / total as f64)
}

/// The smallest bucket bound (ms) with at least `fraction` of the observations.
fn histogram_bound(histogram: &[(f64, u64)], fraction: f64) -> Option<f64> {
    let total = histogram.last()?.1;
    if total == 0 {
        return None;
    }
    histogram
        .iter()
        .find(|(_, count)| *count as f64 >= fraction * total as f64)
        .map(|(bound, _)| bound * 1000.0)
}
