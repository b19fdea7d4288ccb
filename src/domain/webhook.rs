//! Webhooks (issue 17): where a tenant's events are POSTed, how each delivery is signed, which
//! addresses a delivery may reach, and when a failed one is tried again.
//!
//! - A webhook's URL is parsed once ([`WebhookUrl::parse`]): absolute `http`/`https`, at most
//!   2048 bytes, a host, no credentials, no fragment; and, unless private URLs are allowed
//!   (`TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS`), no host that is an internal address or an internal
//!   name ([`blocked_address`], [`blocked_name`]). The delivery worker applies the same address
//!   rule to what a name resolves to at delivery time (src/events/delivery.rs), so a name that
//!   later points inside is refused then.
//! - Deliveries follow the Standard Webhooks specification: `webhook-id` (the event id),
//!   `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "id.timestamp.body">`, keyed with the bytes of the secret after `whsec_` ([`sign`]).
//! - The secret ([`WebhookSecret`]) is shown once and stored sealed with the key-encryption key,
//!   as token signing keys are (src/domain/signature.rs), the webhook id authenticated with it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;

use super::event::{Event, EventType, rfc3339};
use super::fields::{Description, Tenant};
use super::signature::{MasterKey, SealedSigningKey, UnsealError};

/// Longest webhook URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Webhooks one tenant may have.
pub const MAX_WEBHOOKS_PER_TENANT: u32 = 16;
/// Before the base64 of a webhook secret.
pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_LEN: usize = 32;
const WEBHOOK_ID_PREFIX: &str = "wh_";

/// The default retry schedule: after the first attempt (at once), these waits before each
/// retry, about a day in all; the delivery fails after the last.
pub const DEFAULT_RETRY_DELAYS: [Duration; 9] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(4 * 60 * 60),
    Duration::from_secs(8 * 60 * 60),
    Duration::from_secs(10 * 60 * 60),
];

/// A webhook's id: `wh_` and a ULID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookId(String);

impl WebhookId {
    pub fn generate() -> Self {
        Self(format!("{WEBHOOK_ID_PREFIX}{}", ulid::Ulid::new()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidWebhook> {
        let valid = raw
            .strip_prefix(WEBHOOK_ID_PREFIX)
            .is_some_and(|ulid| ulid::Ulid::from_string(ulid).is_ok());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidWebhook::Id)
        }
    }

    /// An id read back from the store, which only holds ids made by `generate`.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WebhookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a webhook field is refused; the text is what the caller reads (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWebhook {
    #[error("must be wh_ followed by a ULID")]
    Id,
    #[error("is required")]
    UrlMissing,
    #[error("must be at most {MAX_URL_LEN} bytes")]
    UrlTooLong,
    #[error("is not an absolute URL")]
    UrlMalformed,
    #[error("must be http or https")]
    UrlScheme,
    #[error("must name a host")]
    UrlHost,
    #[error("must not carry credentials (user:password@)")]
    UrlCredentials,
    #[error("must not have a fragment (#…)")]
    UrlFragment,
    /// SSRF: the host is an internal address or name.
    #[error(
        "points at a {0} address; webhooks may only reach public addresses (unless the server sets TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS=true)"
    )]
    UrlPrivate(&'static str),
}

/// Whether deliveries may reach internal addresses (`TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS`): off
/// in production, on for a receiver on the same machine or network (tests, development).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddressRule {
    pub allow_private: bool,
}

impl AddressRule {
    /// Why `address` may not be reached, or None when it may.
    pub fn refuses(self, address: IpAddr) -> Option<&'static str> {
        if self.allow_private {
            return None;
        }
        blocked_address(address)
    }
}

