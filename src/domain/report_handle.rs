//! The report handle: Check's server-signed receipt that ReportUsage presents instead of a bare
//! token id.
//!
//! A handle is opaque bytes: a version byte, the Check's time (unix microseconds, big-endian
//! i64), the token id (one length byte), the endpoint label (two length bytes; Check bounds it
//! to 256 bytes), then the HMAC-SHA256 of all of that under a key every replica shares. A
//! handle that verifies proves that this fleet's Check identified and allowed that token, for
//! that endpoint, at that time; ReportUsage records the handle's token, endpoint and time, so a
//! caller cannot choose them. Minting one is a clone of the keyed HMAC state, one update over
//! about 60 to 300 bytes and one allocation, the response's own buffer.
//!
//! The key comes from `TESSERA_REPORT_HANDLE_KEY`, else is derived from `TESSERA_MASTER_KEY`
//! (HMAC-SHA256 of a label under it, so the two keys never coincide), else is random per
//! process: then only the replica that answered a Check accepts its handles ([`KeySource`]).

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use super::fields::TokenId;

const VERSION: u8 = 1;
const TIME_LEN: usize = 8;
const MAC_LEN: usize = 32;
/// Version, time, the two length fields and the MAC: a handle is never shorter.
const FIXED_LEN: usize = 1 + TIME_LEN + 1 + 2 + MAC_LEN;
/// The longest endpoint a handle carries (Check's own bound is 256 bytes).
const MAX_ENDPOINT_LEN: usize = 1024;
/// Longer is refused before the MAC is computed, so no caller makes the server hash megabytes.
const MAX_LEN: usize = FIXED_LEN + u8::MAX as usize + MAX_ENDPOINT_LEN;
/// The least key material accepted from `TESSERA_REPORT_HANDLE_KEY`.
pub const MIN_KEY_LEN: usize = 32;
/// Keeps a key derived from the master key apart from every other use of the master key.
const MASTER_KEY_LABEL: &[u8] = b"tessera report handle key v1";

const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Where the handle key came from, for the startup log (never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `TESSERA_REPORT_HANDLE_KEY`.
    Configured,
    /// Derived from `TESSERA_MASTER_KEY`.
    MasterKey,
    /// Drawn at start: handles verify only on the replica that minted them.
    RandomPerProcess,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::MasterKey => "derived from the master key",
            Self::RandomPerProcess => "random per process",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be base64 of at least {MIN_KEY_LEN} random bytes")]
pub struct InvalidReportHandleKey;

/// Why a presented handle is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Not a handle of this format at all (truncated, another version, bad lengths).
    #[error("is not a report handle returned by Check")]
    Malformed,
    /// Well-formed, but its MAC is not this fleet's: forged or altered.
    #[error("is not signed by this server")]
    Forged,
}

/// What a verified handle says Check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportClaims {
    pub token_id: TokenId,
    pub endpoint: String,
    pub checked_at: DateTime<Utc>,
}

/// HMAC-SHA256 keyed with the fleet's handle key; cloned per handle.
#[derive(Clone)]
pub struct ReportHandleKey(Hmac<Sha256>);

impl fmt::Debug for ReportHandleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReportHandleKey([redacted])")
    }
}

impl ReportHandleKey {
    fn from_bytes(key: &[u8]) -> Self {
        // HMAC takes keys of any length; this cannot fail.
        let keyed = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        Self(keyed)
    }

    /// Base64 (standard, padding optional) of at least [`MIN_KEY_LEN`] bytes.
    pub fn parse(encoded: &SecretString) -> Result<Self, InvalidReportHandleKey> {
        let bytes = decode(encoded).ok_or(InvalidReportHandleKey)?;
        if bytes.expose_secret().len() < MIN_KEY_LEN {
            return Err(InvalidReportHandleKey);
        }
        Ok(Self::from_bytes(bytes.expose_secret()))
    }

    /// The key derived from the master key's text (base64 of its 32 bytes): the HMAC of a
    /// label under the master key. None when the text is not base64 (the master key's own
    /// validation names that setting).
    pub fn derived_from_master_key(master_key: &SecretString) -> Option<Self> {
        let bytes = decode(master_key)?;
        let mut mac = Self::from_bytes(bytes.expose_secret()).0;
        mac.update(MASTER_KEY_LABEL);
        let derived: [u8; MAC_LEN] = mac.finalize().into_bytes().into();
        Some(Self::from_bytes(&derived))
    }

    /// A key of this process alone.
    pub fn random() -> Self {
        let mut key = [0u8; MIN_KEY_LEN];
        rand::fill(&mut key);
        Self::from_bytes(&key)
    }

