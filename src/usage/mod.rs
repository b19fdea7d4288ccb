//! Usage statistics, write-behind: Check never writes to the database for them.
//!
//! - [`recorder`]: the hot path's `record`, straight into per-thread aggregates (per token,
//!   minute and endpoint, and a ring of recent calls), bounded, never waiting on I/O.
//! - [`Usage`]: the background tasks (flush every `flush_interval` in one transaction, and once
//!   more on shutdown; retention pruning in small batches and the token gauges every minute)
//!   and the ListUsage query.
//! - [`user_agent`] and [`geoip`]: browser, OS and location of the last use, worked out when
//!   ListUsage asks, never on the hot path.
//!
//! A crash loses at most one flush interval of usage; a failed flush is retried with the next
//! one (up to `MAX_RETRY_BATCHES`), so a database outage loses nothing shorter than that.

pub mod geoip;
pub mod recorder;
pub mod user_agent;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::report_handle::{KeySource, ReportHandleKey};
use crate::domain::usage::{
    self, DailyCount, EndpointBound, UsageBatch, UsageFigures, UsageQuery, UsageScope,
};
use crate::store::{Store, StoreError, UsageCutoffs};
pub use geoip::GeoIp;
pub use recorder::{Recorder, Report, UsageHook};

/// Failed flushes kept for retry (at the default interval, five minutes of outage); beyond
/// that the oldest is dropped and its calls counted as lost.
const MAX_RETRY_BATCHES: usize = 300;
/// How often retention pruning and the token gauges run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows per table per pruning statement, and the pause between statements, so pruning never
/// holds locks or the database for long.
const PRUNE_BATCH: u32 = 1000;
const PRUNE_PAUSE: Duration = Duration::from_millis(20);
/// Daily rollups are kept a year (and a day, so a full year always shows).
const DAILY_RETENTION: chrono::Duration = chrono::Duration::days(366);
/// The gauges' windows: tokens expiring within a week, tokens unused for 30 days.
pub const EXPIRING_WITHIN: chrono::Duration = chrono::Duration::days(7);
pub const UNUSED_FOR: chrono::Duration = chrono::Duration::days(30);
/// Longest daily series ListUsage returns.
pub const MAX_DAYS: u32 = 366;
pub const DEFAULT_DAYS: u32 = 30;

#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// Off: Check records nothing (ListUsage still answers from what is stored).
    pub enabled: bool,
    pub flush_interval: Duration,
    /// How long minute buckets and recent calls are kept.
    pub retention: chrono::Duration,
    /// Most counters (token × minute × endpoint) held between two flushes; calls needing a new
    /// one beyond that are dropped and counted.
    pub buffer_size: usize,
    /// Distinct endpoints per token and UTC day kept apart in the stored counters; calls to
    /// further endpoints are counted as `other`.
    pub endpoints_per_day: EndpointBound,
    pub geoip: Option<Arc<GeoIp>>,
    /// What ReportUsage accepts.
    pub reports: ReportSettings,
}

/// How long after its Check a report handle is accepted, by default: long enough for any
/// upstream request, short enough that a leaked handle is soon worthless.
pub const DEFAULT_HANDLE_LIFETIME: chrono::Duration = chrono::Duration::hours(1);
/// How far ahead of this server's clock a report's `time` (or a handle minted by another
/// replica) may be: the replicas' and callers' clocks differ a little.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// ReportUsage's rules: which key signs Check's report handles, and whether bare token ids
/// are still accepted.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub key: ReportHandleKey,
    /// Logged at start, so an operator sees when a fleet's replicas cannot verify each other's
    /// handles.
    pub key_source: KeySource,
    /// Reports naming a bare `token_id` without a handle (the old protocol): off by default,
    /// since anyone reaching the port could report for any token.
    pub accept_bare_token_ids: bool,
    /// Handles older than this are refused.
    pub handle_lifetime: chrono::Duration,
}