/// The kind of internal address `address` is, or None for a public one: loopback, link-local,
/// private (RFC 1918), shared (CGNAT, RFC 6598), unique-local, unspecified, multicast,
/// broadcast, reserved, and the IPv6 forms that carry one of those IPv4 addresses.
pub fn blocked_address(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = address.octets();
    if address.is_loopback() {
        Some("loopback")
    } else if address.is_unspecified() || first == 0 {
        Some("unspecified")
    } else if address.is_private() {
        Some("private")
    } else if address.is_link_local() {
        Some("link-local")
    } else if first == 100 && (64..128).contains(&second) {
        Some("shared (CGNAT)")
    } else if address.is_broadcast() {
        Some("broadcast")
    } else if address.is_multicast() {
        Some("multicast")
    } else if first >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn blocked_v6(address: Ipv6Addr) -> Option<&'static str> {
    let segments = address.segments();
    if address.is_loopback() {
        return Some("loopback");
    }
    if address.is_unspecified() {
        return Some("unspecified");
    }
    if address.is_multicast() {
        return Some("multicast");
    }
    // fe80::/10
    if segments[0] & 0xffc0 == 0xfe80 {
        return Some("link-local");
    }
    // fc00::/7
    if segments[0] & 0xfe00 == 0xfc00 {
        return Some("unique-local");
    }
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated) and 64:ff9b::a.b.c.d (NAT64):
    // judged by the IPv4 address they carry.
    let embedded = if let Some(mapped) = address.to_ipv4_mapped() {
        Some(mapped)
    } else if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., high, low] = segments;
        Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)))
    } else {
        None
    };
    embedded.and_then(blocked_v4)
}

/// The kind of internal name `host` is (`localhost` and its subdomains), or None.
pub fn blocked_name(host: &str) -> Option<&'static str> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") || name == "localhost.localdomain" {
        Some("loopback")
    } else {
        None
    }
}

/// A webhook's URL, valid by construction (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub fn parse(raw: &str, rule: AddressRule) -> Result<Self, InvalidWebhook> {
        if raw.is_empty() {
            return Err(InvalidWebhook::UrlMissing);
        }
        if raw.len() > MAX_URL_LEN {
            return Err(InvalidWebhook::UrlTooLong);
        }
        let url = url::Url::parse(raw).map_err(|_| InvalidWebhook::UrlMalformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidWebhook::UrlScheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidWebhook::UrlCredentials);
        }
        if url.fragment().is_some() {
            return Err(InvalidWebhook::UrlFragment);
        }
        if url.as_str().len() > MAX_URL_LEN {
            return Err(InvalidWebhook::UrlTooLong);
        }
        let refused = match url.host() {
            None => return Err(InvalidWebhook::UrlHost),
            Some(url::Host::Domain("")) => return Err(InvalidWebhook::UrlHost),
            Some(_) if rule.allow_private => None,
            Some(url::Host::Ipv4(v4)) => blocked_v4(v4),
            Some(url::Host::Ipv6(v6)) => blocked_v6(v6),
            Some(url::Host::Domain(name)) => blocked_name(name),
        };
        match refused {
            Some(kind) => Err(InvalidWebhook::UrlPrivate(kind)),
            None => Ok(Self(url)),
        }
    }

    /// A URL read back from the store, which holds only URLs `parse` accepted (the address
    /// rule is applied again at delivery).
    pub fn from_stored(raw: &str) -> Option<Self> {
        url::Url::parse(raw).ok().map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The host's address when the URL names one directly (no resolution).
    pub fn ip_host(&self) -> Option<IpAddr> {
        match self.0.host()? {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// The event types as a webhook row stores them: each between commas (`,a,b,`), empty for
/// every type (migrations/postgres/0011_events_and_webhooks.sql).
pub fn encode_event_types(types: &[EventType]) -> String {
    if types.is_empty() {
        return String::new();
    }
    let mut encoded = String::from(",");
    for kind in types {
        encoded.push_str(kind.as_str());
        encoded.push(',');
    }
    encoded
}

/// The event types of a stored row; None when one is not a type.
pub fn decode_event_types(stored: &str) -> Option<Vec<EventType>> {
    stored
        .split(',')
        .filter(|name| !name.is_empty())
        .map(EventType::parse)
        .collect()
}

/// A webhook's signing secret in the clear: 32 random bytes. Exists when it is generated (to
/// be shown once and sealed) and while a delivery is signed; `Debug` never prints it.
pub struct WebhookSecret(SecretSlice<u8>);

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_LEN];
        rand::fill(bytes.as_mut_slice());
        Self(SecretSlice::from(bytes))
    }

    /// `whsec_` and the base64 of the bytes, as the receiver configures it.
    pub fn encoded(&self) -> SecretString {
        SecretString::from(format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(self.0.expose_secret())
        ))
    }

    /// The last four characters of the encoded secret, to tell secrets apart.
    pub fn hint(&self) -> String {
        let encoded = self.encoded();
        let text = encoded.expose_secret();
        let start = text.len().saturating_sub(4);
        text.get(start..).unwrap_or_default().to_owned()
    }

    pub fn seal(&self, master_key: &MasterKey, webhook: &WebhookId) -> SealedSigningKey {
        master_key.seal_bytes(self.0.expose_secret(), webhook.as_str())
    }

    pub fn open(
        master_key: &MasterKey,
        sealed: &SealedSigningKey,
        webhook: &WebhookId,
    ) -> Result<Self, UnsealError> {
        let bytes = master_key.open_bytes(sealed, webhook.as_str())?;
        Ok(Self(bytes))
    }

    /// The secret of an encoded `whsec_…` (tests and receivers); None for any other text.
    pub fn decode(encoded: &str) -> Option<Self> {
        let bytes = STANDARD.decode(encoded.strip_prefix(SECRET_PREFIX)?).ok()?;
        Some(Self(SecretSlice::from(bytes)))
    }

    /// The `webhook-signature` of one delivery.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        sign(self.0.expose_secret(), message_id, timestamp, body)
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Standard Webhooks: `v1,` and the base64 of HMAC-SHA256(`key`, "id.timestamp.body").
pub fn sign(key: &[u8], message_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A delivery's body: `{"type", "timestamp", "data"}`, the event's time in RFC 3339.
pub fn delivery_body(event_type: &str, time: DateTime<Utc>, data: &Value) -> Vec<u8> {
    json!({
        "type": event_type,
        "timestamp": rfc3339(time),
        "data": data,
    })
    .to_string()
    .into_bytes()
}

/// The waits between attempts (`TESSERA_WEBHOOK_RETRY_DELAYS`): the first attempt is at once,
/// retry `n` after the `n`th delay; after the last one fails, the delivery has failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

/// Most retries a schedule may list.
pub const MAX_RETRIES: usize = 32;
/// Longest single wait.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl Default for RetrySchedule {
    fn default() -> Self {
        Self(DEFAULT_RETRY_DELAYS.to_vec())
    }
}

