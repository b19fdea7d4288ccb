//! Signed requests: `base64(HMAC-SHA256(signing_key, timestamp + "\n" + payload))`.
//!
//! - The signing key is a random string (`tss_` and 43 base62 characters, about 256 bits) whose
//!   UTF-8 bytes are the HMAC key, so a client in any language signs with a plain
//!   `hmac(key, message)` and nothing to decode. It is shown once (creation, rotation, or when an
//!   update turns signing on) and stored only encrypted under the server's master key
//!   ([`MasterKey`], XChaCha20-Poly1305 with the token id as associated data, so a sealed key
//!   moved to another token's row does not open).
//! - When a credential enters the cache its key is opened once and kept as a keyed HMAC state
//!   ([`Verifier`]): a Check clones that state instead of running the key schedule again, and
//!   compares tags in constant time (`subtle`).
//! - A signature is fresh when its timestamp is within the window (default ±300 s) of the
//!   server's clock, and new when the [`ReplayGuard`] has not seen it: the guard remembers each
//!   verified signature until its timestamp leaves the window, so no signature is accepted twice.
//! - Behind Envoy, the payload is [`canonical_http_payload`]: method, path (with query) and the
//!   body's SHA-256, one per line.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngExt;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::fields::TokenId;

/// Before the `_` of every signing key, so secret scanners and people can tell it from a token.
pub const SIGNING_KEY_PREFIX: &str = "tss";
const SIGNING_KEY_RANDOM_LEN: usize = 43;
/// An HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
const MASTER_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// First byte of a sealed key: the sealing scheme, so it can change without guessing.
const SEALED_VERSION: u8 = 1;
/// Standard base64, with or without padding: clients differ, and the bytes are what count.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The default accepted difference, either way, between a signature's timestamp and now.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// A token's signing key in the clear. Exists when it is generated (to be shown once and
/// sealed) and while it is turned into a [`Verifier`]; `Debug` never prints it.
#[derive(Clone)]
pub struct SigningKey(SecretString);

impl SigningKey {
    pub fn generate() -> Self {
        let random: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(SIGNING_KEY_RANDOM_LEN)
            .map(char::from)
            .collect();
        Self(SecretString::from(format!("{SIGNING_KEY_PREFIX}_{random}")))
    }

