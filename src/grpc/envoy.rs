//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization (ext_authz v3),
//! mapped onto the same Check as `tessera.v1.AuthorizationService`.
//!
//! An Envoy request becomes a `tessera.v1.CheckRequest`, which then takes exactly the path of
//! Tessera's own Check ([`authorization::decide`]):
//! - token: the configured header (default `authorization`), without a `Bearer ` prefix;
//! - tenant: the route's `context_extensions["tenant"]` (set by the operator, so clients cannot
//!   forge it), else the configured tenant header, else the default tenant;
//! - path: `:path` parsed once into a [`RequestTarget`] (query split off, percent-encoding and
//!   dot segments resolved, repeated slashes merged); a path that cannot be resolved
//!   unambiguously is denied first, as `path_invalid` with HTTP 400, logged and counted in
//!   `tessera_gateway_path_refused_total{reason}`;
//! - permission: `context_extensions["permission"]` (empty: authenticate only), else the first
//!   rule matching the method and the normalized path, else the configured default (deny, or
//!   authenticate only);
//! - client IP: the connection's source address, or the `x-forwarded-for` entry as many hops
//!   from the right as proxies are trusted (never the leftmost unless that is the one);
//! - usage label: `context_extensions["endpoint"]`, else the method (a standard one or `OTHER`)
//!   and the matched rule's pattern, never the raw path;
//! - signature: the configured signature and timestamp headers, over
//!   [`canonical_http_payload`] (method, path with query as the client sent them, the body's
//!   SHA-256 when bodies are signed).
//!
//! Allowed: upstream headers `x-tessera-token-id`, `x-tessera-owner-id`, `x-tessera-tenant` (and
//! every other incoming `x-tessera-*` header removed, so a client cannot forge identity), and
//! `x-ratelimit-*` response headers to the client. Denied: the HTTP status of the reason (401 with
//! `www-authenticate`, 403, 429 with `retry-after`, 503) and a small JSON body.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tonic::{Request, Response, Status};

use crate::authz::{Authorizer, Decision};
use crate::domain::decision::DenyReason;
use crate::domain::fields::Tenant;
use crate::domain::http::{HttpMethod, PathError, RequestTarget};
use crate::domain::network::forwarded_client;
use crate::domain::route::{PermissionRules, Unmatched};
use crate::domain::signature::canonical_http_payload;
use crate::grpc::authorization::{self, MAX_ENDPOINT_LEN, MAX_USER_AGENT_LEN};
use crate::proto;

/// Headers set upstream on an allowed request; any incoming copy is replaced.
const TOKEN_ID_HEADER: &str = "x-tessera-token-id";
const OWNER_ID_HEADER: &str = "x-tessera-owner-id";
const TENANT_HEADER: &str = "x-tessera-tenant";
/// Every incoming header with this prefix is removed before the request goes upstream.
const RESERVED_PREFIX: &str = "x-tessera-";
/// How much of a refused path a log line shows: enough to recognise the trick, bounded however
/// long the client made it.
const LOGGED_PATH_LEN: usize = 64;

/// The header carrying the token unless `TESSERA_ENVOY_TOKEN_HEADER` names another.
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";
/// The header carrying a request's signature unless `TESSERA_ENVOY_SIGNATURE_HEADER` says.
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-tessera-signature";
/// The header carrying the signature's timestamp unless `TESSERA_ENVOY_TIMESTAMP_HEADER` says.
pub const DEFAULT_TIMESTAMP_HEADER: &str = "x-tessera-timestamp";

/// How Envoy requests map onto Check: parsed once from the settings (`TESSERA_ENVOY_*`).
#[derive(Debug, Clone)]
pub struct EnvoySettings {
    /// Lowercase header carrying the token; a `Bearer ` prefix is stripped.
    pub token_header: String,
    /// Lowercase header naming the tenant when the route sets no `tenant` extension.
    pub tenant_header: Option<String>,
    /// How many rightmost `x-forwarded-for` entries were written by trusted proxies; 0 ignores
    /// the header and uses the connection's source address.
    pub trusted_hops: usize,
    pub rules: PermissionRules,
    /// Lowercase header carrying the base64 signature.
    pub signature_header: String,
    /// Lowercase header carrying the signature's unix timestamp.
    pub timestamp_header: String,
    /// Whether the body's hash is part of the signed payload (Envoy must send the body:
    /// `with_request_body`); otherwise the hash of an empty body stands in.
    pub sign_body: bool,
}