impl RetrySchedule {
    /// A comma-separated list of humantime durations (`1s, 5s, 30s, 2m`); empty: no retries.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let delays = raw
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                let delay = humantime::parse_duration(part)
                    .map_err(|error| format!("{part:.32}: {error}"))?;
                if delay > MAX_RETRY_DELAY {
                    return Err(format!("{part:.32}: at most 7 days"));
                }
                Ok(delay)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > MAX_RETRIES {
            return Err(format!("at most {MAX_RETRIES} retries"));
        }
        Ok(Self(delays))
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// After `attempts` attempts (the one just made included) failed: the wait before the next,
    /// or None when that was the last.
    pub fn after_failed(&self, attempts: u32) -> Option<Duration> {
        let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
        self.0.get(index).copied()
    }
}

/// A webhook as stored (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant: Tenant,
    pub url: WebhookUrl,
    /// Sorted, without repeats; empty: every type.
    pub event_types: Vec<EventType>,
    pub description: Description,
    pub disabled: bool,
    /// Since when its deliveries fail through their retries; None while it works.
    pub failing_since: Option<DateTime<Utc>>,
    pub secret_hint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A webhook to insert, with its sealed secret.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub webhook: Webhook,
    pub sealed_secret: SealedSigningKey,
}

/// The fields an UpdateWebhook's mask names; None leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookChanges {
    pub url: Option<WebhookUrl>,
    pub event_types: Option<Vec<EventType>>,
    pub description: Option<Description>,
    /// `Some(false)` resumes deliveries and clears `failing_since`; `Some(true)` stops them,
    /// and the pending ones fail.
    pub disabled: Option<bool>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event's delivery to one webhook, as ListWebhookDeliveries shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: i64,
    pub webhook_id: WebhookId,
    pub event_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt; None when it got no answer.
    pub last_status: Option<u16>,
    pub last_error: String,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery this replica claimed (its lease held), with what an attempt needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    /// Attempts made before this one.
    pub attempts: u32,
    pub webhook_id: WebhookId,
    pub tenant: String,
    /// As stored; parsed again (and its address judged) by the worker.
    pub url: String,
    pub sealed_secret: SealedSigningKey,
    pub event: Event,
}

