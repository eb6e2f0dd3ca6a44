//! [`Username`]: the public handle that also appears in URLs (`/{username}/live`).

use std::fmt;

/// Shortest allowed username, in characters.
pub const MIN_USERNAME_LEN: usize = 3;
/// Longest allowed username, in characters.
pub const MAX_USERNAME_LEN: usize = 30;

/// Names that would clash with the app's own routes or be misleading. Compared
/// case-insensitively.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "healthz",
    "internal",
    "live",
    "lives",
    "login",
    "logout",
    "me",
    "media",
    "privatehub",
    "root",
    "settings",
    "signup",
    "start",
    "start-live",
    "static",
    "stop",
    "support",
    "system",
    "ws",
];

/// A valid username: 3 to 30 ASCII letters, digits, `_` or `-`, starting with a letter
/// or digit, and not a reserved word. Case is kept for display; uniqueness and lookups
/// are case-insensitive (the column is `COLLATE NOCASE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

/// Why a string is not a valid [`Username`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Fewer than [`MIN_USERNAME_LEN`] or more than [`MAX_USERNAME_LEN`] characters.
    #[error("a username must have between {MIN_USERNAME_LEN} and {MAX_USERNAME_LEN} characters")]
    Length,
    /// A character outside `A-Z a-z 0-9 _ -`, or a first character that is `_` or `-`.
    #[error(
        "a username may contain only letters, digits, '_' and '-', and must start with a letter or digit"
    )]
    Characters,
    /// One of the reserved words.
    #[error("this username is reserved")]
    Reserved,
}

impl Username {
    /// Checks `raw` (surrounding whitespace is not trimmed: it is an error).
    pub fn parse(raw: &str) -> Result<Username, UsernameError> {
        let length = raw.chars().count();
        if !(MIN_USERNAME_LEN..=MAX_USERNAME_LEN).contains(&length) {
            return Err(UsernameError::Length);
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let first_ok = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok || !raw.chars().all(allowed) {
            return Err(UsernameError::Characters);
        }
        if RESERVED.iter().any(|word| word.eq_ignore_ascii_case(raw)) {
            return Err(UsernameError::Reserved);
        }
        Ok(Username(raw.to_owned()))
    }

    /// Wraps a name read back from the database (it was validated when stored).
    pub(crate) fn from_trusted(stored: String) -> Username {
        Username(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form used as a rate-limit key.
    pub fn canonical(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl AsRef<str> for Username {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in ["abc", "Alice", "bob_99", "x-y-z", "0cool", &"a".repeat(30)] {
            assert_eq!(Username::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn refuses_bad_lengths() {
        for name in ["", "ab", &"a".repeat(31)] {
            assert_eq!(
                Username::parse(name),
                Err(UsernameError::Length),
                "{name:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_characters() {
        for name in [
            "_abc", "-abc", "a b c", "abc!", "ábc", "abc/def", " abc", "abc\n", "a.bc", "<b>x",
        ] {
            assert_eq!(
                Username::parse(name),
                Err(UsernameError::Characters),
                "{name:?}"
            );
        }
    }

    #[test]
    fn refuses_reserved_words_in_any_case() {
        for name in [
            "api",
            "API",
            "Login",
            "start-live",
            "STATIC",
            "healthz",
            "admin",
        ] {
            assert_eq!(
                Username::parse(name),
                Err(UsernameError::Reserved),
                "{name:?}"
            );
        }
    }

    #[test]
    fn canonical_form_is_lowercase() {
        assert_eq!(Username::parse("AliCe").unwrap().canonical(), "alice");
    }
}
