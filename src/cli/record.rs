//! Proto messages as [`Record`]s: their fields in proto order, named as in the proto. Every message
//! the client shows is converted here, once; a record then renders as JSON (`--json`, below) or as
//! a table (`super::table`). Prost types do not derive `Serialize`, hence this small model.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::{Duration, Timestamp};
use serde_json::{Map, Value};
use tessera::proto;

/// A message: named fields in proto order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Record {
    fields: Vec<(&'static str, Field)>,
}

/// One field's value, typed enough to render it well in JSON and in a table.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field {
    Text(String),
    /// A repeated string.
    List(Vec<String>),
    /// A `map<string, string>`, in key order.
    Map(Vec<(String, String)>),
    Flag(bool),
    /// A number; `None` for an unset optional one.
    Number(Option<i64>),
    /// A share from 0 to 1.
    Share(f64),
    /// An enum value: its proto name, and its name without the enum's prefix, lowercase.
    Enum {
        proto_name: String,
        label: String,
    },
    Time(Option<Timestamp>),
    Span(Option<Duration>),
    Message(Option<Record>),
    Messages(Vec<Record>),
}

impl Record {
    pub(super) fn with(mut self, name: &'static str, field: Field) -> Self {
        debug_assert!(self.get(name).is_none(), "field {name} added twice");
        self.fields.push((name, field));
        self
    }

    /// The record with the named field's value replaced in place (nothing when it has none).
    pub(super) fn replaced(mut self, name: &str, field: Field) -> Self {
        if let Some((_, value)) = self
            .fields
            .iter_mut()
            .find(|(field_name, _)| *field_name == name)
        {
            *value = field;
        }
        self
    }

    /// The record without the named field.
    pub(super) fn without(mut self, name: &str) -> Self {
        self.fields.retain(|(field_name, _)| *field_name != name);
        self
    }

    pub(super) fn fields(&self) -> impl Iterator<Item = (&'static str, &Field)> {
        self.fields.iter().map(|(name, field)| (*name, field))
    }

    pub(super) fn get(&self, name: &str) -> Option<&Field> {
        self.fields()
            .find(|(field_name, _)| *field_name == name)
            .map(|(_, field)| field)
    }

    /// The record as a JSON object keyed by the proto field names.
    pub(super) fn to_json(&self) -> Value {
        let object: Map<String, Value> = self
            .fields()
            .map(|(name, field)| (name.to_owned(), field.to_json()))
            .collect();
        Value::Object(object)
    }
}

/// Constructors from a reference to a message field, as `record_from!` calls them.
impl Field {
    pub(super) fn text(text: &str) -> Self {
        Self::Text(text.to_owned())
    }

    fn list(values: &[String]) -> Self {
        Self::List(values.to_vec())
    }

    fn map(map: &std::collections::HashMap<String, String>) -> Self {
        let mut pairs: Vec<(String, String)> = map
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        pairs.sort();
        Self::Map(pairs)
    }

    fn flag(flag: &bool) -> Self {
        Self::Flag(*flag)
    }

    fn number<N: Copy + Into<i64>>(number: &N) -> Self {
        Self::Number(Some((*number).into()))
    }

    fn optional_number(number: &Option<u32>) -> Self {
        Self::Number(number.map(i64::from))
    }

    /// A u64 count (credits, at most 10^15, so it fits).
    fn count(count: &u64) -> Self {
        Self::Number(i64::try_from(*count).ok())
    }

    fn optional_count(count: &Option<u64>) -> Self {
        Self::Number(count.and_then(|count| i64::try_from(count).ok()))
    }

    fn share(share: &f64) -> Self {
        Self::Share(*share)
    }

    fn time(time: &Option<Timestamp>) -> Self {
        Self::Time(*time)
    }

    fn span(span: &Option<Duration>) -> Self {
        Self::Span(*span)
    }

    fn message<T>(message: &Option<T>) -> Self
    where
        for<'a> &'a T: Into<Record>,
    {
        Self::Message(message.as_ref().map(Into::into))
    }

