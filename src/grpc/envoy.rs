//! `envoy.service.auth.v3.Authorization/Check`: Envoy's external authorization (ext_authz v3),
//! mapped onto the same Check as `tessera.v1.AuthorizationService`.
//!
//! An Envoy request becomes a `tessera.v1.CheckRequest` by the mapping every gateway shares
//! (src/gateway/mod.rs: path, permission, tenant, token, client IP, usage label, signature),
//! which then takes exactly the path of Tessera's own Check ([`authorization::decide`]). Envoy's
//! route values are its `context_extensions` (`tenant`, `permission`, `endpoint`).
//!
//! Allowed: upstream headers `x-tessera-token-id`, `x-tessera-owner-id`, `x-tessera-tenant` (and
//! every other incoming `x-tessera-*` header removed, so a client cannot forge identity), and
//! `x-ratelimit-*` response headers to the client. Denied: the HTTP status of the reason (401 with
//! `www-authenticate`, 403, 429 with `retry-after`, 503) and a small JSON body.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
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

use crate::authz::Authorizer;
use crate::gateway::{self, Answer, Denial, GatewayRequest, to_check_request};
use crate::grpc::authorization;
use crate::proto;

pub use crate::gateway::{
    DEFAULT_SIGNATURE_HEADER, DEFAULT_TIMESTAMP_HEADER, DEFAULT_TOKEN_HEADER, EarlyDeny,
    GatewaySettings as EnvoySettings,
};

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
        let envoy_request = EnvoyRequest::of(&request);
        let check = match to_check_request(&self.settings, &envoy_request) {
            Ok(check) => check,
            Err(deny) => {
                deny.record(envoy_request.path());
                let denial = Denial::new(deny.reason, deny.message, Vec::new());
                return Ok(Response::new(denied(&denial)));
            }
        };
        let decision = authorization::decide(&self.authorizer, check).await?;
        let answer = match gateway::answer(&decision, &self.settings.metadata_headers) {
            Answer::Allow {
                identity,
                rate_limit,
                metadata,
            } => allowed(&identity, &metadata, rate_limit, &envoy_request),
            Answer::Deny(denial) => denied(&denial),
        };
        Ok(Response::new(answer))
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
}

impl GatewayRequest for EnvoyRequest<'_> {
    fn method(&self) -> &str {
        self.http.map_or("", |http| http.method.as_str())
    }

    fn path(&self) -> &str {
        self.http.map_or("", |http| http.path.as_str())
    }

    /// From `headers` or, when Envoy sends raw headers, from `header_map` (repeated headers
    /// joined with `,` as Envoy does).
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let http = self.http?;
        if let Some(value) = http.headers.get(name) {
            return Some(Cow::Borrowed(value.as_str()));
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
        (!values.is_empty()).then(|| Cow::Owned(values.join(",")))
    }

    fn route_value(&self, key: &str) -> Option<&str> {
        self.context_extensions?.get(key).map(String::as_str)
    }

    fn source_ip(&self) -> Option<IpAddr> {
        self.source_address
            .and_then(|address| address.parse::<IpAddr>().ok())
    }

    fn body(&self) -> &[u8] {
        match self.http {
            Some(http) if !http.raw_body.is_empty() => &http.raw_body,
            Some(http) => http.body.as_bytes(),
            None => &[],
        }
    }
}

/// What the service runs on every Envoy request before any lookup: Envoy's request as Tessera's
/// own CheckRequest, or the deny that needs no token. Pure, so the fuzz target drives exactly this.
pub fn map_check_request(
    settings: &EnvoySettings,
    request: &CheckRequest,
) -> Result<proto::CheckRequest, EarlyDeny> {
    to_check_request(settings, &EnvoyRequest::of(request))
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

fn allowed(
    identity: &[(&'static str, String); 3],
    metadata: &[(String, String)],
    rate_limit: Vec<(&'static str, String)>,
    request: &EnvoyRequest<'_>,
) -> CheckResponse {
    let mut ok = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    for (name, value) in identity {
        ok.add_header(*name, value.as_str(), overwrite, false);
    }
    for (name, value) in metadata {
        ok.add_header(name.as_str(), value.as_str(), overwrite, false);
    }
    // Envoy removes after it sets, so the headers just set must not be named here; setting
    // them with overwrite already replaces any forged copy.
    let forgeable = request.header_names_where(|name| {
        gateway::is_reserved(name)
            && !identity
                .iter()
                .any(|(set, _)| set.eq_ignore_ascii_case(name))
            && !metadata
                .iter()
                .any(|(set, _)| set.eq_ignore_ascii_case(name))
    });
    for name in forgeable {
        ok.remove_header(name);
    }
    // To the client only: they are about its budget. (Upstream headers would also push the
    // answer past 256 bytes, where h2 writes it in two syscalls instead of one.)
    for (name, value) in rate_limit {
        ok.add_response_header(name, value, overwrite, false);
    }
    let mut response = CheckResponse {
        status: Some(rpc_status(tonic::Code::Ok, "")),
        ..CheckResponse::default()
    };
    response.set_http_response(ok);
    response
}

fn denied(denial: &Denial) -> CheckResponse {
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(
        HttpStatusCode::try_from(i32::from(denial.status)).unwrap_or(HttpStatusCode::Forbidden),
    );
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    for (name, value) in &denial.headers {
        denied.add_header(*name, value.as_str(), overwrite, false);
    }
    denied.set_body(denial.body.clone());

    let code = match denial.status {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::PermissionDenied,
    };
    let mut response = CheckResponse {
        status: Some(rpc_status(code, denial.reason.as_str())),
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
    use crate::domain::decision::DenyReason;
    use crate::domain::http::PathError;
    use crate::domain::route::{PermissionRule, PermissionRules, Unmatched};
    use crate::domain::signature::canonical_http_payload;
    use crate::grpc::authorization::MAX_USER_AGENT_LEN;

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
}
