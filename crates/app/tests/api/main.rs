//! Black-box tests of privatehub-app over real HTTP: each test starts its own server
//! on 127.0.0.1, port 0, with a fresh SQLite file (see `helpers::spawn_app`).

mod accounts;
mod bad_inputs;
mod chat;
mod cluster;
mod copy_database;
mod csrf;
mod database_outage;
mod helpers;
mod lives;
mod pages;
mod rate_limit;
mod recordings;
mod schema_drift;
mod sessions;
mod socket_client;
mod sockets;
mod storage_faults;
mod stream_keys;
mod tokens;
