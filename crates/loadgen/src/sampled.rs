//! Sampled viewer verification (`--verify sampled`, the default): a viewer bot reads the
//! plain RTP header of every SRTP datagram itself (sequence number, timestamp and SSRC are
//! not encrypted, RFC 3711) and counts loss and duplicates from it; only a sample of the
//! packets goes on to str0m for SRTP decryption and authentication, which yields the
//! payload stamp (forwarding delay) and the first keyframe (join time).
//!
//! What goes to str0m:
//! - every STUN, DTLS and SRTCP datagram (not RTP by the RFC 7983 / RFC 5761 demux below);
//! - every RTP packet until the bot has seen its first keyframe, so the join time is exact;
//! - every RTP packet of an SSRC until its str0m receive stream exists and has NACKs
//!   suppressed (so the gaps sampling leaves are never NACKed and the SFU never
//!   retransmits for them), and every packet with an RTX payload type;
//! - afterwards, per SSRC, the first packet of every [`SAMPLE_EVERY`]th frame (a packet
//!   whose RTP timestamp differs from the newest packet's before it). For audio every
//!   packet starts a frame, so that is 1 packet in 16; for video it is the stamped first
//!   packet of 1 frame in 16 (sampling 1 in 16 *packets* would hit a stamped frame start
//!   only about once per 16 × packets-per-frame). A frame start is also sent on when
//!   [`MAX_SAMPLE_GAP_US`] or [`MAX_SAMPLE_SEQ_GAP`] passed since the last packet str0m
//!   got, which keeps str0m's receive stream from pausing (1.5 s without packets) and its
//!   sequence-number/ROC estimate (closest to the highest it saw, so any gap below 2^15
//!   is exact) far from ambiguity.

use std::str::FromStr;

/// One frame start in this many per SSRC goes to str0m once the bot has joined.
pub const SAMPLE_EVERY: u32 = 16;
/// A frame start goes to str0m at the latest this long after the previous packet it got
/// on the SSRC (str0m's default pause threshold is 1.5 s).
pub const MAX_SAMPLE_GAP_US: u64 = 1_000_000;
/// ... or this many sequence numbers after it (str0m extends a 16-bit sequence number to
/// the candidate closest to the highest it saw: unambiguous for gaps below 32,768).
pub const MAX_SAMPLE_SEQ_GAP: u64 = 4096;
/// The first extended sequence number of a stream is its 16-bit number plus this, so a
/// packet reordered from before the first one (or a wrap backwards) stays positive.
const FIRST_ROLLOVER: u64 = 1 << 16;

/// How a viewer bot verifies what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Own header parsing for loss, str0m for a sample (see the module docs).
    #[default]
    Sampled,
    /// Every datagram through str0m (SRTP decryption and authentication of every packet).
    Full,
}

impl VerifyMode {
    /// `sampled` or `full`, as written in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            VerifyMode::Sampled => "sampled",
            VerifyMode::Full => "full",
        }
    }
}

impl FromStr for VerifyMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sampled" => Ok(VerifyMode::Sampled),
            "full" => Ok(VerifyMode::Full),
            other => Err(format!(
                "unknown verification mode {other:?} (sampled|full)"
            )),
        }
    }
}

/// The fixed RTP header fields of an SRTP packet (sent in the clear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHead {
    pub payload_type: u8,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHead {
    /// The header if `data` is an (S)RTP packet: version 2 (first byte 128..=191, RFC 7983)
    /// and not RTCP. RTCP is told apart as str0m does (RFC 5761): the second byte without
    /// its top bit in 64..=95, which covers RTCP packet types 192..=223.
    pub fn parse(data: &[u8]) -> Option<RtpHead> {
        let header: &[u8; 12] = data.get(..12)?.try_into().ok()?;
        if !(128..=191).contains(&header[0]) {
            return None;
        }
        let payload_type = header[1] & 0x7f;
        if (64..=95).contains(&payload_type) {
            return None;
        }
        Some(RtpHead {
            payload_type,
            seq: u16::from_be_bytes([header[2], header[3]]),
            timestamp: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            ssrc: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
        })
    }
}

