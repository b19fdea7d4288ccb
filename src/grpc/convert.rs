//! Proto ↔ domain. Requests are parsed here, once, collecting every bad field into one
//! INVALID_ARGUMENT; past this module only domain types travel.

use std::fmt::Display;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use tonic::Status;
use tonic_types::FieldViolation;

use crate::admin::webhooks::CreateWebhook;
use crate::authz::{Decision, RateLimitStatus};
use crate::domain::admin_key::{AdminKey, AdminRole};
use crate::domain::credits::{CreditGrant, Credits, Refill};
use crate::domain::decision::DenyReason;
use crate::domain::event::{EventType, MAX_EVENT_TYPES, parse_event_types};
use crate::domain::fields::{self, InvalidField};
use crate::domain::leak::LeakAction;
use crate::domain::metadata::Metadata;
use crate::domain::model::{self, TokenState};
use crate::domain::network::IpAllowlist;
use crate::domain::permission::{self, Grant, Permission};
use crate::domain::policy::TenantPolicy;
use crate::domain::usage::CallRecord;
use crate::domain::webhook::{
    AddressRule, DeliveryState, Webhook, WebhookChanges, WebhookDelivery, WebhookId, WebhookUrl,
};
use crate::grpc::status;
use crate::proto;
use crate::usage::UsageReport;

/// Longest duration any request field may carry: far beyond every domain limit (token lifetime,
/// grace period), yet small enough that `now ± duration` can never overflow chrono's range (about
/// 262,000 years), which would panic.
pub const MAX_REQUEST_DURATION: chrono::Duration = chrono::Duration::days(100 * 365 + 25);

