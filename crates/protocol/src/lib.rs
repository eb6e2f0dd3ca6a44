//! Wire types shared by the PrivateHub services and browsers.
//!
//! This crate is the only place that derives `Serialize`/`Deserialize` for types that
//! cross a process boundary. It has no I/O dependencies: no tokio, no actix, no diesel.

pub mod app_api;
pub mod app_socket;
pub mod cluster;
pub mod internal_api;
pub mod media_signaling;
pub mod media_token;
pub mod recordings;
pub mod stun;
pub mod turn_credentials;

pub use media_signaling::{
    MAX_SIGNALING_MESSAGE_BYTES, MediaClientMessage, MediaErrorCode, MediaServerMessage, SdpKind,
    SessionDescription,
};
pub use media_token::{
    LiveId, MediaRole, MediaTokenClaims, MediaTokenError, issue_media_token, verify_media_token,
};
pub use turn_credentials::{IceServer, TurnConfig, TurnConfigError};
