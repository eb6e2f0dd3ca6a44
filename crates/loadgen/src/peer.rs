//! One bot: a str0m `Rtc`, its UDP socket and what it does with media. The publisher
//! writes stamped frames on a schedule; a viewer counts what it receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpPacket;
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::payload::{StampHeader, audio_packet, epoch_micros, vp8_frame};
use crate::run::Shared;
use crate::sampled::{RtpHead, SampledStream, VerifyMode};

/// Audio packet interval (Opus 20 ms frames).
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// RTP ticks per audio packet at 48 kHz.
const AUDIO_TICKS: u64 = 960;
/// Keyframes are this many times larger than delta frames.
const KEYFRAME_SIZE_FACTOR: usize = 3;
/// Keyframes asked for by PLI/FIR are sent at most this often.
const KEYFRAME_REQUEST_MIN_GAP: Duration = Duration::from_millis(200);
/// At most this many overdue frames are sent at once after a stall; the rest are skipped.
const MAX_CATCH_UP_FRAMES: u32 = 3;

/// The publisher's synthetic stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    /// Video bitrate in kbit/s (audio adds about 32 kbit/s).
    pub video_kbps: u32,
    pub fps: u32,
    /// A keyframe every this many frames, besides those asked for.
    pub keyframe_interval_frames: u32,
    pub audio: bool,
    /// Send video as three simulcast layers (rids `q`, `h`, `f` at 1/10, 1/3 and all of
    /// `video_kbps`), as the start-live page does.
    pub simulcast: bool,
}

/// The simulcast layers the publisher bot sends: rid and share of `video_kbps`.
pub const SIMULCAST_LAYERS: [(&str, f64); 3] = [("q", 0.1), ("h", 1.0 / 3.0), ("f", 1.0)];

impl StreamSpec {
    /// Sizes of (delta frame, keyframe) so that a GOP averages the bitrate.
    fn frame_sizes(&self) -> (usize, usize) {
        let per_frame = self.video_kbps as usize * 1000 / 8 / self.fps.max(1) as usize;
        let gop = self.keyframe_interval_frames.max(1) as usize;
        let delta = (per_frame * gop / (gop + KEYFRAME_SIZE_FACTOR - 1)).max(64);
        (delta, delta * KEYFRAME_SIZE_FACTOR)
    }
}

/// What the publisher bot did.
#[derive(Debug, Clone, Default)]
pub struct PublisherOutcome {
    pub connected: bool,
    pub frames_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub audio_packets_sent: u64,
    pub media_bytes_sent: u64,
    /// Payload bytes written inside the measurement window.
    pub window_media_bytes: u64,
    pub datagrams_sent: u64,
}

/// What one viewer bot saw.
#[derive(Debug, Clone, Default)]
pub struct ViewerOutcome {
    pub index: usize,
    pub connected: bool,
    /// Signaling connect to first keyframe packet.
    pub join_time: Option<Duration>,
    /// Signaling connect to the server's answer (the bot handed to its driver).
    pub signaling_time: Option<Duration>,
    /// Signaling connect to ICE + DTLS connected.
    pub connect_time: Option<Duration>,
    /// Media packets received inside the measurement window.
    pub packets_in_window: u64,
    /// Packets expected in the window from sequence numbers (first..=highest per SSRC).
    pub expected_in_window: u64,
    pub lost_in_window: u64,
    /// Packets received twice (sequence number already seen) inside the window.
    pub duplicates_in_window: u64,
    /// Forwarding delays in microseconds of the first packet of each video frame.
    pub video_delays_us: Vec<u32>,
    /// Forwarding delays in microseconds of every audio packet.
    pub audio_delays_us: Vec<u32>,
}

pub enum Role {
    Publisher(Box<PublisherState>),
    Viewer(Box<ViewerState>),
}

pub struct PublisherState {
    video_mid: Mid,
    audio_mid: Mid,
    video_pt: Option<Pt>,
    audio_pt: Option<Pt>,
    spec: StreamSpec,
    next_frame: Option<Instant>,
    next_audio: Option<Instant>,
    frame_interval: Duration,
    keyframe_wanted: bool,
    last_keyframe: Option<Instant>,
    outcome: PublisherOutcome,
}

