//! Row codecs: domain values in their stored form for binding, and rows decoded back into domain
//! types, shared by both backends (`sql.rs`, `usage_sql.rs`).
//!
//! Both dialects store the same shapes: instants as unix microseconds (`BIGINT`/`INTEGER`),
//! lists (grants, roles, CIDRs) as JSON text arrays of their canonical strings, hashes and
//! sealed keys as bytes, a missing client IP as the empty string. Decoding parses every column
//! back through the domain's own parser, so a row that would not parse is `corrupt` (an
//! `Internal` error naming the column, never a panic and never an invalid value past the store).

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::admin_key::{AdminKey, AdminKeyId, AdminRole, TenantScope};
use crate::domain::credits::{Credits, Refill};
use crate::domain::fields::{
    ApiScope, Description, PrincipalId, RoleName, Tenant, TokenId, TokenName,
};
use crate::domain::leak::LeakAction;
use crate::domain::metadata::Metadata;
use crate::domain::model::{
    ApiStatus, AuditEvent, CredentialRecord, Principal, Role, SecretMatch, Suspension, Token,
};
use crate::domain::network::IpAllowlist;
use crate::domain::permission::Grant;
use crate::domain::policy::TenantPolicy;
use crate::domain::session::{PortalBranding, Session, SessionId, SessionKind};
use crate::domain::signature::SealedSigningKey;
use crate::domain::token::SecretHash;
use crate::domain::usage::{self, CallRecord, DailyCount, LastUse};

pub(super) fn micros(instant: DateTime<Utc>) -> i64 {
    instant.timestamp_micros()
}

pub(super) fn instant(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("timestamp out of range"))
}

pub(super) fn optional_instant(micros: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    micros.map(instant).transpose()
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt row: {what}"))
}

pub(super) fn strings_json<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    serde_json::Value::from(items).to_string()
}

pub(super) fn grants_json(grants: &[Grant]) -> String {
    let canonical: Vec<String> = grants.iter().map(ToString::to_string).collect();
    strings_json(canonical.iter().map(String::as_str))
}

pub(super) fn parse_json_strings(raw: &str, column: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(raw).map_err(|_| corrupt(column))
}

pub(super) fn parse_grants(raw: &str, column: &str) -> Result<Vec<Grant>, StoreError> {
    parse_json_strings(raw, column)?
        .iter()
        .map(|grant| Grant::parse(grant).map_err(|_| corrupt(column)))
        .collect()
}

pub(super) fn parse_field<T, E>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    column: &str,
) -> Result<T, StoreError> {
    parse(raw).map_err(|_| corrupt(column))
}

pub(super) fn rate_limit(raw: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(raw).map_err(|_| corrupt(column))
}

/// A token's values in their stored form, ready to bind.
pub(super) struct TokenParams {
    pub(super) permissions: String,
    pub(super) roles: String,
    pub(super) allowed_ips: String,
    pub(super) rate_limit_per_minute: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) expires_at: i64,
    pub(super) rotated_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
    pub(super) last_used_at: Option<i64>,
    pub(super) metadata: String,
    pub(super) suspended_at: Option<i64>,
    pub(super) suspend_reason: String,
    pub(super) credits: StoredCredits,
}

impl TokenParams {
    pub(super) fn of(token: &Token) -> Self {
        let allowed_ips = token.allowed_ips.to_strings();
        Self {
            permissions: grants_json(&token.permissions),
            roles: strings_json(token.roles.iter().map(RoleName::as_str)),
            allowed_ips: strings_json(allowed_ips.iter().map(String::as_str)),
            rate_limit_per_minute: i64::from(token.rate_limit_per_minute),
            created_at: micros(token.created_at),
            updated_at: micros(token.updated_at),
            expires_at: micros(token.expires_at),
            rotated_at: token.rotated_at.map(micros),
            revoked_at: token.revoked_at.map(micros),
            last_used_at: token.last_used_at.map(micros),
            metadata: metadata_json(&token.metadata),
            suspended_at: token.suspension.as_ref().map(|s| micros(s.at)),
            suspend_reason: token
                .suspension
                .as_ref()
                .map(|s| s.reason.as_str().to_owned())
                .unwrap_or_default(),
            credits: StoredCredits::of(token.credits.as_ref()),
        }
    }
}

/// Metadata as a JSON text object of strings.
pub(super) fn metadata_json(metadata: &Metadata) -> String {
    let object: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(key, value)| (key.to_owned(), serde_json::Value::from(value)))
        .collect();
    serde_json::Value::Object(object).to_string()
}

fn parse_metadata(raw: &str) -> Result<Metadata, StoreError> {
    let object: std::collections::BTreeMap<String, String> =
        serde_json::from_str(raw).map_err(|_| corrupt("tokens.metadata"))?;
    Metadata::parse(
        object
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )
    .map_err(|_| corrupt("tokens.metadata"))
}

/// A token's credits in their four stored columns (`credits_*`); all NULL (and amount 0)
/// without credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub(super) struct StoredCredits {
    #[sqlx(rename = "credits_remaining")]
    pub(super) remaining: Option<i64>,
    #[sqlx(rename = "credits_refill_amount")]
    pub(super) refill_amount: i64,
    #[sqlx(rename = "credits_refill_interval")]
    pub(super) refill_interval: Option<i64>,
    #[sqlx(rename = "credits_refilled_at")]
    pub(super) refilled_at: Option<i64>,
}

