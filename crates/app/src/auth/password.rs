//! Password hashing with argon2id (the `argon2` crate's defaults: m=19 MiB, t=2,
//! p=1, as OWASP recommends). Hashing is CPU-heavy: call these from `web::block`.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use crate::domain::Password;
use crate::error::InternalError;

/// A PHC-format argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &Password) -> Result<String, InternalError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|error| InternalError(format!("salt: {error}")))?;
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| InternalError(format!("argon2: {error}")))
}

/// Whether `password` matches `stored_hash`. An unparsable stored hash never matches.
pub fn verify_password(password: &Password, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(error) => {
            tracing::error!(%error, "stored password hash is unparsable");
            false
        }
    }
}

/// Spends the same work as a real verification, for log-ins to unknown accounts, so
/// response time does not reveal which usernames exist.
pub fn verify_against_dummy(password: &Password) {
    static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let random = Password::for_login(crate::settings::hex(&bytes)).expect("short enough");
        hash_password(&random).unwrap_or_default()
    });
    let _ = verify_password(password, &DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let password = Password::parse("correct horse".into()).unwrap();
        let hash = hash_password(&password).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&password, &hash));
        let wrong = Password::for_login("wrong horse".into()).unwrap();
        assert!(!verify_password(&wrong, &hash));
        assert!(!verify_password(&password, "garbage"));
        // Fresh salt every time.
        assert_ne!(hash, hash_password(&password).unwrap());
    }
}
