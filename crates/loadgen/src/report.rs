//! The per-run report the load generator prints as JSON.

use serde::{Deserialize, Serialize};

/// Everything measured in one run against one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `privatehub` or `janus`.
    pub server: String,
    /// How the viewer bots verified what they received: `sampled` (loss from every
    /// packet's clear RTP header; delays only from the 1 in 16 frames str0m decrypted) or
    /// `full` (every packet decrypted). Reports written before the option are `full`.
    #[serde(default = "full_verify")]
    pub viewer_verify: String,
    /// Viewer bots asked for.
    pub viewers: usize,
    /// Viewers whose signaling succeeded.
    pub viewers_joined: usize,
    /// Viewers that received a keyframe.
    pub viewers_receiving: usize,
    /// Video bitrate the publisher was configured for, kbit/s (audio adds ~32).
    pub bitrate_kbps: u32,
    pub fps: u32,
    /// What the publisher actually sent (audio + video payload), kbit/s, in the window.
    pub publisher_kbps: f64,
    /// Length of the measurement window, seconds.
    pub window_s: f64,
    /// Media packets received by all viewers inside the window.
    pub packets_forwarded: u64,
    /// Fewest media packets any viewer received inside the window.
    pub packets_min_viewer: u64,
    /// Media packets per second per receiving viewer.
    pub packets_per_viewer_per_s: f64,
    /// Server CPU (user + system, all threads) over the window, seconds.
    pub server_cpu_s: f64,
    /// Server CPU as a percentage of one core.
    pub server_cpu_pct: f64,
    /// Server CPU per forwarded packet, microseconds.
    pub cpu_us_per_packet: f64,
    /// The busiest server threads over the window: "name: % of a core", busiest first.
    #[serde(default)]
    pub server_threads: Vec<String>,
    /// The load generator's own CPU over the window, % of one core.
    pub loadgen_cpu_pct: f64,
    /// Server RSS with the publisher connected and no viewer, KiB.
    pub rss_baseline_kb: u64,
    /// Server RSS at the end of the window, KiB.
    pub rss_loaded_kb: u64,
    /// (loaded − baseline) / viewers joined, KiB.
    pub rss_kb_per_viewer: f64,
    /// Mean packet loss over viewers, %.
    pub loss_pct_mean: f64,
    /// Loss of the worst viewer, %.
    pub loss_pct_worst: f64,
    /// Index of the worst viewer, if any viewer lost packets.
    pub worst_viewer: Option<usize>,
    pub packets_lost: u64,
    /// Packets received more than once (all viewers, window).
    pub packets_duplicate: u64,
    /// Forwarding delay (publisher send → viewer receive), ms.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
    /// p99 of the first packet of each video frame alone, ms.
    pub delay_video_p99_ms: f64,
    /// p99 of audio packets alone, ms.
    pub delay_audio_p99_ms: f64,
    /// Join time (signaling connect → first keyframe packet), ms, viewers joining in a burst.
    pub join_p50_ms: f64,
    pub join_p95_ms: f64,
    pub join_max_ms: f64,
    /// Part of the join: signaling connect → answer received, p95 ms.
    pub join_signaling_p95_ms: f64,
    /// Part of the join: signaling connect → ICE + DTLS connected, p95 ms.
    pub join_connected_p95_ms: f64,
    /// Viewers whose join failed (signaling error or no keyframe before the join timeout).
    pub join_failures: usize,
    /// Counter deltas over the window from the server's `/metrics` (PrivateHub only).
    #[serde(default)]
    pub server_metrics_delta: std::collections::BTreeMap<String, f64>,
    /// First few signaling errors, for the log.
    pub errors: Vec<String>,
}

fn full_verify() -> String {
    "full".to_owned()
}

/// The `p`-th percentile (0..=100) of `values` (sorted in place), nearest rank.
pub fn percentile<T: Copy + Ord + Into<f64>>(values: &mut [T], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1].into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut values: Vec<u32> = (1..=100).rev().collect();
        assert_eq!(percentile(&mut values, 50.0), 50.0);
        assert_eq!(percentile(&mut values, 99.0), 99.0);
        assert_eq!(percentile(&mut values, 100.0), 100.0);
        assert_eq!(percentile(&mut Vec::<u32>::new(), 50.0), 0.0);
    }
}
