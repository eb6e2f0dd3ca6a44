//! SFU load generator: a str0m publisher bot sending synthetic stamped VP8 + Opus, and
//! N str0m viewer bots joining through the server's real signaling (PrivateHub's media
//! WebSocket or Janus's VideoRoom API), driven by a few threads that each own many bots'
//! sockets and timers. A run measures the server's CPU per forwarded packet, memory per
//! viewer, loss, forwarding delay and join time ([`RunReport`]); [`summary`] turns many
//! runs into `docs/benchmarks.md`, an SVG plot and `results.json`.

pub mod bot;
mod driver;
pub mod metrics_scrape;
pub mod payload;
mod peer;
pub mod proc_stats;
pub mod report;
pub mod run;
pub mod sampled;
pub mod signaling;
pub mod summary;

pub use peer::StreamSpec;
pub use report::RunReport;
pub use run::{RunConfig, run};
pub use sampled::VerifyMode;
pub use signaling::ServerTarget;

/// Why a load run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// Socket or thread creation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server's signaling refused or broke.
    #[error("signaling: {0}")]
    Signaling(String),
    /// The run could not be set up (publisher never connected, bad options).
    #[error("setup: {0}")]
    Setup(String),
}