/// Field violations gathered while parsing one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// The parsed value, or None with the violation recorded under `field`.
    pub fn check<T, E: Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|error| self.add(field, error.to_string()))
            .ok()
    }

    /// Like `check` for lists, naming the bad entry as `field[index]`.
    pub fn check_list<T, E: Display>(
        &mut self,
        field: &str,
        result: Result<T, (usize, E)>,
    ) -> Option<T> {
        result
            .map_err(|(index, error)| self.add(format!("{field}[{index}]"), error.to_string()))
            .ok()
    }

    /// How many violations were gathered so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn require<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.add(field, "is required");
        }
        value
    }

    /// The parsed request when nothing was wrong, else INVALID_ARGUMENT with every violation.
    pub fn finish<T>(self, parsed: Option<T>) -> Result<T, Status> {
        if !self.0.is_empty() {
            return Err(status::invalid_argument(self.0));
        }
        // Every None above recorded a violation, so this is only reached with Some.
        parsed.ok_or_else(|| status::internal("request parsing lost a field"))
    }

    pub fn grants(&mut self, field: &str, raw: &[String]) -> Option<Vec<Grant>> {
        self.limit_len(field, raw.len(), MAX_LIST_LEN);
        self.check_list(field, permission::parse_grants(raw))
    }

    /// A Check's list of permissions (not grants: no wildcards), at most
    /// [`permission::MAX_QUERY_PERMISSIONS`].
    pub fn permissions(&mut self, field: &str, raw: &[String]) -> Option<Vec<Permission>> {
        if raw.len() > permission::MAX_QUERY_PERMISSIONS {
            self.add(
                field,
                format!("at most {} entries", permission::MAX_QUERY_PERMISSIONS),
            );
            return None;
        }
        self.check_list(
            field,
            raw.iter()
                .enumerate()
                .map(|(index, entry)| Permission::parse(entry).map_err(|error| (index, error)))
                .collect(),
        )
    }

    pub fn roles(&mut self, field: &str, raw: &[String]) -> Option<Vec<fields::RoleName>> {
        self.limit_len(field, raw.len(), MAX_ROLES);
        self.check_list(field, fields::parse_list(raw, fields::RoleName::parse))
    }

    pub fn allowlist(&mut self, field: &str, raw: &[String]) -> Option<IpAllowlist> {
        self.limit_len(field, raw.len(), MAX_LIST_LEN);
        // Refused before parsing, whose error quotes the entry: the answer stays small.
        if let Some(index) = raw.iter().position(|entry| entry.len() > MAX_NETWORK_LEN) {
            self.add(
                format!("{field}[{index}]"),
                format!("an IP or CIDR is at most {MAX_NETWORK_LEN} characters"),
            );
            return None;
        }
        self.check_list(field, IpAllowlist::parse(raw))
    }

    /// A request's metadata map, bounded as `domain::metadata` says.
    pub fn metadata(
        &mut self,
        field: &str,
        raw: &std::collections::HashMap<String, String>,
    ) -> Option<Metadata> {
        self.check(
            field,
            Metadata::parse(
                raw.iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            ),
        )
    }

    fn limit_len(&mut self, field: &str, len: usize, max: usize) {
        if len > max {
            self.add(field, format!("at most {max} entries"));
        }
    }

    /// A Duration that must be present or absent, never negative and at most
    /// [`MAX_REQUEST_DURATION`], so no instant computed from it can leave chrono's range.
    pub fn duration(
        &mut self,
        field: &str,
        raw: Option<prost_types::Duration>,
    ) -> Option<Option<chrono::Duration>> {
        match raw {
            None => Some(None),
            Some(duration) => {
                // google.protobuf.Duration: nanos within ±999,999,999, of the seconds' sign.
                let nanos_valid = duration.nanos.unsigned_abs() < 1_000_000_000
                    && (duration.seconds == 0
                        || duration.nanos == 0
                        || (duration.seconds > 0) == (duration.nanos > 0));
                let parsed = Some(duration.seconds)
                    .filter(|_| nanos_valid)
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|seconds| {
                        seconds
                            .checked_add(&chrono::Duration::nanoseconds(i64::from(duration.nanos)))
                    })
                    .filter(|parsed| {
                        *parsed >= chrono::Duration::zero() && *parsed <= MAX_REQUEST_DURATION
                    });
                self.check(
                    field,
                    parsed
                        .map(Some)
                        .ok_or("must be a non-negative duration of at most 100 years"),
                )
            }
        }
    }

    pub fn timestamp(
        &mut self,
        field: &str,
        raw: Option<prost_types::Timestamp>,
    ) -> Option<Option<DateTime<Utc>>> {
        match raw {
            None => Some(None),
            Some(timestamp) => {
                let parsed = u32::try_from(timestamp.nanos)
                    .ok()
                    .and_then(|nanos| Utc.timestamp_opt(timestamp.seconds, nanos).single());
                self.check(field, parsed.map(Some).ok_or("must be a valid timestamp"))
            }
        }
    }

    /// AIP-158 page size: 0 means the default, larger than the maximum is capped.
    pub fn page_size(&mut self, raw: i32) -> Option<u32> {
        match u32::try_from(raw) {
            Ok(0) => Some(crate::admin::DEFAULT_PAGE_SIZE),
            Ok(size) => Some(size.min(crate::admin::MAX_PAGE_SIZE)),
            Err(_) => {
                self.add("page_size", "must not be negative");
                None
            }
        }
    }

    /// The opaque page token: base64 of the last key of the previous page.
    pub fn page_token<K>(
        &mut self,
        raw: &str,
        parse: impl Fn(&str) -> Option<K>,
    ) -> Option<Option<K>> {
        if raw.is_empty() {
            return Some(None);
        }
        let key = URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| parse(&text));
        self.check(
            "page_token",
            key.map(Some)
                .ok_or("is not a page token from a previous response"),
        )
    }
}

/// At most this many permissions or IPs in one request: enough for real use, small enough that
/// a hostile request cannot make a token row huge.
pub const MAX_LIST_LEN: usize = 256;
pub const MAX_ROLES: usize = 64;
/// The longest IP or CIDR text is 49 characters (`ffff:…:255.255.255.255/128`); an entry past
/// this is no address, and is refused without being quoted back.
pub const MAX_NETWORK_LEN: usize = 64;

fn encode_page_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// A page's `next_page_token`: its last key made opaque, or empty at the end (AIP-158).
pub fn next_page_token(next: Option<impl std::fmt::Display>) -> String {
    next.map(|key| encode_page_token(&key.to_string()))
        .unwrap_or_default()
}

/// Parses an id field that is required.
pub fn token_id(violations: &mut Violations, field: &str, raw: &str) -> Option<fields::TokenId> {
    violations.check(field, fields::TokenId::parse(raw))
}

pub fn invalid_field(field: &str, error: InvalidField) -> Status {
    status::invalid_argument(vec![FieldViolation::new(field, error.to_string())])
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        // Always below 2e9, so the conversion cannot fail; 0 keeps it total.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn optional_timestamp(time: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    time.map(timestamp)
}

