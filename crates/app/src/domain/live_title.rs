//! [`LiveTitle`]: the title a broadcaster gives a live.

use std::fmt;

use super::display_text::clean_display_text;

/// Longest allowed title, in characters.
pub const MAX_LIVE_TITLE_LEN: usize = 120;

/// A trimmed, non-empty title of at most [`MAX_LIVE_TITLE_LEN`] characters without
/// control characters. It is shown as text (templates escape it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTitle(String);

/// Why a string is not a valid [`LiveTitle`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveTitleError {
    /// Empty after trimming.
    #[error("the title cannot be empty")]
    Empty,
    /// Longer than [`MAX_LIVE_TITLE_LEN`] characters.
    #[error("the title must have at most {MAX_LIVE_TITLE_LEN} characters")]
    TooLong,
    /// Contains a control character other than a line break or tab (NUL, escape...).
    #[error("the title cannot contain control characters")]
    ControlCharacters,
}

impl LiveTitle {
    /// Line breaks become spaces and characters that reorder or hide text are removed
    /// (see `display_text`); other control characters are refused.
    pub fn parse(raw: &str) -> Result<LiveTitle, LiveTitleError> {
        let cleaned = clean_display_text(raw);
        let trimmed = cleaned.trim();
        if trimmed.is_empty() {
            return Err(LiveTitleError::Empty);
        }
        if trimmed.chars().count() > MAX_LIVE_TITLE_LEN {
            return Err(LiveTitleError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(LiveTitleError::ControlCharacters);
        }
        Ok(LiveTitle(trimmed.to_owned()))
    }

    /// The title used when the broadcaster gives none.
    pub fn default_for(username: &str) -> LiveTitle {
        LiveTitle(format!("{username}'s live"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for LiveTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_accepts() {
        assert_eq!(
            LiveTitle::parse("  Hello world ").unwrap().as_str(),
            "Hello world"
        );
        assert_eq!(LiveTitle::parse("<b>ok</b>").unwrap().as_str(), "<b>ok</b>");
        assert!(LiveTitle::parse(&"é".repeat(120)).is_ok());
    }

    #[test]
    fn refuses_bad_titles() {
        assert_eq!(LiveTitle::parse("   "), Err(LiveTitleError::Empty));
        assert_eq!(
            LiveTitle::parse(&"a".repeat(121)),
            Err(LiveTitleError::TooLong)
        );
        assert_eq!(LiveTitle::parse("a\nb").unwrap().as_str(), "a b");
        assert_eq!(
            LiveTitle::parse("Live \u{202E}golf").unwrap().as_str(),
            "Live golf"
        );
        assert_eq!(LiveTitle::parse("\u{200B}"), Err(LiveTitleError::Empty));
        assert_eq!(
            LiveTitle::parse("a\u{0}b"),
            Err(LiveTitleError::ControlCharacters)
        );
    }

    #[test]
    fn default_title_names_the_user() {
        assert_eq!(LiveTitle::default_for("alice").as_str(), "alice's live");
    }
}
