//! Lifecycle events (issue 17): what changed, as the outbox stores it and as webhooks and
//! WatchEvents send it.
//!
//! An event's `data` is a JSON snapshot of the resource at the moment its change committed (a
//! later change does not alter an earlier event), built here from the domain records so that the
//! store can write it in the same transaction as the change. Its shape is the contract's
//! (docs/api.md, "Events"): the proto field names in snake_case, timestamps in RFC 3339, and
//! never a secret, a secret's hash or a signing key.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::credits::Credits;
use super::fields::{PrincipalId, TokenId};
use super::model::{ApiStatus, Principal, Token, TokenState};

/// The kinds of event, by their binding names (`token.created`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    TokenCreated,
    TokenUpdated,
    TokenRotated,
    TokenRevoked,
    TokenSuspended,
    TokenResumed,
    /// 7 days and 1 day before expiry, each once per expiry.
    TokenExpiring,
    TokenExpired,
    /// A retired secret was presented, or a leak report named the token.
    TokenLeaked,
    PrincipalUpdated,
    ApiStatusChanged,
    /// The balance fell below a tenth of the refill amount, once per refill period.
    CreditsLow,
    /// A webhook's delivery exhausted its retries.
    WebhookFailing,
}

impl EventType {
    pub const ALL: [Self; 13] = [
        Self::TokenCreated,
        Self::TokenUpdated,
        Self::TokenRotated,
        Self::TokenRevoked,
        Self::TokenSuspended,
        Self::TokenResumed,
        Self::TokenExpiring,
        Self::TokenExpired,
        Self::TokenLeaked,
        Self::PrincipalUpdated,
        Self::ApiStatusChanged,
        Self::CreditsLow,
        Self::WebhookFailing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenCreated => "token.created",
            Self::TokenUpdated => "token.updated",
            Self::TokenRotated => "token.rotated",
            Self::TokenRevoked => "token.revoked",
            Self::TokenSuspended => "token.suspended",
            Self::TokenResumed => "token.resumed",
            Self::TokenExpiring => "token.expiring",
            Self::TokenExpired => "token.expired",
            Self::TokenLeaked => "token.leaked",
            Self::PrincipalUpdated => "principal.updated",
            Self::ApiStatusChanged => "api_status.changed",
            Self::CreditsLow => "credits.low",
            Self::WebhookFailing => "webhook.failing",
        }
    }

    /// The type a name denotes; None for any other text (the caller names the field).
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most this many event types in one filter (a webhook's, a WatchEvents request's): more
/// than there are, so a valid filter always fits, and a hostile one is bounded.
pub const MAX_EVENT_TYPES: usize = 32;

/// Parses a list of event type names into a sorted set without repeats; `Err(index)` names
/// the first entry that is not a type (or the entry past the bound).
pub fn parse_event_types(raw: &[String]) -> Result<Vec<EventType>, usize> {
    if raw.len() > MAX_EVENT_TYPES {
        return Err(MAX_EVENT_TYPES);
    }
    let mut types = raw
        .iter()
        .enumerate()
        .map(|(index, name)| EventType::parse(name).ok_or(index))
        .collect::<Result<Vec<_>, _>>()?;
    types.sort();
    types.dedup();
    Ok(types)
}

/// An event's public id: `evt_` and a ULID (a webhook delivery's `webhook-id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(String);

const EVENT_ID_PREFIX: &str = "evt_";

impl EventId {
    pub fn generate() -> Self {
        Self(format!("{EVENT_ID_PREFIX}{}", ulid::Ulid::new()))
    }

    /// An id as a client sends it back (`after_event_id`); None when it cannot be one.
    pub fn parse(raw: &str) -> Option<Self> {
        let ulid = raw.strip_prefix(EVENT_ID_PREFIX)?;
        ulid::Ulid::from_string(ulid).ok()?;
        Some(Self(raw.to_owned()))
    }

    /// An id read back from the store, which only ever holds ids made by `generate`.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event about to be written, in the transaction of the change that causes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: EventId,
    pub event_type: EventType,
    /// The resource's tenant (`*` for the global API status).
    pub tenant: String,
    pub time: DateTime<Utc>,
    pub token_id: Option<TokenId>,
    pub principal_id: Option<PrincipalId>,
    /// A JSON object: the resource's snapshot under its kind (`{"token": {…}}`), and whatever
    /// the type adds (`leak`, `expiry`, …).
    pub data: Value,
}

impl NewEvent {
    /// An event about a token, its snapshot under `token`.
    pub fn token(event_type: EventType, token: &Token, time: DateTime<Utc>) -> Self {
        Self::token_with(event_type, token, time, Map::new())
    }

