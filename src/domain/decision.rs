//! The Check decision as one pure function over a credential and a request.
//!
//! Order (docs/api.md, "The Check decision"): API offline → token missing/malformed/unknown/
//! revoked (or rotated out)/suspended/expired, tenant mismatch, owner disabled → tenant policy
//! (when enforced) → IP allowlist → signature and timestamp → permission →
//! rate limit → allowed. The first three token checks and the API status are decided before a
//! credential exists (by the authorizer); rate limiting is stateful and follows `evaluate`. The
//! replay guard is state too, but its place is inside the order (after the signature's tag and
//! window, before the permission), so the order is two pure halves around it:
//! [`check_credential`] hands back the verified signature for the guard, [`check_permission`]
//! follows. `evaluate` is the three in order with a synchronous guard; the authorizer calls
//! the halves itself when the guard is the fleet's (asynchronous, on Redis).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::fields::{PrincipalId, RoleName, Tenant, TokenId};
use super::metadata::Metadata;
use super::model::{CredentialRecord, SecretMatch};
use super::network::IpAllowlist;
use super::permission::{self, Grant, PermissionQuery};
use super::policy::PolicyHold;
use super::signature::{
    self, FreshSignature, PresentedSignature, ReplayGuard, SignatureRejection, Verifier,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    TokenMissing,
    TokenMalformed,
    TokenUnknown,
    TokenExpired,
    TokenRevoked,
    TenantMismatch,
    OwnerDisabled,
    IpNotAllowed,
    SignatureRequired,
    SignatureInvalid,
    TimestampOutOfWindow,
    Replayed,
    PermissionDenied,
    RateLimited,
    ApiOffline,
    StoreUnavailable,
    /// A gateway request whose path cannot be resolved to one path unambiguously
    /// ([`super::http::PathError`]); decided before any token lookup.
    PathInvalid,
    /// The token breaks its tenant's token policy, which is enforced on existing tokens.
    PolicyViolation,
    /// The token is suspended until it is resumed; checked after revocation, before expiry.
    TokenSuspended,
    /// Fewer credits are left than the Check costs (`super::credits`); nothing was spent.
    CreditsExhausted,
}

impl DenyReason {
    /// Every reason, in declaration order (`reason as usize` is its position).
    pub const ALL: [DenyReason; 20] = [
        Self::TokenMissing,
        Self::TokenMalformed,
        Self::TokenUnknown,
        Self::TokenExpired,
        Self::TokenRevoked,
        Self::TenantMismatch,
        Self::OwnerDisabled,
        Self::IpNotAllowed,
        Self::SignatureRequired,
        Self::SignatureInvalid,
        Self::TimestampOutOfWindow,
        Self::Replayed,
        Self::PermissionDenied,
        Self::RateLimited,
        Self::ApiOffline,
        Self::StoreUnavailable,
        Self::PathInvalid,
        Self::PolicyViolation,
        Self::TokenSuspended,
        Self::CreditsExhausted,
    ];

    /// What an HTTP API in front of Tessera should answer.
    pub fn http_status(self) -> u16 {
        match self {
            Self::TokenMissing
            | Self::TokenMalformed
            | Self::TokenUnknown
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::TokenSuspended
            | Self::TenantMismatch
            | Self::OwnerDisabled
            | Self::SignatureRequired
            | Self::SignatureInvalid
            | Self::TimestampOutOfWindow
            | Self::Replayed => 401,
            Self::IpNotAllowed | Self::PermissionDenied | Self::PolicyViolation => 403,
            Self::RateLimited | Self::CreditsExhausted => 429,
            Self::ApiOffline | Self::StoreUnavailable => 503,
            Self::PathInvalid => 400,
        }
    }