impl Default for EnvoySettings {
    fn default() -> Self {
        Self {
            token_header: DEFAULT_TOKEN_HEADER.to_owned(),
            tenant_header: None,
            trusted_hops: 0,
            rules: PermissionRules::default(),
            signature_header: DEFAULT_SIGNATURE_HEADER.to_owned(),
            timestamp_header: DEFAULT_TIMESTAMP_HEADER.to_owned(),
            sign_body: false,
        }
    }
}

pub struct EnvoyAuthorizationApi {
    authorizer: Arc<Authorizer>,
    settings: Arc<EnvoySettings>,
}

impl EnvoyAuthorizationApi {
    pub fn new(authorizer: Arc<Authorizer>, settings: EnvoySettings) -> Self {
        Self {
            authorizer,
            settings: Arc::new(settings),
        }
    }
}

/// The service to register on the server.
pub fn service(
    authorizer: Arc<Authorizer>,
    settings: EnvoySettings,
) -> envoy_types::ext_authz::v3::pb::AuthorizationServer<EnvoyAuthorizationApi> {
    envoy_types::ext_authz::v3::pb::AuthorizationServer::new(EnvoyAuthorizationApi::new(
        authorizer, settings,
    ))
}

#[tonic::async_trait]
impl Authorization for EnvoyAuthorizationApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let request = request.into_inner();
        let check = match map_check_request(&self.settings, &request) {
            Ok(check) => check,
            Err(EarlyDeny {
                reason,
                message,
                refused_path,
            }) => {
                if let Some(error) = refused_path {
                    log_refused_path(error, EnvoyRequest::of(&request).path());
                }
                metrics::counter!("tessera_checks_total", "reason" => reason.as_str()).increment(1);
                return Ok(Response::new(denied(reason, message, None)));
            }
        };
        let decision = authorization::decide(&self.authorizer, check).await?;
        Ok(Response::new(response(
            &decision,
            &EnvoyRequest::of(&request),
        )))
    }
}

/// What Tessera reads of an Envoy request, whichever way Envoy encoded the headers.
struct EnvoyRequest<'a> {
    http: Option<&'a HttpRequest>,
    context_extensions: Option<&'a HashMap<String, String>>,
    source_address: Option<&'a str>,
}

impl<'a> EnvoyRequest<'a> {
    fn of(request: &'a CheckRequest) -> Self {
        let attributes = request.attributes.as_ref();
        let http = attributes
            .and_then(|attributes| attributes.request.as_ref())
            .and_then(|request| request.http.as_ref());
        let source_address = attributes
            .and_then(|attributes| attributes.source.as_ref())
            .and_then(|peer| peer.address.as_ref())
            .and_then(|address| address.address.as_ref())
            .and_then(|address| match address {
                Address::SocketAddress(socket) => Some(socket.address.as_str()),
                _ => None,
            });
        Self {
            http,
            context_extensions: attributes.map(|attributes| &attributes.context_extensions),
            source_address,
        }
    }

