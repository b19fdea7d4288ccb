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
//! - A method no served service declares is answered UNIMPLEMENTED here, not routed.
//! - Every status the gate answers itself is built in `grpc::status`, with its ErrorInfo reason.
//! - Each call is counted and timed by service, method and status code, and runs in a span that
//!   continues the caller's trace (W3C `traceparent` metadata). Only methods the served services
//!   really have (read from their descriptor sets) become labels; any other path is `unknown`,
//!   whatever the answer, so a caller cannot mint series or span names.

use std::collections::{HashMap, HashSet};
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

use crate::grpc::status;

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
    /// Every method this server serves, for metric labels.
    pub known_methods: KnownMethods,
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
            return status_response(status::server_starting());
        };
        if self.policy.admin_requires_client_cert
            && rpc.service == self.policy.admin_service
            && !has_client_certificate(&request)
        {
            return status_response(status::client_certificate_required());
        }
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return status_response(status::concurrency_limit());
        };
        if !rpc.is_served() {
            return status_response(status::unknown_method());
        }
        let mut routes = routes.clone();
        let mut cut_off = self.cut_off.clone();
        let call = tokio::time::timeout(self.policy.request_timeout, routes.call(request));
        tokio::select! {
            answered = call => match answered {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => status_response(status::request_timeout()),
            },
            _ = cut_off.wait_for(|cut| *cut) => status_response(status::shutting_down()),
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
        let rpc = Rpc::of(request.uri().path(), &self.policy.known_methods);
        let started = Instant::now();
        if rpc.always_on {
            let mut always_on = self.always_on.clone();
            return Box::pin(async move {
                let response = if rpc.is_served() {
                    match always_on.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                } else {
                    status_response(status::unknown_method())
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

/// The methods of the services this server serves, by service: the only names that become
/// metric labels and span fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownMethods {
    methods: HashMap<&'static str, HashSet<String>>,
}

impl KnownMethods {
    /// The methods that the encoded descriptor sets declare for each of `services` (their full
    /// names, `package.Service`). Services the sets do not describe get no methods, so their
    /// calls are labelled `unknown`.
    pub fn from_descriptor_sets(
        descriptor_sets: &[&[u8]],
        services: &[&'static str],
    ) -> Result<Self, prost::DecodeError> {
        let mut methods: HashMap<&'static str, HashSet<String>> = HashMap::new();
        for encoded in descriptor_sets {
            let set = <prost_types::FileDescriptorSet as prost::Message>::decode(*encoded)?;
            for file in &set.file {
                for service in &file.service {
                    let full_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    let Some(known) = services.iter().find(|known| **known == full_name) else {
                        continue;
                    };
                    methods
                        .entry(*known)
                        .or_default()
                        .extend(service.method.iter().map(|method| method.name().to_owned()));
                }
            }
        }
        Ok(Self { methods })
    }

    /// The service's label (its name when served, else `unknown`) and the method's (its name
    /// when that service has it, else `unknown`).
    fn labels(&self, service: &str, method: &str) -> (&'static str, String) {
        let Some((known_service, methods)) = self.methods.get_key_value(service) else {
            return (UNKNOWN, UNKNOWN.to_owned());
        };
        let method = if methods.contains(method) {
            method.to_owned()
        } else {
            UNKNOWN.to_owned()
        };
        (known_service, method)
    }

    /// Whether `service` is served and declares `method`.
    #[cfg(test)]
    pub(super) fn has(&self, service: &str, method: &str) -> bool {
        self.methods
            .get(service)
            .is_some_and(|methods| methods.contains(method))
    }
}

/// A call's service and method, as metric labels.
#[derive(Debug, Clone)]
struct Rpc {
    /// The span's name: the real `/service/method`, or `unknown` for anything else.
    path: String,
    /// A known service's name, else `unknown`.
    service: &'static str,
    /// A method of that service, else `unknown`.
    method: String,
    always_on: bool,
}

impl Rpc {
    /// Whether a served service declares this method. The rest is answered by the gate itself,
    /// so that every method labelled `unknown` gets the same UNIMPLEMENTED with its reason.
    fn is_served(&self) -> bool {
        self.method != UNKNOWN
    }

    fn of(path: &str, known: &KnownMethods) -> Self {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let always_on = ALWAYS_ON_PREFIXES
            .iter()
            .any(|prefix| service.starts_with(prefix));
        let (service_label, method_label) = known.labels(service, method);
        let path_label = if service_label == UNKNOWN || method_label == UNKNOWN {
            UNKNOWN.to_owned()
        } else {
            path.to_owned()
        };
        Self {
            path: path_label,
            service: service_label,
            method: method_label,
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
    metrics::counter!(
        "tessera_grpc_requests_total",
        "service" => rpc.service,
        "method" => rpc.method.clone(),
        "code" => code_name(code),
    )
    .increment(1);
    metrics::histogram!(
        "tessera_grpc_request_duration_seconds",
        "service" => rpc.service,
        "method" => rpc.method.clone(),
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

    const AUTHORIZATION: &str = "tessera.v1.AuthorizationService";
    const HEALTH: &str = "grpc.health.v1.Health";
    const REFLECTION: &str = "grpc.reflection.v1alpha.ServerReflection";

    fn known() -> KnownMethods {
        KnownMethods::from_descriptor_sets(
            &[
                crate::proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
            &[AUTHORIZATION, HEALTH, REFLECTION],
        )
        .expect("descriptor sets decode")
    }

    #[test]
    fn a_known_service_keeps_its_name_and_method_as_labels() {
        let rpc = Rpc::of("/tessera.v1.AuthorizationService/Check", &known());
        assert_eq!(rpc.service, AUTHORIZATION);
        assert_eq!(rpc.method, "Check");
        assert_eq!(rpc.path, "/tessera.v1.AuthorizationService/Check");
        assert!(!rpc.always_on);
    }

    #[test]
    fn an_unknown_service_is_labelled_unknown_so_clients_cannot_grow_the_label_set() {
        let rpc = Rpc::of("/made.up.Service/Anything", &known());
        assert_eq!(rpc.service, UNKNOWN);
        assert_eq!(rpc.method, UNKNOWN);
        assert_eq!(rpc.path, UNKNOWN);
    }

    #[test]
    fn an_invented_method_of_a_known_service_is_labelled_unknown_whatever_the_answer() {
        let rpc = Rpc::of("/tessera.v1.AuthorizationService/Invented123", &known());
        assert_eq!(rpc.service, AUTHORIZATION);
        assert_eq!(rpc.method, UNKNOWN);
        assert_eq!(rpc.path, UNKNOWN, "the span name is bounded too");
    }

    #[test]
    fn the_method_lists_come_from_the_descriptor_sets_of_every_served_service() {
        let known = known();
        assert!(known.has(AUTHORIZATION, "Check"));
        assert!(known.has(HEALTH, "Check"));
        assert!(known.has(HEALTH, "Watch"));
        assert!(known.has(REFLECTION, "ServerReflectionInfo"));
        assert!(!known.has(AUTHORIZATION, "Watch"));
    }

    #[test]
    fn health_and_reflection_are_always_on() {
        assert!(Rpc::of("/grpc.health.v1.Health/Check", &known()).always_on);
        assert!(
            Rpc::of(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                &known()
            )
            .always_on
        );
    }
}
