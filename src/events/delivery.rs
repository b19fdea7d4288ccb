//! The webhook delivery worker: a background task per replica that claims due deliveries from
//! the outbox (`Store::claim_webhook_deliveries`, a lease so one replica at a time attempts
//! each), POSTs them signed (Standard Webhooks, src/domain/webhook.rs) and records each result
//! (`Store::record_webhook_attempt`).
//!
//! - Nothing here is on Check's or an admin call's path: attempts run in their own tasks, use
//!   the admin pool only for the claim and the record, and are bounded overall
//!   ([`DeliverySettings::max_in_flight`]) and per webhook ([`DeliverySettings::per_webhook`]),
//!   so a slow or dead receiver holds at most its own share.
//! - SSRF: unless private URLs are allowed, a URL whose host is an internal address is refused
//!   before any connection, and a name is resolved by [`GuardedResolver`], which drops every
//!   internal address it resolves to (at delivery time, so a name that moved inside since the
//!   webhook was created is refused too). Redirects are never followed: a 3xx is a failure.
//! - Metrics: `tessera_webhook_deliveries_total{result}` (`delivered`, `retry`, `failed`,
//!   `blocked`; a closed set) and `tessera_webhooks_failing_total`, one per failing episode.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::domain::signature::MasterKey;
use crate::domain::webhook::{
    AddressRule, Attempt, AttemptResult, DueDelivery, RetrySchedule, WebhookId, WebhookSecret,
    WebhookUrl, blocked_name, bounded_error, delivery_body,
};
use crate::store::Store;

/// How the worker runs (`TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS`, `TESSERA_WEBHOOK_RETRY_DELAYS`;
/// the rest are fixed).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub rule: AddressRule,
    pub retry: RetrySchedule,
    /// How often due deliveries are looked for.
    pub poll_interval: Duration,
    /// Longest one attempt may take, connection included.
    pub timeout: Duration,
    /// How long a claim holds a delivery: longer than any attempt waits for its webhook's turn
    /// (`max_in_flight / per_webhook` attempts of `timeout` each), so no other replica takes it
    /// while it is in flight.
    pub lease: Duration,
    /// Attempts in flight on this replica at once.
    pub max_in_flight: usize,
    /// Attempts in flight to one webhook at once.
    pub per_webhook: usize,
}

/// Webhooks whose concurrency limit is remembered; past this, idle ones are forgotten.
const MAX_TRACKED_WEBHOOKS: usize = 1024;

impl DeliverySettings {
    pub fn new(rule: AddressRule, retry: RetrySchedule) -> Self {
        Self {
            rule,
            retry,
            poll_interval: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(5 * 60),
            max_in_flight: 64,
            per_webhook: 4,
        }
    }
}

/// Refused because the address is internal: how an attempt tells `blocked` from other failures.
#[derive(Debug, thiserror::Error)]
#[error("{0} address refused (TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS is off)")]
pub struct BlockedAddress(&'static str);

/// The DNS resolver of webhook deliveries: the system's, minus the addresses the rule refuses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    rule: AddressRule,
}

impl GuardedResolver {
    pub fn new(rule: AddressRule) -> Self {
        Self { rule }
    }

