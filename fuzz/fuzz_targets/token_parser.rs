//! The token parser Check runs on every presented token before any lookup.
//!
//! Input: the presented token, or `prefix\ntoken` to parse under another configured prefix.
//! Asserts that each rejection names the first rule the text breaks (prefix, length, alphabet,
//! checksum, in that order), that an accepted token is returned unchanged, and that no
//! single-character change of an accepted token is accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::domain::token::{self, MalformedToken, TokenPrefix};

const BODY_LEN: usize = 36;
const RANDOM_LEN: usize = 30;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_under(text, &TokenPrefix::default());
    if let Some((candidate, presented)) = text.split_once('\n') {
        let expected_valid = prefix_is_valid(candidate);
        match TokenPrefix::parse(candidate) {
            Ok(prefix) => {
                assert!(expected_valid, "accepted prefix {candidate:?}");
                assert_eq!(prefix.to_string(), candidate);
                check_under(presented, &prefix);
            }
            Err(_) => assert!(!expected_valid, "rejected prefix {candidate:?}"),
        }
    }
});

/// The documented prefix rule, written out independently of the parser.
fn prefix_is_valid(candidate: &str) -> bool {
    let bytes = candidate.as_bytes();
    (1..=16).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_under(presented: &str, prefix: &TokenPrefix) {
    let head = format!("{prefix}_");
    match token::parse(presented, prefix) {
        Ok(parsed) => {
            assert_eq!(parsed, presented);
            assert_eq!(presented.len(), head.len() + BODY_LEN);
            assert!(presented.starts_with(&head));
            assert!(presented[head.len()..].bytes().all(|b| BASE62.contains(&b)));
            every_single_change_is_rejected(presented, prefix, head.len());
        }
        Err(MalformedToken::WrongPrefix) => assert!(!presented.starts_with(&head)),
        Err(MalformedToken::WrongLength) => {
            assert!(presented.starts_with(&head));
            assert_ne!(presented.len() - head.len(), BODY_LEN);
        }
        Err(MalformedToken::NotBase62) => {
            assert!(presented.starts_with(&head));
            assert_eq!(presented.len() - head.len(), BODY_LEN);
            assert!(!presented[head.len()..].bytes().all(|b| BASE62.contains(&b)));
        }
        Err(MalformedToken::BadChecksum) => {
            assert!(presented.starts_with(&head));
            assert_eq!(presented.len() - head.len(), BODY_LEN);
            assert!(presented[head.len()..].bytes().all(|b| BASE62.contains(&b)));
        }
    }
}

/// CRC32 catches every single-byte change of the random part, and the six checksum digits
/// encode one value only, so every other base62 character at any body position must fail.
fn every_single_change_is_rejected(valid: &str, prefix: &TokenPrefix, body_start: usize) {
    let mut bytes = valid.as_bytes().to_vec();
    for position in body_start..bytes.len() {
        let original = bytes[position];
        for &replacement in BASE62.iter().filter(|&&c| c != original) {
            bytes[position] = replacement;
            let changed = std::str::from_utf8(&bytes).expect("ascii");
            assert_eq!(
                token::parse(changed, prefix),
                Err(MalformedToken::BadChecksum),
                "a change at {position} ({} of the random part) was accepted",
                position - body_start < RANDOM_LEN
            );
        }
        bytes[position] = original;
    }
}
