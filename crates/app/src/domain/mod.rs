//! Validated values ("parse, don't validate"): handlers turn raw request strings into
//! these types first and never pass raw `String`s further in.

mod chat_text;
mod display_text;
mod live_title;
mod origin;
mod password;
mod username;

pub use chat_text::{ChatText, ChatTextError};
pub use live_title::{LiveTitle, LiveTitleError};
pub use origin::{Origin, OriginError};
pub use password::{Password, PasswordError};
pub use username::{Username, UsernameError};