    /// Safe to show to the end client: says what is wrong without helping an attacker.
    pub fn message(self) -> &'static str {
        match self {
            Self::TokenMissing => "an API token is required",
            Self::TokenMalformed => "the API token is malformed",
            Self::TokenUnknown => "the API token is not valid",
            Self::TokenExpired => "the API token has expired",
            Self::TokenRevoked => "the API token has been revoked",
            Self::TenantMismatch => "the API token is not valid for this tenant",
            Self::OwnerDisabled => "the API token's owner is disabled",
            Self::IpNotAllowed => "the API token may not be used from this address",
            Self::SignatureRequired => "this API token requires a signed request",
            Self::SignatureInvalid => "the request signature is not valid",
            Self::TimestampOutOfWindow => "the request timestamp is outside the accepted window",
            Self::Replayed => "the request signature was already used",
            Self::PermissionDenied => "the API token lacks the required permission",
            Self::RateLimited => "the API token's rate limit is exceeded",
            Self::ApiOffline => "the API is offline",
            Self::StoreUnavailable => "authorization is temporarily unavailable",
            Self::PathInvalid => "the request path cannot be resolved unambiguously",
            Self::PolicyViolation => "the API token breaks its tenant's token policy",
            Self::TokenSuspended => "the API token is suspended",
            Self::CreditsExhausted => "the API token has too few credits left",
        }
    }

    /// Stable snake_case name, for logs, metrics and JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::TokenUnknown => "token_unknown",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::TenantMismatch => "tenant_mismatch",
            Self::OwnerDisabled => "owner_disabled",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::SignatureRequired => "signature_required",
            Self::SignatureInvalid => "signature_invalid",
            Self::TimestampOutOfWindow => "timestamp_out_of_window",
            Self::Replayed => "replayed",
            Self::PermissionDenied => "permission_denied",
            Self::RateLimited => "rate_limited",
            Self::ApiOffline => "api_offline",
            Self::StoreUnavailable => "store_unavailable",
            Self::PathInvalid => "path_invalid",
            Self::PolicyViolation => "policy_violation",
            Self::TokenSuspended => "token_suspended",
            Self::CreditsExhausted => "credits_exhausted",
        }
    }
}

/// A Check request after parsing at the edge.
#[derive(Debug, Clone)]
pub struct CheckInput {
    pub tenant: Tenant,
    /// What the request needs of the token's permissions; empty: authenticate only.
    pub permissions: PermissionQuery,
    pub client_ip: Option<IpAddr>,
    /// The request's signature, if it carries one; required for tokens with
    /// `require_signature`, ignored for others.
    pub signature: Option<PresentedSignature>,
    pub now: DateTime<Utc>,
    /// Label for usage statistics, e.g. `GET /api/v1/orders`; empty when not given.
    pub endpoint: String,
    /// The end client's User-Agent, for usage statistics; empty when not given.
    pub user_agent: String,
    /// Credits an allowed Check spends of a token with credits (`CheckRequest.cost`, default 1,
    /// at most `credits::MAX_COST`); ignored for tokens without.
    pub cost: u32,
}

/// What Check needs of a token, computed once when the record is read (and, later, cached):
/// role grants expanded, CIDRs parsed, the owner's ceiling attached.
#[derive(Debug, Clone)]
pub struct Credential {
    pub token_id: TokenId,
    pub tenant: Tenant,
    pub owner_id: PrincipalId,
    pub expires_at: DateTime<Utc>,
    /// When the secret was last rotated: usage recorded under an earlier rotation is dropped,
    /// because rotation clears a token's usage history.
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// Suspended until resumed: every Check is denied, as for a revoked token, but reversibly.
    pub suspended: bool,
    pub secret_match: SecretMatch,
    /// Shared with every cached token of the same allowlist (`authz::intern`).
    pub allowed_ips: Arc<IpAllowlist>,
    pub require_signature: bool,
    /// The token's signing key as a keyed HMAC, opened once when the entry is built; None when
    /// the token has no key or the server cannot open it (then no signature verifies). Boxed:
    /// keyed HMAC state is 150 bytes that most cached tokens would carry empty.
    pub verifier: Option<Box<Verifier>>,
    /// The token's role names, so a role change can find the entries it affects. Shared like
    /// `allowed_ips`.
    pub roles: Arc<[RoleName]>,
    /// False when the owner is disabled or gone: every Check of the token is then denied.
    pub owner_enabled: bool,
    /// (own grants ∪ role grants) ∩ the owner's permissions, computed once here. A permission
    /// matches one of these exactly when it matches a grant and the owner's ceiling, so this one
    /// list both decides and is what an allowed Check reports; it also keeps a cached entry small.
    /// Shared with every cached token of the same effective permissions (`authz::intern`).
    pub effective: Arc<[Grant]>,
    pub rate_limit_per_minute: u32,
    pub owner_rate_limit_per_minute: Option<u32>,
    /// What an enforced tenant policy that the token breaks (or may break) asks of Check; None
    /// for nearly every token (no policy, not enforced, or none of its rules can be broken).
    pub policy_hold: Option<Box<PolicyHold>>,
    /// The token's metadata, returned by an allowed Check; None when it has none, so a token
    /// without metadata pays one word for it. Shared like `allowed_ips`.
    pub metadata: Option<Arc<Metadata>>,
    /// Whether the token has credits: an allowed Check then spends its cost of them, on the
    /// store (the balance itself is never cached).
    pub metered: bool,
}

