//! Recording lives as they are forwarded, without decoding: the publisher's packets go
//! (bounded, never blocking a media worker) to one recorder thread that puts frames
//! together and writes WebM or MP4 files; the catalog tells the app what exists, the HTTP
//! handler serves files to holders of a replay token.
//!
//! - `frames.rs`: VP8 frames and H.264 access units from packets, RTP time to
//!   milliseconds; `h264.rs`: the picture size in a sequence parameter set;
//! - `session.rs`: one live's recording (layer, interleaving, clusters);
//! - `file.rs`, `webm.rs`, `mp4.rs`: the containers (WebM for VP8, fragmented MP4 for
//!   H.264), and the repair of files cut short;
//! - `catalog.rs`: the directory's reports and the retention choice;
//! - `serve.rs`: `GET /recordings/{id}.webm?token=` and the app's delete call;
//! - `sync.rs`: the reports sent to the app.

mod catalog;
mod file;
mod frames;
mod h264;
mod mp4;
pub mod serve;
mod session;
pub mod sync;
mod webm;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use privatehub_protocol::LiveId;
use privatehub_protocol::recordings::{
    RecordingContainer, RecordingId, RecordingReport, RecordingState,
};

pub use catalog::Catalog;
pub use file::scans as recording_scans;
use session::{LiveRecording, Want};

use crate::config::RecordingSettings;
use crate::metrics::Metrics;
use crate::sfu::Packet;
use crate::sfu::layers::LayerKey;

/// Packets (and notices) the recorder may be behind by before it drops them: about two
/// seconds of a few lives.
const INPUT_CAPACITY: usize = 8_192;
/// A recording whose publisher left closes when none is back this soon.
const CLOSE_AFTER_LEFT: Duration = Duration::from_secs(5);
/// A recording that got no packet this long closes.
const CLOSE_AFTER_SILENCE: Duration = Duration::from_secs(30);
/// How often progress (duration, size) is put in the report.
const REPORT_EVERY: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(30);
const FREE_SPACE_EVERY: Duration = Duration::from_secs(1);

/// What reaches the recorder thread.
pub enum RecorderInput {
    Packet(Arc<Packet>),
    /// The publisher of `live` was removed (left, replaced, lost).
    PublisherLeft(LiveId),
    /// Delete these recordings (their creator did, in the app).
    Delete(Vec<RecordingId>),
    /// The server stops: close every file, then say so.
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// A keyframe the recorder needs from a live's publisher.
pub type KeyframeWanted = (LiveId, LayerKey);

/// The handle the media workers, HTTP handlers and the sync task hold.
#[derive(Clone)]
pub struct Recorder {
    input: SyncSender<RecorderInput>,
    pub catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// Opens the directory, closes recordings a stopped server left open, and starts the
    /// recorder thread. Keyframe requests go out on `keyframes`.
    pub fn start(
        settings: RecordingSettings,
        metrics: Arc<Metrics>,
        keyframes: tokio::sync::mpsc::UnboundedSender<KeyframeWanted>,
    ) -> std::io::Result<Recorder> {
        let catalog = Arc::new(Catalog::open(&settings.dir)?);
        repair_left_open(&catalog, &metrics);
        let (input, receiver) = std::sync::mpsc::sync_channel(INPUT_CAPACITY);
        let thread = RecorderThread {
            settings,
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            keyframes,
            lives: HashMap::new(),
            low_space: false,
        };
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || thread.run(receiver))?;
        Ok(Recorder {
            input,
            catalog,
            metrics,
        })
    }

    /// Stops serving these recordings now; [`RecorderInput::Delete`] removes them.
    pub fn forget(&self, ids: &[privatehub_protocol::recordings::RecordingId]) {
        self.catalog.hide(ids);
    }

    /// Closes every recording in progress (seek index, duration), waiting at most
    /// `timeout`; one not closed by then is repaired at the next start.
    pub fn shutdown(&self, timeout: Duration) {
        let (done, closed) = std::sync::mpsc::channel();
        if self
            .input
            .send_timeout_compat(RecorderInput::Shutdown(done), timeout)
        {
            let _ = closed.recv_timeout(timeout);
        }
    }