impl StoredCredits {
    pub(super) fn of(credits: Option<&Credits>) -> Self {
        let Some(credits) = credits else {
            return Self::default();
        };
        // Within MAX_CREDITS and MAX_REFILL_INTERVAL (checked by `Credits::new`), so these fit.
        let stored = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        Self {
            remaining: Some(stored(credits.remaining)),
            refill_amount: credits.refill.map_or(0, |refill| stored(refill.amount)),
            refill_interval: credits
                .refill
                .and_then(|refill| refill.interval.num_microseconds()),
            refilled_at: Some(micros(credits.refilled_at)),
        }
    }

    pub(super) fn into_credits(self) -> Result<Option<Credits>, StoreError> {
        let Some(remaining) = self.remaining else {
            return Ok(None);
        };
        let count = |value: i64| u64::try_from(value).map_err(|_| corrupt("tokens.credits"));
        let refill = match self.refill_interval {
            None => None,
            Some(interval) => Some(Refill {
                amount: count(self.refill_amount)?,
                interval: chrono::Duration::microseconds(interval),
            }),
        };
        let refilled_at = self.refilled_at.ok_or_else(|| corrupt("tokens.credits"))?;
        Ok(Some(Credits {
            remaining: count(remaining)?,
            refill,
            refilled_at: instant(refilled_at)?,
        }))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    id: String,
    tenant: String,
    owner_id: String,
    name: String,
    description: String,
    permissions: String,
    roles: String,
    allowed_ips: String,
    rate_limit_per_minute: i64,
    require_signature: bool,
    secret_hint: String,
    created_at: i64,
    updated_at: i64,
    expires_at: i64,
    rotated_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    version: i64,
    imported: bool,
    metadata: String,
    suspended_at: Option<i64>,
    suspend_reason: String,
    #[sqlx(flatten)]
    credits: StoredCredits,
}

/// What a rotation reads from the token row it locks.
#[derive(sqlx::FromRow)]
pub(super) struct LockedForRotation {
    pub(super) secret_hash: Vec<u8>,
    pub(super) revoked_at: Option<i64>,
    pub(super) signing_key: Option<Vec<u8>>,
    pub(super) tenant: String,
    pub(super) owner_id: String,
    pub(super) expires_at: i64,
}

impl TokenRow {
    pub(super) fn into_token(self) -> Result<Token, StoreError> {
        let roles = parse_json_strings(&self.roles, "tokens.roles")?
            .iter()
            .map(|role| parse_field(role, RoleName::parse, "tokens.roles"))
            .collect::<Result<_, _>>()?;
        let allowed_ips = IpAllowlist::parse(&parse_json_strings(
            &self.allowed_ips,
            "tokens.allowed_ips",
        )?)
        .map_err(|_| corrupt("tokens.allowed_ips"))?;
        Ok(Token {
            id: parse_field(&self.id, TokenId::parse, "tokens.id")?,
            tenant: parse_field(&self.tenant, Tenant::parse, "tokens.tenant")?,
            owner_id: parse_field(&self.owner_id, PrincipalId::parse, "tokens.owner_id")?,
            name: parse_field(&self.name, TokenName::parse, "tokens.name")?,
            description: parse_field(&self.description, Description::parse, "tokens.description")?,
            permissions: parse_grants(&self.permissions, "tokens.permissions")?,
            roles,
            allowed_ips,
            rate_limit_per_minute: rate_limit(
                self.rate_limit_per_minute,
                "tokens.rate_limit_per_minute",
            )?,
            require_signature: self.require_signature,
            secret_hint: self.secret_hint,
            created_at: instant(self.created_at)?,
            updated_at: instant(self.updated_at)?,
            expires_at: instant(self.expires_at)?,
            rotated_at: optional_instant(self.rotated_at)?,
            revoked_at: optional_instant(self.revoked_at)?,
            last_used_at: optional_instant(self.last_used_at)?,
            version: u64::try_from(self.version).map_err(|_| corrupt("tokens.version"))?,
            imported: self.imported,
            metadata: parse_metadata(&self.metadata)?,
            suspension: self
                .suspended_at
                .map(|at| {
                    Ok::<_, StoreError>(Suspension {
                        at: instant(at)?,
                        reason: parse_field(
                            &self.suspend_reason,
                            Description::parse,
                            "tokens.suspend_reason",
                        )?,
                    })
                })
                .transpose()?,
            credits: self.credits.into_credits()?,
        })
    }
}

/// A token found by secret hash, with how it matched and its owner (all NULL when missing).
#[derive(sqlx::FromRow)]
pub(super) struct CredentialRow {
    #[sqlx(flatten)]
    token: TokenRow,
    /// NULL when the hash is the token's current secret.
    retired_grace_until: Option<i64>,
    /// The sealed signing key that goes with the matched secret.
    signing_key: Option<Vec<u8>>,
    owner_permissions: Option<String>,
    owner_disabled: Option<bool>,
    owner_rate_limit_per_minute: Option<i64>,
    owner_created_at: Option<i64>,
    owner_updated_at: Option<i64>,
    /// The tenant's policy (every column NULL when it has none).
    #[sqlx(flatten)]
    policy: PolicyRow,
}

impl CredentialRow {
    /// The record without roles, which the caller loads only when the token names any.
    pub(super) fn into_record(self) -> Result<CredentialRecord, StoreError> {
        let secret_match = match self.retired_grace_until {
            None => SecretMatch::Current,
            Some(grace_until) => SecretMatch::Retired {
                grace_until: instant(grace_until)?,
            },
        };
        let token = self.token.into_token()?;
        let owner = match (
            self.owner_permissions,
            self.owner_disabled,
            self.owner_created_at,
            self.owner_updated_at,
        ) {
            (Some(permissions), Some(disabled), Some(created_at), Some(updated_at)) => {
                Some(Principal {
                    tenant: token.tenant.clone(),
                    id: token.owner_id.clone(),
                    permissions: parse_grants(&permissions, "principals.permissions")?,
                    disabled,
                    rate_limit_per_minute: self
                        .owner_rate_limit_per_minute
                        .map(|limit| rate_limit(limit, "principals.rate_limit_per_minute"))
                        .transpose()?,
                    created_at: instant(created_at)?,
                    updated_at: instant(updated_at)?,
                })
            }
            _ => None,
        };
        Ok(CredentialRecord {
            token,
            secret_match,
            owner,
            roles: Vec::new(),
            signing_key: self.signing_key.map(SealedSigningKey::from_bytes),
            policy: self.policy.into_policy()?,
        })
    }
}

/// The columns of `tenant_policies`, as `sql::policy_columns!` names them: all NULL (None) when a
/// LEFT JOIN found no policy.
#[derive(sqlx::FromRow)]
pub(super) struct PolicyRow {
    policy_tenant: Option<String>,
    policy_max_lifetime_seconds: Option<i64>,
    policy_default_lifetime_seconds: Option<i64>,
    policy_require_expiry: Option<bool>,
    policy_max_tokens_per_owner: Option<i64>,
    policy_allowed_permissions: Option<String>,
    policy_require_ip_allowlist: Option<bool>,
    policy_enforce_on_existing: Option<bool>,
    policy_updated_at: Option<i64>,
    policy_leak_action: Option<String>,
}

/// A policy's values in their stored form, ready to bind.
pub(super) struct PolicyParams {
    pub(super) max_lifetime_seconds: Option<i64>,
    pub(super) default_lifetime_seconds: Option<i64>,
    pub(super) max_tokens_per_owner: Option<i64>,
    pub(super) allowed_permissions: String,
    pub(super) updated_at: i64,
}

impl PolicyParams {
    pub(super) fn of(policy: &TenantPolicy) -> Self {
        Self {
            max_lifetime_seconds: policy.max_lifetime.map(|max| max.num_seconds()),
            default_lifetime_seconds: policy
                .default_lifetime
                .map(|lifetime| lifetime.num_seconds()),
            max_tokens_per_owner: policy.max_tokens_per_owner.map(i64::from),
            allowed_permissions: grants_json(&policy.allowed_permissions),
            updated_at: micros(policy.updated_at.unwrap_or_else(Utc::now)),
        }
    }
}

fn seconds(raw: Option<i64>, column: &str) -> Result<Option<chrono::Duration>, StoreError> {
    raw.map(|seconds| chrono::Duration::try_seconds(seconds).ok_or_else(|| corrupt(column)))
        .transpose()
}

impl PolicyRow {
    /// The policy, or None when the row holds none.
    pub(super) fn into_policy(self) -> Result<Option<TenantPolicy>, StoreError> {
        let Some(tenant) = self.policy_tenant else {
            return Ok(None);
        };
        Ok(Some(TenantPolicy {
            tenant: parse_field(&tenant, Tenant::parse, "tenant_policies.tenant")?,
            max_lifetime: seconds(
                self.policy_max_lifetime_seconds,
                "tenant_policies.max_lifetime_seconds",
            )?,
            default_lifetime: seconds(
                self.policy_default_lifetime_seconds,
                "tenant_policies.default_lifetime_seconds",
            )?,
            require_expiry: self.policy_require_expiry.unwrap_or(false),
            max_tokens_per_owner: self
                .policy_max_tokens_per_owner
                .map(|limit| rate_limit(limit, "tenant_policies.max_tokens_per_owner"))
                .transpose()?,
            allowed_permissions: parse_grants(
                self.policy_allowed_permissions.as_deref().unwrap_or("[]"),
                "tenant_policies.allowed_permissions",
            )?,
            require_ip_allowlist: self.policy_require_ip_allowlist.unwrap_or(false),
            enforce_on_existing: self.policy_enforce_on_existing.unwrap_or(false),
            leak_action: match self.policy_leak_action.as_deref() {
                None => LeakAction::default(),
                Some(stored) => LeakAction::parse(stored)
                    .ok_or_else(|| corrupt("tenant_policies.leak_action"))?,
            },
            updated_at: optional_instant(self.policy_updated_at)?,
        }))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct PrincipalRow {
    tenant: String,
    id: String,
    permissions: String,
    disabled: bool,
    rate_limit_per_minute: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl PrincipalRow {
    pub(super) fn into_principal(self) -> Result<Principal, StoreError> {
        Ok(Principal {
            tenant: parse_field(&self.tenant, Tenant::parse, "principals.tenant")?,
            id: parse_field(&self.id, PrincipalId::parse, "principals.id")?,
            permissions: parse_grants(&self.permissions, "principals.permissions")?,
            disabled: self.disabled,
            rate_limit_per_minute: self
                .rate_limit_per_minute
                .map(|limit| rate_limit(limit, "principals.rate_limit_per_minute"))
                .transpose()?,
            created_at: instant(self.created_at)?,
            updated_at: instant(self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RoleRow {
    tenant: String,
    name: String,
    permissions: String,
    created_at: i64,
    updated_at: i64,
}

impl RoleRow {
    pub(super) fn into_role(self) -> Result<Role, StoreError> {
        Ok(Role {
            tenant: parse_field(&self.tenant, Tenant::parse, "roles.tenant")?,
            name: parse_field(&self.name, RoleName::parse, "roles.name")?,
            permissions: parse_grants(&self.permissions, "roles.permissions")?,
            created_at: instant(self.created_at)?,
            updated_at: instant(self.updated_at)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ApiStatusRow {
    scope: String,
    online: bool,
    message: String,
    updated_at: i64,
}

impl ApiStatusRow {
    pub(super) fn into_api_status(self) -> Result<ApiStatus, StoreError> {
        Ok(ApiStatus {
            scope: parse_field(&self.scope, ApiScope::parse, "api_status.scope")?,
            online: self.online,
            message: self.message,
            updated_at: Some(instant(self.updated_at)?),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    time: i64,
    actor: String,
    action: String,
    tenant: String,
    token_id: Option<String>,
    principal_id: Option<String>,
    summary: String,
    admin_key: String,
}

impl AuditRow {
    pub(super) fn into_event(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: self.id,
            time: instant(self.time)?,
            actor: self.actor,
            action: self.action,
            tenant: self.tenant,
            token_id: self
                .token_id
                .map(|id| parse_field(&id, TokenId::parse, "audit_events.token_id"))
                .transpose()?,
            principal_id: self
                .principal_id
                .map(|id| parse_field(&id, PrincipalId::parse, "audit_events.principal_id"))
                .transpose()?,
            summary: self.summary,
            admin_key: self.admin_key,
        })
    }
}

/// A row of `events`, its columns as `sql::event_columns!` lists them.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    seq: i64,
    id: String,
    #[sqlx(rename = "type")]
    event_type: String,
    tenant: String,
    time: i64,
    token_id: Option<String>,
    principal_id: Option<String>,
    data: String,
}

impl EventRow {
    pub(super) fn into_event(self) -> Result<crate::domain::event::Event, StoreError> {
        use crate::domain::event::{Event, EventId, EventType};
        Ok(Event {
            seq: self.seq,
            id: EventId::from_stored(self.id),
            event_type: EventType::parse(&self.event_type).ok_or_else(|| corrupt("events.type"))?,
            tenant: self.tenant,
            time: instant(self.time)?,
            token_id: self
                .token_id
                .map(|id| parse_field(&id, TokenId::parse, "events.token_id"))
                .transpose()?,
            principal_id: self
                .principal_id
                .map(|id| parse_field(&id, PrincipalId::parse, "events.principal_id"))
                .transpose()?,
            data: serde_json::from_str(&self.data).map_err(|_| corrupt("events.data"))?,
        })
    }
}

/// A row of `admin_keys`, its columns as `sql::admin_key_columns!` lists them.
#[derive(sqlx::FromRow)]
pub(super) struct AdminKeyRow {
    id: String,
    name: String,
    tenants: String,
    role: String,
    secret_hint: String,
    created_at: i64,
    created_by: String,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    bootstrap: bool,
}

impl AdminKeyRow {
    pub(super) fn into_admin_key(self) -> Result<AdminKey, StoreError> {
        let tenants = parse_json_strings(&self.tenants, "admin_keys.tenants")?;
        Ok(AdminKey {
            id: parse_field(&self.id, AdminKeyId::parse, "admin_keys.id")?,
            name: parse_field(&self.name, TokenName::parse, "admin_keys.name")?,
            tenants: TenantScope::parse(&tenants).map_err(|_| corrupt("admin_keys.tenants"))?,
            role: AdminRole::parse(&self.role).ok_or_else(|| corrupt("admin_keys.role"))?,
            secret_hint: self.secret_hint,
            created_at: instant(self.created_at)?,
            created_by: self.created_by,
            expires_at: optional_instant(self.expires_at)?,
            last_used_at: optional_instant(self.last_used_at)?,
            revoked_at: optional_instant(self.revoked_at)?,
            bootstrap: self.bootstrap,
        })
    }
}

/// An admin key's tenants as stored: a JSON text array, `[]` for every tenant.
pub(super) fn tenants_json(scope: &TenantScope) -> String {
    let names = scope.names();
    strings_json(names.iter().map(String::as_str))
}

/// An IP as stored: its text, or empty for none.
pub(super) fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map(|ip| ip.to_string()).unwrap_or_default()
}

fn parse_ip(text: &str, column: &str) -> Result<Option<IpAddr>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| corrupt(column))
}

fn count(raw: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(raw).map_err(|_| corrupt(column))
}

#[derive(sqlx::FromRow)]
pub(super) struct RecentCallRow {
    token_id: String,
    time: i64,
    endpoint: String,
    permission: String,
    reason: String,
    client_ip: String,
    user_agent: String,
}

impl RecentCallRow {
    fn into_call(self) -> Result<CallRecord, StoreError> {
        Ok(CallRecord {
            token_id: TokenId::parse(&self.token_id)
                .map_err(|_| corrupt("usage_recent_calls.token_id"))?,
            time: instant(self.time)?,
            endpoint: self.endpoint,
            permission: self.permission,
            outcome: usage::outcome_named(&self.reason)
                .ok_or_else(|| corrupt("usage_recent_calls.reason"))?,
            client_ip: parse_ip(&self.client_ip, "usage_recent_calls.client_ip")?,
            user_agent: self.user_agent,
        })
    }
}

/// Assembles the answers of `read_usage`'s queries.
pub(super) fn figures(
    totals: (i64, i64, i64, i64, i64),
    calls_since_recent: i64,
    top_endpoints: Vec<(String, i64)>,
    recent_calls: Vec<RecentCallRow>,
    daily: Vec<(i64, i64, i64)>,
    last_use: Option<(i64, String, String)>,
) -> Result<usage::UsageFigures, StoreError> {
    let (calls, allowed, reports, report_successes, report_micros) = totals;
    let column = "usage_days";
    Ok(usage::UsageFigures {
        totals: usage::UsageTotals {
            calls: count(calls, column)?,
            allowed: count(allowed, column)?,
            reports: count(reports, column)?,
            report_successes: count(report_successes, column)?,
            report_micros: count(report_micros, column)?,
        },
        calls_since_recent: count(calls_since_recent, "usage_minutes.calls")?,
        top_endpoints: top_endpoints
            .into_iter()
            .map(|(endpoint, calls)| Ok((endpoint, count(calls, column)?)))
            .collect::<Result<_, StoreError>>()?,
        recent_calls: recent_calls
            .into_iter()
            .map(RecentCallRow::into_call)
            .collect::<Result<_, _>>()?,
        daily: daily
            .into_iter()
            .map(|(day, calls, allowed)| {
                Ok(DailyCount {
                    date: instant(day)?.date_naive(),
                    calls: count(calls, column)?,
                    allowed: count(allowed, column)?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
        last_use: last_use
            .map(|(time, client_ip, user_agent)| {
                Ok::<_, StoreError>(LastUse {
                    time: instant(time)?,
                    client_ip: parse_ip(&client_ip, "usage_last_use.client_ip")?,
                    user_agent,
                })
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::DurationRound;

    use crate::domain::decision::DenyReason;

    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).expect("instant")
    }

    fn grants(raw: &[&str]) -> Vec<Grant> {
        raw.iter()
            .map(|grant| Grant::parse(grant).expect("grant"))
            .collect()
    }

    fn token() -> Token {
        Token {
            id: TokenId::generate(),
            tenant: Tenant::parse("acme").expect("tenant"),
            owner_id: PrincipalId::parse("alice").expect("owner"),
            name: TokenName::parse("ci deploys").expect("name"),
            description: Description::parse("pushes images").expect("description"),
            permissions: grants(&["orders:read", "products:*"]),
            roles: vec![RoleName::parse("viewer").expect("role")],
            allowed_ips: IpAllowlist::parse(&["10.0.0.0/8".to_owned(), "::1/128".to_owned()])
                .expect("ips"),
            rate_limit_per_minute: 120,
            require_signature: true,
            secret_hint: "tsk_…a1b2".to_owned(),
            created_at: at(1_700_000_000_000_001),
            updated_at: at(1_700_000_000_000_002),
            expires_at: at(1_710_000_000_000_000),
            rotated_at: Some(at(1_700_000_000_000_003)),
            revoked_at: None,
            last_used_at: Some(at(1_700_000_000_000_004)),
            version: 7,
            imported: true,
            metadata: Metadata::parse([("plan", "pro"), ("region", "eu-west")]).expect("metadata"),
            suspension: Some(Suspension {
                at: at(1_700_000_000_000_005),
                reason: Description::parse("chargeback").expect("reason"),
            }),
            credits: Some(Credits {
                remaining: 41,
                refill: Some(Refill {
                    amount: 100,
                    interval: chrono::Duration::days(30),
                }),
                refilled_at: at(1_700_000_000_000_005),
            }),
        }
    }

    /// The row a database would hand back for `token` written with its `TokenParams`.
    fn stored(token: &Token) -> TokenRow {
        let params = TokenParams::of(token);
        TokenRow {
            id: token.id.to_string(),
            tenant: token.tenant.to_string(),
            owner_id: token.owner_id.to_string(),
            name: token.name.to_string(),
            description: token.description.to_string(),
            permissions: params.permissions,
            roles: params.roles,
            allowed_ips: params.allowed_ips,
            rate_limit_per_minute: params.rate_limit_per_minute,
            require_signature: token.require_signature,
            secret_hint: token.secret_hint.clone(),
            created_at: params.created_at,
            updated_at: params.updated_at,
            expires_at: params.expires_at,
            rotated_at: params.rotated_at,
            revoked_at: params.revoked_at,
            last_used_at: params.last_used_at,
            version: i64::try_from(token.version).expect("version"),
            imported: token.imported,
            metadata: params.metadata,
            suspended_at: params.suspended_at,
            suspend_reason: params.suspend_reason,
            credits: params.credits,
        }
    }

    fn corrupt_column(result: Result<impl std::fmt::Debug, StoreError>) -> String {
        match result {
            Err(StoreError::Internal(message)) => message,
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }

    #[test]
    fn a_token_decodes_from_its_stored_form_unchanged_to_the_microsecond() {
        let token = token();
        assert_eq!(stored(&token).into_token().expect("decodes"), token);
    }

    #[test]
    fn lists_are_stored_as_json_arrays_of_their_canonical_strings() {
        let params = TokenParams::of(&token());
        assert_eq!(params.permissions, r#"["orders:read","products:*"]"#);
        assert_eq!(params.roles, r#"["viewer"]"#);
        // A single host is stored as its address, as the allowlist prints it.
        assert_eq!(params.allowed_ips, r#"["10.0.0.0/8","::1"]"#);
        assert_eq!(grants_json(&[]), "[]");
        assert_eq!(params.metadata, r#"{"plan":"pro","region":"eu-west"}"#);
        assert_eq!(metadata_json(&Metadata::default()), "{}");
    }

    #[test]
    fn a_column_that_does_not_parse_is_a_corrupt_row_naming_the_column() {
        let mut row = stored(&token());
        row.permissions = r#"["orders"]"#.to_owned();
        assert_eq!(
            corrupt_column(row.into_token()),
            "corrupt row: tokens.permissions"
        );

        let mut row = stored(&token());
        row.allowed_ips = "not json".to_owned();
        assert_eq!(
            corrupt_column(row.into_token()),
            "corrupt row: tokens.allowed_ips"
        );

        let mut row = stored(&token());
        row.rate_limit_per_minute = -1;
        assert_eq!(
            corrupt_column(row.into_token()),
            "corrupt row: tokens.rate_limit_per_minute"
        );

        let mut row = stored(&token());
        row.tenant = "acme corp".to_owned();
        assert_eq!(
            corrupt_column(row.into_token()),
            "corrupt row: tokens.tenant"
        );

        let mut row = stored(&token());
        row.metadata = r#"{"Plan":"pro"}"#.to_owned();
        assert_eq!(
            corrupt_column(row.into_token()),
            "corrupt row: tokens.metadata"
        );

        let mut row = stored(&token());
        row.version = -1;
        assert_eq!(
            corrupt_column(row.into_token()),
            "corrupt row: tokens.version"
        );
    }

    #[test]
    fn an_instant_beyond_what_chrono_holds_is_corrupt() {
        assert_eq!(
            corrupt_column(instant(i64::MAX)),
            "corrupt row: timestamp out of range"
        );
        let now = Utc::now();
        let stored = micros(now);
        assert_eq!(
            instant(stored).expect("in range"),
            now.duration_trunc(chrono::Duration::microseconds(1))
                .expect("truncates")
        );
    }

    fn credential(token: &Token) -> CredentialRow {
        CredentialRow {
            token: stored(token),
            retired_grace_until: None,
            signing_key: Some(vec![1, 2, 3]),
            owner_permissions: Some(r#"["orders:*"]"#.to_owned()),
            owner_disabled: Some(false),
            owner_rate_limit_per_minute: Some(30),
            owner_created_at: Some(1_600_000_000_000_000),
            owner_updated_at: Some(1_600_000_000_000_001),
            policy: stored_policy(None),
        }
    }

    /// The columns a LEFT JOIN on `tenant_policies` hands back for `policy` (all NULL for none).
    fn stored_policy(policy: Option<&TenantPolicy>) -> PolicyRow {
        let params = policy.map(PolicyParams::of);
        PolicyRow {
            policy_tenant: policy.map(|policy| policy.tenant.to_string()),
            policy_max_lifetime_seconds: params.as_ref().and_then(|p| p.max_lifetime_seconds),
            policy_default_lifetime_seconds: params
                .as_ref()
                .and_then(|p| p.default_lifetime_seconds),
            policy_require_expiry: policy.map(|policy| policy.require_expiry),
            policy_max_tokens_per_owner: params.as_ref().and_then(|p| p.max_tokens_per_owner),
            policy_allowed_permissions: params.as_ref().map(|p| p.allowed_permissions.clone()),
            policy_require_ip_allowlist: policy.map(|policy| policy.require_ip_allowlist),
            policy_enforce_on_existing: policy.map(|policy| policy.enforce_on_existing),
            policy_updated_at: params.as_ref().map(|p| p.updated_at),
            policy_leak_action: policy.map(|policy| policy.leak_action.as_str().to_owned()),
        }
    }

    #[test]
    fn a_tenant_policy_decodes_from_its_stored_form_unchanged_and_no_row_is_no_policy() {
        let policy = TenantPolicy {
            tenant: Tenant::parse("acme").expect("tenant"),
            max_lifetime: Some(chrono::Duration::days(90)),
            default_lifetime: Some(chrono::Duration::days(30)),
            require_expiry: false,
            max_tokens_per_owner: Some(5),
            allowed_permissions: grants(&["orders:*", "fn:Report"]),
            require_ip_allowlist: true,
            enforce_on_existing: true,
            leak_action: LeakAction::Notify,
            updated_at: Some(at(1_700_000_000_000_009)),
        };
        assert_eq!(
            stored_policy(Some(&policy)).into_policy().expect("decodes"),
            Some(policy)
        );
        assert_eq!(stored_policy(None).into_policy().expect("decodes"), None);
    }

    #[test]
    fn a_credential_carries_its_owner_and_the_key_of_the_secret_that_matched() {
        let token = token();
        let record = credential(&token).into_record().expect("decodes");
        assert_eq!(record.secret_match, SecretMatch::Current);
        assert_eq!(
            record.signing_key,
            Some(SealedSigningKey::from_bytes(vec![1, 2, 3]))
        );
        assert!(record.roles.is_empty(), "roles are loaded separately");
        assert_eq!(
            record.owner,
            Some(Principal {
                tenant: token.tenant.clone(),
                id: token.owner_id.clone(),
                permissions: grants(&["orders:*"]),
                disabled: false,
                rate_limit_per_minute: Some(30),
                created_at: at(1_600_000_000_000_000),
                updated_at: at(1_600_000_000_000_001),
            })
        );
        assert_eq!(record.token, token);
    }

    #[test]
    fn a_retired_secret_matches_with_its_grace_and_a_missing_owner_is_none() {
        let mut row = credential(&token());
        row.retired_grace_until = Some(1_700_000_000_500_000);
        row.owner_permissions = None;
        row.owner_disabled = None;
        row.owner_rate_limit_per_minute = None;
        row.owner_created_at = None;
        row.owner_updated_at = None;
        let record = row.into_record().expect("decodes");
        assert_eq!(
            record.secret_match,
            SecretMatch::Retired {
                grace_until: at(1_700_000_000_500_000)
            }
        );
        assert_eq!(record.owner, None);
    }

    #[test]
    fn principals_roles_statuses_and_audit_events_decode_every_column() {
        let principal = PrincipalRow {
            tenant: "acme".to_owned(),
            id: "alice".to_owned(),
            permissions: r#"["orders:read"]"#.to_owned(),
            disabled: true,
            rate_limit_per_minute: None,
            created_at: 1,
            updated_at: 2,
        }
        .into_principal()
        .expect("principal");
        assert_eq!(principal.permissions, grants(&["orders:read"]));
        assert!(principal.disabled);
        assert_eq!(principal.rate_limit_per_minute, None);
        assert_eq!((principal.created_at, principal.updated_at), (at(1), at(2)));

        let role = RoleRow {
            tenant: "acme".to_owned(),
            name: "viewer".to_owned(),
            permissions: r#"["orders:read","products:read"]"#.to_owned(),
            created_at: 3,
            updated_at: 4,
        }
        .into_role()
        .expect("role");
        assert_eq!(role.name.as_str(), "viewer");
        assert_eq!(role.permissions, grants(&["orders:read", "products:read"]));

        let status = ApiStatusRow {
            scope: "*".to_owned(),
            online: false,
            message: "maintenance".to_owned(),
            updated_at: 5,
        }
        .into_api_status()
        .expect("status");
        assert_eq!(status.scope, ApiScope::all());
        assert!(!status.online);
        assert_eq!(status.updated_at, Some(at(5)));

        let token_id = TokenId::generate();
        let event = AuditRow {
            id: 42,
            time: 6,
            actor: "ops@example.com".to_owned(),
            action: "token.revoke".to_owned(),
            tenant: "acme".to_owned(),
            token_id: Some(token_id.to_string()),
            principal_id: None,
            summary: "revoked".to_owned(),
            admin_key: "admin-key:0123abcd".to_owned(),
        }
        .into_event()
        .expect("event");
        assert_eq!(event.id, 42);
        assert_eq!(event.token_id, Some(token_id));
        assert_eq!(event.principal_id, None);

        let bad_role = RoleRow {
            tenant: "acme".to_owned(),
            name: "no spaces allowed".to_owned(),
            permissions: "[]".to_owned(),
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(
            corrupt_column(bad_role.into_role()),
            "corrupt row: roles.name"
        );
    }

    fn recent_call(reason: &str, client_ip: &str) -> RecentCallRow {
        RecentCallRow {
            token_id: TokenId::generate().to_string(),
            time: 1_700_000_000_000_000,
            endpoint: "GET /orders".to_owned(),
            permission: "orders:read".to_owned(),
            reason: reason.to_owned(),
            client_ip: client_ip.to_owned(),
            user_agent: "curl/8".to_owned(),
        }
    }

    #[test]
    fn usage_figures_decode_calls_outcomes_and_a_missing_ip() {
        let figures = figures(
            (10, 8, 2, 1, 1_500),
            4,
            vec![("GET /orders".to_owned(), 10)],
            vec![
                recent_call("allowed", "192.0.2.7"),
                recent_call("rate_limited", ""),
            ],
            vec![(1_699_920_000_000_000, 10, 8)],
            Some((1_700_000_000_000_000, String::new(), "curl/8".to_owned())),
        )
        .expect("figures");
        assert_eq!(figures.totals.calls, 10);
        assert_eq!(figures.totals.report_micros, 1_500);
        assert_eq!(figures.calls_since_recent, 4);
        assert_eq!(figures.top_endpoints, vec![("GET /orders".to_owned(), 10)]);
        assert_eq!(figures.recent_calls[0].outcome, Ok(()));
        assert_eq!(
            figures.recent_calls[0].client_ip,
            Some("192.0.2.7".parse().expect("ip"))
        );
        assert_eq!(
            figures.recent_calls[1].outcome,
            Err(DenyReason::RateLimited)
        );
        assert_eq!(figures.recent_calls[1].client_ip, None);
        assert_eq!(figures.daily[0].date.to_string(), "2023-11-14");
        let last_use = figures.last_use.expect("last use");
        assert_eq!(last_use.client_ip, None);
        assert_eq!(ip_text(None), "");
        assert_eq!(ip_text(Some("::1".parse().expect("ip"))), "::1");
    }

    #[test]
    fn a_negative_count_an_unknown_reason_or_a_bad_ip_is_corrupt() {
        let with = |totals, recent| figures(totals, 0, Vec::new(), recent, Vec::new(), None);
        assert_eq!(
            corrupt_column(with((-1, 0, 0, 0, 0), Vec::new())),
            "corrupt row: usage_days"
        );
        assert_eq!(
            corrupt_column(with(
                (0, 0, 0, 0, 0),
                vec![recent_call("no_such_reason", "")]
            )),
            "corrupt row: usage_recent_calls.reason"
        );
        assert_eq!(
            corrupt_column(with(
                (0, 0, 0, 0, 0),
                vec![recent_call("allowed", "not-an-ip")]
            )),
            "corrupt row: usage_recent_calls.client_ip"
        );
    }
}

/// The columns of `console_sessions` a session is read from, in [`SessionRow`]'s order.
macro_rules! session_columns {
    () => {
        "id, kind, admin_key_hash, actor, tenant, principal_id, return_url, created_at, \
         last_seen_at, expires_at, revoked_at"
    };
}
pub(super) use session_columns;

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: String,
    kind: String,
    admin_key_hash: Option<Vec<u8>>,
    actor: String,
    tenant: String,
    principal_id: String,
    return_url: String,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl SessionRow {
    pub(super) fn into_session(self) -> Result<Session, StoreError> {
        let kind = match self.kind.as_str() {
            "console" => SessionKind::Console {
                admin_key_hash: self
                    .admin_key_hash
                    .as_deref()
                    .and_then(SecretHash::from_slice)
                    .ok_or_else(|| corrupt("console_sessions.admin_key_hash"))?,
            },
            "portal" => SessionKind::Portal {
                tenant: parse_field(&self.tenant, Tenant::parse, "console_sessions.tenant")?,
                principal_id: parse_field(
                    &self.principal_id,
                    PrincipalId::parse,
                    "console_sessions.principal_id",
                )?,
                return_url: self.return_url,
            },
            _ => return Err(corrupt("console_sessions.kind")),
        };
        Ok(Session {
            id: SessionId::from_stored(self.id),
            kind,
            actor: self.actor,
            created_at: instant(self.created_at)?,
            last_seen_at: instant(self.last_seen_at)?,
            expires_at: instant(self.expires_at)?,
            revoked_at: optional_instant(self.revoked_at)?,
        })
    }
}

/// A session's kind as its columns hold it: kind, admin key hash, tenant, principal, return URL.
pub(super) fn session_kind_columns(
    kind: &SessionKind,
) -> (&'static str, Option<&[u8]>, &str, &str, &str) {
    match kind {
        SessionKind::Console { admin_key_hash } => {
            ("console", Some(admin_key_hash.0.as_slice()), "", "", "")
        }
        SessionKind::Portal {
            tenant,
            principal_id,
            return_url,
        } => (
            "portal",
            None,
            tenant.as_str(),
            principal_id.as_str(),
            return_url.as_str(),
        ),
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct BrandingRow {
    tenant: String,
    product_name: String,
    logo_url: String,
    accent_color: String,
    updated_at: i64,
}

impl BrandingRow {
    pub(super) fn into_branding(self) -> Result<PortalBranding, StoreError> {
        Ok(PortalBranding {
            tenant: parse_field(&self.tenant, Tenant::parse, "portal_branding.tenant")?,
            product_name: self.product_name,
            logo_url: self.logo_url,
            accent_color: self.accent_color,
            updated_at: Some(instant(self.updated_at)?),
        })
    }
}