impl Credential {
    pub fn from_record(record: &CredentialRecord) -> Self {
        let token = &record.token;
        let mut grants = token.permissions.clone();
        for role in &record.roles {
            grants.extend(role.permissions.iter().cloned());
        }
        grants.sort();
        grants.dedup();
        let enabled_owner = record.owner.as_ref().filter(|owner| !owner.disabled);
        let effective: Arc<[Grant]> = match enabled_owner {
            Some(owner) => permission::intersect(&grants, &owner.permissions).into(),
            None => Arc::from([]),
        };
        let roles: Arc<[RoleName]> = token.roles.as_slice().into();
        Self {
            token_id: token.id.clone(),
            tenant: token.tenant.clone(),
            owner_id: token.owner_id.clone(),
            expires_at: token.expires_at,
            rotated_at: token.rotated_at,
            revoked: token.revoked_at.is_some(),
            suspended: token.suspension.is_some(),
            secret_match: record.secret_match,
            allowed_ips: Arc::new(token.allowed_ips.clone()),
            require_signature: token.require_signature,
            verifier: None,
            roles,
            owner_enabled: enabled_owner.is_some(),
            effective,
            rate_limit_per_minute: token.rate_limit_per_minute,
            owner_rate_limit_per_minute: record
                .owner
                .as_ref()
                .and_then(|o| o.rate_limit_per_minute),
            policy_hold: record.policy.as_ref().and_then(|policy| policy.hold(token)),
            metadata: (!token.metadata.is_empty()).then(|| Arc::new(token.metadata.clone())),
            metered: token.credits.is_some(),
        }
    }

    /// The same credential, verifying signatures with `verifier` (the opened signing key).
    pub fn with_verifier(mut self, verifier: Option<Verifier>) -> Self {
        self.verifier = verifier.map(Box::new);
        self
    }

    /// Whether this secret is one that was rotated away and whose grace period has passed:
    /// someone is still holding an old secret.
    pub fn is_retired_secret(&self, now: DateTime<Utc>) -> bool {
        matches!(self.secret_match, SecretMatch::Retired { grace_until } if grace_until <= now)
    }
}

/// The ordered checks of Check for an identified token; `replay_guard` records the signatures
/// that pass, so that none passes twice.
pub fn evaluate(
    credential: &Credential,
    input: &CheckInput,
    replay_guard: &impl ReplayGuard,
) -> Result<(), DenyReason> {
    if let Some(fresh) = check_credential(credential, input, replay_guard.window())?
        && !replay_guard.first_use(fresh.id, fresh.remember_for)
    {
        return Err(DenyReason::Replayed);
    }
    check_permission(credential, input)
}

