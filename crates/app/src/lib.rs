//! PrivateHub web app: accounts, sessions, lives, media tokens and the
//! server-rendered pages. See ARCHITECTURE.md.
//!
//! Entry point for embedding and tests: [`startup::Application::build`] with a
//! [`settings::Settings`], then [`startup::Application::run_until_stopped`].
//! `chat` is the real-time socket; it updates [`viewers::ViewerCounts`] held in
//! [`state::AppState`].

pub mod auth;
pub mod body_deadline;
pub mod chat;
pub mod cluster;
pub mod db;
pub mod domain;
pub mod error;
pub mod log_field;
pub mod metrics;
pub mod middleware;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod stream_keys;
pub mod telemetry;
pub mod viewers;
pub mod whip;

pub use settings::Settings;
pub use startup::Application;
