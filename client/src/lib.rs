//! Tessera's Check as a [`tower::Layer`], for Rust services (axum, tonic) that authorize each
//! request in process of their own handling.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tessera_client::{Checker, Identity, TesseraLayer};
//!
//! // One channel for the whole service: tonic multiplexes every Check over it.
//! let channel = tonic::transport::Endpoint::from_static("http://tessera:50051").connect_lazy();
//! let checker = Checker::new(channel);
//! let app: axum::Router = axum::Router::new()
//!     .route(
//!         "/orders",
//!         axum::routing::get(|identity: axum::Extension<Identity>| async move {
//!             format!("orders of {}", identity.owner_id)
//!         }),
//!     )
//!     .layer(TesseraLayer::new(checker).tenant("acme").permission("orders:read"));
//! # Ok(()) }
//! ```
//!
//! Per request the layer reads the token (`Authorization: Bearer …`, or the header named with
//! [`TesseraLayer::token_header`]), calls Check with a bounded deadline
//! ([`Checker::with_deadline`], 250 ms by default), and then either puts the [`Identity`] into
//! the request's extensions and calls the service, or answers the deny itself: for an axum body
//! the reason's HTTP status with a small JSON body, `WWW-Authenticate` and `Retry-After` (as
//! Tessera's gateways answer); for a tonic body the matching gRPC status. Tessera unreachable or
//! slower than the deadline is a deny too (503 / UNAVAILABLE): the layer fails closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use tonic::transport::Channel;
use tower::{Layer, Service};

/// Tessera's `tessera.v1` messages and the AuthorizationService client, generated from the
/// repository's `proto/`.
pub mod proto {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("tessera.v1");
}

use proto::authorization_service_client::AuthorizationServiceClient;

/// How long a Check may take unless [`Checker::with_deadline`] says otherwise: a cached Check
/// answers in well under a millisecond, a cache miss within Tessera's own store deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(250);

/// Who made an allowed request: in the request's extensions for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub token_id: String,
    pub owner_id: String,
    pub tenant: String,
    /// What the token may do (its effective permissions, as Check reports them).
    pub permissions: Vec<String>,
}

/// A request not allowed, as the client should be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 401, 403, 429, 503 (or 400 for a request Tessera calls malformed).
    pub status: StatusCode,
    /// Tessera's reason name (`token_missing`, `permission_denied`, …; `unavailable` when
    /// Tessera could not answer in time).
    pub reason: String,
    /// Safe to show to the client.
    pub message: String,
    /// Seconds until the rate limit allows again, on 429.
    pub retry_after: Option<u32>,
}

impl Denial {
    fn unavailable(message: &str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "unavailable".to_owned(),
            message: message.to_owned(),
            retry_after: None,
        }
    }

    /// The `WWW-Authenticate` challenge a 401 carries.
    fn challenge(&self) -> Option<&'static str> {
        match (self.status, self.reason.as_str()) {
            (StatusCode::UNAUTHORIZED, "token_missing") => Some("Bearer"),
            (StatusCode::UNAUTHORIZED, _) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        match self.status {
            StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            _ => tonic::Code::PermissionDenied,
        }
    }
}

/// Calls Check over one shared channel, each call bounded by a deadline. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Checker {
    client: AuthorizationServiceClient<Channel>,
    deadline: Duration,
}

impl Checker {
    /// Over `channel` (e.g. `Endpoint::connect_lazy`): every clone shares it.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: AuthorizationServiceClient::new(channel),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// The longest one Check may take; past it the request is denied 503.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Check: the identity of an allowed request, or how to deny it.
    pub async fn check(&self, request: proto::CheckRequest) -> Result<Identity, Denial> {
        let mut call = tonic::Request::new(request);
        // Tessera stops working on it past the deadline too (grpc-timeout).
        call.set_timeout(self.deadline);
        let mut client = self.client.clone();
        let answered = tokio::time::timeout(self.deadline, client.check(call)).await;
        let response = match answered {
            Err(_) => return Err(Denial::unavailable("authorization timed out")),
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                return Err(Denial {
                    status: StatusCode::BAD_REQUEST,
                    reason: "invalid_argument".to_owned(),
                    message: status.message().to_owned(),
                    retry_after: None,
                });
            }
            Ok(Err(_)) => return Err(Denial::unavailable("authorization is unavailable")),
            Ok(Ok(response)) => response.into_inner(),
        };
        if response.allowed {
            return Ok(Identity {
                token_id: response.token_id,
                owner_id: response.owner_id,
                tenant: response.tenant,
                permissions: response.permissions,
            });
        }
        let status = u16::try_from(response.http_status)
            .ok()
            .and_then(|status| StatusCode::from_u16(status).ok())
            .unwrap_or(StatusCode::FORBIDDEN);
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            response
                .rate_limit
                .map_or(1, |limit| limit.reset_seconds)
                .max(1)
        });
        Err(Denial {
            status,
            reason: reason_name(response.reason()),
            message: response.message,
            retry_after,
        })
    }
}

/// `DENY_REASON_TOKEN_MISSING` → `token_missing`.
fn reason_name(reason: proto::DenyReason) -> String {
    reason
        .as_str_name()
        .trim_start_matches("DENY_REASON_")
        .to_ascii_lowercase()
}

/// What the layer asks Check for every request it wraps.
#[derive(Debug)]
struct Policy {
    tenant: String,
    permission: String,
    endpoint: Option<String>,
    token_header: HeaderName,
}