/// The checks before the replay guard: the token's state, tenant, owner, IP allowlist, and the
/// signature's tag and timestamp (within `window`). Ok carries the verified signature, if the
/// token signs, for the replay guard to record.
pub fn check_credential(
    credential: &Credential,
    input: &CheckInput,
    window: Duration,
) -> Result<Option<FreshSignature>, DenyReason> {
    if credential.revoked || credential.is_retired_secret(input.now) {
        return Err(DenyReason::TokenRevoked);
    }
    if credential.suspended {
        return Err(DenyReason::TokenSuspended);
    }
    if credential.expires_at <= input.now {
        return Err(DenyReason::TokenExpired);
    }
    if credential.tenant != input.tenant {
        return Err(DenyReason::TenantMismatch);
    }
    if !credential.owner_enabled {
        return Err(DenyReason::OwnerDisabled);
    }
    if credential
        .policy_hold
        .as_ref()
        .is_some_and(|hold| hold.denies(input.now))
    {
        return Err(DenyReason::PolicyViolation);
    }
    if !credential.allowed_ips.allows(input.client_ip) {
        return Err(DenyReason::IpNotAllowed);
    }
    if !credential.require_signature {
        return Ok(None);
    }
    let Some(presented) = &input.signature else {
        return Err(DenyReason::SignatureRequired);
    };
    signature::verify_tag_and_window(credential.verifier.as_deref(), presented, input.now, window)
        .map(Some)
        .map_err(|rejection| match rejection {
            SignatureRejection::Invalid => DenyReason::SignatureInvalid,
            SignatureRejection::OutOfWindow => DenyReason::TimestampOutOfWindow,
            SignatureRejection::Replayed => DenyReason::Replayed,
        })
}

