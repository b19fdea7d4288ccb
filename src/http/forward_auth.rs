//! `/forward-auth` (any method, sub-paths too): the authorization sub-request of nginx
//! `auth_request`, Caddy `forward_auth` and Traefik `ForwardAuth`, decided by the mapping every
//! gateway shares (src/gateway/mod.rs) and then Tessera's own Check.
//!
//! Where the original request is, first found wins:
//! - method and target: `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy), then
//!   `X-Original-Method` / `X-Original-URI` (nginx `auth_request` configs), then this request's
//!   own method and the sub-path after `/forward-auth` (with this request's query), for a gateway
//!   that appends the original target to the URL. `X-Forwarded-Host` and `X-Forwarded-Proto` are
//!   accepted; rules match on method and path only. The gateway must set these headers itself
//!   (overwriting the client's): a client that can send its own `X-Forwarded-Uri` chooses what
//!   is checked.
//! - token, tenant header, signature, user agent: the headers the gateway passes on (all three
//!   pass the client's headers to the sub-request).
//! - client IP: `X-Forwarded-For` with `TESSERA_ENVOY_TRUSTED_HOPS`, else the connection's peer.
//! - route values (`tenant`, `permission`, `endpoint`, as Envoy's context extensions): the query
//!   of the forward-auth URL the gateway is configured with, e.g.
//!   `/forward-auth?tenant=acme&permission=orders:read`. Caddy keeps the client's query on a
//!   `uri` without one; a query equal to the original target's is therefore taken for the
//!   client's and ignored, as is every query when the target comes from the sub-path.
//!
//! Answers: 200 with `X-Tessera-Token-Id`, `X-Tessera-Owner-Id`, `X-Tessera-Tenant` (for the
//! gateway to copy upstream) and `X-RateLimit-*`; a deny with the reason's status (400, 401 with
//! `WWW-Authenticate`, 403, 429 with `Retry-After`, 503), the same headers as Envoy's and a small
//! JSON body.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::Peer;
use crate::authz::Authorizer;
use crate::domain::decision::DenyReason;
use crate::gateway::{self, Answer, Denial, GatewayRequest, GatewaySettings, to_check_request};
use crate::grpc::authorization;

/// The binding path; sub-paths are accepted too.
pub const PATH: &str = "/forward-auth";

/// The route values a forward-auth URL's query may set.
const ROUTE_KEYS: [&str; 3] = ["tenant", "permission", "endpoint"];

/// What the handler needs: the Check path (set once the store is connected; until then every
/// request is answered 503) and the mapping's settings.
#[derive(Clone)]
pub struct ForwardAuth {
    authorizer: Arc<OnceLock<Arc<Authorizer>>>,
    settings: Arc<GatewaySettings>,
}

impl ForwardAuth {
    pub fn new(authorizer: Arc<OnceLock<Arc<Authorizer>>>, settings: GatewaySettings) -> Self {
        Self {
            authorizer,
            settings: Arc::new(settings),
        }
    }
}

pub(super) fn routes(state: ForwardAuth, max_body_bytes: usize) -> Router {
    let handler = move |State(state): State<ForwardAuth>, request: Request| async move {
        handle(&state, request, max_body_bytes).await
    };
    Router::new()
        .route(PATH, any(handler))
        .route(&format!("{PATH}/{{*rest}}"), any(handler))
        .with_state(state)
}

