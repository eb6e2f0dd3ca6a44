//! Building a server-side `Rtc` for one client offer.
//!
//! Costs about a millisecond of CPU (dimpl validates the crypto provider per `Rtc`), so
//! the engine runs it off the media workers. Pure: time comes in as an argument.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::net::TcpType;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Rtc};

use super::Role;

/// Per-viewer video send buffer (packets). In frame mode this is also the size of str0m's
/// RTX/NACK cache, which holds each viewer's own packetized copies (~1.2 KB payload plus
/// header each), so it is most of a viewer's memory: 500 cost ~1 MB per viewer. 128
/// packets is ~0.45 s of 2 Mbit/s video at 30 fps (~280 video packets/s), longer than any
/// NACK round trip worth repairing, and still two keyframes of ~75 KB. Audio keeps str0m's
/// default of 50 (1 s of Opus, a few KB per viewer).
const SEND_BUFFER_VIDEO: usize = 128;

/// Bandwidth a viewer's estimator starts from: the middle layer of a typical simulcast
/// (the estimator probes up from there within a second or two).
const INITIAL_ESTIMATE_KBPS: u64 = 1000;

/// Characters of str0m's error text kept for the log. The text is never sent to the
/// client: parse errors print positions as heap pointers (`PointerOffset(0x7f..)`).
const DETAIL_CHARS: usize = 200;

/// What every server `Rtc` shares: one DTLS certificate and one crypto provider.
#[derive(Clone)]
pub struct RtcTemplate {
    pub cert: DtlsCert,
    pub provider: Arc<CryptoProvider>,
}

/// What was wrong with a client's offer, in words that are safe to send back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpProblem {
    /// Not parseable as SDP.
    Unparseable,
    /// Parsed, but str0m refused it (no common codec, both ICE-lite...).
    Refused,
    /// str0m panicked on it.
    Crashed,
    /// One of its media sections has no codec we take (str0m would silently reject it:
    /// a publisher's video, say, would never arrive).
    UnsupportedCodec,
}

impl SdpProblem {
    /// The fixed text sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            SdpProblem::Unparseable => "the SDP offer could not be parsed",
            SdpProblem::Refused => {
                "the SDP offer was refused (no supported codec, or an unsupported setup)"
            }
            SdpProblem::Crashed => "the SDP offer could not be handled",
            SdpProblem::UnsupportedCodec => {
                "the SDP offer has a media section without a supported codec \
                 (audio: Opus; video: VP8, or H.264 constrained baseline or baseline \
                 with packetization-mode=1)"
            }
        }
    }
}

/// Why an offer could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The client's offer is unusable. `detail` is str0m's text, capped, for logs only.
    #[error("{}", problem.message())]
    InvalidSdp { problem: SdpProblem, detail: String },
    /// Our own configuration is unusable (e.g. the announced address).
    #[error("internal error: {0}")]
    Internal(String),
}

impl OfferError {
    fn invalid(problem: SdpProblem, detail: impl std::fmt::Display) -> Self {
        OfferError::InvalidSdp {
            problem,
            detail: capped(&detail.to_string()),
        }
    }
}

/// The first [`DETAIL_CHARS`] characters of `text`.
fn capped(text: &str) -> String {
    match text.char_indices().nth(DETAIL_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Where a worker's peers reach it: the announced addresses of its UDP port and of the
/// ICE-TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct LocalCandidates {
    pub worker: usize,
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
}

impl RtcTemplate {
    /// A template with a freshly generated certificate.
    pub fn generate() -> Result<Self, OfferError> {
        let provider = Arc::new(str0m::crypto::from_feature_flags());
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| OfferError::Internal("cannot generate a DTLS certificate".into()))?;
        Ok(RtcTemplate { cert, provider })
    }

    /// ICE-lite `Rtc` restricted to Opus, VP8 and H.264, with the worker's host
    /// candidates (UDP, and passive TCP when the listener runs), that has accepted
    /// `offer_sdp`. Returns the `Rtc`, the answer and our ICE ufrag (which names the
    /// worker, see `demux`).
    ///
    /// A viewer's `Rtc` negotiates transport-wide congestion control only when it is
    /// `estimating` (its simulcast layer follows its bandwidth): a browser sends TWCC
    /// feedback every ~50-100 ms, which the SFU decrypts and parses (measured about
    /// 1 µs per forwarded packet), and the estimator and its pacer cost more.
    pub fn accept_offer(
        &self,
        role: Role,
        local: LocalCandidates,
        offer_sdp: &str,
        now: Instant,
        estimating: bool,
    ) -> Result<(Rtc, SdpAnswer, String), OfferError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| OfferError::invalid(SdpProblem::Unparseable, e))?;
        let creds = super::demux::ice_credentials(local.worker);
        let ufrag = creds.ufrag.clone();
        let mut config = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(self.cert.clone())
            .set_crypto_provider(self.provider.clone())
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .set_rtp_mode(true)
            .set_send_buffer_video(SEND_BUFFER_VIDEO);
        add_browser_h264(config.codec_config());
        let config = match role {
            Role::Publisher => config,
            Role::Viewer if estimating => config
                .enable_bwe(Some(Bitrate::kbps(INITIAL_ESTIMATE_KBPS)))
                .set_stats_interval(Some(Duration::from_secs(1))),
            Role::Viewer => config.set_extension_map(viewer_extensions()),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut rtc = config.build(now);
            let candidate = Candidate::host(local.udp, "udp")
                .map_err(|e| OfferError::Internal(format!("host candidate {}: {e}", local.udp)))?;
            rtc.add_local_candidate(candidate);
            if let Some(tcp) = local.tcp {
                let candidate = Candidate::builder()
                    .tcp()
                    .host(tcp)
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(|e| OfferError::Internal(format!("TCP candidate {tcp}: {e}")))?;
                rtc.add_local_candidate(candidate);
            }
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| OfferError::invalid(SdpProblem::Refused, e))?;
            if rejected_sections(&answer.to_sdp_string()) > rejected_sections(offer_sdp) {
                return Err(OfferError::invalid(
                    SdpProblem::UnsupportedCodec,
                    "a media section was rejected",
                ));
            }
            Ok((rtc, answer, ufrag))
        }));
        result.unwrap_or_else(|_| {
            Err(OfferError::invalid(
                SdpProblem::Crashed,
                "the offer made str0m panic",
            ))
        })
    }
}