/// Extends a 16-bit sequence number to the 64-bit number closest to `highest`, the
/// highest extended number seen on the SSRC (`None` for its first packet).
pub fn extend_seq(highest: Option<u64>, seq: u16) -> u64 {
    match highest {
        None => FIRST_ROLLOVER + u64::from(seq),
        Some(highest) => {
            let delta = seq.wrapping_sub(highest as u16) as i16;
            highest.saturating_add_signed(i64::from(delta))
        }
    }
}

/// Per-SSRC state of a sampling viewer: sequence extension and the sampling decision.
#[derive(Debug, Clone)]
pub struct SampledStream {
    pub ssrc: u32,
    /// str0m's receive stream for the SSRC exists and has NACKs suppressed.
    pub nack_suppressed: bool,
    highest: u64,
    newest_timestamp: u32,
    frame_starts_skipped: u32,
    last_sample_us: u64,
    last_sample_seq: u64,
}

impl SampledStream {
    /// A stream from its first packet (which goes to str0m); returns it and the packet's
    /// extended sequence number.
    pub fn new(head: &RtpHead, now_us: u64) -> (SampledStream, u64) {
        let seq = extend_seq(None, head.seq);
        let stream = SampledStream {
            ssrc: head.ssrc,
            nack_suppressed: false,
            highest: seq,
            newest_timestamp: head.timestamp,
            frame_starts_skipped: 0,
            last_sample_us: now_us,
            last_sample_seq: seq,
        };
        (stream, seq)
    }