/// What an attempt came to, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Delivered,
    /// Tried again at this instant.
    Retry {
        at: DateTime<Utc>,
    },
    /// The last retry failed: the delivery is failed and the webhook failing.
    Failed,
}

/// One attempt's outcome.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: i64,
    pub webhook_id: WebhookId,
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status, when the receiver answered.
    pub status: Option<u16>,
    /// Why it failed (bounded, never a secret); empty when delivered.
    pub error: String,
    pub result: AttemptResult,
}

/// Longest `last_error` kept.
pub const MAX_ERROR_LEN: usize = 256;

/// `text` cut to [`MAX_ERROR_LEN`] bytes at a character boundary.
pub fn bounded_error(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

/// The `data` of a `webhook.failing` event: the webhook (never its secret) and the delivery that
/// failed last.
pub fn failing_event_data(
    webhook: &WebhookId,
    url: &str,
    event_id: &str,
    error: &str,
) -> serde_json::Map<String, Value> {
    let mut data = serde_json::Map::new();
    data.insert(
        "webhook".to_owned(),
        json!({ "id": webhook.as_str(), "url": url }),
    );
    data.insert(
        "delivery".to_owned(),
        json!({ "event_id": event_id, "last_error": error }),
    );
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: AddressRule = AddressRule {
        allow_private: false,
    };
    const ALLOWING: AddressRule = AddressRule {
        allow_private: true,
    };

    fn refused(raw: &str) -> Option<InvalidWebhook> {
        WebhookUrl::parse(raw, STRICT).err()
    }

    #[test]
    fn a_public_https_or_http_url_is_accepted_as_given() {
        let url = WebhookUrl::parse("https://hooks.example.com/tessera?x=1", STRICT).expect("ok");
        assert_eq!(url.as_str(), "https://hooks.example.com/tessera?x=1");
        assert!(WebhookUrl::parse("http://93.184.216.34:8080/in", STRICT).is_ok());
        assert!(WebhookUrl::parse("https://[2606:4700::1111]/in", STRICT).is_ok());
    }

    #[test]
    fn a_url_without_scheme_host_or_with_credentials_fragment_or_length_is_refused() {
        assert_eq!(refused(""), Some(InvalidWebhook::UrlMissing));
        assert_eq!(
            refused("hooks.example.com/x"),
            Some(InvalidWebhook::UrlMalformed)
        );
        assert_eq!(
            refused("ftp://example.com/x"),
            Some(InvalidWebhook::UrlScheme)
        );
        assert_eq!(
            refused("file:///etc/passwd"),
            Some(InvalidWebhook::UrlScheme)
        );
        assert_eq!(
            refused("https://user:pw@example.com/"),
            Some(InvalidWebhook::UrlCredentials)
        );
        assert_eq!(
            refused("https://user@example.com/"),
            Some(InvalidWebhook::UrlCredentials)
        );
        assert_eq!(
            refused("https://example.com/#part"),
            Some(InvalidWebhook::UrlFragment)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(refused(&long), Some(InvalidWebhook::UrlTooLong));
    }

    #[test]
    fn internal_addresses_and_names_are_refused_unless_private_urls_are_allowed() {
        for raw in [
            "http://127.0.0.1/",
            "http://127.1.2.3:9000/",
            "http://0x7f.1/",
            "http://2130706433/",
            "http://0.0.0.0/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://100.127.255.255/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.1.2.3]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost:8080/",
        ] {
            assert!(
                matches!(refused(raw), Some(InvalidWebhook::UrlPrivate(_))),
                "{raw} must be refused: {:?}",
                refused(raw)
            );
            assert!(WebhookUrl::parse(raw, ALLOWING).is_ok(), "{raw} allowed");
        }
    }

    #[test]
    fn the_address_rule_tells_public_from_internal_addresses() {
        let public = [
            "93.184.216.34",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
        ];
        for raw in public {
            let address: IpAddr = raw.parse().expect("address");
            assert_eq!(STRICT.refuses(address), None, "{raw}");
        }
        let internal: IpAddr = "::ffff:192.168.0.1".parse().expect("address");
        assert_eq!(STRICT.refuses(internal), Some("private"));
        assert_eq!(ALLOWING.refuses(internal), None);
        assert_eq!(
            STRICT.refuses("100.100.1.1".parse().expect("address")),
            Some("shared (CGNAT)")
        );
    }

    #[test]
    fn the_signature_matches_an_independently_computed_standard_webhooks_vector() {
        // python3: base64(hmac.new(bytes(range(32)), b"evt_….1700000000.{…}", sha256).digest())
        let secret = WebhookSecret::decode("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .expect("secret");
        let body =
            br#"{"type":"token.created","timestamp":"2023-11-14T22:13:20.000000Z","data":{}}"#;
        assert_eq!(
            secret.sign("evt_01HF0000000000000000000000", 1_700_000_000, body),
            "v1,QfV7pW6Ovmmm41VA/1e8s2E525/pydfGLpKz1ogJ83c="
        );
    }

    #[test]
    fn the_body_holds_type_timestamp_and_data() {
        let time = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let body = delivery_body("token.created", time, &json!({}));
        assert_eq!(
            body,
            br#"{"data":{},"timestamp":"2023-11-14T22:13:20.000000Z","type":"token.created"}"#
                .to_vec()
        );
    }

    #[test]
    fn a_secret_is_whsec_and_32_bytes_sealed_for_its_webhook_only() {
        let master =
            MasterKey::parse(&SecretString::from(STANDARD.encode([7u8; 32]))).expect("master");
        let secret = WebhookSecret::generate();
        let encoded = secret.encoded();
        let text = encoded.expose_secret();
        assert!(text.starts_with(SECRET_PREFIX), "{text}");
        assert_eq!(
            STANDARD
                .decode(text.strip_prefix(SECRET_PREFIX).expect("prefix"))
                .expect("base64")
                .len(),
            32
        );
        assert!(text.ends_with(&secret.hint()));
        assert!(!format!("{secret:?}").contains(text));

        let id = WebhookId::generate();
        let sealed = secret.seal(&master, &id);
        let opened = WebhookSecret::open(&master, &sealed, &id).expect("opens");
        assert_eq!(opened.sign("m", 1, b"b"), secret.sign("m", 1, b"b"));
        assert!(WebhookSecret::open(&master, &sealed, &WebhookId::generate()).is_err());
    }

    #[test]
    fn the_retry_schedule_is_about_a_day_and_parses_from_a_humantime_list() {
        let schedule = RetrySchedule::default();
        let total: Duration = schedule.delays().iter().sum();
        assert!(
            total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(30 * 3600),
            "{total:?}"
        );
        assert_eq!(schedule.after_failed(1), Some(Duration::from_secs(1)));
        assert_eq!(schedule.after_failed(2), Some(Duration::from_secs(5)));
        assert_eq!(schedule.after_failed(9), Some(Duration::from_secs(36_000)));
        assert_eq!(schedule.after_failed(10), None);

        let short = RetrySchedule::parse("100ms, 200ms").expect("parses");
        assert_eq!(
            short.delays(),
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(short.after_failed(3), None);
        assert_eq!(
            RetrySchedule::parse("").expect("none").after_failed(1),
            None
        );
        assert!(RetrySchedule::parse("1s, soon").is_err());
        assert!(RetrySchedule::parse("8d").is_err());
    }

    #[test]
    fn event_types_are_stored_between_commas_and_read_back() {
        let types = vec![EventType::TokenCreated, EventType::TokenRevoked];
        let stored = encode_event_types(&types);
        assert_eq!(stored, ",token.created,token.revoked,");
        assert_eq!(decode_event_types(&stored), Some(types));
        assert_eq!(encode_event_types(&[]), "");
        assert_eq!(decode_event_types(""), Some(Vec::new()));
    }

    #[test]
    fn a_webhook_id_is_wh_and_a_ulid() {
        let id = WebhookId::generate();
        assert!(id.as_str().starts_with("wh_"));
        assert_eq!(WebhookId::parse(id.as_str()), Ok(id));
        assert_eq!(WebhookId::parse("wh_nope"), Err(InvalidWebhook::Id));
        assert_eq!(
            WebhookId::parse("tok_01J0000000000000000000000"),
            Err(InvalidWebhook::Id)
        );
    }

    #[test]
    fn an_error_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = bounded_error(&long);
        assert!(cut.len() <= MAX_ERROR_LEN && cut.chars().all(|c| c == 'é'));
    }
}
