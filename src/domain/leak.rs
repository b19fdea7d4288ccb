//! Leak reports (issue 17, point 4): what a report of a leaked token is, what it does to the
//! token under its tenant's `leak_action`, and GitHub's secret scanning format with its
//! signature.
//!
//! A report names secrets as text. Each is first parsed as a Tessera token (prefix, length,
//! alphabet, checksum: `domain::token::parse`, as Check does); only one that passes is hashed and
//! looked up. The store then decides, in one transaction (`Store::report_leak`), from the
//! token's state and its tenant's policy what the report does ([`LeakOutcome`]), and writes the
//! audit entry ([`leak_audit`]) and the events ([`leak_events`]) built here.
//!
//! GitHub signs each report with ECDSA P-256 over SHA-256 of the raw body, the signature in ASN.1
//! DER and base64, under one of the public keys GitHub lists (`{"public_keys": [{"key_identifier",
//! "key", "is_current"}]}`, `key` a PEM SubjectPublicKeyInfo). [`GithubKeys`] holds such a list
//! and verifies.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::event::{EventType, NewEvent};
use super::model::{AuditEvent, Token};

/// At most this many tokens in one `POST /leaked-tokens`.
pub const MAX_REPORTED_TOKENS: usize = 100;

/// At most this many matches in one GitHub report (GitHub batches a few; the body limit bounds
/// it too).
pub const MAX_GITHUB_MATCHES: usize = 1000;

/// The longest `url` kept of a report, in bytes; a longer one from GitHub is cut (on a character
/// boundary), a longer one from `/leaked-tokens` refused.
pub const MAX_URL_LEN: usize = 2048;

/// Of repeated reports of a token whose tenant only notifies, one `token.leaked` event (and
/// audit entry) per this many seconds: a report repeated in a loop cannot fill the outbox.
pub const REPEAT_WINDOW_SECONDS: i64 = 3600;

/// The audit action of every leak report that did something.
pub const AUDIT_ACTION: &str = "token.leaked";

/// What a leak report does to a live token of the tenant (`tenant_policies.leak_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakAction {
    /// Revoke it at once, on every replica.
    #[default]
    Revoke,
    /// Leave it working: only the event, the audit entry and the metric.
    Notify,
}

impl LeakAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoke => "revoke",
            Self::Notify => "notify",
        }
    }

    /// The stored form back; None for any other text.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "revoke" => Some(Self::Revoke),
            "notify" => Some(Self::Notify),
            _ => None,
        }
    }
}

/// Who reported: the label of the metric, the `source` of the event, the audit actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakSource {
    /// GitHub secret scanning, signature verified.
    Github,
    /// Anyone, through `POST /leaked-tokens`.
    Report,
}

impl LeakSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Report => "report",
        }
    }

    pub fn actor(self) -> &'static str {
        match self {
            Self::Github => "secret-scanning:github",
            Self::Report => "leak-report",
        }
    }
}

/// What one reported secret came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakOutcome {
    /// A live token, revoked now (`leak_action` revoke).
    Revoked,
    /// A live token left working (`leak_action` notify), event and audit entry written.
    Notified,
    /// A live token left working whose last `token.leaked` is less than
    /// [`REPEAT_WINDOW_SECONDS`] old: nothing written.
    Repeated,
    /// A Tessera token that no longer works (revoked or expired, or a retired secret past its
    /// grace): nothing to do, nothing written.
    Inactive,
    /// Tessera's format, but no token has this secret.
    Unknown,
    /// Not a Tessera token (another prefix, length, alphabet or a bad checksum): no lookup.
    Malformed,
}

impl LeakOutcome {
    /// The `action` label of `tessera_leaked_tokens_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Notified => "notified",
            Self::Repeated => "repeated",
            Self::Inactive => "inactive",
            Self::Unknown => "unknown",
            Self::Malformed => "malformed",
        }
    }

    /// GitHub's label: `true_positive` for a token that worked when reported, else
    /// `false_positive` (no Tessera token, or one that no longer grants anything).
    pub fn github_label(self) -> &'static str {
        match self {
            Self::Revoked | Self::Notified | Self::Repeated => "true_positive",
            Self::Inactive | Self::Unknown | Self::Malformed => "false_positive",
        }
    }
}

/// What the store made of one reported secret: the outcome, and the token (as it is after the
/// report) when one was found.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakFinding {
    pub outcome: LeakOutcome,
    pub token: Option<Token>,
}

