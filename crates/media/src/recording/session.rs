//! The recording of one live: which packets are kept (the top simulcast layer, one
//! publisher generation at a time), the frames on one timeline, interleaved in time
//! order and written a cluster at a time (at most a second each, so a kill loses at
//! most about a second).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use privatehub_protocol::LiveId;
use privatehub_protocol::recordings::{RecordingReport, RecordingState};
use str0m::format::Codec;
use str0m::media::MediaKind;

use super::file::{RecordingFile, VideoHeader};
use super::frames::{Frame, FrameAssembler, Timeline, VideoCodec};
use super::mp4::H264Track;
use super::webm::{AUDIO_TRACK, Block, VIDEO_TRACK};
use crate::sfu::Packet;
use crate::sfu::layers::LayerKey;

/// Longest a cluster spans.
const CLUSTER_SPAN_MS: u64 = 1_000;
/// A track silent this long no longer holds the other back in the interleaving.
const TRACK_IDLE: Duration = Duration::from_secs(1);
/// Video waited for before a file with audio only is begun.
const AUDIO_ONLY_AFTER: Duration = Duration::from_secs(3);
/// A keyframe requested at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// Most blocks waiting to be written (before the header, or held by interleaving).
const MAX_QUEUED_BLOCKS: usize = 3_000;
/// How long a recording waits for every simulcast layer's first keyframe before it
/// begins its file (with the largest).
const LAYERS_SETTLE: Duration = Duration::from_secs(1);
/// The layer recorded is replaced when silent this long.
const LAYER_SILENT: Duration = Duration::from_secs(1);

/// What a recording asks of the rest of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Keyframe(LiveId, LayerKey),
}

/// The simulcast layer recorded: the largest picture, switched at a keyframe.
#[derive(Debug, Default)]
struct LayerPick {
    chosen: Option<LayerKey>,
    /// Per layer: last packet, picture area from its latest keyframe.
    seen: Vec<(LayerKey, Instant, u32)>,
}

enum Admit {
    Skip,
    Same,
    Switched,
}

impl LayerPick {
    fn admit(&mut self, packet: &Packet) -> Admit {
        let at = packet.received_at;
        let area = packet.dimensions.map(|(w, h)| u32::from(w) * u32::from(h));
        if let Some(entry) = self
            .seen
            .iter_mut()
            .find(|(layer, ..)| *layer == packet.layer)
        {
            entry.1 = at;
            if let Some(area) = area {
                entry.2 = area;
            }
        } else if self.seen.len() < 8 {
            self.seen.push((packet.layer, at, area.unwrap_or(0)));
        } else {
            return Admit::Skip;
        }
        let area_of = |layer: LayerKey, seen: &[(LayerKey, Instant, u32)]| {
            seen.iter().find(|(l, ..)| *l == layer).map_or(0, |e| e.2)
        };
        match self.chosen {
            Some(chosen) if chosen == packet.layer => Admit::Same,
            Some(chosen) => {
                let silent = self
                    .seen
                    .iter()
                    .find(|(l, ..)| *l == chosen)
                    .is_none_or(|e| at.saturating_duration_since(e.1) >= LAYER_SILENT);
                let larger = area_of(packet.layer, &self.seen) > area_of(chosen, &self.seen);
                if packet.keyframe && (larger || silent) {
                    self.chosen = Some(packet.layer);
                    Admit::Switched
                } else {
                    Admit::Skip
                }
            }
            None if packet.keyframe => {
                self.chosen = Some(packet.layer);
                Admit::Switched
            }
            None => Admit::Skip,
        }
    }
}

/// A recording being written.
pub struct LiveRecording {
    pub report: RecordingReport,
    started_at: Instant,
    generation: u64,
    layers: LayerPick,
    video: FrameAssembler,
    /// The live's video codec, from its first video packet (it picks the container).
    video_codec: Option<VideoCodec>,
    video_clock: Timeline,
    audio_clock: Timeline,
    file: Option<RecordingFile>,
    /// The first keyframe's picture size (and H.264 parameter sets), for the header.
    header_video: Option<VideoHeader>,
    /// Blocks not yet written, in time order.
    queue: Vec<Block>,
    /// Per track (video, audio): its newest block's time and arrival.
    latest: [Option<(u64, Instant)>; 2],
    cluster: Vec<Block>,
    cluster_start_ms: u64,
    seen_audio: bool,
    seen_video: bool,
    pub last_packet_at: Instant,
    pub publisher_left_at: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// When the last video keyframe recorded arrived.
    last_keyframe_at: Option<Instant>,
    /// A keyframe is asked for when none came this long (`MEDIA_RECORDINGS_SEEK_POINT_SECONDS`).
    seek_point_every: Option<Duration>,
    unsupported_logged: bool,
    /// A write failed: nothing more is written.
    pub stopped: bool,
}