fn grant_strings(grants: &[Grant]) -> Vec<String> {
    grants.iter().map(ToString::to_string).collect()
}

/// A token as the API shows it; `default_rate_limit` is the server's, for the effective limit
/// of a token whose own is 0.
pub fn token(token: &model::Token, default_rate_limit: u32) -> proto::Token {
    let state = match token.state(Utc::now()) {
        TokenState::Active => proto::TokenState::Active,
        TokenState::Expired => proto::TokenState::Expired,
        TokenState::Revoked => proto::TokenState::Revoked,
        TokenState::Suspended => proto::TokenState::Suspended,
    };
    proto::Token {
        id: token.id.to_string(),
        tenant: token.tenant.to_string(),
        owner_id: token.owner_id.to_string(),
        name: token.name.to_string(),
        description: token.description.to_string(),
        permissions: grant_strings(&token.permissions),
        roles: token.roles.iter().map(ToString::to_string).collect(),
        allowed_ips: token.allowed_ips.to_strings(),
        rate_limit_per_minute: token.rate_limit_per_minute,
        require_signature: token.require_signature,
        state: state.into(),
        secret_hint: token.secret_hint.clone(),
        created_at: Some(timestamp(token.created_at)),
        updated_at: Some(timestamp(token.updated_at)),
        expires_at: Some(timestamp(token.expires_at)),
        rotated_at: optional_timestamp(token.rotated_at),
        revoked_at: optional_timestamp(token.revoked_at),
        last_used_at: optional_timestamp(token.last_used_at),
        etag: etag(token.version),
        effective_rate_limit_per_minute: match token.rate_limit_per_minute {
            0 => default_rate_limit,
            own => own,
        },
        policy_violations: Vec::new(),
        imported: token.imported,
        metadata: metadata_map(&token.metadata),
        suspended_at: optional_timestamp(token.suspension.as_ref().map(|s| s.at)),
        suspend_reason: token
            .suspension
            .as_ref()
            .map(|s| s.reason.to_string())
            .unwrap_or_default(),
        credits: token
            .credits
            .map(|credits| token_credits(credits.at(Utc::now()))),
    }
}

/// A token's credits as the API shows them (the caller applies the refills due first).
fn token_credits(credits: Credits) -> proto::TokenCredits {
    proto::TokenCredits {
        remaining: credits.remaining,
        refill_amount: credits.refill.map_or(0, |refill| refill.amount),
        refill_interval: credits.refill.map(|refill| prost_types::Duration {
            seconds: refill.interval.num_seconds(),
            nanos: refill.interval.subsec_nanos(),
        }),
        refilled_at: Some(timestamp(credits.refilled_at)),
    }
}

impl Violations {
    /// Credits an admin sets (`TokenCredits`, its output-only `refilled_at` ignored): None
    /// after recording what is wrong, under `field.remaining`, `field.refill_amount` or
    /// `field.refill_interval`.
    pub fn credits(&mut self, field: &str, raw: proto::TokenCredits) -> Option<CreditGrant> {
        let interval = self.duration(&format!("{field}.refill_interval"), raw.refill_interval)?;
        let refill = interval.map(|interval| Refill {
            amount: raw.refill_amount,
            interval,
        });
        if refill.is_none() && raw.refill_amount != 0 {
            self.add(
                format!("{field}.refill_interval"),
                "is required with refill_amount",
            );
            return None;
        }
        CreditGrant::parse(raw.remaining, refill)
            .map_err(|error| self.add(format!("{field}.{}", error.field()), error.to_string()))
            .ok()
    }
}

/// A token as the API shows it, with the rules of its tenant's `policy` it breaks now.
pub fn token_under(
    token: &model::Token,
    default_rate_limit: u32,
    policy: &TenantPolicy,
) -> proto::Token {
    let mut shown = self::token(token, default_rate_limit);
    shown.policy_violations = policy
        .violations(token, Utc::now())
        .into_iter()
        .map(|rule| rule.as_str().to_owned())
        .collect();
    shown
}