    /// The handle of a Check that allowed `token_id` for `endpoint` at `checked_at`.
    pub fn mint(&self, token_id: &TokenId, endpoint: &str, checked_at: DateTime<Utc>) -> Vec<u8> {
        let id = token_id.as_str().as_bytes();
        // Token ids are `tok_` and a ULID; Check bounds endpoints to 256 bytes. Longer would be
        // cut, which only makes the handle disagree with the endpoint the caller names, never
        // verify for another token.
        let id = &id[..id.len().min(usize::from(u8::MAX))];
        let endpoint = endpoint.as_bytes();
        let endpoint = &endpoint[..endpoint.len().min(MAX_ENDPOINT_LEN)];
        let mut handle = Vec::with_capacity(FIXED_LEN + id.len() + endpoint.len());
        handle.push(VERSION);
        handle.extend_from_slice(&checked_at.timestamp_micros().to_be_bytes());
        handle.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        handle.extend_from_slice(id);
        handle.extend_from_slice(
            &u16::try_from(endpoint.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        handle.extend_from_slice(endpoint);
        let mut mac = self.0.clone();
        mac.update(&handle);
        handle.extend_from_slice(&mac.finalize().into_bytes());
        handle
    }

    /// The claims of a handle this key minted. The MAC is checked (in constant time) before
    /// anything in the handle is believed.
    pub fn open(&self, handle: &[u8]) -> Result<ReportClaims, HandleError> {
        if !(FIXED_LEN..=MAX_LEN).contains(&handle.len()) || handle[0] != VERSION {
            return Err(HandleError::Malformed);
        }
        let (body, tag) = handle.split_at(handle.len() - MAC_LEN);
        let mut mac = self.0.clone();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| HandleError::Forged)?;

        let mut time = [0u8; TIME_LEN];
        time.copy_from_slice(&body[1..1 + TIME_LEN]);
        let rest = &body[1 + TIME_LEN..];
        let (&id_len, rest) = rest.split_first().ok_or(HandleError::Malformed)?;
        let (id, rest) = rest
            .split_at_checked(usize::from(id_len))
            .ok_or(HandleError::Malformed)?;
        let (endpoint_len, endpoint) = rest.split_at_checked(2).ok_or(HandleError::Malformed)?;
        let endpoint_len = u16::from_be_bytes([endpoint_len[0], endpoint_len[1]]);
        if endpoint.len() != usize::from(endpoint_len) {
            return Err(HandleError::Malformed);
        }
        let token_id = std::str::from_utf8(id)
            .ok()
            .and_then(|id| TokenId::parse(id).ok())
            .ok_or(HandleError::Malformed)?;
        let endpoint = std::str::from_utf8(endpoint).map_err(|_| HandleError::Malformed)?;
        let checked_at = DateTime::from_timestamp_micros(i64::from_be_bytes(time))
            .ok_or(HandleError::Malformed)?;
        Ok(ReportClaims {
            token_id,
            endpoint: endpoint.to_owned(),
            checked_at,
        })
    }
}

fn decode(encoded: &SecretString) -> Option<SecretSlice<u8>> {
    LENIENT_BASE64
        .decode(encoded.expose_secret().trim())
        .ok()
        .map(SecretSlice::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_id() -> TokenId {
        TokenId::parse("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("id")
    }

    fn checked_at() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_780_000_000_123_456).expect("time")
    }

    #[test]
    fn a_minted_handle_opens_to_its_token_endpoint_and_time() {
        let key = ReportHandleKey::random();
        let handle = key.mint(&token_id(), "GET /orders", checked_at());
        let claims = key.open(&handle).expect("opens");
        assert_eq!(claims.token_id, token_id());
        assert_eq!(claims.endpoint, "GET /orders");
        assert_eq!(claims.checked_at, checked_at());
    }

    #[test]
    fn every_altered_byte_makes_a_handle_refused() {
        let key = ReportHandleKey::random();
        let handle = key.mint(&token_id(), "GET /orders", checked_at());
        for index in 0..handle.len() {
            let mut altered = handle.clone();
            altered[index] ^= 0x01;
            assert!(key.open(&altered).is_err(), "byte {index} altered");
        }
        assert_eq!(
            key.open(&handle[..handle.len() - 1]),
            Err(HandleError::Forged)
        );
        assert_eq!(key.open(&handle[..10]), Err(HandleError::Malformed));
        assert_eq!(key.open(b""), Err(HandleError::Malformed));
    }

    #[test]
    fn a_handle_of_another_key_is_forged() {
        let handle = ReportHandleKey::random().mint(&token_id(), "GET /a", checked_at());
        assert_eq!(
            ReportHandleKey::random().open(&handle),
            Err(HandleError::Forged)
        );
    }

    #[test]
    fn replicas_sharing_a_configured_or_master_key_accept_each_others_handles() {
        let text = SecretString::from("c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=");
        let configured = ReportHandleKey::parse(&text).expect("32 bytes");
        let handle = configured.mint(&token_id(), "GET /a", checked_at());
        assert!(
            ReportHandleKey::parse(&text)
                .expect("key")
                .open(&handle)
                .is_ok()
        );

        let derived = ReportHandleKey::derived_from_master_key(&text).expect("derived");
        let handle = derived.mint(&token_id(), "GET /a", checked_at());
        let again = ReportHandleKey::derived_from_master_key(&text).expect("derived");
        assert!(again.open(&handle).is_ok());
        // The derived key is not the master key itself.
        assert_eq!(configured.open(&handle), Err(HandleError::Forged));
    }

    #[test]
    fn a_configured_key_shorter_than_32_bytes_or_not_base64_is_refused() {
        for text in ["dG9vIHNob3J0", "not base64 at all!"] {
            assert_eq!(
                ReportHandleKey::parse(&SecretString::from(text)).err(),
                Some(InvalidReportHandleKey)
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(
            format!("{:?}", ReportHandleKey::random()),
            "ReportHandleKey([redacted])"
        );
    }
}
