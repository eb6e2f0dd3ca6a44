//! Real-time chat and viewer counts over the app's WebSocket (`/ws`).
//!
//! - [`server`]: one task owns every room's state and receives a closed
//!   [`server::Command`] enum over a channel; [`ChatHandle`] is the cloneable API that
//!   sends them (the actix "chat-actorless" shape).
//! - [`session`]: the `/ws` endpoint, on the edge crate's connection and loop: client
//!   messages go to the server, which queues what it sends into the socket's outbox.
//!
//! The rate limiters (the chat's sliding window, sockets per client network) are the
//! edge crate's (`privatehub_edge::limits`).
//!
//! Wire types are `privatehub_protocol::app_socket`; chat rows live in
//! `crate::db::chat`.

pub mod server;
pub mod session;
pub mod writer;

pub use server::{ChatHandle, ChatServer, ChatUser, ConnId};
