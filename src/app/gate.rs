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

use std::collections::HashMap;
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
        let rpc = self.policy.known_methods.rpc(request.uri().path());
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
                in_flight().increment(1);
                let response = gate.admit(rpc.clone(), request).await;
                in_flight().decrement(1);
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
#[derive(Debug, Clone)]
pub(crate) struct KnownMethods {
    /// Each served method's entry, shared by all its calls.
    methods: HashMap<&'static str, HashMap<String, Rpc>>,
    /// What calls to anything else share (one for the always-on prefixes, one for the rest).
    unknown: Rpc,
    unknown_always_on: Rpc,
}

impl Default for KnownMethods {
    /// No served methods: every call is `unknown` (health and reflection still always on).
    fn default() -> Self {
        Self {
            methods: HashMap::new(),
            unknown: Rpc::unknown(UNKNOWN, false),
            unknown_always_on: Rpc::unknown(UNKNOWN, true),
        }
    }
}

impl KnownMethods {
    /// The methods that the encoded descriptor sets declare for each of `services` (their full
    /// names, `package.Service`). Services the sets do not describe get no methods, so their
    /// calls are labelled `unknown`.
    pub fn from_descriptor_sets(
        descriptor_sets: &[&[u8]],
        services: &[&'static str],
    ) -> Result<Self, prost::DecodeError> {
        let mut methods: HashMap<&'static str, HashMap<String, Rpc>> = HashMap::new();
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
                    let entries = methods.entry(*known).or_default();
                    for method in &service.method {
                        entries.insert(method.name().to_owned(), Rpc::known(known, method.name()));
                    }
                }
            }
        }
        Ok(Self {
            methods,
            ..Self::default()
        })
    }

    /// The call's shared entry: its service and method when served, else one labelled
    /// `unknown` (a known service's own name with method `unknown`).
    fn rpc(&self, path: &str) -> Rpc {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let Some((known_service, methods)) = self.methods.get_key_value(service) else {
            let always_on = ALWAYS_ON_PREFIXES
                .iter()
                .any(|prefix| service.starts_with(prefix));
            return if always_on {
                self.unknown_always_on.clone()
            } else {
                self.unknown.clone()
            };
        };
        match methods.get(method) {
            Some(rpc) => rpc.clone(),
            None => Rpc::unknown(known_service, is_always_on(known_service)),
        }
    }

    /// Whether `service` is served and declares `method`.
    #[cfg(test)]
    pub(super) fn has(&self, service: &str, method: &str) -> bool {
        self.methods
            .get(service)
            .is_some_and(|methods| methods.contains_key(method))
    }
}

fn is_always_on(service: &str) -> bool {
    ALWAYS_ON_PREFIXES
        .iter()
        .any(|prefix| service.starts_with(prefix))
}

/// A call's service and method, as metric labels, with the metric handles of that pair,
/// resolved on the first call of each and shared by the rest (no registry look-up per call).
#[derive(Debug, Clone)]
struct Rpc(Arc<Method>);

#[derive(Debug)]
struct Method {
    /// The span's name: the real `/service/method`, or `unknown` for anything else.
    path: String,
    /// A known service's name, else `unknown`.
    service: &'static str,
    /// A method of that service, else `unknown`.
    method: String,
    always_on: bool,
    /// `tessera_grpc_requests_total` of this method, by status code (`Code as usize`).
    requests: [OnceLock<metrics::Counter>; CODES],
    duration: OnceLock<metrics::Histogram>,
}

/// gRPC's status codes, 0 to 16.
const CODES: usize = 17;

impl Default for Rpc {
    fn default() -> Self {
        Self::unknown(UNKNOWN, false)
    }
}

impl std::ops::Deref for Rpc {
    type Target = Method;

    fn deref(&self) -> &Method {
        &self.0
    }
}

impl Rpc {
    fn known(service: &'static str, method: &str) -> Self {
        let path = format!("/{service}/{method}");
        Self::new(path, service, method.to_owned(), is_always_on(service))
    }

    fn unknown(service: &'static str, always_on: bool) -> Self {
        Self::new(UNKNOWN.to_owned(), service, UNKNOWN.to_owned(), always_on)
    }

    fn new(path: String, service: &'static str, method: String, always_on: bool) -> Self {
        Self(Arc::new(Method {
            path,
            service,
            always_on,
            method,
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
        }))
    }

    /// Whether a served service declares this method. The rest is answered by the gate itself,
    /// so that every method labelled `unknown` gets the same UNIMPLEMENTED with its reason.
    fn is_served(&self) -> bool {
        self.method != UNKNOWN
    }

    #[cfg(test)]
    fn of(path: &str, known: &KnownMethods) -> Self {
        known.rpc(path)
    }

    fn requests(&self, code: Code) -> &metrics::Counter {
        let slot = &self.requests[(code as usize).min(CODES - 1)];
        slot.get_or_init(|| {
            metrics::counter!(
                "tessera_grpc_requests_total",
                "service" => self.service,
                "method" => self.method.clone(),
                "code" => code_name(code),
            )
        })
    }

    fn duration(&self) -> &metrics::Histogram {
        self.duration.get_or_init(|| {
            metrics::histogram!(
                "tessera_grpc_request_duration_seconds",
                "service" => self.service,
                "method" => self.method.clone(),
            )
        })
    }
}

/// `tessera_grpc_requests_in_flight`, resolved once (the recorder is installed before any call).
fn in_flight() -> &'static metrics::Gauge {
    static IN_FLIGHT: OnceLock<metrics::Gauge> = OnceLock::new();
    IN_FLIGHT.get_or_init(|| metrics::gauge!("tessera_grpc_requests_in_flight"))
}

/// Counts and times the call; returns its status code.
fn record(rpc: &Rpc, response: &Response<Body>, started: Instant) -> Code {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from);
    rpc.requests(code).increment(1);
    rpc.duration().record(started.elapsed().as_secs_f64());
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