impl PublisherState {
    pub fn new(video_mid: Mid, audio_mid: Mid, spec: StreamSpec) -> Self {
        PublisherState {
            video_mid,
            audio_mid,
            video_pt: None,
            audio_pt: None,
            spec,
            next_frame: None,
            next_audio: None,
            frame_interval: Duration::from_micros(1_000_000 / u64::from(spec.fps.max(1))),
            keyframe_wanted: true,
            last_keyframe: None,
            outcome: PublisherOutcome::default(),
        }
    }
}

pub struct ViewerState {
    shared: Arc<Shared>,
    join_started: Instant,
    outcome: ViewerOutcome,
    streams: Vec<SequenceTracker>,
    verify: VerifyMode,
    /// Sampled mode: per-SSRC sequence extension and sampling state.
    sampled: Vec<SampledStream>,
    /// Sampled mode: the negotiated RTX payload types (read at the first RTP packet);
    /// such packets always go to str0m and are not tracked (str0m maps them to their
    /// main stream).
    rtx_pts: Option<Vec<u8>>,
}

impl ViewerState {
    pub fn new(
        index: usize,
        join_started: Instant,
        shared: Arc<Shared>,
        verify: VerifyMode,
    ) -> Self {
        ViewerState {
            shared,
            join_started,
            outcome: ViewerOutcome {
                index,
                signaling_time: Some(join_started.elapsed()),
                ..ViewerOutcome::default()
            },
            streams: Vec::with_capacity(2),
            verify,
            sampled: Vec::with_capacity(2),
            rtx_pts: None,
        }
    }

    /// Sampled mode: counts one SRTP packet from its clear header and says whether it goes
    /// on to str0m, and the index of its [`SampledStream`] if that still needs its NACKs
    /// suppressed.
    fn on_rtp_head(&mut self, head: &RtpHead, rtc: &Rtc, now_us: u64) -> (bool, Option<usize>) {
        let rtx_pts = self.rtx_pts.get_or_insert_with(|| {
            rtc.codec_config()
                .params()
                .iter()
                .filter_map(|params| params.resend())
                .map(|pt| *pt)
                .collect()
        });
        if rtx_pts.contains(&head.payload_type) {
            return (true, None);
        }
        let joined = self.outcome.join_time.is_some();
        let (index, seq, forward) = match self
            .sampled
            .iter()
            .position(|stream| stream.ssrc == head.ssrc)
        {
            Some(index) => {
                let stream = &mut self.sampled[index];
                let send_all = !joined || !stream.nack_suppressed;
                let (seq, forward) = stream.on_packet(head, now_us, send_all);
                (index, seq, forward)
            }
            None => {
                let (stream, seq) = SampledStream::new(head, now_us);
                self.sampled.push(stream);
                (self.sampled.len() - 1, seq, true)
            }
        };
        if self.shared.in_window(now_us) {
            let duplicate = match self.streams.iter_mut().find(|s| s.ssrc == head.ssrc) {
                Some(stream) => stream.record(seq),
                None => {
                    self.streams.push(SequenceTracker::new(head.ssrc, seq));
                    false
                }
            };
            if !duplicate {
                self.outcome.packets_in_window += 1;
            }
        }
        let suppress = (forward && !self.sampled[index].nack_suppressed).then_some(index);
        (forward, suppress)
    }

    fn on_rtp(&mut self, packet: &RtpPacket, now: Instant, now_us: u64) {
        let stamp = StampHeader::find(&packet.payload);
        if self.outcome.join_time.is_none()
            && stamp.is_some_and(|stamp| stamp.video && stamp.keyframe)
        {
            self.outcome.join_time = Some(now - self.join_started);
            self.shared
                .viewers_with_keyframe
                .fetch_add(1, Ordering::Relaxed);
        }
        if !self.shared.in_window(now_us) {
            return;
        }
        // Sampled mode counted the packet from its clear header already.
        if self.verify == VerifyMode::Full {
            self.outcome.packets_in_window += 1;
            let ssrc = *packet.header.ssrc;
            let seq = *packet.seq_no;
            match self.streams.iter_mut().find(|stream| stream.ssrc == ssrc) {
                Some(stream) => {
                    stream.record(seq);
                }
                None => self.streams.push(SequenceTracker::new(ssrc, seq)),
            }
        }
        if let Some(stamp) = stamp {
            let delay = now_us.saturating_sub(stamp.sent_micros);
            let delay = delay.min(u64::from(u32::MAX)) as u32;
            if stamp.video {
                self.outcome.video_delays_us.push(delay);
            } else {
                self.outcome.audio_delays_us.push(delay);
            }
        }
    }