impl Default for ReportSettings {
    /// A random key of this process, handles required.
    fn default() -> Self {
        Self {
            key: ReportHandleKey::random(),
            key_source: KeySource::RandomPerProcess,
            accept_bare_token_ids: false,
            handle_lifetime: DEFAULT_HANDLE_LIFETIME,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for UsageError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(entity) => Self::NotFound(entity),
            unavailable @ (StoreError::Unavailable(_) | StoreError::Timeout) => {
                Self::Unavailable(unavailable)
            }
            other => Self::Internal(other),
        }
    }
}

/// What ListUsage answers.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub figures: UsageFigures,
    /// Every day of the asked window, oldest first.
    pub daily: Vec<DailyCount>,
    pub last_used_browser: String,
    pub last_used_os: String,
    /// Empty without a GeoIP database, or when it does not know the address.
    pub last_used_location: String,
}

struct Shared {
    store: Arc<dyn Store>,
    recorder: Arc<Recorder>,
    settings: UsageSettings,
}

/// The usage service: owns the recorder and its background tasks.
pub struct Usage {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Usage {
    /// Starts the background tasks (on the current tokio runtime).
    pub fn start(store: Arc<dyn Store>, settings: UsageSettings) -> Self {
        let key_source = settings.reports.key_source.as_str();
        if settings.reports.key_source == KeySource::RandomPerProcess {
            tracing::warn!(
                key_source,
                "report handles verify only on this replica; a fleet must share \
                 TESSERA_REPORT_HANDLE_KEY or TESSERA_MASTER_KEY"
            );
        } else {
            tracing::info!(key_source, "report handle key");
        }
        let shared = Arc::new(Shared {
            store,
            recorder: Arc::new(Recorder::new(settings.buffer_size)),
            settings,
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(flush(shared.clone(), stopped.clone())),
            tokio::spawn(maintain(shared.clone(), stopped)),
        ];
        Self {
            shared,
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    /// What the authorizer calls on every Check; does nothing when recording is off.
    pub fn hook(&self) -> UsageHook {
        if self.shared.settings.enabled {
            UsageHook::new(self.shared.recorder.clone())
        } else {
            UsageHook::default()
        }
    }

    /// What ReportUsage accepts, and the key Check signs report handles with.
    pub fn report_settings(&self) -> &ReportSettings {
        &self.shared.settings.reports
    }

    /// How long minute buckets and recent calls are kept: no report may be older.
    pub fn retention(&self) -> chrono::Duration {
        self.shared.settings.retention
    }

    pub fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }

    /// Takes a reported outcome (ReportUsage). Never blocks.
    pub fn report(&self, report: Report) {
        if self.shared.settings.enabled {
            self.shared.recorder.record_report(report);
        }
    }

    /// Stops the background tasks after one last flush of everything recorded. Call it once
    /// the server has stopped taking requests, so nothing is recorded after it.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "usage task failed");
            }
        }
    }

    /// The usage of one token, or of all tokens of an owner, with a daily series of `days`
    /// days ending today (UTC).
    pub async fn report_for(
        &self,
        scope: UsageScope,
        days: u32,
        now: DateTime<Utc>,
    ) -> Result<UsageReport, UsageError> {
        let store = &self.shared.store;
        match &scope {
            UsageScope::Token(id) => {
                store.get_token(id).await?;
            }
            UsageScope::Owner { tenant, owner_id } => {
                store.get_principal(tenant, owner_id).await?;
            }
        }
        let days = days.clamp(1, MAX_DAYS);
        let today = usage::day_of(now);
        let first_day = today - chrono::Duration::days(i64::from(days) - 1);
        let query = UsageQuery {
            scope,
            recent_since: now - chrono::Duration::hours(24),
            daily_since: first_day,
        };
        let figures = store.read_usage(&query).await?;
        let daily = figures.daily_series(first_day.date_naive(), today.date_naive());
        let (client, location) = match &figures.last_use {
            Some(last_use) => (
                user_agent::describe(&last_use.user_agent),
                last_use
                    .client_ip
                    .zip(self.shared.settings.geoip.as_deref())
                    .and_then(|(ip, geoip)| geoip.locate(ip))
                    .unwrap_or_default(),
            ),
            None => (user_agent::Client::default(), String::new()),
        };
        Ok(UsageReport {
            figures,
            daily,
            last_used_browser: client.browser,
            last_used_os: client.os,
            last_used_location: location,
        })
    }
}

