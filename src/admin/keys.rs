//! Admin keys as managed credentials: CreateAdminKey, GetAdminKey, ListAdminKeys and
//! RevokeAdminKey, and the bootstrap key of a fresh database. A key is never wider than the key
//! that created it, and a key the caller could not have created is NOT_FOUND to it.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{Actor, Admin, AdminError, Expiry, Page, Right, audit, resolve_expiry};
use crate::domain::admin_key::{
    self, AdminKey, AdminKeyId, AdminRole, BOOTSTRAP_CREATOR, TenantScope,
};
use crate::domain::fields::TokenName;
use crate::domain::model::AuditEvent;
use crate::domain::token;
use crate::store::NewAdminKey;
use crate::store::invalidation::Invalidation;

/// A CreateAdminKey as the admin layer takes it.
#[derive(Debug, Clone)]
pub struct CreateAdminKey {
    pub name: TokenName,
    pub tenants: TenantScope,
    pub role: AdminRole,
    /// None: the key does not expire.
    pub expiry: Option<Expiry>,
}

/// A created admin key and its secret, which exists only in this value and the response.
#[derive(Debug)]
pub struct IssuedAdminKey {
    pub key: AdminKey,
    pub secret: SecretString,
}

/// The tenant an admin-key event is filed under: the key's one tenant, else empty (the summary
/// names them), so a key scoped to one tenant reads its own keys' history.
fn audit_tenant(scope: &TenantScope) -> String {
    match scope.tenants() {
        Some(tenants) if tenants.len() == 1 => {
            tenants.first().map(ToString::to_string).unwrap_or_default()
        }
        _ => String::new(),
    }
}

fn describe(key: &AdminKey) -> String {
    let expires = key
        .expires_at
        .map(|at| at.to_rfc3339())
        .unwrap_or_else(|| "never".to_owned());
    format!(
        "admin key \"{}\" ({}, {}): role {}, tenants {}, expires {expires}",
        key.name, key.id, key.secret_hint, key.role, key.tenants
    )
}

fn event(actor: &Actor, action: &str, key: &AdminKey, summary: String) -> AuditEvent {
    let mut event = audit(actor, action, audit_tenant(&key.tenants), Utc::now());
    event.summary = summary;
    event
}

/// A new key, its secret and the row to store.
fn issue(
    name: TokenName,
    tenants: TenantScope,
    role: AdminRole,
    created_by: String,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    bootstrap: bool,
) -> (NewAdminKey, SecretString) {
    let prefix = admin_key::prefix();
    let generated = token::generate(&prefix);
    let key = AdminKey {
        id: AdminKeyId::generate(),
        name,
        tenants,
        role,
        secret_hint: generated.hint,
        created_at: now,
        created_by,
        expires_at,
        last_used_at: None,
        revoked_at: None,
        bootstrap,
    };
    let new = NewAdminKey {
        key,
        secret_hash: generated.hash,
    };
    (new, generated.secret)
}

/// The first start's key: an owner of every tenant that never expires, with its audit event.
pub fn bootstrap_key(now: DateTime<Utc>) -> (NewAdminKey, AuditEvent, SecretString) {
    // A constant that parses (unit-tested below).
    let name = TokenName::parse(BOOTSTRAP_CREATOR).expect("a valid key name");
    let (new, secret) = issue(
        name,
        TenantScope::All,
        AdminRole::Owner,
        BOOTSTRAP_CREATOR.to_owned(),
        now,
        None,
        true,
    );
    let actor = Actor::named("tessera");
    let summary = format!("created the bootstrap {}", describe(&new.key));
    let event = event(&actor, "admin_key.create", &new.key, summary);
    (new, event, secret)
}

