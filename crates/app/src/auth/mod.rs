//! Authentication and request-forgery defences: password hashing, server-side
//! sessions, the CSRF origin check, login rate limits, and the client's address.

pub mod client;
pub mod csrf;
pub mod hashing;
pub mod password;
pub mod rate_limit;
pub mod session;

pub use session::{CurrentUser, MaybeUser};
