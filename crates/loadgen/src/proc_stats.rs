//! CPU time and resident memory of a process, from `/proc`.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|ticks| *ticks > 0)
        .unwrap_or(100)
}

/// Reads CPU time (user + system, all threads) of processes.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    ticks_per_second: u64,
}

impl Default for CpuClock {
    fn default() -> Self {
        CpuClock {
            ticks_per_second: clock_ticks_per_second(),
        }
    }
}

impl CpuClock {
    /// utime + stime of `pid` (`None`: this process). `None` if the process is gone.
    pub fn cpu_time(&self, pid: Option<u32>) -> Option<Duration> {
        let path = match pid {
            Some(pid) => format!("/proc/{pid}/stat"),
            None => "/proc/self/stat".to_owned(),
        };
        let text = std::fs::read_to_string(path).ok()?;
        self.parse_stat(&text)
    }

    /// utime + stime from the text of a `stat` file.
    fn parse_stat(&self, text: &str) -> Option<Duration> {
        // The command name may contain spaces: fields start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
        let user: u64 = fields.get(11)?.parse().ok()?;
        let system: u64 = fields.get(12)?.parse().ok()?;
        let ticks = user + system;
        Some(Duration::from_micros(
            ticks * 1_000_000 / self.ticks_per_second,
        ))
    }
}

/// CPU time per thread of `pid`: (thread id, thread name, utime + stime).
pub fn thread_cpu_times(clock: &CpuClock, pid: u32) -> Vec<(u32, String, Duration)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .map(|name| name.trim().to_owned())
            .unwrap_or_default();
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(time) = clock.parse_stat(&text) {
            threads.push((tid, name, time));
        }
    }
    threads
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn rss_kb(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_and_memory() {
        let clock = CpuClock::default();
        assert!(clock.cpu_time(None).is_some());
        assert!(rss_kb(None).unwrap() > 0);
        assert!(rss_kb(Some(u32::MAX)).is_none());
    }
}