pub fn tenant_policy(policy: &TenantPolicy) -> proto::TenantPolicy {
    proto::TenantPolicy {
        tenant: policy.tenant.to_string(),
        max_lifetime: policy.max_lifetime.map(whole_seconds),
        default_lifetime: policy.default_lifetime.map(whole_seconds),
        require_expiry: policy.require_expiry,
        max_tokens_per_owner: policy.max_tokens_per_owner.unwrap_or(0),
        allowed_permissions: grant_strings(&policy.allowed_permissions),
        require_ip_allowlist: policy.require_ip_allowlist,
        enforce_on_existing: policy.enforce_on_existing,
        updated_at: optional_timestamp(policy.updated_at),
        leak_action: proto::LeakAction::from(policy.leak_action).into(),
    }
}

fn metadata_map(metadata: &Metadata) -> std::collections::HashMap<String, String> {
    metadata
        .iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A token's version as its etag, opaque to clients (AIP-154).
pub fn etag(version: u64) -> String {
    version.to_string()
}

/// The version an etag names; None when the text is not an etag this server issues.
pub fn parse_etag(raw: &str) -> Option<u64> {
    // `u64::from_str` alone would also take a leading `+`.
    if raw.is_empty() || !raw.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

pub fn principal(principal: &model::Principal) -> proto::Principal {
    proto::Principal {
        tenant: principal.tenant.to_string(),
        id: principal.id.to_string(),
        permissions: grant_strings(&principal.permissions),
        disabled: principal.disabled,
        rate_limit_per_minute: principal.rate_limit_per_minute,
        created_at: Some(timestamp(principal.created_at)),
        updated_at: Some(timestamp(principal.updated_at)),
    }
}

pub fn role(role: &model::Role) -> proto::Role {
    proto::Role {
        tenant: role.tenant.to_string(),
        name: role.name.to_string(),
        permissions: grant_strings(&role.permissions),
        created_at: Some(timestamp(role.created_at)),
        updated_at: Some(timestamp(role.updated_at)),
    }
}

pub fn api_status(status: &model::ApiStatus) -> proto::ApiStatus {
    proto::ApiStatus {
        tenant: status.scope.to_string(),
        online: status.online,
        message: status.message.clone(),
        updated_at: optional_timestamp(status.updated_at),
    }
}

/// An optional id as proto3 carries it: empty when absent.
fn or_empty(id: Option<&impl std::fmt::Display>) -> String {
    id.map(ToString::to_string).unwrap_or_default()
}

pub fn audit_event(event: &model::AuditEvent) -> proto::AuditEvent {
    proto::AuditEvent {
        id: event.id,
        time: Some(timestamp(event.time)),
        actor: event.actor.clone(),
        action: event.action.clone(),
        tenant: event.tenant.clone(),
        token_id: or_empty(event.token_id.as_ref()),
        principal_id: or_empty(event.principal_id.as_ref()),
        summary: event.summary.clone(),
        admin_key: event.admin_key.clone(),
    }
}

/// A lifecycle event as WatchEvents sends it; its `data` object as a `google.protobuf.Struct`.
pub fn event(event: &crate::domain::event::Event) -> proto::Event {
    let data = match &event.data {
        serde_json::Value::Object(members) => Some(json_struct(members)),
        _ => None,
    };
    proto::Event {
        id: event.id.to_string(),
        r#type: event.event_type.as_str().to_owned(),
        tenant: event.tenant.clone(),
        time: Some(timestamp(event.time)),
        data,
        token_id: or_empty(event.token_id.as_ref()),
        principal_id: or_empty(event.principal_id.as_ref()),
    }
}

fn json_struct(members: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: members
            .iter()
            .map(|(name, value)| (name.clone(), json_value(value)))
            .collect(),
    }
}

/// JSON as protobuf's `Value`: numbers become doubles, as the well-known type defines them
/// (every number an event holds is below 2^53, credits at most 10^15).
fn json_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value;
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue.into()),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        Value::Object(members) => Kind::StructValue(json_struct(members)),
    };
    prost_types::Value { kind: Some(kind) }
}

pub fn portal_branding(branding: &crate::domain::session::PortalBranding) -> proto::PortalBranding {
    proto::PortalBranding {
        tenant: branding.tenant.to_string(),
        product_name: branding.product_name.clone(),
        logo_url: branding.logo_url.clone(),
        accent_color: branding.accent_color.clone(),
        update_time: branding.updated_at.map(timestamp),
    }
}

pub fn admin_role(role: AdminRole) -> proto::AdminRole {
    match role {
        AdminRole::Viewer => proto::AdminRole::Viewer,
        AdminRole::TokenManager => proto::AdminRole::TokenManager,
        AdminRole::Owner => proto::AdminRole::Owner,
    }
}

