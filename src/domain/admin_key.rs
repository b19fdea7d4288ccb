//! Admin keys as managed credentials: who may call TokenAdminService, with which role, in which
//! tenants. Pure rules; the store keeps the keys (hashes only) and `grpc::auth` presents them.
//!
//! A managed key's secret is `tsa_<30 base62><6 base62 CRC32>` (the token format of
//! `domain::token` under its own prefix), so a mistyped key is refused before any lookup and a
//! secret scanner can tell an admin key from an API token (`tsk_…`).

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::domain::fields::{self, InvalidField, Tenant, TokenName};
use crate::domain::token::{self, TokenPrefix};

/// The prefix of every managed admin key's secret, distinct from the default token prefix
/// (`tsk`). Even a deployment that gives its tokens this prefix cannot use one as the other:
/// tokens and admin keys live in different tables, looked up by different code.
pub const ADMIN_KEY_PREFIX: &str = "tsa";
/// Most tenants one admin key may be scoped to: bounds the row and every check against it.
pub const MAX_KEY_TENANTS: usize = 64;
/// `created_by` of the key the server made on its first start.
pub const BOOTSTRAP_CREATOR: &str = "bootstrap";

/// The admin-key prefix as a token prefix, for generating and parsing secrets.
pub fn prefix() -> TokenPrefix {
    TokenPrefix::parse(ADMIN_KEY_PREFIX).unwrap_or_default()
}

/// What a key may do; each role holds every right of the ones before it (`admin::rights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminRole {
    /// Reads only: get, list, usage, audit.
    Viewer,
    /// Also tokens, principals and roles in its tenants.
    TokenManager,
    /// Also API status and admin keys no wider than its own.
    Owner,
}

impl AdminRole {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::TokenManager => "token_manager",
            Self::Owner => "owner",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Viewer, Self::TokenManager, Self::Owner]
            .into_iter()
            .find(|role| role.as_str() == raw)
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenants a key may act in: every tenant, or a non-empty set of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(BTreeSet<Tenant>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidScope {
    #[error("at most {MAX_KEY_TENANTS} tenants")]
    TooMany,
    #[error("entry {0}: {1}")]
    Tenant(usize, InvalidField),
}

impl TenantScope {
    /// Tenant names as given; empty means every tenant. An empty string names no tenant here
    /// (it would silently mean the default one), so it is refused like any bad name.
    pub fn parse(raw: &[String]) -> Result<Self, InvalidScope> {
        if raw.is_empty() {
            return Ok(Self::All);
        }
        if raw.len() > MAX_KEY_TENANTS {
            return Err(InvalidScope::TooMany);
        }
        let mut tenants = BTreeSet::new();
        for (index, name) in raw.iter().enumerate() {
            if name.is_empty() {
                return Err(InvalidScope::Tenant(index, InvalidField::Empty));
            }
            let tenant = Tenant::parse(name).map_err(|error| InvalidScope::Tenant(index, error))?;
            tenants.insert(tenant);
        }
        Ok(Self::Only(tenants))
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Self::All)
    }

    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(tenants) => tenants.iter().any(|known| known.as_str() == tenant),
        }
    }

    /// Whether every tenant of `other` is one of these.
    pub fn covers(&self, other: &TenantScope) -> bool {
        match (self, other) {
            (Self::All, _) => true,
            (Self::Only(_), Self::All) => false,
            (Self::Only(mine), Self::Only(theirs)) => theirs.is_subset(mine),
        }
    }

    /// The tenants by name, sorted; empty for every tenant (the API's and the store's form).
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::All => Vec::new(),
            Self::Only(tenants) => tenants.iter().map(ToString::to_string).collect(),
        }
    }

    /// The tenants by name, or None for every tenant.
    pub fn tenants(&self) -> Option<&BTreeSet<Tenant>> {
        match self {
            Self::All => None,
            Self::Only(tenants) => Some(tenants),
        }
    }
}

impl fmt::Display for TenantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("every tenant"),
            Self::Only(_) => f.write_str(&self.names().join(", ")),
        }
    }
}

