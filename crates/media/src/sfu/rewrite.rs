//! Per-viewer header rewrite of forwarded RTP packets.
//!
//! A viewer sees one continuous stream per track whatever happens upstream: the first
//! packet it gets has sequence number [`FIRST_SEQ`], and when the mapping restarts (a
//! new publisher, or video shed and resumed at a keyframe) sequence numbers go on from
//! the last one sent, timestamps advance by the wall time elapsed and VP8 picture ids
//! by one. Within one mapping `out = in + offset`, so reordered and retransmitted
//! packets keep their place.

use std::time::Instant;

use str0m::rtp::Vp8Patch;

use super::forward::Packet;
use super::layers::LayerKey;

/// Sequence number of a viewer's first packet on a track: low, so the SRTP rollover
/// counter starts at 0 as the browser assumes.
pub const FIRST_SEQ: u64 = 1000;

/// The rewritten header fields of one packet for one viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub seq: u64,
    pub rtp_time: u32,
    /// The VP8 picture id the viewer gets (for tests and logs).
    pub picture_id: Option<u16>,
    pub vp8_patch: Option<Vp8Patch>,
}

/// One track of one viewer.
#[derive(Debug, Default)]
pub struct TrackRewriter {
    /// The mapping in force: (generation, layer, first input seq of it), `None` until a
    /// packet starts one (or after [`TrackRewriter::restart`]). Each simulcast layer has
    /// its own sequence space, so a layer switch starts a mapping like a new publisher.
    mapping: Option<(u64, LayerKey, u64)>,
    seq_offset: u64,
    time_offset: u32,
    picture_id_offset: u16,
    last_seq: Option<u64>,
    last_rtp_time: u32,
    last_sent_at: Option<Instant>,
    last_picture_id: Option<u16>,
}

impl TrackRewriter {
    /// Whether `packet` continues the mapping in force (`false`: it would start one).
    pub fn is_mapped(&self, packet: &Packet) -> bool {
        self.mapping.is_some_and(|(generation, layer, _)| {
            generation == packet.generation && layer == packet.layer
        })
    }

    /// Forget the mapping: the next packet given starts a new one, continuing the
    /// numbering (used when video is shed and resumes at a keyframe).
    pub fn restart(&mut self) {
        self.mapping = None;
    }

    /// The header for `packet`, or `None` if it belongs before the mapping in force (a
    /// late packet of an earlier generation or from before the mapping started).
    pub fn rewrite(&mut self, packet: &Packet, now: Instant) -> Option<Rewritten> {
        match self.mapping {
            Some((generation, layer, first))
                if generation == packet.generation && layer == packet.layer =>
            {
                if packet.seq < first {
                    return None;
                }
            }
            Some((generation, _, _)) if generation > packet.generation => return None,
            _ => self.start(packet, now),
        }
        let seq = packet.seq.wrapping_add(self.seq_offset);
        let rtp_time = packet.rtp_time.wrapping_add(self.time_offset);
        let newest = self.last_seq.is_none_or(|last| seq > last);
        let (picture_id, vp8_patch) = self.picture_id_patch(packet, newest);
        if newest {
            self.last_seq = Some(seq);
            self.last_rtp_time = rtp_time;
            self.last_sent_at = Some(now);
        }
        Some(Rewritten {
            seq,
            rtp_time,
            picture_id,
            vp8_patch,
        })
    }

    fn start(&mut self, packet: &Packet, now: Instant) {
        let next_seq = self.last_seq.map_or(FIRST_SEQ, |last| last + 1);
        self.seq_offset = next_seq.wrapping_sub(packet.seq);
        self.time_offset = match self.last_sent_at {
            Some(at) => {
                let clock_rate = u64::from(packet.params.spec().clock_rate.get().max(1));
                let elapsed = now.saturating_duration_since(at).as_micros() as u64;
                let ticks = (elapsed * clock_rate / 1_000_000).max(1) as u32;
                self.last_rtp_time
                    .wrapping_add(ticks)
                    .wrapping_sub(packet.rtp_time)
            }
            None => 0,
        };
        let picture_id = packet.vp8.and_then(|d| d.picture_id());
        self.picture_id_offset = match (self.last_picture_id, picture_id) {
            (Some(last), Some(incoming)) => last.wrapping_add(1).wrapping_sub(incoming),
            _ => 0,
        };
        self.mapping = Some((packet.generation, packet.layer, packet.seq));
    }