async fn handle(state: &ForwardAuth, request: Request, max_body_bytes: usize) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return super::plain(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    };
    let Some(authorizer) = state.authorizer.get() else {
        let reason = DenyReason::StoreUnavailable;
        return denied(&Denial::new(reason, reason.message(), Vec::new()));
    };
    let peer = parts.extensions.get::<Peer>().map(|peer| peer.0.ip());
    let request = ForwardAuthRequest::of(&parts, peer, &body);
    let check = match to_check_request(&state.settings, &request) {
        Ok(check) => check,
        Err(deny) => {
            deny.record(request.path());
            return denied(&Denial::new(deny.reason, deny.message, Vec::new()));
        }
    };
    match authorization::decide(authorizer, check).await {
        Ok(decision) => match gateway::answer(&decision, &state.settings.metadata_headers) {
            Answer::Allow {
                identity,
                rate_limit,
                metadata,
            } => {
                let mut response = allowed(identity.into_iter().chain(rate_limit));
                add_metadata_headers(response.headers_mut(), metadata);
                response
            }
            Answer::Deny(denial) => denied(&denial),
        },
        // Fields no request can carry, such as a route value no tenant or permission can be:
        // the gateway's configuration, answered 400 naming the field.
        Err(status) => {
            let body =
                serde_json::json!({ "error": "invalid_argument", "message": status.message() });
            let mut response = (StatusCode::BAD_REQUEST, body.to_string()).into_response();
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

fn allowed(headers: impl Iterator<Item = (&'static str, String)>) -> Response {
    let mut response = Response::new(Body::empty());
    add_headers(response.headers_mut(), headers);
    response
}

fn denied(denial: &Denial) -> Response {
    let mut response = Response::new(Body::from(denial.body.clone()));
    *response.status_mut() = StatusCode::from_u16(denial.status).unwrap_or(StatusCode::FORBIDDEN);
    add_headers(response.headers_mut(), denial.headers.iter().cloned());
    response
}

fn add_headers(map: &mut HeaderMap, headers: impl Iterator<Item = (&'static str, String)>) {
    for (name, value) in headers {
        // Names are constants; values are ids and numbers Tessera made, always valid.
        if let Ok(value) = HeaderValue::try_from(value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The forwarded metadata as `x-tessera-meta-KEY` headers. Names are built from keys of the
/// header alphabet; a value that is no valid header value (none passes the edge's parse) is
/// left out rather than sent broken.
fn add_metadata_headers(map: &mut HeaderMap, metadata: Vec<(String, String)>) {
    for (name, value) in metadata {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            map.insert(name, value);
        }
    }
}

/// What Tessera reads of a forward-auth request.
struct ForwardAuthRequest<'a> {
    headers: &'a HeaderMap,
    method: Cow<'a, str>,
    target: Cow<'a, str>,
    route: [Option<String>; 3],
    peer: Option<IpAddr>,
    body: &'a [u8],
}

impl<'a> ForwardAuthRequest<'a> {
    fn of(parts: &'a hyper::http::request::Parts, peer: Option<IpAddr>, body: &'a [u8]) -> Self {
        let headers = &parts.headers;
        let text = |name: &str| {
            headers
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()))
        };
        let own_query = parts.uri.query();
        let (target, query) = match text("x-forwarded-uri").or_else(|| text("x-original-uri")) {
            Some(target) => {
                let original_query = target.split_once('?').map(|(_, query)| query);
                // Caddy copies the client's query onto a `uri` without one of its own.
                let query = own_query.filter(|query| Some(*query) != original_query);
                (target, query)
            }
            None => {
                let sub_path = parts.uri.path().get(PATH.len()..).unwrap_or_default();
                let target = match own_query {
                    Some(query) => format!("{sub_path}?{query}"),
                    None => sub_path.to_owned(),
                };
                (Cow::Owned(target), None)
            }
        };
        let method = text("x-forwarded-method")
            .or_else(|| text("x-original-method"))
            .unwrap_or(Cow::Borrowed(parts.method.as_str()));
        let mut route: [Option<String>; 3] = Default::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if let Some(index) = ROUTE_KEYS.iter().position(|known| *known == key) {
                // The first of repeated keys, as the operator wrote it first.
                route[index].get_or_insert_with(|| value.into_owned());
            }
        }
        Self {
            headers,
            method,
            target,
            route,
            peer,
            body,
        }
    }
}

impl GatewayRequest for ForwardAuthRequest<'_> {
    fn method(&self) -> &str {
        &self.method
    }

    fn path(&self) -> &str {
        &self.target
    }

    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let first = String::from_utf8_lossy(first.as_bytes());
        match values.next() {
            None => Some(first),
            Some(second) => {
                let mut joined = first.into_owned();
                for value in std::iter::once(second).chain(values) {
                    joined.push(',');
                    joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
                }
                Some(Cow::Owned(joined))
            }
        }
    }

    fn route_value(&self, key: &str) -> Option<&str> {
        let index = ROUTE_KEYS.iter().position(|known| *known == key)?;
        self.route[index].as_deref()
    }

    fn source_ip(&self) -> Option<IpAddr> {
        self.peer
    }

    fn body(&self) -> &[u8] {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> hyper::http::request::Parts {
        let mut builder = hyper::Request::builder().method("GET").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn the_forwarded_headers_beat_the_original_ones_which_beat_the_sub_path() {
        let both = parts(
            "/forward-auth/sub",
            &[
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-uri", "/forwarded?a=1"),
                ("x-original-method", "PUT"),
                ("x-original-uri", "/original"),
            ],
        );
        let request = ForwardAuthRequest::of(&both, None, b"");
        assert_eq!(
            (request.method(), request.path()),
            ("DELETE", "/forwarded?a=1")
        );
        let original = parts(
            "/forward-auth",
            &[
                ("x-original-method", "PUT"),
                ("x-original-uri", "/original"),
            ],
        );
        let request = ForwardAuthRequest::of(&original, None, b"");
        assert_eq!((request.method(), request.path()), ("PUT", "/original"));
        let sub_path = parts("/forward-auth/api/v1/orders/7?page=2", &[]);
        let request = ForwardAuthRequest::of(&sub_path, None, b"");
        assert_eq!(
            (request.method(), request.path()),
            ("GET", "/api/v1/orders/7?page=2")
        );
        assert_eq!(request.route_value("tenant"), None);
    }

    #[test]
    fn route_values_come_from_the_configured_url_never_from_the_clients_query() {
        let configured = parts(
            "/forward-auth?tenant=acme&permission=orders%3Aread&tenant=other",
            &[("x-forwarded-uri", "/api?tenant=mine")],
        );
        let request = ForwardAuthRequest::of(&configured, None, b"");
        assert_eq!(request.route_value("tenant"), Some("acme"));
        assert_eq!(request.route_value("permission"), Some("orders:read"));
        assert_eq!(request.route_value("endpoint"), None);
        // What Caddy sends for a `uri /forward-auth`: the client's own query, copied.
        let copied = parts(
            "/forward-auth?permission=",
            &[("x-forwarded-uri", "/admin?permission=")],
        );
        let request = ForwardAuthRequest::of(&copied, None, b"");
        assert_eq!(request.route_value("permission"), None);
    }

    #[test]
    fn repeated_headers_are_joined_in_order() {
        let repeated = parts(
            "/forward-auth",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-for", "10.0.0.2"),
            ],
        );
        let request = ForwardAuthRequest::of(&repeated, None, b"");
        assert_eq!(
            request.header("x-forwarded-for").as_deref(),
            Some("203.0.113.9,10.0.0.2")
        );
        assert_eq!(request.header("x-missing"), None);
    }
}
