//! [`LogField`]: a client-supplied string as it goes into a log line, cut to a bounded
//! length, so a 16 KB username or path cannot fill the journal.

use std::fmt;

/// Characters of a client-supplied field kept in logs.
pub const MAX_LOGGED_CHARS: usize = 128;

/// Displays at most [`MAX_LOGGED_CHARS`] characters of the string, control characters
/// escaped, and the full length when it was cut.
pub struct LogField<'a>(pub &'a str);

impl fmt::Display for LogField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == MAX_LOGGED_CHARS {
                return write!(f, "…({} bytes)", self.0.len());
            }
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LogField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_fields_are_cut_and_controls_escaped() {
        assert_eq!(LogField("alice").to_string(), "alice");
        assert_eq!(LogField("a\nb").to_string(), "a\\nb");
        let long = "x".repeat(16 * 1024);
        let shown = LogField(&long).to_string();
        assert!(shown.len() < 200, "{}", shown.len());
        assert!(shown.ends_with("…(16384 bytes)"));
    }
}
