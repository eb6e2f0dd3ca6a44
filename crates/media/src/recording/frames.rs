//! From forwarded RTP packets to coded frames on a recording's timeline: VP8 frames
//! (RFC 7741) and H.264 access units (RFC 6184, as length-prefixed NAL units for MP4) put
//! back together from their packets, in sequence order, waiting a little for
//! retransmissions; and RTP timestamps mapped to milliseconds since the recording began.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sfu::Packet;

/// How long a missing packet is waited for (a NACK's retransmission) before the frames
/// around it are given up and the next keyframe awaited.
const LOSS_WAIT: Duration = Duration::from_millis(400);
/// Most packets held while waiting; beyond it the assembler starts over.
const MAX_HELD_PACKETS: usize = 4096;
/// A track whose RTP clock strays this far from the arrival clock is re-anchored (a
/// paused source whose clock did not advance, a new encoder).
const MAX_CLOCK_STRAY_MS: i64 = 1_000;

/// One whole coded frame.
#[derive(Debug)]
pub struct Frame {
    pub rtp_time: u32,
    pub keyframe: bool,
    pub received_at: Instant,
    pub dimensions: Option<(u16, u16)>,
    /// H.264: the sequence and picture parameter sets the frame carried.
    pub parameter_sets: Option<(Vec<u8>, Vec<u8>)>,
    pub data: Vec<u8>,
}

/// The video codecs recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    #[default]
    Vp8,
    H264,
}

impl VideoCodec {
    /// Whether a packet may be the first of a frame.
    fn starts_frame(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::Vp8 => vp8_descriptor(payload).is_some_and(|(_, starts)| starts),
            VideoCodec::H264 => match payload.first().map(|b| b & 0x1F) {
                Some(1..=24) => true,
                // FU-A: its start bit.
                Some(28) => payload.get(1).is_some_and(|header| header & 0x80 != 0),
                _ => false,
            },
        }
    }
}

/// The VP8 payload descriptor's length and whether the packet starts a frame (S set,
/// partition 0), or `None` if it does not parse.
pub fn vp8_descriptor(payload: &[u8]) -> Option<(usize, bool)> {
    let first = *payload.first()?;
    let starts = first & 0x10 != 0 && first & 0x07 == 0;
    let mut len = 1;
    if first & 0x80 != 0 {
        let extension = *payload.get(1)?;
        len = 2;
        if extension & 0x80 != 0 {
            let picture_id = *payload.get(len)?;
            len += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            len += 1;
        }
        if extension & 0x30 != 0 {
            len += 1;
        }
    }
    (len < payload.len()).then_some((len, starts))
}

/// Puts video frames together from one stream's packets (one simulcast layer, one
/// publisher: start a new one when either changes).
#[derive(Debug, Default)]
pub struct FrameAssembler {
    codec: VideoCodec,
    held: BTreeMap<u64, Arc<Packet>>,
    /// The sequence number the next frame starts at, once in step.
    next: Option<u64>,
    /// Since when the frame at `next` has been incomplete.
    incomplete_since: Option<Instant>,
    /// Frames were given up: only a keyframe may come next.
    pub wants_keyframe: bool,
    pub packets_lost: u64,
}

impl FrameAssembler {
    pub fn new(codec: VideoCodec) -> Self {
        FrameAssembler {
            codec,
            wants_keyframe: true,
            ..FrameAssembler::default()
        }
    }

    /// Takes one packet; pushes every frame it completes to `out`, in order.
    pub fn push(&mut self, packet: Arc<Packet>, out: &mut Vec<Frame>) {
        if self.next.is_some_and(|next| packet.seq < next) {
            return; // a duplicate, or too late to use
        }
        if self.held.len() >= MAX_HELD_PACKETS {
            self.start_over();
        }
        let now = packet.received_at;
        self.held.insert(packet.seq, packet);
        loop {
            if self.next.is_none() && !self.find_start() {
                return;
            }
            let next = self.next.unwrap_or_default();
            match self.whole_frame_from(next) {
                Some(last) => {
                    self.incomplete_since = None;
                    if let Some(frame) = self.take_frame(next, last) {
                        if frame.keyframe {
                            self.wants_keyframe = false;
                        }
                        if !self.wants_keyframe {
                            out.push(frame);
                        }
                    }
                    self.next = Some(last + 1);
                }
                None => {
                    let since = *self.incomplete_since.get_or_insert(now);
                    if now.saturating_duration_since(since) < LOSS_WAIT {
                        return;
                    }
                    // Give up the frame at `next`: skip to the next frame start held.
                    self.packets_lost += 1;
                    self.wants_keyframe = true;
                    self.incomplete_since = None;
                    self.held.remove(&next);
                    self.next = None;
                }
            }
        }
    }