impl LiveRecording {
    pub fn new(
        report: RecordingReport,
        first: &Packet,
        seek_point_every: Option<Duration>,
    ) -> Self {
        LiveRecording {
            report,
            started_at: first.received_at,
            generation: first.generation,
            layers: LayerPick::default(),
            video: FrameAssembler::new(VideoCodec::Vp8),
            video_codec: None,
            video_clock: Timeline::new(90_000),
            audio_clock: Timeline::new(48_000),
            file: None,
            header_video: None,
            queue: Vec::new(),
            latest: [None, None],
            cluster: Vec::new(),
            cluster_start_ms: 0,
            seen_audio: false,
            seen_video: false,
            last_packet_at: first.received_at,
            publisher_left_at: None,
            last_keyframe_request: None,
            last_keyframe_at: None,
            seek_point_every,
            unsupported_logged: false,
            stopped: false,
        }
    }

    /// Takes one packet of the live. `Err` is a write error: the recording stopped.
    pub fn push(
        &mut self,
        dir: &Path,
        packet: Arc<Packet>,
        wants: &mut Vec<Want>,
    ) -> io::Result<()> {
        if self.stopped || packet.generation < self.generation {
            return Ok(());
        }
        let now = packet.received_at;
        self.last_packet_at = now;
        self.publisher_left_at = None;
        if packet.generation > self.generation {
            // A new publisher: its own numbering and clock, continuing the timeline.
            self.generation = packet.generation;
            self.layers = LayerPick::default();
            self.video = FrameAssembler::new(self.video_codec.unwrap_or_default());
            self.video_clock.re_anchor();
            self.audio_clock.re_anchor();
        }
        let arrival_ms = now.saturating_duration_since(self.started_at).as_millis() as i64;
        match (packet.kind, packet.params.spec().codec) {
            (MediaKind::Audio, Codec::Opus) => {
                self.seen_audio = true;
                let at_ms = self.audio_clock.place(packet.rtp_time, arrival_ms);
                self.enqueue(Block {
                    track: AUDIO_TRACK,
                    at_ms,
                    keyframe: true,
                    data: packet.payload.to_vec(),
                });
            }
            (MediaKind::Video, codec @ (Codec::Vp8 | Codec::H264)) => {
                let codec = if codec == Codec::H264 {
                    VideoCodec::H264
                } else {
                    VideoCodec::Vp8
                };
                match self.video_codec {
                    None => {
                        self.video_codec = Some(codec);
                        self.video = FrameAssembler::new(codec);
                        if codec == VideoCodec::H264 {
                            self.report.container =
                                privatehub_protocol::recordings::RecordingContainer::Mp4;
                        }
                    }
                    Some(known) if known != codec => {
                        // A publisher with another codec cannot continue this file.
                        return Ok(());
                    }
                    Some(_) => {}
                }
                self.seen_video = true;
                let layer = packet.layer;
                match self.layers.admit(&packet) {
                    Admit::Skip => {}
                    Admit::Same => self.video_packet(packet, arrival_ms),
                    Admit::Switched => {
                        if self.file.is_none() {
                            // Not begun yet: start with the larger layer, not the first.
                            self.queue.retain(|b| b.track != VIDEO_TRACK);
                            self.header_video = None;
                        }
                        self.video = FrameAssembler::new(codec);
                        self.video_packet(packet, arrival_ms);
                    }
                }
                let wanted_layer = self.layers.chosen.unwrap_or(layer);
                // Browsers send a keyframe only when asked: ask every so often, so the
                // file has seek points all through (a seek decodes from the one before).
                let seek_point_due = self.seek_point_every.is_some_and(|every| {
                    self.last_keyframe_at
                        .is_some_and(|at| now.saturating_duration_since(at) >= every)
                });
                if (self.video.wants_keyframe || self.layers.chosen.is_none() || seek_point_due)
                    && self.last_keyframe_request.is_none_or(|at| {
                        now.saturating_duration_since(at) >= KEYFRAME_REQUEST_INTERVAL
                    })
                {
                    self.last_keyframe_request = Some(now);
                    wants.push(Want::Keyframe(self.report.live_id, wanted_layer));
                }
            }
            (_, codec) => {
                if !self.unsupported_logged {
                    self.unsupported_logged = true;
                    tracing::warn!(
                        live = %self.report.live_id,
                        ?codec,
                        "recording: this codec is not recorded (VP8, H.264 and Opus are); the live goes on"
                    );
                }
            }
        }
        self.begin_file(dir, now)?;
        self.release(now, false)
    }

