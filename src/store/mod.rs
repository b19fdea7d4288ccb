//! The store: one trait, two backends (Postgres for production, SQLite as the embedded default).
//!
//! Every mutating method writes its audit event in the same transaction as the change, so a
//! mutation and its audit record commit together or not at all. [`connect`] is the only way to
//! open one, and the store it returns bounds every call by its own deadline and counts its
//! failures (`bounded.rs`), so callers neither wrap calls in timeouts nor count errors.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::admin_key::{AdminKey, AdminKeyId};
use crate::domain::credits::CreditGrant;
use crate::domain::event::{Event, EventId, EventType};
use crate::domain::fields::{
    ApiScope, Description, PrincipalId, RoleName, Tenant, TokenId, TokenName,
};
use crate::domain::leak::{LeakFinding, LeakReport};
use crate::domain::metadata::{Metadata, MetadataChange};
use crate::domain::model::{
    ApiStatus, AuditEvent, CredentialRecord, NewToken, Principal, Role, Suspension, Token,
};
use crate::domain::network::IpAllowlist;
use crate::domain::permission::Grant;
use crate::domain::policy::TenantPolicy;
use crate::domain::session::{NewSession, PortalBranding, Session, SessionId};
use crate::domain::signature::SealedSigningKey;
use crate::domain::token::SecretHash;
use crate::domain::usage::{UsageBatch, UsageFigures, UsageQuery};
use crate::domain::webhook::{
    Attempt, DueDelivery, NewWebhook, Webhook, WebhookChanges, WebhookDelivery, WebhookId,
};
use invalidation::{Invalidation, InvalidationSink};

mod bounded;
mod codec;
mod error;
pub mod invalidation;
mod postgres;
mod sql;
mod sqlite;
mod usage_sql;
mod webhook_codec;

use bounded::Bounded;
use postgres::PostgresStore;
use sqlite::SqliteStore;
pub use sqlite::backup as backup_sqlite;

/// What went wrong in the store, as a small set the layers above can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named entity (`token`, `principal`, `role`) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The token is revoked, so it can no longer be changed.
    #[error("the token is revoked")]
    TokenRevoked,
    /// The owner already holds the maximum number of live tokens.
    #[error("the owner already has {limit} live tokens")]
    OwnerTokenLimit { limit: u32 },
    /// The token changed since the version the caller based its write on.
    #[error("the token changed since version {expected}")]
    VersionMismatch { expected: u64 },
    /// The token has no credits to add to (AddCredits).
    #[error("the token has no credits")]
    NoCredits,
    /// A uniqueness rule was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The role cannot be deleted: this many tokens that are not revoked name it.
    #[error("the role is used by {tokens} tokens that are not revoked")]
    RoleInUse { tokens: u64 },
    /// The database cannot be reached or refused for now (a pool, statement or busy timeout).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The call did not end by the store's own deadline (`PoolOptions::check_deadline` for
    /// Check's reads, `PoolOptions::call_deadline` for the rest), as across a partition where
    /// nothing answers; read like `Unavailable`.
    #[error("the store did not answer in time")]
    Timeout,
    /// Anything else: a bug or corrupt data; logged, never sent to clients.
    #[error("store internal error: {0}")]
    Internal(String),
    /// The tenant already has the most webhooks it may have.
    #[error("the tenant already has {limit} webhooks")]
    WebhookLimit { limit: u32 },
}

/// Which tokens `list_tokens` returns, in id (= creation) order.
#[derive(Debug, Clone)]
pub struct TokenQuery {
    pub tenant: Tenant,
    pub owner_id: Option<PrincipalId>,
    pub include_revoked: bool,
    /// Only tokens that are not yet expired and expire before this instant.
    pub expiring_before: Option<DateTime<Utc>>,
    /// Only tokens never used, or last used before this instant.
    pub unused_since: Option<DateTime<Utc>>,
    /// Keyset paging: only ids greater than this one.
    pub after: Option<TokenId>,
    pub limit: u32,
    /// The instant `expiring_before` compares against.
    pub now: DateTime<Utc>,
}