impl From<LeakAction> for proto::LeakAction {
    fn from(action: LeakAction) -> Self {
        match action {
            LeakAction::Revoke => Self::Revoke,
            LeakAction::Notify => Self::Notify,
        }
    }
}

/// The leak action a policy names: unspecified is the default, revoke; None for a number the
/// proto lacks.
pub fn parse_leak_action(raw: i32) -> Option<LeakAction> {
    match proto::LeakAction::try_from(raw).ok()? {
        proto::LeakAction::Unspecified | proto::LeakAction::Revoke => Some(LeakAction::Revoke),
        proto::LeakAction::Notify => Some(LeakAction::Notify),
    }
}

/// The role a request names; None for `ADMIN_ROLE_UNSPECIFIED` or a number the proto lacks.
pub fn parse_admin_role(raw: i32) -> Option<AdminRole> {
    match proto::AdminRole::try_from(raw).ok()? {
        proto::AdminRole::Unspecified => None,
        proto::AdminRole::Viewer => Some(AdminRole::Viewer),
        proto::AdminRole::TokenManager => Some(AdminRole::TokenManager),
        proto::AdminRole::Owner => Some(AdminRole::Owner),
    }
}

pub fn admin_key(key: &AdminKey) -> proto::AdminKey {
    proto::AdminKey {
        id: key.id.to_string(),
        name: key.name.to_string(),
        tenants: key.tenants.names(),
        role: admin_role(key.role).into(),
        secret_hint: key.secret_hint.clone(),
        created_at: Some(timestamp(key.created_at)),
        created_by: key.created_by.clone(),
        expires_at: optional_timestamp(key.expires_at),
        last_used_at: optional_timestamp(key.last_used_at),
        revoked_at: optional_timestamp(key.revoked_at),
    }
}

pub fn deny_reason(reason: DenyReason) -> proto::DenyReason {
    match reason {
        DenyReason::TokenMissing => proto::DenyReason::TokenMissing,
        DenyReason::TokenMalformed => proto::DenyReason::TokenMalformed,
        DenyReason::TokenUnknown => proto::DenyReason::TokenUnknown,
        DenyReason::TokenExpired => proto::DenyReason::TokenExpired,
        DenyReason::TokenRevoked => proto::DenyReason::TokenRevoked,
        DenyReason::TenantMismatch => proto::DenyReason::TenantMismatch,
        DenyReason::OwnerDisabled => proto::DenyReason::OwnerDisabled,
        DenyReason::IpNotAllowed => proto::DenyReason::IpNotAllowed,
        DenyReason::SignatureRequired => proto::DenyReason::SignatureRequired,
        DenyReason::SignatureInvalid => proto::DenyReason::SignatureInvalid,
        DenyReason::TimestampOutOfWindow => proto::DenyReason::TimestampOutOfWindow,
        DenyReason::Replayed => proto::DenyReason::Replayed,
        DenyReason::PermissionDenied => proto::DenyReason::PermissionDenied,
        DenyReason::RateLimited => proto::DenyReason::RateLimited,
        DenyReason::ApiOffline => proto::DenyReason::ApiOffline,
        DenyReason::StoreUnavailable => proto::DenyReason::StoreUnavailable,
        DenyReason::PathInvalid => proto::DenyReason::PathInvalid,
        DenyReason::PolicyViolation => proto::DenyReason::PolicyViolation,
        DenyReason::TokenSuspended => proto::DenyReason::TokenSuspended,
        DenyReason::CreditsExhausted => proto::DenyReason::CreditsExhausted,
    }
}

pub(crate) fn rate_limit(status: RateLimitStatus) -> proto::RateLimitStatus {
    proto::RateLimitStatus {
        limit: status.limit,
        remaining: status.remaining,
        reset_seconds: status.reset_seconds,
    }
}

/// What a Check's outcome is on the wire: `DENY_REASON_ALLOWED`, or why not.
pub fn outcome_reason(outcome: Result<(), DenyReason>) -> proto::DenyReason {
    match outcome {
        Ok(()) => proto::DenyReason::Allowed,
        Err(reason) => deny_reason(reason),
    }
}