    fn video_packet(&mut self, packet: Arc<Packet>, arrival_ms: i64) {
        let mut frames: Vec<Frame> = Vec::new();
        let started_at = self.started_at;
        self.video.push(packet, &mut frames);
        for frame in frames {
            let frame_arrival = frame
                .received_at
                .saturating_duration_since(started_at)
                .as_millis() as i64;
            let at_ms = self
                .video_clock
                .place(frame.rtp_time, frame_arrival.min(arrival_ms));
            if self.file.is_none() && frame.keyframe && self.header_video.is_none() {
                let (width, height) = frame.dimensions.unwrap_or((640, 360));
                self.header_video = match (self.video_codec, frame.parameter_sets.clone()) {
                    (Some(VideoCodec::H264), Some((sps, pps))) => {
                        Some(VideoHeader::H264(H264Track {
                            width,
                            height,
                            sps,
                            pps,
                        }))
                    }
                    (Some(VideoCodec::H264), None) => None, // an IDR without its parameter sets
                    _ => Some(VideoHeader::Vp8 { width, height }),
                };
            }
            if frame.keyframe {
                self.last_keyframe_at = Some(frame.received_at);
            }
            self.enqueue(Block {
                track: VIDEO_TRACK,
                at_ms,
                keyframe: frame.keyframe,
                data: frame.data,
            });
        }
    }

    fn enqueue(&mut self, block: Block) {
        let slot = usize::from(block.track == AUDIO_TRACK);
        self.latest[slot] = Some((block.at_ms, self.last_packet_at));
        if self.queue.len() >= MAX_QUEUED_BLOCKS {
            self.queue.remove(0);
        }
        let at = self
            .queue
            .partition_point(|queued| queued.at_ms <= block.at_ms);
        self.queue.insert(at, block);
    }

