//! PrivateHub media server: a multi-core WebRTC SFU on str0m with WebSocket signaling.
//!
//! Code map:
//! - [`config`]: typed settings from the environment.
//! - [`sfu`]: the sans-IO core of one worker (peers, rooms, forwarding, keyframe policy).
//! - `worker`: one thread per worker, owning its UDP socket (its own port, or the
//!   shared port with `SO_REUSEPORT`) and driving a [`sfu::WorkerCore`].
//! - `udp_batch`: the worker's batched UDP sends (`sendmmsg`).
//! - `tcp`: the ICE-TCP listener (RFC 4571 framing), feeding frames to the workers.
//! - `engine`: the registry of lives and the handle signaling uses to add/remove peers.
//! - `signaling`: the `/ws` session.
//! - `whip`: WHIP ingest and WHEP playback over HTTP, and the internal API with the app.
//! - `limits`: per-client-IP limits on `/ws` sockets (open at once, new per second).
//! - `recording`: lives recorded to WebM files, served to replay-token holders.
//! - `http`: `/healthz`, `/metrics` and server start-up.
//! - [`metrics`]: counters rendered for Prometheus.

#![forbid(unsafe_code)]

mod announce;
pub mod config;
mod engine;
mod http;
mod limits;
pub mod metrics;
mod recording;
pub mod sfu;
mod signaling;
mod tcp;
mod udp_batch;
mod whip;
mod worker;

pub use config::{ConfigError, MediaSettings};
pub use http::{RunningServer, start};
/// The recordings' start-up repair scan, for the fuzz entry points.
pub use recording::recording_scans;
/// The signaling message parser, for the fuzz entry points (`crates/fuzz-entry`).
pub use signaling::parse_message;
/// The WHIP/WHEP trickle fragment parser, for the fuzz entry points.
pub use whip::trickle_candidates;

use std::sync::Arc;

/// State shared by the HTTP handlers.
pub(crate) struct AppState {
    pub settings: MediaSettings,
    pub engine: Arc<engine::Engine>,
    pub metrics: Arc<metrics::Metrics>,
    pub socket_limiter: Arc<limits::SocketLimiter>,
    /// Bounds concurrent `Rtc` builds (offer → answer) to the number of cores.
    pub rtc_builds: tokio::sync::Semaphore,
    /// WHIP and WHEP sessions.
    pub http_sessions: whip::sessions::HttpSessions,
    /// The app's internal API.
    pub app_api: whip::app_api::AppApi,
    /// The UDP ports bound (one when shared) and the ICE-TCP port, for `/healthz`.
    pub rtc_ports: Vec<u16>,
    pub rtc_tcp_port: Option<u16>,
    /// Recordings (none when `MEDIA_RECORDINGS` is off).
    pub recorder: Option<recording::Recorder>,
}