/// A new secret for an existing token.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub id: TokenId,
    pub new_secret_hash: SecretHash,
    pub new_secret_hint: String,
    pub rotated_at: DateTime<Utc>,
    pub new_expires_at: DateTime<Utc>,
    /// Until when the old secret keeps working; equal to `rotated_at` when there is no grace.
    pub old_secret_grace_until: DateTime<Utc>,
    /// The token's new sealed signing key, None when it requires no signatures. The old key
    /// stays with the retired secret, so signed clients keep working through the grace period.
    pub new_signing_key: Option<SealedSigningKey>,
    /// Rotating an expired token makes it live again, so it must fit under the owner's limit.
    pub max_live_per_owner: u32,
    /// Retired secrets whose grace ended before this instant are forgotten (their rows deleted):
    /// Check then answers TOKEN_UNKNOWN for them instead of TOKEN_REVOKED with a leak report.
    pub forget_retired_before: DateTime<Utc>,
}

/// How long a retired secret is still recognised (TOKEN_REVOKED, audited as a leak signal) after
/// its grace period ended; older ones are deleted at the token's next rotation. Bounds the rows
/// and the invalidation payload of a token rotated often, while keeping the signal for the weeks
/// in which a forgotten copy of an old secret is most likely to turn up.
pub const RETIRED_SECRET_LEAK_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// The fields an UpdateToken's mask names; `None` leaves a field as it is, and the store writes
/// only the columns of the fields that are set, so concurrent updates of different fields
/// cannot undo each other.
#[derive(Debug, Clone, Default)]
pub struct TokenChanges {
    pub name: Option<TokenName>,
    pub description: Option<Description>,
    pub permissions: Option<Vec<Grant>>,
    pub roles: Option<Vec<RoleName>>,
    pub allowed_ips: Option<IpAllowlist>,
    pub rate_limit_per_minute: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub require_signature: Option<bool>,
    /// The whole new map (mask path `metadata`).
    pub metadata: Option<Metadata>,
    /// `metadata.KEY` paths, in mask order: the admin layer applies them to `metadata`, or to
    /// the map it read, and hands the store the result in `metadata`; the store ignores these.
    pub metadata_entries: Vec<MetadataChange>,
    /// `Some(None)` removes the token's credits (it is no longer metered); new credits start
    /// at the update's `updated_at`.
    pub credits: Option<Option<CreditGrant>>,
}

/// What spending credits found (`Store::spend_credits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditSpend {
    /// Spent; the balance after.
    Spent { remaining: u64 },
    /// Fewer than the cost were left (this many, refills applied); nothing was spent.
    Exhausted { remaining: u64 },
    /// The token has no credits (or no longer exists): nothing to spend.
    Unmetered,
}

/// A lease of credits taken from a token's balance (`Store::lease_credits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditLease {
    /// The stored balance after the lease was taken.
    pub remaining: u64,
    /// `credits_refilled_at` after the take: the refill period (and the grant) the lease
    /// belongs to. Its unspent credits go back only while the token is still in it.
    pub period: DateTime<Utc>,
}

/// The fields an UpdatePrincipal's mask names; `None` leaves a field as it is, and the store
/// writes only the columns of the fields that are set.
#[derive(Debug, Clone, Default)]
pub struct PrincipalChanges {
    pub permissions: Option<Vec<Grant>>,
    pub disabled: Option<bool>,
    /// `Some(None)` removes the principal's shared limit.
    pub rate_limit_per_minute: Option<Option<u32>>,
}