    /// An event about a token with more members beside `token` (e.g. `leak`).
    pub fn token_with(
        event_type: EventType,
        token: &Token,
        time: DateTime<Utc>,
        mut extra: Map<String, Value>,
    ) -> Self {
        extra.insert("token".to_owned(), token_json(token, time));
        Self {
            id: EventId::generate(),
            event_type,
            tenant: token.tenant.to_string(),
            time,
            token_id: Some(token.id.clone()),
            principal_id: Some(token.owner_id.clone()),
            data: Value::Object(extra),
        }
    }

    pub fn principal(principal: &Principal, time: DateTime<Utc>) -> Self {
        Self {
            id: EventId::generate(),
            event_type: EventType::PrincipalUpdated,
            tenant: principal.tenant.to_string(),
            time,
            token_id: None,
            principal_id: Some(principal.id.clone()),
            data: json!({ "principal": principal_json(principal) }),
        }
    }

    pub fn api_status(status: &ApiStatus, time: DateTime<Utc>) -> Self {
        Self {
            id: EventId::generate(),
            event_type: EventType::ApiStatusChanged,
            tenant: status.scope.to_string(),
            time,
            token_id: None,
            principal_id: None,
            data: json!({ "api_status": {
                "tenant": status.scope.to_string(),
                "online": status.online,
                "message": status.message,
                "updated_at": status.updated_at.map(rfc3339),
            }}),
        }
    }

    /// An event about something other than a token, principal or API status (a webhook's
    /// `webhook.failing`): `data` as the caller builds it, an object.
    pub fn other(
        event_type: EventType,
        tenant: String,
        time: DateTime<Utc>,
        data: Map<String, Value>,
    ) -> Self {
        Self {
            id: EventId::generate(),
            event_type,
            tenant,
            time,
            token_id: None,
            principal_id: None,
            data: Value::Object(data),
        }
    }
}

/// The notices of an approaching or passed expiry, each sent once per token and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryNotice {
    /// `token.expiring`, within 7 days (but more than 1 day) of expiry.
    SevenDays,
    /// `token.expiring`, within 1 day of expiry.
    OneDay,
    /// `token.expired`, for expiries of the last 7 days (older ones are not announced, so a
    /// first start on an old database does not flood endpoints).
    Expired,
}

impl ExpiryNotice {
    pub const ALL: [Self; 3] = [Self::SevenDays, Self::OneDay, Self::Expired];

    /// The notice's key in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SevenDays => "expiring_7d",
            Self::OneDay => "expiring_1d",
            Self::Expired => "expired",
        }
    }

    /// The expiries this notice is due for at `now`: after the first instant, up to and
    /// including the second. A token whose expiry is already within a day when first seen gets
    /// only the one-day notice.
    pub fn window(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let day = chrono::Duration::days(1);
        match self {
            Self::SevenDays => (now + day, now + day * 7),
            Self::OneDay => (now, now + day),
            Self::Expired => (now - day * 7, now),
        }
    }

    /// The event of this notice for `token`, sent at `now`.
    pub fn event(self, token: &Token, now: DateTime<Utc>) -> NewEvent {
        let (event_type, notice) = match self {
            Self::SevenDays => (EventType::TokenExpiring, "7d"),
            Self::OneDay => (EventType::TokenExpiring, "1d"),
            Self::Expired => (EventType::TokenExpired, "expired"),
        };
        let mut extra = Map::new();
        extra.insert(
            "expiry".to_owned(),
            json!({ "notice": notice, "expires_at": rfc3339(token.expires_at) }),
        );
        NewEvent::token_with(event_type, token, now, extra)
    }
}

/// An event as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The commit order: WatchEvents' cursor, and how deliveries name their event.
    pub seq: i64,
    pub id: EventId,
    pub event_type: EventType,
    pub tenant: String,
    pub time: DateTime<Utc>,
    pub token_id: Option<TokenId>,
    pub principal_id: Option<PrincipalId>,
    pub data: Value,
}

/// RFC 3339 in UTC with microseconds, as every timestamp of an event's data.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn token_state(token: &Token, at: DateTime<Utc>) -> &'static str {
    match token.state(at) {
        TokenState::Active => "TOKEN_STATE_ACTIVE",
        TokenState::Expired => "TOKEN_STATE_EXPIRED",
        TokenState::Revoked => "TOKEN_STATE_REVOKED",
        TokenState::Suspended => "TOKEN_STATE_SUSPENDED",
    }
}

fn credits_json(credits: Credits, at: DateTime<Utc>) -> Value {
    let credits = credits.at(at);
    json!({
        "remaining": credits.remaining,
        "refill_amount": credits.refill.map_or(0, |refill| refill.amount),
        "refill_interval_seconds": credits.refill.map(|refill| refill.interval.num_seconds()),
        "refilled_at": rfc3339(credits.refilled_at),
    })
}

