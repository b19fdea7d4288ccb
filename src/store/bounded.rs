//! The store's own call deadline and error count, around every backend:
//! [`super::connect_sqlite`] and [`super::connect_postgres`] (and [`super::connect`], which picks
//! one by URL) wrap each backend they open in [`Bounded`], and the backends cannot be opened any
//! other way.
//!
//! A statement sent into a network partition gets neither an answer nor an error for minutes:
//! TCP gives up late, the pool's acquire timeout has already passed, and the database's
//! `statement_timeout` cannot help with a packet that never arrives, or an answer that never
//! returns. So every call is bounded here, and past its deadline it is `StoreError::Timeout`,
//! which every layer above reads as the store being unavailable (UNAVAILABLE, or Check's
//! STORE_UNAVAILABLE) rather than the caller's own deadline passing. Two budgets, by method:
//!
//! - Check's cache-miss reads, `find_credential` and `offline_api_statuses`, and its one write,
//!   `spend_credits` and `lease_credits`:
//!   `PoolOptions::check_deadline` (`TESSERA_CHECK_STORE_TIMEOUT_MS`), short, because a Check is
//!   on someone's request path and a cached answer or STORE_UNAVAILABLE beats waiting.
//! - every other method (admin calls, admin-key lookups, usage flushes and reads, bootstrap):
//!   `PoolOptions::call_deadline`, a connection's wait plus one statement at its limit plus a
//!   margin.
//!
//! Each failed call is counted once here, in `tessera_store_errors_total{operation}`, with the
//! method's name, a closed set (`connect` for opening the database, see [`count_failure`]).
//! Answers that are the store doing its job (`NotFound`, `RoleInUse`, `TokenRevoked`, `OwnerTokenLimit`,
//! `VersionMismatch`) are not failures and are not counted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::invalidation::{Invalidation, InvalidationSink};
use super::{AuditFilter, EventQuery};
use super::{
    Bootstrapped, CreditLease, CreditSpend, NewAdminKey, PersistKey, PoolOptions, PrincipalChanges,
    Rotation, Store, StoreError, TokenQuery, TokenUpdate, TokensNeedingAttention, UsageCutoffs,
};
use crate::domain::admin_key::{AdminKey, AdminKeyId};
use crate::domain::event::{Event, EventId};
use crate::domain::fields::{ApiScope, PrincipalId, RoleName, Tenant, TokenId};
use crate::domain::leak::{LeakFinding, LeakReport};
use crate::domain::model::{
    ApiStatus, AuditEvent, CredentialRecord, NewToken, Principal, Role, Suspension, Token,
};
use crate::domain::policy::TenantPolicy;
use crate::domain::session::{NewSession, PortalBranding, Session, SessionId};
use crate::domain::token::SecretHash;
use crate::domain::usage::{UsageBatch, UsageFigures, UsageQuery};
use crate::domain::webhook::{
    Attempt, DueDelivery, NewWebhook, Webhook, WebhookChanges, WebhookDelivery, WebhookId,
};

/// A backend whose every call ends by its deadline and whose failures are counted.
pub(super) struct Bounded<S> {
    inner: S,
    /// Check's cache-miss reads.
    check_deadline: Duration,
    /// Everything else.
    call_deadline: Duration,
}

impl<S: Store> Bounded<S> {
    pub(super) fn new(inner: S, options: &PoolOptions) -> Self {
        Self {
            inner,
            check_deadline: options.check_deadline,
            call_deadline: options.call_deadline(),
        }
    }

    /// One of Check's reads, within the Check deadline.
    async fn check_read<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        counted(operation, within(self.check_deadline, call).await)
    }

    /// Any other call, within the call deadline.
    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        counted(operation, within(self.call_deadline, call).await)
    }
}

/// `call`, or `StoreError::Timeout` once `deadline` passes (the call is dropped: a transaction
/// in it rolls back).
async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or(Err(StoreError::Timeout))
}

fn counted<T>(operation: &'static str, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(error) = &outcome {
        count_failure(operation, error);
    }
    outcome
}

