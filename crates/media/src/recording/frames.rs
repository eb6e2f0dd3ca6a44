//! From forwarded RTP packets to coded frames on a recording's timeline: VP8 frames put
//! back together from their packets (RFC 7741), in sequence order, waiting a little for
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
    pub data: Vec<u8>,
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

/// Puts VP8 frames together from one stream's packets (one simulcast layer, one
/// publisher: start a new one when either changes).
#[derive(Debug, Default)]
pub struct Vp8Assembler {
    held: BTreeMap<u64, Arc<Packet>>,
    /// The sequence number the next frame starts at, once in step.
    next: Option<u64>,
    /// Since when the frame at `next` has been incomplete.
    incomplete_since: Option<Instant>,
    /// Frames were given up: only a keyframe may come next.
    pub wants_keyframe: bool,
    pub packets_lost: u64,
}

impl Vp8Assembler {
    pub fn new() -> Self {
        Vp8Assembler {
            wants_keyframe: true,
            ..Vp8Assembler::default()
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
            if vp8_descriptor(&packet.payload).is_some_and(|(_, starts)| starts) {
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
        let mut data = Vec::new();
        let mut head: Option<Arc<Packet>> = None;
        for seq in first..=last {
            let packet = self.held.remove(&seq)?;
            let (skip, _) = vp8_descriptor(&packet.payload)?;
            data.extend_from_slice(&packet.payload[skip..]);
            head.get_or_insert(packet);
        }
        let head = head?;
        // The VP8 frame tag: bit 0 clear on a keyframe (RFC 6386 section 9.1).
        let keyframe = data.first().is_some_and(|tag| tag & 0x01 == 0);
        Some(Frame {
            rtp_time: head.rtp_time,
            keyframe,
            received_at: head.received_at,
            dimensions: head.dimensions,
            data,
        })
    }
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