/// `adk_` followed by a ULID, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdminKeyId(String);

impl AdminKeyId {
    pub fn generate() -> Self {
        Self(format!("adk_{}", ulid::Ulid::new()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        fields::parse_prefixed_ulid(raw, "adk_", InvalidField::NotAnAdminKeyId).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AdminKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored admin key, as the admin API shows it: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub id: AdminKeyId,
    pub name: TokenName,
    pub tenants: TenantScope,
    pub role: AdminRole,
    /// `tsa_…` and the last four characters.
    pub secret_hint: String,
    pub created_at: DateTime<Utc>,
    /// The key id of the caller that created it (`bootstrap` for the first start's key).
    pub created_by: String,
    /// None: the key does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Made by the first start; refused while `TESSERA_ADMIN_KEYS` is set.
    pub bootstrap: bool,
}

impl AdminKey {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// Whether `presented` has the shape of a managed admin key (prefix, length, checksum): only
/// such a key is looked up in the store.
pub fn is_well_formed(presented: &str) -> bool {
    token::parse(presented, &prefix()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn no_tenants_means_every_tenant_and_names_are_sorted_and_deduplicated() {
        assert_eq!(TenantScope::parse(&[]), Ok(TenantScope::All));
        let scope = TenantScope::parse(&names(&["globex", "acme", "acme"])).expect("valid");
        assert_eq!(scope.names(), names(&["acme", "globex"]));
        assert!(scope.contains("acme"));
        assert!(!scope.contains("initech"));
        assert!(TenantScope::All.contains("initech"));
    }

    #[test]
    fn a_scope_refuses_the_wildcard_an_empty_name_and_too_many_tenants() {
        assert_eq!(
            TenantScope::parse(&names(&["acme", "*"])),
            Err(InvalidScope::Tenant(1, InvalidField::WildcardTenant))
        );
        assert_eq!(
            TenantScope::parse(&names(&[""])),
            Err(InvalidScope::Tenant(0, InvalidField::Empty))
        );
        let many: Vec<String> = (0..=MAX_KEY_TENANTS).map(|n| format!("t{n}")).collect();
        assert_eq!(TenantScope::parse(&many), Err(InvalidScope::TooMany));
    }

    #[test]
    fn only_every_tenant_covers_every_tenant_and_a_subset_is_covered() {
        let acme = TenantScope::parse(&names(&["acme"])).expect("valid");
        let both = TenantScope::parse(&names(&["acme", "globex"])).expect("valid");
        assert!(TenantScope::All.covers(&both));
        assert!(both.covers(&acme));
        assert!(!acme.covers(&both));
        assert!(!both.covers(&TenantScope::All));
    }

    #[test]
    fn roles_round_trip_their_stored_names_and_are_ordered_by_power() {
        for role in [AdminRole::Viewer, AdminRole::TokenManager, AdminRole::Owner] {
            assert_eq!(AdminRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(AdminRole::parse("root"), None);
        assert!(AdminRole::Viewer < AdminRole::TokenManager);
        assert!(AdminRole::TokenManager < AdminRole::Owner);
    }

    #[test]
    fn admin_key_ids_parse_and_tokens_ids_do_not() {
        let id = AdminKeyId::generate();
        assert_eq!(AdminKeyId::parse(id.as_str()), Ok(id));
        assert_eq!(
            AdminKeyId::parse("tok_01HZY0000000000000000000000"),
            Err(InvalidField::NotAnAdminKeyId)
        );
    }

    #[test]
    fn a_generated_admin_key_is_well_formed_and_an_api_token_is_not() {
        let key = token::generate(&prefix());
        let secret = secrecy::ExposeSecret::expose_secret(&key.secret).to_owned();
        assert!(secret.starts_with("tsa_"));
        assert!(is_well_formed(&secret));
        let api_token = token::generate(&TokenPrefix::default());
        assert!(!is_well_formed(secrecy::ExposeSecret::expose_secret(
            &api_token.secret
        )));
        assert!(!is_well_formed("tsa_not-a-key"));
    }
}