/// Counts `error` in `tessera_store_errors_total{operation}` unless it is an answer rather than
/// a failure.
pub(super) fn count_failure(operation: &'static str, error: &StoreError) {
    let failure = match error {
        StoreError::NotFound(_)
        | StoreError::RoleInUse { .. }
        | StoreError::TokenRevoked
        | StoreError::NoCredits
        | StoreError::OwnerTokenLimit { .. }
        | StoreError::WebhookLimit { .. }
        | StoreError::VersionMismatch { .. } => false,
        StoreError::Conflict(_)
        | StoreError::Unavailable(_)
        | StoreError::Timeout
        | StoreError::Internal(_) => true,
    };
    if failure {
        metrics::counter!("tessera_store_errors_total", "operation" => operation).increment(1);
    }
}

#[async_trait]
impl<S: Store> Store for Bounded<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", self.inner.ping()).await
    }

    async fn create_token(
        &self,
        new: &NewToken,
        max_live_per_owner: u32,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        let call = self.inner.create_token(new, max_live_per_owner, audit);
        self.call("create_token", call).await
    }

    async fn get_token(&self, id: &TokenId) -> Result<Token, StoreError> {
        self.call("get_token", self.inner.get_token(id)).await
    }

    async fn list_tokens(&self, query: &TokenQuery) -> Result<Vec<Token>, StoreError> {
        self.call("list_tokens", self.inner.list_tokens(query))
            .await
    }

    async fn update_token(
        &self,
        update: &TokenUpdate<'_>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.call("update_token", self.inner.update_token(update, audit))
            .await
    }

    async fn rotate_token(
        &self,
        rotation: &Rotation,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.call("rotate_token", self.inner.rotate_token(rotation, audit))
            .await
    }

    async fn revoke_token(
        &self,
        id: &TokenId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.call("revoke_token", self.inner.revoke_token(id, at, audit))
            .await
    }

    async fn set_suspension(
        &self,
        id: &TokenId,
        suspension: Option<&Suspension>,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        let call = self.inner.set_suspension(id, suspension, at, audit);
        self.call("set_suspension", call).await
    }

    async fn find_credential(
        &self,
        hash: &SecretHash,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        self.check_read("find_credential", self.inner.find_credential(hash))
            .await
    }

    async fn upsert_principal(
        &self,
        principal: &Principal,
        audit: &AuditEvent,
    ) -> Result<Principal, StoreError> {
        let call = self.inner.upsert_principal(principal, audit);
        self.call("upsert_principal", call).await
    }

    async fn get_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
    ) -> Result<Principal, StoreError> {
        self.call("get_principal", self.inner.get_principal(tenant, id))
            .await
    }

    async fn upsert_role(&self, role: &Role, audit: &AuditEvent) -> Result<Role, StoreError> {
        self.call("upsert_role", self.inner.upsert_role(role, audit))
            .await
    }

    async fn list_roles(&self, tenant: &Tenant) -> Result<Vec<Role>, StoreError> {
        self.call("list_roles", self.inner.list_roles(tenant)).await
    }

    async fn get_roles(
        &self,
        tenant: &Tenant,
        names: &[RoleName],
    ) -> Result<Vec<Role>, StoreError> {
        self.call("get_roles", self.inner.get_roles(tenant, names))
            .await
    }

    async fn set_api_status(
        &self,
        status: &ApiStatus,
        audit: &AuditEvent,
    ) -> Result<ApiStatus, StoreError> {
        self.call("set_api_status", self.inner.set_api_status(status, audit))
            .await
    }

    async fn get_api_status(&self, scope: &ApiScope) -> Result<ApiStatus, StoreError> {
        // Read through the Check pool, but asked for by the admin API (GetApiStatus): Check
        // reads every status at once, with `offline_api_statuses`.
        self.call("get_api_status", self.inner.get_api_status(scope))
            .await
    }

    async fn offline_api_statuses(&self) -> Result<Vec<ApiStatus>, StoreError> {
        self.check_read("offline_api_statuses", self.inner.offline_api_statuses())
            .await
    }

    async fn list_audit_events(
        &self,
        tenants: Option<&[Tenant]>,
        filter: &AuditFilter,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let call = self
            .inner
            .list_audit_events(tenants, filter, after_id, limit);
        self.call("list_audit_events", call).await
    }

    async fn create_admin_key(
        &self,
        new: &NewAdminKey,
        audit: &AuditEvent,
    ) -> Result<AdminKey, StoreError> {
        let call = self.inner.create_admin_key(new, audit);
        self.call("create_admin_key", call).await
    }

    async fn get_admin_key(&self, id: &AdminKeyId) -> Result<AdminKey, StoreError> {
        self.call("get_admin_key", self.inner.get_admin_key(id))
            .await
    }

    async fn list_admin_keys(
        &self,
        include_revoked: bool,
        after: Option<&AdminKeyId>,
        limit: u32,
    ) -> Result<Vec<AdminKey>, StoreError> {
        let call = self.inner.list_admin_keys(include_revoked, after, limit);
        self.call("list_admin_keys", call).await
    }

    async fn find_admin_key(&self, hash: &SecretHash) -> Result<Option<AdminKey>, StoreError> {
        self.call("find_admin_key", self.inner.find_admin_key(hash))
            .await
    }

    async fn revoke_admin_key(
        &self,
        id: &AdminKeyId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<AdminKey, StoreError> {
        let call = self.inner.revoke_admin_key(id, at, audit);
        self.call("revoke_admin_key", call).await
    }

    async fn touch_admin_key(&self, id: &AdminKeyId, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.call("touch_admin_key", self.inner.touch_admin_key(id, at))
            .await
    }

    async fn count_admin_keys(&self) -> Result<u64, StoreError> {
        self.call("count_admin_keys", self.inner.count_admin_keys())
            .await
    }

    async fn bootstrap_admin_key(
        &self,
        new: &NewAdminKey,
        audit: &AuditEvent,
        persist: PersistKey<'_>,
    ) -> Result<Bootstrapped, StoreError> {
        let call = self.inner.bootstrap_admin_key(new, audit, persist);
        self.call("bootstrap_admin_key", call).await
    }

    async fn insert_audit_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.call("insert_audit_event", self.inner.insert_audit_event(event))
            .await
    }

    async fn report_retired_secret_use(&self, event: &AuditEvent) -> Result<bool, StoreError> {
        let call = self.inner.report_retired_secret_use(event);
        self.call("report_retired_secret_use", call).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        self.call("list_events", self.inner.list_events(query))
            .await
    }

    async fn event_seq(&self, id: &EventId) -> Result<Option<i64>, StoreError> {
        self.call("event_seq", self.inner.event_seq(id)).await
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.call("last_event_seq", self.inner.last_event_seq())
            .await
    }

    async fn prune_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.call("prune_events", self.inner.prune_events(before, limit))
            .await
    }

    async fn send_expiry_notices(&self, now: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        self.call(
            "send_expiry_notices",
            self.inner.send_expiry_notices(now, limit),
        )
        .await
    }

    async fn secret_hashes(&self, id: &TokenId) -> Result<Vec<SecretHash>, StoreError> {
        self.call("secret_hashes", self.inner.secret_hashes(id))
            .await
    }

    async fn write_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        self.call("write_usage", self.inner.write_usage(batch))
            .await
    }

    async fn read_usage(&self, query: &UsageQuery) -> Result<UsageFigures, StoreError> {
        self.call("read_usage", self.inner.read_usage(query)).await
    }

    async fn prune_usage(&self, cutoffs: &UsageCutoffs, limit: u32) -> Result<u64, StoreError> {
        self.call("prune_usage", self.inner.prune_usage(cutoffs, limit))
            .await
    }

    async fn count_tokens_needing_attention(
        &self,
        now: DateTime<Utc>,
        expiring_before: DateTime<Utc>,
        unused_since: DateTime<Utc>,
    ) -> Result<TokensNeedingAttention, StoreError> {
        let call = self
            .inner
            .count_tokens_needing_attention(now, expiring_before, unused_since);
        self.call("count_tokens_needing_attention", call).await
    }

    async fn publish(&self, invalidation: &Invalidation) -> Result<(), StoreError> {
        self.call("publish", self.inner.publish(invalidation)).await
    }

    /// Not a call: the feed runs until aborted, reconnecting on its own.
    fn watch_invalidations(
        &self,
        sink: Arc<dyn InvalidationSink>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.watch_invalidations(sink)
    }

    // Principals and roles beyond upsert (issue 13).

    async fn update_principal(
        &self,
        tenant: &Tenant,
        id: &PrincipalId,
        changes: &PrincipalChanges,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Principal, StoreError> {
        let call = self
            .inner
            .update_principal(tenant, id, changes, updated_at, audit);
        self.call("update_principal", call).await
    }

    async fn list_principals(
        &self,
        tenant: &Tenant,
        after: Option<&PrincipalId>,
        limit: u32,
    ) -> Result<Vec<Principal>, StoreError> {
        let call = self.inner.list_principals(tenant, after, limit);
        self.call("list_principals", call).await
    }

    async fn delete_role(
        &self,
        tenant: &Tenant,
        name: &RoleName,
        audit: &AuditEvent,
    ) -> Result<Role, StoreError> {
        self.call("delete_role", self.inner.delete_role(tenant, name, audit))
            .await
    }

    async fn get_tenant_policy(&self, tenant: &Tenant) -> Result<TenantPolicy, StoreError> {
        self.call("get_tenant_policy", self.inner.get_tenant_policy(tenant))
            .await
    }

    async fn set_tenant_policy(
        &self,
        policy: &TenantPolicy,
        audit: &AuditEvent,
    ) -> Result<TenantPolicy, StoreError> {
        let call = self.inner.set_tenant_policy(policy, audit);
        self.call("set_tenant_policy", call).await
    }

    // Leak reports (issue 17).

    async fn report_leak(
        &self,
        hash: &SecretHash,
        report: &LeakReport,
    ) -> Result<LeakFinding, StoreError> {
        self.call("report_leak", self.inner.report_leak(hash, report))
            .await
    }

    async fn known_secret_hashes(
        &self,
        hashes: &[SecretHash],
    ) -> Result<Vec<SecretHash>, StoreError> {
        let call = self.inner.known_secret_hashes(hashes);
        self.call("known_secret_hashes", call).await
    }

    async fn import_tokens(
        &self,
        tokens: &[NewToken],
        max_live_per_owner: u32,
        audits: &[AuditEvent],
    ) -> Result<Vec<Token>, StoreError> {
        let call = self.inner.import_tokens(tokens, max_live_per_owner, audits);
        self.call("import_tokens", call).await
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        self.call("checkpoint", self.inner.checkpoint()).await
    }

    async fn spend_credits(
        &self,
        id: &TokenId,
        cost: u32,
        now: DateTime<Utc>,
    ) -> Result<CreditSpend, StoreError> {
        self.check_read("spend_credits", self.inner.spend_credits(id, cost, now))
            .await
    }

    async fn lease_credits(
        &self,
        id: &TokenId,
        amount: u64,
        min_balance: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<CreditLease>, StoreError> {
        self.check_read(
            "lease_credits",
            self.inner.lease_credits(id, amount, min_balance, now),
        )
        .await
    }

    async fn return_credits(
        &self,
        id: &TokenId,
        amount: u64,
        period: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.call(
            "return_credits",
            self.inner.return_credits(id, amount, period, now),
        )
        .await
    }

    async fn add_credits(
        &self,
        id: &TokenId,
        amount: u64,
        now: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Token, StoreError> {
        self.call(
            "add_credits",
            self.inner.add_credits(id, amount, now, audit),
        )
        .await
    }

    // Webhooks (issue 17).

    async fn create_webhook(
        &self,
        new: &NewWebhook,
        max_per_tenant: u32,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError> {
        let call = self.inner.create_webhook(new, max_per_tenant, audit);
        self.call("create_webhook", call).await
    }

    async fn get_webhook(&self, id: &WebhookId) -> Result<Webhook, StoreError> {
        self.call("get_webhook", self.inner.get_webhook(id)).await
    }

    async fn list_webhooks(
        &self,
        tenant: &Tenant,
        after: Option<&WebhookId>,
        limit: u32,
    ) -> Result<Vec<Webhook>, StoreError> {
        let call = self.inner.list_webhooks(tenant, after, limit);
        self.call("list_webhooks", call).await
    }

    async fn update_webhook(
        &self,
        id: &WebhookId,
        changes: &WebhookChanges,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError> {
        let call = self.inner.update_webhook(id, changes, updated_at, audit);
        self.call("update_webhook", call).await
    }

    async fn delete_webhook(
        &self,
        id: &WebhookId,
        audit: &AuditEvent,
    ) -> Result<Webhook, StoreError> {
        self.call("delete_webhook", self.inner.delete_webhook(id, audit))
            .await
    }

    async fn list_webhook_deliveries(
        &self,
        webhook: &WebhookId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let call = self.inner.list_webhook_deliveries(webhook, before, limit);
        self.call("list_webhook_deliveries", call).await
    }

    async fn claim_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let call = self.inner.claim_webhook_deliveries(now, lease_until, limit);
        self.call("claim_webhook_deliveries", call).await
    }

    async fn record_webhook_attempt(&self, attempt: &Attempt) -> Result<bool, StoreError> {
        let call = self.inner.record_webhook_attempt(attempt);
        self.call("record_webhook_attempt", call).await
    }

    async fn create_session(&self, new: &NewSession, audit: &AuditEvent) -> Result<(), StoreError> {
        let call = self.inner.create_session(new, audit);
        self.call("create_session", call).await
    }

    async fn find_session(&self, secret_hash: &SecretHash) -> Result<Option<Session>, StoreError> {
        let call = self.inner.find_session(secret_hash);
        self.call("find_session", call).await
    }

    async fn redeem_session_code(
        &self,
        code_hash: &SecretHash,
        secret_hash: &SecretHash,
        now: DateTime<Utc>,
    ) -> Result<Option<Session>, StoreError> {
        let call = self.inner.redeem_session_code(code_hash, secret_hash, now);
        self.call("redeem_session_code", call).await
    }

    async fn touch_session(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let call = self.inner.touch_session(id, at);
        self.call("touch_session", call).await
    }

    async fn revoke_session(&self, id: &SessionId, at: DateTime<Utc>) -> Result<(), StoreError> {
        let call = self.inner.revoke_session(id, at);
        self.call("revoke_session", call).await
    }

    async fn prune_sessions(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let call = self.inner.prune_sessions(before, limit);
        self.call("prune_sessions", call).await
    }

    async fn set_portal_branding(
        &self,
        branding: &PortalBranding,
        updated_at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<PortalBranding, StoreError> {
        let call = self.inner.set_portal_branding(branding, updated_at, audit);
        self.call("set_portal_branding", call).await
    }

    async fn get_portal_branding(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<PortalBranding>, StoreError> {
        let call = self.inner.get_portal_branding(tenant);
        self.call("get_portal_branding", call).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
    use sqlx::{Connection, SqliteConnection};

    use super::*;
    use crate::store::SqliteStore;

    /// Runs `test` on a runtime of its own with `recorder` as this thread's metrics recorder,
    /// so what it counts is seen apart from every other test's.
    fn counting(recorder: &PrometheusRecorder, test: impl Future<Output = ()>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        metrics::with_local_recorder(recorder, || runtime.block_on(test));
    }

    fn errors_counted(recorder: &PrometheusRecorder, operation: &str) -> u64 {
        let series = format!("tessera_store_errors_total{{operation=\"{operation}\"}} ");
        let rendered = recorder.handle().render();
        rendered
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0, |count| count.parse().expect("a count"))
    }

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}", dir.path().join("bounded.db").display())
    }

    async fn bounded(url: &str, options: &PoolOptions) -> Arc<Bounded<SqliteStore>> {
        let store = SqliteStore::connect(url, options).await.expect("store");
        Arc::new(Bounded::new(store, options))
    }

    #[test]
    fn a_failed_call_is_counted_once_under_its_method_and_an_answer_is_not_counted() {
        let recorder = PrometheusBuilder::new().build_recorder();
        counting(&recorder, async {
            let dir = tempfile::tempdir().expect("dir");
            let url = sqlite_url(&dir);
            let store = bounded(&url, &PoolOptions::default()).await;
            let mut saboteur = SqliteConnection::connect(&url).await.expect("connects");
            sqlx::query("DROP TABLE api_status")
                .execute(&mut saboteur)
                .await
                .expect("table dropped");

            let failed = store.offline_api_statuses().await;
            assert!(matches!(failed, Err(StoreError::Internal(_))), "{failed:?}");
            let unknown = store.get_token(&TokenId::generate()).await;
            assert!(
                matches!(unknown, Err(StoreError::NotFound("token"))),
                "{unknown:?}"
            );
        });

        assert_eq!(errors_counted(&recorder, "offline_api_statuses"), 1);
        assert_eq!(errors_counted(&recorder, "get_token"), 0);
        let rendered = recorder.handle().render();
        assert!(
            !rendered
                .lines()
                .any(|line| line.starts_with("tessera_store_errors_total ")),
            "no series without the operation: {rendered}"
        );
    }

    #[test]
    fn a_check_read_that_cannot_get_a_connection_times_out_at_the_check_deadline() {
        let recorder = PrometheusBuilder::new().build_recorder();
        counting(&recorder, async {
            // An in-memory database: one pool, here of one connection, for Check and admin
            // alike, and a connection wait far longer than the Check deadline.
            let options = PoolOptions {
                max_connections: 1,
                check_max_connections: 1,
                acquire_timeout: Duration::from_secs(30),
                check_deadline: Duration::from_millis(100),
                ..PoolOptions::default()
            };
            let store = bounded("sqlite::memory:", &options).await;
            // A bootstrap whose key file never finishes writing keeps the only connection.
            let (holding, held) = tokio::sync::oneshot::channel();
            let holder = tokio::spawn({
                let store = store.clone();
                async move {
                    let persist: PersistKey<'_> = Box::pin(async move {
                        let _ = holding.send(());
                        std::future::pending().await
                    });
                    let (new, audit, _) = crate::admin::keys::bootstrap_key(Utc::now());
                    store.bootstrap_admin_key(&new, &audit, persist).await
                }
            });
            held.await.expect("the connection is held");

            let started = Instant::now();
            let lookup = store.find_credential(&SecretHash::of("missed")).await;
            assert!(matches!(lookup, Err(StoreError::Timeout)), "{lookup:?}");
            let statuses = store.offline_api_statuses().await;
            assert!(matches!(statuses, Err(StoreError::Timeout)), "{statuses:?}");
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(200) && took < Duration::from_secs(5),
                "two reads at 100 ms each, not at the 30 s connection wait: {took:?}"
            );
            holder.abort();
        });

        assert_eq!(errors_counted(&recorder, "find_credential"), 1);
        assert_eq!(errors_counted(&recorder, "offline_api_statuses"), 1);
    }

    #[test]
    fn an_admin_write_stuck_behind_another_writer_times_out_at_the_call_deadline() {
        let recorder = PrometheusBuilder::new().build_recorder();
        counting(&recorder, async {
            let dir = tempfile::tempdir().expect("dir");
            let url = sqlite_url(&dir);
            // A call deadline of 50 + 50 ms + 1 s, well short of SQLite's 5 s busy timeout, and
            // a Check deadline that would have ended the call long before.
            let options = PoolOptions {
                acquire_timeout: Duration::from_millis(50),
                statement_timeout: Duration::from_millis(50),
                check_deadline: Duration::from_millis(10),
                ..PoolOptions::default()
            };
            let store = bounded(&url, &options).await;
            let mut writer = SqliteConnection::connect(&url).await.expect("connects");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut writer)
                .await
                .expect("write lock held");

            let started = Instant::now();
            let inserted = store
                .touch_admin_key(&AdminKeyId::generate(), Utc::now())
                .await;
            let took = started.elapsed();
            assert!(matches!(inserted, Err(StoreError::Timeout)), "{inserted:?}");
            assert!(
                took >= options.call_deadline() && took < Duration::from_secs(4),
                "ended at the call deadline ({:?}), not the busy timeout: {took:?}",
                options.call_deadline()
            );
        });

        assert_eq!(errors_counted(&recorder, "touch_admin_key"), 1);
    }
}
