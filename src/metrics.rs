//! Prometheus: one process-wide recorder behind the `metrics` facade, scraped over HTTP at
//! `GET /metrics` on `TESSERA_METRICS_LISTEN`.
//!
//! The exporter's own HTTP listener is not used: it binds an address it does not report (no
//! port 0 in tests) and lives apart from the app's lifecycle. Here the app binds the listener
//! itself, like the gRPC one, and serves it with hyper (already in the tree through tonic).
//!
//! Where each metric comes from:
//! - `tessera_checks_total{reason}`, `tessera_store_credential_lookups_total` (cache misses),
//!   `tessera_cache_requests_total`, `tessera_retired_secret_uses_total`: the Check path.
//! - `tessera_gateway_path_refused_total{reason}`: gateway requests whose path was refused, by
//!   the closed set of `PathError` names (src/domain/http.rs).
//! - `tessera_grpc_requests_total{service,method,code}`,
//!   `tessera_grpc_request_duration_seconds{service,method}` (Check latency is
//!   `{service="tessera.v1.AuthorizationService",method="Check"}`, admin calls are
//!   `{service="tessera.v1.TokenAdminService"}`), `tessera_grpc_requests_in_flight`: the gate in
//!   front of every service.
//! - `tessera_http_requests_total{route,status}`, `tessera_http_request_duration_seconds{route}`,
//!   `tessera_http_requests_in_flight`: the HTTP listener (src/http/mod.rs), by its closed set
//!   of routes.
//! - `tessera_cache_entries`: sampled at each scrape; `tessera_cache_fills_overtaken_total`:
//!   store reads not cached because an invalidation of their key came while they ran.
//! - `tessera_invalidations_received_total`, `tessera_invalidation_feed_losses_total`,
//!   `tessera_invalidation_publish_failures_total`, `tessera_invalidation_fallbacks_total{to}`:
//!   cross-replica cache invalidation.
//! - `tessera_store_errors_total{operation}`: failed store calls, once each, by `Store` method
//!   or `connect` (src/store/bounded.rs).
//! - `tessera_admin_auth_failures_total{reason}`: refused admin keys (`missing_key`,
//!   `unknown_key`, `lookup_failed`), `tessera_admin_key_lookups_total` (admin keys looked up
//!   in the store: unknown keys are remembered, so repeats do not count).
//! - `tessera_usage_*` (flushed calls, flush failures, dropped events, lost calls, pruned rows,
//!   refused reports by reason)
//!   and `tessera_tokens_expiring_soon`, `tessera_tokens_unused`: usage statistics.
//! - `tessera_tls_reloads_total{result}`, `tessera_tls_handshake_failures_total`: TLS.
//! - `tessera_health_serving`: 1 while health answers SERVING.
//! - `tessera_shared_state_*` (degraded, degradations, live replicas, local decisions) and
//!   `tessera_redis_*` (request duration and errors by operation): the fleet's shared state
//!   (`src/fleet/`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Latency buckets in seconds: 50 µs (a cached Check) up to 10 s (the default call timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often histograms are drained into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Refreshes gauges that are sampled rather than updated (such as the cache size) just before a
/// scrape renders.
pub type Sampler = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The process-wide recorder, installed by the first app of the process. None when another
/// recorder was installed first (then `/metrics` answers, but empty).
fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS);
    let installed = builder.and_then(PrometheusBuilder::install_recorder);
    match installed {
        Ok(handle) => {
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the metrics upkeep thread");
            }
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot install the prometheus recorder; /metrics stays empty");
            None
        }
    }
}

