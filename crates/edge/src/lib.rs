//! What both PrivateHub services put between a client and their own logic.
//!
//! - [`client_address`]: the client address behind a trusted proxy, and the network
//!   (IPv4 address, IPv6 /64) that per-client limits count.
//! - [`env`]: reading booleans and bounded numbers from settings values.
//! - [`limits`]: the rate limiters (sliding window, token bucket, sockets per client
//!   network).
//! - [`connection`]: what is set on every accepted TCP connection (a bound on writes
//!   a client never takes).
//! - [`websocket`]: the WebSocket connection (handshake, frame and message limits,
//!   one bounded outbox that the service writes to without waiting, a write deadline)
//!   and the session loop (heartbeat, silent clients, floods, stalled readers) that
//!   the app's `/ws` and the media server's signaling `/ws` both run.
//!
//! The services keep their own message handling; this crate knows no message type.

pub mod client_address;
pub mod connection;
pub mod env;
pub mod limits;
pub mod websocket;
