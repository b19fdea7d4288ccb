//! The parts of a credential that many tokens share — their effective permissions, their role
//! names, their IP allowlist, their metadata — held once per distinct value rather than once per cached token.
//!
//! Platforms issue tokens from a handful of templates (the same scopes, the same office
//! networks), so of a million cached tokens most share these parts with thousands of others;
//! held once, they cost a pointer per token (BENCHMARKS.md, "Memory per cached token"). A part
//! is shared only when it is equal, so nothing about a decision changes.
//!
//! Each pool holds at most [`MAX_SHARED`] distinct values. A full pool first drops the values no
//! cached credential uses any more and, if still more than half full, forgets the rest: cached
//! credentials keep their parts (they hold their own reference), and new loads start sharing
//! again. So a flood of tokens that share nothing costs at most the bound, never more.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::domain::decision::Credential;
use crate::domain::fields::RoleName;
use crate::domain::metadata::Metadata;
use crate::domain::network::IpAllowlist;
use crate::domain::permission::Grant;

/// Most distinct values each pool holds.
pub const MAX_SHARED: usize = 65_536;

/// One pool of shared values.
struct Pool<T: ?Sized> {
    values: Mutex<HashSet<Arc<T>>>,
}

impl<T: ?Sized + Hash + Eq> Pool<T> {
    fn new() -> Self {
        Self {
            values: Mutex::new(HashSet::new()),
        }
    }

    /// The pool's value equal to `value`, or `value`, now in the pool.
    fn share(&self, value: Arc<T>) -> Arc<T> {
        // A set of Arcs is valid whatever panicked while it was held.
        let mut values = self
            .values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(shared) = values.get(&value) {
            return shared.clone();
        }
        if values.len() >= MAX_SHARED {
            values.retain(|held| Arc::strong_count(held) > 1);
            if values.len() >= MAX_SHARED / 2 {
                values.clear();
            }
        }
        values.insert(value.clone());
        value
    }

    fn len(&self) -> usize {
        self.values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The pools of one Check path (one per `Authorizer`).
pub struct Interner {
    grants: Pool<[Grant]>,
    roles: Pool<[RoleName]>,
    networks: Pool<IpAllowlist>,
    metadata: Pool<Metadata>,
}

impl Default for Interner {
    fn default() -> Self {
        Self::new()
    }
}

impl Interner {
    pub fn new() -> Self {
        Self {
            grants: Pool::new(),
            roles: Pool::new(),
            networks: Pool::new(),
            metadata: Pool::new(),
        }
    }

    /// `credential` with its shareable parts replaced by equal shared ones. Called once per
    /// store load (a cache miss), never per Check.
    pub fn share(&self, mut credential: Credential) -> Credential {
        credential.effective = self.grants.share(credential.effective);
        credential.roles = self.roles.share(credential.roles);
        credential.allowed_ips = self.networks.share(credential.allowed_ips);
        credential.metadata = credential
            .metadata
            .map(|metadata| self.metadata.share(metadata));
        credential
    }

    /// Distinct values held: (effective permission sets, role lists, allowlists).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.grants.len(), self.roles.len(), self.networks.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    fn credential_with(grants: &[&str]) -> Credential {
        let effective: Vec<Grant> = grants
            .iter()
            .map(|grant| Grant::parse(grant).expect("grant"))
            .collect();
        Credential {
            effective: effective.into(),
            ..fixtures::credential()
        }
    }

    #[test]
    fn equal_parts_of_two_credentials_are_held_once() {
        let interner = Interner::new();
        let first = interner.share(credential_with(&["orders:read", "orders:write"]));
        let second = interner.share(credential_with(&["orders:read", "orders:write"]));
        assert!(Arc::ptr_eq(&first.effective, &second.effective));
        assert!(Arc::ptr_eq(&first.allowed_ips, &second.allowed_ips));
        assert!(Arc::ptr_eq(&first.roles, &second.roles));
        let other = interner.share(credential_with(&["orders:read"]));
        assert!(!Arc::ptr_eq(&first.effective, &other.effective));
        assert_eq!(
            &*other.effective,
            &*credential_with(&["orders:read"]).effective
        );
        assert_eq!(interner.sizes(), (2, 1, 1));
    }

    #[test]
    fn equal_metadata_of_two_credentials_is_held_once_and_none_costs_one_word() {
        let with_metadata = || {
            let metadata =
                crate::domain::metadata::Metadata::parse([("plan", "pro")]).expect("metadata");
            Credential {
                metadata: Some(Arc::new(metadata)),
                ..fixtures::credential()
            }
        };
        let interner = Interner::new();
        let first = interner.share(with_metadata());
        let second = interner.share(with_metadata());
        let (Some(first), Some(second)) = (&first.metadata, &second.metadata) else {
            panic!("metadata kept");
        };
        assert!(Arc::ptr_eq(first, second));
        assert!(interner.share(fixtures::credential()).metadata.is_none());
        assert_eq!(
            size_of::<Option<Arc<crate::domain::metadata::Metadata>>>(),
            size_of::<usize>()
        );
    }

    #[test]
    fn a_full_pool_forgets_what_no_credential_uses_and_stays_bounded() {
        let interner = Interner::new();
        let kept = interner.share(credential_with(&["kept:read"]));
        for index in 0..MAX_SHARED + 10 {
            // Dropped at once: nothing but the pool holds these.
            interner.share(credential_with(&[&format!("r{index}:read")]));
        }
        let (grant_sets, _, _) = interner.sizes();
        assert!(grant_sets <= MAX_SHARED, "{grant_sets}");
        let again = interner.share(credential_with(&["kept:read"]));
        assert!(
            Arc::ptr_eq(&kept.effective, &again.effective),
            "a used value stays shared"
        );
    }
}
