//! The token lifecycle: the rules of TokenAdminService (docs/api.md) that need the store.
//!
//! Input arrives parsed (domain types, built by `grpc::convert`); what can only be judged with
//! the clock or the store (expiry bounds, the owner's ceiling, existing roles, revoked tokens)
//! is judged here. Every mutation carries its audit event into the store's transaction.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secrecy::SecretString;

use crate::domain::admin_key::{AdminRole, TenantScope};
use crate::domain::credits::{CreditAmount, CreditGrant};
use crate::domain::fields::{
    ApiScope, Description, PrincipalId, RoleName, Tenant, TokenId, TokenName,
};
use crate::domain::metadata::Metadata;
use crate::domain::model::{
    ApiStatus, AuditEvent, NewToken, Principal, Role, Suspension, Token, TokenState,
};
use crate::domain::network::IpAllowlist;
use crate::domain::permission::{self, Grant};
use crate::domain::policy::{PolicyBreach, PolicyRule, RequestedExpiry, TenantPolicy};
use crate::domain::signature::{MasterKey, SealedSigningKey, SigningKey};
use crate::domain::token::{self, SecretHash, TokenPrefix};
use crate::store::invalidation::{Invalidation, InvalidationSink};
use crate::store::{
    RETIRED_SECRET_LEAK_WINDOW, Rotation, SigningKeyUpdate, Store, StoreError, TokenQuery,
    TokenUpdate,
};

pub use crate::store::{PrincipalChanges, TokenChanges};
pub use rights::Right;

pub mod keys;
mod leaks;
pub mod portal;
pub mod rights;
pub mod webhooks;

pub use keys::{CreateAdminKey, IssuedAdminKey};

/// Default token lifetime: one year.
pub const DEFAULT_LIFETIME: Duration = Duration::days(365);
/// Longest token lifetime: five years, leap days included.
pub const MAX_LIFETIME: Duration = Duration::days(5 * 365 + 2);
/// Longest time an old secret keeps working after a rotation.
pub const MAX_GRACE_PERIOD: Duration = Duration::hours(24);
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A field's value is wrong in a way only the clock or the store could tell.
    #[error("{field}: {description}")]
    InvalidField { field: String, description: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the token is revoked; revoked tokens cannot be changed")]
    TokenRevoked,
    /// AddCredits on a token that has no credits.
    #[error("the token has no credits to add to; set them with UpdateToken (path credits)")]
    NoCredits,
    /// A role that tokens still name cannot be deleted (there is no cascade).
    #[error("role {role} is named by {tokens} tokens that are not revoked")]
    RoleInUse { role: RoleName, tokens: u64 },
    #[error("the owner already has {limit} live tokens")]
    OwnerTokenLimit { limit: u32 },
    /// The token changed since the version (etag) the update was based on; nothing was written.
    #[error("the token changed since it was read; read it again and retry")]
    EtagMismatch,
    #[error("permissions beyond the owner's: {}", grants.join(", "))]
    BeyondOwner { field: String, grants: Vec<String> },
    /// The write breaks the tenant's token policy: the rule, and the request field it concerns.
    #[error("{field}: {description} (policy rule {rule})")]
    PolicyViolation {
        rule: PolicyRule,
        field: String,
        description: String,
    },
    /// A secret (by its hash) that Tessera already holds, or that the batch holds twice.
    #[error("{field}: {description}")]
    SecretExists { field: String, description: String },
    /// Signing keys are stored encrypted under the master key; without one, no token may ask
    /// for signatures (rather than be accepted and never verified).
    #[error(
        "require_signature: request signing needs the server's master key (TESSERA_MASTER_KEY)"
    )]
    SigningUnavailable,
    /// The admin key's role lacks the right the call needs.
    #[error("this admin key's role lacks the right {}", right.as_str())]
    MissingRight { right: Right },
    /// The call names a tenant the admin key is not scoped to.
    #[error("this admin key may not act in tenant {tenant}")]
    TenantNotInScope { tenant: String },
    /// The call acts on every tenant (the global API switch, an all-tenant admin key): only an
    /// all-tenant key may.
    #[error("{what} needs an admin key scoped to every tenant")]
    AllTenantsRequired { what: &'static str },
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] StoreError),
    /// The tenant already has the most webhooks it may have.
    #[error("the tenant already has {limit} webhooks")]
    WebhookLimit { limit: u32 },
    /// Webhook secrets are stored sealed under the master key; without one, none is created.
    #[error("webhooks need the server's master key (TESSERA_MASTER_KEY)")]
    WebhooksUnavailable,
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(entity) => Self::NotFound(entity),
            StoreError::TokenRevoked => Self::TokenRevoked,
            StoreError::NoCredits => Self::NoCredits,
            StoreError::OwnerTokenLimit { limit } => Self::OwnerTokenLimit { limit },
            StoreError::VersionMismatch { .. } => Self::EtagMismatch,
            StoreError::WebhookLimit { limit } => Self::WebhookLimit { limit },
            unavailable @ (StoreError::Unavailable(_) | StoreError::Timeout) => {
                Self::Unavailable(unavailable)
            }
            other => Self::Internal(other),
        }
    }
}

/// Who performs an admin call: who the caller says it is and the admin key that proves it may
/// act (both written to the audit log), with what the key may do and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The `x-tessera-actor` metadata, else the admin key's id.
    pub name: String,
    /// The admin key's id: `adk_…` for a stored key, `admin-key:` and the first 8 hex digits of
    /// its SHA-256 for a `TESSERA_ADMIN_KEYS` key; empty for callers that hold no key (the
    /// server itself, benchmarks).
    pub admin_key: String,
    pub role: AdminRole,
    pub tenants: TenantScope,
}

impl Actor {
    /// An actor known only by name, holding no admin key: the server's own code, an owner of
    /// every tenant.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            admin_key: String::new(),
            role: AdminRole::Owner,
            tenants: TenantScope::All,
        }
    }

    /// Refused unless the key's role holds `right`.
    pub fn require(&self, right: Right) -> Result<(), AdminError> {
        if right.held_by(self.role) {
            Ok(())
        } else {
            Err(AdminError::MissingRight { right })
        }
    }

    /// Refused unless the key may act in `tenant`, which the request names.
    pub fn require_tenant(&self, tenant: &Tenant) -> Result<(), AdminError> {
        if self.tenants.contains(tenant.as_str()) {
            Ok(())
        } else {
            Err(AdminError::TenantNotInScope {
                tenant: tenant.to_string(),
            })
        }
    }

    /// Refused unless the key may act in every tenant.
    pub fn require_all_tenants(&self, what: &'static str) -> Result<(), AdminError> {
        if self.tenants.is_all() {
            Ok(())
        } else {
            Err(AdminError::AllTenantsRequired { what })
        }
    }

    /// NOT_FOUND for a resource read by id in a tenant the key may not see: that it exists
    /// elsewhere is not revealed.
    pub fn visible(&self, tenant: &str, entity: &'static str) -> Result<(), AdminError> {
        if self.tenants.contains(tenant) {
            Ok(())
        } else {
            Err(AdminError::NotFound(entity))
        }
    }
}

