//! The hot path: `Authorizer::check` answers "may this token do this, from here, now?".
//!
//! API status (cached) → token missing/malformed (no lookup at all) → credential from the cache,
//! or one coalesced store load → the pure `domain::decision::evaluate` → rate limits. A cache hit
//! makes no database round trip and holds no lock across an await. Store failures become
//! `STORE_UNAVAILABLE`, never `TOKEN_UNKNOWN`: an outage must not look like a bad token.
//!
//! A signing token's key is opened with the master key when its credential enters the cache,
//! never per Check; verified signatures go to the replay guard (`replay`).
//!
//! With the fleet's shared state (`Authorizer::with_fleet`, `TESSERA_REDIS_URL`), rate limits
//! are kept for all replicas in Redis, and a signature is accepted only if neither the fleet
//! nor this replica has seen it. While Redis cannot answer within its bound the fleet decides
//! limits locally (`fleet`), and signatures fall back to this replica's guard, or are refused
//! with `STORE_UNAVAILABLE` when the deployment chose to fail closed.

pub mod cache;
mod fill;
pub mod intern;
pub mod leases;
pub mod rate_limit;
pub mod replay;

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;

use crate::domain::decision::{
    CheckInput, Credential, DenyReason, check_credential, check_permission,
};
use crate::domain::fields::{ApiScope, Tenant, TokenId};
use crate::domain::metadata::Metadata;
use crate::domain::model::{ApiStatus, AuditEvent, CredentialRecord};
use crate::domain::permission::Grant;
use crate::domain::signature::{self, FreshSignature, MasterKey, ReplayGuard, Verifier};
use crate::domain::token::{self, MalformedToken, SecretHash, TokenPrefix};
use crate::fleet::{Fleet, FleetStatus, ReplayVerdict};
use crate::store::invalidation::{Invalidation, InvalidationSink};
use crate::store::{CreditSpend, Store, StoreError};
use crate::usage::UsageHook;

pub use cache::CacheSettings;
use cache::{CredentialCache, Entry};
use rate_limit::RateLimits;
use replay::ReplayCache;

/// The state of the rate limit that applied to a Check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub outcome: Result<(), DenyReason>,
    /// Safe to show to the end client.
    pub message: Cow<'static, str>,
    /// The identified token, shared with the cache (no copy per Check).
    pub credential: Option<Arc<Credential>>,
    pub rate_limit: Option<RateLimitStatus>,
    /// When denied for a permission: what the token lacks (see `PermissionQuery::missing`).
    pub missing_permissions: Vec<String>,
    /// A token with credits whose balance was reached: what is left after this Check.
    pub credits_remaining: Option<u64>,
}

