//! Request signatures as a client presents them, and sealed signing keys as the store hands
//! them back.
//!
//! Input: 8 bytes of timestamp (little-endian), then the signature header's text; the whole
//! input is also tried as a sealed key and as a master key. Asserts that a tag is decoded exactly
//! when the text is standard base64 of 32 bytes (padding optional), that made-up signatures and
//! sealed keys never verify or open, that a real signature verifies once inside the window and
//! is then a replay, and that changing one character of it makes it invalid.
#![no_main]

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chrono::{DateTime, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use tessera::domain::fields::TokenId;
use tessera::domain::signature::{
    DEFAULT_WINDOW, MasterKey, PresentedSignature, ReplayGuard, SealedSigningKey, SignatureId,
    SignatureRejection, SigningKey, sign, verify,
};

const NOW: i64 = 1_780_000_000;
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static KEY: LazyLock<SigningKey> = LazyLock::new(SigningKey::generate);
static MASTER: LazyLock<MasterKey> = LazyLock::new(|| {
    MasterKey::parse(&SecretString::from(STANDARD.encode([7u8; 32]))).expect("master key")
});
static TOKEN: LazyLock<TokenId> = LazyLock::new(TokenId::generate);

/// Remembers every signature of one input.
#[derive(Default)]
struct Guard(RefCell<HashSet<SignatureId>>);

impl ReplayGuard for Guard {
    fn window(&self) -> Duration {
        DEFAULT_WINDOW
    }

    fn first_use(&self, signature: SignatureId, _: Duration) -> bool {
        self.0.borrow_mut().insert(signature)
    }
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(NOW, 0).single().expect("instant")
}

fuzz_target!(|data: &[u8]| {
    let sealed = SealedSigningKey::from_bytes(data.to_vec());
    assert!(
        MASTER.open(&sealed, &TOKEN).is_err(),
        "made-up sealed key opened"
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = MasterKey::parse(&SecretString::from(text.to_owned()));
    }

    let Some((stamp, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let timestamp = i64::from_le_bytes(*stamp);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let payload = text.as_bytes().to_vec();

    let presented = PresentedSignature::parse(timestamp, text, payload.clone());
    assert_eq!(presented.tag, reference_tag(text), "{text:?}");
    assert_eq!(presented.timestamp, timestamp);
    assert_eq!(
        verify(Some(&KEY.verifier()), &presented, now(), &Guard::default()),
        Err(SignatureRejection::Invalid),
        "a made-up signature verified"
    );
    assert_eq!(
        verify(None, &presented, now(), &Guard::default()),
        Err(SignatureRejection::Invalid)
    );

    // The input as the payload of a real signature, at its timestamp folded into the window
    // and beyond it.
    let skew = timestamp.rem_euclid(1_000) - 500;
    let signed_at = NOW + skew;
    let real = sign(&KEY, signed_at, &payload);
    let presented = PresentedSignature::parse(signed_at, &real, payload.clone());
    let guard = Guard::default();
    let first = verify(Some(&KEY.verifier()), &presented, now(), &guard);
    if skew.unsigned_abs() <= DEFAULT_WINDOW.as_secs() {
        assert_eq!(first, Ok(()));
        assert_eq!(
            verify(Some(&KEY.verifier()), &presented, now(), &guard),
            Err(SignatureRejection::Replayed)
        );
    } else {
        assert_eq!(first, Err(SignatureRejection::OutOfWindow));
    }

    // One character changed, at a position and to a character the input picks.
    let position = usize::from(rest.first().copied().unwrap_or(0)) % real.len();
    let replacement = BASE64[usize::from(rest.last().copied().unwrap_or(0)) % BASE64.len()];
    let mut changed = real.clone().into_bytes();
    if changed[position] != replacement {
        changed[position] = replacement;
        let changed = String::from_utf8(changed).expect("ascii");
        let presented = PresentedSignature::parse(signed_at, &changed, payload);
        assert_eq!(
            verify(Some(&KEY.verifier()), &presented, now(), &Guard::default()),
            Err(SignatureRejection::Invalid),
            "{real} changed to {changed} still verifies"
        );
    }
});

/// Standard-alphabet base64 of exactly 32 bytes, with its padding or without, around whitespace.
fn reference_tag(text: &str) -> Option<[u8; 32]> {
    let trimmed = text.trim();
    let decoded = if trimmed.ends_with('=') {
        STANDARD.decode(trimmed)
    } else {
        STANDARD_NO_PAD.decode(trimmed)
    };
    decoded
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}