/// How a new token's expiry is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Default,
    At(DateTime<Utc>),
    Ttl(Duration),
}

#[derive(Debug, Clone)]
pub struct CreateToken {
    pub tenant: Tenant,
    pub owner_id: PrincipalId,
    pub name: TokenName,
    pub description: Description,
    pub permissions: Vec<Grant>,
    pub roles: Vec<RoleName>,
    pub allowed_ips: IpAllowlist,
    pub rate_limit_per_minute: u32,
    pub expiry: Expiry,
    pub require_signature: bool,
    pub metadata: Metadata,
    /// None: the token is not metered.
    pub credits: Option<CreditGrant>,
}

/// A token with its secret, which exists only in this value and the response built from it.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: Token,
    pub secret: SecretString,
    /// The signing key when the token requires signatures; shown once, like the secret.
    pub signing_key: Option<SecretString>,
}

/// An updated token, with its new signing key when the update turned signing on.
#[derive(Debug)]
pub struct UpdatedToken {
    pub token: Token,
    pub signing_key: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub struct ListTokens {
    pub tenant: Tenant,
    pub owner_id: Option<PrincipalId>,
    pub include_revoked: bool,
    pub expiring_within: Option<Duration>,
    pub unused_for: Option<Duration>,
    /// Only tokens that break the tenant's policy.
    pub policy_violations_only: bool,
    pub page_size: u32,
    pub after: Option<TokenId>,
}

/// One existing token to import, parsed at the edge; `index` is its place in the request, for
/// naming its fields (`tokens[3].owner_id`).
#[derive(Debug, Clone)]
pub struct ImportToken {
    pub owner_id: PrincipalId,
    pub name: TokenName,
    pub description: Description,
    pub secret_hash: SecretHash,
    pub permissions: Vec<Grant>,
    pub roles: Vec<RoleName>,
    pub allowed_ips: IpAllowlist,
    pub rate_limit_per_minute: u32,
    /// None: the default lifetime (the tenant policy's, else one year) from now.
    pub expires_at: Option<DateTime<Utc>>,
    /// None: now.
    pub created_at: Option<DateTime<Utc>>,
    pub metadata: Metadata,
}

/// At most this many tokens per ImportTokens call.
pub const MAX_IMPORT_BATCH: usize = 1000;

/// Tokens a ListTokens with `policy_violations_only` reads from the store at most before it
/// answers a page (shorter, with a page token to go on): the filter is applied in the admin
/// layer, so this bounds the work of one call.
pub const MAX_POLICY_SCAN: u32 = 10_000;

/// Imported tokens show this instead of a part of their secret, which Tessera never saw.
pub const IMPORTED_SECRET_HINT: &str = "(imported)";

/// Hashes per `Invalidation::Secrets` an import publishes: well under the notification limit.
const HASHES_PER_INVALIDATION: usize = 64;

/// A page of results and the key to continue after, if there is more.
#[derive(Debug)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// The first `page_size` of `items`, read one beyond the page to tell whether more follow:
    /// then `next` is the key of the page's last item.
    fn of_one_more(mut items: Vec<T>, page_size: usize, key: impl Fn(&T) -> K) -> Self {
        let next = if items.len() > page_size {
            items.truncate(page_size);
            items.last().map(key)
        } else {
            None
        };
        Self { items, next }
    }
}

#[derive(Debug, Clone)]
pub struct UpsertPrincipal {
    pub tenant: Tenant,
    pub id: PrincipalId,
    pub permissions: Vec<Grant>,
    pub disabled: bool,
    pub rate_limit_per_minute: Option<u32>,
}

