//! The real store (SQLite or Postgres) with pause points: a credential or API-status read can be
//! held after the database answered and before the answer reaches the caller, as a slow network
//! or a descheduled task would hold it, so a test can commit a write in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tessera::domain::admin_key::{AdminKey, AdminKeyId};
use tessera::domain::event::{Event, EventId};
use tessera::domain::fields::{ApiScope, PrincipalId, RoleName, Tenant, TokenId};
use tessera::domain::leak::{LeakFinding, LeakReport};
use tessera::domain::model::{
    ApiStatus, AuditEvent, CredentialRecord, NewToken, Principal, Role, Suspension, Token,
};
use tessera::domain::policy::TenantPolicy;
use tessera::domain::session::{NewSession, PortalBranding, Session, SessionId};
use tessera::domain::token::SecretHash;
use tessera::domain::usage::{UsageBatch, UsageFigures, UsageQuery};
use tessera::domain::webhook::{
    Attempt, DueDelivery, NewWebhook, Webhook, WebhookChanges, WebhookDelivery, WebhookId,
};
use tessera::store::invalidation::{Invalidation, InvalidationSink};
use tessera::store::{AuditFilter, EventQuery};
use tessera::store::{
    Bootstrapped, CreditLease, CreditSpend, NewAdminKey, PersistKey, PrincipalChanges, Rotation,
    Store, StoreError, TokenQuery, TokenUpdate, TokensNeedingAttention, UsageCutoffs,
};
use tokio::sync::oneshot;

/// Forwards every call to the real store; `hold_next` arms the pause.
pub struct PausingStore {
    inner: Arc<dyn Store>,
    armed: Mutex<Option<(Read, Hold)>>,
    /// Reads of API statuses, of one scope or all at once.
    api_status_reads: AtomicU64,
    /// Leak reports that reached the store (each looks its secret up).
    leak_lookups: AtomicU64,
}

/// The reads that can be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// `find_credential`, the Check path's token lookup.
    Credential,
    /// `get_api_status` or `offline_api_statuses`, whichever comes next.
    ApiStatus,
}

/// The store's side of a held read.
struct Hold {
    answered: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The test's side of a held read.
pub struct HeldRead {
    answered: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl HeldRead {
    /// Waits until the database has answered the held read (its answer is then held).
    pub async fn answered(&mut self) {
        if let Some(answered) = self.answered.take() {
            answered.await.expect("the held read happens");
        }
    }

    /// Lets the held answer through.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

impl PausingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            armed: Mutex::new(None),
            api_status_reads: AtomicU64::new(0),
            leak_lookups: AtomicU64::new(0),
        }
    }

    /// How many times API statuses were read from the database.
    pub fn api_status_reads(&self) -> u64 {
        self.api_status_reads.load(Ordering::SeqCst)
    }

    /// How many leak reports reached the store.
    pub fn leak_lookups(&self) -> u64 {
        self.leak_lookups.load(Ordering::SeqCst)
    }

    /// The next read of that kind reaches the database, then waits for `HeldRead::release`.
    pub fn hold_next(&self, read: Read) -> HeldRead {
        let (answered_sender, answered) = oneshot::channel();
        let (release, release_receiver) = oneshot::channel();
        let hold = Hold {
            answered: answered_sender,
            release: release_receiver,
        };
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some((read, hold));
        HeldRead {
            answered: Some(answered),
            release,
        }
    }
}

impl PausingStore {
    /// Holds this read if it is the armed kind: tells the test, then waits for its release.
    async fn held(&self, read: Read) {
        let hold = {
            let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
            match armed.take() {
                Some((kind, hold)) if kind == read => Some(hold),
                other => {
                    *armed = other;
                    None
                }
            }
        };
        if let Some(hold) = hold {
            let _ = hold.answered.send(());
            let _ = hold.release.await;
        }
    }
}

