//! Black-box tests of the media server: real WebSocket signaling, real loopback UDP,
//! str0m client bots. Each test uses its own UDP port range so they can run in parallel.

mod alloc;
mod bad_input;
mod bot;
mod bot_socket;
mod helpers;
mod limits;
mod load;
mod media_flow;
mod memory;
mod recording;
mod slow_reader;
mod stun;
mod transports;