pub struct Admin {
    store: Arc<dyn Store>,
    prefix: TokenPrefix,
    max_tokens_per_owner: u32,
    /// This replica's caches; other replicas hear of writes through the store's publish.
    local_cache: Arc<dyn InvalidationSink>,
    /// Encrypts signing keys at rest; without it, signing is refused.
    master_key: Option<MasterKey>,
    /// What a request naming no tenant is for (`TESSERA_DEFAULT_TENANT`).
    default_tenant: Tenant,
    /// Which addresses webhook URLs may name (`TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS`).
    webhook_rule: crate::domain::webhook::AddressRule,
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        prefix: TokenPrefix,
        max_tokens_per_owner: u32,
        local_cache: Arc<dyn InvalidationSink>,
    ) -> Self {
        Self {
            store,
            prefix,
            max_tokens_per_owner,
            local_cache,
            master_key: None,
            default_tenant: Tenant::default(),
            webhook_rule: crate::domain::webhook::AddressRule::default(),
        }
    }

    /// Requests naming no tenant are for `tenant` (without it: the built-in `default`).
    pub fn with_default_tenant(mut self, tenant: Tenant) -> Self {
        self.default_tenant = tenant;
        self
    }

    /// What a request naming no tenant is for.
    pub fn default_tenant(&self) -> &Tenant {
        &self.default_tenant
    }

    /// Allows request signing, with signing keys encrypted under `master_key`.
    pub fn with_master_key(mut self, master_key: Option<MasterKey>) -> Self {
        self.master_key = master_key;
        self
    }

    fn ensure_signing_available(&self, require_signature: bool) -> Result<(), AdminError> {
        if require_signature && self.master_key.is_none() {
            return Err(AdminError::SigningUnavailable);
        }
        Ok(())
    }

    /// A new signing key for `token`, in the clear (to show once) and sealed (to store).
    fn issue_signing_key(
        &self,
        token: &TokenId,
    ) -> Result<(SecretString, SealedSigningKey), AdminError> {
        let master_key = self
            .master_key
            .as_ref()
            .ok_or(AdminError::SigningUnavailable)?;
        let key = SigningKey::generate();
        let sealed = master_key.seal(&key, token);
        Ok((key.secret().clone(), sealed))
    }

    /// After a commit: invalidate here, then tell every replica. A failed publish cannot undo the
    /// committed write; other replicas then catch up when their cache TTL runs out.
    async fn announce(&self, invalidation: Invalidation) {
        self.local_cache.invalidate(&invalidation).await;
        if let Err(error) = self.store.publish(&invalidation).await {
            metrics::counter!("tessera_invalidation_publish_failures_total").increment(1);
            tracing::error!(error = %error, "cannot publish a cache invalidation; other replicas stay stale until their cache ttl");
        }
    }

    /// Invalidates every secret of a token (current and retired) everywhere.
    async fn announce_token(&self, id: &TokenId) {
        match self.store.secret_hashes(id).await {
            Ok(hashes) => {
                self.announce(Invalidation::TokenSecrets {
                    token_id: id.clone(),
                    hashes,
                })
                .await
            }
            Err(error) => {
                tracing::error!(error = %error, token_id = %id, "cannot read a token's secret hashes; dropping every cache");
                self.announce(Invalidation::Everything).await;
            }
        }
    }

    pub async fn create_token(
        &self,
        actor: &Actor,
        request: CreateToken,
    ) -> Result<IssuedToken, AdminError> {
        self.ensure_signing_available(request.require_signature)?;
        let now = Utc::now();
        let policy = self.store.get_tenant_policy(&request.tenant).await?;
        let expires_at = policy_expiry(&policy, request.expiry, now)?;
        policy
            .check_permissions(&request.permissions)
            .map_err(breach("permissions"))?;
        policy
            .check_allowlist(request.allowed_ips.is_empty())
            .map_err(breach("allowed_ips"))?;
        let owner = self
            .store
            .get_principal(&request.tenant, &request.owner_id)
            .await?;
        ensure_within_owner(&request.permissions, &owner)?;
        self.ensure_roles_exist(&request.tenant, &request.roles)
            .await?;

        let generated = token::generate(&self.prefix);
        let id = TokenId::generate();
        let signing_key = if request.require_signature {
            Some(self.issue_signing_key(&id)?)
        } else {
            None
        };
        let token = Token {
            id,
            tenant: request.tenant,
            owner_id: request.owner_id,
            name: request.name,
            description: request.description,
            permissions: request.permissions,
            roles: request.roles,
            allowed_ips: request.allowed_ips,
            rate_limit_per_minute: request.rate_limit_per_minute,
            require_signature: request.require_signature,
            secret_hint: generated.hint,
            created_at: now,
            updated_at: now,
            expires_at,
            rotated_at: None,
            revoked_at: None,
            last_used_at: None,
            // The store starts every token at version 1.
            version: 1,
            imported: false,
            metadata: request.metadata,
            suspension: None,
            credits: request.credits.map(|grant| grant.starting(now)),
        };
        let audit = audit(actor, "token.create", &token.tenant, now)
            .on_token(&token)
            .summary(format!(
                "created token \"{}\" ({}) for owner {}, expires {}",
                token.name,
                token.secret_hint,
                token.owner_id,
                token.expires_at.to_rfc3339()
            ));
        let new = NewToken {
            token,
            secret_hash: generated.hash,
            signing_key: signing_key.as_ref().map(|(_, sealed)| sealed.clone()),
        };
        let stored = self
            .store
            .create_token(
                &new,
                policy.max_live_per_owner(self.max_tokens_per_owner),
                &audit,
            )
            .await?;
        tracing::info!(token_id = %stored.id, owner_id = %stored.owner_id, tenant = %stored.tenant, "token created");
        Ok(IssuedToken {
            token: stored,
            secret: generated.secret,
            signing_key: signing_key.map(|(key, _)| key),
        })
    }

    /// A token the actor may see (else NOT_FOUND, as if it did not exist).
    pub async fn get_token(&self, actor: &Actor, id: &TokenId) -> Result<Token, AdminError> {
        let token = self.store.get_token(id).await?;
        actor.visible(token.tenant.as_str(), "token")?;
        Ok(token)
    }

    pub async fn list_tokens(
        &self,
        request: ListTokens,
    ) -> Result<Page<Token, TokenId>, AdminError> {
        let now = Utc::now();
        let page_size = request.page_size.clamp(1, MAX_PAGE_SIZE);
        let query = TokenQuery {
            tenant: request.tenant,
            owner_id: request.owner_id,
            include_revoked: request.include_revoked,
            expiring_before: request
                .expiring_within
                .map(|within| later(now, within, "expiring_within"))
                .transpose()?,
            unused_since: request
                .unused_for
                .map(|unused| earlier(now, unused, "unused_for"))
                .transpose()?,
            after: request.after,
            // One more than asked tells whether another page follows.
            limit: page_size + 1,
            now,
        };
        if !request.policy_violations_only {
            let tokens = self.store.list_tokens(&query).await?;
            return Ok(Page::of_one_more(tokens, page_size as usize, |token| {
                token.id.clone()
            }));
        }
        self.list_policy_violations(query, page_size).await
    }

    /// The tokens of `query` that break their tenant's policy, a page of at most `page_size`,
    /// reading at most [`MAX_POLICY_SCAN`] tokens: past that the page ends early, with the last
    /// token read as the key to go on after.
    async fn list_policy_violations(
        &self,
        mut query: TokenQuery,
        page_size: u32,
    ) -> Result<Page<Token, TokenId>, AdminError> {
        let policy = self.store.get_tenant_policy(&query.tenant).await?;
        let mut found = Vec::new();
        let mut scanned = 0;
        query.limit = MAX_PAGE_SIZE;
        loop {
            let batch = self.store.list_tokens(&query).await?;
            let exhausted = batch.len() < query.limit as usize;
            let last = batch.last().map(|token| token.id.clone());
            for token in batch {
                scanned += 1;
                if !policy.violations(&token, query.now).is_empty() {
                    found.push(token);
                    if found.len() > page_size as usize {
                        return Ok(Page::of_one_more(found, page_size as usize, |token| {
                            token.id.clone()
                        }));
                    }
                }
            }
            if exhausted {
                return Ok(Page {
                    items: found,
                    next: None,
                });
            }
            if scanned >= MAX_POLICY_SCAN {
                return Ok(Page {
                    items: found,
                    next: last,
                });
            }
            query.after = last;
        }
    }

    /// The tenant's token policy (every rule off when none was set).
    pub async fn tenant_policy(&self, tenant: &Tenant) -> Result<TenantPolicy, AdminError> {
        Ok(self.store.get_tenant_policy(tenant).await?)
    }

    /// Replaces the tenant's policy; every replica drops its cached tokens of the tenant, so an
    /// enforced policy holds from the next Check on.
    pub async fn set_tenant_policy(
        &self,
        actor: &Actor,
        mut policy: TenantPolicy,
    ) -> Result<TenantPolicy, AdminError> {
        let now = Utc::now();
        validate_policy(&policy)?;
        policy.updated_at = Some(now);
        let audit = audit(actor, "tenant_policy.set", &policy.tenant, now)
            .summary(format!("set token policy: {}", describe_policy(&policy)));
        let stored = self.store.set_tenant_policy(&policy, &audit).await?;
        self.announce(Invalidation::TenantPolicy(stored.tenant.clone()))
            .await;
        tracing::info!(tenant = %stored.tenant, enforce = stored.enforce_on_existing, "tenant policy set");
        Ok(stored)
    }

    /// Imports existing tokens by the hashes of their secrets, all or none: every entry is held
    /// to the same rules as CreateToken (owner, ceiling, roles, expiry bounds, the tenant's
    /// policy and live-token limit), and no secret may already be known.
    pub async fn import_tokens(
        &self,
        actor: &Actor,
        tenant: &Tenant,
        entries: Vec<ImportToken>,
    ) -> Result<Vec<Token>, AdminError> {
        if entries.is_empty() || entries.len() > MAX_IMPORT_BATCH {
            return Err(AdminError::InvalidField {
                field: "tokens".to_owned(),
                description: format!("give 1 to {MAX_IMPORT_BATCH} tokens"),
            });
        }
        let now = Utc::now();
        let policy = self.store.get_tenant_policy(tenant).await?;
        let mut owners: std::collections::HashMap<PrincipalId, Principal> =
            std::collections::HashMap::new();
        let mut role_names: Vec<RoleName> = entries
            .iter()
            .flat_map(|entry| entry.roles.iter().cloned())
            .collect();
        role_names.sort();
        role_names.dedup();
        let existing_roles = if role_names.is_empty() {
            Vec::new()
        } else {
            self.store.get_roles(tenant, &role_names).await?
        };
        let mut news = Vec::with_capacity(entries.len());
        let mut audits = Vec::with_capacity(entries.len());
        for (index, entry) in entries.into_iter().enumerate() {
            let field = |name: &str| format!("tokens[{index}].{name}");
            if !owners.contains_key(&entry.owner_id) {
                let owner = match self.store.get_principal(tenant, &entry.owner_id).await {
                    Ok(owner) => owner,
                    Err(StoreError::NotFound(_)) => {
                        return Err(AdminError::InvalidField {
                            field: field("owner_id"),
                            description: format!(
                                "principal {} does not exist in tenant {tenant}",
                                entry.owner_id
                            ),
                        });
                    }
                    Err(error) => return Err(error.into()),
                };
                owners.insert(entry.owner_id.clone(), owner);
            }
            if let Some(owner) = owners.get(&entry.owner_id) {
                ensure_within_owner_as(&field("permissions"), &entry.permissions, owner)?;
            }
            if let Some(missing) = entry
                .roles
                .iter()
                .find(|name| !existing_roles.iter().any(|role| &role.name == *name))
            {
                return Err(AdminError::InvalidField {
                    field: field("roles"),
                    description: format!("role {missing} does not exist in tenant {tenant}"),
                });
            }
            let expiry = entry.expires_at.map_or(Expiry::Default, Expiry::At);
            let expires_at = policy_expiry(&policy, expiry, now).map_err(|error| match error {
                AdminError::InvalidField { description, .. } => AdminError::InvalidField {
                    field: field("expires_at"),
                    description,
                },
                AdminError::PolicyViolation {
                    rule, description, ..
                } => AdminError::PolicyViolation {
                    rule,
                    field: field("expires_at"),
                    description,
                },
                other => other,
            })?;
            policy
                .check_permissions(&entry.permissions)
                .map_err(breach(field("permissions")))?;
            policy
                .check_allowlist(entry.allowed_ips.is_empty())
                .map_err(breach(field("allowed_ips")))?;
            let created_at = entry.created_at.unwrap_or(now);
            if created_at > now {
                return Err(AdminError::InvalidField {
                    field: field("created_at"),
                    description: "must not be in the future".to_owned(),
                });
            }
            let token = Token {
                id: TokenId::generate(),
                tenant: tenant.clone(),
                owner_id: entry.owner_id,
                name: entry.name,
                description: entry.description,
                permissions: entry.permissions,
                roles: entry.roles,
                allowed_ips: entry.allowed_ips,
                rate_limit_per_minute: entry.rate_limit_per_minute,
                require_signature: false,
                secret_hint: IMPORTED_SECRET_HINT.to_owned(),
                created_at,
                updated_at: now,
                expires_at,
                rotated_at: None,
                revoked_at: None,
                last_used_at: None,
                version: 1,
                imported: true,
                metadata: entry.metadata,
                suspension: None,
                // Imported tokens are not metered; UpdateToken (path `credits`) can meter them.
                credits: None,
            };
            audits.push(
                audit(actor, "token.import", tenant, now)
                    .on_token(&token)
                    .summary(format!(
                        "imported token \"{}\" for owner {}, expires {}",
                        token.name,
                        token.owner_id,
                        token.expires_at.to_rfc3339()
                    )),
            );
            news.push(NewToken {
                token,
                secret_hash: entry.secret_hash,
                signing_key: None,
            });
        }
        let hashes: Vec<SecretHash> = news.iter().map(|new| new.secret_hash).collect();
        let known = self.store.known_secret_hashes(&hashes).await?;
        if let Some(index) = hashes.iter().position(|hash| known.contains(hash)) {
            return Err(AdminError::SecretExists {
                field: format!("tokens[{index}].secret_sha256"),
                description: "a token with this secret already exists".to_owned(),
            });
        }
        let max_live = policy.max_live_per_owner(self.max_tokens_per_owner);
        let stored = match self.store.import_tokens(&news, max_live, &audits).await {
            Ok(stored) => stored,
            // Stored by a concurrent call since the check above.
            Err(StoreError::Conflict(_)) => {
                return Err(AdminError::SecretExists {
                    field: "tokens".to_owned(),
                    description: "a token with one of these secrets was stored meanwhile"
                        .to_owned(),
                });
            }
            Err(error) => return Err(error.into()),
        };
        // A replica may hold one of the new secrets as unknown (presented before the import).
        for chunk in hashes.chunks(HASHES_PER_INVALIDATION) {
            self.announce(Invalidation::Secrets(chunk.to_vec())).await;
        }
        tracing::info!(tenant = %tenant, tokens = stored.len(), "tokens imported");
        Ok(stored)
    }

    /// Applies the fields `changes` sets, and only those, so that concurrent updates of
    /// different fields both survive. With `etag` (a version read earlier), applies only if the
    /// token is still at that version (AIP-154), else `EtagMismatch` and nothing is written.
    pub async fn update_token(
        &self,
        actor: &Actor,
        id: &TokenId,
        mut changes: TokenChanges,
        etag: Option<u64>,
    ) -> Result<UpdatedToken, AdminError> {
        let now = Utc::now();
        let token = self.get_token(actor, id).await?;
        if token.state(now) == TokenState::Revoked {
            return Err(AdminError::TokenRevoked);
        }
        // The store checks again, atomically; this only spares the work below.
        if etag.is_some_and(|expected| expected != token.version) {
            return Err(AdminError::EtagMismatch);
        }
        let mut expected_version = etag;
        let policy = self.store.get_tenant_policy(&token.tenant).await?;
        // Field names of what changed, for the audit log.
        let mut changed: Vec<&str> = Vec::new();
        // Turning signing on issues a key (shown once); turning it off drops the key. Which of
        // the two happens depends on the token as read here, so such an update applies only to
        // the version read: a concurrent toggle makes one of them ABORTED instead of leaving a
        // key that was shown but is not stored.
        let mut signing_key = None;
        let mut signing_key_update = SigningKeyUpdate::Keep;
        if let Some(require_signature) = changes.require_signature {
            if require_signature != token.require_signature {
                expected_version.get_or_insert(token.version);
                if require_signature {
                    signing_key = Some(self.issue_signing_key(&token.id)?);
                } else {
                    signing_key_update = SigningKeyUpdate::Remove;
                }
            }
            changed.push("require_signature");
        }
        if let Some((_, sealed)) = &signing_key {
            signing_key_update = SigningKeyUpdate::Replace(sealed);
        }
        if let Some(permissions) = &changes.permissions {
            let owner = self
                .store
                .get_principal(&token.tenant, &token.owner_id)
                .await?;
            ensure_within_owner(permissions, &owner)?;
            policy
                .check_permissions(permissions)
                .map_err(breach("permissions"))?;
            changed.push("permissions");
        }
        if let Some(roles) = &changes.roles {
            self.ensure_roles_exist(&token.tenant, roles).await?;
            changed.push("roles");
        }
        if let Some(expires_at) = changes.expires_at {
            changes.expires_at = Some(policy_expiry(&policy, Expiry::At(expires_at), now)?);
            changed.push("expires_at");
        }
        if changes.name.is_some() {
            changed.push("name");
        }
        if changes.description.is_some() {
            changed.push("description");
        }
        if let Some(allowed_ips) = &changes.allowed_ips {
            policy
                .check_allowlist(allowed_ips.is_empty())
                .map_err(breach("allowed_ips"))?;
            changed.push("allowed_ips");
        }
        if changes.rate_limit_per_minute.is_some() {
            changed.push("rate_limit_per_minute");
        }
        if !changes.metadata_entries.is_empty() {
            // Applied to the map as read, so the update applies only to that version: a
            // concurrent change of the metadata makes it ABORTED rather than lost.
            expected_version.get_or_insert(token.version);
            let base = changes.metadata.as_ref().unwrap_or(&token.metadata);
            let merged = base
                .with_changes(&changes.metadata_entries)
                .map_err(|error| AdminError::InvalidField {
                    field: "metadata".to_owned(),
                    description: error.to_string(),
                })?;
            changes.metadata = Some(merged);
        }
        if changes.metadata.is_some() {
            changed.push("metadata");
        }
        if changes.credits.is_some() {
            changed.push("credits");
        }
        let name = changes.name.as_ref().unwrap_or(&token.name);
        let audit = audit(actor, "token.update", &token.tenant, now)
            .on_token(&token)
            .summary(format!("updated token \"{name}\": {}", changed.join(", ")));
        let update = TokenUpdate {
            id: token.id.clone(),
            changes,
            signing_key: signing_key_update,
            updated_at: now,
            expected_version,
            max_live_per_owner: policy.max_live_per_owner(self.max_tokens_per_owner),
        };
        let updated = self.store.update_token(&update, &audit).await?;
        self.announce_token(&updated.id).await;
        tracing::info!(token_id = %updated.id, "token updated");
        Ok(UpdatedToken {
            token: updated,
            signing_key: signing_key.map(|(key, _)| key),
        })
    }

    pub async fn rotate_token(
        &self,
        actor: &Actor,
        id: &TokenId,
        grace_period: Duration,
    ) -> Result<IssuedToken, AdminError> {
        if grace_period < Duration::zero() || grace_period > MAX_GRACE_PERIOD {
            return Err(AdminError::InvalidField {
                field: "grace_period".to_owned(),
                description: "must be between 0 and 24 hours".to_owned(),
            });
        }
        let now = Utc::now();
        let token = self.get_token(actor, id).await?;
        if token.state(now) == TokenState::Revoked {
            return Err(AdminError::TokenRevoked);
        }
        // A new secret for a token its tenant's policy no longer allows would extend its life:
        // its grants or allowlist must be brought within the policy first (UpdateToken). A
        // lifetime beyond the policy is shortened below instead.
        let policy = self.store.get_tenant_policy(&token.tenant).await?;
        policy
            .check_permissions(&token.permissions)
            .map_err(breach("permissions"))?;
        policy
            .check_allowlist(token.allowed_ips.is_empty())
            .map_err(breach("allowed_ips"))?;
        // A signing token gets a new signing key too; the old one stays with the old secret.
        let signing_key = if token.require_signature {
            Some(self.issue_signing_key(&token.id)?)
        } else {
            None
        };
        // The new window is as long as the current one was, so a 90-day token stays a 90-day token.
        let window = token.expires_at - token.window_start();
        let window = if window > Duration::zero() {
            window.min(MAX_LIFETIME)
        } else {
            DEFAULT_LIFETIME
        };
        let window = policy.rotation_window(window);
        let generated = token::generate(&self.prefix);
        let rotation = Rotation {
            id: token.id.clone(),
            new_secret_hash: generated.hash,
            new_secret_hint: generated.hint.clone(),
            rotated_at: now,
            new_expires_at: now + window,
            old_secret_grace_until: now + grace_period,
            new_signing_key: signing_key.as_ref().map(|(_, sealed)| sealed.clone()),
            max_live_per_owner: policy.max_live_per_owner(self.max_tokens_per_owner),
            forget_retired_before: now - RETIRED_SECRET_LEAK_WINDOW,
        };
        let audit = audit(actor, "token.rotate", &token.tenant, now)
            .on_token(&token)
            .summary(format!(
                "rotated token \"{}\" ({} -> {}), old secret grace {}s",
                token.name,
                token.secret_hint,
                generated.hint,
                grace_period.num_seconds()
            ));
        let rotated = self.store.rotate_token(&rotation, &audit).await?;
        self.announce_token(&rotated.id).await;
        tracing::info!(token_id = %rotated.id, grace_seconds = grace_period.num_seconds(), "token rotated");
        Ok(IssuedToken {
            token: rotated,
            secret: generated.secret,
            signing_key: signing_key.map(|(key, _)| key),
        })
    }

    /// Adds credits to a token that has credits, in one atomic increment on the store (no
    /// concurrent spend is lost), and tells every replica (the new balance is not cached, but
    /// the token's version changed).
    pub async fn add_credits(
        &self,
        actor: &Actor,
        id: &TokenId,
        amount: CreditAmount,
    ) -> Result<Token, AdminError> {
        let now = Utc::now();
        let token = self.get_token(actor, id).await?;
        let audit = audit(actor, "token.add_credits", &token.tenant, now)
            .on_token(&token)
            .summary(format!(
                "added {} credits to token \"{}\"",
                amount.get(),
                token.name
            ));
        let updated = self
            .store
            .add_credits(id, amount.get(), now, &audit)
            .await?;
        self.announce_token(&updated.id).await;
        tracing::info!(token_id = %updated.id, amount = amount.get(), "credits added");
        Ok(updated)
    }

    /// Revokes a token. Revoking a revoked token is no error: it answers the token unchanged,
    /// writes nothing and audits nothing, so a retried or repeated revocation succeeds.
    pub async fn revoke_token(&self, actor: &Actor, id: &TokenId) -> Result<Token, AdminError> {
        let now = Utc::now();
        let token = self.get_token(actor, id).await?;
        if token.revoked_at.is_some() {
            return Ok(token);
        }
        let audit = audit(actor, "token.revoke", &token.tenant, now)
            .on_token(&token)
            .summary(format!(
                "revoked token \"{}\" ({})",
                token.name, token.secret_hint
            ));
        let revoked = match self.store.revoke_token(id, now, &audit).await {
            Ok(revoked) => revoked,
            // Revoked by a concurrent call since it was read: the same answer as above.
            Err(StoreError::TokenRevoked) => return Ok(self.store.get_token(id).await?),
            Err(error) => return Err(error.into()),
        };
        self.announce_token(&revoked.id).await;
        tracing::info!(token_id = %revoked.id, "token revoked");
        Ok(revoked)
    }

    /// Suspends a token on every replica, until `resume_token`. A revoked token is
    /// `TokenRevoked`; a suspended one is answered unchanged (nothing written or audited), so a
    /// retried suspension succeeds and keeps its first reason.
    pub async fn suspend_token(
        &self,
        actor: &Actor,
        id: &TokenId,
        reason: Description,
    ) -> Result<Token, AdminError> {
        let now = Utc::now();
        let token = self.get_token(actor, id).await?;
        if token.revoked_at.is_some() {
            return Err(AdminError::TokenRevoked);
        }
        if token.suspension.is_some() {
            return Ok(token);
        }
        let audit = audit(actor, "token.suspend", &token.tenant, now)
            .on_token(&token)
            .summary(format!(
                "suspended token \"{}\" ({}): {:.200}",
                token.name,
                token.secret_hint,
                reason.as_str()
            ));
        let suspension = Suspension { at: now, reason };
        let suspended = self
            .store
            .set_suspension(id, Some(&suspension), now, &audit)
            .await?;
        self.announce_token(&suspended.id).await;
        tracing::info!(token_id = %suspended.id, "token suspended");
        Ok(suspended)
    }

    /// Lifts a token's suspension on every replica. A token that is not suspended is answered
    /// unchanged (a revoked one included: it stays revoked).
    pub async fn resume_token(&self, actor: &Actor, id: &TokenId) -> Result<Token, AdminError> {
        let now = Utc::now();
        let token = self.get_token(actor, id).await?;
        if token.suspension.is_none() || token.revoked_at.is_some() {
            return Ok(token);
        }
        let audit = audit(actor, "token.resume", &token.tenant, now)
            .on_token(&token)
            .summary(format!(
                "resumed token \"{}\" ({})",
                token.name, token.secret_hint
            ));
        let resumed = self.store.set_suspension(id, None, now, &audit).await?;
        self.announce_token(&resumed.id).await;
        tracing::info!(token_id = %resumed.id, "token resumed");
        Ok(resumed)
    }

    pub async fn upsert_principal(
        &self,
        actor: &Actor,
        request: UpsertPrincipal,
    ) -> Result<Principal, AdminError> {
        let now = Utc::now();
        let principal = Principal {
            tenant: request.tenant,
            id: request.id,
            permissions: request.permissions,
            disabled: request.disabled,
            rate_limit_per_minute: request.rate_limit_per_minute,
            created_at: now,
            updated_at: now,
        };
        let granted: Vec<String> = principal
            .permissions
            .iter()
            .map(ToString::to_string)
            .collect();
        let audit = audit(actor, "principal.upsert", &principal.tenant, now)
            .on_principal(&principal.id)
            .summary(format!(
                "set principal {}: permissions [{}], disabled {}",
                principal.id,
                granted.join(", "),
                principal.disabled
            ));
        let stored = self.store.upsert_principal(&principal, &audit).await?;
        self.announce(Invalidation::Owner {
            tenant: stored.tenant.clone(),
            owner_id: stored.id.clone(),
        })
        .await;
        tracing::info!(principal_id = %stored.id, tenant = %stored.tenant, disabled = stored.disabled, "principal upserted");
        Ok(stored)
    }

    pub async fn get_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
    ) -> Result<Principal, AdminError> {
        Ok(self.store.get_principal(tenant, id).await?)
    }

    pub async fn upsert_role(
        &self,
        actor: &Actor,
        tenant: Tenant,
        name: RoleName,
        permissions: Vec<Grant>,
    ) -> Result<Role, AdminError> {
        let now = Utc::now();
        let granted: Vec<String> = permissions.iter().map(ToString::to_string).collect();
        let role = Role {
            tenant,
            name,
            permissions,
            created_at: now,
            updated_at: now,
        };
        let audit = audit(actor, "role.upsert", &role.tenant, now).summary(format!(
            "set role {}: permissions [{}]",
            role.name,
            granted.join(", ")
        ));
        let stored = self.store.upsert_role(&role, &audit).await?;
        self.announce(Invalidation::Role {
            tenant: stored.tenant.clone(),
            name: stored.name.clone(),
        })
        .await;
        tracing::info!(role = %stored.name, tenant = %stored.tenant, "role upserted");
        Ok(stored)
    }

    pub async fn list_roles(&self, tenant: &Tenant) -> Result<Vec<Role>, AdminError> {
        Ok(self.store.list_roles(tenant).await?)
    }

    pub async fn set_api_status(
        &self,
        actor: &Actor,
        scope: ApiScope,
        online: bool,
        message: String,
    ) -> Result<ApiStatus, AdminError> {
        let now = Utc::now();
        let status = ApiStatus {
            scope,
            online,
            message,
            updated_at: Some(now),
        };
        let state = if online { "online" } else { "offline" };
        let audit = audit(actor, "api.set_status", status.scope.as_str(), now)
            .summary(format!("api for {} set {state}", status.scope));
        let stored = self.store.set_api_status(&status, &audit).await?;
        self.announce(Invalidation::ApiStatus(stored.scope.clone()))
            .await;
        tracing::info!(scope = %stored.scope, online = stored.online, "api status set");
        Ok(stored)
    }

    pub async fn get_api_status(&self, scope: &ApiScope) -> Result<ApiStatus, AdminError> {
        Ok(self.store.get_api_status(scope).await?)
    }

    /// Audit events of `tenant` (which the actor must be scoped to), else of every tenant the
    /// actor may see.
    pub async fn list_audit_events(
        &self,
        actor: &Actor,
        tenant: Option<&Tenant>,
        filter: &crate::store::AuditFilter,
        page_size: u32,
        after_id: i64,
    ) -> Result<Page<AuditEvent, i64>, AdminError> {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let tenants: Option<Vec<Tenant>> = match (tenant, actor.tenants.tenants()) {
            (Some(tenant), _) => {
                actor.require_tenant(tenant)?;
                Some(vec![tenant.clone()])
            }
            (None, Some(scoped)) => Some(scoped.iter().cloned().collect()),
            (None, None) => None,
        };
        let events = self
            .store
            .list_audit_events(tenants.as_deref(), filter, after_id, page_size + 1)
            .await?;
        Ok(Page::of_one_more(events, page_size as usize, |event| {
            event.id
        }))
    }

    // Principals and roles beyond upsert (issue 13).

    /// Applies the fields `changes` sets to an existing principal, and only those: disabling a
    /// principal keeps its permissions.
    pub async fn update_principal(
        &self,
        actor: &Actor,
        tenant: &Tenant,
        id: &PrincipalId,
        changes: PrincipalChanges,
    ) -> Result<Principal, AdminError> {
        let now = Utc::now();
        let mut changed = Vec::new();
        if let Some(permissions) = &changes.permissions {
            let granted: Vec<String> = permissions.iter().map(ToString::to_string).collect();
            changed.push(format!("permissions [{}]", granted.join(", ")));
        }
        if let Some(disabled) = changes.disabled {
            changed.push(format!("disabled {disabled}"));
        }
        if let Some(rate_limit) = changes.rate_limit_per_minute {
            changed.push(match rate_limit {
                Some(limit) => format!("rate limit {limit}/min"),
                None => "no shared rate limit".to_owned(),
            });
        }
        let audit = audit(actor, "principal.update", tenant, now)
            .on_principal(id)
            .summary(format!("updated principal {id}: {}", changed.join(", ")));
        let stored = self
            .store
            .update_principal(tenant, id, &changes, now, &audit)
            .await?;
        self.announce(Invalidation::Owner {
            tenant: stored.tenant.clone(),
            owner_id: stored.id.clone(),
        })
        .await;
        tracing::info!(principal_id = %stored.id, tenant = %stored.tenant, disabled = stored.disabled, "principal updated");
        Ok(stored)
    }

    /// A page of a tenant's principals, by id, after `after`.
    pub async fn list_principals(
        &self,
        tenant: &Tenant,
        page_size: u32,
        after: Option<PrincipalId>,
    ) -> Result<Page<Principal, PrincipalId>, AdminError> {
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let mut principals = self
            .store
            .list_principals(tenant, after.as_ref(), page_size + 1)
            .await?;
        let next = if principals.len() > page_size as usize {
            principals.truncate(page_size as usize);
            principals.last().map(|principal| principal.id.clone())
        } else {
            None
        };
        Ok(Page {
            items: principals,
            next,
        })
    }

    pub async fn get_role(&self, tenant: &Tenant, name: &RoleName) -> Result<Role, AdminError> {
        self.store
            .get_roles(tenant, std::slice::from_ref(name))
            .await?
            .into_iter()
            .next()
            .ok_or(AdminError::NotFound("role"))
    }

    /// Deletes a role that no token (revoked ones aside) names; the caches drop it everywhere.
    pub async fn delete_role(
        &self,
        actor: &Actor,
        tenant: &Tenant,
        name: &RoleName,
    ) -> Result<Role, AdminError> {
        let now = Utc::now();
        let audit =
            audit(actor, "role.delete", tenant, now).summary(format!("deleted role {name}"));
        let deleted = match self.store.delete_role(tenant, name, &audit).await {
            Ok(deleted) => deleted,
            Err(StoreError::RoleInUse { tokens }) => {
                return Err(AdminError::RoleInUse {
                    role: name.clone(),
                    tokens,
                });
            }
            Err(error) => return Err(error.into()),
        };
        self.announce(Invalidation::Role {
            tenant: deleted.tenant.clone(),
            name: deleted.name.clone(),
        })
        .await;
        tracing::info!(role = %deleted.name, tenant = %deleted.tenant, "role deleted");
        Ok(deleted)
    }

    async fn ensure_roles_exist(
        &self,
        tenant: &Tenant,
        roles: &[RoleName],
    ) -> Result<(), AdminError> {
        if roles.is_empty() {
            return Ok(());
        }
        let existing = self.store.get_roles(tenant, roles).await?;
        if let Some(missing) = roles
            .iter()
            .find(|name| !existing.iter().any(|role| &role.name == *name))
        {
            return Err(AdminError::InvalidField {
                field: "roles".to_owned(),
                description: format!("role {missing} does not exist in tenant {tenant}"),
            });
        }
        Ok(())
    }
}

