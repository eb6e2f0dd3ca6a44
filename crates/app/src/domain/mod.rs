//! Validated values ("parse, don't validate"): handlers turn raw request strings into
//! these types first and never pass raw `String`s further in.

mod live_title;
mod origin;
mod password;
mod username;

pub use live_title::{LiveTitle, LiveTitleError};
pub use origin::{Origin, OriginError};
pub use password::{Password, PasswordError};
pub use username::{Username, UsernameError};
