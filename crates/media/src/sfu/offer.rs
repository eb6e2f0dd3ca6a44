//! Building a server-side `Rtc` for one client offer.
//!
//! Costs about a millisecond of CPU (dimpl validates the crypto provider per `Rtc`), so
//! the engine runs it off the media workers. Pure: time comes in as an argument.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, IceCreds, Rtc};

/// Per-viewer video send buffer (packets). In frame mode this is also the size of str0m's
/// RTX/NACK cache, which holds each viewer's own packetized copies (~1.2 KB payload plus
/// header each), so it is most of a viewer's memory: 500 cost ~1 MB per viewer. 128
/// packets is ~0.45 s of 2 Mbit/s video at 30 fps (~280 video packets/s), longer than any
/// NACK round trip worth repairing, and still two keyframes of ~75 KB. Audio keeps str0m's
/// default of 50 (1 s of Opus, a few KB per viewer).
const SEND_BUFFER_VIDEO: usize = 128;

/// What every server `Rtc` shares: one DTLS certificate and one crypto provider.
#[derive(Clone)]
pub struct RtcTemplate {
    pub cert: DtlsCert,
    pub provider: Arc<CryptoProvider>,
}

/// Why an offer could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// Not parseable SDP, or str0m refused it (no common codec, both ICE-lite...).
    #[error("invalid SDP offer: {0}")]
    InvalidSdp(String),
    /// Our own configuration is unusable (e.g. the announced address).
    #[error("internal error: {0}")]
    Internal(String),
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

    /// ICE-lite `Rtc` restricted to Opus, VP8 and H.264, with a host candidate on
    /// `rtc_addr` (the announced address of the worker's port), that has accepted
    /// `offer_sdp`. Returns the `Rtc`, the answer and our ICE ufrag.
    pub fn accept_offer(
        &self,
        rtc_addr: SocketAddr,
        offer_sdp: &str,
        now: Instant,
    ) -> Result<(Rtc, SdpAnswer, String), OfferError> {
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| OfferError::InvalidSdp(e.to_string()))?;
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let config = Rtc::builder()
            .set_ice_lite(true)
            .set_dtls_cert(self.cert.clone())
            .set_crypto_provider(self.provider.clone())
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_send_buffer_video(SEND_BUFFER_VIDEO);
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut rtc = config.build(now);
            let candidate = Candidate::host(rtc_addr, "udp")
                .map_err(|e| OfferError::Internal(format!("host candidate {rtc_addr}: {e}")))?;
            rtc.add_local_candidate(candidate);
            let answer = rtc
                .sdp_api()
                .accept_offer(offer)
                .map_err(|e| OfferError::InvalidSdp(e.to_string()))?;
            Ok((rtc, answer, ufrag))
        }));
        result.unwrap_or_else(|_| Err(OfferError::InvalidSdp("the offer made str0m panic".into())))
    }
}
