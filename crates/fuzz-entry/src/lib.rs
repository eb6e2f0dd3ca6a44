//! Fuzz entry points: one `pub fn <target>(data: &[u8])` per parser of untrusted input.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-line calls into this crate, and
//! `tests/replay.rs` runs every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through the same functions on the stable toolchain, so a
//! regression found by the fuzzer shows up in `cargo test --workspace`.
//!
//! Every entry point takes arbitrary bytes and must never panic. Each one goes through
//! the same code as the server (the same parse, then the same domain checks), and some
//! check promises that code makes (a parsed `ChatText` has no control characters, a
//! verified token has plausible times...): a broken promise panics, and that counts as
//! a finding too.

mod bytes;
mod datagram;
mod json;
mod token;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use privatehub_media::sfu::RtcTemplate;
use privatehub_media::sfu::stun::{StunKind, StunRateLimiter, binding_success, classify};
use privatehub_protocol::MAX_SIGNALING_MESSAGE_BYTES;
use privatehub_protocol::stun::{Class, Message, MessageBuilder, attribute, method};

pub use datagram::rtc_datagram;
pub use json::{app_socket, json_body, media_signaling};
pub use token::media_token;

use bytes::Bytes;

/// A fuzz entry point: takes any bytes, never panics.
pub type Entry = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Entry)] = &[
    ("media_signaling", media_signaling),
    ("app_socket", app_socket),
    ("media_token", media_token),
    ("sdp_offer", sdp_offer),
    ("stun", stun),
    ("rtc_datagram", rtc_datagram),
    ("json_body", json_body),
    ("trickle_fragment", trickle_fragment),
    ("recording_file", recording_file),
];

/// For the fuzz targets whose code contains str0m panics by design (`sdp_offer`:
/// `RtcTemplate::accept_offer`; `rtc_datagram`: `WorkerCore::with_rtc` and the ICE demux
/// each wrap str0m in `catch_unwind`). libfuzzer-sys installs a panic hook that aborts
/// before unwinding, so a contained panic would count as a crash and stop the run; this
/// hook prints the first panic of each site and lets the unwind reach the server's
/// `catch_unwind`. A panic that escapes the entry point still aborts: libfuzzer-sys
/// catches it and aborts.
pub fn let_contained_panics_unwind() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map_or_else(|| "?".to_owned(), ToString::to_string);
        let mut seen = SEEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.get_or_insert_with(HashSet::new).insert(place) {
            eprintln!("new panic site (a crash only if it escapes the entry point): {info}");
        }
    }));
}

/// The secret the entry points verify media tokens with (and sign fuzzed claims with).
pub const FUZZ_TOKEN_SECRET: &[u8] = b"fuzz-only-secret-0123456789abcdef0123456789";

/// The announced address of the worker the offers and datagrams are for.
pub const SERVER_ADDR: &str = "203.0.113.7:40000";

fn server_addr() -> SocketAddr {
    SERVER_ADDR.parse().unwrap_or_else(|_| unreachable!())
}

/// Worker 0's candidates: UDP and ICE-TCP on the server address.
fn local_candidates() -> privatehub_media::sfu::LocalCandidates {
    privatehub_media::sfu::LocalCandidates {
        worker: 0,
        udp: server_addr(),
        tcp: Some(server_addr()),
    }
}

/// The shared `Rtc` template (certificate generation is expensive: once per process).
fn template() -> &'static RtcTemplate {
    static TEMPLATE: OnceLock<RtcTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| RtcTemplate::generate().expect("a DTLS certificate"))
}