    fn start_over(&mut self) {
        self.held.clear();
        self.next = None;
        self.incomplete_since = None;
        self.wants_keyframe = true;
    }

    /// Drops held packets up to the first one that starts a frame; false if none does.
    fn find_start(&mut self) -> bool {
        while let Some((&seq, packet)) = self.held.first_key_value() {
            if self.codec.starts_frame(&packet.payload) {
                self.next = Some(seq);
                return true;
            }
            self.held.remove(&seq);
        }
        false
    }

    /// The sequence number of the last packet of the whole frame starting at `first`.
    fn whole_frame_from(&self, first: u64) -> Option<u64> {
        let rtp_time = self.held.get(&first)?.rtp_time;
        let mut seq = first;
        loop {
            let packet = self.held.get(&seq)?;
            if packet.rtp_time != rtp_time {
                return Some(seq - 1); // the marker was lost, but the next frame began
            }
            if packet.marker {
                return Some(seq);
            }
            seq += 1;
        }
    }

    fn take_frame(&mut self, first: u64, last: u64) -> Option<Frame> {
        let mut packets = Vec::with_capacity((last - first + 1) as usize);
        for seq in first..=last {
            packets.push(self.held.remove(&seq)?);
        }
        let head = packets.first()?.clone();
        let mut frame = Frame {
            rtp_time: head.rtp_time,
            keyframe: false,
            received_at: head.received_at,
            dimensions: head.dimensions,
            parameter_sets: None,
            data: Vec::new(),
        };
        match self.codec {
            VideoCodec::Vp8 => {
                for packet in &packets {
                    let (skip, _) = vp8_descriptor(&packet.payload)?;
                    frame.data.extend_from_slice(&packet.payload[skip..]);
                }
                // The VP8 frame tag: bit 0 clear on a keyframe (RFC 6386 section 9.1).
                frame.keyframe = frame.data.first().is_some_and(|tag| tag & 0x01 == 0);
            }
            VideoCodec::H264 => {
                let nal_units = h264_nal_units(&packets)?;
                let mut sps = None;
                let mut pps = None;
                for unit in &nal_units {
                    match unit.first().map(|b| b & 0x1F) {
                        Some(5) => frame.keyframe = true,
                        Some(7) => sps = Some(unit.clone()),
                        Some(8) => pps = Some(unit.clone()),
                        Some(9) => continue, // access unit delimiter: not kept in MP4
                        _ => {}
                    }
                    frame
                        .data
                        .extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    frame.data.extend_from_slice(unit);
                }
                if let (Some(sps), Some(pps)) = (sps, pps) {
                    frame.dimensions = super::h264::picture_size(&sps);
                    frame.parameter_sets = Some((sps, pps));
                }
            }
        }
        Some(frame)
    }
}

/// The NAL units of one access unit's packets: single units, STAP-A aggregates and
/// FU-A fragments (RFC 6184 section 5.6-5.8); `None` if a fragment is missing.
fn h264_nal_units(packets: &[Arc<Packet>]) -> Option<Vec<Vec<u8>>> {
    let mut units = Vec::new();
    let mut fragment: Option<Vec<u8>> = None;
    for packet in packets {
        let payload = &packet.payload[..];
        let kind = payload.first()? & 0x1F;
        match kind {
            1..=23 => units.push(payload.to_vec()),
            24 => {
                let mut rest = &payload[1..];
                while rest.len() >= 2 {
                    let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let unit = rest.get(2..2 + size)?;
                    if !unit.is_empty() {
                        units.push(unit.to_vec());
                    }
                    rest = &rest[2 + size..];
                }
            }
            28 => {
                let indicator = payload[0];
                let header = *payload.get(1)?;
                let body = payload.get(2..)?;
                if header & 0x80 != 0 {
                    let mut unit = vec![(indicator & 0xE0) | (header & 0x1F)];
                    unit.extend_from_slice(body);
                    fragment = Some(unit);
                } else {
                    fragment.as_mut()?.extend_from_slice(body);
                }
                if header & 0x40 != 0 {
                    units.push(fragment.take()?);
                }
            }
            _ => {}
        }
    }
    if fragment.is_some() {
        return None; // a fragmented unit without its end
    }
    Some(units)
}

