//! Password hashing with argon2id at m=19 MiB, t=2, p=1 (the `argon2` crate's defaults,
//! as OWASP recommends), computed into a caller-owned [`ArgonMemory`] so that the hashing
//! workers reuse one 19 MiB buffer each instead of allocating one per request (the
//! allocator keeps freed buffers, so per-request allocation grows the process for good).
//!
//! These functions are CPU-heavy and synchronous: only the hashing pool
//! ([`super::hashing`]) calls them.

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;

use crate::domain::Password;
use crate::error::InternalError;

/// Largest memory cost accepted from a stored hash, in KiB: a hash written with a larger
/// one (a future setting) is refused rather than letting it size a buffer at will.
const MAX_STORED_M_COST_KIB: u32 = 256 * 1024;
/// Length of the salt of new hashes, in bytes.
const SALT_BYTES: usize = 16;

/// The memory blocks of one argon2 computation, kept between computations.
#[derive(Default)]
pub struct ArgonMemory {
    blocks: Vec<Block>,
}

impl ArgonMemory {
    /// The first `count` blocks, growing the buffer only when it is too small.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.len() < count {
            self.blocks = vec![Block::default(); count];
        }
        &mut self.blocks[..count]
    }

    /// Bytes held (for metrics).
    pub fn held_bytes(&self) -> usize {
        self.blocks.len() * Block::SIZE
    }
}

fn argon2id() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// A PHC-format argon2id hash of `password` with a fresh random salt.
pub fn hash_password(
    password: &Password,
    memory: &mut ArgonMemory,
) -> Result<String, InternalError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let salt_string =
        SaltString::encode_b64(&salt).map_err(|error| InternalError(format!("salt: {error}")))?;
    let argon = argon2id();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            &salt,
            &mut out,
            memory.blocks(argon.params().block_count()),
        )
        .map_err(|error| InternalError(format!("argon2: {error}")))?;
    let output = Output::new(&out).map_err(|error| InternalError(format!("argon2: {error}")))?;
    let params = argon
        .params()
        .try_into()
        .map_err(|error| InternalError(format!("argon2 params: {error}")))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params,
        salt: Some(salt_string.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches `stored_hash` (compared in constant time). An unparsable
/// stored hash never matches, but still costs a full computation so that it cannot be
/// told apart by timing.
pub fn verify_password(password: &Password, stored_hash: &str, memory: &mut ArgonMemory) -> bool {
    match verify_stored(password, stored_hash, memory) {
        Ok(matches) => matches,
        Err(problem) => {
            tracing::error!(%problem, "stored password hash is unusable");
            spend_like_a_verification(password, memory);
            false
        }
    }
}

fn verify_stored(
    password: &Password,
    stored_hash: &str,
    memory: &mut ArgonMemory,
) -> Result<bool, String> {
    let parsed = PasswordHash::new(stored_hash).map_err(|error| error.to_string())?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|error| error.to_string())?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|error| error.to_string())?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|error| error.to_string())?;
    if params.m_cost() > MAX_STORED_M_COST_KIB {
        return Err(format!("memory cost {} KiB is too large", params.m_cost()));
    }
    let expected = parsed.hash.ok_or("the hash has no output")?;
    let salt = parsed.salt.ok_or("the hash has no salt")?;
    let mut salt_buffer = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buffer)
        .map_err(|error| error.to_string())?;
    let argon = Argon2::new(algorithm, version, params);
    let mut computed = vec![0u8; expected.len()];
    argon
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            salt,
            &mut computed,
            memory.blocks(argon.params().block_count()),
        )
        .map_err(|error| error.to_string())?;
    let computed = Output::new(&computed).map_err(|error| error.to_string())?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// Spends the same work as a real verification, for log-ins to unknown accounts, so
/// response time does not reveal which usernames exist. Cannot fail quietly into a
/// fast path: the computation itself is the point.
pub fn spend_like_a_verification(password: &Password, memory: &mut ArgonMemory) {
    let argon = argon2id();
    let salt = [0x5au8; SALT_BYTES];
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if let Err(error) = argon.hash_password_into_with_memory(
        password.expose().as_bytes(),
        &salt,
        &mut out,
        memory.blocks(argon.params().block_count()),
    ) {
        tracing::error!(%error, "dummy argon2 computation failed");
    }
    std::hint::black_box(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify_reusing_one_buffer() {
        let mut memory = ArgonMemory::default();
        let password = Password::parse("correct horse".into()).unwrap();
        let hash = hash_password(&password, &mut memory).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let held = memory.held_bytes();
        assert_eq!(held, 19 * 1024 * 1024);
        assert!(verify_password(&password, &hash, &mut memory));
        let wrong = Password::for_login("wrong horse".into()).unwrap();
        assert!(!verify_password(&wrong, &hash, &mut memory));
        assert!(!verify_password(&password, "garbage", &mut memory));
        // Fresh salt every time; the buffer did not grow.
        assert_ne!(hash, hash_password(&password, &mut memory).unwrap());
        assert_eq!(memory.held_bytes(), held);
    }

    #[test]
    fn hashes_from_the_argon2_crates_own_encoder_verify() {
        use argon2::password_hash::PasswordHasher;
        let password = Password::parse("correct horse".into()).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let stored = Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .unwrap()
            .to_string();
        let mut memory = ArgonMemory::default();
        assert!(verify_password(&password, &stored, &mut memory));
    }

    #[test]
    fn absurd_stored_memory_cost_is_refused() {
        let password = Password::parse("correct horse".into()).unwrap();
        let stored = "$argon2id$v=19$m=4000000,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$\
                      AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let mut memory = ArgonMemory::default();
        assert!(!verify_password(&password, stored, &mut memory));
        assert!(memory.held_bytes() <= 19 * 1024 * 1024);
    }
}