impl Decision {
    fn deny(reason: DenyReason) -> Self {
        Self {
            outcome: Err(reason),
            message: Cow::Borrowed(reason.message()),
            credential: None,
            rate_limit: None,
            missing_permissions: Vec::new(),
            credits_remaining: None,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome.is_ok()
    }

    pub fn http_status(&self) -> u16 {
        match self.outcome {
            Ok(()) => 200,
            Err(reason) => reason.http_status(),
        }
    }

    /// The token's metadata, when allowed and it has any.
    pub fn metadata(&self) -> Option<&Metadata> {
        match (&self.outcome, &self.credential) {
            (Ok(()), Some(credential)) => credential.metadata.as_deref(),
            _ => None,
        }
    }

    /// The effective permissions, when allowed.
    pub fn permissions(&self) -> &[Grant] {
        match (&self.outcome, &self.credential) {
            (Ok(()), Some(credential)) => &credential.effective,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthzSettings {
    pub prefix: TokenPrefix,
    pub cache: CacheSettings,
    /// The limit of tokens whose `rate_limit_per_minute` is 0.
    pub default_rate_limit_per_minute: NonZeroU32,
    pub signing: SigningSettings,
    /// Look up secrets that are not in Tessera's format, for imported tokens
    /// (`TESSERA_ACCEPT_IMPORTED_TOKENS`); without it they are TOKEN_MALFORMED, with no lookup.
    pub accept_imported_tokens: bool,
}

/// Request signing: the key that opens stored signing keys, and the replay guard's bounds.
#[derive(Debug, Clone)]
pub struct SigningSettings {
    /// Opens the signing keys in the store; None: no signature verifies.
    pub master_key: Option<MasterKey>,
    /// Accepted difference, either way, between a signature's timestamp and now.
    pub window: Duration,
    /// Most signatures the replay guard remembers (per replica), over all tokens.
    pub replay_capacity: u64,
    /// Most signatures it remembers per token, so no token pushes out another's (see
    /// `replay`).
    pub replay_token_quota: u64,
}

impl Default for SigningSettings {
    fn default() -> Self {
        Self {
            master_key: None,
            window: signature::DEFAULT_WINDOW,
            replay_capacity: replay::DEFAULT_CAPACITY,
            replay_token_quota: replay::DEFAULT_TOKEN_QUOTA,
        }
    }
}

/// Counters the tests and benchmarks read directly (metrics export them too).
#[derive(Debug, Default)]
pub struct AuthzStats {
    pub store_lookups: AtomicU64,
    pub retired_secret_uses: AtomicU64,
}

/// A retired secret is reported to the audit log at most once per token in this window, so a
/// client hammering with an old secret cannot flood the database.
const LEAK_REPORT_WINDOW: Duration = Duration::from_secs(60);

pub struct Authorizer {
    store: Arc<dyn Store>,
    prefix: TokenPrefix,
    cache: CredentialCache,
    rate_limits: RateLimits,
    /// Opens signing keys when credentials enter the cache.
    master_key: Option<MasterKey>,
    /// Holds the parts cached credentials share once (`intern`).
    interner: intern::Interner,
    replay_guard: ReplayCache,
    /// The fleet's replay guard, when Redis is configured; `replay_guard` still records every
    /// signature this replica accepts, for when Redis is lost.
    shared_replay: Option<SharedReplay>,
    stats: AuthzStats,
    leak_reports: moka::sync::Cache<TokenId, ()>,
    /// Where each decided Check of an identified token is recorded (write-behind, never awaits).
    usage: UsageHook,
    /// An outage fails every uncached Check; one log line a second says so, the metric counts all.
    store_warnings: LogThrottle,
    /// What a Check naming no tenant is for (`TESSERA_DEFAULT_TENANT`).
    default_tenant: Tenant,
    /// Secrets in another format than Tessera's are looked up (imported tokens).
    accept_imported_tokens: bool,
    /// Credits leased from the store per metered token (`leases`).
    leases: Arc<leases::Leases>,
}

/// The fleet's replay guard and what to do when it cannot answer.
struct SharedReplay {
    fleet: Fleet,
    /// Refuse signed requests (`STORE_UNAVAILABLE`) rather than fall back to this replica's
    /// guard while the fleet cannot answer.
    fail_closed: bool,
}

/// `tessera_checks_total{reason}` of an outcome, each resolved once rather than looked up in
/// the registry on every Check. Slot 0 is `allowed`, a reason's is `reason as usize + 1`.
fn count_check(outcome: Result<(), DenyReason>) {
    const SLOTS: usize = DenyReason::ALL.len() + 1;
    static CHECKS: [std::sync::OnceLock<metrics::Counter>; SLOTS] =
        [const { std::sync::OnceLock::new() }; SLOTS];
    let (slot, label) = match outcome {
        Ok(()) => (0, "allowed"),
        Err(reason) => (reason as usize + 1, reason.as_str()),
    };
    let resolve = || metrics::counter!("tessera_checks_total", "reason" => label);
    match CHECKS.get(slot) {
        Some(cell) => cell.get_or_init(resolve).increment(1),
        // A reason added without its place in `DenyReason::ALL`: still counted.
        None => resolve().increment(1),
    }
}

/// Lets a repeated warning through at most once a second.
#[derive(Debug, Default)]
struct LogThrottle {
    last_second: AtomicU64,
}

impl LogThrottle {
    fn allow(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        self.last_second.swap(now, Ordering::Relaxed) != now
    }
}

impl Authorizer {
    pub fn new(store: Arc<dyn Store>, settings: AuthzSettings) -> Self {
        Self {
            store,
            prefix: settings.prefix,
            cache: CredentialCache::new(&settings.cache),
            rate_limits: RateLimits::new(settings.default_rate_limit_per_minute),
            master_key: settings.signing.master_key,
            interner: intern::Interner::new(),
            replay_guard: ReplayCache::new(
                settings.signing.window,
                settings.signing.replay_capacity,
                settings.signing.replay_token_quota,
            ),
            shared_replay: None,
            stats: AuthzStats::default(),
            leak_reports: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(LEAK_REPORT_WINDOW)
                .build(),
            usage: UsageHook::default(),
            store_warnings: LogThrottle::default(),
            default_tenant: Tenant::default(),
            accept_imported_tokens: settings.accept_imported_tokens,
            leases: Arc::default(),
        }
    }

    /// Gives back credit leases idle for `leases::LEASE_IDLE`, in a task, for as long as this
    /// authorizer lives.
    pub fn start_credit_returns(&self) -> tokio::task::JoinHandle<()> {
        leases::Leases::start_returns(Arc::downgrade(&self.leases), self.store.clone())
    }

    /// Gives back every credit lease (graceful shutdown, once no Check runs any more).
    pub async fn return_credit_leases(&self) {
        self.leases.return_all(self.store.as_ref()).await;
    }

    /// Checks naming no tenant are for `tenant` (without it: the built-in `default`).
    pub fn with_default_tenant(mut self, tenant: Tenant) -> Self {
        self.default_tenant = tenant;
        self
    }

    /// What a Check naming no tenant is for.
    pub fn default_tenant(&self) -> &Tenant {
        &self.default_tenant
    }

    /// Records usage of every Check through `usage` (without it, nothing is recorded).
    pub fn with_usage(mut self, usage: UsageHook) -> Self {
        self.usage = usage;
        self
    }

    /// Keeps rate limits and the replay guard for the whole fleet in Redis. `replay_fail_closed`:
    /// refuse signed requests while Redis cannot answer, instead of using this replica's guard.
    pub fn with_fleet(mut self, fleet: Fleet, replay_fail_closed: bool) -> Self {
        self.rate_limits = self.rate_limits.with_fleet(fleet.clone());
        self.shared_replay = Some(SharedReplay {
            fleet,
            fail_closed: replay_fail_closed,
        });
        self
    }

    pub async fn check(&self, presented: &str, input: &CheckInput) -> Decision {
        let decision = self.decide(presented, input).await;
        count_check(decision.outcome);
        self.usage
            .record(input, decision.outcome, decision.credential.as_ref());
        decision
    }

    async fn decide(&self, presented: &str, input: &CheckInput) -> Decision {
        if let Some(offline) = self.offline_decision(&input.tenant).await {
            return offline;
        }
        if presented.is_empty() {
            return Decision::deny(DenyReason::TokenMissing);
        }
        match token::parse(presented, &self.prefix) {
            Ok(_) => {}
            // Not Tessera's format at all: perhaps an imported token's original secret, looked
            // up by its hash (and negatively cached like any other) only where tokens were
            // imported, and only when short enough to be one.
            Err(MalformedToken::WrongPrefix)
                if self.accept_imported_tokens
                    && presented.len() <= token::MAX_IMPORTED_SECRET_LEN => {}
            // Tessera's format with a bad length, alphabet or checksum: no lookup.
            Err(_) => return Decision::deny(DenyReason::TokenMalformed),
        }
        let hash = SecretHash::of(presented);
        let credential = match self
            .cache
            .credential(hash, self.load_credential(hash))
            .await
        {
            Ok(Some(credential)) => credential,
            Ok(None) => return Decision::deny(DenyReason::TokenUnknown),
            Err(error) => {
                if self.store_warnings.allow() {
                    tracing::warn!(error = %error, "credential lookup failed");
                }
                return Decision::deny(DenyReason::StoreUnavailable);
            }
        };
        if credential.is_retired_secret(input.now) {
            self.report_retired_secret(&credential);
        }
        let (mut outcome, rate_limit) = match self.evaluate(&credential, input).await {
            Err(reason) => (Err(reason), None),
            // Only requests that pass every other check spend rate-limit budget.
            Ok(()) => match self.rate_limits.check(&credential).await {
                Ok(status) => (Ok(()), Some(status)),
                Err(status) => (Err(DenyReason::RateLimited), Some(status)),
            },
        };
        // Credits last: only a Check allowed by everything else spends any.
        let mut credits_remaining = None;
        if outcome.is_ok() && credential.metered {
            (outcome, credits_remaining) = self.spend_credits(&credential, input).await;
        }
        let mut decision = Decision {
            message: Cow::Borrowed(match outcome {
                Ok(()) => "allowed",
                Err(reason) => reason.message(),
            }),
            outcome,
            credential: None,
            rate_limit,
            missing_permissions: Vec::new(),
            credits_remaining,
        };
        if outcome == Err(DenyReason::PolicyViolation)
            && let Some(hold) = &credential.policy_hold
        {
            let broken: Vec<&str> = hold
                .broken_at(input.now)
                .into_iter()
                .map(|rule| rule.as_str())
                .collect();
            decision.message = Cow::Owned(format!("{}: {}", decision.message, broken.join(", ")));
        }
        if outcome == Err(DenyReason::PermissionDenied) {
            // Off the allowed path: a deny names what was missing.
            let missing = input.permissions.missing(&credential.effective);
            decision.message = Cow::Owned(format!("{}: {missing}", decision.message));
            decision.missing_permissions = missing
                .required()
                .chain(missing.any())
                .map(ToString::to_string)
                .collect();
        }
        decision.credential = Some(credential);
        decision
    }

    /// Spends the Check's cost of a metered token's credits: from this replica's lease, or on
    /// the store in one conditional statement (`leases`). The store unreachable when needed:
    /// refused with STORE_UNAVAILABLE, never allowed unpaid.
    async fn spend_credits(
        &self,
        credential: &Credential,
        input: &CheckInput,
    ) -> (Result<(), DenyReason>, Option<u64>) {
        match self
            .leases
            .spend(
                self.store.as_ref(),
                &credential.token_id,
                input.cost,
                input.now,
            )
            .await
        {
            Ok(CreditSpend::Spent { remaining }) => (Ok(()), Some(remaining)),
            Ok(CreditSpend::Exhausted { remaining }) => {
                (Err(DenyReason::CreditsExhausted), Some(remaining))
            }
            // The credits were removed since the credential was cached.
            Ok(CreditSpend::Unmetered) => (Ok(()), None),
            Err(error) => {
                if self.store_warnings.allow() {
                    tracing::warn!(error = %error, "spending credits failed");
                }
                (Err(DenyReason::StoreUnavailable), None)
            }
        }
    }

    /// `domain::decision::evaluate`'s order, with the replay guard between its two halves
    /// because the fleet's guard is asynchronous.
    async fn evaluate(
        &self,
        credential: &Credential,
        input: &CheckInput,
    ) -> Result<(), DenyReason> {
        let local_guard = self.replay_guard.of(&credential.token_id);
        if let Some(fresh) = check_credential(credential, input, local_guard.window())? {
            self.first_use(credential, fresh, &local_guard).await?;
        }
        check_permission(credential, input)
    }

    /// Accepts a verified signature only if neither the fleet nor this replica has seen it.
    async fn first_use(
        &self,
        credential: &Credential,
        fresh: FreshSignature,
        local_guard: &impl ReplayGuard,
    ) -> Result<(), DenyReason> {
        if let Some(shared) = &self.shared_replay {
            match shared
                .fleet
                .first_use(&credential.token_id, &fresh.id, fresh.remember_for)
                .await
            {
                ReplayVerdict::Replayed => return Err(DenyReason::Replayed),
                ReplayVerdict::Unavailable if shared.fail_closed => {
                    return Err(DenyReason::StoreUnavailable);
                }
                // Recorded here too: if Redis is lost, this replica still refuses what it took.
                ReplayVerdict::First | ReplayVerdict::Unavailable => {}
            }
        }
        if local_guard.first_use(fresh.id, fresh.remember_for) {
            Ok(())
        } else {
            Err(DenyReason::Replayed)
        }
    }

    async fn load_credential(&self, hash: SecretHash) -> Result<Entry, StoreError> {
        self.stats.store_lookups.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_store_credential_lookups_total").increment(1);
        // The store bounds the read by its Check deadline (`PoolOptions::check_deadline`).
        let record = self.store.find_credential(&hash).await?;
        Ok(record.map(|record| {
            let verifier = self.signing_verifier(&record);
            let credential = Credential::from_record(&record).with_verifier(verifier);
            Arc::new(self.interner.share(credential))
        }))
    }

    /// The record's signing key, opened once here so that Check only clones a keyed HMAC. A key
    /// that cannot be opened leaves the token unable to pass a signature check: fail closed.
    fn signing_verifier(&self, record: &CredentialRecord) -> Option<Verifier> {
        let sealed = record.signing_key.as_ref()?;
        let token_id = &record.token.id;
        let Some(master_key) = &self.master_key else {
            tracing::error!(token_id = %token_id, "a token has a signing key but no master key is configured; its signatures cannot verify");
            return None;
        };
        match master_key.open(sealed, token_id) {
            Ok(key) => Some(key.verifier()),
            Err(error) => {
                tracing::error!(token_id = %token_id, error = %error, "cannot open a signing key; its signatures cannot verify");
                None
            }
        }
    }

    /// API_OFFLINE when the tenant's API, or every API (`*`), is switched off. An unreadable
    /// status counts as online: it is an operational switch, and the token checks that follow
    /// still fail closed. The switched-off scopes are read and cached all at once, so a Check
    /// naming a tenant that does not exist costs no store lookup and no cache entry.
    async fn offline_decision(&self, tenant: &Tenant) -> Option<Decision> {
        let load = async {
            let statuses = self.store.offline_api_statuses().await?;
            let by_scope: HashMap<ApiScope, ApiStatus> = statuses
                .into_iter()
                .map(|status| (status.scope.clone(), status))
                .collect();
            Ok(Arc::new(by_scope))
        };
        let offline = match self.cache.offline_apis(load).await {
            Ok(offline) => offline,
            Err(error) => {
                if self.store_warnings.allow() {
                    tracing::warn!(error = %error, "api statuses unreadable; treating as online");
                }
                return None;
            }
        };
        if offline.is_empty() {
            return None;
        }
        for scope in [ApiScope::all(), ApiScope::from(tenant.clone())] {
            if let Some(status) = offline.get(&scope)
                && !status.online
            {
                let mut decision = Decision::deny(DenyReason::ApiOffline);
                if !status.message.is_empty() {
                    decision.message = Cow::Owned(status.message.clone());
                }
                return Some(decision);
            }
        }
        None
    }

    /// A secret rotated away (after its grace period) is still in use: someone holds an old
    /// secret. Counted every time, audited at most once per token per window, off the hot path.
    fn report_retired_secret(&self, credential: &Credential) {
        self.stats
            .retired_secret_uses
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_retired_secret_uses_total").increment(1);
        // A cheap local filter, so a client hammering with an old secret costs this replica one
        // store write a window; the store makes the once-a-minute rule hold across concurrent
        // Checks and replicas.
        let first_here = self
            .leak_reports
            .entry(credential.token_id.clone())
            .or_insert(())
            .is_fresh();
        if !first_here {
            return;
        }
        tracing::warn!(token_id = %credential.token_id, "rotated-out secret presented");
        let event = AuditEvent {
            id: 0,
            time: Utc::now(),
            actor: "tessera".to_owned(),
            action: "token.retired_secret_used".to_owned(),
            tenant: credential.tenant.to_string(),
            token_id: Some(credential.token_id.clone()),
            principal_id: Some(credential.owner_id.clone()),
            summary: "a secret that was rotated away was presented again; whoever holds it still uses an old secret"
                .to_owned(),
            admin_key: String::new(),
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.report_retired_secret_use(&event).await {
                tracing::warn!(error = %error, "cannot audit a retired secret use");
            }
        });
    }

    /// The fleet's shared state, when Redis is configured: degraded or not, replicas counted.
    pub fn shared_state(&self) -> Option<FleetStatus> {
        self.shared_replay
            .as_ref()
            .map(|shared| shared.fleet.status())
    }

    pub fn stats(&self) -> &AuthzStats {
        &self.stats
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }
}

#[async_trait::async_trait]
impl InvalidationSink for Authorizer {
    async fn invalidate(&self, invalidation: &Invalidation) {
        self.cache.invalidate(invalidation).await;
        // A write of a token gives its lease back (kept by the store unless the credits were
        // replaced or refilled), so the next Check leases from the written balance.
        match invalidation {
            Invalidation::Token(id) | Invalidation::TokenSecrets { token_id: id, .. } => {
                self.leases.forget(self.store.as_ref(), id).await;
            }
            Invalidation::Everything => self.leases.return_all(self.store.as_ref()).await,
            _ => {}
        }
    }
}