pub fn check_response(decision: &Decision) -> proto::CheckResponse {
    let reason = outcome_reason(decision.outcome);
    let credential = decision.credential.as_deref();
    proto::CheckResponse {
        allowed: decision.is_allowed(),
        reason: reason.into(),
        http_status: u32::from(decision.http_status()),
        message: decision.message.to_string(),
        token_id: credential
            .map(|who| who.token_id.to_string())
            .unwrap_or_default(),
        owner_id: credential
            .map(|who| who.owner_id.to_string())
            .unwrap_or_default(),
        tenant: credential
            .map(|who| who.tenant.to_string())
            .unwrap_or_default(),
        permissions: grant_strings(decision.permissions()),
        rate_limit: decision.rate_limit.map(rate_limit),
        expires_at: credential.map(|who| timestamp(who.expires_at)),
        // Minted by the AuthorizationService, which holds the key (src/grpc/authorization.rs).
        report_handle: Vec::new(),
        missing_permissions: decision.missing_permissions.clone(),
        metadata: decision.metadata().map(metadata_map).unwrap_or_default(),
        credits_remaining: decision.credits_remaining,
    }
}

fn duration(span: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(span.as_secs()).unwrap_or(i64::MAX),
        // Always below 1e9.
        nanos: i32::try_from(span.subsec_nanos()).unwrap_or(0),
    }
}

/// A policy's duration, stored in whole seconds.
fn whole_seconds(span: chrono::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: span.num_seconds(),
        nanos: 0,
    }
}

fn count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn recent_call(call: &CallRecord) -> proto::RecentCall {
    let reason = outcome_reason(call.outcome);
    proto::RecentCall {
        time: Some(timestamp(call.time)),
        endpoint: call.endpoint.clone(),
        permission: call.permission.clone(),
        allowed: call.outcome.is_ok(),
        reason: reason.into(),
        client_ip: call.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_agent: call.user_agent.clone(),
        token_id: call.token_id.to_string(),
    }
}