/// One UpdateToken as the store applies it.
#[derive(Debug, Clone)]
pub struct TokenUpdate<'a> {
    pub id: TokenId,
    pub changes: TokenChanges,
    pub signing_key: SigningKeyUpdate<'a>,
    pub updated_at: DateTime<Utc>,
    /// Apply only if the token is still at this version (its etag); None applies regardless.
    pub expected_version: Option<u64>,
    /// A new expiry that makes an expired token live again must fit under the owner's limit.
    pub max_live_per_owner: u32,
}

/// What an update does to a token's sealed signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyUpdate<'a> {
    Keep,
    /// Signing was turned on: the token's new key.
    Replace(&'a SealedSigningKey),
    /// Signing was turned off: the key goes.
    Remove,
}

/// Live tokens an operator should look at before an integration breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokensNeedingAttention {
    /// Not yet expired, but expiring before the given instant.
    pub expiring: u64,
    /// Never used, or last used before the given instant (as `TokenQuery::unused_since`).
    pub unused: u64,
}

/// Which audit events `list_audit_events` returns beside its tenants: each filter set must
/// match exactly; none set, every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub token_id: Option<TokenId>,
    pub principal_id: Option<PrincipalId>,
    /// An action (`token.create`, `console.sign_in`, …).
    pub action: Option<String>,
    /// Who acted, as the entry names them (`console:alice`, `adk_…`).
    pub actor: Option<String>,
}

/// Which events `list_events` returns.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events of these tenants, when given (an empty list matches none).
    pub tenants: Option<Vec<Tenant>>,
    /// Only events of these types; empty: every type.
    pub types: Vec<EventType>,
    /// Only events committed after this one (`Event::seq`); 0: from the first.
    pub after_seq: i64,
    pub limit: u32,
}

/// How far back retention pruning deletes usage rows.
#[derive(Debug, Clone, Copy)]
pub struct UsageCutoffs {
    /// Minute buckets and recent calls older than this go.
    pub minutes_before: DateTime<Utc>,
    /// Daily rollups older than this go.
    pub days_before: DateTime<Utc>,
}

/// Writes the bootstrap admin key where the operator will find it; run by
/// [`Store::bootstrap_admin_key`] inside its transaction, before the key's hash commits.
pub type PersistKey<'a> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'a>>;

/// What [`Store::bootstrap_admin_key`] did.
#[derive(Debug)]
pub enum Bootstrapped {
    /// This call created the database's bootstrap key: it is stored and persisted.
    Created,
    /// The database already had an admin key or a bootstrap (another replica's, perhaps at the
    /// same moment): nothing was stored and the key was not persisted.
    AlreadyDone,
    /// Persisting the key failed, so nothing was stored.
    NotPersisted(std::io::Error),
}

/// A new admin key and the hash of its secret, the only form in which the secret is stored.
#[derive(Debug, Clone)]
pub struct NewAdminKey {
    pub key: AdminKey,
    pub secret_hash: SecretHash,
}

/// Connection pool bounds: the server must never hang on a dead database.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The admin/usage pool's size: admin calls, admin-key lookups, usage flushes, audit.
    pub max_connections: u32,
    /// The Check pool's size: only Check's cache misses (`find_credential`, `get_api_status`),
    /// so a flood of misses cannot starve a revocation of connections.
    pub check_max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// The longest one of Check's cache-miss reads (`find_credential`, `offline_api_statuses`)
    /// may take, its wait for a connection included: past it the read is `Timeout` and Check
    /// answers STORE_UNAVAILABLE instead of holding the request (`TESSERA_CHECK_STORE_TIMEOUT_MS`).
    pub check_deadline: Duration,
}

impl PoolOptions {
    /// The longest any other store call may take: waiting for a connection, then one statement
    /// at its limit, plus a margin for the rest of the call. Beyond it the call is `Timeout`
    /// (UNAVAILABLE) instead of waiting on a link that may never answer (a partition drops
    /// packets silently, and TCP gives up only after minutes).
    pub fn call_deadline(&self) -> Duration {
        self.acquire_timeout + self.statement_timeout + Duration::from_secs(1)
    }
}

