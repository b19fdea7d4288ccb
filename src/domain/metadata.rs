//! A token's metadata: the caller's own key-value pairs, bounded and parsed once at the edge.
//!
//! Bounds (docs/api.md, "Metadata"): at most [`MAX_ENTRIES`] entries; keys `[a-z0-9_.-]`, 1 to
//! [`MAX_KEY_LEN`] characters; values at most [`MAX_VALUE_BYTES`] bytes of text without control
//! characters (so a gateway can forward one as a header value); keys and values together at
//! most [`MAX_TOTAL_BYTES`]. A value of [`Metadata`] is within them, whatever built it.

use std::collections::BTreeMap;

pub const MAX_ENTRIES: usize = 32;
pub const MAX_KEY_LEN: usize = 64;
pub const MAX_VALUE_BYTES: usize = 512;
pub const MAX_TOTAL_BYTES: usize = 8 * 1024;

/// Why metadata was refused. A key is quoted only when it is short and well-formed enough to
/// be shown; values are never quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMetadata {
    #[error("at most {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("keys must be 1 to {MAX_KEY_LEN} characters of a-z, 0-9, '_', '.', '-'")]
    BadKey,
    #[error("the value of {key} must be at most {MAX_VALUE_BYTES} bytes")]
    ValueTooLong { key: MetadataKey },
    #[error("the value of {key} must not contain control characters")]
    ControlCharacter { key: MetadataKey },
    #[error("keys and values must be at most {MAX_TOTAL_BYTES} bytes in all")]
    TooLarge,
}

/// A metadata key: `[a-z0-9_.-]{1,64}`, so it can be a header name's suffix as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetadataKey(String);

impl MetadataKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidMetadata> {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_KEY_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidMetadata::BadKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MetadataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token's metadata, in key order; within every bound.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(BTreeMap<MetadataKey, String>);

/// One `metadata.KEY` path of an update: set the entry, or (None) delete it.
pub type MetadataChange = (MetadataKey, Option<String>);

impl Metadata {
    /// Metadata from the caller's pairs; refused unless every bound holds.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, InvalidMetadata> {
        let mut map = BTreeMap::new();
        for (key, value) in entries {
            // Checked as it grows, so a flood of entries costs no more than the bound.
            if map.len() >= MAX_ENTRIES {
                return Err(InvalidMetadata::TooManyEntries);
            }
            let key = MetadataKey::parse(key)?;
            let value = parse_value(&key, value)?;
            map.insert(key, value);
        }
        Self::bounded(map)
    }

    fn bounded(map: BTreeMap<MetadataKey, String>) -> Result<Self, InvalidMetadata> {
        if map.len() > MAX_ENTRIES {
            return Err(InvalidMetadata::TooManyEntries);
        }
        let total: usize = map
            .iter()
            .map(|(key, value)| key.0.len() + value.len())
            .sum();
        if total > MAX_TOTAL_BYTES {
            return Err(InvalidMetadata::TooLarge);
        }
        Ok(Self(map))
    }

    /// This metadata with `changes` applied in order, refused unless the result is within
    /// every bound.
    pub fn with_changes(&self, changes: &[MetadataChange]) -> Result<Self, InvalidMetadata> {
        let mut map = self.0.clone();
        for (key, value) in changes {
            match value {
                Some(value) => map.insert(key.clone(), value.clone()),
                None => map.remove(key),
            };
        }
        Self::bounded(map)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(held, _)| held.as_str() == key)
            .map(|(_, value)| value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// Heap bytes of keys and values, for the cache's weigher.
    pub fn bytes(&self) -> usize {
        self.0
            .iter()
            .map(|(key, value)| key.0.len() + value.len())
            .sum()
    }
}

/// A value for `key`: at most [`MAX_VALUE_BYTES`], no control characters.
pub fn parse_value(key: &MetadataKey, raw: &str) -> Result<String, InvalidMetadata> {
    if raw.len() > MAX_VALUE_BYTES {
        return Err(InvalidMetadata::ValueTooLong { key: key.clone() });
    }
    if raw.chars().any(char::is_control) {
        return Err(InvalidMetadata::ControlCharacter { key: key.clone() });
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> Result<Metadata, InvalidMetadata> {
        Metadata::parse(pairs.iter().copied())
    }

    #[test]
    fn keys_of_the_allowed_alphabet_up_to_64_characters_are_accepted() {
        let longest = "k".repeat(MAX_KEY_LEN);
        let parsed =
            metadata(&[("plan", "pro"), ("a.b-c_9", ""), (&longest, "x")]).expect("valid metadata");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed.get("plan"), Some("pro"));
    }

    #[test]
    fn keys_outside_the_alphabet_or_length_are_refused() {
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        for key in ["", "Plan", "a b", "a/b", "ключ", too_long.as_str()] {
            assert_eq!(
                metadata(&[(key, "v")]),
                Err(InvalidMetadata::BadKey),
                "{key:?}"
            );
        }
    }

    #[test]
    fn values_over_512_bytes_or_with_control_characters_are_refused() {
        let key = MetadataKey::parse("k").expect("key");
        assert!(metadata(&[("k", &"é".repeat(MAX_VALUE_BYTES / 2))]).is_ok());
        assert_eq!(
            metadata(&[("k", &"x".repeat(MAX_VALUE_BYTES + 1))]),
            Err(InvalidMetadata::ValueTooLong { key: key.clone() })
        );
        assert_eq!(
            metadata(&[("k", "line\r\nx-injected: 1")]),
            Err(InvalidMetadata::ControlCharacter { key })
        );
    }

    #[test]
    fn thirty_two_entries_are_accepted_and_thirty_three_refused() {
        let keys: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|key| (key.as_str(), "v")).collect();
        assert!(metadata(&pairs[..MAX_ENTRIES]).is_ok());
        assert_eq!(metadata(&pairs), Err(InvalidMetadata::TooManyEntries));
    }

    #[test]
    fn more_than_8_kib_in_all_is_refused_though_each_value_fits() {
        let keys: Vec<String> = (0..17).map(|i| format!("k{i:02}")).collect();
        let value = "v".repeat(MAX_VALUE_BYTES - 3);
        let pairs: Vec<(&str, &str)> = keys
            .iter()
            .map(|key| (key.as_str(), value.as_str()))
            .collect();
        // 16 entries of 3 + 509 bytes are exactly 8 KiB.
        assert!(metadata(&pairs[..16]).is_ok());
        assert_eq!(metadata(&pairs), Err(InvalidMetadata::TooLarge));
    }

    #[test]
    fn changes_set_and_delete_single_entries_and_keep_the_rest() {
        let current = metadata(&[("plan", "free"), ("region", "eu")]).expect("metadata");
        let key = |raw: &str| MetadataKey::parse(raw).expect("key");
        let changed = current
            .with_changes(&[
                (key("plan"), Some("pro".to_owned())),
                (key("region"), None),
                (key("team"), Some("7".to_owned())),
            ])
            .expect("within bounds");
        let pairs: Vec<(&str, &str)> = changed.iter().collect();
        assert_eq!(pairs, [("plan", "pro"), ("team", "7")]);
    }

    #[test]
    fn a_change_that_would_exceed_the_entry_bound_is_refused() {
        let keys: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&str, &str)> = keys.iter().map(|key| (key.as_str(), "v")).collect();
        let full = metadata(&pairs).expect("full metadata");
        let one_more = [(
            MetadataKey::parse("extra").expect("key"),
            Some(String::new()),
        )];
        assert_eq!(
            full.with_changes(&one_more),
            Err(InvalidMetadata::TooManyEntries)
        );
    }
}