    /// Takes one packet of this SSRC: its extended sequence number, and whether it goes
    /// to str0m. `send_all` (not joined yet, NACKs not suppressed yet) sends every packet.
    pub fn on_packet(&mut self, head: &RtpHead, now_us: u64, send_all: bool) -> (u64, bool) {
        let seq = extend_seq(Some(self.highest), head.seq);
        let newest = seq > self.highest;
        let frame_start = newest && head.timestamp != self.newest_timestamp;
        if newest {
            self.highest = seq;
            self.newest_timestamp = head.timestamp;
        }
        let sample = if send_all {
            true
        } else if frame_start {
            self.frame_starts_skipped += 1;
            self.frame_starts_skipped >= SAMPLE_EVERY
                || now_us.saturating_sub(self.last_sample_us) >= MAX_SAMPLE_GAP_US
                || seq.saturating_sub(self.last_sample_seq) >= MAX_SAMPLE_SEQ_GAP
        } else {
            // Rest of a frame, or reordered behind the newest packet: str0m would have
            // nothing to learn from it (no stamp) or could only reject it.
            false
        };
        if sample {
            self.frame_starts_skipped = 0;
            self.last_sample_us = now_us;
            self.last_sample_seq = self.last_sample_seq.max(seq);
        }
        (seq, sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, second: u8, seq: u16, timestamp: u32, ssrc: u32) -> Vec<u8> {
        let mut data = vec![first, second];
        data.extend_from_slice(&seq.to_be_bytes());
        data.extend_from_slice(&timestamp.to_be_bytes());
        data.extend_from_slice(&ssrc.to_be_bytes());
        data.extend_from_slice(&[0xaa; 40]);
        data
    }

    #[test]
    fn parses_rtp_and_leaves_stun_dtls_and_rtcp_to_str0m() {
        let rtp = packet(0x80, 0x80 | 96, 0xfffe, 0x0102_0304, 0xdead_beef);
        assert_eq!(
            RtpHead::parse(&rtp),
            Some(RtpHead {
                payload_type: 96,
                seq: 0xfffe,
                timestamp: 0x0102_0304,
                ssrc: 0xdead_beef,
            })
        );
        // With CSRC count / extension bits set the first byte is still 128..=191.
        assert!(RtpHead::parse(&packet(0x90, 111, 1, 2, 3)).is_some());
        // RTCP SR (200), RR (201), RTPFB (205), PSFB (206).
        for pt in [200, 201, 205, 206, 192, 223] {
            assert_eq!(RtpHead::parse(&packet(0x81, pt, 0, 0, 0)), None, "{pt}");
        }
        // STUN (0..=3), DTLS (20..=63), too short.
        assert_eq!(RtpHead::parse(&packet(0x00, 0x01, 0, 0, 0)), None);
        assert_eq!(RtpHead::parse(&packet(22, 0xfe, 0, 0, 0)), None);
        assert_eq!(RtpHead::parse(&packet(0xc0, 96, 0, 0, 0)), None);
        assert_eq!(RtpHead::parse(&rtp[..11]), None);
    }

    #[test]
    fn sequence_numbers_extend_across_wraps_gaps_and_reordering() {
        let first = extend_seq(None, 65_530);
        assert_eq!(first, FIRST_ROLLOVER + 65_530);
        // Forward over the wrap, with a gap of 16.
        let after_wrap = extend_seq(Some(first), 10);
        assert_eq!(after_wrap, first + 16);
        // Reordered from before the wrap.
        assert_eq!(extend_seq(Some(after_wrap), 65_533), first + 3);
        // Reordered from before the stream's first packet stays below it.
        assert_eq!(extend_seq(Some(first), 65_520), first - 10);
        let low = extend_seq(None, 3);
        assert_eq!(extend_seq(Some(low), 65_535), low - 4);
        // Large gaps just under half the space are still forward.
        assert_eq!(
            extend_seq(Some(first), 65_530u16.wrapping_add(32_767)),
            first + 32_767
        );
    }

    #[test]
    fn samples_every_nth_frame_start_after_join() {
        let head = |seq: u16, timestamp: u32| RtpHead {
            payload_type: 96,
            seq,
            timestamp,
            ssrc: 7,
        };
        let (mut stream, first) = SampledStream::new(&head(65_000, 0), 0);
        // Before the join (or before NACKs are suppressed) everything goes to str0m.
        let (seq, sample) = stream.on_packet(&head(65_001, 0), 1, true);
        assert_eq!((seq, sample), (first + 1, true));

        // Video: 3 packets per frame, 33 ms apart; only frame starts can be sampled.
        let mut sampled = Vec::new();
        let mut seq = 65_002u16;
        for frame in 1..=40u32 {
            for _ in 0..3 {
                let now = u64::from(frame) * 33_000;
                let (extended, sample) = stream.on_packet(&head(seq, frame * 3000), now, false);
                if sample {
                    sampled.push((frame, extended));
                }
                seq = seq.wrapping_add(1);
            }
        }
        // Frames 16 and 32 (their first packet), across the sequence number wrap.
        assert_eq!(
            sampled,
            vec![(16, first + 2 + 15 * 3), (32, first + 2 + 31 * 3)]
        );

        // Reordered and duplicate packets are never sampled.
        let (_, sample) = stream.on_packet(&head(seq.wrapping_sub(5), 38 * 3000), 2_000_000, false);
        assert!(!sample);

        // A long pause: the next frame start goes on regardless of the count.
        let (_, sample) = stream.on_packet(&head(seq, 41 * 3000), 3_400_000, false);
        assert!(sample);
    }

    #[test]
    fn audio_is_sampled_one_packet_in_sixteen() {
        let (mut stream, _) = SampledStream::new(
            &RtpHead {
                payload_type: 111,
                seq: 1,
                timestamp: 0,
                ssrc: 9,
            },
            0,
        );
        let sampled = (2..=161u16)
            .filter(|&seq| {
                let head = RtpHead {
                    payload_type: 111,
                    seq,
                    timestamp: u32::from(seq) * 960,
                    ssrc: 9,
                };
                stream.on_packet(&head, u64::from(seq) * 20_000, false).1
            })
            .count();
        assert_eq!(sampled, 10);
    }

    #[test]
    fn verify_mode_parses_and_names() {
        assert_eq!("sampled".parse(), Ok(VerifyMode::Sampled));
        assert_eq!("full".parse(), Ok(VerifyMode::Full));
        assert!("all".parse::<VerifyMode>().is_err());
        assert_eq!(VerifyMode::default().name(), "sampled");
    }
}