impl PoolOptions {
    /// The defaults, also those of the `TESSERA_DATABASE_*` settings and of
    /// `TESSERA_CHECK_STORE_TIMEOUT_MS` (`src/config.rs`).
    pub const DEFAULT: Self = Self {
        max_connections: 16,
        check_max_connections: 16,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
        check_deadline: Duration::from_millis(500),
    };
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and health: `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// A cheap round trip, to tell whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts a token if its owner exists and holds fewer than `max_live_per_owner` live
    /// (neither revoked nor expired) tokens. Two concurrent creates for one owner are serialised
    /// on the owner's row, so the limit holds without a race.
    async fn create_token(
        &self,
        new: &NewToken,
        max_live_per_owner: u32,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError>;

    async fn get_token(&self, id: &TokenId) -> Result<Token, StoreError>;

    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<Token>, StoreError>;

    /// Writes only the fields `update.changes` sets (and `updated_at`, the signing key as
    /// `update.signing_key` says, and a new version) of a token that is not revoked; with
    /// `expected_version`, only if the token is still at that version (else `VersionMismatch`).
    /// A new expiry that revives an expired token is refused with `OwnerTokenLimit` when the
    /// owner already holds `max_live_per_owner` live tokens, serialised with creates on the
    /// owner's row.
    async fn update_token(
        &self,
        update: &TokenUpdate<'_>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError>;

    /// Gives a token that is not revoked a new secret; the old one is kept as retired, usable
    /// until `old_secret_grace_until` and recognised (as revoked) after it, until a later
    /// rotation forgets it (`forget_retired_before`); retired secrets past their grace lose their
    /// signing key. Clears the token's usage history (and `last_used_at`) in the same
    /// transaction. Rotating an expired token revives it: refused with `OwnerTokenLimit` when
    /// the owner already holds `max_live_per_owner` live tokens.
    async fn rotate_token(
        &self,
        rotation: &Rotation,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError>;

    /// Revokes a token; revoking a revoked token is `TokenRevoked`.
    async fn revoke_token(
        &self,
        id: &TokenId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError>;

    /// Suspends (`Some`) or resumes (`None`) a token that is not revoked, as one admin write
    /// with its audit event: `TokenRevoked` for a revoked token.
    async fn set_suspension(
        &self,
        id: &TokenId,
        suspension: Option<&Suspension>,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError>;

    /// Everything Check needs for a secret hash: current or retired secret, owner and roles.
    /// Read through the Check pool, as `get_api_status` is.
    async fn find_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<CredentialRecord>, StoreError>;

    async fn upsert_principal(
        &self,
        principal: &Principal,
        audit: &AuditEvent,
    ) -> Result<Principal, StoreError>;

    async fn get_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
    ) -> Result<Principal, StoreError>;

    async fn upsert_role(&self, role: &Role, audit: &AuditEvent) -> Result<Role, StoreError>;

    /// A tenant's roles, by name.
    async fn list_roles(&self, tenant: &Tenant) -> Result<Vec<Role>, StoreError>;

    /// The named roles that exist in the tenant (missing names are simply absent).
    async fn get_roles(&self, tenant: &Tenant, names: &[RoleName])
    -> Result<Vec<Role>, StoreError>;

    async fn set_api_status(
        &self,
        status: &ApiStatus,
        audit: &AuditEvent,
    ) -> Result<ApiStatus, StoreError>;

    /// The stored status, or `ApiStatus::never_set` when there is none.
    async fn get_api_status(&self, scope: &ApiScope) -> Result<ApiStatus, StoreError>;

    /// Every stored status that is switched off. Check reads them all at once, as one cache
    /// entry, so that a tenant it is asked about costs no lookup and no entry of its own: any
    /// scope not among them is online.
    async fn offline_api_statuses(&self) -> Result<Vec<ApiStatus>, StoreError>;

    /// Audit events with id greater than `after_id`, oldest first, of these tenants only when
    /// `tenants` is given. Never returns an event while
    /// an event with a smaller id may still commit (on Postgres it waits for in-flight audit
    /// inserts; SQLite has one writer at a time), so paging by the last id never skips one.
    async fn list_audit_events(
        &self,
        tenants: Option<&[Tenant]>,
        filter: &AuditFilter,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Stores a new admin key (its hash, never its secret) with its audit event.
    async fn create_admin_key(
        &self,
        new: &NewAdminKey,
        audit: &AuditEvent,
    ) -> Result<AdminKey, StoreError>;

    /// An admin key by id (`NotFound("admin key")`).
    async fn get_admin_key(&self, id: &AdminKeyId) -> Result<AdminKey, StoreError>;

    /// Admin keys in id (= creation) order after `after`, at most `limit`; revoked ones only
    /// with `include_revoked`.
    async fn list_admin_keys(
        &self,
        include_revoked: bool,
        after: Option<&AdminKeyId>,
        limit: u32,
    ) -> Result<Vec<AdminKey>, StoreError>;

    /// The admin key whose secret has this hash, revoked and expired ones included.
    async fn find_admin_key(&self, hash: &SecretHash) -> Result<Option<AdminKey>, StoreError>;

    /// Revokes an admin key with its audit event; a key already revoked is returned unchanged
    /// and nothing is written.
    async fn revoke_admin_key(
        &self,
        id: &AdminKeyId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<AdminKey, StoreError>;

    /// Records a use of an admin key (its `last_used_at`).
    async fn touch_admin_key(&self, id: &AdminKeyId, at: DateTime<Utc>) -> Result<(), StoreError>;

    async fn count_admin_keys(&self) -> Result<u64, StoreError>;

    /// Stores `new` as the database's bootstrap admin key, with its audit event, if it has no
    /// admin key and no bootstrap yet, atomically: of replicas starting together on a fresh
    /// database exactly one creates a key. `persist` runs only for that one, inside the
    /// transaction: if it fails, nothing is stored, so a stored hash always has its key written
    /// somewhere.
    async fn bootstrap_admin_key(
        &self,
        new: &NewAdminKey,
        audit: &AuditEvent,
        persist: PersistKey<'_>,
    ) -> Result<Bootstrapped, StoreError>;

    /// Writes an audit event that belongs to no store mutation (a retired secret presented).
    async fn insert_audit_event(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Writes the audit event of a retired secret presented (`event`, which names its token)
    /// unless one was already written for that token in the UTC minute of `event.time`,
    /// atomically across concurrent callers and replicas; returns whether it was written.
    async fn report_retired_secret_use(&self, event: &AuditEvent) -> Result<bool, StoreError>;

    // Lifecycle events (issue 17).

    /// Events after `query.after_seq`, oldest first. Never returns an event while one with a
    /// smaller `seq` may still commit (as `list_audit_events`), so a reader resuming from the
    /// last `seq` it saw never skips one.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError>;

    /// The `seq` of the event with this id; None when there is none (never written, or pruned).
    async fn event_seq(&self, id: &EventId) -> Result<Option<i64>, StoreError>;

    /// The `seq` of the newest committed event, 0 when there is none: where a watch without a
    /// cursor starts.
    async fn last_event_seq(&self) -> Result<i64, StoreError>;

    /// Deletes at most `limit` events older than `before`, with their webhook deliveries, and
    /// the expiry notices of expiries before it; returns how many events went.
    async fn prune_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Writes the `token.expiring` (7 days and 1 day before) and `token.expired` events due at
    /// `now` for at most `limit` tokens, each once per token, kind and expiry across all
    /// replicas (a notice row, inserted with its event, decides); returns how many it wrote.
    async fn send_expiry_notices(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Every secret hash of a token, current and retired, so caches can drop them all.
    async fn secret_hashes(&self, id: &TokenId) -> Result<Vec<SecretHash>, StoreError>;

    /// Writes one flush of usage in one transaction. Counters are added to what is stored, so
    /// replicas flushing into the same rows sum correctly. Calls checked under an earlier
    /// rotation of their token, reports all older than its last rotation, and anything for a
    /// token that does not exist are dropped. Rows are written in key order (tokens first), so
    /// concurrent flushes and rotations lock in one order and cannot deadlock.
    async fn write_usage(&self, batch: &UsageBatch) -> Result<(), StoreError>;

    /// The usage figures of one token or of all tokens of an owner.
    async fn read_usage(&self, query: &UsageQuery) -> Result<UsageFigures, StoreError>;

    /// Deletes at most `limit` rows of each usage table older than the cutoffs; returns how
    /// many rows went, so the caller can repeat in small batches until none are left.
    async fn prune_usage(&self, cutoffs: &UsageCutoffs, limit: u32) -> Result<u64, StoreError>;

    /// Counts live tokens (neither revoked nor expired at `now`) expiring before
    /// `expiring_before`, and those unused since `unused_since`, across all tenants.
    async fn count_tokens_needing_attention(
        &self,
        now: DateTime<Utc>,
        expiring_before: DateTime<Utc>,
        unused_since: DateTime<Utc>,
    ) -> Result<TokensNeedingAttention, StoreError>;

    /// Tells the other replicas what a committed write made stale (Postgres `NOTIFY`); a no-op
    /// on SQLite, which is single-node.
    async fn publish(&self, invalidation: &Invalidation) -> Result<(), StoreError>;

    /// Feeds the other replicas' invalidations into `sink` until the handle is aborted, and
    /// invalidates everything whenever the feed (re)connects, since events may have been missed.
    /// None when there are no other replicas (SQLite).
    fn watch_invalidations(
        &self,
        sink: Arc<dyn InvalidationSink>,
    ) -> Option<tokio::task::JoinHandle<()>>;

    // Principals and roles beyond upsert (issue 13).

    /// Writes only the fields `changes` sets (and `updated_at`) of an existing principal;
    /// `NotFound("principal")` when there is none.
    async fn update_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
        changes: &PrincipalChanges,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Principal, StoreError>;

    /// A tenant's principals whose id is greater than `after`, by id, at most `limit`.
    async fn list_principals(
        &self,
        tenant: &Tenant,
        after: Option<&PrincipalId>,
        limit: u32,
    ) -> Result<Vec<Principal>, StoreError>;

    /// Called once on a clean shutdown, after the last write: SQLite folds its write-ahead log
    /// into the database file (`PRAGMA wal_checkpoint(TRUNCATE)`), so that the file alone holds
    /// everything (a copy of `tessera.db` without its `-wal` would otherwise lose recent
    /// writes); nothing on Postgres.
    async fn checkpoint(&self) -> Result<(), StoreError>;

    /// Deletes a role and returns it as it was, unless a token of its tenant that is not revoked
    /// (expired ones included: they can be revived) names it: then `RoleInUse` with how many do,
    /// and nothing is written.
    async fn delete_role(
        &self,
        tenant: &Tenant,
        name: &RoleName,
        audit: &AuditEvent,
    ) -> Result<Role, StoreError>;

    // Tenant token policies and imports (issue 16).

    /// The tenant's policy, or `TenantPolicy::none` when none was set.
    async fn get_tenant_policy(&self, tenant: &Tenant) -> Result<TenantPolicy, StoreError>;

    /// Creates or replaces the tenant's policy, with its audit event.
    async fn set_tenant_policy(
        &self,
        policy: &TenantPolicy,
        audit: &AuditEvent,
    ) -> Result<TenantPolicy, StoreError>;

    // Leak reports (issue 17).

    /// Acts on a report that the secret with this hash leaked, in one transaction: the token
    /// whose current secret it is (or a retired secret still in its grace period), when it still
    /// works, is revoked or left working by its tenant's `leak_action`, with the audit entry and
    /// the `token.leaked` event (and `token.revoked`) of `domain::leak`. A token that no longer
    /// works, and a notified token whose last `token.leaked` is younger than
    /// `leak::REPEAT_WINDOW_SECONDS`, change nothing and write nothing.
    async fn report_leak(
        &self,
        hash: &SecretHash,
        report: &LeakReport,
    ) -> Result<LeakFinding, StoreError>;

    /// Which of `hashes` are already a secret (current or retired) of some token.
    async fn known_secret_hashes(
        &self,
        hashes: &[SecretHash],
    ) -> Result<Vec<SecretHash>, StoreError>;

    /// Inserts every token of `tokens`, with every event of `audits`, in one transaction, or
    /// nothing: each owner must exist (`NotFound("principal")`) and hold, with the batch's live
    /// tokens, at most `max_live_per_owner` live tokens (`OwnerTokenLimit`), counted under a
    /// lock on the owner's row as `create_token` does; a secret hash already stored is `Conflict`.
    async fn import_tokens(
        &self,
        tokens: &[NewToken],
        max_live_per_owner: u32,
        audits: &[AuditEvent],
    ) -> Result<Vec<Token>, StoreError>;
    // Usage credits (issue 16).

    /// Spends `cost` of a token's credits at `now` in one conditional statement (applying a due
    /// refill first, `domain::credits::Credits::spend`): concurrent spenders on every replica
    /// serialise on the token's row, so no more is ever spent than the balance held. Through
    /// the Check pool, within the Check deadline. Does not change the token's version.
    async fn spend_credits(
        &self,
        id: &TokenId,
        cost: u32,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend, StoreError>;

    /// Takes `amount` of a token's credits at `now` (a due refill applied first), in one
    /// conditional statement like `spend_credits`, but only when the balance is at least
    /// `min_balance` (≥ `amount`). None: too few, or no credits. Check pool, Check deadline.
    async fn lease_credits(
        &self,
        id: &TokenId,
        amount: u64,
        min_balance: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<CreditLease>, StoreError>;

    /// Gives `amount` unspent leased credits back (one increment, saturating at
    /// `MAX_CREDITS`), only while the token is still in the lease's `period`: no refill since
    /// the lease and none due at `now`, and its credits not replaced. Otherwise the credits are
    /// dropped (false): a refill topped the balance up as if they were spent, or a new grant
    /// replaced them. Does not change the token's version.
    async fn return_credits(
        &self,
        id: &TokenId,
        amount: u64,
        period: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Adds `amount` to the credits of a token that has credits and is not revoked, atomically
    /// with concurrent spending (refills due by `now` applied first, saturating at
    /// `MAX_CREDITS`), with its audit event; bumps the version. `NotFound("credits")` when the
    /// token has none, `TokenRevoked`, `NotFound("token")`.
    async fn add_credits(
        &self,
        id: &TokenId,
        amount: u64,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError>;

    // Webhooks (issue 17).

    /// Inserts a webhook with its audit event, unless its tenant already has `max_per_tenant`
    /// (`WebhookLimit`).
    async fn create_webhook(
        &self,
        new: &NewWebhook,
        max_per_tenant: u32,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError>;

    /// `NotFound("webhook")` when there is none.
    async fn get_webhook(&self, id: &WebhookId) -> Result<Webhook, StoreError>;

    /// A tenant's webhooks in id (= creation) order, after `after`, at most `limit`.
    async fn list_webhooks(
        &self,
        tenant: &Tenant,
        after: Option<&WebhookId>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError>;

    /// Writes the fields `changes` names, with its audit event. Disabling fails the pending
    /// deliveries; resuming (`disabled: false`) clears `failing_since`.
    async fn update_webhook(
        &self,
        id: &WebhookId,
        changes: &WebhookChanges,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError>;

    /// Deletes a webhook and its deliveries, with its audit event; the webhook as it was.
    async fn delete_webhook(
        &self,
        id: &WebhookId,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError>;

    /// A webhook's deliveries, newest first, with ids below `before`, at most `limit`.
    async fn list_webhook_deliveries(
        &self,
        webhook: &WebhookId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError>;

    /// Claims up to `limit` pending deliveries due at `now` of enabled webhooks, leased to this
    /// replica until `lease_until` (another replica takes one only after that: on Postgres the
    /// claim skips rows another claim holds locked), each with its event and webhook.
    async fn claim_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Records an attempt of a pending delivery. A delivery marks its webhook working again
    /// (`failing_since` cleared); a last failed retry marks it failing and writes one
    /// `webhook.failing` event per failing episode: true when this attempt did.
    async fn record_webhook_attempt(&self, attempt: &Attempt) -> Result<bool, StoreError>;

    // Console and portal sessions (issue 18).

    /// Stores a new session with its audit event (a sign-in, a CreatePortalSession).
    async fn create_session(&self, new: &NewSession, audit: &AuditEvent) -> Result<(), StoreError>;

    /// The session whose cookie secret has this hash, revoked and expired ones included.
    async fn find_session(&self, secret_hash: &SecretHash) -> Result<Option<Session>, StoreError>;

    /// Exchanges a portal session's one-time code for a cookie secret, atomically (of two
    /// exchanges of one code at most one succeeds), and counts the exchange as a use. None
    /// when no unused code has this hash, or its session is revoked or expired at `now`.
    async fn redeem_session_code(
        &self,
        code_hash: &SecretHash,
        secret_hash: &SecretHash,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError>;

    /// Records a use of a session (its `last_seen_at`, from which the idle expiry counts).
    async fn touch_session(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Ends a session (sign-out); a session already ended is left as it is.
    async fn revoke_session(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Deletes up to `limit` sessions whose absolute expiry is before `before`; how many.
    async fn prune_sessions(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Sets a tenant's portal branding with its audit event; the branding as stored.
    async fn set_portal_branding(
        &self,
        branding: &PortalBranding,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<PortalBranding, StoreError>;

    /// A tenant's portal branding; None when it never set one.
    async fn get_portal_branding(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<PortalBranding>, StoreError>;
}

/// Opens the database named by `url` (`sqlite://…` or `postgres://…`), for tools and tests that
/// hold a URL; the server's settings name the backend already (`config::Database`) and call
/// [`connect_sqlite`] or [`connect_postgres`].
pub async fn connect(url: &str, options: &PoolOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        connect_postgres(url, options).await
    } else if url.starts_with("sqlite:") {
        connect_sqlite(url, options).await
    } else {
        Err(StoreError::Internal(
            "database url must start with sqlite:// or postgres://".to_owned(),
        ))
    }
}

/// Opens a PostgreSQL database and runs the embedded migrations under an advisory lock, so
/// replicas may start at once. Every call of the store it returns ends by its deadline
/// (`options`), and its failures are counted.
pub async fn connect_postgres(
    url: &str,
    options: &PoolOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    counted_open(PostgresStore::connect(url, options).await, options)
}

/// Opens (creating it if need be) a SQLite database and runs the embedded migrations; its calls
/// are bounded and counted as [`connect_postgres`]'s.
pub async fn connect_sqlite(
    url: &str,
    options: &PoolOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    counted_open(SqliteStore::connect(url, options).await, options)
}

fn counted_open<S: Store + 'static>(
    opened: Result<S, StoreError>,
    options: &PoolOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    match opened {
        Ok(store) => Ok(Arc::new(Bounded::new(store, options))),
        Err(error) => {
            bounded::count_failure("connect", &error);
            Err(error)
        }
    }
}
