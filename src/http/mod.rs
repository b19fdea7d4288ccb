//! Tessera's HTTP surface on `TESSERA_HTTP_LISTEN`: one HTTP/1.1 (and h2c, or h2 over TLS)
//! listener with a small axum router, so that later paths join the same limits, metrics, drain
//! and TLS. It serves forward-auth for nginx, Caddy and Traefik ([`forward_auth`]) and leak
//! reports ([`leaks`]: GitHub secret scanning and `/leaked-tokens`).
//!
//! Limits, each answered rather than queued: headers larger than `TESSERA_HTTP_MAX_HEADER_BYTES`
//! (431 on HTTP/1.1; h2 refuses the stream), bodies larger than `TESSERA_HTTP_MAX_BODY_BYTES`
//! (413), more than `TESSERA_MAX_CONCURRENT_REQUESTS` requests at once on this listener (503), a
//! request running past `TESSERA_REQUEST_TIMEOUT_MS` (503), headers not received within that
//! time (the connection is closed).
//!
//! Metrics: `tessera_http_requests_total{route,status}`,
//! `tessera_http_request_duration_seconds{route}`, `tessera_http_requests_in_flight`, with
//! `route` one of [`ROUTES`] or `unmatched`.
//!
//! On shutdown the listener stops accepting, connections finish their requests in flight (HTTP/1.1
//! keep-alive connections are closed after their current response, h2 gets GOAWAY), and those
//! still open at the drain deadline are dropped.

pub mod forward_auth;
pub mod leaks;

pub use crate::console::ConsoleSettings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt as _};
use tower::Service as _;

use crate::tls::Tls;

/// The paths this listener serves, as metric labels: each request counts under the first whose
/// path it is or lies below.
pub const ROUTES: &[(&str, &str)] = &[
    (forward_auth::PATH, "forward_auth"),
    (leaks::GITHUB_PATH, "secret_scanning_github"),
    (leaks::REPORT_PATH, "leaked_tokens"),
    ("/console", "console"),
    ("/portal", "portal"),
];

/// The listener's limits (parsed from `TESSERA_HTTP_*`, the timeout and concurrency shared with
/// the gRPC listener's settings).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Largest request body read; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Largest request head (HTTP/1.1 read buffer, h2 header list).
    pub max_header_bytes: usize,
    /// Longest a request may run, and longest a connection may take to send its headers.
    pub request_timeout: Duration,
    /// Most requests served at once on this listener.
    pub max_concurrent_requests: usize,
    /// After shutdown, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// The leak report routes' keys file, rate limit and client IP (src/http/leaks.rs).
    pub leaks: leaks::LeakSettings,
    /// The console and portal (src/console/).
    pub console: ConsoleSettings,
}

/// The peer of an accepted connection, for handlers that need the client's address.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The router: every route of the listener, behind its limits and metrics.
pub fn router(
    forward_auth: forward_auth::ForwardAuth,
    leaks: leaks::Leaks,
    console: crate::console::Console,
    settings: &HttpSettings,
) -> Router {
    let limits = Arc::new(Limits {
        in_flight: Semaphore::new(settings.max_concurrent_requests),
        request_timeout: settings.request_timeout,
    });
    forward_auth::routes(forward_auth, settings.max_body_bytes)
        .merge(leaks::routes(leaks, settings.max_body_bytes))
        // Forms are read by axum's extractors, bounded by this layer (413 beyond).
        .merge(
            crate::console::routes(console).layer(axum::extract::DefaultBodyLimit::max(
                settings.max_body_bytes,
            )),
        )
        .fallback(|| async { plain(StatusCode::NOT_FOUND, "not_found") })
        .layer(axum::middleware::from_fn(move |request, next| {
            let limits = limits.clone();
            async move { limits.apply(request, next).await }
        }))
}

struct Limits {
    in_flight: Semaphore,
    request_timeout: Duration,
}

