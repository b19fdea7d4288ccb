//! The gate: the one service the gRPC listener serves, in front of every gRPC service.
//!
//! - Health and reflection answer from the first moment; the other services (Tessera's, Envoy's)
//!   answer UNAVAILABLE until the store is connected and their routes are set.
//! - TokenAdminService calls without a verified client certificate are UNAUTHENTICATED when
//!   mTLS is configured.
//! - At most `max_concurrent_requests` calls run at once; more are refused with
//!   RESOURCE_EXHAUSTED at once instead of queueing.
//! - A call running past `request_timeout` is answered DEADLINE_EXCEEDED, and one still
//!   running when shutdown's drain deadline passes is answered UNAVAILABLE.
//! - Each call is counted and timed by service, method and status code, and runs in a span that
//!   continues the caller's trace (W3C `traceparent` metadata).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Services that answer whatever the store does: probes and tools must always get through.
const ALWAYS_ON_PREFIXES: &[&str] = &["grpc.health.v1.", "grpc.reflection."];

/// Label of calls to services this server does not know, so clients cannot grow the label set.
const UNKNOWN: &str = "unknown";

/// What the gate enforces, fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct GatePolicy {
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    /// TokenAdminService requires a verified client certificate (mTLS configured).
    pub admin_requires_client_cert: bool,
    /// Name of the admin service, whose calls the certificate rule applies to.
    pub admin_service: &'static str,
    /// Every service name this server serves, for metric labels.
    pub known_services: &'static [&'static str],
    /// Spans at info level (exported) rather than debug (off by default): trace export is on.
    pub export_spans: bool,
}

#[derive(Clone)]
pub(crate) struct Gate {
    always_on: Routes,
    /// Set once, when the store is connected.
    ready: Arc<OnceLock<Routes>>,
    permits: Arc<Semaphore>,
    /// Turns true at the drain deadline: calls still running are ended.
    cut_off: watch::Receiver<bool>,
    policy: Arc<GatePolicy>,
}

impl Gate {
    pub fn new(
        always_on: Routes,
        ready: Arc<OnceLock<Routes>>,
        cut_off: watch::Receiver<bool>,
        policy: GatePolicy,
    ) -> Self {
        Self {
            always_on,
            ready,
            permits: Arc::new(Semaphore::new(policy.max_concurrent_requests)),
            cut_off,
            policy: Arc::new(policy),
        }
    }

    async fn admit(self, rpc: Rpc, request: Request<Body>) -> Response<Body> {
        let Some(routes) = self.ready.get() else {
            return status_response(Status::unavailable(
                "the server is starting: its database is not reachable yet; retry shortly",
            ));
        };
        if self.policy.admin_requires_client_cert
            && rpc.service == self.policy.admin_service
            && !has_client_certificate(&request)
        {
            return status_response(Status::unauthenticated(
                "TokenAdminService requires a client certificate (mTLS) in addition to an admin key",
            ));
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return status_response(Status::resource_exhausted(
                "the server is at its concurrency limit; retry with backoff",
            ));
        };
        let mut routes = routes.clone();
        let mut cut_off = self.cut_off.clone();
        let call = tokio::time::timeout(self.policy.request_timeout, routes.call(request));
        tokio::select! {
            answered = call => match answered {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => status_response(Status::deadline_exceeded(
                    "the call took longer than the server's per-call timeout",
                )),
            },
            _ = cut_off.wait_for(|cut| *cut) => status_response(Status::unavailable(
                "the server is shutting down and its drain deadline passed; retry",
            )),
        }
    }
}

impl Service<Request<Body>> for Gate {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routes (an axum router) is always ready; limits are applied per call in `admit`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let rpc = Rpc::of(request.uri().path(), self.policy.known_services);
        let started = Instant::now();
        if rpc.always_on {
            let mut always_on = self.always_on.clone();
            return Box::pin(async move {
                let response = match always_on.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                record(&rpc, &response, started);
                Ok(response)
            });
        }

        let span = if self.policy.export_spans {
            tracing::info_span!(
                "grpc call",
                otel.name = %rpc.path,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %rpc.service,
                rpc.method = %rpc.method,
                rpc.grpc.status_code = tracing::field::Empty,
            )
        } else {
            tracing::debug_span!("grpc call", rpc.service = %rpc.service, rpc.method = %rpc.method)
        };
        if self.policy.export_spans {
            let _ = span.set_parent(crate::telemetry::remote_context(request.headers()));
        }
        let gate = self.clone();
        Box::pin(
            async move {
                metrics::gauge!("tessera_grpc_requests_in_flight").increment(1);
                let response = gate.admit(rpc.clone(), request).await;
                metrics::gauge!("tessera_grpc_requests_in_flight").decrement(1);
                let code = record(&rpc, &response, started);
                tracing::Span::current().record("rpc.grpc.status_code", code as i32);
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// A call's service and method, as metric labels.
#[derive(Debug, Clone)]
struct Rpc {
    path: String,
    /// A known service's name, else `unknown`.
    service: &'static str,
    method: String,
    always_on: bool,
}

impl Rpc {
    fn of(path: &str, known_services: &'static [&'static str]) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let always_on = ALWAYS_ON_PREFIXES
            .iter()
            .any(|prefix| service.starts_with(prefix));
        let known = known_services.iter().find(|known| **known == service);
        Self {
            path: path.to_owned(),
            service: known.copied().unwrap_or(UNKNOWN),
            method: if known.is_some() {
                method.to_owned()
            } else {
                UNKNOWN.to_owned()
            },
            always_on,
        }
    }
}

/// Counts and times the call; returns its status code.
fn record(rpc: &Rpc, response: &Response<Body>, started: Instant) -> Code {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from);
    // A method the service does not have is the client's invention: keep it out of the labels.
    let method = if code == Code::Unimplemented {
        UNKNOWN.to_owned()
    } else {
        rpc.method.clone()
    };
    metrics::counter!(
        "tessera_grpc_requests_total",
        "service" => rpc.service,
        "method" => method.clone(),
        "code" => code_name(code),
    )
    .increment(1);
    metrics::histogram!(
        "tessera_grpc_request_duration_seconds",
        "service" => rpc.service,
        "method" => method,
    )
    .record(started.elapsed().as_secs_f64());
    code
}

fn has_client_certificate<B>(request: &Request<B>) -> bool {
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .is_some_and(|certificates| !certificates.is_empty())
}

fn status_response(status: Status) -> Response<Body> {
    let (parts, ()) = status.into_http::<()>().into_parts();
    Response::from_parts(parts, Body::empty())
}

/// The canonical upper-case name of a gRPC status code, as grpc-go and Envoy label it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["tessera.v1.AuthorizationService", "grpc.health.v1.Health"];

    #[test]
    fn a_known_service_keeps_its_name_and_method_as_labels() {
        let rpc = Rpc::of("/tessera.v1.AuthorizationService/Check", KNOWN);
        assert_eq!(rpc.service, "tessera.v1.AuthorizationService");
        assert_eq!(rpc.method, "Check");
        assert!(!rpc.always_on);
    }

    #[test]
    fn an_unknown_service_is_labelled_unknown_so_clients_cannot_grow_the_label_set() {
        let rpc = Rpc::of("/made.up.Service/Anything", KNOWN);
        assert_eq!(rpc.service, UNKNOWN);
        assert_eq!(rpc.method, UNKNOWN);
    }

    #[test]
    fn health_and_reflection_are_always_on() {
        assert!(Rpc::of("/grpc.health.v1.Health/Check", KNOWN).always_on);
        assert!(
            Rpc::of(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                KNOWN
            )
            .always_on
        );
    }
}
