//! The synthetic media the publisher bot sends and the viewer bots recognise.
//!
//! Every video frame and every audio packet starts (after the codec's own header) with a
//! [`StampHeader`]: a magic, a flags byte and the send time in microseconds since the
//! Unix epoch. Publisher and viewers run on the same machine, so the difference between
//! receive time and send time is the forwarding delay.

use std::time::{SystemTime, UNIX_EPOCH};

/// Marks a payload written by the load generator: "PHLG".
pub const STAMP_MAGIC: [u8; 4] = *b"PHLG";
/// Size of [`StampHeader`] on the wire.
pub const STAMP_LEN: usize = 16;
/// Bytes of an Opus-sized audio packet (about 32 kbit/s at 20 ms).
pub const AUDIO_PACKET_BYTES: usize = 80;
/// How far into an RTP payload the viewer looks for the magic (VP8 payload descriptor up
/// to 6 bytes plus the 10-byte keyframe header).
const STAMP_SEARCH_WINDOW: usize = 24;

const FLAG_KEYFRAME: u8 = 0x01;
const FLAG_VIDEO: u8 = 0x02;

/// What a stamped payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampHeader {
    pub video: bool,
    pub keyframe: bool,
    /// Send time, microseconds since the Unix epoch.
    pub sent_micros: u64,
}

impl StampHeader {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&STAMP_MAGIC);
        let mut flags = 0;
        if self.video {
            flags |= FLAG_VIDEO;
        }
        if self.keyframe {
            flags |= FLAG_KEYFRAME;
        }
        out.extend_from_slice(&[flags, 0, 0, 0]);
        out.extend_from_slice(&self.sent_micros.to_be_bytes());
    }

    /// Finds a stamp near the start of an RTP payload (the first packet of a frame).
    pub fn find(payload: &[u8]) -> Option<StampHeader> {
        let window = payload.len().min(STAMP_SEARCH_WINDOW + STAMP_LEN);
        let head = &payload[..window];
        let at = head.windows(4).position(|bytes| bytes == STAMP_MAGIC)?;
        let stamp = payload.get(at..at + STAMP_LEN)?;
        let flags = stamp[4];
        let micros = u64::from_be_bytes(stamp[8..16].try_into().ok()?);
        Some(StampHeader {
            video: flags & FLAG_VIDEO != 0,
            keyframe: flags & FLAG_KEYFRAME != 0,
            sent_micros: micros,
        })
    }
}

/// Microseconds since the Unix epoch on the system clock: the clock both ends share.
pub fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// A VP8 frame of `size` bytes: a valid VP8 frame tag (and, for keyframes, the start code
/// and dimensions that keyframe detectors look at), the stamp, then filler.
pub fn vp8_frame(size: usize, keyframe: bool, sent_micros: u64) -> Vec<u8> {
    let mut frame = Vec::with_capacity(size.max(32));
    if keyframe {
        // Frame tag: P=0 (key), version 0, show_frame=1, first partition size 0.
        frame.extend_from_slice(&[0x10, 0x00, 0x00]);
        // Start code, then 640x360 with no scaling.
        frame.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        frame.extend_from_slice(&[0x11, 0x00, 0x00]);
    }
    StampHeader {
        video: true,
        keyframe,
        sent_micros,
    }
    .write(&mut frame);
    fill_to(&mut frame, size);
    frame
}

/// An Opus-sized audio payload carrying the stamp.
pub fn audio_packet(sent_micros: u64) -> Vec<u8> {
    let mut packet = Vec::with_capacity(AUDIO_PACKET_BYTES);
    // TOC byte: CELT-only fullband 20 ms, one frame.
    packet.push(0xfc);
    StampHeader {
        video: false,
        keyframe: false,
        sent_micros,
    }
    .write(&mut packet);
    fill_to(&mut packet, AUDIO_PACKET_BYTES);
    packet
}

fn fill_to(buffer: &mut Vec<u8>, size: usize) {
    let mut value = 0x5au8;
    while buffer.len() < size {
        buffer.push(value);
        value = value.wrapping_mul(31).wrapping_add(7);
    }
}

/// Whether an RTP VP8 payload is the first packet of a keyframe (RFC 7741 descriptor,
/// then the P bit of the VP8 payload header).
pub fn vp8_packet_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_index = first & 0x07;
    if !start_of_partition || partition_index != 0 {
        return false;
    }
    let mut index = 1;
    if first & 0x80 != 0 {
        let Some(&extension) = payload.get(index) else {
            return false;
        };
        index += 1;
        if extension & 0x80 != 0 {
            let Some(&picture_id) = payload.get(index) else {
                return false;
            };
            index += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            index += 1;
        }
        if extension & 0x30 != 0 {
            index += 1;
        }
    }
    payload.get(index).is_some_and(|header| header & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_behind_a_vp8_descriptor() {
        let frame = vp8_frame(1000, true, 123_456_789);
        assert_eq!(frame.len(), 1000);
        let mut packet = vec![0x90, 0x80, 0x05];
        packet.extend_from_slice(&frame[..600]);
        assert!(vp8_packet_starts_keyframe(&packet));
        let stamp = StampHeader::find(&packet).unwrap();
        assert_eq!(
            stamp,
            StampHeader {
                video: true,
                keyframe: true,
                sent_micros: 123_456_789
            }
        );
    }

    #[test]
    fn delta_frames_and_continuations_are_not_keyframes() {
        let frame = vp8_frame(500, false, 1);
        let mut packet = vec![0x10];
        packet.extend_from_slice(&frame);
        assert!(!vp8_packet_starts_keyframe(&packet));
        let continuation = [0x00, 0x00, 0x01];
        assert!(!vp8_packet_starts_keyframe(&continuation));
        assert_eq!(StampHeader::find(&continuation), None);
    }

    #[test]
    fn audio_packet_is_opus_sized_and_stamped() {
        let packet = audio_packet(42);
        assert_eq!(packet.len(), AUDIO_PACKET_BYTES);
        let stamp = StampHeader::find(&packet).unwrap();
        assert!(!stamp.video);
        assert_eq!(stamp.sent_micros, 42);
    }
}