fn describe() {
    describe_counter!(
        "tessera_checks_total",
        "Check decisions, by reason (allowed or the deny reason)"
    );
    describe_counter!(
        "tessera_gateway_path_refused_total",
        "Gateway requests refused because their path cannot be resolved unambiguously, by reason"
    );
    describe_counter!(
        "tessera_cache_requests_total",
        "Credential lookups by Check that reached the cache (hits = this - store lookups)"
    );
    describe_counter!(
        "tessera_store_credential_lookups_total",
        "Credential loads from the store: cache misses"
    );
    describe_gauge!("tessera_cache_entries", "Credentials held in the cache");
    describe_counter!(
        "tessera_replay_guard_refusals_total",
        "Signatures refused because the replay guard held as many live signatures as it may"
    );
    describe_counter!(
        "tessera_cache_fills_overtaken_total",
        "Cache fills not cached because an invalidation of their key came while they loaded"
    );
    describe_counter!(
        "tessera_retired_secret_uses_total",
        "Checks presenting a secret that was rotated away"
    );
    describe_counter!(
        "tessera_grpc_requests_total",
        "gRPC calls answered, by service, method and status code"
    );
    describe_histogram!(
        "tessera_grpc_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a gRPC call, by service and method"
    );
    describe_gauge!("tessera_grpc_requests_in_flight", "gRPC calls being served");
    describe_counter!(
        "tessera_http_requests_total",
        "HTTP listener requests answered, by route and status"
    );
    describe_histogram!(
        "tessera_http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP listener request, by route"
    );
    describe_gauge!(
        "tessera_http_requests_in_flight",
        "HTTP listener requests being served"
    );
    describe_counter!(
        "tessera_invalidations_received_total",
        "Cache invalidations received from other replicas"
    );
    describe_counter!(
        "tessera_invalidation_feed_losses_total",
        "Times the invalidation feed from other replicas was lost"
    );
    describe_counter!(
        "tessera_invalidation_publish_failures_total",
        "Invalidations that could not be published to other replicas"
    );
    describe_counter!(
        "tessera_store_errors_total",
        "Failed store calls (database errors, timeouts, corrupt rows), by operation: the Store method, or connect"
    );
    describe_counter!(
        "tessera_admin_auth_failures_total",
        "Admin calls refused before acting, by reason: missing_key, unknown_key, lookup_failed"
    );
    describe_counter!(
        "tessera_admin_key_lookups_total",
        "Admin keys looked up in the store (keys recently found unknown are not looked up again)"
    );
    describe_counter!(
        "tessera_usage_flushed_calls_total",
        "Calls whose usage was written to the database"
    );
    describe_counter!(
        "tessera_usage_flush_failures_total",
        "Usage flushes that failed (retried with the next flush)"
    );
    describe_counter!(
        "tessera_usage_events_dropped_total",
        "Usage events dropped because the buffer was full (Check never waits for usage)"
    );
    describe_counter!(
        "tessera_usage_lost_calls_total",
        "Calls whose usage could not be written at all"
    );
    describe_counter!(
        "tessera_usage_pruned_rows_total",
        "Usage rows deleted past their retention"
    );
    describe_counter!(
        "tessera_usage_reports_refused_total",
        "ReportUsage reports refused, by reason (missing, malformed, forged or expired handle)"
    );
    describe_counter!(
        "tessera_invalidation_fallbacks_total",
        "Invalidations too large for one notification, published coarser, by what was sent"
    );
    describe_gauge!(
        "tessera_tokens_expiring_soon",
        "Live tokens expiring within the labelled window"
    );
    describe_gauge!(
        "tessera_tokens_unused",
        "Live tokens not used for the labelled period"
    );
    describe_counter!(
        "tessera_tls_reloads_total",
        "Reloads of the TLS files, by result"
    );
    describe_counter!(
        "tessera_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out"
    );
    describe_gauge!(
        "tessera_health_serving",
        "1 while health answers SERVING, 0 while starting or draining"
    );
    describe_gauge!(
        "tessera_shared_state_degraded",
        "1 while Redis is unreachable or slower than the bound: limits and replay checks are per replica"
    );
    describe_counter!(
        "tessera_shared_state_degradations_total",
        "Times the shared state became degraded"
    );
    describe_gauge!(
        "tessera_shared_state_live_replicas",
        "Replicas with a live heartbeat, as this one last counted them"
    );
    describe_counter!(
        "tessera_shared_state_local_decisions_total",
        "Rate-limit and replay decisions made locally because the shared state was unavailable, by kind"
    );
    describe_histogram!(
        "tessera_redis_request_duration_seconds",
        Unit::Seconds,
        "Time of each Redis call of the shared state, by operation (take, lease, return, replay, heartbeat)"
    );
    describe_counter!(
        "tessera_redis_errors_total",
        "Redis calls that failed, by operation and kind (timeout or error)"
    );
    // Webhooks (issue 17).
    describe_counter!(
        "tessera_webhook_deliveries_total",
        "Webhook delivery attempts, by result (delivered, retry, failed after the last retry, blocked by the address rule)"
    );
    describe_counter!(
        "tessera_webhooks_failing_total",
        "Webhooks that became failing: a delivery exhausted its retries (one webhook.failing event each)"
    );
}

/// Installs the recorder if this is the first call in the process. Metrics recorded before it
/// are lost, so the app calls it first thing.
pub fn install_recorder() {
    let _ = handle();
}

/// Serves `GET /metrics` on `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, sampler: Sampler) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let sampler = sampler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let sampler = sampler.clone();
                    async move { Ok::<_, Infallible>(respond(request, sampler).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, %peer, "metrics connection ended with an error");
                }
            });
        }
    })
}

async fn respond(
    request: Request<hyper::body::Incoming>,
    sampler: Sampler,
) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: scrape /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    sampler().await;
    let body = match handle() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