    fn messages<T>(messages: &[T]) -> Self
    where
        for<'a> &'a T: Into<Record>,
    {
        Self::Messages(messages.iter().map(Into::into).collect())
    }

    fn token_state(number: &i32) -> Self {
        let name = proto::TokenState::try_from(*number)
            .ok()
            .map(|state| state.as_str_name());
        Self::enumeration(*number, name, "TOKEN_STATE_")
    }

    fn admin_role(number: &i32) -> Self {
        let name = proto::AdminRole::try_from(*number)
            .ok()
            .map(|role| role.as_str_name());
        Self::enumeration(*number, name, "ADMIN_ROLE_")
    }

    fn leak_action(number: &i32) -> Self {
        let name = proto::LeakAction::try_from(*number)
            .ok()
            .map(|action| action.as_str_name());
        Self::enumeration(*number, name, "LEAK_ACTION_")
    }

    fn webhook_delivery_state(number: &i32) -> Self {
        let name = proto::WebhookDeliveryState::try_from(*number)
            .ok()
            .map(|state| state.as_str_name());
        Self::enumeration(*number, name, "WEBHOOK_DELIVERY_STATE_")
    }

    fn deny_reason(number: &i32) -> Self {
        let name = proto::DenyReason::try_from(*number)
            .ok()
            .map(|reason| reason.as_str_name());
        Self::enumeration(*number, name, "DENY_REASON_")
    }

    /// An enum field from its number: `DENY_REASON_TOKEN_EXPIRED` shows as `token_expired`.
    fn enumeration(number: i32, proto_name: Option<&'static str>, prefix: &str) -> Self {
        match proto_name {
            Some(proto_name) => Self::Enum {
                proto_name: proto_name.to_owned(),
                label: proto_name
                    .strip_prefix(prefix)
                    .unwrap_or(proto_name)
                    .to_lowercase(),
            },
            None => Self::Enum {
                proto_name: number.to_string(),
                label: format!("unknown ({number})"),
            },
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Text(text) => Value::from(text.as_str()),
            Self::List(values) => Value::from(values.clone()),
            Self::Map(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
                    .collect(),
            ),
            Self::Flag(flag) => Value::from(*flag),
            Self::Number(number) => number.map_or(Value::Null, Value::from),
            // NaN and infinities have no JSON form; they become null.
            Self::Share(share) => Value::from(*share),
            Self::Enum { proto_name, .. } => Value::from(proto_name.as_str()),
            Self::Time(time) => time.as_ref().map_or(Value::Null, |time| {
                Value::from(rfc3339(time, SecondsFormat::AutoSi))
            }),
            Self::Span(span) => span
                .as_ref()
                .map_or(Value::Null, |span| Value::from(proto_json_duration(span))),
            Self::Message(message) => message.as_ref().map_or(Value::Null, Record::to_json),
            Self::Messages(messages) => {
                Value::Array(messages.iter().map(Record::to_json).collect())
            }
        }
    }
}

/// A timestamp as RFC 3339 UTC, e.g. `2026-01-31T00:00:00Z`.
pub(super) fn rfc3339(time: &Timestamp, precision: SecondsFormat) -> String {
    let utc = u32::try_from(time.nanos)
        .ok()
        .and_then(|nanos| DateTime::<Utc>::from_timestamp(time.seconds, nanos));
    match utc {
        Some(utc) => utc.to_rfc3339_opts(precision, true),
        None => format!("invalid time ({}s {}ns)", time.seconds, time.nanos),
    }
}

/// A duration as the proto JSON mapping writes it: seconds with 0, 3, 6 or 9 decimals and an
/// `s`, e.g. `3600s`, `0.250s`.
fn proto_json_duration(span: &Duration) -> String {
    let sign = if span.seconds < 0 || span.nanos < 0 {
        "-"
    } else {
        ""
    };
    let seconds = span.seconds.unsigned_abs();
    if span.nanos == 0 {
        return format!("{sign}{seconds}s");
    }
    let mut fraction = format!("{:09}", span.nanos.unsigned_abs());
    while let Some(shorter) = fraction.strip_suffix("000") {
        let kept = shorter.len();
        fraction.truncate(kept);
    }
    format!("{sign}{seconds}.{fraction}s")
}