    /// The key as the client must use it (shown once).
    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    pub fn verifier(&self) -> Verifier {
        Verifier::new(self.0.expose_secret().as_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// A signing key as stored: version byte, nonce, ciphertext and tag.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSigningKey(Vec<u8>);

impl SealedSigningKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SealedSigningKey {
    // Ciphertext is not secret, but nobody needs it in a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSigningKey({} bytes)", self.0.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the master key must be base64 of exactly 32 bytes")]
pub struct InvalidMasterKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnsealError {
    #[error("the sealed signing key has an unknown format")]
    UnknownFormat,
    /// Wrong master key, a key sealed for another token, or a damaged row.
    #[error("the sealed signing key does not open with this master key for this token")]
    DoesNotOpen,
}

/// The server's key-encryption key (`TESSERA_MASTER_KEY`). `Debug` never prints it.
#[derive(Clone)]
pub struct MasterKey(XChaCha20Poly1305);

impl MasterKey {
    /// Base64 (standard, padding optional) of exactly 32 bytes.
    pub fn parse(encoded: &SecretString) -> Result<Self, InvalidMasterKey> {
        let bytes = LENIENT_BASE64
            .decode(encoded.expose_secret().trim())
            .map_err(|_| InvalidMasterKey)?;
        let bytes = secrecy::SecretSlice::from(bytes);
        if bytes.expose_secret().len() != MASTER_KEY_LEN {
            return Err(InvalidMasterKey);
        }
        XChaCha20Poly1305::new_from_slice(bytes.expose_secret())
            .map(Self)
            .map_err(|_| InvalidMasterKey)
    }

    /// Encrypts `key` for `token`: the token id is authenticated with it.
    pub fn seal(&self, key: &SigningKey, token: &TokenId) -> SealedSigningKey {
        self.seal_bytes(key.0.expose_secret().as_bytes(), token.as_str())
    }

    pub fn open(
        &self,
        sealed: &SealedSigningKey,
        token: &TokenId,
    ) -> Result<SigningKey, UnsealError> {
        let plaintext = self.open_bytes(sealed, token.as_str())?;
        let text = String::from_utf8(plaintext.expose_secret().to_vec())
            .map_err(|_| UnsealError::DoesNotOpen)?;
        Ok(SigningKey(SecretString::from(text)))
    }

    /// Encrypts any secret for the row it belongs to (`owner`, authenticated with it): token
    /// signing keys, webhook secrets (src/domain/webhook.rs), in the same sealed format.
    pub fn seal_bytes(&self, secret: &[u8], owner: &str) -> SealedSigningKey {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let payload = Payload {
            msg: secret,
            aad: owner.as_bytes(),
        };
        let ciphertext = self
            .0
            .encrypt(&XNonce::from(nonce), payload)
            // XChaCha20-Poly1305 fails only for messages beyond 256 GiB.
            .unwrap_or_default();
        debug_assert!(!ciphertext.is_empty());
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        SealedSigningKey(sealed)
    }

    /// The secret `seal_bytes` sealed for `owner`.
    pub fn open_bytes(
        &self,
        sealed: &SealedSigningKey,
        owner: &str,
    ) -> Result<secrecy::SecretSlice<u8>, UnsealError> {
        let Some((&SEALED_VERSION, rest)) = sealed.0.split_first() else {
            return Err(UnsealError::UnknownFormat);
        };
        if rest.len() <= NONCE_LEN {
            return Err(UnsealError::UnknownFormat);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| UnsealError::UnknownFormat)?;
        let payload = Payload {
            msg: ciphertext,
            aad: owner.as_bytes(),
        };
        let plaintext = self
            .0
            .decrypt(&nonce, payload)
            .map_err(|_| UnsealError::DoesNotOpen)?;
        Ok(secrecy::SecretSlice::from(plaintext))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// HMAC-SHA256 already keyed with a token's signing key; cloned per verification.
#[derive(Clone)]
pub struct Verifier(Hmac<Sha256>);

impl Verifier {
    fn new(key: &[u8]) -> Self {
        // HMAC takes keys of any length; this cannot fail.
        let keyed = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        Self(keyed)
    }

    /// The tag of `timestamp + "\n" + payload`.
    fn tag(&self, timestamp: i64, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `timestamp + "\n" + payload`, compared in constant time.
    fn accepts(&self, tag: &[u8; TAG_LEN], timestamp: i64, payload: &[u8]) -> bool {
        let expected = self.tag(timestamp, payload);
        expected.ct_eq(tag).into()
    }
}

impl fmt::Debug for Verifier {
    // Derived from the key: as secret as the key itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier([redacted])")
    }
}

/// A signature as a request presents it, parsed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedSignature {
    /// Unix seconds at which the client signed.
    pub timestamp: i64,
    /// The decoded tag; None when the presented text was not base64 of 32 bytes, which can only
    /// be an invalid signature (the client's data, not a malformed call).
    pub tag: Option<[u8; TAG_LEN]>,
    /// The bytes that were signed.
    pub payload: Vec<u8>,
}

impl PresentedSignature {
    pub fn parse(timestamp: i64, signature: &str, payload: Vec<u8>) -> Self {
        let tag = LENIENT_BASE64
            .decode(signature.trim())
            .ok()
            .and_then(|bytes| <[u8; TAG_LEN]>::try_from(bytes).ok());
        Self {
            timestamp,
            tag,
            payload,
        }
    }
}

/// A verified signature's identity for the replay guard: its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignatureId(pub [u8; TAG_LEN]);

/// Remembers verified signatures so none is accepted twice.
pub trait ReplayGuard {
    /// The accepted difference, either way, between a signature's timestamp and now.
    fn window(&self) -> Duration;

    /// Records `signature` for `remember_for` (until its timestamp leaves the window); false
    /// when it was already recorded. Must be atomic: of two concurrent callers with the same
    /// signature, exactly one gets true.
    fn first_use(&self, signature: SignatureId, remember_for: Duration) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureRejection {
    /// No key to verify with, an undecodable signature, or a tag that does not match.
    Invalid,
    OutOfWindow,
    Replayed,
}

/// A signature whose tag and timestamp passed, not yet shown to a replay guard: what the guard
/// records, and for how long (until its timestamp leaves the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshSignature {
    pub id: SignatureId,
    pub remember_for: Duration,
}

/// Verifies the tag (constant time), then the timestamp window. The replay guard comes after,
/// apart, because the fleet's guard (`fleet::replay`) is asynchronous while this is pure.
///
/// The tag comes first so that only a holder of the key learns anything about the window or the
/// replay guard, and so that unverified signatures never fill the guard.
pub fn verify_tag_and_window(
    verifier: Option<&Verifier>,
    presented: &PresentedSignature,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<FreshSignature, SignatureRejection> {
    let (Some(verifier), Some(tag)) = (verifier, presented.tag) else {
        return Err(SignatureRejection::Invalid);
    };
    if !verifier.accepts(&tag, presented.timestamp, &presented.payload) {
        return Err(SignatureRejection::Invalid);
    }
    let skew = now.timestamp().abs_diff(presented.timestamp);
    if skew > window.as_secs() {
        return Err(SignatureRejection::OutOfWindow);
    }
    // Acceptable until timestamp + window; remembered one second longer for rounding.
    let acceptable_for = presented
        .timestamp
        .saturating_add_unsigned(window.as_secs())
        .saturating_sub(now.timestamp());
    Ok(FreshSignature {
        id: SignatureId(tag),
        remember_for: Duration::from_secs(acceptable_for.unsigned_abs() + 1),
    })
}

/// [`verify_tag_and_window`], then that `guard` has not seen the signature.
pub fn verify(
    verifier: Option<&Verifier>,
    presented: &PresentedSignature,
    now: DateTime<Utc>,
    guard: &impl ReplayGuard,
) -> Result<(), SignatureRejection> {
    let fresh = verify_tag_and_window(verifier, presented, now, guard.window())?;
    if !guard.first_use(fresh.id, fresh.remember_for) {
        return Err(SignatureRejection::Replayed);
    }
    Ok(())
}

/// What a client signs for a request that passes through Envoy: the method, the path as sent
/// (with its query string) and the lowercase hex SHA-256 of the body (of no bytes when the body
/// is not signed), one per line, without a trailing newline.
pub fn canonical_http_payload(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let body_hash = hex::encode(Sha256::digest(body));
    format!("{method}\n{path}\n{body_hash}").into_bytes()
}

/// The signature a client would send: base64 of the tag (for tests, benches and the CLI).
pub fn sign(key: &SigningKey, timestamp: i64, payload: &[u8]) -> String {
    STANDARD.encode(key.verifier().tag(timestamp, payload))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    /// Remembers everything forever, and what it was asked to remember for how long.
    #[derive(Default)]
    struct RecordingGuard {
        seen: RefCell<HashMap<SignatureId, Duration>>,
    }

    impl ReplayGuard for RecordingGuard {
        fn window(&self) -> Duration {
            DEFAULT_WINDOW
        }

        fn first_use(&self, signature: SignatureId, remember_for: Duration) -> bool {
            self.seen
                .borrow_mut()
                .insert(signature, remember_for)
                .is_none()
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).single().expect("instant")
    }

    const NOW: i64 = 1_780_000_000;

    fn signed(key: &SigningKey, timestamp: i64, payload: &[u8]) -> PresentedSignature {
        PresentedSignature::parse(timestamp, &sign(key, timestamp, payload), payload.to_vec())
    }

    #[test]
    fn a_correct_signature_inside_the_window_is_accepted_once() {
        let key = SigningKey::generate();
        let guard = RecordingGuard::default();
        let presented = signed(&key, NOW - 10, b"GET /orders");
        let verifier = key.verifier();
        assert_eq!(verify(Some(&verifier), &presented, at(NOW), &guard), Ok(()));
        assert_eq!(
            verify(Some(&verifier), &presented, at(NOW), &guard),
            Err(SignatureRejection::Replayed)
        );
    }

    #[test]
    fn the_signed_message_is_the_timestamp_a_newline_and_the_payload() {
        let key = SigningKey::generate();
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(
            key.secret().expose_secret().as_bytes(),
        )
        .expect("key");
        mac.update(b"1780000000\nhello");
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sign(&key, NOW, b"hello"), expected);
    }

    #[test]
    fn a_signature_made_with_another_key_is_invalid() {
        let guard = RecordingGuard::default();
        let presented = signed(&SigningKey::generate(), NOW, b"payload");
        let other = SigningKey::generate().verifier();
        assert_eq!(
            verify(Some(&other), &presented, at(NOW), &guard),
            Err(SignatureRejection::Invalid)
        );
        assert!(guard.seen.borrow().is_empty());
    }

    #[test]
    fn a_changed_payload_or_timestamp_invalidates_the_signature() {
        let key = SigningKey::generate();
        let guard = RecordingGuard::default();
        let mut presented = signed(&key, NOW, b"GET /orders");
        presented.payload = b"GET /admin".to_vec();
        assert_eq!(
            verify(Some(&key.verifier()), &presented, at(NOW), &guard),
            Err(SignatureRejection::Invalid)
        );
        let mut presented = signed(&key, NOW, b"GET /orders");
        presented.timestamp += 1;
        assert_eq!(
            verify(Some(&key.verifier()), &presented, at(NOW), &guard),
            Err(SignatureRejection::Invalid)
        );
    }

    #[test]
    fn a_token_without_a_usable_key_accepts_no_signature() {
        let key = SigningKey::generate();
        let presented = signed(&key, NOW, b"x");
        assert_eq!(
            verify(None, &presented, at(NOW), &RecordingGuard::default()),
            Err(SignatureRejection::Invalid)
        );
    }

    #[test]
    fn timestamps_beyond_the_window_either_way_are_out_of_window() {
        let key = SigningKey::generate();
        let verifier = key.verifier();
        let guard = RecordingGuard::default();
        for timestamp in [NOW - 301, NOW + 301, i64::MIN, i64::MAX, 0] {
            assert_eq!(
                verify(
                    Some(&verifier),
                    &signed(&key, timestamp, b"x"),
                    at(NOW),
                    &guard
                ),
                Err(SignatureRejection::OutOfWindow),
                "timestamp {timestamp}"
            );
        }
        for timestamp in [NOW - 300, NOW + 300] {
            assert_eq!(
                verify(
                    Some(&verifier),
                    &signed(&key, timestamp, b"x"),
                    at(NOW),
                    &guard
                ),
                Ok(()),
                "timestamp {timestamp}"
            );
        }
    }

    #[test]
    fn a_signature_is_remembered_until_its_timestamp_leaves_the_window() {
        let key = SigningKey::generate();
        let guard = RecordingGuard::default();
        let presented = signed(&key, NOW + 100, b"x");
        verify(Some(&key.verifier()), &presented, at(NOW), &guard).expect("accepted");
        let remembered = guard.seen.borrow().values().copied().collect::<Vec<_>>();
        // Acceptable until NOW + 100 + 300, plus a second for rounding.
        assert_eq!(remembered, vec![Duration::from_secs(401)]);
    }

    #[test]
    fn base64_with_or_without_padding_decodes_to_the_same_tag() {
        let key = SigningKey::generate();
        let padded = sign(&key, NOW, b"x");
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        assert_eq!(
            PresentedSignature::parse(NOW, &padded, Vec::new()).tag,
            PresentedSignature::parse(NOW, unpadded, Vec::new()).tag
        );
    }

    #[test]
    fn a_signature_that_is_not_base64_of_32_bytes_has_no_tag() {
        for text in ["", "not base64!", "AAAA", &STANDARD.encode([0u8; 31])] {
            assert_eq!(PresentedSignature::parse(NOW, text, Vec::new()).tag, None);
        }
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_master_key_and_for_its_token() {
        let master =
            MasterKey::parse(&SecretString::from(STANDARD.encode([7u8; 32]))).expect("master key");
        let other_master =
            MasterKey::parse(&SecretString::from(STANDARD.encode([8u8; 32]))).expect("master key");
        let token = TokenId::generate();
        let key = SigningKey::generate();
        let sealed = master.seal(&key, &token);
        let opened = master.open(&sealed, &token).expect("opens");
        assert_eq!(
            opened.secret().expose_secret(),
            key.secret().expose_secret()
        );
        assert_eq!(
            other_master.open(&sealed, &token).err(),
            Some(UnsealError::DoesNotOpen)
        );
        assert_eq!(
            master.open(&sealed, &TokenId::generate()).err(),
            Some(UnsealError::DoesNotOpen)
        );
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts_that_never_contain_the_key() {
        let master =
            MasterKey::parse(&SecretString::from(STANDARD.encode([7u8; 32]))).expect("master key");
        let token = TokenId::generate();
        let key = SigningKey::generate();
        let first = master.seal(&key, &token);
        let second = master.seal(&key, &token);
        assert_ne!(first, second);
        let plain = key.secret().expose_secret().as_bytes();
        for sealed in [first, second] {
            assert!(!sealed.as_bytes().windows(plain.len()).any(|w| w == plain));
        }
    }

    #[test]
    fn a_damaged_or_foreign_sealed_key_is_reported_not_opened() {
        let master =
            MasterKey::parse(&SecretString::from(STANDARD.encode([7u8; 32]))).expect("master key");
        let token = TokenId::generate();
        let mut sealed = master.seal(&SigningKey::generate(), &token).0;
        assert_eq!(
            master.open(&SealedSigningKey(Vec::new()), &token).err(),
            Some(UnsealError::UnknownFormat)
        );
        assert_eq!(
            master.open(&SealedSigningKey(vec![2; 64]), &token).err(),
            Some(UnsealError::UnknownFormat)
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            master.open(&SealedSigningKey(sealed), &token).err(),
            Some(UnsealError::DoesNotOpen)
        );
    }

    #[test]
    fn a_master_key_must_be_base64_of_32_bytes() {
        assert!(MasterKey::parse(&SecretString::from(STANDARD.encode([1u8; 32]))).is_ok());
        assert_eq!(
            MasterKey::parse(&SecretString::from(STANDARD.encode([1u8; 16]))).err(),
            Some(InvalidMasterKey)
        );
        assert_eq!(
            MasterKey::parse(&SecretString::from("not base64")).err(),
            Some(InvalidMasterKey)
        );
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let key = SigningKey::generate();
        let master_text = STANDARD.encode([9u8; 32]);
        let master = MasterKey::parse(&SecretString::from(master_text.clone())).expect("master");
        let shown = format!("{key:?} {:?} {master:?}", key.verifier());
        assert!(!shown.contains(key.secret().expose_secret()));
        assert!(!shown.contains(&master_text));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn a_generated_signing_key_has_its_prefix_and_about_256_bits() {
        let key = SigningKey::generate();
        let text = key.secret().expose_secret();
        assert!(text.starts_with("tss_"));
        assert_eq!(text.len(), 4 + SIGNING_KEY_RANDOM_LEN);
        assert_ne!(text, SigningKey::generate().secret().expose_secret());
    }

    #[test]
    fn the_canonical_http_payload_is_method_path_and_body_hash_on_three_lines() {
        assert_eq!(
            canonical_http_payload("POST", "/api/v1/orders?x=1", b"{}"),
            b"POST\n/api/v1/orders?x=1\n\
              44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
                .to_vec()
        );
        let empty = canonical_http_payload("GET", "/", b"");
        assert!(
            empty.ends_with(b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
    }

    proptest! {
        #[test]
        fn parsing_any_text_as_a_signature_never_panics(text in ".*", timestamp in any::<i64>()) {
            let presented = PresentedSignature::parse(timestamp, &text, Vec::new());
            let verified = verify(
                Some(&SigningKey::generate().verifier()),
                &presented,
                at(NOW),
                &RecordingGuard::default(),
            );
            prop_assert!(verified.is_err());
        }

        #[test]
        fn every_signature_a_client_makes_in_the_window_verifies(
            payload in proptest::collection::vec(any::<u8>(), 0..256),
            skew in -300i64..=300,
        ) {
            let key = SigningKey::generate();
            let presented = signed(&key, NOW + skew, &payload);
            prop_assert_eq!(
                verify(Some(&key.verifier()), &presented, at(NOW), &RecordingGuard::default()),
                Ok(())
            );
        }
    }
}