/// What a policy may not say: lifetimes beyond the server's bounds, a default beyond the
/// maximum, a default that `require_expiry` would never use.
fn validate_policy(policy: &TenantPolicy) -> Result<(), AdminError> {
    let invalid = |field: &str, description: &str| AdminError::InvalidField {
        field: format!("policy.{field}"),
        description: description.to_owned(),
    };
    for (field, lifetime) in [
        ("max_lifetime", policy.max_lifetime),
        ("default_lifetime", policy.default_lifetime),
    ] {
        if let Some(lifetime) = lifetime
            && (lifetime < Duration::seconds(1) || lifetime > MAX_LIFETIME)
        {
            return Err(invalid(field, "must be from 1 second to 5 years"));
        }
    }
    if let (Some(default), Some(max)) = (policy.default_lifetime, policy.max_lifetime)
        && default > max
    {
        return Err(invalid("default_lifetime", "must be at most max_lifetime"));
    }
    if policy.require_expiry && policy.default_lifetime.is_some() {
        return Err(invalid(
            "default_lifetime",
            "is never used while require_expiry is set; set one of them",
        ));
    }
    Ok(())
}

/// A policy in one line, for its audit event.
fn describe_policy(policy: &TenantPolicy) -> String {
    let mut rules = Vec::new();
    if let Some(max) = policy.max_lifetime {
        rules.push(format!(
            "max_lifetime {}",
            crate::domain::policy::describe(max)
        ));
    }
    if let Some(default) = policy.default_lifetime {
        rules.push(format!(
            "default_lifetime {}",
            crate::domain::policy::describe(default)
        ));
    }
    if policy.require_expiry {
        rules.push("require_expiry".to_owned());
    }
    if let Some(limit) = policy.max_tokens_per_owner {
        rules.push(format!("max_tokens_per_owner {limit}"));
    }
    if !policy.allowed_permissions.is_empty() {
        let allowed: Vec<String> = policy
            .allowed_permissions
            .iter()
            .map(ToString::to_string)
            .collect();
        rules.push(format!("allowed_permissions [{}]", allowed.join(", ")));
    }
    if policy.require_ip_allowlist {
        rules.push("require_ip_allowlist".to_owned());
    }
    if policy.leak_action != crate::domain::leak::LeakAction::Revoke {
        rules.push(format!("leak_action {}", policy.leak_action.as_str()));
    }
    if rules.is_empty() {
        rules.push("no rules".to_owned());
    }
    if policy.enforce_on_existing {
        rules.push("enforced on existing tokens".to_owned());
    }
    rules.join(", ")
}