    /// A header's value by lowercase name, from `headers` or, when Envoy sends raw headers,
    /// from `header_map` (repeated headers joined with `,` as Envoy does).
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'a, str>> {
        let http = self.http?;
        if let Some(value) = http.headers.get(name) {
            return Some(std::borrow::Cow::Borrowed(value.as_str()));
        }
        let map = http.header_map.as_ref()?;
        let values: Vec<String> = map
            .headers
            .iter()
            .filter(|header| header.key.eq_ignore_ascii_case(name))
            .map(|header| {
                if header.raw_value.is_empty() {
                    header.value.clone()
                } else {
                    String::from_utf8_lossy(&header.raw_value).into_owned()
                }
            })
            .collect();
        (!values.is_empty()).then(|| std::borrow::Cow::Owned(values.join(",")))
    }

    /// The incoming header names (as sent; Envoy sends them lowercase) that `reserved` picks,
    /// allocating only for those.
    fn header_names_where(&self, reserved: impl Fn(&str) -> bool) -> Vec<String> {
        let Some(http) = self.http else {
            return Vec::new();
        };
        let raw = http
            .header_map
            .iter()
            .flat_map(|map| map.headers.iter().map(|header| header.key.as_str()));
        http.headers
            .keys()
            .map(String::as_str)
            .chain(raw)
            .filter(|name| reserved(name))
            .map(str::to_ascii_lowercase)
            .collect()
    }

    fn context_extension(&self, key: &str) -> Option<&'a str> {
        self.context_extensions?.get(key).map(String::as_str)
    }

    fn method(&self) -> &'a str {
        self.http.map_or("", |http| http.method.as_str())
    }

    fn path(&self) -> &'a str {
        self.http.map_or("", |http| http.path.as_str())
    }

    fn body(&self) -> &'a [u8] {
        match self.http {
            Some(http) if !http.raw_body.is_empty() => &http.raw_body,
            Some(http) => http.body.as_bytes(),
            None => &[],
        }
    }
}

/// A deny decided from the request alone, before any token lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct EarlyDeny {
    pub reason: DenyReason,
    pub message: &'static str,
    /// Why the path was refused, when that is the reason (`path_invalid`).
    pub refused_path: Option<PathError>,
}

/// A refused path, logged without its query (which may carry secrets) and cut short, and
/// counted by refusal.
fn log_refused_path(error: PathError, raw_path: &str) {
    let path_only = raw_path.split('?').next().unwrap_or_default();
    // Debug formatting escapes the control bytes a refused path may hold (no forged log lines).
    tracing::info!(
        reason = error.as_str(),
        path = ?truncate(path_only, LOGGED_PATH_LEN),
        path_len = raw_path.len(),
        "gateway request path refused"
    );
    metrics::counter!("tessera_gateway_path_refused_total", "reason" => error.as_str())
        .increment(1);
}

/// What the service runs on every Envoy request before any lookup: Envoy's request as Tessera's
/// own CheckRequest, or the deny that needs no token. Pure, so the fuzz target drives exactly this.
pub fn map_check_request(
    settings: &EnvoySettings,
    request: &CheckRequest,
) -> Result<proto::CheckRequest, EarlyDeny> {
    to_check_request(settings, &EnvoyRequest::of(request))
}

/// Envoy's request as Tessera's own CheckRequest, or the deny that needs no token lookup.
fn to_check_request(
    settings: &EnvoySettings,
    request: &EnvoyRequest<'_>,
) -> Result<proto::CheckRequest, EarlyDeny> {
    let method = request.method();
    let path = request.path();
    // Before anything else: whatever the route or the token, the upstream would resolve this
    // path to a resource no rule can be sure of.
    let target = RequestTarget::parse(path).map_err(|error| EarlyDeny {
        reason: DenyReason::PathInvalid,
        message: DenyReason::PathInvalid.message(),
        refused_path: Some(error),
    })?;
    let matched_rule = settings.rules.find(method, &target);

    let permission = match (request.context_extension("permission"), matched_rule) {
        (Some(permission), _) => permission.to_owned(),
        (None, Some(rule)) => rule
            .permission()
            .map(ToString::to_string)
            .unwrap_or_default(),
        (None, None) => match settings.rules.unmatched() {
            Unmatched::Authenticate => String::new(),
            // Not exposed through any rule: denied whatever the token.
            Unmatched::Deny => {
                return Err(EarlyDeny {
                    reason: DenyReason::PermissionDenied,
                    message: "no permission rule covers this request",
                    refused_path: None,
                });
            }
        },
    };

    let tenant = match request.context_extension("tenant") {
        Some(tenant) => tenant.to_owned(),
        None => {
            let from_header = settings
                .tenant_header
                .as_deref()
                .and_then(|name| request.header(name));
            match from_header {
                // A name no tenant can have is the client's doing, not a malformed call.
                Some(tenant) if Tenant::parse(&tenant).is_err() => {
                    return Err(EarlyDeny {
                        reason: DenyReason::TenantMismatch,
                        message: DenyReason::TenantMismatch.message(),
                        refused_path: None,
                    });
                }
                Some(tenant) => tenant.into_owned(),
                None => String::new(),
            }
        }
    };

    let token = request
        .header(&settings.token_header)
        .map(|value| strip_bearer(&value).to_owned())
        .unwrap_or_default();

    let client_ip = if settings.trusted_hops > 0 {
        request
            .header("x-forwarded-for")
            .and_then(|header| forwarded_client(&header, settings.trusted_hops))
    } else {
        request
            .source_address
            .and_then(|address| address.parse::<std::net::IpAddr>().ok())
    };

    let endpoint = match (request.context_extension("endpoint"), matched_rule) {
        (Some(endpoint), _) => endpoint.to_owned(),
        (None, Some(rule)) => rule.label(method),
        (None, None) => format!("{} *", HttpMethod::of(method).as_str()),
    };

    let signature = request
        .header(&settings.signature_header)
        .filter(|signature| !signature.is_empty())
        .map(|signature| {
            let timestamp = request
                .header(&settings.timestamp_header)
                .and_then(|timestamp| timestamp.trim().parse::<i64>().ok())
                // A missing or garbled timestamp signs nothing the client could have meant.
                .unwrap_or(0);
            let body: &[u8] = if settings.sign_body {
                request.body()
            } else {
                &[]
            };
            proto::Signature {
                timestamp,
                signature: signature.into_owned(),
                payload: canonical_http_payload(method, path, body),
            }
        });

    Ok(proto::CheckRequest {
        token,
        tenant,
        permission,
        client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_agent: truncate(
            request.header("user-agent").as_deref().unwrap_or_default(),
            MAX_USER_AGENT_LEN,
        ),
        endpoint: truncate(&endpoint, MAX_ENDPOINT_LEN),
        signature,
        // A rule names one permission (or none).
        all_permissions: Vec::new(),
        any_permissions: Vec::new(),
    })
}

