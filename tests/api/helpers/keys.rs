//! Fresh key material, as an operator or the product itself would make it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

/// Fresh random text of `prefix_` and 36 base62 characters, from the product's own generator.
pub fn random_key(prefix: &str) -> String {
    let prefix = tessera::domain::token::TokenPrefix::parse(prefix).expect("a valid prefix");
    tessera::domain::token::generate(&prefix)
        .secret
        .expose_secret()
        .to_owned()
}

/// Base64 of 32 random bytes, as `openssl rand -base64 32` prints a master key, and the bytes.
pub fn random_master_key() -> (String, Vec<u8>) {
    let bytes = Sha256::digest(random_key("mk").as_bytes()).to_vec();
    (STANDARD.encode(&bytes), bytes)
}