/// The instant a token given `expiry` at `now` expires, or the field that is out of bounds.
pub fn resolve_expiry(expiry: Expiry, now: DateTime<Utc>) -> Result<DateTime<Utc>, AdminError> {
    let (field, expires_at) = match expiry {
        Expiry::Default => return Ok(now + DEFAULT_LIFETIME),
        Expiry::At(at) => ("expires_at", at),
        Expiry::Ttl(ttl) => ("ttl", later(now, ttl, "ttl")?),
    };
    if expires_at <= now {
        return Err(AdminError::InvalidField {
            field: field.to_owned(),
            description: "must be in the future".to_owned(),
        });
    }
    if expires_at > now + MAX_LIFETIME {
        return Err(AdminError::InvalidField {
            field: field.to_owned(),
            description: "must be at most 5 years from now".to_owned(),
        });
    }
    Ok(expires_at)
}

/// `now + span`, or INVALID_ARGUMENT naming `field` when that leaves chrono's range (which `+`
/// would answer with a panic). The gRPC edge already bounds durations; this keeps the library
/// API as safe for callers that build requests themselves.
fn later(now: DateTime<Utc>, span: Duration, field: &str) -> Result<DateTime<Utc>, AdminError> {
    now.checked_add_signed(span)
        .ok_or_else(|| out_of_range(field))
}