/// Media sections with port 0 (rejected or disabled).
fn rejected_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|line| line.starts_with("m=") && line.split(' ').nth(1) == Some("0"))
        .count()
}

/// H.264 as every browser decodes it: constrained baseline and baseline profiles with
/// packetization mode 1 (Firefox's OpenH264 decodes nothing else, and a publisher's
/// profile is forwarded as is). OBS offers constrained baseline in its SDP (`42e01f`)
/// whatever profile its encoder really uses: see `docs/obs.md`.
fn add_browser_h264(codecs: &mut str0m::format::CodecConfig) {
    use str0m::media::Pt;
    codecs.add_h264(
        Pt::new_with_value(108),
        Some(Pt::new_with_value(109)),
        true,
        0x42e01f,
    );
    codecs.add_h264(
        Pt::new_with_value(127),
        Some(Pt::new_with_value(121)),
        true,
        0x42001f,
    );
}

/// str0m's standard extensions (Chrome's ids) without transport-cc.
fn viewer_extensions() -> ExtensionMap {
    let mut map = ExtensionMap::empty();
    for (id, extension) in ExtensionMap::standard().iter() {
        if *extension != Extension::TransportSequenceNumber {
            map.set(id, extension.clone());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_are_not_asked_for_congestion_feedback() {
        let map = viewer_extensions();
        assert_eq!(map.id_of(Extension::TransportSequenceNumber), None);
        assert_eq!(map.id_of(Extension::AudioLevel), Some(1));
        assert_eq!(map.id_of(Extension::RtpMid), Some(4));
    }

    #[test]
    fn garbage_offers_get_a_fixed_message_and_a_capped_detail() {
        let template = RtcTemplate::generate().unwrap();
        let addr = LocalCandidates {
            worker: 0,
            udp: "127.0.0.1:40000".parse().unwrap(),
            tcp: None,
        };
        let garbage = format!("v=0\r\nthis is not sdp {}\r\n", "x".repeat(5000));
        let Err(error) = template.accept_offer(Role::Viewer, addr, &garbage, Instant::now(), false)
        else {
            panic!("garbage accepted");
        };
        assert_eq!(error.to_string(), "the SDP offer could not be parsed");
        let OfferError::InvalidSdp { problem, detail } = error else {
            panic!("not an SDP error: {error:?}");
        };
        assert_eq!(problem, SdpProblem::Unparseable);
        assert!(detail.chars().count() <= DETAIL_CHARS + 3, "{detail}");
    }

    #[test]
    fn capped_keeps_short_text_and_cuts_on_a_character_boundary() {
        assert_eq!(capped("short"), "short");
        let long = "é".repeat(DETAIL_CHARS + 10);
        let cut = capped(&long);
        assert_eq!(cut.chars().count(), DETAIL_CHARS + 3);
        assert!(cut.ends_with("..."));
    }

    fn publisher_offer(profile_level_id: u32) -> String {
        use str0m::media::{Direction, MediaKind, Pt};
        let mut config = Rtc::builder().clear_codecs().enable_opus(true, false);
        config
            .codec_config()
            .add_h264(Pt::new_with_value(96), None, true, profile_level_id);
        let mut rtc = config.build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.apply().unwrap().0.to_sdp_string()
    }

    #[test]
    fn high_profile_only_offers_are_refused() {
        let template = RtcTemplate::generate().unwrap();
        let addr = LocalCandidates {
            worker: 0,
            udp: "127.0.0.1:40000".parse().unwrap(),
            tcp: None,
        };
        let now = Instant::now();
        let accepted = template.accept_offer(
            Role::Publisher,
            addr,
            &publisher_offer(0x42e01f),
            now,
            false,
        );
        let (_, answer, _) = accepted.expect("constrained baseline accepted");
        assert!(
            answer.to_sdp_string().contains("H264"),
            "{}",
            answer.to_sdp_string()
        );
        let high = template.accept_offer(
            Role::Publisher,
            addr,
            &publisher_offer(0x640c1f),
            now,
            false,
        );
        let Err(OfferError::InvalidSdp { problem, .. }) = high else {
            panic!("a High-profile-only offer was accepted");
        };
        assert_eq!(problem, SdpProblem::UnsupportedCodec);
    }
}