impl Limits {
    async fn apply(&self, request: Request, next: Next) -> Response {
        let route = route_label(request.uri().path());
        let started = Instant::now();
        let response = match self.in_flight.try_acquire() {
            // Refused at once, like the gRPC listener: queueing would only add latency to a
            // replica that is already behind.
            Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Ok(_permit) => {
                let in_flight = metrics::gauge!("tessera_http_requests_in_flight");
                in_flight.increment(1.0);
                let answered = tokio::time::timeout(self.request_timeout, next.run(request)).await;
                in_flight.decrement(1.0);
                answered.unwrap_or_else(|_| plain(StatusCode::SERVICE_UNAVAILABLE, "timeout"))
            }
        };
        metrics::counter!(
            "tessera_http_requests_total",
            "route" => route,
            "status" => status_label(response.status()),
        )
        .increment(1);
        metrics::histogram!("tessera_http_request_duration_seconds", "route" => route)
            .record(started.elapsed().as_secs_f64());
        response
    }
}

fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(prefix, _)| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map_or("unmatched", |(_, label)| label)
}

/// A status as a label: the codes this listener answers, each its own; anything else by class.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        202 => "202",
        303 => "303",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        code if code < 300 => "2xx",
        code if code < 500 => "4xx",
        _ => "5xx",
    }
}

/// A small JSON error answer of the listener itself (not a Check decision).
pub(crate) fn plain(status: StatusCode, error: &'static str) -> Response {
    let body = serde_json::json!({ "error": error }).to_string();
    (
        status,
        [(hyper::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `stop` turns true, then drains.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    router: Router,
    settings: &HttpSettings,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_bytes = settings.max_header_bytes;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.request_timeout)
        .max_buf_size(header_bytes)
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
    let drain = settings.drain_timeout;
    match tls {
        Some(tls) => {
            let incoming = tls.incoming(listener).map(|accepted| {
                accepted.map(|stream| {
                    let peer = stream.get_ref().0.peer_addr().ok();
                    (stream, peer)
                })
            });
            tokio::spawn(accept_loop(incoming, builder, router, stop, drain))
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(
                |accepted: std::io::Result<TcpStream>| {
                    accepted.map(|stream| {
                        // Small requests and answers: Nagle's delay would add milliseconds.
                        let _ = stream.set_nodelay(true);
                        let peer = stream.peer_addr().ok();
                        (stream, peer)
                    })
                },
            );
            tokio::spawn(accept_loop(incoming, builder, router, stop, drain))
        }
    }
}

/// One of TCP or TLS connections: what [`accept_loop`] serves.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl Connection for TcpStream {}
impl Connection for TlsStream<TcpStream> {}

async fn accept_loop<I: Connection>(
    incoming: impl Stream<Item = std::io::Result<(I, Option<SocketAddr>)>>,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    // Held here so that connections still open past the drain deadline end with this task.
    let mut connections = tokio::task::JoinSet::new();
    // Boxed so that it can be dropped (closing the listener) before the drain.
    let mut incoming = Box::pin(incoming);
    loop {
        let accepted = tokio::select! {
            accepted = incoming.next() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Some(Ok(accepted)) => accepted,
            Some(Err(error)) => {
                tracing::warn!(%error, "http listener cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            None => break,
        };
        while connections.try_join_next().is_some() {}
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<_>| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(Peer(peer));
            }
            router.clone().call(request.map(Body::new))
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, ?peer, "http connection ended with an error");
            }
        });
    }
    // No new connections while the ones open finish: a load balancer retries elsewhere.
    drop(incoming);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_ms = drain.as_millis(),
            "http requests still running at the drain deadline were cut off"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_under_its_route_or_as_unmatched_never_by_its_raw_path() {
        assert_eq!(route_label("/forward-auth"), "forward_auth");
        assert_eq!(route_label("/forward-auth/api/v1/x"), "forward_auth");
        assert_eq!(route_label("/forward-authx"), "unmatched");
        assert_eq!(route_label("/a/b/c/123"), "unmatched");
        assert_eq!(route_label("/leaked-tokens"), "leaked_tokens");
        assert_eq!(route_label("/console/tokens/tok_1"), "console");
        assert_eq!(route_label("/portal/"), "portal");
        assert_eq!(
            route_label("/secret-scanning/github"),
            "secret_scanning_github"
        );
    }
}