pub fn usage(report: &UsageReport) -> proto::ListUsageResponse {
    let figures = &report.figures;
    let reported = figures.reported();
    let last_use = figures.last_use.as_ref();
    proto::ListUsageResponse {
        total_calls: count(figures.totals.calls),
        calls_last_24h: count(figures.calls_since_recent),
        success_rate: figures.success_rate(),
        average_latency: reported.map(|reported| duration(reported.average_latency)),
        top_endpoints: figures
            .top_endpoints
            .iter()
            .map(|(endpoint, calls)| proto::EndpointUsage {
                endpoint: endpoint.clone(),
                calls: count(*calls),
            })
            .collect(),
        recent_calls: figures.recent_calls.iter().map(recent_call).collect(),
        daily: report
            .daily
            .iter()
            .map(|day| proto::DailyUsage {
                date: day.date.format("%Y-%m-%d").to_string(),
                calls: count(day.calls),
                allowed: count(day.allowed),
                denied: count(day.calls.saturating_sub(day.allowed)),
            })
            .collect(),
        last_used_at: last_use.map(|last_use| timestamp(last_use.time)),
        last_used_ip: last_use
            .and_then(|last_use| last_use.client_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        last_used_browser: report.last_used_browser.clone(),
        last_used_os: report.last_used_os.clone(),
        last_used_location: report.last_used_location.clone(),
        reported: reported.map(|reported| proto::ReportedOutcomes {
            reports: count(reported.reports),
            success_rate: reported.success_rate,
            average_latency: Some(duration(reported.average_latency)),
        }),
    }
}

// Webhooks (issue 17).

pub fn webhook(webhook: &Webhook) -> proto::Webhook {
    proto::Webhook {
        id: webhook.id.to_string(),
        tenant: webhook.tenant.to_string(),
        url: webhook.url.to_string(),
        event_types: webhook
            .event_types
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        description: webhook.description.to_string(),
        disabled: webhook.disabled,
        failing_since: optional_timestamp(webhook.failing_since),
        created_at: Some(timestamp(webhook.created_at)),
        updated_at: Some(timestamp(webhook.updated_at)),
        secret_hint: webhook.secret_hint.clone(),
    }
}

pub fn webhook_delivery(delivery: &WebhookDelivery) -> proto::WebhookDelivery {
    let state = match delivery.state {
        DeliveryState::Pending => proto::WebhookDeliveryState::Pending,
        DeliveryState::Delivered => proto::WebhookDeliveryState::Delivered,
        DeliveryState::Failed => proto::WebhookDeliveryState::Failed,
    };
    proto::WebhookDelivery {
        id: delivery.id.to_string(),
        webhook_id: delivery.webhook_id.to_string(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        state: state.into(),
        attempts: delivery.attempts,
        next_attempt_at: (delivery.state == DeliveryState::Pending)
            .then(|| timestamp(delivery.next_attempt_at)),
        last_attempt_at: optional_timestamp(delivery.last_attempt_at),
        last_status_code: delivery.last_status.map_or(0, i32::from),
        last_error: delivery.last_error.clone(),
        created_at: Some(timestamp(delivery.created_at)),
        delivered_at: optional_timestamp(delivery.delivered_at),
    }
}

impl Violations {
    /// A webhook URL under the server's address rule.
    pub fn webhook_url(&mut self, raw: &str, rule: AddressRule) -> Option<WebhookUrl> {
        self.check("url", WebhookUrl::parse(raw, rule))
    }

    /// Event type names (`token.created`, …), naming the first that is none.
    pub fn event_types(&mut self, raw: &[String]) -> Option<Vec<EventType>> {
        match parse_event_types(raw) {
            Ok(types) => Some(types),
            Err(index) if index >= MAX_EVENT_TYPES => {
                self.add(
                    "event_types",
                    format!("at most {MAX_EVENT_TYPES} event types"),
                );
                None
            }
            Err(index) => {
                let known: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
                self.add(
                    format!("event_types[{index}]"),
                    format!("is not an event type; one of {}", known.join(", ")),
                );
                None
            }
        }
    }

    pub fn webhook_id(&mut self, field: &str, raw: &str) -> Option<WebhookId> {
        self.check(field, WebhookId::parse(raw))
    }
}

/// A CreateWebhookRequest, or INVALID_ARGUMENT naming each bad field.
pub fn create_webhook(
    request: proto::CreateWebhookRequest,
    default_tenant: &fields::Tenant,
    rule: AddressRule,
) -> Result<CreateWebhook, Status> {
    let mut violations = Violations::default();
    let tenant = violations.check(
        "tenant",
        fields::Tenant::parse_or(&request.tenant, default_tenant),
    );
    let url = violations.webhook_url(&request.url, rule);
    let event_types = violations.event_types(&request.event_types);
    let description = violations.check(
        "description",
        fields::Description::parse(&request.description),
    );
    let parsed = (|| {
        Some(CreateWebhook {
            tenant: tenant?,
            url: url?,
            event_types: event_types?,
            description: description?,
        })
    })();
    violations.finish(parsed)
}

/// The paths UpdateWebhook's mask may name.
pub const WEBHOOK_UPDATABLE_PATHS: [&str; 4] = ["url", "event_types", "description", "disabled"];

/// An UpdateWebhookRequest's id and changes, or INVALID_ARGUMENT naming each bad field.
pub fn update_webhook(
    request: proto::UpdateWebhookRequest,
    rule: AddressRule,
) -> Result<(WebhookId, WebhookChanges), Status> {
    let mut violations = Violations::default();
    let id = violations.webhook_id("id", &request.id);
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    let updatable = WEBHOOK_UPDATABLE_PATHS.join(", ");
    if paths.is_empty() {
        violations.add(
            "update_mask",
            format!("name at least one field to update: {updatable}"),
        );
    }
    // Each unknown path is quoted back: a flood of them would make the error huge.
    if paths.len() > WEBHOOK_UPDATABLE_PATHS.len() {
        violations.add(
            "update_mask",
            format!(
                "at most {} paths; updatable: {updatable}",
                WEBHOOK_UPDATABLE_PATHS.len()
            ),
        );
        return violations.finish(None);
    }
    let mut changes = WebhookChanges::default();
    for path in &paths {
        match path.as_str() {
            "url" => changes.url = violations.webhook_url(&request.url, rule),
            "event_types" => changes.event_types = violations.event_types(&request.event_types),
            "description" => {
                changes.description = violations.check(
                    "description",
                    fields::Description::parse(&request.description),
                )
            }
            "disabled" => changes.disabled = Some(request.disabled),
            unknown => violations.add(
                "update_mask",
                format!("unknown path {unknown:.64}; updatable: {updatable}"),
            ),
        }
    }
    violations.finish(id.map(|id| (id, changes)))
}