/// The check after the replay guard: what the request needs of the permissions is granted.
pub fn check_permission(credential: &Credential, input: &CheckInput) -> Result<(), DenyReason> {
    if input.permissions.is_granted_by(&credential.effective) {
        Ok(())
    } else {
        Err(DenyReason::PermissionDenied)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;

    use chrono::Duration;

    use super::*;
    use crate::domain::fixtures;
    use crate::domain::permission::Permission;
    use crate::domain::signature::{DEFAULT_WINDOW, SignatureId, SigningKey, sign};

    /// Remembers every signature for the whole test.
    #[derive(Default)]
    struct MemoryGuard(RefCell<HashSet<SignatureId>>);

    impl ReplayGuard for MemoryGuard {
        fn window(&self) -> std::time::Duration {
            DEFAULT_WINDOW
        }

        fn first_use(&self, signature: SignatureId, _: std::time::Duration) -> bool {
            self.0.borrow_mut().insert(signature)
        }
    }

    /// `evaluate` with a fresh guard, for the checks that do not involve replays.
    fn evaluate(credential: &Credential, input: &CheckInput) -> Result<(), DenyReason> {
        super::evaluate(credential, input, &MemoryGuard::default())
    }

    fn grants(raw: &[&str]) -> Vec<Grant> {
        raw.iter()
            .map(|g| Grant::parse(g).expect("grant"))
            .collect()
    }

    fn credential() -> Credential {
        Credential {
            // orders:* granted, within an owner holding orders:read and products:read.
            effective: grants(&["orders:read"]).into(),
            ..fixtures::credential()
        }
    }

    fn input(permission: &str) -> CheckInput {
        CheckInput {
            tenant: Tenant::parse("acme").expect("tenant"),
            permissions: if permission.is_empty() {
                PermissionQuery::default()
            } else {
                PermissionQuery::one(Permission::parse(permission).expect("perm"))
            },
            client_ip: Some("192.0.2.1".parse().expect("ip")),
            signature: None,
            now: Utc::now(),
            endpoint: String::new(),
            user_agent: String::new(),
            cost: 1,
        }
    }

    #[test]
    fn all_lists_every_reason_at_its_own_position() {
        for (position, reason) in DenyReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, position, "{reason:?}");
        }
    }

    #[test]
    fn a_granted_permission_within_the_owner_is_allowed() {
        assert_eq!(evaluate(&credential(), &input("orders:read")), Ok(()));
    }

    #[test]
    fn an_empty_permission_only_authenticates() {
        assert_eq!(evaluate(&credential(), &input("")), Ok(()));
    }

    #[test]
    fn a_granted_permission_the_owner_lost_is_denied() {
        assert_eq!(
            evaluate(&credential(), &input("orders:write")),
            Err(DenyReason::PermissionDenied)
        );
    }

    #[test]
    fn a_permission_the_owner_has_but_the_token_lacks_is_denied() {
        assert_eq!(
            evaluate(&credential(), &input("products:read")),
            Err(DenyReason::PermissionDenied)
        );
    }

    #[test]
    fn revocation_outranks_expiry() {
        let mut revoked = credential();
        revoked.revoked = true;
        revoked.expires_at = Utc::now() - Duration::days(1);
        assert_eq!(
            evaluate(&revoked, &input("orders:read")),
            Err(DenyReason::TokenRevoked)
        );
    }

    #[test]
    fn an_expired_token_is_denied() {
        let mut expired = credential();
        expired.expires_at = Utc::now() - Duration::seconds(1);
        assert_eq!(
            evaluate(&expired, &input("orders:read")),
            Err(DenyReason::TokenExpired)
        );
    }

    #[test]
    fn a_rotated_out_secret_is_denied_as_revoked_after_its_grace_period() {
        let mut old = credential();
        old.secret_match = SecretMatch::Retired {
            grace_until: Utc::now() - Duration::seconds(1),
        };
        assert_eq!(
            evaluate(&old, &input("orders:read")),
            Err(DenyReason::TokenRevoked)
        );
        old.secret_match = SecretMatch::Retired {
            grace_until: Utc::now() + Duration::minutes(5),
        };
        assert_eq!(evaluate(&old, &input("orders:read")), Ok(()));
    }

    #[test]
    fn a_token_of_another_tenant_is_a_tenant_mismatch() {
        let mut request = input("orders:read");
        request.tenant = Tenant::parse("globex").expect("tenant");
        assert_eq!(
            evaluate(&credential(), &request),
            Err(DenyReason::TenantMismatch)
        );
    }

    #[test]
    fn a_disabled_owner_denies_before_the_ip_check() {
        let mut orphan = credential();
        orphan.owner_enabled = false;
        orphan.allowed_ips =
            Arc::new(IpAllowlist::parse(&["10.0.0.0/8".to_owned()]).expect("cidr"));
        assert_eq!(
            evaluate(&orphan, &input("orders:read")),
            Err(DenyReason::OwnerDisabled)
        );
    }

    #[test]
    fn an_ip_outside_the_allowlist_is_denied_before_the_permission() {
        let mut fenced = credential();
        fenced.allowed_ips =
            Arc::new(IpAllowlist::parse(&["10.0.0.0/8".to_owned()]).expect("cidr"));
        assert_eq!(
            evaluate(&fenced, &input("billing:read")),
            Err(DenyReason::IpNotAllowed)
        );
    }

    #[test]
    fn a_token_that_requires_a_signature_is_denied_without_one() {
        let mut signed = credential();
        signed.require_signature = true;
        assert_eq!(
            evaluate(&signed, &input("orders:read")),
            Err(DenyReason::SignatureRequired)
        );
    }

    fn signing(key: &SigningKey) -> Credential {
        let mut signed = credential();
        signed.require_signature = true;
        signed.with_verifier(Some(key.verifier()))
    }

    fn signed_input(key: &SigningKey, permission: &str, timestamp: i64) -> CheckInput {
        let mut request = input(permission);
        let payload = b"GET /api/v1/orders".to_vec();
        let text = sign(key, timestamp, &payload);
        request.signature = Some(PresentedSignature::parse(timestamp, &text, payload));
        request
    }

    #[test]
    fn a_correctly_signed_fresh_request_is_allowed() {
        let key = SigningKey::generate();
        let request = signed_input(&key, "orders:read", Utc::now().timestamp());
        assert_eq!(evaluate(&signing(&key), &request), Ok(()));
    }

    #[test]
    fn a_signature_made_with_another_key_is_invalid() {
        let key = SigningKey::generate();
        let request = signed_input(
            &SigningKey::generate(),
            "orders:read",
            Utc::now().timestamp(),
        );
        assert_eq!(
            evaluate(&signing(&key), &request),
            Err(DenyReason::SignatureInvalid)
        );
    }

    #[test]
    fn a_signing_token_whose_key_cannot_be_opened_accepts_no_signature() {
        let key = SigningKey::generate();
        let request = signed_input(&key, "orders:read", Utc::now().timestamp());
        let without_key = signing(&key).with_verifier(None);
        assert_eq!(
            evaluate(&without_key, &request),
            Err(DenyReason::SignatureInvalid)
        );
    }

    #[test]
    fn an_old_signature_is_out_of_window() {
        let key = SigningKey::generate();
        let request = signed_input(&key, "orders:read", Utc::now().timestamp() - 301);
        assert_eq!(
            evaluate(&signing(&key), &request),
            Err(DenyReason::TimestampOutOfWindow)
        );
    }

    #[test]
    fn the_same_signature_twice_is_a_replay() {
        let key = SigningKey::generate();
        let guard = MemoryGuard::default();
        let request = signed_input(&key, "orders:read", Utc::now().timestamp());
        assert_eq!(super::evaluate(&signing(&key), &request, &guard), Ok(()));
        assert_eq!(
            super::evaluate(&signing(&key), &request, &guard),
            Err(DenyReason::Replayed)
        );
    }

    #[test]
    fn the_signature_is_checked_after_the_ip_and_before_the_permission() {
        let key = SigningKey::generate();
        let mut fenced = signing(&key);
        fenced.allowed_ips =
            Arc::new(IpAllowlist::parse(&["10.0.0.0/8".to_owned()]).expect("cidr"));
        assert_eq!(
            evaluate(&fenced, &input("billing:read")),
            Err(DenyReason::IpNotAllowed)
        );
        assert_eq!(
            evaluate(&signing(&key), &input("billing:read")),
            Err(DenyReason::SignatureRequired)
        );
        let request = signed_input(&key, "billing:read", Utc::now().timestamp());
        assert_eq!(
            evaluate(&signing(&key), &request),
            Err(DenyReason::PermissionDenied)
        );
    }

    #[test]
    fn a_token_that_needs_no_signature_ignores_one() {
        let request = signed_input(&SigningKey::generate(), "orders:read", 0);
        assert_eq!(evaluate(&credential(), &request), Ok(()));
    }

    #[test]
    fn every_reason_maps_to_the_documented_http_status() {
        assert_eq!(DenyReason::TokenUnknown.http_status(), 401);
        assert_eq!(DenyReason::IpNotAllowed.http_status(), 403);
        assert_eq!(DenyReason::PermissionDenied.http_status(), 403);
        assert_eq!(DenyReason::RateLimited.http_status(), 429);
        assert_eq!(DenyReason::ApiOffline.http_status(), 503);
        assert_eq!(DenyReason::StoreUnavailable.http_status(), 503);
    }

    #[test]
    fn the_effective_permissions_are_capped_by_the_owner_when_the_record_is_read() {
        use crate::domain::model::{CredentialRecord, Principal, Token};
        let now = Utc::now();
        let owner = Principal {
            tenant: Tenant::default(),
            id: PrincipalId::parse("alice").expect("id"),
            permissions: grants(&["orders:read", "products:read"]),
            disabled: false,
            rate_limit_per_minute: None,
            created_at: now,
            updated_at: now,
        };
        let token = Token {
            tenant: Tenant::default(),
            owner_id: owner.id.clone(),
            permissions: grants(&["orders:*"]),
            expires_at: now,
            ..fixtures::token()
        };
        let record = CredentialRecord {
            token,
            secret_match: SecretMatch::Current,
            owner: Some(owner),
            roles: Vec::new(),
            signing_key: None,
            policy: None,
        };
        assert_eq!(
            Credential::from_record(&record)
                .effective
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["orders:read"]
        );
    }
}