/// Text as the server receives it: WebSocket text frames are UTF-8 (the edge crate's
/// inbound decoding checks), so invalid bytes are replaced rather than dropped, which
/// keeps every input useful.
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Target 4: an SDP offer through `RtcTemplate::accept_offer` (what `publish` and
/// `watch` run on the blocking pool), then the answer serialised as it is sent.
pub fn sdp_offer(data: &[u8]) {
    if data.len() > MAX_SIGNALING_MESSAGE_BYTES {
        return;
    }
    let offer = text(data);
    if let Ok((_rtc, answer, ufrag)) = template().accept_offer(
        privatehub_media::sfu::Role::Viewer,
        local_candidates(),
        &offer,
        Instant::now(),
        // Both viewer set-ups: with and without the bandwidth estimator.
        data.first().is_some_and(|b| b % 2 == 1),
    ) {
        assert!(!ufrag.is_empty());
        let sdp = answer.to_sdp_string();
        assert!(sdp.contains("a=ice-lite"), "answer without ice-lite: {sdp}");
    }
}

/// Target 5: the plain-STUN responder (`sfu::stun`) on one datagram from an address
/// taken from the input, and the shared STUN codec (`privatehub_protocol::stun`) on the
/// same bytes. A plain binding request's answer must decode, with the shared codec
/// (written apart from the media server's allocation-free `sfu/stun.rs`; str0m's parser
/// only takes ICE messages with MESSAGE-INTEGRITY), to a binding success with the same
/// transaction id and the source address. Whatever the codec parses must rebuild into a
/// message that parses to the same attributes.
pub fn stun(data: &[u8]) {
    let mut input = Bytes::new(data);
    let source = input.socket_addr();
    let buf = input.rest();
    match classify(buf) {
        StunKind::PlainBinding => {
            let answer = binding_success(buf, source);
            assert_eq!(&answer[8..20], &buf[8..20], "transaction id");
            assert_eq!(
                decode_binding_success(&answer),
                Some(source),
                "{answer:02x?}"
            );
        }
        StunKind::Ice | StunKind::NotStun => {}
    }
    if let Ok(message) = Message::parse(buf) {
        let mut builder =
            MessageBuilder::new(message.method, message.class, &message.transaction_id);
        for (kind, value) in message.attributes() {
            builder = builder.attribute(kind, value);
        }
        let rebuilt = builder.finish();
        let again = Message::parse(&rebuilt).expect("a rebuilt message parses");
        assert!(again.attributes().eq(message.attributes()), "{buf:02x?}");
        assert_eq!((again.method, again.class), (message.method, message.class));
        let _ = message.error_code();
        let _ = message.xor_address(attribute::XOR_MAPPED_ADDRESS);
        let _ = message.mapped_address();
    }
    let mut limiter = StunRateLimiter::default();
    let now = Instant::now();
    let allowed = (0..12).filter(|_| limiter.allow(source.ip(), now)).count();
    assert_eq!(allowed, 10);
}

/// The XOR-MAPPED-ADDRESS of a Binding Success Response, if `message` is exactly one
/// with that single attribute.
fn decode_binding_success(message: &[u8]) -> Option<SocketAddr> {
    let parsed = Message::parse(message).ok()?;
    if (parsed.method, parsed.class) != (method::BINDING, Class::Success)
        || parsed.attributes().count() != 1
    {
        return None;
    }
    parsed.xor_address(attribute::XOR_MAPPED_ADDRESS).ok()?
}

/// Target 8: the body of a WHIP/WHEP trickle `PATCH` (`application/trickle-ice-sdpfrag`)
/// through the same parser the media server uses; every candidate it takes prints back
/// as a candidate line that parses again.
pub fn trickle_fragment(data: &[u8]) {
    if data.len() > 16 * 1024 {
        return;
    }
    let Some(candidates) = privatehub_media::trickle_candidates(&text(data)) else {
        return;
    };
    for candidate in candidates {
        let line = candidate.to_sdp_string();
        let line = line.strip_prefix("a=").unwrap_or(&line);
        assert!(
            str0m::Candidate::from_sdp_string(line).is_ok(),
            "a candidate taken from a fragment does not parse back: {line}"
        );
    }
}

/// Target 9: a recording file as the media server's start-up repair reads it (a file cut
/// short by a kill, or damaged on disk). The first byte picks the container (even: WebM,
/// odd: MP4); the scan must decide without panicking, whatever the rest holds.
pub fn recording_file(data: &[u8]) {
    use privatehub_protocol::recordings::RecordingContainer;
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let container = if first % 2 == 0 {
        RecordingContainer::Webm
    } else {
        RecordingContainer::Mp4
    };
    let _ = privatehub_media::recording_scans(rest, container);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured Chromium offers are accepted, so the SDP target starts from offers
    /// that reach the whole answer path.
    #[test]
    fn chromium_offers_are_accepted() {
        for name in ["chromium-156-sendonly.sdp", "chromium-156-recvonly.sdp"] {
            let path = format!("{}/../../fuzz/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
            let sdp = std::fs::read_to_string(path).unwrap();
            let accepted = template().accept_offer(
                privatehub_media::sfu::Role::Viewer,
                local_candidates(),
                &sdp,
                Instant::now(),
                true,
            );
            assert!(accepted.is_ok(), "{name}: {:?}", accepted.err());
        }
    }
}
