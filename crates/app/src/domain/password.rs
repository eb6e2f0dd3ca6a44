//! [`Password`]: a candidate password, kept secret so it never reaches logs.

use secrecy::{ExposeSecret, SecretString};

/// Shortest allowed password, in characters.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest allowed password, in characters. Bounds the hashing work per request.
pub const MAX_PASSWORD_LEN: usize = 128;

/// A password that satisfies the length policy. `Debug` does not show it.
#[derive(Debug)]
pub struct Password(SecretString);

/// Why a string is not an acceptable new password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Fewer than [`MIN_PASSWORD_LEN`] or more than [`MAX_PASSWORD_LEN`] characters.
    #[error("a password must have between {MIN_PASSWORD_LEN} and {MAX_PASSWORD_LEN} characters")]
    Length,
    /// Only whitespace.
    #[error("a password cannot be only spaces")]
    Blank,
}

impl Password {
    /// Checks a new password (sign-up).
    pub fn parse(raw: String) -> Result<Password, PasswordError> {
        let length = raw.chars().count();
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&length) {
            return Err(PasswordError::Length);
        }
        if raw.trim().is_empty() {
            return Err(PasswordError::Blank);
        }
        Ok(Password(SecretString::from(raw)))
    }

    /// A password typed at log-in: only the upper bound is enforced, so the hashing
    /// cost stays bounded; anything else simply fails to verify.
    pub fn for_login(raw: String) -> Result<Password, PasswordError> {
        if raw.chars().count() > MAX_PASSWORD_LEN {
            return Err(PasswordError::Length);
        }
        Ok(Password(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_policy() {
        assert_eq!(
            Password::parse("short".into()).unwrap_err(),
            PasswordError::Length
        );
        assert_eq!(
            Password::parse("x".repeat(129)).unwrap_err(),
            PasswordError::Length
        );
        assert_eq!(
            Password::parse("x".repeat(128)).unwrap().expose().len(),
            128
        );
        assert_eq!(
            Password::parse("12345678".into()).unwrap().expose(),
            "12345678"
        );
    }

    #[test]
    fn blank_is_refused() {
        assert_eq!(
            Password::parse(" ".repeat(10)).unwrap_err(),
            PasswordError::Blank
        );
    }

    #[test]
    fn debug_does_not_leak() {
        let password = Password::parse("hunter2hunter2".into()).unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    #[test]
    fn login_only_bounds_length() {
        assert!(Password::for_login("a".into()).is_ok());
        assert!(Password::for_login("a".repeat(129)).is_err());
    }
}