/// A token as an event shows it, at `at` (its state and credits then): the fields of the API's
/// `Token` except the effective rate limit and policy violations, which depend on settings.
pub fn token_json(token: &Token, at: DateTime<Utc>) -> Value {
    let metadata: Map<String, Value> = token
        .metadata
        .iter()
        .map(|(key, value)| (key.to_owned(), Value::String(value.to_owned())))
        .collect();
    json!({
        "id": token.id.to_string(),
        "tenant": token.tenant.to_string(),
        "owner_id": token.owner_id.to_string(),
        "name": token.name.to_string(),
        "description": token.description.to_string(),
        "permissions": token.permissions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "roles": token.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "allowed_ips": token.allowed_ips.to_strings(),
        "rate_limit_per_minute": token.rate_limit_per_minute,
        "require_signature": token.require_signature,
        "state": token_state(token, at),
        "secret_hint": token.secret_hint,
        "created_at": rfc3339(token.created_at),
        "updated_at": rfc3339(token.updated_at),
        "expires_at": rfc3339(token.expires_at),
        "rotated_at": token.rotated_at.map(rfc3339),
        "revoked_at": token.revoked_at.map(rfc3339),
        "etag": token.version.to_string(),
        "imported": token.imported,
        "metadata": metadata,
        "suspended_at": token.suspension.as_ref().map(|s| rfc3339(s.at)),
        "suspend_reason": token.suspension.as_ref().map(|s| s.reason.to_string()),
        "credits": token.credits.map(|credits| credits_json(credits, at)),
    })
}

pub fn principal_json(principal: &Principal) -> Value {
    json!({
        "tenant": principal.tenant.to_string(),
        "id": principal.id.to_string(),
        "permissions": principal.permissions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "disabled": principal.disabled,
        "rate_limit_per_minute": principal.rate_limit_per_minute,
        "created_at": rfc3339(principal.created_at),
        "updated_at": rfc3339(principal.updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    #[test]
    fn every_event_type_name_parses_back_to_its_type() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("token.*"), None);
        assert_eq!(EventType::parse("TOKEN.CREATED"), None);
    }

    #[test]
    fn an_event_type_list_is_sorted_deduplicated_and_names_its_first_bad_entry() {
        let raw = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_event_types(&raw(&["token.revoked", "token.created", "token.revoked"])),
            Ok(vec![EventType::TokenCreated, EventType::TokenRevoked])
        );
        assert_eq!(parse_event_types(&raw(&["token.created", "nope"])), Err(1));
        assert_eq!(
            parse_event_types(&vec!["token.created".to_owned(); 33]),
            Err(MAX_EVENT_TYPES)
        );
    }

    #[test]
    fn an_event_id_is_evt_and_a_ulid_and_nothing_else_parses() {
        let id = EventId::generate();
        assert!(id.as_str().starts_with("evt_"), "{id}");
        assert_eq!(EventId::parse(id.as_str()), Some(id));
        assert_eq!(EventId::parse("evt_nope"), None);
        assert_eq!(EventId::parse("01J0000000000000000000000"), None);
    }

    #[test]
    fn the_expiry_windows_meet_without_overlap_so_each_expiry_gets_one_notice_of_each_kind() {
        let now = fixtures::token().created_at;
        let (seven_from, seven_until) = ExpiryNotice::SevenDays.window(now);
        let (one_from, one_until) = ExpiryNotice::OneDay.window(now);
        let (expired_from, expired_until) = ExpiryNotice::Expired.window(now);
        assert_eq!(seven_from, one_until);
        assert_eq!(one_from, expired_until);
        assert_eq!(seven_until - now, chrono::Duration::days(7));
        assert_eq!(now - expired_from, chrono::Duration::days(7));
        let token = fixtures::token();
        let event = ExpiryNotice::OneDay.event(&token, now);
        assert_eq!(event.event_type, EventType::TokenExpiring);
        assert_eq!(event.data["expiry"]["notice"], "1d");
        assert_eq!(
            ExpiryNotice::Expired.event(&token, now).event_type,
            EventType::TokenExpired
        );
    }

    #[test]
    fn a_token_snapshot_names_the_token_and_holds_no_secret() {
        let token = fixtures::token();
        let event = NewEvent::token(EventType::TokenCreated, &token, token.created_at);
        let snapshot = &event.data["token"];
        assert_eq!(snapshot["id"], token.id.to_string());
        assert_eq!(snapshot["state"], "TOKEN_STATE_ACTIVE");
        assert_eq!(event.token_id.as_ref(), Some(&token.id));
        let text = event.data.to_string();
        assert!(
            !text.contains("hash") && !text.contains("signing_key"),
            "{text}"
        );
    }
}
