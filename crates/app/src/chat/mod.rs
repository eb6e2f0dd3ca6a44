//! Real-time chat and viewer counts over the app's WebSocket (`/ws`).
//!
//! - [`server`]: one task owns every room's state and receives a closed
//!   [`server::Command`] enum over a channel; [`ChatHandle`] is the cloneable API that
//!   sends them (the actix "chat-actorless" shape).
//! - [`session`]: the `/ws` endpoint and one loop per socket: reads client messages,
//!   forwards them to the server, writes what the server sends back, heartbeats.
//! - [`rate_limit`]: the sliding window behind the chat's rate limit.
//!
//! Wire types are `privatehub_protocol::app_socket`; chat rows live in
//! `crate::db::chat`.

pub mod rate_limit;
pub mod server;
pub mod session;
pub mod socket_limit;
pub mod writer;

pub use server::{ChatHandle, ChatServer, ChatUser, ConnId};