/// `now - span`, as [`later`].
fn earlier(now: DateTime<Utc>, span: Duration, field: &str) -> Result<DateTime<Utc>, AdminError> {
    now.checked_sub_signed(span)
        .ok_or_else(|| out_of_range(field))
}

fn out_of_range(field: &str) -> AdminError {
    AdminError::InvalidField {
        field: field.to_owned(),
        description: "is out of range".to_owned(),
    }
}

fn ensure_within_owner(permissions: &[Grant], owner: &Principal) -> Result<(), AdminError> {
    ensure_within_owner_as("permissions", permissions, owner)
}

fn ensure_within_owner_as(
    field: &str,
    permissions: &[Grant],
    owner: &Principal,
) -> Result<(), AdminError> {
    let beyond = permission::beyond_ceiling(permissions, &owner.permissions);
    if beyond.is_empty() {
        return Ok(());
    }
    Err(AdminError::BeyondOwner {
        field: field.to_owned(),
        grants: beyond.iter().map(ToString::to_string).collect(),
    })
}

/// A policy's refusal of a write, naming the request field it concerns.
fn breach(field: impl Into<String>) -> impl FnOnce(PolicyBreach) -> AdminError {
    let field = field.into();
    move |breach| AdminError::PolicyViolation {
        rule: breach.rule,
        field,
        description: breach.description,
    }
}