impl Drop for Usage {
    /// Without `shutdown` (a test, a failed start), the tasks stop with the service.
    fn drop(&mut self) {
        for task in lock(&self.tasks).iter() {
            task.abort();
        }
    }
}

/// The task list stays consistent whatever panicked, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Writes the new batch after any earlier ones that failed, oldest first.
    async fn flush(&self, retry: &mut VecDeque<UsageBatch>) {
        let mut batch = self.recorder.take_batch();
        batch.endpoints_per_day = self.settings.endpoints_per_day;
        if !batch.is_empty() {
            retry.push_back(batch);
        }
        while let Some(batch) = retry.front() {
            match self.store.write_usage(batch).await {
                Ok(()) => {
                    metrics::counter!("tessera_usage_flushed_calls_total").increment(batch.calls());
                    retry.pop_front();
                }
                Err(error) => {
                    metrics::counter!("tessera_usage_flush_failures_total").increment(1);
                    tracing::warn!(%error, pending_batches = retry.len(), "usage flush failed; retrying with the next");
                    break;
                }
            }
        }
        while retry.len() > MAX_RETRY_BATCHES {
            if let Some(lost) = retry.pop_front() {
                lose(&lost, "usage flushes failed for too long");
            }
        }
    }

    async fn prune(&self) {
        let now = Utc::now();
        let cutoffs = UsageCutoffs {
            minutes_before: now - self.settings.retention,
            days_before: now - DAILY_RETENTION,
        };
        loop {
            match self.store.prune_usage(&cutoffs, PRUNE_BATCH).await {
                Ok(0) => return,
                Ok(deleted) => {
                    metrics::counter!("tessera_usage_pruned_rows_total").increment(deleted);
                    tokio::time::sleep(PRUNE_PAUSE).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "usage pruning failed; retrying later");
                    return;
                }
            }
        }
    }

    async fn export_token_gauges(&self) {
        let now = Utc::now();
        let counted = self
            .store
            .count_tokens_needing_attention(now, now + EXPIRING_WITHIN, now - UNUSED_FOR)
            .await;
        match counted {
            Ok(counts) => {
                metrics::gauge!("tessera_tokens_expiring_soon", "within" => "7d")
                    .set(counts.expiring as f64);
                metrics::gauge!("tessera_tokens_unused", "for" => "30d").set(counts.unused as f64);
            }
            Err(error) => tracing::warn!(%error, "cannot count tokens for the gauges"),
        }
    }
}

fn lose(batch: &UsageBatch, why: &str) {
    let calls = batch.calls();
    metrics::counter!("tessera_usage_lost_calls_total").increment(calls);
    tracing::error!(calls, "{why}; usage lost");
}

async fn flush(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut retry = VecDeque::new();
    let mut ticks = tokio::time::interval(shared.settings.flush_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate and has nothing to flush.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => shared.flush(&mut retry).await,
            _ = stopped.changed() => break,
        }
    }
    shared.flush(&mut retry).await;
    for batch in &retry {
        lose(batch, "the last usage flush failed at shutdown");
    }
}

async fn maintain(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(MAINTENANCE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let work = async {
            ticks.tick().await;
            shared.prune().await;
            shared.export_token_gauges().await;
        };
        tokio::select! {
            () = work => {}
            _ = stopped.changed() => return,
        }
    }
}