    /// The addresses `host` resolves to that may be reached; an error when none may.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        if !self.rule.allow_private
            && let Some(kind) = blocked_name(host)
        {
            return Err(ResolveError::Blocked(BlockedAddress(kind)));
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        let allowed: Vec<SocketAddr> = resolved
            .iter()
            .filter(|address| self.rule.refuses(address.ip()).is_none())
            .copied()
            .collect();
        if allowed.is_empty() {
            let kind = resolved
                .first()
                .and_then(|address| self.rule.refuses(address.ip()))
                .unwrap_or("unresolvable");
            return Err(ResolveError::Blocked(BlockedAddress(kind)));
        }
        Ok(allowed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Blocked(BlockedAddress),
    #[error("dns lookup failed: {0}")]
    Lookup(#[source] std::io::Error),
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = *self;
        Box::pin(async move {
            match resolver.resolve_host(name.as_str()).await {
                Ok(addresses) => Ok(Box::new(addresses.into_iter()) as Addrs),
                Err(ResolveError::Blocked(blocked)) => Err(Box::new(blocked) as _),
                Err(error) => Err(Box::new(error) as _),
            }
        })
    }
}

/// The HTTP client of deliveries: no redirects, no proxy (it would resolve names itself), the
/// guarded resolver, bounded in time.
pub fn client(settings: &DeliverySettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .dns_resolver(Arc::new(GuardedResolver::new(settings.rule)))
        .user_agent(concat!("tessera-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Starts the worker; it runs until the handle is aborted (the app's shutdown).
pub fn start(
    store: Arc<dyn Store>,
    master_key: Option<MasterKey>,
    settings: DeliverySettings,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match client(&settings) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the webhook http client; webhooks are not delivered");
                return;
            }
        };
        let worker = Arc::new(Worker {
            store,
            master_key,
            client,
            endpoints: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
        });
        worker.run().await;
    })
}

struct Worker {
    store: Arc<dyn Store>,
    master_key: Option<MasterKey>,
    client: reqwest::Client,
    /// Per webhook, the attempts it may have in flight (`per_webhook`).
    endpoints: Mutex<HashMap<WebhookId, Arc<Semaphore>>>,
    /// Attempts this replica may have in flight (`max_in_flight`).
    in_flight: Arc<Semaphore>,
    settings: DeliverySettings,
}

/// Why an attempt failed.
struct Failure {
    status: Option<u16>,
    error: String,
    blocked: bool,
}

impl Failure {
    fn new(error: impl Into<String>) -> Self {
        Self {
            status: None,
            error: error.into(),
            blocked: false,
        }
    }

    fn blocked(blocked: &BlockedAddress) -> Self {
        Self {
            status: None,
            error: blocked.to_string(),
            blocked: true,
        }
    }
}

impl Worker {
    async fn run(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.settings.poll_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // A full batch means more may be due: claim again without waiting.
            while self.claim_and_send().await {}
        }
    }

