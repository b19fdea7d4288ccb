//! Test fixtures shared by the unit tests of several layers (`domain`, `authz`, `usage`): the
//! values every such test builds the same way, so each test states only what it exercises.

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::decision::Credential;
use super::fields::{Description, PrincipalId, Tenant, TokenId, TokenName};
use super::model::{SecretMatch, Token};
use super::network::IpAllowlist;

/// A live credential of `alice` in `acme`, presented with its current secret and expiring in a
/// day: no grants, roles, network rule, signing key or rate limit of its own. Set the fields a
/// test is about with struct update syntax.
pub(crate) fn credential() -> Credential {
    Credential {
        token_id: TokenId::generate(),
        tenant: Tenant::parse("acme").expect("tenant"),
        owner_id: PrincipalId::parse("alice").expect("owner"),
        expires_at: Utc::now() + Duration::days(1),
        rotated_at: None,
        revoked: false,
        suspended: false,
        secret_match: SecretMatch::Current,
        allowed_ips: Arc::new(IpAllowlist::default()),
        require_signature: false,
        verifier: None,
        roles: Arc::from([]),
        owner_enabled: true,
        effective: Arc::from([]),
        rate_limit_per_minute: 0,
        owner_rate_limit_per_minute: None,
        policy_hold: None,
        metadata: None,
        metered: false,
    }
}

/// A live token of `alice` in `acme`, created now and expiring in a day, with nothing of its own
/// (grants, roles, network rule, rate limit). Set the fields a test is about with struct update
/// syntax.
pub(crate) fn token() -> Token {
    let now = Utc::now();
    Token {
        id: TokenId::generate(),
        tenant: Tenant::parse("acme").expect("tenant"),
        owner_id: PrincipalId::parse("alice").expect("owner"),
        name: TokenName::parse("fixture").expect("name"),
        description: Description::parse("").expect("description"),
        permissions: Vec::new(),
        roles: Vec::new(),
        allowed_ips: IpAllowlist::default(),
        rate_limit_per_minute: 0,
        require_signature: false,
        secret_hint: "tsk_…0000".to_owned(),
        created_at: now,
        updated_at: now,
        expires_at: now + Duration::days(1),
        rotated_at: None,
        revoked_at: None,
        last_used_at: None,
        version: 1,
        imported: false,
        metadata: Default::default(),
        suspension: None,
        credits: None,
    }
}