    /// The VP8 descriptor patch keeping picture ids continuous (none while the offset
    /// is zero, the common case of a viewer that joined one publisher).
    fn picture_id_patch(
        &mut self,
        packet: &Packet,
        newest: bool,
    ) -> (Option<u16>, Option<Vp8Patch>) {
        let Some(descriptor) = packet.vp8 else {
            return (None, None);
        };
        let Some(incoming) = descriptor.picture_id() else {
            return (None, None);
        };
        // The descriptor keeps its width: 15 bits (what browsers send) or 7.
        let wide = incoming.wrapping_add(self.picture_id_offset) & 0x7fff;
        if newest {
            self.last_picture_id = Some(wide);
        }
        if self.picture_id_offset == 0 {
            return (Some(wide), None);
        }
        let patch = descriptor
            .patch()
            .picture_id(wide)
            .build()
            .or_else(|_| descriptor.patch().picture_id(wide & 0x7f).build())
            .ok();
        (Some(wide), patch)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use privatehub_protocol::LiveId;
    use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
    use str0m::media::{Frequency, MediaKind, Pt};
    use str0m::rtp::{ExtensionValues, Vp8Descriptor};

    use super::*;

    fn packet(generation: u64, seq: u64, rtp_time: u32, picture_id: u16) -> Packet {
        let payload: Arc<[u8]> = vec![
            0x90,
            0x80,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            0x00,
            0x00,
        ]
        .into();
        let spec = CodecSpec {
            codec: Codec::Vp8,
            clock_rate: Frequency::NINETY_KHZ,
            channels: None,
            format: FormatParams::default(),
        };
        Packet {
            live: LiveId(1),
            generation,
            kind: MediaKind::Video,
            pt: Pt::new_with_value(96),
            params: PayloadParams::new(Pt::new_with_value(96), None, spec),
            seq,
            rtp_time,
            marker: false,
            keyframe: true,
            layer: None,
            dimensions: None,
            vp8: Vp8Descriptor::parse(&payload).ok(),
            extensions: ExtensionValues::default(),
            received_at: Instant::now(),
            late_on_arrival: Duration::ZERO,
            payload,
        }
    }

    #[test]
    fn one_publisher_keeps_its_spacing_and_reordering() {
        let t0 = Instant::now();
        let mut rewriter = TrackRewriter::default();
        let first = rewriter.rewrite(&packet(1, 70_000, 5000, 10), t0).unwrap();
        assert_eq!(first.seq, FIRST_SEQ);
        assert_eq!(first.rtp_time, 5000);
        assert_eq!(first.vp8_patch, None, "no offset, no patch");
        let later = rewriter.rewrite(&packet(1, 70_003, 8000, 11), t0).unwrap();
        assert_eq!(later.seq, FIRST_SEQ + 3);
        let reordered = rewriter.rewrite(&packet(1, 70_001, 5000, 10), t0).unwrap();
        assert_eq!(reordered.seq, FIRST_SEQ + 1);
        assert!(rewriter.rewrite(&packet(1, 69_999, 2000, 9), t0).is_none());
    }

    #[test]
    fn a_new_generation_continues_numbering_and_time() {
        let t0 = Instant::now();
        let mut rewriter = TrackRewriter::default();
        rewriter.rewrite(&packet(1, 100, 9000, 500), t0).unwrap();
        let last = rewriter.rewrite(&packet(1, 101, 12_000, 501), t0).unwrap();
        // The new publisher starts anywhere; 100 ms later.
        let t1 = t0 + Duration::from_millis(100);
        let next = rewriter.rewrite(&packet(2, 40_000, 7, 30_000), t1).unwrap();
        assert_eq!(next.seq, last.seq + 1);
        assert_eq!(next.rtp_time, last.rtp_time.wrapping_add(9000));
        assert!(next.vp8_patch.is_some(), "picture id rewritten");
        assert_eq!(next.picture_id, Some(502));
        // A late packet of the old publisher is dropped.
        assert!(rewriter.rewrite(&packet(1, 102, 15_000, 502), t1).is_none());
    }

    #[test]
    fn restart_resumes_right_after_the_last_packet() {
        let t0 = Instant::now();
        let mut rewriter = TrackRewriter::default();
        rewriter.rewrite(&packet(1, 100, 0, 1), t0).unwrap();
        rewriter.restart();
        // Packets 101..=149 were shed; 150 is the keyframe it resumes on.
        let resumed = rewriter
            .rewrite(&packet(1, 150, 45_000, 50), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(resumed.seq, FIRST_SEQ + 1);
        assert_eq!(resumed.rtp_time, 90_000);
    }
}
