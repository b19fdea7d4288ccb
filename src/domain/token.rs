//! The token format: `<prefix>_<30 base62 random><6 base62 CRC32>`.
//!
//! The checksum lets Check reject a mistyped or made-up token without touching the cache or the
//! store, and lets secret scanners recognise leaked tokens. Only the SHA-256 of the whole token
//! is ever stored.

use std::fmt;

use rand::RngExt;
use rand::distr::Alphanumeric;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The longest secret of another format than Tessera's that Check hashes and looks up (for
/// imported tokens); a longer one is TOKEN_MALFORMED with no work beyond its length.
pub const MAX_IMPORTED_SECRET_LEN: usize = 512;

/// The prefix before `_`: lowercase letters and digits, starting with a letter, at most 16 long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPrefix(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token prefix is 1 to 16 lowercase letters or digits, starting with a letter")]
pub struct InvalidPrefix;

impl TokenPrefix {
    pub fn parse(raw: &str) -> Result<Self, InvalidPrefix> {
        let mut chars = raw.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if starts_with_letter && rest_ok && raw.len() <= 16 {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPrefix)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TokenPrefix {
    fn default() -> Self {
        Self("tsk".to_owned())
    }
}

impl fmt::Display for TokenPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a presented token was rejected before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedToken {
    #[error("the token does not start with the expected prefix")]
    WrongPrefix,
    #[error("the token has the wrong length")]
    WrongLength,
    #[error("the token contains characters outside base62")]
    NotBase62,
    #[error("the token's checksum does not match")]
    BadChecksum,
}

/// SHA-256 of a whole token (or admin key): the only form in which secrets are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Debug for SecretHash {
    // A hash is not a secret, but a short form keeps logs readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.to_hex()[..12])
    }
}

/// A freshly generated secret. Its Debug output is redacted by `SecretString`.
#[derive(Debug)]
pub struct GeneratedSecret {
    pub secret: SecretString,
    pub hash: SecretHash,
    pub hint: String,
}

/// Generates a new token secret for `prefix`.
pub fn generate(prefix: &TokenPrefix) -> GeneratedSecret {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    let token = format_token(prefix, &random);
    let hash = SecretHash::of(&token);
    let hint = hint_of(&token, prefix);
    GeneratedSecret {
        secret: SecretString::from(token),
        hash,
        hint,
    }
}

/// The token for a random part under `prefix`: `<prefix>_<random><checksum of random>`. Public so
/// that property tests can build tokens from chosen random parts.
pub fn format_token(prefix: &TokenPrefix, random: &str) -> String {
    let checksum = encode_checksum(crc32fast::hash(random.as_bytes()));
    format!("{prefix}_{random}{checksum}")
}

/// Checks prefix, length, alphabet and checksum; on success the token may be looked up.
pub fn parse<'a>(presented: &'a str, prefix: &TokenPrefix) -> Result<&'a str, MalformedToken> {
    let body = presented
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(MalformedToken::WrongPrefix)?;
    if body.len() != BODY_LEN {
        return Err(MalformedToken::WrongLength);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(MalformedToken::NotBase62);
    }
    let (random, checksum) = body.split_at(RANDOM_LEN);
    if encode_checksum(crc32fast::hash(random.as_bytes())) != checksum {
        return Err(MalformedToken::BadChecksum);
    }
    Ok(presented)
}

/// `tsk_…abcd`: enough to recognise a token in a list, far too little to guess it.
pub fn hint_of(token: &str, prefix: &TokenPrefix) -> String {
    let last_four = &token[token.len().saturating_sub(4)..];
    format!("{prefix}_…{last_four}")
}

/// CRC32 in exactly six base62 digits (62^6 > 2^32), most significant first.
fn encode_checksum(mut value: u32) -> String {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn fresh() -> String {
        generate(&TokenPrefix::default())
            .secret
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn a_generated_token_parses_and_has_the_documented_shape() {
        let token = fresh();
        assert!(token.starts_with("tsk_"));
        assert_eq!(token.len(), 4 + 36);
        assert_eq!(parse(&token, &TokenPrefix::default()), Ok(token.as_str()));
    }

    #[test]
    fn a_token_with_another_prefix_is_malformed() {
        let token = fresh().replacen("tsk_", "abc_", 1);
        assert_eq!(
            parse(&token, &TokenPrefix::default()),
            Err(MalformedToken::WrongPrefix)
        );
    }

    #[test]
    fn a_truncated_token_is_malformed() {
        let token = fresh();
        assert_eq!(
            parse(&token[..token.len() - 1], &TokenPrefix::default()),
            Err(MalformedToken::WrongLength)
        );
    }

    #[test]
    fn a_token_with_a_non_base62_character_is_malformed() {
        let mut token = fresh();
        token.replace_range(10..11, "-");
        assert_eq!(
            parse(&token, &TokenPrefix::default()),
            Err(MalformedToken::NotBase62)
        );
    }

    #[test]
    fn a_token_with_a_changed_random_character_fails_the_checksum() {
        let token = fresh();
        let mut bytes = token.into_bytes();
        bytes[6] = if bytes[6] == b'a' { b'b' } else { b'a' };
        let changed = String::from_utf8(bytes).expect("ascii");
        assert_eq!(
            parse(&changed, &TokenPrefix::default()),
            Err(MalformedToken::BadChecksum)
        );
    }

    #[test]
    fn the_checksum_encoding_is_fixed_width() {
        assert_eq!(encode_checksum(0), "000000");
        assert_eq!(encode_checksum(u32::MAX).len(), 6);
    }

    #[test]
    fn the_hint_shows_only_the_prefix_and_last_four_characters() {
        let token = fresh();
        let hint = hint_of(&token, &TokenPrefix::default());
        assert_eq!(hint, format!("tsk_…{}", &token[token.len() - 4..]));
    }

    #[test]
    fn debug_output_of_a_generated_secret_does_not_contain_it() {
        let generated = generate(&TokenPrefix::default());
        let debug = format!("{generated:?}");
        assert!(!debug.contains(generated.secret.expose_secret()));
    }

    #[test]
    fn prefixes_must_be_lowercase_alphanumeric_and_start_with_a_letter() {
        assert!(TokenPrefix::parse("acme2").is_ok());
        assert!(TokenPrefix::parse("").is_err());
        assert!(TokenPrefix::parse("2acme").is_err());
        assert!(TokenPrefix::parse("Acme").is_err());
        assert!(TokenPrefix::parse("a_b").is_err());
    }
}