/// The `google.rpc.Status` Envoy reads to tell allow (OK) from deny, built directly rather than
/// through a `tonic::Status` (which carries a header map Envoy never sees).
fn rpc_status(code: tonic::Code, message: &str) -> envoy_types::pb::google::rpc::Status {
    envoy_types::pb::google::rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    }
}

/// `Bearer abc` → `abc` (scheme case-insensitive); any other value as it is.
fn strip_bearer(value: &str) -> &str {
    let trimmed = value.trim();
    match trimmed.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => trimmed[7..].trim_start(),
        _ => trimmed,
    }
}

/// At most `max` bytes, cut on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn response(decision: &Decision, request: &EnvoyRequest<'_>) -> CheckResponse {
    let rate_limit_headers = decision.rate_limit.map(|status| {
        [
            ("x-ratelimit-limit", status.limit.to_string()),
            ("x-ratelimit-remaining", status.remaining.to_string()),
            ("x-ratelimit-reset", status.reset_seconds.to_string()),
        ]
    });
    let (Ok(()), Some(credential)) = (decision.outcome, decision.credential.as_deref()) else {
        let reason = decision.outcome.err().unwrap_or(DenyReason::TokenUnknown);
        return denied(reason, &decision.message, rate_limit_headers);
    };

    let mut ok = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    let identity = [
        (TOKEN_ID_HEADER, credential.token_id.as_str()),
        (OWNER_ID_HEADER, credential.owner_id.as_str()),
        (TENANT_HEADER, credential.tenant.as_str()),
    ];
    for (name, value) in identity {
        ok.add_header(name, value, overwrite, false);
    }
    // Envoy removes after it sets, so the identity headers just set must not be named here;
    // setting them with overwrite already replaces any forged copy.
    let forgeable = request.header_names_where(|name| {
        let reserved = name
            .get(..RESERVED_PREFIX.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RESERVED_PREFIX));
        reserved
            && !identity
                .iter()
                .any(|(set, _)| set.eq_ignore_ascii_case(name))
    });
    for name in forgeable {
        ok.remove_header(name);
    }
    // To the client only: they are about its budget. (Upstream headers would also push the
    // answer past 256 bytes, where h2 writes it in two syscalls instead of one.)
    for (name, value) in rate_limit_headers.into_iter().flatten() {
        ok.add_response_header(name, value, overwrite, false);
    }
    let mut response = CheckResponse {
        status: Some(rpc_status(tonic::Code::Ok, "")),
        ..CheckResponse::default()
    };
    response.set_http_response(ok);
    response
}

