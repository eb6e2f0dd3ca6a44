//! `privatehub-chat-bench`: the app's chat under load (`scripts/bench-chat`).
//! [`plan::prepare`] writes the bench's users, sessions and lives into the app's
//! database; [`load::run`] connects the sockets, sends, and measures.

mod client;
pub mod load;
pub mod plan;
mod probe;
pub mod report;