/// Maps one track's RTP timestamps to milliseconds on the recording's timeline, anchored
/// at arrival so audio and video line up and a gap (publisher away) stays a gap.
#[derive(Debug)]
pub struct Timeline {
    clock_rate: i64,
    /// (extended RTP time, its milliseconds) the mapping counts from.
    anchor: Option<(i64, i64)>,
    last_rtp: u32,
    extended: i64,
    last_ms: Option<i64>,
}

impl Timeline {
    pub fn new(clock_rate: u32) -> Self {
        Timeline {
            clock_rate: i64::from(clock_rate.max(1)),
            anchor: None,
            last_rtp: 0,
            extended: 0,
            last_ms: None,
        }
    }

    /// Starts counting afresh at the next packet (a new publisher), keeping time moving
    /// forward.
    pub fn re_anchor(&mut self) {
        self.anchor = None;
    }

    /// The time of a frame with RTP time `rtp_time` that arrived `arrival_ms` after the
    /// recording began; never earlier than the track's previous frame.
    pub fn place(&mut self, rtp_time: u32, arrival_ms: i64) -> u64 {
        let ms = match self.anchor {
            None => {
                self.extended = i64::from(rtp_time);
                self.last_rtp = rtp_time;
                self.anchor = Some((self.extended, arrival_ms));
                arrival_ms
            }
            Some((anchor_rtp, anchor_ms)) => {
                let step = i64::from(rtp_time.wrapping_sub(self.last_rtp) as i32);
                let extended = self.extended + step;
                if step > 0 {
                    self.extended = extended;
                    self.last_rtp = rtp_time;
                }
                let ms = anchor_ms + (extended - anchor_rtp) * 1000 / self.clock_rate;
                if (ms - arrival_ms).abs() > MAX_CLOCK_STRAY_MS {
                    self.extended = i64::from(rtp_time);
                    self.last_rtp = rtp_time;
                    self.anchor = Some((self.extended, arrival_ms));
                    arrival_ms
                } else {
                    ms
                }
            }
        };
        let ms = match self.last_ms {
            Some(last) => ms.max(last + 1),
            None => ms.max(0),
        };
        self.last_ms = Some(ms);
        ms as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_of_every_shape_are_skipped() {
        // S=1 PID=0, no extension: one byte.
        assert_eq!(vp8_descriptor(&[0x10, 0xAA]), Some((1, true)));
        // X with I (15-bit picture id), L and T: 1 + 1 + 2 + 1 + 1.
        assert_eq!(
            vp8_descriptor(&[0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0xAA]),
            Some((6, true))
        );
        // Not a frame start (S clear), 7-bit picture id.
        assert_eq!(vp8_descriptor(&[0x80, 0x80, 0x05, 0xAA]), Some((3, false)));
        assert_eq!(vp8_descriptor(&[0x90, 0x80]), None, "cut short");
        assert_eq!(vp8_descriptor(&[]), None);
    }

    #[test]
    fn timestamps_follow_the_rtp_clock_and_survive_wraps_and_jumps() {
        let mut video = Timeline::new(90_000);
        assert_eq!(video.place(u32::MAX - 2_999, 100), 100);
        // 3,000 ticks later across the wrap: 33 ms.
        assert_eq!(video.place(0, 133), 133);
        // A source whose clock jumped far: re-anchored at arrival.
        assert_eq!(video.place(123_456_789, 5_000), 5_000);
        // Never backwards, even for a reordered older frame.
        assert_eq!(video.place(123_456_789 - 9_000, 5_010), 5_001);
    }
}