fn denied(
    reason: DenyReason,
    message: &str,
    rate_limit_headers: Option<[(&str, String); 3]>,
) -> CheckResponse {
    let http_status = reason.http_status();
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(
        HttpStatusCode::try_from(i32::from(http_status)).unwrap_or(HttpStatusCode::Forbidden),
    );
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    denied.add_header("content-type", "application/json", overwrite, false);
    match http_status {
        401 => {
            let challenge = if reason == DenyReason::TokenMissing {
                "Bearer"
            } else {
                "Bearer error=\"invalid_token\""
            };
            denied.add_header("www-authenticate", challenge, overwrite, false);
        }
        429 => {
            let retry_after = rate_limit_headers
                .as_ref()
                .and_then(|headers| headers[2].1.parse::<u32>().ok())
                .unwrap_or(1)
                .max(1);
            denied.add_header("retry-after", retry_after.to_string(), overwrite, false);
        }
        _ => {}
    }
    for (name, value) in rate_limit_headers.into_iter().flatten() {
        denied.add_header(name, value, overwrite, false);
    }
    let body = serde_json::json!({ "error": reason.as_str(), "message": message });
    denied.set_body(body.to_string());

    let code = match http_status {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    let mut response = CheckResponse {
        status: Some(rpc_status(code, reason.as_str())),
        ..CheckResponse::default()
    };
    response.set_http_response(denied);
    response
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        Address as EnvoyAddress, HeaderMap, HeaderValue, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, Request};

    use super::*;
    use crate::domain::route::PermissionRule;

    /// An Envoy CheckRequest for `method path` from `source`, with lowercase headers.
    fn envoy_request(
        method: &str,
        path: &str,
        source: &str,
        headers: &[(&str, &str)],
        extensions: &[(&str, &str)],
    ) -> CheckRequest {
        let pairs = |items: &[(&str, &str)]| {
            items
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(EnvoyAddress {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: source.to_owned(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: method.to_owned(),
                        path: path.to_owned(),
                        headers: pairs(headers),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: pairs(extensions),
                ..Default::default()
            }),
        }
    }

    fn settings_with_rules(unmatched: Unmatched) -> EnvoySettings {
        let rule = |method, path: Option<&str>, prefix: Option<&str>, permission| {
            PermissionRule::parse(method, path, prefix, permission).expect("rule")
        };
        EnvoySettings {
            rules: PermissionRules::new(
                vec![
                    rule("GET", None, Some("/api/v1/orders/"), "orders:read"),
                    rule("*", Some("/health"), None, ""),
                ],
                unmatched,
            ),
            tenant_header: Some("x-tenant".to_owned()),
            ..EnvoySettings::default()
        }
    }

    fn mapped(settings: &EnvoySettings, request: &CheckRequest) -> proto::CheckRequest {
        to_check_request(settings, &EnvoyRequest::of(request)).expect("mapped")
    }

    #[test]
    fn the_token_comes_from_the_authorization_bearer_or_the_configured_header() {
        let request = envoy_request(
            "GET",
            "/health",
            "192.0.2.1",
            &[
                ("authorization", "Bearer tsk_abc"),
                ("x-api-key", "tsk_key"),
            ],
            &[],
        );
        let settings = settings_with_rules(Unmatched::Deny);
        assert_eq!(mapped(&settings, &request).token, "tsk_abc");
        let by_api_key = EnvoySettings {
            token_header: "x-api-key".to_owned(),
            ..settings
        };
        assert_eq!(mapped(&by_api_key, &request).token, "tsk_key");
    }

    #[test]
    fn the_route_tenant_beats_the_tenant_header_which_beats_the_default() {
        let settings = settings_with_rules(Unmatched::Deny);
        let both = envoy_request(
            "GET",
            "/health",
            "192.0.2.1",
            &[("x-tenant", "forged")],
            &[("tenant", "acme")],
        );
        assert_eq!(mapped(&settings, &both).tenant, "acme");
        let header_only = envoy_request(
            "GET",
            "/health",
            "192.0.2.1",
            &[("x-tenant", "globex")],
            &[],
        );
        assert_eq!(mapped(&settings, &header_only).tenant, "globex");
        let neither = envoy_request("GET", "/health", "192.0.2.1", &[], &[]);
        assert_eq!(mapped(&settings, &neither).tenant, "");
    }

    #[test]
    fn a_tenant_header_no_tenant_can_have_is_a_tenant_mismatch() {
        let settings = settings_with_rules(Unmatched::Deny);
        let request = envoy_request("GET", "/health", "192.0.2.1", &[("x-tenant", "a b")], &[]);
        let deny = to_check_request(&settings, &EnvoyRequest::of(&request)).expect_err("deny");
        assert_eq!(deny.reason, DenyReason::TenantMismatch);
    }

    #[test]
    fn the_route_permission_beats_the_rules_and_may_ask_for_authentication_only() {
        let settings = settings_with_rules(Unmatched::Deny);
        let extension = envoy_request(
            "GET",
            "/api/v1/orders/1",
            "192.0.2.1",
            &[],
            &[("permission", "orders:write")],
        );
        assert_eq!(mapped(&settings, &extension).permission, "orders:write");
        let empty = envoy_request("GET", "/nowhere", "192.0.2.1", &[], &[("permission", "")]);
        assert_eq!(mapped(&settings, &empty).permission, "");
        let rule = envoy_request("GET", "/api/v1/orders/1?x=1", "192.0.2.1", &[], &[]);
        assert_eq!(mapped(&settings, &rule).permission, "orders:read");
    }

    #[test]
    fn a_request_no_rule_matches_is_denied_or_only_authenticated_as_configured() {
        let request = envoy_request("DELETE", "/api/v1/orders/1", "192.0.2.1", &[], &[]);
        let deny = to_check_request(
            &settings_with_rules(Unmatched::Deny),
            &EnvoyRequest::of(&request),
        )
        .expect_err("deny");
        assert_eq!(deny.reason, DenyReason::PermissionDenied);
        let authenticate = mapped(&settings_with_rules(Unmatched::Authenticate), &request);
        assert_eq!(authenticate.permission, "");
    }

    #[test]
    fn the_usage_label_is_the_method_and_the_matched_rule_not_the_raw_path() {
        let settings = settings_with_rules(Unmatched::Authenticate);
        let by_rule = envoy_request("get", "/api/v1/orders/8c1f?page=2", "192.0.2.1", &[], &[]);
        assert_eq!(mapped(&settings, &by_rule).endpoint, "GET /api/v1/orders/*");
        let unmatched = envoy_request("POST", "/x/12345", "192.0.2.1", &[], &[]);
        assert_eq!(mapped(&settings, &unmatched).endpoint, "POST *");
        let named = envoy_request(
            "GET",
            "/api/v1/orders/1",
            "192.0.2.1",
            &[],
            &[("endpoint", "orders.get")],
        );
        assert_eq!(mapped(&settings, &named).endpoint, "orders.get");
    }

    #[test]
    fn a_path_that_cannot_be_resolved_is_refused_before_the_route_or_the_token_count() {
        let settings = settings_with_rules(Unmatched::Authenticate);
        let request = envoy_request(
            "GET",
            "/api/v1/orders/%2e%2e/admin",
            "192.0.2.1",
            &[("authorization", "Bearer tsk_abc")],
            &[("permission", "")],
        );
        let deny = to_check_request(&settings, &EnvoyRequest::of(&request)).expect_err("deny");
        assert_eq!(deny.reason, DenyReason::PathInvalid);
        assert_eq!(deny.refused_path, Some(PathError::EncodedDotSegment));
    }

    #[test]
    fn an_invented_method_is_labelled_other() {
        let settings = settings_with_rules(Unmatched::Authenticate);
        let request = envoy_request("X-MINTED-42", "/whatever", "192.0.2.1", &[], &[]);
        assert_eq!(mapped(&settings, &request).endpoint, "OTHER *");
        let by_any_method_rule = envoy_request("FROB", "/health", "192.0.2.1", &[], &[]);
        assert_eq!(
            mapped(&settings, &by_any_method_rule).endpoint,
            "OTHER /health"
        );
    }

    #[test]
    fn the_client_ip_is_the_source_address_unless_forwarding_hops_are_trusted() {
        let headers = [("x-forwarded-for", "6.6.6.6, 198.51.100.7")];
        let request = envoy_request("GET", "/health", "10.0.0.1", &headers, &[]);
        let direct = settings_with_rules(Unmatched::Deny);
        assert_eq!(mapped(&direct, &request).client_ip, "10.0.0.1");
        let one_hop = EnvoySettings {
            trusted_hops: 1,
            ..settings_with_rules(Unmatched::Deny)
        };
        assert_eq!(mapped(&one_hop, &request).client_ip, "198.51.100.7");
        let three_hops = EnvoySettings {
            trusted_hops: 3,
            ..settings_with_rules(Unmatched::Deny)
        };
        assert_eq!(mapped(&three_hops, &request).client_ip, "");
    }

    #[test]
    fn a_signature_signs_method_path_and_the_body_hash_only_when_bodies_are_signed() {
        let mut request = envoy_request(
            "POST",
            "/api/v1/orders/?dry=1",
            "192.0.2.1",
            &[
                ("x-tessera-signature", "c2ln"),
                ("x-tessera-timestamp", "1780000000"),
            ],
            &[],
        );
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|attributes| attributes.request.as_mut())
            .and_then(|request| request.http.as_mut())
        {
            http.body = "{}".to_owned();
        }
        let without_body = mapped(&settings_with_rules(Unmatched::Authenticate), &request)
            .signature
            .expect("signature");
        assert_eq!(without_body.timestamp, 1_780_000_000);
        assert_eq!(without_body.signature, "c2ln");
        assert_eq!(
            without_body.payload,
            canonical_http_payload("POST", "/api/v1/orders/?dry=1", b"")
        );
        let signing_bodies = EnvoySettings {
            sign_body: true,
            ..settings_with_rules(Unmatched::Authenticate)
        };
        let with_body = mapped(&signing_bodies, &request)
            .signature
            .expect("signature");
        assert_eq!(
            with_body.payload,
            canonical_http_payload("POST", "/api/v1/orders/?dry=1", b"{}")
        );
    }

    #[test]
    fn no_signature_header_means_no_signature() {
        let request = envoy_request("GET", "/health", "192.0.2.1", &[], &[]);
        assert_eq!(
            mapped(&settings_with_rules(Unmatched::Deny), &request).signature,
            None
        );
    }

    #[test]
    fn raw_headers_are_read_when_envoy_sends_the_header_map() {
        let mut request = envoy_request("GET", "/health", "192.0.2.1", &[], &[]);
        if let Some(http) = request
            .attributes
            .as_mut()
            .and_then(|attributes| attributes.request.as_mut())
            .and_then(|request| request.http.as_mut())
        {
            http.header_map = Some(HeaderMap {
                headers: vec![HeaderValue {
                    key: "authorization".to_owned(),
                    value: String::new(),
                    raw_value: b"Bearer tsk_raw".to_vec(),
                }],
            });
        }
        assert_eq!(
            mapped(&settings_with_rules(Unmatched::Deny), &request).token,
            "tsk_raw"
        );
    }

    #[test]
    fn an_overlong_user_agent_is_cut_to_the_documented_limit() {
        let long = "x".repeat(MAX_USER_AGENT_LEN + 10);
        let request = envoy_request("GET", "/health", "192.0.2.1", &[("user-agent", &long)], &[]);
        assert_eq!(
            mapped(&settings_with_rules(Unmatched::Deny), &request)
                .user_agent
                .len(),
            MAX_USER_AGENT_LEN
        );
    }

    #[test]
    fn the_bearer_scheme_is_stripped_case_insensitively_and_other_values_kept() {
        assert_eq!(strip_bearer("Bearer tsk_abc"), "tsk_abc");
        assert_eq!(strip_bearer("bearer   tsk_abc "), "tsk_abc");
        assert_eq!(strip_bearer("tsk_abc"), "tsk_abc");
        assert_eq!(strip_bearer("Basic dXNlcg=="), "Basic dXNlcg==");
        assert_eq!(strip_bearer("Bearer"), "Bearer");
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abcdef", 4), "abcd");
    }
}