    fn finish(mut self) -> ViewerOutcome {
        for stream in &self.streams {
            self.outcome.expected_in_window += stream.highest - stream.first + 1;
            self.outcome.lost_in_window += stream.lost();
            self.outcome.duplicates_in_window += stream.duplicates;
        }
        self.outcome
    }
}

/// Sequence numbers of one SSRC seen inside the window, as a bitmap so duplicates
/// (retransmissions that raced the original) do not hide losses.
struct SequenceTracker {
    ssrc: u32,
    first: u64,
    highest: u64,
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
}

/// Sequence numbers further than this past the first are ignored (about 10 minutes of
/// a 2 Mbit/s stream), bounding the bitmap.
const MAX_TRACKED_SEQUENCE_SPAN: u64 = 1 << 18;

impl SequenceTracker {
    fn new(ssrc: u32, seq: u64) -> Self {
        let mut tracker = SequenceTracker {
            ssrc,
            first: seq,
            highest: seq,
            seen: Vec::with_capacity(64),
            received: 0,
            duplicates: 0,
        };
        tracker.record(seq);
        tracker
    }

    /// Records one packet; true if it was a duplicate.
    fn record(&mut self, seq: u64) -> bool {
        // Reordered packets from before the window start are not counted.
        if seq < self.first || seq - self.first >= MAX_TRACKED_SEQUENCE_SPAN {
            return false;
        }
        let offset = (seq - self.first) as usize;
        let (word, bit) = (offset / 64, offset % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return true;
        }
        self.seen[word] |= 1 << bit;
        self.highest = self.highest.max(seq);
        self.received += 1;
        false
    }

    fn lost(&self) -> u64 {
        (self.highest - self.first + 1).saturating_sub(self.received)
    }
}

/// A bot and its socket.
pub struct Peer {
    pub rtc: Rtc,
    pub socket: mio::net::UdpSocket,
    pub local: SocketAddr,
    pub role: Role,
    shared: Arc<Shared>,
    next_timeout: Instant,
    connected: bool,
    alive: bool,
    pub send_errors: u64,
}

/// What the driver gets back from a finished peer.
pub enum PeerOutcome {
    Publisher(PublisherOutcome),
    Viewer(ViewerOutcome),
}

impl Peer {
    pub fn new(
        rtc: Rtc,
        socket: mio::net::UdpSocket,
        local: SocketAddr,
        role: Role,
        shared: Arc<Shared>,
    ) -> Self {
        Peer {
            rtc,
            socket,
            local,
            role,
            shared,
            next_timeout: Instant::now(),
            connected: false,
            alive: true,
            send_errors: 0,
        }
    }

    /// When this peer next needs [`Peer::on_timeout`].
    pub fn due(&self) -> Instant {
        let mut due = self.next_timeout;
        if let Role::Publisher(publisher) = &self.role {
            for next in [publisher.next_frame, publisher.next_audio]
                .into_iter()
                .flatten()
            {
                due = due.min(next);
            }
        }
        due
    }

    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// Feeds one received datagram.
    pub fn on_datagram(&mut self, source: SocketAddr, data: &[u8], now: Instant, now_us: u64) {
        if !self.alive {
            return;
        }
        // Sampled verification: count SRTP from its clear header, hand str0m a sample.
        let mut suppress_nack = None;
        if let Role::Viewer(viewer) = &mut self.role
            && viewer.verify == VerifyMode::Sampled
            && let Some(head) = RtpHead::parse(data)
        {
            let (forward, suppress) = viewer.on_rtp_head(&head, &self.rtc, now_us);
            if !forward {
                return;
            }
            suppress_nack = suppress.map(|index| (index, head.ssrc));
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, data) else {
            return;
        };
        if self.rtc.handle_input(Input::Receive(now, receive)).is_err() {
            self.alive = false;
            return;
        }
        if let Some((index, ssrc)) = suppress_nack {
            self.suppress_nack(index, ssrc);
        }
        self.drain(now, now_us);
    }