    /// Hands over a publisher packet; never blocks (a full queue drops it, counted).
    pub fn offer(&self, input: RecorderInput) {
        match self.input.try_send(input) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.recording.packets_dropped.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

trait SendTimeout {
    fn send_timeout_compat(&self, input: RecorderInput, timeout: Duration) -> bool;
}

impl SendTimeout for SyncSender<RecorderInput> {
    /// `SyncSender` has no timed send: retry a full queue until `timeout`.
    fn send_timeout_compat(&self, mut input: RecorderInput, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.try_send(input) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    input = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Closes the files of recordings still marked in progress (the server was stopped
/// or killed while writing): what is whole plays, with its duration and seek index.
fn repair_left_open(catalog: &Catalog, metrics: &Metrics) {
    for mut report in catalog.all() {
        if report.state != RecordingState::Recording {
            continue;
        }
        let path = catalog.media_path(&report.id, report.container);
        // A file damaged on disk must not stop the server from starting.
        let repaired = std::panic::catch_unwind(|| file::repair(&path, report.container))
            .unwrap_or_else(|_| Err(std::io::Error::other("the repair of this file failed")));
        match repaired {
            Ok(repaired) => {
                tracing::info!(
                    recording = %report.id,
                    duration_ms = repaired.duration_ms,
                    dropped_bytes = repaired.dropped_bytes,
                    "recording left open by the last run closed"
                );
                report.duration_ms = repaired.duration_ms as i64;
                report.bytes = repaired.bytes;
                report.state = RecordingState::Finished;
                metrics.recording.repaired.fetch_add(1, Relaxed);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // Never got a header: nothing was recorded.
                report.state = RecordingState::Deleted;
                report.bytes = 0;
            }
            Err(error) => {
                tracing::error!(recording = %report.id, %error, "recording left open could not be repaired; it plays up to its last whole cluster");
                report.state = RecordingState::Stopped;
            }
        }
        if let Err(error) = catalog.update(report) {
            tracing::error!(%error, "recordings: a report could not be written");
        }
    }
}

struct RecorderThread {
    settings: RecordingSettings,
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    keyframes: tokio::sync::mpsc::UnboundedSender<KeyframeWanted>,
    lives: HashMap<LiveId, Live>,
    /// Free space is under the floor: nothing is written.
    low_space: bool,
}

struct Live {
    recording: LiveRecording,
    last_report: Instant,
    last_bytes: u64,
}

impl RecorderThread {
    fn run(mut self, receiver: Receiver<RecorderInput>) {
        let mut next_retention = Instant::now();
        let mut next_space_check = Instant::now();
        let mut wants = Vec::new();
        loop {
            match receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(input) => {
                    self.handle(input, &mut wants);
                    while let Ok(input) = receiver.try_recv() {
                        self.handle(input, &mut wants);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            for Want::Keyframe(live, layer) in wants.drain(..) {
                let _ = self.keyframes.send((live, layer));
            }
            let now = Instant::now();
            if now >= next_space_check {
                next_space_check = now + FREE_SPACE_EVERY;
                self.check_free_space(now);
            }
            self.tick(now);
            if now >= next_retention {
                next_retention = now + RETENTION_EVERY;
                self.apply_retention();
            }
        }
        let now = Instant::now();
        for live in self.lives.keys().copied().collect::<Vec<_>>() {
            self.close(live, now);
        }
    }

    fn handle(&mut self, input: RecorderInput, wants: &mut Vec<Want>) {
        match input {
            RecorderInput::Packet(packet) => self.on_packet(packet, wants),
            RecorderInput::PublisherLeft(live) => {
                if let Some(entry) = self.lives.get_mut(&live) {
                    entry.recording.publisher_left_at = Some(Instant::now());
                }
            }
            RecorderInput::Delete(ids) => {
                for id in ids {
                    self.delete(&id);
                }
            }
            RecorderInput::Shutdown(done) => {
                let now = Instant::now();
                for live in self.lives.keys().copied().collect::<Vec<_>>() {
                    self.close(live, now);
                }
                let _ = done.send(());
            }
        }
    }

    fn on_packet(&mut self, packet: Arc<Packet>, wants: &mut Vec<Want>) {
        if self.low_space {
            return;
        }
        let live = packet.live;
        let entry = self.lives.entry(live).or_insert_with(|| {
            let report = RecordingReport {
                id: RecordingId::from_random(rand::random()),
                live_id: live,
                started_at_ms: unix_ms(SystemTime::now()),
                duration_ms: 0,
                bytes: 0,
                container: RecordingContainer::Webm,
                state: RecordingState::Recording,
            };
            Live {
                recording: LiveRecording::new(report, &packet, self.settings.seek_point_every),
                last_report: packet.received_at,
                last_bytes: 0,
            }
        });
        let had_file = entry.recording.has_file();
        let result = entry.recording.push(self.catalog.dir(), packet, wants);
        if !had_file && entry.recording.has_file() {
            self.metrics.recording.started.fetch_add(1, Relaxed);
            self.metrics.recording.in_progress.fetch_add(1, Relaxed);
            let report = entry.recording.report.clone();
            if let Err(error) = self.catalog.update(report) {
                tracing::error!(%error, "recordings: a report could not be written");
            }
        }
        if let Err(error) = result {
            self.metrics.recording.write_errors.fetch_add(1, Relaxed);
            tracing::error!(
                live = %live,
                recording = %entry.recording.report.id,
                %error,
                "recording stopped by a write error; the live goes on, and what was written plays"
            );
            self.finish(live, Instant::now());
        }
    }

    /// Progress reports, and recordings whose publisher is gone closed.
    fn tick(&mut self, now: Instant) {
        let mut to_close = Vec::new();
        let mut to_stop = Vec::new();
        for (live, entry) in &mut self.lives {
            let recording = &mut entry.recording;
            let silent = now.saturating_duration_since(recording.last_packet_at);
            let left = recording
                .publisher_left_at
                .is_some_and(|at| now.saturating_duration_since(at) >= CLOSE_AFTER_LEFT);
            if left || silent >= CLOSE_AFTER_SILENCE {
                to_close.push(*live);
                continue;
            }
            if !recording.stopped
                && let Err(error) = recording.release(now, false)
            {
                tracing::error!(%live, %error, "recording stopped by a write error; the live goes on");
                self.metrics.recording.write_errors.fetch_add(1, Relaxed);
                to_stop.push(*live);
                continue;
            }
            let bytes = recording.report.bytes;
            self.metrics
                .recording
                .bytes_written
                .fetch_add(bytes - entry.last_bytes.min(bytes), Relaxed);
            entry.last_bytes = bytes;
            if recording.has_file()
                && now.saturating_duration_since(entry.last_report) >= REPORT_EVERY
            {
                entry.last_report = now;
                let _ = self.catalog.update(recording.report.clone());
            }
        }
        for live in to_stop {
            self.finish(live, now);
        }
        for live in to_close {
            self.close(live, now);
        }
    }

    /// Closes a live's file (its entry stays, so its later packets start nothing new
    /// until its publisher is gone).
    fn finish(&mut self, live: LiveId, now: Instant) {
        let Some(entry) = self.lives.get_mut(&live) else {
            return;
        };
        let recording = &mut entry.recording;
        if !recording.has_file() {
            recording.stopped = true;
            return;
        }
        recording.finish_file(now);
        let report = recording.report.clone();
        self.metrics.recording.in_progress.fetch_sub(1, Relaxed);
        self.metrics
            .recording
            .bytes_written
            .fetch_add(report.bytes.saturating_sub(entry.last_bytes), Relaxed);
        entry.last_bytes = report.bytes;
        tracing::info!(
            %live,
            recording = %report.id,
            duration_ms = report.duration_ms,
            bytes = report.bytes,
            state = ?report.state,
            "recording closed"
        );
        if let Err(error) = self.catalog.update(report) {
            tracing::error!(%error, "recordings: a report could not be written");
        }
    }

    fn close(&mut self, live: LiveId, now: Instant) {
        self.finish(live, now);
        self.lives.remove(&live);
        // A closed recording may take the total over the limit: apply it now.
        self.apply_retention();
    }

    fn delete(&mut self, id: &RecordingId) {
        if let Some(live) = self
            .lives
            .iter()
            .find(|(_, entry)| &entry.recording.report.id == id)
            .map(|(live, _)| *live)
        {
            self.close(live, Instant::now());
        }
        let Some(report) = self.catalog.get(id) else {
            return;
        };
        if report.state == RecordingState::Deleted {
            let _ = self.catalog.update(report); // tell the app again
            return;
        }
        self.remove_file(report);
        self.metrics
            .recording
            .deleted_on_request
            .fetch_add(1, Relaxed);
    }

    fn remove_file(&self, mut report: RecordingReport) {
        let path = self.catalog.media_path(&report.id, report.container);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::error!(recording = %report.id, %error, "recording could not be deleted");
                return;
            }
        }
        tracing::info!(recording = %report.id, live = %report.live_id, "recording deleted");
        report.state = RecordingState::Deleted;
        report.bytes = 0;
        if let Err(error) = self.catalog.update(report) {
            tracing::error!(%error, "recordings: a report could not be written");
        }
    }

    fn apply_retention(&mut self) {
        let max_age_ms = self.settings.max_age.map(|age| age.as_millis() as i64);
        let victims = self.catalog.retention_victims(
            unix_ms(SystemTime::now()),
            max_age_ms,
            self.settings.max_total_bytes,
        );
        for report in victims {
            tracing::info!(recording = %report.id, started_at_ms = report.started_at_ms, "retention: deleting the oldest recording");
            self.remove_file(report);
            self.metrics
                .recording
                .retention_deletions
                .fetch_add(1, Relaxed);
        }
    }

    fn check_free_space(&mut self, now: Instant) {
        if self.settings.min_free_bytes == 0 {
            return;
        }
        let Some(free) = free_bytes(self.catalog.dir()) else {
            return;
        };
        let low = free < self.settings.min_free_bytes;
        if low && !self.low_space {
            tracing::error!(
                free_bytes = free,
                floor_bytes = self.settings.min_free_bytes,
                dir = %self.catalog.dir().display(),
                "recordings stopped: free space is under MEDIA_RECORDINGS_MIN_FREE_MB; lives go on unrecorded"
            );
            self.metrics
                .recording
                .stopped_low_space
                .fetch_add(1, Relaxed);
            for live in self.lives.keys().copied().collect::<Vec<_>>() {
                self.finish(live, now);
            }
        } else if !low && self.low_space {
            tracing::info!(
                free_bytes = free,
                "recordings resume: free space is back above the floor"
            );
        }
        self.low_space = low;
    }
}

#[cfg(target_os = "linux")]
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(stats.blocks_available() as u64 * stats.fragment_size() as u64)
}

#[cfg(not(target_os = "linux"))]
fn free_bytes(_dir: &std::path::Path) -> Option<u64> {
    None
}