/// The expiry of a token written at `now` with `expiry`: within the server's bounds
/// ([`resolve_expiry`]) and then the tenant's `policy`.
pub fn policy_expiry(
    policy: &TenantPolicy,
    expiry: Expiry,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, AdminError> {
    let (field, requested) = match expiry {
        Expiry::Default => ("expires_at", RequestedExpiry::Default),
        Expiry::At(_) => (
            "expires_at",
            RequestedExpiry::At(resolve_expiry(expiry, now)?),
        ),
        Expiry::Ttl(_) => ("ttl", RequestedExpiry::At(resolve_expiry(expiry, now)?)),
    };
    policy
        .expiry(requested, now, DEFAULT_LIFETIME)
        .map_err(breach(field))
}

fn audit(actor: &Actor, action: &str, tenant: impl AsRef<str>, time: DateTime<Utc>) -> AuditEvent {
    AuditEvent {
        id: 0,
        time,
        actor: actor.name.clone(),
        action: action.to_owned(),
        tenant: tenant.as_ref().to_owned(),
        token_id: None,
        principal_id: None,
        summary: String::new(),
        admin_key: actor.admin_key.clone(),
    }
}

trait AuditEventExt {
    fn on_token(self, token: &Token) -> Self;
    fn on_principal(self, id: &PrincipalId) -> Self;
    fn summary(self, summary: String) -> Self;
}

impl AuditEventExt for AuditEvent {
    fn on_token(mut self, token: &Token) -> Self {
        self.token_id = Some(token.id.clone());
        self.principal_id = Some(token.owner_id.clone());
        self
    }

    fn on_principal(mut self, id: &PrincipalId) -> Self {
        self.principal_id = Some(id.clone());
        self
    }

    fn summary(mut self, summary: String) -> Self {
        self.summary = summary;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_expiry_is_one_year_ahead() {
        let now = Utc::now();
        assert_eq!(
            resolve_expiry(Expiry::Default, now).expect("default"),
            now + Duration::days(365)
        );
    }

    #[test]
    fn an_expiry_in_the_past_is_rejected_naming_the_field() {
        let now = Utc::now();
        let error = resolve_expiry(Expiry::At(now - Duration::seconds(1)), now).expect_err("past");
        assert!(
            matches!(error, AdminError::InvalidField { ref field, .. } if field == "expires_at")
        );
    }

    #[test]
    fn a_lifetime_beyond_five_years_is_rejected_naming_the_field() {
        let now = Utc::now();
        let error =
            resolve_expiry(Expiry::Ttl(Duration::days(6 * 365)), now).expect_err("too long");
        assert!(matches!(error, AdminError::InvalidField { ref field, .. } if field == "ttl"));
        assert!(resolve_expiry(Expiry::Ttl(Duration::days(5 * 365)), now).is_ok());
    }

    #[test]
    fn a_ttl_beyond_chronos_range_is_rejected_naming_the_field_not_a_panic() {
        let error = resolve_expiry(Expiry::Ttl(Duration::MAX), Utc::now()).expect_err("overflow");
        assert!(matches!(error, AdminError::InvalidField { ref field, .. } if field == "ttl"));
        let error = earlier(Utc::now(), Duration::MAX, "unused_for").expect_err("overflow");
        assert!(
            matches!(error, AdminError::InvalidField { ref field, .. } if field == "unused_for")
        );
    }

    #[test]
    fn a_store_that_timed_out_is_unavailable_not_an_internal_error() {
        assert!(matches!(
            AdminError::from(StoreError::Timeout),
            AdminError::Unavailable(StoreError::Timeout)
        ));
    }
}