    /// Creates the file once its tracks are known: at the first video keyframe (with
    /// audio if any came), or with audio only when no video came for a while.
    fn begin_file(&mut self, dir: &Path, now: Instant) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let waited = now.saturating_duration_since(self.started_at);
        let video = match &self.header_video {
            // A second for every simulcast layer's first keyframe, so the file begins
            // with the largest.
            Some(header) if waited >= LAYERS_SETTLE => Some(header.clone()),
            None if self.seen_audio && !self.seen_video && waited >= AUDIO_ONLY_AFTER => None,
            _ => return Ok(()),
        };
        let audio = self.seen_audio;
        if video.is_some() {
            // Frames before the first keyframe cannot be decoded.
            let key_ms = self
                .queue
                .iter()
                .find(|b| b.track == VIDEO_TRACK && b.keyframe)
                .map_or(0, |b| b.at_ms);
            self.queue
                .retain(|b| b.track != VIDEO_TRACK || b.at_ms >= key_ms);
        } else {
            self.report.container = privatehub_protocol::recordings::RecordingContainer::Webm;
        }
        if !audio {
            self.queue.retain(|b| b.track != AUDIO_TRACK);
        }
        let path = dir.join(format!(
            "{}.{}",
            self.report.id,
            self.report.container.extension()
        ));
        let created = RecordingFile::create(&path, video.as_ref(), audio);
        self.file = Some(self.stop_on_error(created)?);
        tracing::info!(
            live = %self.report.live_id,
            recording = %self.report.id,
            container = ?self.report.container,
            video = ?video.as_ref().map(VideoHeader::size),
            audio,
            "recording started"
        );
        Ok(())
    }

    fn stop_on_error<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.stopped = true;
            self.report.state = RecordingState::Stopped;
        }
        result
    }

    /// Writes the queued blocks every track has moved past (all of them with `all`).
    pub fn release(&mut self, now: Instant, all: bool) -> io::Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        let watermark = if all {
            u64::MAX
        } else {
            self.latest
                .iter()
                .flatten()
                .filter(|(_, at)| now.saturating_duration_since(*at) < TRACK_IDLE)
                .map(|(ms, _)| *ms)
                .min()
                .unwrap_or(u64::MAX)
        };
        let ready = self.queue.partition_point(|b| b.at_ms <= watermark);
        let blocks: Vec<Block> = self.queue.drain(..ready).collect();
        for block in blocks {
            let starts_cluster = !self.cluster.is_empty()
                && ((block.track == VIDEO_TRACK && block.keyframe)
                    || block.at_ms >= self.cluster_start_ms + CLUSTER_SPAN_MS);
            if starts_cluster {
                self.write_cluster()?;
            }
            if self.cluster.is_empty() {
                self.cluster_start_ms = block.at_ms;
            }
            self.cluster.push(block);
        }
        if all {
            self.write_cluster()?;
        }
        Ok(())
    }

    fn write_cluster(&mut self) -> io::Result<()> {
        let blocks = std::mem::take(&mut self.cluster);
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let has_video = self.header_video.is_some();
        let blocks: Vec<Block> = blocks
            .into_iter()
            .filter(|b| b.track != VIDEO_TRACK || has_video)
            .collect();
        let result = file.append_cluster(self.cluster_start_ms, &blocks);
        self.report.bytes = file.len();
        self.report.duration_ms = file.duration_ms() as i64;
        self.stop_on_error(result)
    }

    /// Writes what is left (unless a write failed) and closes the file: seek index,
    /// duration. Nothing is written after it; the report is final.
    pub fn finish_file(&mut self, now: Instant) {
        if !self.stopped
            && let Err(error) = self.release(now, true)
        {
            tracing::error!(recording = %self.report.id, %error, "recording: the last cluster could not be written");
        }
        self.stopped = true;
        if let Some(file) = self.file.take() {
            let duration = file.duration_ms();
            match file.close() {
                Ok(bytes) => {
                    self.report.bytes = bytes;
                    self.report.duration_ms = duration as i64;
                }
                Err(error) => {
                    tracing::error!(recording = %self.report.id, %error, "recording: could not be closed (it plays, without a seek index until the next start-up)");
                    self.report.state = RecordingState::Stopped;
                }
            }
        }
        if self.report.state == RecordingState::Recording {
            self.report.state = RecordingState::Finished;
        }
    }

    /// Whether the file was begun (a recording that never got a header leaves nothing).
    pub fn has_file(&self) -> bool {
        self.file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use privatehub_protocol::LiveId;
    use str0m::format::{CodecSpec, FormatParams, PayloadParams};
    use str0m::media::{Frequency, Pt, Rid};
    use str0m::rtp::ExtensionValues;

    use super::*;

    fn packet(layer: &str, keyframe: bool, size: Option<(u16, u16)>, at: Instant) -> Packet {
        let spec = CodecSpec {
            codec: Codec::Vp8,
            clock_rate: Frequency::NINETY_KHZ,
            channels: None,
            format: FormatParams::default(),
        };
        Packet {
            live: LiveId(1),
            generation: 1,
            kind: MediaKind::Video,
            pt: Pt::new_with_value(96),
            params: PayloadParams::new(Pt::new_with_value(96), None, spec),
            seq: 1,
            rtp_time: 0,
            marker: true,
            keyframe,
            layer: Some(Rid::from(layer)),
            dimensions: size,
            vp8: None,
            extensions: ExtensionValues::default(),
            received_at: at,
            late_on_arrival: Duration::ZERO,
            payload: vec![0x10, 0x00].into(),
        }
    }

    #[test]
    fn the_largest_layer_is_recorded_and_switched_to_at_its_keyframe() {
        let t0 = Instant::now();
        let mut pick = LayerPick::default();
        // The low layer's keyframe comes first: recorded until a larger one starts.
        assert!(matches!(
            pick.admit(&packet("q", false, None, t0)),
            Admit::Skip
        ));
        assert!(matches!(
            pick.admit(&packet("q", true, Some((320, 180)), t0)),
            Admit::Switched
        ));
        assert!(matches!(
            pick.admit(&packet("f", false, None, t0)),
            Admit::Skip
        ));
        assert!(matches!(
            pick.admit(&packet("f", true, Some((1280, 720)), t0)),
            Admit::Switched
        ));
        assert_eq!(pick.chosen, Some(Some(Rid::from("f"))));
        // A smaller layer's keyframe does not take over while the top one flows...
        let later = t0 + Duration::from_millis(500);
        assert!(matches!(
            pick.admit(&packet("h", true, Some((640, 360)), later)),
            Admit::Skip
        ));
        assert!(matches!(
            pick.admit(&packet("f", false, None, later)),
            Admit::Same
        ));
        // ...but does once the top layer went silent (the browser paused it).
        let silent = later + LAYER_SILENT;
        assert!(matches!(
            pick.admit(&packet("h", true, Some((640, 360)), silent)),
            Admit::Switched
        ));
        assert_eq!(pick.chosen, Some(Some(Rid::from("h"))));
    }
}
