//! [`ChatText`]: the text of a chat message on one line, trimmed, non-empty, at most
//! [`MAX_CHAT_MESSAGE_CHARS`] characters, without control characters or characters
//! that reorder or hide text (see `display_text`). It is plain text: pages render it
//! with `textContent`, never as HTML.

use std::fmt;

use privatehub_protocol::app_socket::MAX_CHAT_MESSAGE_CHARS;

use super::display_text::clean_display_text;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatText(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChatTextError {
    /// Nothing left after trimming.
    #[error("Type a message first.")]
    Empty,
    /// Longer than [`MAX_CHAT_MESSAGE_CHARS`].
    #[error("Messages can be at most 500 characters long.")]
    TooLong,
}

impl ChatText {
    pub fn parse(raw: &str) -> Result<ChatText, ChatTextError> {
        let cleaned: String = clean_display_text(raw)
            .chars()
            .filter(|&c| !c.is_control())
            .collect();
        let trimmed = cleaned.trim();
        if trimmed.is_empty() {
            return Err(ChatTextError::Empty);
        }
        if trimmed.chars().count() > MAX_CHAT_MESSAGE_CHARS {
            return Err(ChatTextError::TooLong);
        }
        Ok(ChatText(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for ChatText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trims_and_refuses() {
        let cases: &[(&str, Result<&str, ChatTextError>)] = &[
            ("  hi  ", Ok("hi")),
            ("<script>x</script>", Ok("<script>x</script>")),
            ("a\u{0}b\u{7}c", Ok("abc")),
            ("line\nnext", Ok("line next")),
            ("hi\nalice: I am the admin", Ok("hi alice: I am the admin")),
            ("evil\u{202E}txt.exe", Ok("eviltxt.exe")),
            ("\u{200B}\u{FEFF}", Err(ChatTextError::Empty)),
            ("", Err(ChatTextError::Empty)),
            (" \n\t ", Err(ChatTextError::Empty)),
            ("é", Ok("é")),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                ChatText::parse(raw)
                    .as_ref()
                    .map(ChatText::as_str)
                    .map_err(|e| *e),
                *expected,
                "{raw:?}"
            );
        }
        assert_eq!(
            ChatText::parse(&"é".repeat(500)).map(|t| t.as_str().chars().count()),
            Ok(500)
        );
        assert_eq!(
            ChatText::parse(&"x".repeat(501)),
            Err(ChatTextError::TooLong)
        );
    }
}