#[async_trait]
impl Store for PausingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn create_token(
        &self,
        new: &NewToken,
        max_live_per_owner: u32,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.inner
            .create_token(new, max_live_per_owner, audit)
            .await
    }

    async fn get_token(&self, id: &TokenId) -> Result<Token, StoreError> {
        self.inner.get_token(id).await
    }

    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<Token>, StoreError> {
        self.inner.list_tokens(query).await
    }

    async fn update_token(
        &self,
        update: &TokenUpdate<'_>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.inner.update_token(update, audit).await
    }

    async fn bootstrap_admin_key(
        &self,
        new: &NewAdminKey,
        audit: &AuditEvent,
        persist: PersistKey<'_>,
    ) -> Result<Bootstrapped, StoreError> {
        self.inner.bootstrap_admin_key(new, audit, persist).await
    }

    async fn report_retired_secret_use(&self, event: &AuditEvent) -> Result<bool, StoreError> {
        self.inner.report_retired_secret_use(event).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        self.inner.list_events(query).await
    }

    async fn event_seq(&self, id: &EventId) -> Result<Option<i64>, StoreError> {
        self.inner.event_seq(id).await
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.inner.last_event_seq().await
    }

    async fn prune_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune_events(before, limit).await
    }

    async fn send_expiry_notices(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.inner.send_expiry_notices(now, limit).await
    }

    async fn rotate_token(
        &self,
        rotation: &Rotation,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.inner.rotate_token(rotation, audit).await
    }

    async fn set_suspension(
        &self,
        id: &TokenId,
        suspension: Option<&Suspension>,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.inner.set_suspension(id, suspension, at, audit).await
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.inner.revoke_token(id, at, audit).await
    }

    async fn find_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        let answer = self.inner.find_credential(hash).await;
        self.held(Read::Credential).await;
        answer
    }

    async fn upsert_principal(
        &self,
        principal: &Principal,
        audit: &AuditEvent,
    ) -> Result<Principal, StoreError> {
        self.inner.upsert_principal(principal, audit).await
    }

    async fn get_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
    ) -> Result<Principal, StoreError> {
        self.inner.get_principal(tenant, id).await
    }

    async fn upsert_role(&self, role: &Role, audit: &AuditEvent) -> Result<Role, StoreError> {
        self.inner.upsert_role(role, audit).await
    }

    async fn list_roles(&self, tenant: &Tenant) -> Result<Vec<Role>, StoreError> {
        self.inner.list_roles(tenant).await
    }

    async fn get_roles(
        &self,
        tenant: &Tenant,
        names: &[RoleName],
    ) -> Result<Vec<Role>, StoreError> {
        self.inner.get_roles(tenant, names).await
    }

    async fn set_api_status(
        &self,
        status: &ApiStatus,
        audit: &AuditEvent,
    ) -> Result<ApiStatus, StoreError> {
        self.inner.set_api_status(status, audit).await
    }

    async fn get_api_status(&self, scope: &ApiScope) -> Result<ApiStatus, StoreError> {
        self.api_status_reads.fetch_add(1, Ordering::SeqCst);
        let answer = self.inner.get_api_status(scope).await;
        self.held(Read::ApiStatus).await;
        answer
    }

    async fn offline_api_statuses(&self) -> Result<Vec<ApiStatus>, StoreError> {
        self.api_status_reads.fetch_add(1, Ordering::SeqCst);
        let answer = self.inner.offline_api_statuses().await;
        self.held(Read::ApiStatus).await;
        answer
    }

    async fn list_audit_events(
        &self,
        tenants: Option<&[Tenant]>,
        filter: &AuditFilter,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner
            .list_audit_events(tenants, filter, after_id, limit)
            .await
    }

    async fn create_admin_key(
        &self,
        new: &NewAdminKey,
        audit: &AuditEvent,
    ) -> Result<AdminKey, StoreError> {
        self.inner.create_admin_key(new, audit).await
    }

    async fn get_admin_key(&self, id: &AdminKeyId) -> Result<AdminKey, StoreError> {
        self.inner.get_admin_key(id).await
    }

    async fn list_admin_keys(
        &self,
        include_revoked: bool,
        after: Option<&AdminKeyId>,
        limit: u32,
    ) -> Result<Vec<AdminKey>, StoreError> {
        self.inner
            .list_admin_keys(include_revoked, after, limit)
            .await
    }

    async fn find_admin_key(&self, hash: &SecretHash) -> Result<Option<AdminKey>, StoreError> {
        self.inner.find_admin_key(hash).await
    }

    async fn revoke_admin_key(
        &self,
        id: &AdminKeyId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<AdminKey, StoreError> {
        self.inner.revoke_admin_key(id, at, audit).await
    }

    async fn touch_admin_key(&self, id: &AdminKeyId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.touch_admin_key(id, at).await
    }

    async fn count_admin_keys(&self) -> Result<u64, StoreError> {
        self.inner.count_admin_keys().await
    }

    async fn insert_audit_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.inner.insert_audit_event(event).await
    }

    async fn secret_hashes(&self, id: &TokenId) -> Result<Vec<SecretHash>, StoreError> {
        self.inner.secret_hashes(id).await
    }

    async fn write_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        self.inner.write_usage(batch).await
    }

    async fn read_usage(&self, query: &UsageQuery) -> Result<UsageFigures, StoreError> {
        self.inner.read_usage(query).await
    }

    async fn prune_usage(&self, cutoffs: &UsageCutoffs, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune_usage(cutoffs, limit).await
    }

    async fn count_tokens_needing_attention(
        &self,
        now: DateTime<Utc>,
        expiring_before: DateTime<Utc>,
        unused_since: DateTime<Utc>,
    ) -> Result<TokensNeedingAttention, StoreError> {
        self.inner
            .count_tokens_needing_attention(now, expiring_before, unused_since)
            .await
    }

    async fn publish(&self, invalidation: &Invalidation) -> Result<(), StoreError> {
        self.inner.publish(invalidation).await
    }

    fn watch_invalidations(
        &self,
        sink: Arc<dyn InvalidationSink>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.watch_invalidations(sink)
    }

    async fn update_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
        changes: &PrincipalChanges,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Principal, StoreError> {
        self.inner
            .update_principal(tenant, id, changes, updated_at, audit)
            .await
    }

    async fn list_principals(
        &self,
        tenant: &Tenant,
        after: Option<&PrincipalId>,
        limit: u32,
    ) -> Result<Vec<Principal>, StoreError> {
        self.inner.list_principals(tenant, after, limit).await
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.checkpoint().await
    }

    async fn delete_role(
        &self,
        tenant: &Tenant,
        name: &RoleName,
        audit: &AuditEvent,
    ) -> Result<Role, StoreError> {
        self.inner.delete_role(tenant, name, audit).await
    }

    async fn get_tenant_policy(&self, tenant: &Tenant) -> Result<TenantPolicy, StoreError> {
        self.inner.get_tenant_policy(tenant).await
    }

    async fn set_tenant_policy(
        &self,
        policy: &TenantPolicy,
        audit: &AuditEvent,
    ) -> Result<TenantPolicy, StoreError> {
        self.inner.set_tenant_policy(policy, audit).await
    }

    // Leak reports (issue 17).

    async fn report_leak(
        &self,
        hash: &SecretHash,
        report: &LeakReport,
    ) -> Result<LeakFinding, StoreError> {
        self.leak_lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.report_leak(hash, report).await
    }

    async fn known_secret_hashes(
        &self,
        hashes: &[SecretHash],
    ) -> Result<Vec<SecretHash>, StoreError> {
        self.inner.known_secret_hashes(hashes).await
    }

    async fn import_tokens(
        &self,
        tokens: &[NewToken],
        max_live_per_owner: u32,
        audits: &[AuditEvent],
    ) -> Result<Vec<Token>, StoreError> {
        self.inner
            .import_tokens(tokens, max_live_per_owner, audits)
            .await
    }

    async fn spend_credits(
        &self,
        id: &TokenId,
        cost: u32,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend, StoreError> {
        self.inner.spend_credits(id, cost, now).await
    }

    async fn lease_credits(
        &self,
        id: &TokenId,
        amount: u64,
        min_balance: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<CreditLease>, StoreError> {
        self.inner.lease_credits(id, amount, min_balance, now).await
    }

    async fn return_credits(
        &self,
        id: &TokenId,
        amount: u64,
        period: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner.return_credits(id, amount, period, now).await
    }

    async fn add_credits(
        &self,
        id: &TokenId,
        amount: u64,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.inner.add_credits(id, amount, now, audit).await
    }

    // Webhooks (issue 17).

    async fn create_webhook(
        &self,
        new: &NewWebhook,
        max_per_tenant: u32,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError> {
        self.inner.create_webhook(new, max_per_tenant, audit).await
    }

    async fn get_webhook(&self, id: &WebhookId) -> Result<Webhook, StoreError> {
        self.inner.get_webhook(id).await
    }

    async fn list_webhooks(
        &self,
        tenant: &Tenant,
        after: Option<&WebhookId>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError> {
        self.inner.list_webhooks(tenant, after, limit).await
    }

    async fn update_webhook(
        &self,
        id: &WebhookId,
        changes: &WebhookChanges,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError> {
        self.inner
            .update_webhook(id, changes, updated_at, audit)
            .await
    }

    async fn delete_webhook(
        &self,
        id: &WebhookId,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError> {
        self.inner.delete_webhook(id, audit).await
    }

    async fn list_webhook_deliveries(
        &self,
        webhook: &WebhookId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        self.inner
            .list_webhook_deliveries(webhook, before, limit)
            .await
    }

    async fn claim_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.inner
            .claim_webhook_deliveries(now, lease_until, limit)
            .await
    }

    async fn record_webhook_attempt(&self, attempt: &Attempt) -> Result<bool, StoreError> {
        self.inner.record_webhook_attempt(attempt).await
    }

    async fn create_session(&self, new: &NewSession, audit: &AuditEvent) -> Result<(), StoreError> {
        self.inner.create_session(new, audit).await
    }

    async fn find_session(&self, secret_hash: &SecretHash) -> Result<Option<Session>, StoreError> {
        self.inner.find_session(secret_hash).await
    }

    async fn redeem_session_code(
        &self,
        code_hash: &SecretHash,
        secret_hash: &SecretHash,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        self.inner
            .redeem_session_code(code_hash, secret_hash, now)
            .await
    }

    async fn touch_session(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.touch_session(id, at).await
    }

    async fn revoke_session(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.inner.revoke_session(id, at).await
    }

    async fn prune_sessions(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.inner.prune_sessions(before, limit).await
    }

    async fn set_portal_branding(
        &self,
        branding: &PortalBranding,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<PortalBranding, StoreError> {
        self.inner
            .set_portal_branding(branding, updated_at, audit)
            .await
    }

    async fn get_portal_branding(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<PortalBranding>, StoreError> {
        self.inner.get_portal_branding(tenant).await
    }
}
