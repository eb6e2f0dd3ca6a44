//! Stream keys: the secret a WHIP client (OBS) presents as `Authorization: Bearer`.
//!
//! A key is 32 random bytes, hex, behind a `phk_` prefix (easy to recognise in a leak
//! scan). It is stored twice: its BLAKE2s hash, the unique index a WHIP request is looked
//! up by, and sealed with AES-256-GCM under a key derived from `STREAM_KEY_SECRET`
//! (the user id as associated data, so a sealed key moved to another row does not
//! open), because the settings page must be able to show it again.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use blake2::{Blake2s256, Digest};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::db::users::UserId;
use crate::settings::hex;

/// Every key starts with this.
pub const STREAM_KEY_PREFIX: &str = "phk_";
/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// Longest `Authorization` value worth looking up: anything longer is not our key.
pub const MAX_PRESENTED_KEY_CHARS: usize = 128;

/// A stream key in the clear. Debug never prints it.
pub struct StreamKey(SecretString);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey([redacted])")
    }
}

impl StreamKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        StreamKey(SecretString::from(format!(
            "{STREAM_KEY_PREFIX}{}",
            hex(&bytes)
        )))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The lookup hash stored in `stream_keys.key_hash`.
    pub fn lookup_hash(&self) -> String {
        lookup_hash(self.expose())
    }

    /// Whether `presented` is this key, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(
            self.expose().as_bytes(),
            presented.as_bytes(),
        )
        .is_ok()
    }
}

/// The lookup hash of whatever a client presented.
pub fn lookup_hash(presented: &str) -> String {
    hex(&Blake2s256::digest(presented.as_bytes()))
}

/// What the database stores of a key: its lookup hash and the sealed key.
#[derive(Debug, Clone)]
pub struct SealedKey {
    pub key_hash: String,
    pub key_sealed: String,
}

/// A sealed key could not be opened: `STREAM_KEY_SECRET` changed, or the row was altered.
#[derive(Debug, thiserror::Error)]
#[error("the stored stream key cannot be opened (was STREAM_KEY_SECRET changed?)")]
pub struct UnsealError;

/// Seals and opens stored keys with the server secret.
#[derive(Clone)]
pub struct StreamKeySealer {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for StreamKeySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKeySealer")
    }
}

impl StreamKeySealer {
    pub fn new(secret: &SecretString) -> Self {
        let mut hasher = Blake2s256::new();
        hasher.update(b"privatehub stream keys v1\0");
        hasher.update(secret.expose_secret().as_bytes());
        let derived = hasher.finalize();
        let unbound = UnboundKey::new(&AES_256_GCM, &derived).expect("32-byte AES-256 key");
        StreamKeySealer {
            key: std::sync::Arc::new(LessSafeKey::new(unbound)),
        }
    }

    /// `hex(nonce || ciphertext || tag)`.
    pub fn seal(&self, user: UserId, key: &StreamKey) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = key.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(user.0.to_be_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM sealing of a short key");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        hex(&out)
    }

    /// A fresh key for `user`, and what to store of it.
    pub fn generate(&self, user: UserId) -> (StreamKey, SealedKey) {
        let key = StreamKey::generate();
        let sealed = SealedKey {
            key_hash: key.lookup_hash(),
            key_sealed: self.seal(user, &key),
        };
        (key, sealed)
    }

    pub fn open(&self, user: UserId, sealed_hex: &str) -> Result<StreamKey, UnsealError> {
        let bytes = unhex(sealed_hex).ok_or(UnsealError)?;
        if bytes.len() <= NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnsealError)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(user.0.to_be_bytes()), &mut sealed)
            .map_err(|_| UnsealError)?;
        let text = std::str::from_utf8(plain).map_err(|_| UnsealError)?;
        Ok(StreamKey(SecretString::from(text.to_owned())))
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|k| u8::from_str_radix(text.get(k..k + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(secret: &str) -> StreamKeySealer {
        StreamKeySealer::new(&SecretString::from(secret.to_owned()))
    }

    #[test]
    fn sealed_keys_open_only_with_the_same_secret_and_user() {
        let key = StreamKey::generate();
        assert!(key.expose().starts_with(STREAM_KEY_PREFIX));
        assert_eq!(key.expose().len(), STREAM_KEY_PREFIX.len() + 64);
        let sealed = sealer("one").seal(UserId(7), &key);
        assert!(
            !sealed.contains(&key.expose()[4..]),
            "sealed text holds the key"
        );
        let opened = sealer("one").open(UserId(7), &sealed).unwrap();
        assert!(opened.matches(key.expose()));
        assert!(sealer("two").open(UserId(7), &sealed).is_err());
        assert!(sealer("one").open(UserId(8), &sealed).is_err());
        assert!(sealer("one").open(UserId(7), "zz").is_err());
        assert!(sealer("one").open(UserId(7), "").is_err());
    }

    #[test]
    fn keys_compare_exactly_and_debug_hides_them() {
        let key = StreamKey::generate();
        assert!(key.matches(key.expose()));
        assert!(!key.matches(&key.expose()[..10]));
        assert!(!format!("{key:?}").contains(key.expose()));
        assert_ne!(StreamKey::generate().expose(), key.expose());
    }
}