/// The layer: wrap a router, a route or a tonic server with it.
#[derive(Debug, Clone)]
pub struct TesseraLayer {
    checker: Checker,
    policy: Arc<Policy>,
}

impl TesseraLayer {
    /// Authentication only, in the default tenant, token from `Authorization: Bearer`.
    pub fn new(checker: Checker) -> Self {
        Self {
            checker,
            policy: Arc::new(Policy {
                tenant: String::new(),
                permission: String::new(),
                endpoint: None,
                token_header: http::header::AUTHORIZATION,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Policy)) -> Self {
        let mut policy = Policy {
            tenant: self.policy.tenant.clone(),
            permission: self.policy.permission.clone(),
            endpoint: self.policy.endpoint.clone(),
            token_header: self.policy.token_header.clone(),
        };
        change(&mut policy);
        self.policy = Arc::new(policy);
        self
    }

    /// The tenant whose tokens are accepted.
    pub fn tenant(self, tenant: impl Into<String>) -> Self {
        let tenant = tenant.into();
        self.with(|policy| policy.tenant = tenant)
    }

    /// The permission every wrapped request needs (empty: any valid token).
    pub fn permission(self, permission: impl Into<String>) -> Self {
        let permission = permission.into();
        self.with(|policy| policy.permission = permission)
    }

    /// The usage label of wrapped requests (default: the method, e.g. `GET *`).
    pub fn endpoint(self, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        self.with(|policy| policy.endpoint = Some(endpoint))
    }

    /// The header carrying the token instead of `Authorization` (a `Bearer ` prefix is
    /// stripped either way).
    pub fn token_header(self, header: HeaderName) -> Self {
        self.with(|policy| policy.token_header = header)
    }
}

impl<S> Layer<S> for TesseraLayer {
    type Service = TesseraService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TesseraService {
            inner,
            checker: self.checker.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The wrapped service.
#[derive(Debug, Clone)]
pub struct TesseraService<S> {
    inner: S,
    checker: Checker,
    policy: Arc<Policy>,
}

/// How a deny is written in the wrapped service's own response body.
pub trait DenyBody: Sized {
    fn deny(denial: &Denial) -> Response<Self>;
}

/// A gRPC service: the deny as the status its client reads.
impl DenyBody for tonic::body::Body {
    fn deny(denial: &Denial) -> Response<Self> {
        tonic::Status::new(denial.grpc_code(), denial.message.clone()).into_http()
    }
}

/// An HTTP service: the reason's status, a small JSON body and the challenge or retry headers.
#[cfg(feature = "axum")]
impl DenyBody for axum::body::Body {
    fn deny(denial: &Denial) -> Response<Self> {
        let body = serde_json::json!({ "error": denial.reason, "message": denial.message });
        let mut response = Response::new(Self::from(body.to_string()));
        *response.status_mut() = denial.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(challenge) = denial.challenge() {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = denial.retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TesseraService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: DenyBody + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh one waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let checker = self.checker.clone();
        let check = check_request(&self.policy, &request);
        Box::pin(async move {
            let check = match check {
                Some(check) => check,
                None => {
                    return Ok(ResBody::deny(&Denial {
                        status: StatusCode::UNAUTHORIZED,
                        reason: "token_missing".to_owned(),
                        message: "an API token is required".to_owned(),
                        retry_after: None,
                    }));
                }
            };
            match checker.check(check).await {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    inner.call(request).await
                }
                Err(denial) => Ok(ResBody::deny(&denial)),
            }
        })
    }
}

/// The Check for `request`, or None when it carries no token (denied without asking).
fn check_request<B>(policy: &Policy, request: &Request<B>) -> Option<proto::CheckRequest> {
    let raw = request.headers().get(&policy.token_header)?.to_str().ok()?;
    let token = strip_bearer(raw);
    if token.is_empty() {
        return None;
    }
    let endpoint = policy
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("{} *", standard_method(request.method())));
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(256).collect())
        .unwrap_or_default();
    Some(proto::CheckRequest {
        token: token.to_owned(),
        tenant: policy.tenant.clone(),
        permission: policy.permission.clone(),
        endpoint,
        user_agent,
        ..proto::CheckRequest::default()
    })
}

/// The method as a usage label: a standard one, else `OTHER` (no invented labels).
fn standard_method(method: &http::Method) -> &'static str {
    const STANDARD: [http::Method; 9] = [
        http::Method::GET,
        http::Method::HEAD,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::CONNECT,
        http::Method::OPTIONS,
        http::Method::TRACE,
        http::Method::PATCH,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("OTHER", |standard| standard.as_str())
}

/// `Bearer abc` → `abc` (scheme case-insensitive); any other value as it is.
fn strip_bearer(value: &str) -> &str {
    let trimmed = value.trim();
    match trimmed.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => trimmed[7..].trim_start(),
        _ => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_the_servers_snake_case_names() {
        assert_eq!(
            reason_name(proto::DenyReason::TokenMissing),
            "token_missing"
        );
        assert_eq!(
            reason_name(proto::DenyReason::PermissionDenied),
            "permission_denied"
        );
    }

    #[test]
    fn an_invented_method_is_labelled_other() {
        let method = http::Method::from_bytes(b"FROB").expect("method");
        assert_eq!(standard_method(&method), "OTHER");
        assert_eq!(standard_method(&http::Method::PATCH), "PATCH");
    }
}
