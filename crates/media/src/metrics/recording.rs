//! Counters of the recordings: in progress, bytes written, write errors, retention
//! deletions, packets the recorder had no room for.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};

#[derive(Debug, Default)]
pub struct RecordingMetrics {
    pub in_progress: AtomicI64,
    pub started: AtomicU64,
    pub bytes_written: AtomicU64,
    pub write_errors: AtomicU64,
    pub stopped_low_space: AtomicU64,
    pub retention_deletions: AtomicU64,
    pub deleted_on_request: AtomicU64,
    pub repaired: AtomicU64,
    pub packets_dropped: AtomicU64,
}

impl RecordingMetrics {
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP media_recordings_in_progress Recordings being written.\n\
             # TYPE media_recordings_in_progress gauge\nmedia_recordings_in_progress {}",
            self.in_progress.load(Relaxed)
        );
        let counters: [(&str, &str, &AtomicU64); 8] = [
            (
                "media_recordings_started_total",
                "Recordings begun.",
                &self.started,
            ),
            (
                "media_recording_bytes_written_total",
                "Bytes of recordings written.",
                &self.bytes_written,
            ),
            (
                "media_recording_write_errors_total",
                "Recordings stopped by a write error (disk full, I/O error).",
                &self.write_errors,
            ),
            (
                "media_recordings_stopped_low_space_total",
                "Recordings stopped or not begun for lack of free space.",
                &self.stopped_low_space,
            ),
            (
                "media_recording_retention_deletions_total",
                "Recordings deleted by the retention policy.",
                &self.retention_deletions,
            ),
            (
                "media_recording_deletions_total",
                "Recordings deleted because their creator deleted them in the app.",
                &self.deleted_on_request,
            ),
            (
                "media_recordings_repaired_total",
                "Recordings left open by a stopped server, closed at start-up.",
                &self.repaired,
            ),
            (
                "media_recording_packets_dropped_total",
                "Packets not recorded because the recorder was behind.",
                &self.packets_dropped,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Relaxed)
            );
        }
    }
}
