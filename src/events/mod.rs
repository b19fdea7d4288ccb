//! Lifecycle events (issue 17) beyond the outbox writes themselves (which the store makes in the
//! transaction of each change, `src/store/sql.rs` `insert_event_row`): the upkeep every replica
//! runs (expiry notices, retention), the live feed WatchEvents streams, and webhook deliveries
//! (`delivery`).
//!
//! Every replica runs the upkeep; the store makes each notice happen once (a notice row decides
//! between replicas) and pruning is idempotent, so there is no leader to elect.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::domain::event::{Event, EventId, EventType};
use crate::domain::fields::Tenant;
use crate::store::{EventQuery, Store, StoreError};

pub mod delivery;

/// How the events machinery runs (`TESSERA_EVENT_*` settings, `src/config.rs`).
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Events older than this are pruned (`TESSERA_EVENT_RETENTION_DAYS`, default 30).
    pub retention: chrono::Duration,
    /// How often the replica looks for tokens due an expiry notice
    /// (`TESSERA_EVENT_EXPIRY_SCAN_INTERVAL_MS`, default one minute).
    pub expiry_scan_interval: Duration,
    /// How often an open WatchEvents stream looks for new events
    /// (`TESSERA_EVENT_WATCH_POLL_MS`, default 250 ms).
    pub watch_poll_interval: Duration,
    /// At most this many WatchEvents streams open on one replica
    /// (`TESSERA_EVENT_MAX_WATCHERS`, default 256).
    pub max_watchers: usize,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            retention: chrono::Duration::days(30),
            expiry_scan_interval: Duration::from_secs(60),
            watch_poll_interval: Duration::from_millis(250),
            max_watchers: 256,
        }
    }
}

/// Expiry notices and pruning are done in batches of this many rows, so neither holds a long
/// transaction.
const BATCH: u32 = 500;
/// How often retention pruning runs.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// One page of a watch's catch-up read.
const WATCH_PAGE: u32 = 100;
/// Events buffered per stream before the reader waits for the client: a slow client holds
/// back only its own stream.
const WATCH_BUFFER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The cursor names no stored event: never issued, or pruned past the retention.
    #[error("after_event_id names no event that is still kept (retention {retention_days} days)")]
    CursorExpired { retention_days: i64 },
    /// The replica has as many streams open as it allows.
    #[error("too many WatchEvents streams are open on this replica ({limit})")]
    TooManyWatchers { limit: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one WatchEvents stream follows.
#[derive(Debug, Clone)]
pub struct WatchScope {
    /// Only these tenants' events; None: every tenant.
    pub tenants: Option<Vec<Tenant>>,
    /// Only these types; empty: every type.
    pub types: Vec<EventType>,
}

/// An item of a stream: an event, or the error that ended the stream.
pub type WatchItem = Result<Event, EventsError>;

pub struct Events {
    store: Arc<dyn Store>,
    settings: EventSettings,
    /// Set at shutdown: open streams end, so they do not hold the drain.
    closed: watch::Sender<bool>,
    watchers: Arc<Semaphore>,
}

impl Events {
    pub fn new(store: Arc<dyn Store>, settings: EventSettings) -> Arc<Self> {
        let (closed, _) = watch::channel(false);
        Arc::new(Self {
            store,
            watchers: Arc::new(Semaphore::new(settings.max_watchers)),
            settings,
            closed,
        })
    }

    /// Runs the expiry notices and retention pruning until the handle is aborted.
    pub fn start_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let events = self.clone();
        tokio::spawn(async move {
            let mut scan = tokio::time::interval(events.settings.expiry_scan_interval);
            scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prune = tokio::time::interval(PRUNE_INTERVAL);
            prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = scan.tick() => events.send_expiry_notices().await,
                    _ = prune.tick() => events.prune().await,
                }
            }
        })
    }

    async fn send_expiry_notices(&self) {
        loop {
            match self.store.send_expiry_notices(Utc::now(), BATCH).await {
                Ok(sent) if sent >= u64::from(BATCH) => continue,
                Ok(sent) => {
                    if sent > 0 {
                        tracing::info!(sent, "expiry notices written");
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "expiry notices failed, retrying at the next scan");
                    return;
                }
            }
        }
    }

    async fn prune(&self) {
        let before = Utc::now() - self.settings.retention;
        let pruned = in_batches("event", || self.store.prune_events(before, BATCH)).await;
        if pruned > 0 {
            tracing::info!(pruned, "events past their retention pruned");
        }
        // Console and portal sessions past their absolute expiry (src/console/): the same
        // hourly upkeep, as shared as the events.
        let now = Utc::now();
        let pruned = in_batches("session", || self.store.prune_sessions(now, BATCH)).await;
        if pruned > 0 {
            tracing::info!(pruned, "expired console sessions pruned");
        }
    }

    /// Ends every open stream (at shutdown); their clients resume from their last event on
    /// another replica.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Opens a stream of `scope`'s events after `after` (None: after the newest committed
    /// now). The stream reads in its own task and ends when the client goes, at shutdown, or
    /// with the store error that stopped it.
    pub async fn watch(
        &self,
        scope: WatchScope,
        after: Option<&EventId>,
    ) -> Result<mpsc::Receiver<WatchItem>, EventsError> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            EventsError::TooManyWatchers {
                limit: self.settings.max_watchers,
            }
        })?;
        let after_seq = match after {
            Some(id) => self
                .store
                .event_seq(id)
                .await?
                .ok_or(EventsError::CursorExpired {
                    retention_days: self.settings.retention.num_days(),
                })?,
            None => self.store.last_event_seq().await?,
        };
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let store = self.store.clone();
        let poll = self.settings.watch_poll_interval;
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            let mut query = EventQuery {
                tenants: scope.tenants,
                types: scope.types,
                after_seq,
                limit: WATCH_PAGE,
            };
            loop {
                let page = tokio::select! {
                    page = store.list_events(&query) => page,
                    _ = sender.closed() => return,
                    _ = closed.wait_for(|closed| *closed) => return,
                };
                let events = match page {
                    Ok(events) => events,
                    Err(error) => {
                        let _ = sender.send(Err(error.into())).await;
                        return;
                    }
                };
                let full_page = events.len() == WATCH_PAGE as usize;
                for event in events {
                    query.after_seq = event.seq;
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if full_page {
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = sender.closed() => return,
                    _ = closed.wait_for(|closed| *closed) => return,
                }
            }
        });
        Ok(receiver)
    }
}

/// Runs `batch` until it deletes fewer than [`BATCH`] rows or fails (logged; the next hourly
/// run goes on); how many it deleted.
async fn in_batches<F, Fut>(what: &'static str, mut batch: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::store::StoreError>>,
{
    let mut deleted = 0;
    loop {
        match batch().await {
            Ok(count) => {
                deleted += count;
                if count < u64::from(BATCH) {
                    return deleted;
                }
            }
            Err(error) => {
                tracing::warn!(%error, what, "pruning failed, retrying in an hour");
                return deleted;
            }
        }
    }
}