/// A report of one leaked token, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakReport {
    pub source: LeakSource,
    /// Where it was found, at most [`MAX_URL_LEN`] bytes.
    pub url: Option<String>,
    pub at: DateTime<Utc>,
}

impl LeakReport {
    /// The `leak` member of the event.
    fn json(&self, outcome: LeakOutcome) -> Value {
        json!({
            "source": self.source.as_str(),
            "url": self.url,
            "action": outcome.label(),
        })
    }
}

/// The audit entry of a report that revoked or notified.
pub fn leak_audit(token: &Token, report: &LeakReport, outcome: LeakOutcome) -> AuditEvent {
    let done = match outcome {
        LeakOutcome::Revoked => "revoked",
        _ => "left active (tenant policy leak_action notify)",
    };
    let found = report
        .url
        .as_deref()
        .map_or(String::new(), |url| format!(" at {url}"));
    AuditEvent {
        id: 0,
        time: report.at,
        actor: report.source.actor().to_owned(),
        action: AUDIT_ACTION.to_owned(),
        tenant: token.tenant.to_string(),
        token_id: Some(token.id.clone()),
        principal_id: Some(token.owner_id.clone()),
        summary: format!(
            "token \"{}\" ({}) reported leaked by {}{found}: {done}",
            token.name,
            token.id,
            report.source.as_str()
        ),
        admin_key: String::new(),
    }
}

/// The events of a report that revoked or notified: `token.leaked`, and `token.revoked` after
/// it when the report revoked. `token` is the token as it is after the report.
pub fn leak_events(token: &Token, report: &LeakReport, outcome: LeakOutcome) -> Vec<NewEvent> {
    let mut extra = Map::new();
    extra.insert("leak".to_owned(), report.json(outcome));
    let leaked = NewEvent::token_with(EventType::TokenLeaked, token, report.at, extra);
    match outcome {
        LeakOutcome::Revoked => vec![
            leaked,
            NewEvent::token(EventType::TokenRevoked, token, report.at),
        ],
        _ => vec![leaked],
    }
}

/// A `url` as a report gives it: None when empty, cut to [`MAX_URL_LEN`] bytes and control
/// characters dropped (it goes into an audit summary and an event).
pub fn bounded_url(raw: &str) -> Option<String> {
    let mut kept = String::with_capacity(raw.len().min(MAX_URL_LEN));
    for character in raw.chars().filter(|character| !character.is_control()) {
        if kept.len() + character.len_utf8() > MAX_URL_LEN {
            break;
        }
        kept.push(character);
    }
    Some(kept).filter(|kept| !kept.is_empty())
}

/// Why a report's body was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("the body is not valid JSON of the expected shape: {0}")]
    Shape(String),
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

/// One match of GitHub's report: `[{"token", "type", "url", "source"}]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GithubMatch {
    pub token: String,
    #[serde(rename = "type", default)]
    pub token_type: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub source: String,
}

/// One line of the answer to GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GithubLabel {
    pub token_raw: String,
    pub token_type: String,
    pub label: &'static str,
}

/// GitHub's report body, at most [`MAX_GITHUB_MATCHES`] matches.
pub fn parse_github_matches(body: &[u8]) -> Result<Vec<GithubMatch>, ReportError> {
    let matches: Vec<GithubMatch> =
        serde_json::from_slice(body).map_err(|error| ReportError::Shape(error.to_string()))?;
    if matches.len() > MAX_GITHUB_MATCHES {
        return Err(ReportError::Field {
            field: "matches",
            reason: format!("at most {MAX_GITHUB_MATCHES} in one report"),
        });
    }
    Ok(matches)
}

/// The body of `POST /leaked-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    tokens: Vec<String>,
    #[serde(default)]
    url: Option<String>,
}

/// A parsed `POST /leaked-tokens`: 1 to [`MAX_REPORTED_TOKENS`] tokens and where they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicReport {
    pub tokens: Vec<String>,
    pub url: Option<String>,
}

/// `{"tokens": [...], "url": "..."}`, refused naming `tokens` (none, more than
/// [`MAX_REPORTED_TOKENS`]) or `url` (longer than [`MAX_URL_LEN`]).
pub fn parse_public_report(body: &[u8]) -> Result<PublicReport, ReportError> {
    let raw: RawReport =
        serde_json::from_slice(body).map_err(|error| ReportError::Shape(error.to_string()))?;
    if raw.tokens.is_empty() || raw.tokens.len() > MAX_REPORTED_TOKENS {
        return Err(ReportError::Field {
            field: "tokens",
            reason: format!("give 1 to {MAX_REPORTED_TOKENS} tokens"),
        });
    }
    if raw.url.as_ref().is_some_and(|url| url.len() > MAX_URL_LEN) {
        return Err(ReportError::Field {
            field: "url",
            reason: format!("at most {MAX_URL_LEN} bytes"),
        });
    }
    Ok(PublicReport {
        tokens: raw.tokens,
        url: raw.url.as_deref().and_then(bounded_url),
    })
}