impl Admin {
    pub async fn create_admin_key(
        &self,
        actor: &Actor,
        request: CreateAdminKey,
    ) -> Result<IssuedAdminKey, AdminError> {
        // No wider than the caller's own key: its tenants, its role.
        match request.tenants.tenants() {
            None => actor.require_all_tenants("an admin key for every tenant")?,
            Some(tenants) => {
                for tenant in tenants {
                    actor.require_tenant(tenant)?;
                }
            }
        }
        if request.role > actor.role {
            return Err(AdminError::MissingRight {
                right: Right::WriteAdminKeys,
            });
        }
        let now = Utc::now();
        let expires_at = request
            .expiry
            .map(|expiry| resolve_expiry(expiry, now))
            .transpose()?;
        let created_by = if actor.admin_key.is_empty() {
            actor.name.clone()
        } else {
            actor.admin_key.clone()
        };
        let (new, secret) = issue(
            request.name,
            request.tenants,
            request.role,
            created_by,
            now,
            expires_at,
            false,
        );
        let summary = format!("created {}", describe(&new.key));
        let audit = event(actor, "admin_key.create", &new.key, summary);
        let key = self.store.create_admin_key(&new, &audit).await?;
        tracing::info!(admin_key_id = %key.id, role = %key.role, "admin key created");
        Ok(IssuedAdminKey { key, secret })
    }

    /// An admin key within the actor's tenants (else NOT_FOUND, as if it did not exist).
    pub async fn get_admin_key(
        &self,
        actor: &Actor,
        id: &AdminKeyId,
    ) -> Result<AdminKey, AdminError> {
        let key = self.store.get_admin_key(id).await?;
        if !actor.tenants.covers(&key.tenants) {
            return Err(AdminError::NotFound("admin key"));
        }
        Ok(key)
    }

    /// The admin keys within the actor's tenants, oldest first, paged by id.
    pub async fn list_admin_keys(
        &self,
        actor: &Actor,
        include_revoked: bool,
        page_size: u32,
        after: Option<AdminKeyId>,
    ) -> Result<Page<AdminKey, AdminKeyId>, AdminError> {
        let page_size = page_size.clamp(1, super::MAX_PAGE_SIZE) as usize;
        let batch_size = page_size as u32 + 1;
        let mut visible = Vec::new();
        let mut cursor = after;
        // Keys outside the actor's tenants are skipped here, not in SQL (tenants are a JSON
        // list): read batches until the page, and one more key, are found or the keys end.
        loop {
            let batch = self
                .store
                .list_admin_keys(include_revoked, cursor.as_ref(), batch_size)
                .await?;
            let exhausted = batch.len() < batch_size as usize;
            cursor = batch.last().map(|key| key.id.clone());
            visible.extend(
                batch
                    .into_iter()
                    .filter(|key| actor.tenants.covers(&key.tenants)),
            );
            if visible.len() > page_size || exhausted {
                break;
            }
        }
        Ok(Page::of_one_more(visible, page_size, |key| key.id.clone()))
    }

    /// Revokes an admin key on every replica; a key already revoked is answered unchanged.
    pub async fn revoke_admin_key(
        &self,
        actor: &Actor,
        id: &AdminKeyId,
    ) -> Result<AdminKey, AdminError> {
        let key = self.get_admin_key(actor, id).await?;
        if key.revoked_at.is_some() {
            return Ok(key);
        }
        let summary = format!("revoked {}", describe(&key));
        let audit = event(actor, "admin_key.revoke", &key, summary);
        let revoked = self.store.revoke_admin_key(id, Utc::now(), &audit).await?;
        self.announce(Invalidation::AdminKey(revoked.id.clone()))
            .await;
        tracing::info!(admin_key_id = %revoked.id, "admin key revoked");
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_key_is_an_owner_of_every_tenant_that_never_expires_and_is_audited() {
        let (new, event, secret) = bootstrap_key(Utc::now());
        assert!(new.key.bootstrap);
        assert_eq!(new.key.role, AdminRole::Owner);
        assert_eq!(new.key.tenants, TenantScope::All);
        assert_eq!(new.key.expires_at, None);
        assert_eq!(new.key.created_by, BOOTSTRAP_CREATOR);
        let secret = secrecy::ExposeSecret::expose_secret(&secret);
        assert!(admin_key::is_well_formed(secret));
        assert_eq!(new.secret_hash, token::SecretHash::of(secret));
        assert_eq!(event.action, "admin_key.create");
        assert!(!event.summary.contains(secret));
    }

    #[test]
    fn an_admin_key_event_is_filed_under_its_one_tenant_else_none() {
        let one = TenantScope::parse(&["acme".to_owned()]).expect("valid");
        let two = TenantScope::parse(&["acme".to_owned(), "globex".to_owned()]).expect("valid");
        assert_eq!(audit_tenant(&one), "acme");
        assert_eq!(audit_tenant(&two), "");
        assert_eq!(audit_tenant(&TenantScope::All), "");
    }
}
