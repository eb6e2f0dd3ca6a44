//! Samples of both service processes from `/proc` (RSS, open files, threads, CPU), the
//! services' own gauges from `/metrics`, the clients active, and the whole machine's
//! CPU, with the CPU time of every other process seen (what else was running).

use std::collections::BTreeMap;
use std::time::Instant;

use privatehub_loadgen::metrics_scrape::scrape;
use privatehub_loadgen::proc_stats::{CpuClock, rss_kb};
use serde::Serialize;

/// Phase of the run a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Services up, accounts and live being set up, no churn yet.
    Setup,
    /// Churn running, before the memory reference point.
    Warmup,
    /// Churn running, after warm-up.
    Churn,
    /// Every client left; waiting for the services to settle.
    Drain,
}

/// One process at one instant.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessSample {
    pub rss_kb: u64,
    pub open_files: u64,
    pub threads: u64,
    /// CPU used since the previous sample, % of one core.
    pub cpu_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the services started.
    pub t_s: f64,
    pub phase: Phase,
    pub app: ProcessSample,
    pub media: ProcessSample,
    pub app_sockets_open: Option<f64>,
    pub media_peers: Option<f64>,
    pub media_signaling_sockets: Option<f64>,
    pub viewers_active: usize,
    pub chat_sockets_active: usize,
    /// Whole machine, % of all cores.
    pub machine_cpu_pct: f64,
}

/// CPU time of processes other than the services and the soak itself.
#[derive(Debug, Clone, Serialize)]
pub struct OtherProcess {
    pub command: String,
    pub cpu_s: f64,
    pub processes: usize,
}

/// Keeps what the next sample needs (previous CPU times).
pub struct Sampler {
    clock: CpuClock,
    started: Instant,
    app_pid: u32,
    media_pid: u32,
    app_metrics: String,
    media_metrics: String,
    last: Option<(Instant, f64, f64)>,
    last_machine: Option<(u64, u64)>,
    /// pid → (command, CPU seconds when first seen, latest CPU seconds).
    others: BTreeMap<u32, (String, f64, f64)>,
}

impl Sampler {
    pub fn new(
        started: Instant,
        app_pid: u32,
        media_pid: u32,
        app_url: &str,
        media_url: &str,
    ) -> Self {
        Sampler {
            clock: CpuClock::default(),
            started,
            app_pid,
            media_pid,
            app_metrics: format!("{app_url}/metrics"),
            media_metrics: format!("{media_url}/metrics"),
            last: None,
            last_machine: None,
            others: BTreeMap::new(),
        }
    }

    /// Takes one sample (blocking: reads /proc and two HTTP endpoints on loopback).
    pub fn sample(&mut self, phase: Phase, viewers_active: usize, chat: usize) -> Sample {
        let now = Instant::now();
        let cpu = |pid| {
            self.clock
                .cpu_time(Some(pid))
                .map_or(0.0, |time| time.as_secs_f64())
        };
        let (app_cpu, media_cpu) = (cpu(self.app_pid), cpu(self.media_pid));
        let (app_pct, media_pct) = match self.last {
            Some((at, app_before, media_before)) => {
                let wall = (now - at).as_secs_f64().max(1e-3);
                (
                    (app_cpu - app_before) * 100.0 / wall,
                    (media_cpu - media_before) * 100.0 / wall,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, app_cpu, media_cpu));
        let app_gauges = scrape(&self.app_metrics);
        let media_gauges = scrape(&self.media_metrics);
        self.scan_other_processes();
        Sample {
            t_s: (now - self.started).as_secs_f64(),
            phase,
            app: process_sample(self.app_pid, app_pct),
            media: process_sample(self.media_pid, media_pct),
            app_sockets_open: app_gauges.get("app_sockets_open").copied(),
            media_peers: media_gauges.get("media_peers").copied(),
            media_signaling_sockets: media_gauges.get("media_signaling_sockets").copied(),
            viewers_active,
            chat_sockets_active: chat,
            machine_cpu_pct: self.machine_cpu_pct(),
        }
    }

    /// CPU of every process but ours and the services', by command, heaviest first.
    pub fn other_processes(&self) -> Vec<OtherProcess> {
        let mut by_command: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
        for (command, first, last) in self.others.values() {
            let entry = by_command.entry(command).or_default();
            entry.0 += last - first;
            entry.1 += 1;
        }
        let mut list: Vec<OtherProcess> = by_command
            .into_iter()
            .map(|(command, (cpu_s, processes))| OtherProcess {
                command: command.to_owned(),
                cpu_s,
                processes,
            })
            .filter(|process| process.cpu_s > 0.0)
            .collect();
        list.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
        list
    }

    fn machine_cpu_pct(&mut self) -> f64 {
        let Some((busy, total)) = machine_ticks() else {
            return 0.0;
        };
        let pct = match self.last_machine {
            Some((busy_before, total_before)) if total > total_before => {
                (busy - busy_before) as f64 * 100.0 / (total - total_before) as f64
            }
            _ => 0.0,
        };
        self.last_machine = Some((busy, total));
        pct
    }

    /// Records the CPU time of each other process. A process first seen now counts
    /// from now, except the first scan; short-lived ones between scans are missed.
    fn scan_other_processes(&mut self) {
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let first_scan = self.others.is_empty();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
            else {
                continue;
            };
            if pid == own || pid == self.app_pid || pid == self.media_pid {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(command) = stat_command(&stat) else {
                continue;
            };
            let Some(seconds) = self.clock.cpu_time(Some(pid)).map(|t| t.as_secs_f64()) else {
                continue;
            };
            let record = self
                .others
                .entry(pid)
                .or_insert_with(|| (command, if first_scan { seconds } else { 0.0 }, seconds));
            record.2 = seconds;
        }
    }
}

/// The command name (`comm`) in a `/proc/<pid>/stat` line.
fn stat_command(text: &str) -> Option<String> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    Some(text.get(open + 1..close)?.to_owned())
}

/// (busy, total) jiffies of all cores from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

fn process_sample(pid: u32, cpu_pct: f64) -> ProcessSample {
    ProcessSample {
        rss_kb: rss_kb(Some(pid)).unwrap_or(0),
        open_files: open_files(pid),
        threads: status_field(pid, "Threads:").unwrap_or(0),
        cpu_pct,
    }
}

/// Open files of `pid` by kind: `socket`, `pipe`, `anon_inode:[eventpoll]`…, or the
/// file name of a regular file (`privatehub.sqlite-wal`).
pub fn open_files_by_kind(pid: u32) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let kind = match target.split_once(":[") {
            Some((kind, _)) if !target.starts_with('/') => kind.to_owned(),
            _ if target.starts_with("anon_inode:") => target.into_owned(),
            _ => target.rsplit('/').next().unwrap_or_default().to_owned(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

/// Entries of `/proc/<pid>/fd`.
pub fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count() as u64)
        .unwrap_or(0)
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(open_files(pid) >= 3);
        let kinds = open_files_by_kind(pid);
        assert_eq!(
            kinds.values().sum::<u64>() as i64 - open_files(pid) as i64,
            0
        );
        assert!(status_field(pid, "Threads:").unwrap() >= 1);
        assert_eq!(stat_command("1 (a (b)) S 0").as_deref(), Some("a (b)"));
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total);
    }
}