    /// Claims what this replica has room for and starts its attempts; true when the claim was
    /// full.
    async fn claim_and_send(self: &Arc<Self>) -> bool {
        let room = self.in_flight.available_permits().min(32);
        if room == 0 {
            return false;
        }
        let now = Utc::now();
        let lease_until =
            now + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX);
        let limit = u32::try_from(room).unwrap_or(u32::MAX);
        let due = match self
            .store
            .claim_webhook_deliveries(now, lease_until, limit)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "cannot claim webhook deliveries; trying again");
                return false;
            }
        };
        let full = due.len() == room;
        for delivery in due {
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                return false;
            };
            let endpoint = self.endpoint(&delivery.webhook_id);
            let worker = self.clone();
            tokio::spawn(async move {
                let _in_flight = permit;
                let Ok(_endpoint) = endpoint.acquire_owned().await else {
                    return;
                };
                worker.attempt(delivery).await;
            });
        }
        full
    }

    /// The concurrency limit of one webhook; the map forgets idle webhooks past its bound.
    fn endpoint(&self, webhook: &WebhookId) -> Arc<Semaphore> {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if endpoints.len() >= MAX_TRACKED_WEBHOOKS && !endpoints.contains_key(webhook) {
            endpoints.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
        endpoints
            .entry(webhook.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_webhook)))
            .clone()
    }

    async fn attempt(&self, delivery: DueDelivery) {
        let attempted_at = Utc::now();
        let outcome = self.send(&delivery).await;
        let attempts = delivery.attempts.saturating_add(1);
        let (result, status, error, label) = match outcome {
            Ok(status) => (
                AttemptResult::Delivered,
                Some(status),
                String::new(),
                "delivered",
            ),
            Err(failure) => {
                let result = match self.settings.retry.after_failed(attempts) {
                    Some(wait) => AttemptResult::Retry {
                        at: Utc::now()
                            + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX),
                    },
                    None => AttemptResult::Failed,
                };
                let label = match (&result, failure.blocked) {
                    (_, true) => "blocked",
                    (AttemptResult::Failed, false) => "failed",
                    _ => "retry",
                };
                (result, failure.status, bounded_error(&failure.error), label)
            }
        };
        metrics::counter!("tessera_webhook_deliveries_total", "result" => label).increment(1);
        tracing::debug!(
            webhook_id = %delivery.webhook_id,
            event_id = %delivery.event.id,
            attempts,
            result = label,
            "webhook delivery attempted"
        );
        let attempt = Attempt {
            delivery_id: delivery.id,
            webhook_id: delivery.webhook_id.clone(),
            attempted_at,
            status,
            error,
            result,
        };
        match self.store.record_webhook_attempt(&attempt).await {
            Ok(true) => {
                metrics::counter!("tessera_webhooks_failing_total").increment(1);
                tracing::warn!(
                    webhook_id = %delivery.webhook_id,
                    tenant = %delivery.tenant,
                    "webhook failing: a delivery exhausted its retries"
                );
            }
            Ok(false) => {}
            // The lease runs out and the delivery is attempted again: at least once.
            Err(error) => tracing::warn!(
                %error,
                webhook_id = %delivery.webhook_id,
                "cannot record a webhook attempt; it is retried after its lease"
            ),
        }
    }

    /// One POST; the status when the receiver accepted it (2xx).
    async fn send(&self, delivery: &DueDelivery) -> Result<u16, Failure> {
        let url = WebhookUrl::from_stored(&delivery.url)
            .ok_or_else(|| Failure::new("the stored url does not parse"))?;
        // An IP literal is never resolved, so the resolver cannot judge it: judged here.
        if let Some(address) = url.ip_host()
            && let Some(kind) = self.settings.rule.refuses(address)
        {
            return Err(Failure::blocked(&BlockedAddress(kind)));
        }
        let master_key = self
            .master_key
            .as_ref()
            .ok_or_else(|| Failure::new("the server has no master key to open the secret"))?;
        let secret = WebhookSecret::open(master_key, &delivery.sealed_secret, &delivery.webhook_id)
            .map_err(|error| Failure::new(error.to_string()))?;
        let event = &delivery.event;
        let body = delivery_body(event.event_type.as_str(), event.time, &event.data);
        let timestamp = Utc::now().timestamp();
        let signature = secret.sign(event.id.as_str(), timestamp, &body);
        let response = self
            .client
            .post(url.url().clone())
            .header("content-type", "application/json")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|error| failure_of(&error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let error = if status.is_redirection() {
            format!("answered {status}; redirects are not followed")
        } else {
            format!("answered {status}")
        };
        Err(Failure {
            status: Some(status.as_u16()),
            error,
            blocked: false,
        })
    }
}

/// A request error as a failure: blocked when the resolver refused, else its causes, without
/// the URL (which the receiver chose and may hold a credential).
fn failure_of(error: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut causes = Vec::new();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<BlockedAddress>() {
            return Failure::blocked(blocked);
        }
        if cause.downcast_ref::<reqwest::Error>().is_none() {
            causes.push(cause.to_string());
        }
        source = cause.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    if causes.is_empty() {
        Failure::new(kind)
    } else {
        Failure::new(format!("{kind}: {}", causes.join(": ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: AddressRule = AddressRule {
        allow_private: false,
    };

    #[tokio::test]
    async fn the_resolver_refuses_internal_names_and_what_resolves_to_internal_addresses() {
        let resolver = GuardedResolver::new(STRICT);
        for host in ["localhost", "LocalHost.", "127.0.0.1", "::1", "10.1.2.3"] {
            let resolved = resolver.resolve_host(host).await;
            assert!(
                matches!(resolved, Err(ResolveError::Blocked(_))),
                "{host}: {resolved:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_lets_internal_addresses_through_when_private_urls_are_allowed() {
        let resolver = GuardedResolver::new(AddressRule {
            allow_private: true,
        });
        let resolved = resolver.resolve_host("127.0.0.1").await.expect("allowed");
        assert!(resolved.iter().all(|address| address.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_blocked_address_is_recognised_through_the_request_error() {
        let settings = DeliverySettings::new(STRICT, RetrySchedule::default());
        let client = client(&settings).expect("client");
        // `localhost` is refused by the resolver before any connection is made.
        let error = client
            .post("http://localhost:9/")
            .send()
            .await
            .expect_err("refused");
        let failure = failure_of(&error);
        assert!(failure.blocked, "{}", failure.error);
        assert!(!failure.error.contains("localhost:9"), "{}", failure.error);
    }
}