/// `impl From<&Message> for Record`, one line per field: its name and the `Field` constructor
/// that converts a reference to it. Fields are listed in proto order.
macro_rules! record_from {
    ($($message:ty { $($field:ident: $convert:path),+ $(,)? })+) => {$(
        impl From<&$message> for Record {
            fn from(message: &$message) -> Self {
                Self::default()$(.with(stringify!($field), $convert(&message.$field)))+
            }
        }
    )+};
}

record_from! {
    proto::AdminKey {
        id: Field::text,
        name: Field::text,
        tenants: Field::list,
        role: Field::admin_role,
        secret_hint: Field::text,
        created_at: Field::time,
        created_by: Field::text,
        expires_at: Field::time,
        last_used_at: Field::time,
        revoked_at: Field::time,
    }
    proto::Token {
        id: Field::text,
        tenant: Field::text,
        owner_id: Field::text,
        name: Field::text,
        description: Field::text,
        permissions: Field::list,
        roles: Field::list,
        allowed_ips: Field::list,
        rate_limit_per_minute: Field::number,
        require_signature: Field::flag,
        state: Field::token_state,
        secret_hint: Field::text,
        created_at: Field::time,
        updated_at: Field::time,
        expires_at: Field::time,
        rotated_at: Field::time,
        revoked_at: Field::time,
        last_used_at: Field::time,
        etag: Field::text,
        effective_rate_limit_per_minute: Field::number,
        policy_violations: Field::list,
        imported: Field::flag,
        metadata: Field::map,
        suspended_at: Field::time,
        suspend_reason: Field::text,
        credits: Field::message,
    }
    proto::TokenCredits {
        remaining: Field::count,
        refill_amount: Field::count,
        refill_interval: Field::span,
        refilled_at: Field::time,
    }
    proto::TenantPolicy {
        tenant: Field::text,
        max_lifetime: Field::span,
        default_lifetime: Field::span,
        require_expiry: Field::flag,
        max_tokens_per_owner: Field::number,
        allowed_permissions: Field::list,
        require_ip_allowlist: Field::flag,
        enforce_on_existing: Field::flag,
        updated_at: Field::time,
        leak_action: Field::leak_action,
    }
    proto::Principal {
        tenant: Field::text,
        id: Field::text,
        permissions: Field::list,
        disabled: Field::flag,
        rate_limit_per_minute: Field::optional_number,
        created_at: Field::time,
        updated_at: Field::time,
    }
    proto::Role {
        tenant: Field::text,
        name: Field::text,
        permissions: Field::list,
        created_at: Field::time,
        updated_at: Field::time,
    }
    proto::ApiStatus {
        tenant: Field::text,
        online: Field::flag,
        message: Field::text,
        updated_at: Field::time,
    }
    proto::AuditEvent {
        id: Field::number,
        time: Field::time,
        actor: Field::text,
        action: Field::text,
        tenant: Field::text,
        token_id: Field::text,
        principal_id: Field::text,
        summary: Field::text,
        admin_key: Field::text,
    }
    proto::RateLimitStatus {
        limit: Field::number,
        remaining: Field::number,
        reset_seconds: Field::number,
    }
    proto::CheckResponse {
        allowed: Field::flag,
        reason: Field::deny_reason,
        http_status: Field::number,
        message: Field::text,
        token_id: Field::text,
        owner_id: Field::text,
        tenant: Field::text,
        permissions: Field::list,
        rate_limit: Field::message,
        expires_at: Field::time,
        credits_remaining: Field::optional_count,
    }
    proto::EndpointUsage {
        endpoint: Field::text,
        calls: Field::number,
    }
    proto::RecentCall {
        time: Field::time,
        endpoint: Field::text,
        permission: Field::text,
        allowed: Field::flag,
        reason: Field::deny_reason,
        client_ip: Field::text,
        user_agent: Field::text,
        token_id: Field::text,
    }
    proto::DailyUsage {
        date: Field::text,
        calls: Field::number,
        allowed: Field::number,
        denied: Field::number,
    }
    proto::ReportedOutcomes {
        reports: Field::number,
        success_rate: Field::share,
        average_latency: Field::span,
    }
    proto::ListUsageResponse {
        total_calls: Field::number,
        calls_last_24h: Field::number,
        success_rate: Field::share,
        average_latency: Field::span,
        top_endpoints: Field::messages,
        recent_calls: Field::messages,
        daily: Field::messages,
        last_used_at: Field::time,
        last_used_ip: Field::text,
        last_used_browser: Field::text,
        last_used_os: Field::text,
        last_used_location: Field::text,
        reported: Field::message,
    }
    proto::Webhook {
        id: Field::text,
        tenant: Field::text,
        url: Field::text,
        event_types: Field::list,
        description: Field::text,
        disabled: Field::flag,
        failing_since: Field::time,
        created_at: Field::time,
        updated_at: Field::time,
        secret_hint: Field::text,
    }
    proto::WebhookDelivery {
        id: Field::text,
        webhook_id: Field::text,
        event_id: Field::text,
        event_type: Field::text,
        state: Field::webhook_delivery_state,
        attempts: Field::number,
        next_attempt_at: Field::time,
        last_attempt_at: Field::time,
        last_status_code: Field::number,
        last_error: Field::text,
        created_at: Field::time,
        delivered_at: Field::time,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_token_renders_as_json_with_proto_names_and_rfc3339_times() {
        let token = proto::Token {
            id: "tok_1".to_owned(),
            name: "ci".to_owned(),
            permissions: vec!["orders:read".to_owned()],
            state: proto::TokenState::Active as i32,
            expires_at: Some(Timestamp {
                seconds: 1_769_817_600,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json = Record::from(&token).to_json();
        assert_eq!(json["id"], json!("tok_1"));
        assert_eq!(json["permissions"], json!(["orders:read"]));
        assert_eq!(json["state"], json!("TOKEN_STATE_ACTIVE"));
        assert_eq!(json["expires_at"], json!("2026-01-31T00:00:00Z"));
        assert_eq!(json["revoked_at"], Value::Null);
        assert_eq!(json["rate_limit_per_minute"], json!(0));
    }

    #[test]
    fn deny_reasons_keep_the_proto_name_in_json_and_drop_the_prefix_in_labels() {
        let decision = proto::CheckResponse {
            reason: proto::DenyReason::PermissionDenied as i32,
            rate_limit: Some(proto::RateLimitStatus {
                limit: 60,
                remaining: 0,
                reset_seconds: 12,
            }),
            ..Default::default()
        };
        let record = Record::from(&decision);
        assert_eq!(
            record.to_json()["reason"],
            json!("DENY_REASON_PERMISSION_DENIED")
        );
        assert_eq!(
            record.to_json()["rate_limit"],
            json!({"limit": 60, "remaining": 0, "reset_seconds": 12})
        );
        let Some(Field::Enum { label, .. }) = record.get("reason") else {
            panic!("reason is an enum field");
        };
        assert_eq!(label, "permission_denied");
    }

    #[test]
    fn an_enum_number_the_client_does_not_know_still_renders() {
        let Field::Enum { proto_name, label } = Field::token_state(&42) else {
            panic!("state is an enum field");
        };
        assert_eq!(
            (proto_name.as_str(), label.as_str()),
            ("42", "unknown (42)")
        );
    }

    #[test]
    fn durations_follow_the_proto_json_mapping() {
        assert_eq!(
            proto_json_duration(&Duration {
                seconds: 3600,
                nanos: 0
            }),
            "3600s"
        );
        assert_eq!(
            proto_json_duration(&Duration {
                seconds: 0,
                nanos: 250_000_000
            }),
            "0.250s"
        );
        assert_eq!(
            proto_json_duration(&Duration {
                seconds: 1,
                nanos: 1
            }),
            "1.000000001s"
        );
        assert_eq!(
            proto_json_duration(&Duration {
                seconds: 0,
                nanos: -1_500_000
            }),
            "-0.001500s"
        );
    }
}