/// Why GitHub's key list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyListError {
    #[error("not GitHub's key list JSON: {0}")]
    Shape(String),
    #[error("public_keys[{index}].key is not a PEM P-256 public key")]
    Key { index: usize },
    #[error("the list has no keys")]
    Empty,
}

/// Why a report's signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no key has this identifier")]
    UnknownKey,
    #[error("the signature is not base64 of an ASN.1 DER ECDSA signature")]
    Malformed,
    #[error("the signature does not verify")]
    Invalid,
}

#[derive(Deserialize)]
struct RawKeyList {
    public_keys: Vec<RawKey>,
}

#[derive(Deserialize)]
struct RawKey {
    key_identifier: String,
    key: String,
    // `is_current` says which key GitHub signs with now; every listed key is accepted, so that a
    // report signed just before a rotation still verifies.
}

/// The public keys GitHub signs reports with, by identifier.
#[derive(Debug, Clone)]
pub struct GithubKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl GithubKeys {
    /// GitHub's key list JSON; every key must parse.
    pub fn parse(json: &[u8]) -> Result<Self, KeyListError> {
        let raw: RawKeyList =
            serde_json::from_slice(json).map_err(|error| KeyListError::Shape(error.to_string()))?;
        if raw.public_keys.is_empty() {
            return Err(KeyListError::Empty);
        }
        let keys = raw
            .public_keys
            .into_iter()
            .enumerate()
            .map(|(index, key)| {
                VerifyingKey::from_public_key_pem(key.key.trim())
                    .map(|verifying| (key.key_identifier, verifying))
                    .map_err(|_| KeyListError::Key { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies `signature` (base64 of DER) over `body` with the key named `key_id`.
    pub fn verify(&self, key_id: &str, signature: &str, body: &[u8]) -> Result<(), SignatureError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(identifier, _)| identifier == key_id)
            .ok_or(SignatureError::UnknownKey)?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::Malformed)?;
        let signature = Signature::from_der(&der).map_err(|_| SignatureError::Malformed)?;
        key.verify(body, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::elliptic_curve::Generate as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    fn key_pair() -> (SigningKey, String) {
        let signing = SigningKey::generate_from_rng(&mut rand::rng());
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        (signing, pem)
    }

    fn key_list(keys: &[(&str, &str)]) -> Vec<u8> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|(id, pem)| json!({"key_identifier": id, "key": pem, "is_current": true}))
            .collect();
        json!({ "public_keys": keys }).to_string().into_bytes()
    }

    fn sign(signing: &SigningKey, body: &[u8]) -> String {
        let signature: Signature = signing.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    #[test]
    fn a_report_signed_by_a_listed_key_verifies_and_a_tampered_one_does_not() {
        let (signing, pem) = key_pair();
        let (_, other_pem) = key_pair();
        let keys =
            GithubKeys::parse(&key_list(&[("old", &other_pem), ("k1", &pem)])).expect("keys");
        assert_eq!(keys.len(), 2);
        let body =
            br#"[{"token":"tsk_x","type":"tessera_token","url":"https://x","source":"content"}]"#;
        let signature = sign(&signing, body);
        assert_eq!(keys.verify("k1", &signature, body), Ok(()));
        assert_eq!(
            keys.verify("k1", &signature, b"[]"),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            keys.verify("old", &signature, body),
            Err(SignatureError::Invalid),
            "another listed key"
        );
        assert_eq!(
            keys.verify("k2", &signature, body),
            Err(SignatureError::UnknownKey)
        );
        assert_eq!(
            keys.verify("k1", "not base64!", body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            keys.verify("k1", "AAAA", body),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_key_list_with_a_key_that_is_not_a_p256_pem_is_refused_naming_its_index() {
        let (_, pem) = key_pair();
        assert_eq!(
            GithubKeys::parse(&key_list(&[("k1", &pem), ("k2", "-----BEGIN nonsense")]))
                .map(|keys| keys.len()),
            Err(KeyListError::Key { index: 1 })
        );
        assert_eq!(
            GithubKeys::parse(br#"{"public_keys": []}"#).map(|keys| keys.len()),
            Err(KeyListError::Empty)
        );
        assert!(matches!(
            GithubKeys::parse(b"[]"),
            Err(KeyListError::Shape(_))
        ));
    }

    #[test]
    fn githubs_matches_parse_with_their_field_names() {
        let matches = parse_github_matches(
            br#"[{"token":"tsk_a","type":"tessera_api_token","url":"https://github.com/o/r/blob/x","source":"content"},{"token":"b"}]"#,
        )
        .expect("parses");
        assert_eq!(matches.len(), 2);
        assert_eq!(matches[0].token_type, "tessera_api_token");
        assert_eq!(matches[0].source, "content");
        assert_eq!(matches[1].url, "");
        assert!(matches!(
            parse_github_matches(br#"{"token":"a"}"#),
            Err(ReportError::Shape(_))
        ));
    }

    #[test]
    fn a_public_report_holds_1_to_100_tokens_and_a_bounded_url() {
        let tokens = |count: usize| {
            json!({ "tokens": vec!["tsk_x"; count], "url": "https://paste.example/1" }).to_string()
        };
        let report = parse_public_report(tokens(100).as_bytes()).expect("100 tokens");
        assert_eq!(report.tokens.len(), 100);
        assert_eq!(report.url.as_deref(), Some("https://paste.example/1"));
        for count in [0, 101] {
            assert!(matches!(
                parse_public_report(tokens(count).as_bytes()),
                Err(ReportError::Field {
                    field: "tokens",
                    ..
                })
            ));
        }
        let long = json!({ "tokens": ["a"], "url": "x".repeat(MAX_URL_LEN + 1) }).to_string();
        assert!(matches!(
            parse_public_report(long.as_bytes()),
            Err(ReportError::Field { field: "url", .. })
        ));
        assert!(matches!(
            parse_public_report(br#"{"tokens": ["a"], "extra": 1}"#),
            Err(ReportError::Shape(_))
        ));
    }

    #[test]
    fn a_url_is_cut_on_a_character_boundary_without_control_characters() {
        assert_eq!(bounded_url(""), None);
        assert_eq!(bounded_url("a\nb").as_deref(), Some("ab"));
        let cut = bounded_url(&"é".repeat(MAX_URL_LEN)).expect("kept");
        assert!(cut.len() <= MAX_URL_LEN && cut.len() >= MAX_URL_LEN - 1);
    }

    #[test]
    fn only_reports_of_tokens_that_worked_are_true_positives_for_github() {
        for (outcome, label) in [
            (LeakOutcome::Revoked, "true_positive"),
            (LeakOutcome::Notified, "true_positive"),
            (LeakOutcome::Repeated, "true_positive"),
            (LeakOutcome::Inactive, "false_positive"),
            (LeakOutcome::Unknown, "false_positive"),
            (LeakOutcome::Malformed, "false_positive"),
        ] {
            assert_eq!(outcome.github_label(), label, "{outcome:?}");
        }
    }

    #[test]
    fn a_revoking_report_writes_the_leak_then_the_revocation_and_never_the_secret() {
        let token = crate::domain::fixtures::token();
        let report = LeakReport {
            source: LeakSource::Github,
            url: Some("https://github.com/o/r".to_owned()),
            at: Utc::now(),
        };
        let events = leak_events(&token, &report, LeakOutcome::Revoked);
        let types: Vec<EventType> = events.iter().map(|event| event.event_type).collect();
        assert_eq!(types, vec![EventType::TokenLeaked, EventType::TokenRevoked]);
        assert_eq!(
            events[0].data["leak"],
            json!({"source": "github", "url": "https://github.com/o/r", "action": "revoked"})
        );
        let notified = leak_events(&token, &report, LeakOutcome::Notified);
        assert_eq!(notified.len(), 1);
        let audit = leak_audit(&token, &report, LeakOutcome::Notified);
        assert_eq!(audit.actor, "secret-scanning:github");
        assert_eq!(audit.action, "token.leaked");
        assert_eq!(audit.token_id.as_ref(), Some(&token.id));
        assert_eq!(LeakAction::parse("notify"), Some(LeakAction::Notify));
        assert_eq!(
            LeakAction::parse(LeakAction::Revoke.as_str()),
            Some(LeakAction::Revoke)
        );
        assert_eq!(LeakAction::parse("ignore"), None);
    }
}