    /// Sampled mode: once str0m has a receive stream for `ssrc` (made by the packet it just
    /// took, or from the SDP), stops it NACKing the gaps that sampling leaves; until then
    /// the SSRC's packets all go to str0m.
    fn suppress_nack(&mut self, index: usize, ssrc: u32) {
        let Role::Viewer(viewer) = &mut self.role else {
            return;
        };
        if let Some(stream) = self.rtc.direct_api().stream_rx(&ssrc.into()) {
            stream.suppress_nack(true);
            if let Some(sampled) = viewer.sampled.get_mut(index) {
                sampled.nack_suppressed = true;
            }
        }
    }

    /// Advances str0m's timers and, for the publisher, sends due media.
    pub fn on_timeout(&mut self, now: Instant, now_us: u64) {
        if !self.alive {
            return;
        }
        if now >= self.next_timeout {
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.alive = false;
                return;
            }
            self.drain(now, now_us);
        }
        if self.connected && matches!(self.role, Role::Publisher(_)) {
            self.send_due_media(now, now_us);
        }
    }

    fn send_due_media(&mut self, now: Instant, now_us: u64) {
        let Role::Publisher(publisher) = &mut self.role else {
            return;
        };
        if publisher.video_pt.is_none() {
            publisher.video_pt = find_pt(&mut self.rtc, publisher.video_mid, Codec::Vp8);
            publisher.audio_pt = find_pt(&mut self.rtc, publisher.audio_mid, Codec::Opus);
            publisher.next_frame = Some(now);
            publisher.next_audio = publisher.spec.audio.then_some(now);
        }
        for _ in 0..MAX_CATCH_UP_FRAMES {
            if !self.write_due(now, true) {
                break;
            }
            self.drain(now, now_us);
        }
        for _ in 0..MAX_CATCH_UP_FRAMES {
            if !self.write_due(now, false) {
                break;
            }
            self.drain(now, now_us);
        }
        // Still behind after catching up: skip ahead instead of bursting.
        if let Role::Publisher(publisher) = &mut self.role {
            if publisher.next_frame.is_some_and(|due| due <= now) {
                publisher.next_frame = Some(now + publisher.frame_interval);
            }
            if publisher.next_audio.is_some_and(|due| due <= now) {
                publisher.next_audio = Some(now + AUDIO_INTERVAL);
            }
        }
    }

    /// Writes the next video frame (or audio packet) if it is due. True if written.
    fn write_due(&mut self, now: Instant, video: bool) -> bool {
        let Role::Publisher(publisher) = &mut self.role else {
            return false;
        };
        let (next, interval, mid, pt) = if video {
            (
                publisher.next_frame,
                publisher.frame_interval,
                publisher.video_mid,
                publisher.video_pt,
            )
        } else {
            (
                publisher.next_audio,
                AUDIO_INTERVAL,
                publisher.audio_mid,
                publisher.audio_pt,
            )
        };
        let Some(due) = next.filter(|due| *due <= now) else {
            return false;
        };
        if video {
            publisher.next_frame = Some(due + interval);
        } else {
            publisher.next_audio = Some(due + interval);
        }
        let Some(pt) = pt else {
            return false;
        };
        let (data, rtp_time, keyframe) = if video {
            let frame_number = publisher.outcome.frames_sent;
            let periodic =
                frame_number % u64::from(publisher.spec.keyframe_interval_frames.max(1)) == 0;
            let requested = publisher.keyframe_wanted
                && publisher
                    .last_keyframe
                    .is_none_or(|last| now - last >= KEYFRAME_REQUEST_MIN_GAP);
            let keyframe = periodic || requested;
            let (delta_size, key_size) = publisher.spec.frame_sizes();
            let size = if keyframe { key_size } else { delta_size };
            let rtp_time = MediaTime::new(
                frame_number * 90_000 / u64::from(publisher.spec.fps.max(1)),
                Frequency::NINETY_KHZ,
            );
            (
                vp8_frame(size, keyframe, epoch_micros()),
                rtp_time,
                keyframe,
            )
        } else {
            let rtp_time = MediaTime::new(
                publisher.outcome.audio_packets_sent * AUDIO_TICKS,
                Frequency::FORTY_EIGHT_KHZ,
            );
            (audio_packet(epoch_micros()), rtp_time, false)
        };
        publisher.outcome.media_bytes_sent += data.len() as u64;
        if self.shared.in_window(epoch_micros()) {
            publisher.outcome.window_media_bytes += data.len() as u64;
        }
        if video {
            publisher.outcome.frames_sent += 1;
            if keyframe {
                publisher.outcome.keyframes_sent += 1;
                publisher.keyframe_wanted = false;
                publisher.last_keyframe = Some(now);
            }
        } else {
            publisher.outcome.audio_packets_sent += 1;
        }
        if video && publisher.spec.simulcast {
            // The same frame on every layer, each cut to its share of the bitrate (the
            // stamp at its start stays whole).
            let full = data.len();
            for (rid, share) in SIMULCAST_LAYERS {
                let len = ((full as f64 * share) as usize).max(64).min(full);
                let Some(writer) = self.rtc.writer(mid) else {
                    return false;
                };
                let layer_data = data[..len].to_vec();
                if writer
                    .rid(rid.into())
                    .write(pt, now, rtp_time, layer_data)
                    .is_err()
                {
                    self.alive = false;
                    return false;
                }
            }
            return true;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        if writer.write(pt, now, rtp_time, data).is_err() {
            self.alive = false;
            return false;
        }
        true
    }

    /// Drains str0m's output until it only has a timeout left.
    fn drain(&mut self, now: Instant, now_us: u64) {
        // Bounded: str0m returns a Timeout once its queues are empty.
        for _ in 0..100_000 {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    if let Role::Publisher(publisher) = &mut self.role {
                        publisher.outcome.datagrams_sent += 1;
                    }
                    if self
                        .socket
                        .send_to(&transmit.contents, transmit.destination)
                        .is_err()
                    {
                        self.send_errors += 1;
                    }
                }
                Ok(Output::Event(event)) => self.on_event(event, now, now_us),
                Err(_) => {
                    self.alive = false;
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant, now_us: u64) {
        match event {
            Event::Connected => {
                self.connected = true;
                match &mut self.role {
                    Role::Publisher(publisher) => {
                        publisher.outcome.connected = true;
                        self.shared
                            .publisher_connected
                            .store(true, Ordering::Relaxed);
                    }
                    Role::Viewer(viewer) => {
                        viewer.outcome.connected = true;
                        viewer.outcome.connect_time = Some(now - viewer.join_started);
                    }
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Keep going: the report shows the missing media.
            }
            Event::KeyframeRequest(_) => {
                if let Role::Publisher(publisher) = &mut self.role {
                    publisher.keyframe_wanted = true;
                    publisher.outcome.keyframe_requests += 1;
                }
            }
            Event::RtpPacket(packet) => {
                if let Role::Viewer(viewer) = &mut self.role {
                    viewer.on_rtp(&packet, now, now_us);
                }
            }
            _ => {}
        }
    }

    pub fn finish(self) -> PeerOutcome {
        match self.role {
            Role::Publisher(publisher) => PeerOutcome::Publisher(publisher.outcome),
            Role::Viewer(viewer) => PeerOutcome::Viewer(viewer.finish()),
        }
    }
}

fn find_pt(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let writer = rtc.writer(mid)?;
    writer
        .payload_params()
        .find(|params| params.spec().codec == codec)
        .map(|params| params.pt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_average_the_bitrate() {
        let spec = StreamSpec {
            video_kbps: 2000,
            fps: 30,
            keyframe_interval_frames: 60,
            audio: true,
            simulcast: false,
        };
        let (delta, key) = spec.frame_sizes();
        let gop_bytes = delta * 59 + key;
        let per_frame = 2_000_000 / 8 / 30;
        assert!((gop_bytes as i64 - per_frame as i64 * 60).abs() < 60 * 10);
    }

    #[test]
    fn sequence_tracker_counts_gaps() {
        let mut tracker = SequenceTracker::new(1, 100);
        let duplicates: Vec<bool> = [101, 103, 104, 99, 103, 101]
            .into_iter()
            .map(|seq| tracker.record(seq))
            .collect();
        assert_eq!(duplicates, [false, false, false, false, true, true]);
        assert_eq!(tracker.lost(), 1);
        assert_eq!(tracker.duplicates, 2);
        tracker.record(102);
        assert_eq!(tracker.lost(), 0);
    }
}
