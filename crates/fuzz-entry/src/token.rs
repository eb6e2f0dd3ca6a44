//! Target 3: media-token verification (`verify_media_token`), in three modes picked by
//! the first byte:
//! - 0: the rest is the token string, as a client sends it;
//! - 1: claims derived from the input (times relative to now, issuer and audience right
//!   or wrong), signed with the right secret: the claim checks get coverage, and a token
//!   the app could have issued must verify to exactly its claims;
//! - 2: a JWT whose header and payload are raw input bytes (split at the first NUL;
//!   without one, the standard HS256 header), signed with the right secret: the claims
//!   parser and the header checks see arbitrary JSON behind a valid signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use privatehub_protocol::{
    LiveId, MediaRole, MediaTokenClaims, issue_media_token, verify_media_token,
};

use crate::FUZZ_TOKEN_SECRET;
use crate::bytes::Bytes;

const ISSUER: &str = "privatehub-app";
const AUDIENCE: &str = "privatehub-media";
/// The longest lifetime a token may have, plus the leeway (`media_token.rs`).
const LONGEST: u64 = 86_400 + 5;
const LEEWAY: u64 = 5;

pub fn media_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            if let Ok(claims) = verify_media_token(&token, FUZZ_TOKEN_SECRET) {
                plausible(&claims);
            }
        }
        1 => derived_claims(rest),
        _ => raw_jwt(rest),
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What every accepted token must satisfy, whatever its origin.
fn plausible(claims: &MediaTokenClaims) {
    let now = now_unix();
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    assert!(claims.iat <= now + LEEWAY + 1, "{claims:?}");
    assert!(claims.exp >= claims.iat, "{claims:?}");
    assert!(claims.exp - claims.iat <= LONGEST, "{claims:?}");
    assert!(
        claims.exp.saturating_add(LEEWAY + 1) >= now,
        "expired token accepted: {claims:?}"
    );
    assert!(claims.exp <= now + LONGEST + 1, "{claims:?}");
}

fn derived_claims(rest: &[u8]) {
    let mut input = Bytes::new(rest);
    let now = now_unix();
    let live_id = LiveId(input.u64() as i64);
    let role = if input.u8() & 1 == 0 {
        MediaRole::Watch
    } else {
        MediaRole::Publish
    };
    let flags = input.u8();
    // iat within about ±36 hours of now, lifetime within about ±36 hours.
    let iat_offset = i64::from(input.u32() as i32 % 130_000);
    let ttl = i64::from(input.u32() as i32 % 130_000);
    let iat = now.saturating_add_signed(iat_offset);
    let exp = iat.saturating_add_signed(ttl);
    let pick = |bits: u8, right: &str, input: &mut Bytes<'_>| match bits % 4 {
        0 | 1 => right.to_owned(),
        2 => String::new(),
        _ => input.string(40),
    };
    let iss = pick(flags, ISSUER, &mut input);
    let aud = pick(flags >> 2, AUDIENCE, &mut input);
    let channel = input.string(64);
    let sub = input.string(64);
    let claims = MediaTokenClaims {
        live_id,
        channel,
        sub,
        role,
        iat,
        exp,
        iss,
        aud,
        record: flags & 16 != 0,
    };
    let token = issue_media_token(&claims, FUZZ_TOKEN_SECRET).expect("signing never fails");
    let verified = verify_media_token(&token, FUZZ_TOKEN_SECRET);
    if let Ok(got) = &verified {
        assert_eq!(got, &claims, "verified claims differ from the signed ones");
        plausible(got);
    }
    // What the app issues (right issuer and audience, issued up to an hour ago, a lifetime
    // up to 24 h, at least 10 s left) must verify.
    let issuable = claims.iss == ISSUER
        && claims.aud == AUDIENCE
        && (-3600..=0).contains(&iat_offset)
        && (1..=86_400).contains(&ttl)
        && iat_offset + ttl >= 10;
    if issuable {
        assert_eq!(verified.as_ref().map(|_| ()), Ok(()), "{claims:?}");
    }
}

fn raw_jwt(rest: &[u8]) {
    let standard: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;
    let (header, payload) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (standard, rest),
    };
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let Ok(signature) = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(FUZZ_TOKEN_SECRET),
        Algorithm::HS256,
    ) else {
        return;
    };
    let token = format!("{message}.{signature}");
    if let Ok(claims) = verify_media_token(&token, FUZZ_TOKEN_SECRET) {
        plausible(&claims);
    }
}
