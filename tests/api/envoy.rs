//! `envoy.service.auth.v3.Authorization/Check`, called the way Envoy calls it: CheckRequests with
//! attributes (method, path, headers, source address, the route's context extensions) through a
//! real gRPC client, against the real server.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValueOption, HttpResponse,
    OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, HeaderMap, HeaderValue, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttributeRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::Value;
use tessera::config::{EnvoyRule, EnvoyUnmatched, Settings};
use tessera::domain::http::{PathError, RequestTarget};
use tessera::proto;
use tonic::Code;

use crate::helpers::ops::{ServingStatus, eventually, health_of, metric, scrape};
use crate::helpers::process::ServeProcess;
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with, strings};

const TENANT: &str = "acme";
const CLIENT: &str = "198.51.100.7";

/// What Envoy sends for one HTTP request, built up like the request itself.
struct EnvoyCall {
    method: String,
    path: String,
    source: String,
    headers: HashMap<String, String>,
    extensions: HashMap<String, String>,
    /// Send the headers as Envoy's raw `header_map` instead of the `headers` map.
    raw_headers: bool,
}

impl EnvoyCall {
    /// `GET /api/v1/orders/42` from [`CLIENT`] on a route of tenant [`TENANT`].
    fn get(path: &str) -> Self {
        Self {
            method: "GET".to_owned(),
            path: path.to_owned(),
            source: CLIENT.to_owned(),
            headers: HashMap::new(),
            extensions: HashMap::from([("tenant".to_owned(), TENANT.to_owned())]),
            raw_headers: false,
        }
    }

    fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    fn bearer(self, secret: &str) -> Self {
        self.header("authorization", &format!("Bearer {secret}"))
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    fn from(mut self, address: &str) -> Self {
        address.clone_into(&mut self.source);
        self
    }

    fn extension(mut self, key: &str, value: &str) -> Self {
        self.extensions.insert(key.to_owned(), value.to_owned());
        self
    }

    fn without_extension(mut self, key: &str) -> Self {
        self.extensions.remove(key);
        self
    }

    fn raw_headers(mut self) -> Self {
        self.raw_headers = true;
        self
    }

    fn into_request(self) -> CheckRequest {
        let (headers, header_map) = if self.raw_headers {
            let raw = self
                .headers
                .into_iter()
                .map(|(key, value)| HeaderValue {
                    key,
                    value: String::new(),
                    raw_value: value.into_bytes(),
                })
                .collect();
            (HashMap::new(), Some(HeaderMap { headers: raw }))
        } else {
            (self.headers, None)
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    address: Some(EnvoyAddress {
                        address: Some(Address::SocketAddress(SocketAddress {
                            address: self.source,
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(AttributeRequest {
                    http: Some(HttpRequest {
                        id: "4f1d2c3b".to_owned(),
                        method: self.method,
                        path: self.path,
                        host: "api.example.com".to_owned(),
                        scheme: "https".to_owned(),
                        protocol: "HTTP/1.1".to_owned(),
                        headers,
                        header_map,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: self.extensions,
                ..Default::default()
            }),
        }
    }
}

async fn call(app: &TestApp, envoy_call: EnvoyCall) -> CheckResponse {
    try_call(app, envoy_call).await.expect("check answers")
}

async fn try_call(app: &TestApp, envoy_call: EnvoyCall) -> Result<CheckResponse, tonic::Status> {
    AuthorizationClient::connect(app.grpc_url.clone())
        .await
        .expect("envoy client connects")
        .check(envoy_call.into_request())
        .await
        .map(tonic::Response::into_inner)
}

fn allowed(response: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        response.status.as_ref().map(|status| status.code),
        Some(0),
        "expected OK, got {response:?}"
    );
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("expected an OkHttpResponse, got {other:?}"),
    }
}

/// The denied response, after checking its HTTP status, gRPC code and JSON body's `error`.
fn denied<'a>(
    response: &'a CheckResponse,
    http_status: i32,
    code: Code,
    error: &str,
) -> &'a DeniedHttpResponse {
    assert_eq!(
        response.status.as_ref().map(|status| status.code),
        Some(code as i32),
        "{response:?}"
    );
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("expected a DeniedHttpResponse, got {response:?}");
    };
    assert_eq!(
        denied.status.as_ref().map(|status| status.code),
        Some(http_status)
    );
    assert_eq!(
        header(&denied.headers, "content-type"),
        Some("application/json")
    );
    let body: Value = serde_json::from_str(&denied.body).expect("a JSON body");
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    denied
}

fn header<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter_map(|option| option.header.as_ref())
        .find(|header| header.key == name)
        .map(|header| header.value.as_str())
}

/// The app with the rules of a small orders API and the given default for unmatched requests.
async fn app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.envoy_rules = vec![
            rule("GET", None, Some("/api/v1/orders/"), "orders:read"),
            rule("POST", Some("/api/v1/orders"), None, "orders:write"),
            rule("", None, Some("/api/v1/"), "catalog:read"),
            rule("*", Some("/whoami"), None, ""),
        ];
        customize(settings);
    })
    .await;
    app.principal(TENANT, "alice", &["orders:*", "catalog:read"])
        .await;
    app
}

fn rule(method: &str, path: Option<&str>, prefix: Option<&str>, permission: &str) -> EnvoyRule {
    EnvoyRule {
        method: method.to_owned(),
        path: path.map(str::to_owned),
        prefix: prefix.map(str::to_owned),
        permission: permission.to_owned(),
        ..Default::default()
    }
}

async fn token(app: &TestApp, permissions: &[&str]) -> (proto::Token, String) {
    app.token(new_token(TENANT, "alice", permissions)).await
}

#[tokio::test]
async fn an_allowed_request_goes_upstream_with_identity_and_rate_limit_headers() {
    let app = app_with(|_| {}).await;
    let (token, secret) = token(&app, &["orders:read"]).await;

    let response = call(&app, EnvoyCall::get("/api/v1/orders/42").bearer(&secret)).await;

    let ok = allowed(&response);
    assert_eq!(
        header(&ok.headers, "x-tessera-token-id"),
        Some(token.id.as_str())
    );
    assert_eq!(header(&ok.headers, "x-tessera-owner-id"), Some("alice"));
    assert_eq!(header(&ok.headers, "x-tessera-tenant"), Some(TENANT));
    assert_eq!(
        header(&ok.response_headers_to_add, "x-ratelimit-limit"),
        Some("60")
    );
    assert_eq!(
        header(&ok.response_headers_to_add, "x-ratelimit-remaining"),
        Some("59")
    );
    assert!(header(&ok.response_headers_to_add, "x-ratelimit-reset").is_some());
}

#[tokio::test]
async fn a_request_without_a_token_is_401_with_a_bearer_challenge() {
    let app = app_with(|_| {}).await;

    let response = call(&app, EnvoyCall::get("/api/v1/orders/42")).await;

    let denied = denied(&response, 401, Code::Unauthenticated, "token_missing");
    assert_eq!(header(&denied.headers, "www-authenticate"), Some("Bearer"));
}

#[tokio::test]
async fn an_unknown_or_malformed_token_is_401_naming_an_invalid_token() {
    let app = app_with(|_| {}).await;
    let stranger =
        tessera::domain::token::generate(&tessera::domain::token::TokenPrefix::default());
    let unknown = secrecy::ExposeSecret::expose_secret(&stranger.secret).to_owned();

    let response = call(&app, EnvoyCall::get("/api/v1/orders/42").bearer(&unknown)).await;
    let unknown_denied = denied(&response, 401, Code::Unauthenticated, "token_unknown");
    assert_eq!(
        header(&unknown_denied.headers, "www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );

    let response = call(&app, EnvoyCall::get("/api/v1/orders/42").bearer("tsk_nope")).await;
    denied(&response, 401, Code::Unauthenticated, "token_malformed");
}

#[tokio::test]
async fn a_token_lacking_the_rule_permission_is_403() {
    let app = app_with(|_| {}).await;
    let (_, secret) = token(&app, &["orders:read"]).await;

    let call_to_write = EnvoyCall::get("/api/v1/orders")
        .method("POST")
        .bearer(&secret);
    let response = call(&app, call_to_write).await;

    let denied = denied(&response, 403, Code::PermissionDenied, "permission_denied");
    assert_eq!(header(&denied.headers, "www-authenticate"), None);
}

#[tokio::test]
async fn a_request_from_outside_the_token_allowlist_is_403() {
    let app = app_with(|_| {}).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.allowed_ips = strings(&["203.0.113.0/24"]);
    let (_, secret) = app.token(request).await;

    let outside = call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await;
    denied(&outside, 403, Code::PermissionDenied, "ip_not_allowed");

    let inside = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .from("203.0.113.20");
    allowed(&call(&app, inside).await);
}

#[tokio::test]
async fn an_exhausted_rate_limit_is_429_with_retry_after() {
    let app = app_with(|_| {}).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.rate_limit_per_minute = 1;
    let (_, secret) = app.token(request).await;

    allowed(&call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await);
    let response = call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await;

    let denied = denied(&response, 429, Code::ResourceExhausted, "rate_limited");
    let retry_after: u32 = header(&denied.headers, "retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(header(&denied.headers, "x-ratelimit-remaining"), Some("0"));
}

#[tokio::test]
async fn an_offline_api_is_503_with_the_operator_message() {
    let app = app_with(|_| {}).await;
    let (_, secret) = token(&app, &["orders:read"]).await;
    app.take_offline(TENANT, "back at noon").await;

    let response = call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await;

    let denied = denied(&response, 503, Code::Unavailable, "api_offline");
    let body: Value = serde_json::from_str(&denied.body).expect("json");
    assert_eq!(body["message"], "back at noon");
}

#[tokio::test]
async fn incoming_tessera_headers_are_removed_or_overwritten_so_identity_cannot_be_forged() {
    let app = app_with(|_| {}).await;
    let (token, secret) = token(&app, &["orders:read"]).await;

    let forged = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .header("x-tessera-owner-id", "mallory")
        .header("x-tessera-admin", "yes")
        .header("x-tessera-signature", "AAAA")
        .header("x-request-id", "keep-me");
    let response = call(&app, forged).await;

    let ok = allowed(&response);
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, vec!["x-tessera-admin", "x-tessera-signature"]);
    let owner = ok
        .headers
        .iter()
        .find(|option| {
            option
                .header
                .as_ref()
                .is_some_and(|h| h.key == "x-tessera-owner-id")
        })
        .expect("owner header");
    assert_eq!(
        owner.header.as_ref().map(|h| h.value.as_str()),
        Some("alice")
    );
    assert_eq!(
        owner.append_action,
        envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        "a forged copy must be replaced, not appended to"
    );
    assert_eq!(
        header(&ok.headers, "x-tessera-token-id"),
        Some(token.id.as_str())
    );
}

#[tokio::test]
async fn a_rule_may_need_all_of_several_permissions_or_any_of_several() {
    let app = app_with(|settings| {
        let all = EnvoyRule {
            method: "DELETE".to_owned(),
            prefix: Some("/api/v1/orders/".to_owned()),
            all_permissions: vec!["orders:write".to_owned(), "orders:delete".to_owned()],
            ..Default::default()
        };
        let any = EnvoyRule {
            method: "GET".to_owned(),
            prefix: Some("/api/v1/reports/".to_owned()),
            any_permissions: vec!["orders:read".to_owned(), "catalog:read".to_owned()],
            ..Default::default()
        };
        settings.envoy_rules.insert(0, all);
        settings.envoy_rules.insert(1, any);
    })
    .await;
    let (_, writer) = token(&app, &["orders:write"]).await;
    let (_, deleter) = token(&app, &["orders:write", "orders:delete"]).await;
    let (_, cataloguer) = token(&app, &["catalog:read"]).await;
    let delete = |secret: &str| {
        EnvoyCall::get("/api/v1/orders/7")
            .method("DELETE")
            .bearer(secret)
    };
    let report = |secret: &str| EnvoyCall::get("/api/v1/reports/daily").bearer(secret);

    let one_of_two = call(&app, delete(&writer)).await;
    let both = call(&app, delete(&deleter)).await;
    let either = call(&app, report(&cataloguer)).await;
    let neither = call(&app, report(&deleter)).await;

    let denied_one = denied(
        &one_of_two,
        403,
        Code::PermissionDenied,
        "permission_denied",
    );
    assert!(
        denied_one.body.contains("orders:delete") && !denied_one.body.contains("orders:write"),
        "the deny names only what is missing: {}",
        denied_one.body
    );
    allowed(&both);
    allowed(&either);
    let denied_neither = denied(&neither, 403, Code::PermissionDenied, "permission_denied");
    assert!(
        denied_neither.body.contains("orders:read") && denied_neither.body.contains("catalog:read"),
        "{}",
        denied_neither.body
    );
}

#[tokio::test]
async fn a_rule_with_a_cost_spends_that_many_credits_per_request_and_others_spend_one() {
    let app = app_with(|settings| {
        let export = EnvoyRule {
            method: "POST".to_owned(),
            prefix: Some("/api/v1/exports/".to_owned()),
            permission: "orders:read".to_owned(),
            cost: Some(5),
            ..Default::default()
        };
        settings.envoy_rules.insert(0, export);
    })
    .await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.credits = Some(proto::TokenCredits {
        remaining: 11,
        ..Default::default()
    });
    let (token, secret) = app.token(request).await;
    let export = || {
        EnvoyCall::get("/api/v1/exports/monthly")
            .method("POST")
            .bearer(&secret)
    };
    allowed(&call(&app, export()).await);
    allowed(&call(&app, export()).await);
    // One left: an export (5) is refused and spends nothing; a plain read (1) still goes.
    denied(
        &call(&app, export()).await,
        429,
        Code::ResourceExhausted,
        "credits_exhausted",
    );
    allowed(&call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await);
    denied(
        &call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await,
        429,
        Code::ResourceExhausted,
        "credits_exhausted",
    );
    let stored = app
        .admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest { id: token.id }))
        .await
        .expect("token")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(stored.credits.map(|credits| credits.remaining), Some(0));
}

#[tokio::test]
async fn chosen_metadata_keys_are_set_upstream_and_a_clients_copies_of_any_are_removed() {
    let app = app_with(|settings| {
        settings.gateway_metadata_headers = vec!["plan".to_owned(), "region".to_owned()];
    })
    .await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.metadata = [("plan", "pro"), ("internal", "x")]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let (_, secret) = app.token(request).await;

    let forged = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .header("x-tessera-meta-plan", "enterprise")
        .header("x-tessera-meta-internal", "forged");
    let response = call(&app, forged).await;

    let ok = allowed(&response);
    assert_eq!(header(&ok.headers, "x-tessera-meta-plan"), Some("pro"));
    // Chosen but absent from the token: set empty, so no client copy survives either.
    assert_eq!(header(&ok.headers, "x-tessera-meta-region"), Some(""));
    assert_eq!(header(&ok.headers, "x-tessera-meta-internal"), None);
    assert_eq!(ok.headers_to_remove, vec!["x-tessera-meta-internal"]);
    let plan = ok
        .headers
        .iter()
        .find(|option| {
            option
                .header
                .as_ref()
                .is_some_and(|h| h.key == "x-tessera-meta-plan")
        })
        .expect("plan header");
    assert_eq!(
        plan.append_action,
        envoy_types::ext_authz::v3::pb::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        "a forged copy must be replaced, not appended to"
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_hops_are_trusted() {
    let app = app_with(|_| {}).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.allowed_ips = strings(&["198.51.100.0/24"]);
    let (_, secret) = app.token(request).await;

    // Behind a proxy at 10.0.0.1 that Tessera was not told to trust, the header counts for nothing.
    let behind_proxy = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .from("10.0.0.1")
        .header("x-forwarded-for", "198.51.100.7");
    let response = call(&app, behind_proxy).await;
    denied(&response, 403, Code::PermissionDenied, "ip_not_allowed");
}

#[tokio::test]
async fn with_trusted_hops_the_client_is_the_rightmost_trusted_entry_never_a_forged_leftmost() {
    let app = app_with(|settings| settings.envoy_trusted_hops = 1).await;
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.allowed_ips = strings(&["198.51.100.0/24"]);
    let (_, secret) = app.token(request).await;

    let through_proxy = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .from("10.0.0.1")
        .header("x-forwarded-for", "198.51.100.7");
    allowed(&call(&app, through_proxy).await);

    // The client wrote an allowed address first; the trusted proxy appended the real one.
    let forged = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .from("10.0.0.1")
        .header("x-forwarded-for", "198.51.100.7, 192.0.2.66");
    let response = call(&app, forged).await;
    denied(&response, 403, Code::PermissionDenied, "ip_not_allowed");
}

#[tokio::test]
async fn the_first_matching_rule_decides_the_permission() {
    let app = app_with(|_| {}).await;
    let (_, catalog_only) = token(&app, &["catalog:read"]).await;

    // GET /api/v1/orders/… matches the orders prefix before the broader /api/v1/ prefix.
    let orders = call(
        &app,
        EnvoyCall::get("/api/v1/orders/7").bearer(&catalog_only),
    )
    .await;
    denied(&orders, 403, Code::PermissionDenied, "permission_denied");
    // Exact /api/v1/orders is only for POST; GET falls through to the /api/v1/ prefix.
    allowed(&call(&app, EnvoyCall::get("/api/v1/orders").bearer(&catalog_only)).await);
    allowed(
        &call(
            &app,
            EnvoyCall::get("/api/v1/products/9?q=x").bearer(&catalog_only),
        )
        .await,
    );
    // A rule with an empty permission only authenticates.
    allowed(
        &call(
            &app,
            EnvoyCall::get("/whoami")
                .method("DELETE")
                .bearer(&catalog_only),
        )
        .await,
    );
}

#[tokio::test]
async fn by_default_a_request_no_rule_matches_is_denied_whatever_the_token() {
    let app = app_with(|_| {}).await;
    let (_, everything) = token(&app, &["orders:*", "catalog:read"]).await;

    let response = call(&app, EnvoyCall::get("/admin/users").bearer(&everything)).await;

    denied(&response, 403, Code::PermissionDenied, "permission_denied");
}

#[tokio::test]
async fn an_operator_may_let_unmatched_requests_through_with_any_valid_token() {
    let app = app_with(|settings| settings.envoy_unmatched = EnvoyUnmatched::Authenticate).await;
    let (_, secret) = token(&app, &["orders:read"]).await;

    allowed(&call(&app, EnvoyCall::get("/admin/users").bearer(&secret)).await);
    let response = call(&app, EnvoyCall::get("/admin/users")).await;
    denied(&response, 401, Code::Unauthenticated, "token_missing");
}

#[tokio::test]
async fn the_route_context_extensions_set_permission_and_tenant_over_rules_and_headers() {
    let app = app_with(|settings| settings.envoy_tenant_header = Some("x-tenant".to_owned())).await;
    let (_, secret) = token(&app, &["orders:read"]).await;

    // The route names a permission the token lacks, although the rules would allow it.
    let by_route = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .extension("permission", "orders:delete");
    denied(
        &call(&app, by_route).await,
        403,
        Code::PermissionDenied,
        "permission_denied",
    );
    // A client header cannot move the request into another tenant when the route names one.
    let forged_tenant = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .header("x-tenant", "globex");
    allowed(&call(&app, forged_tenant).await);
    // Without a route tenant, the configured header names it.
    let header_tenant = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .without_extension("tenant")
        .header("x-tenant", "globex");
    denied(
        &call(&app, header_tenant).await,
        401,
        Code::Unauthenticated,
        "tenant_mismatch",
    );
}

#[tokio::test]
async fn the_token_may_come_from_a_configured_header_sent_as_raw_headers() {
    let app = app_with(|settings| settings.envoy_token_header = "X-Api-Key".to_owned()).await;
    let (_, secret) = token(&app, &["orders:read"]).await;

    let raw = EnvoyCall::get("/api/v1/orders/1")
        .header("x-api-key", &secret)
        .raw_headers();
    allowed(&call(&app, raw).await);
}

#[tokio::test]
async fn a_route_permission_that_is_not_a_permission_is_an_invalid_argument() {
    let app = app_with(|_| {}).await;
    let (_, secret) = token(&app, &["orders:read"]).await;

    let misconfigured = EnvoyCall::get("/api/v1/orders/1")
        .bearer(&secret)
        .extension("permission", "orders read");
    let status = try_call(&app, misconfigured).await.expect_err("invalid");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("permission"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn the_envoy_path_and_tessera_check_decide_alike() {
    let app = app_with(|_| {}).await;
    let (_, secret) = token(&app, &["orders:read"]).await;

    let own = app
        .check(proto::CheckRequest {
            token: secret.clone(),
            tenant: TENANT.to_owned(),
            permission: "orders:read".to_owned(),
            client_ip: CLIENT.to_owned(),
            ..Default::default()
        })
        .await;
    let envoy = call(&app, EnvoyCall::get("/api/v1/orders/1").bearer(&secret)).await;

    assert!(own.allowed);
    allowed(&envoy);
    // Both spent from the same per-token budget.
    assert_eq!(own.rate_limit.map(|limit| limit.remaining), Some(59));
    assert_eq!(
        header(
            &allowed(&envoy).response_headers_to_add,
            "x-ratelimit-remaining"
        ),
        Some("58")
    );
}

/// The rules of the issue that found paths escaping them: one prefix rule, nothing else.
async fn orders_only_app(unmatched: EnvoyUnmatched) -> TestApp {
    app_with(|settings| {
        settings.envoy_rules = vec![rule("GET", None, Some("/api/v1/orders/"), "orders:read")];
        settings.envoy_unmatched = unmatched;
    })
    .await
}

/// A token of alice holding `permissions`, with a budget no test here exhausts.
async fn roomy_token(app: &TestApp, permissions: &[&str]) -> String {
    let mut request = new_token(TENANT, "alice", permissions);
    request.rate_limit_per_minute = 100_000;
    app.token(request).await.1
}

fn assert_path_invalid(response: &CheckResponse, path: &str) {
    let Some(HttpResponse::DeniedResponse(refused)) = &response.http_response else {
        panic!("{path:?} was not refused: {response:?}");
    };
    assert_eq!(
        refused.status.as_ref().map(|status| status.code),
        Some(400),
        "{path:?}: {response:?}"
    );
    denied(response, 400, Code::InvalidArgument, "path_invalid");
}

#[tokio::test]
async fn a_dot_segment_climbing_out_of_a_rule_is_judged_by_the_path_it_resolves_to() {
    let app = orders_only_app(EnvoyUnmatched::Deny).await;
    let orders_reader = roomy_token(&app, &["orders:read"]).await;

    // Upstream serves /api/v1/admin/users: no rule covers it, so it is denied whatever the token.
    let escape = EnvoyCall::get("/api/v1/orders/../admin/users").bearer(&orders_reader);
    denied(
        &call(&app, escape).await,
        403,
        Code::PermissionDenied,
        "permission_denied",
    );
    // A dot segment that stays inside the rule is still the rule's.
    let inside = EnvoyCall::get("/api/v1/orders/7/../42").bearer(&orders_reader);
    allowed(&call(&app, inside).await);
}

#[tokio::test]
async fn encoded_dot_segments_are_refused_as_path_invalid_with_http_400() {
    let app = orders_only_app(EnvoyUnmatched::Deny).await;
    let orders_reader = roomy_token(&app, &["orders:read"]).await;

    for path in [
        "/api/v1/orders/%2e%2e/admin/users",
        "/api/v1/orders/%2E%2E/admin/users",
        "/api/v1/orders/%2E%2E/",
        "/api/v1/orders/.%2e/admin/users",
        "/api/v1/orders/%2e%2e%2fadmin/users",
        "/api/v1/orders/..%2Fadmin/users",
    ] {
        let response = call(&app, EnvoyCall::get(path).bearer(&orders_reader)).await;
        assert_path_invalid(&response, path);
    }
}

#[tokio::test]
async fn repeated_slashes_and_encoded_letters_no_longer_skip_the_rule() {
    let app = orders_only_app(EnvoyUnmatched::Authenticate).await;
    let without_orders = roomy_token(&app, &["catalog:read"]).await;

    for path in [
        "//api/v1/orders/42",
        "/api//v1/orders/42",
        "/api/v1/%6frders/42",
        "/api/v1/%6Frders/42",
        "/api/v1/catalog/../orders/42",
    ] {
        let response = call(&app, EnvoyCall::get(path).bearer(&without_orders)).await;
        assert_eq!(
            response.status.as_ref().map(|status| status.code),
            Some(Code::PermissionDenied as i32),
            "{path:?} skipped the orders rule: {response:?}"
        );
        denied(&response, 403, Code::PermissionDenied, "permission_denied");
    }
    // Unmatched paths are still only authenticated.
    allowed(
        &call(
            &app,
            EnvoyCall::get("/api/v1/catalog/3").bearer(&without_orders),
        )
        .await,
    );
}

/// Traversal and parser-differential tricks (OWASP path traversal; the places where Envoy,
/// nginx, Tomcat and Windows servers normalize differently) that Tessera refuses, each with the
/// refusal it is (asserted on the parser, the wire carries only `path_invalid`).
const REFUSED: &[(&str, PathError)] = &[
    ("", PathError::Empty),
    ("*", PathError::NotOriginForm),
    (
        "http://api.example.com/api/v1/orders/42",
        PathError::NotOriginForm,
    ),
    ("api/v1/orders/42", PathError::NotOriginForm),
    ("/api/v1/orders/%2e%2e/admin", PathError::EncodedDotSegment),
    ("/api/v1/orders/%2E%2E/admin", PathError::EncodedDotSegment),
    ("/api/v1/orders/.%2e/admin", PathError::EncodedDotSegment),
    ("/api/v1/orders/%2e./admin", PathError::EncodedDotSegment),
    ("/api/v1/orders/%2e/42", PathError::EncodedDotSegment),
    ("/api/v1/orders/..%2fadmin", PathError::EncodedSeparator),
    ("/api/v1/orders/..%2Fadmin", PathError::EncodedSeparator),
    ("/api/v1/orders/%2e%2e%2fadmin", PathError::EncodedSeparator),
    ("/api/v1/orders/..%5cadmin", PathError::EncodedSeparator),
    ("/api/v1/orders/%2e%2e%5cadmin", PathError::EncodedSeparator),
    (
        "/api/v1/orders/42%2f..%2f..%2fadmin",
        PathError::EncodedSeparator,
    ),
    ("/api/v1/orders%2f42", PathError::EncodedSeparator),
    ("/api/v1/orders/..\\admin", PathError::Backslash),
    ("/api/v1/orders\\..\\..\\admin", PathError::Backslash),
    ("/api/v1/orders/%c0%ae%c0%ae/admin", PathError::InvalidUtf8),
    ("/api/v1/orders/%c0%af..%c0%afadmin", PathError::InvalidUtf8),
    (
        "/api/v1/orders/%e0%80%ae%e0%80%ae/admin",
        PathError::InvalidUtf8,
    ),
    ("/api/v1/orders/%C0%AE%C0%AE/admin", PathError::InvalidUtf8),
    (
        "/api/v1/orders/%ef%bc%8e%ef%bc%8e/admin",
        PathError::LookalikeSeparator,
    ),
    (
        "/api/v1/orders/..%ef%bc%8fadmin",
        PathError::LookalikeSeparator,
    ),
    ("/..;/admin", PathError::PathParameter),
    ("/api/v1/orders/..;/admin", PathError::PathParameter),
    ("/api/v1/orders;/../admin", PathError::PathParameter),
    ("/api/v1/orders;jsessionid=1/42", PathError::PathParameter),
    ("/api/v1/orders/.;/42", PathError::PathParameter),
    ("/api/v1/orders/42%00", PathError::ControlCharacter),
    ("/api/v1/orders/42%00.json", PathError::ControlCharacter),
    ("/api/v1/orders/42\0", PathError::ControlCharacter),
    ("/api/v1/orders/4\t2", PathError::ControlCharacter),
    (
        "/api/v1/orders/42\r\nx-tessera-owner-id: mallory",
        PathError::ControlCharacter,
    ),
    (
        "/api/v1/orders/%0d%0aset-cookie:x",
        PathError::ControlCharacter,
    ),
    ("/api/v1/orders/%09", PathError::ControlCharacter),
    ("/api/v1/orders/%7f", PathError::ControlCharacter),
    ("/api/v1/orders/42 HTTP/1.1", PathError::ControlCharacter),
    ("/api/v1/orders/42#/../../admin", PathError::Fragment),
    (
        "/api/v1/orders/42?next=%2e%2e%2fadmin#",
        PathError::Fragment,
    ),
    ("/api/v1/orders/%", PathError::BadPercentEncoding),
    ("/api/v1/orders/%2", PathError::BadPercentEncoding),
    ("/api/v1/orders/%zz", PathError::BadPercentEncoding),
    ("/api/v1/orders/../../../../admin", PathError::AboveRoot),
    ("/..", PathError::AboveRoot),
    ("/../api/v1/orders/42", PathError::AboveRoot),
    (
        "/api/v1/orders//../../admin",
        PathError::AmbiguousDotSegment,
    ),
    ("/api/v1/orders/.//../42", PathError::AmbiguousDotSegment),
];

/// Tricks Tessera resolves, with the path they resolve to (the one upstream servers serve):
/// the rule of that path must decide.
const NORMALIZED: &[(&str, &str)] = &[
    ("/api/v1/orders/../admin/users", "/api/v1/admin/users"),
    ("/api/v1/catalog/../orders/42", "/api/v1/orders/42"),
    ("/api/v1/orders/./42", "/api/v1/orders/42"),
    ("/api/v1/orders/a/b/../../42", "/api/v1/orders/42"),
    ("/api/v1/orders/42/..", "/api/v1/orders/"),
    ("/api/v1/orders/..", "/api/v1/"),
    ("/api/v1/orders/42/.", "/api/v1/orders/42/"),
    ("//api/v1/orders/42", "/api/v1/orders/42"),
    ("/api///v1//orders/42", "/api/v1/orders/42"),
    ("/api/v1/%6frders/42", "/api/v1/orders/42"),
    ("/api/v1/%6Frders/42", "/api/v1/orders/42"),
    ("/%61%70%69/v1/orders/42", "/api/v1/orders/42"),
    ("/api/v1/orders/%7e42", "/api/v1/orders/~42"),
    ("/api/v1/orders/42?x=../../admin", "/api/v1/orders/42"),
    ("/api/v1/orders/42?next=%2e%2e%2fadmin", "/api/v1/orders/42"),
    ("/api/v1/orders?/42", "/api/v1/orders"),
    // `%25` is a literal `%`, never decoded further: a single-decoding server sees a file named
    // `%2e%2e`, inside the rule.
    (
        "/api/v1/orders/%252e%252e/admin",
        "/api/v1/orders/%252e%252e/admin",
    ),
    (
        "/api/v1/orders/%252e%252e%252fadmin",
        "/api/v1/orders/%252e%252e%252fadmin",
    ),
    ("/api/v1/orders/...", "/api/v1/orders/..."),
    ("/api/v1/orders/..../42", "/api/v1/orders/..../42"),
    ("/api/v1/orders/.hidden", "/api/v1/orders/.hidden"),
    ("/api/v1/orders/caf%c3%a9", "/api/v1/orders/caf%C3%A9"),
    ("/api/v1/orders/café", "/api/v1/orders/caf%C3%A9"),
    ("/api/v1/orders/a%3bb", "/api/v1/orders/a%3Bb"),
    ("/api/v1/orders/x%20y", "/api/v1/orders/x%20y"),
    ("/api/v1/orders/%3a42", "/api/v1/orders/:42"),
    ("/whoami/../api/v1/orders/42", "/api/v1/orders/42"),
    ("/whoami/", "/whoami/"),
];

#[tokio::test]
async fn every_traversal_trick_of_the_corpus_is_refused_with_400_whatever_the_token_and_route() {
    let app = app_with(|_| {}).await;
    let everything = roomy_token(&app, &["orders:*", "catalog:read"]).await;

    for (path, refusal) in REFUSED {
        assert_eq!(RequestTarget::parse(path), Err(*refusal), "{path:?}");
        let by_rules = call(&app, EnvoyCall::get(path).bearer(&everything)).await;
        assert_path_invalid(&by_rules, path);
        // A route that names its own permission does not make the path any less ambiguous.
        let by_route = EnvoyCall::get(path)
            .bearer(&everything)
            .extension("permission", "");
        assert_path_invalid(&call(&app, by_route).await, path);
    }
}

/// What a Check answered, to compare two calls: the gRPC code, the HTTP status and the reason.
fn outcome(response: &CheckResponse) -> (i32, Option<i32>, String) {
    let code = response.status.as_ref().map_or(-1, |status| status.code);
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => (
            code,
            denied.status.as_ref().map(|status| status.code),
            denied.body.clone(),
        ),
        Some(HttpResponse::OkResponse(_)) => (code, Some(200), String::new()),
        other => panic!("no http response: {other:?}"),
    }
}

#[tokio::test]
async fn every_resolvable_trick_of_the_corpus_gets_the_decision_of_the_path_it_resolves_to() {
    let app = app_with(|settings| settings.envoy_unmatched = EnvoyUnmatched::Authenticate).await;
    let orders_reader = roomy_token(&app, &["orders:read"]).await;
    let catalog_reader = roomy_token(&app, &["catalog:read"]).await;

    for (path, resolved) in NORMALIZED {
        let parsed = RequestTarget::parse(path).expect("resolvable");
        assert_eq!(parsed.path(), *resolved, "{path:?}");
        for secret in [&orders_reader, &catalog_reader] {
            let tricked = call(&app, EnvoyCall::get(path).bearer(secret)).await;
            let direct = call(&app, EnvoyCall::get(resolved).bearer(secret)).await;
            assert_eq!(
                outcome(&tricked),
                outcome(&direct),
                "{path:?} is decided unlike {resolved:?}"
            );
        }
    }
    // The corpus does exercise the rules: the same token is allowed on one resolved path and
    // denied on another.
    let orders = call(
        &app,
        EnvoyCall::get("/api/v1/catalog/../orders/42").bearer(&catalog_reader),
    )
    .await;
    denied(&orders, 403, Code::PermissionDenied, "permission_denied");
    allowed(
        &call(
            &app,
            EnvoyCall::get("/api/v1/orders/../products/1").bearer(&catalog_reader),
        )
        .await,
    );
}

#[tokio::test]
async fn a_refused_path_is_counted_by_its_refusal_and_as_a_path_invalid_check() {
    let app = app_with(|_| {}).await;
    let labels = [("reason", "encoded_dot_segment")];
    let before = scrape(app.metrics_addr).await;

    for _ in 0..3 {
        call(&app, EnvoyCall::get("/api/v1/orders/%2e%2e/admin")).await;
    }

    let after = scrape(app.metrics_addr).await;
    let refused = "tessera_gateway_path_refused_total";
    assert!(
        metric(&after, refused, &labels) >= metric(&before, refused, &labels) + 3.0,
        "{after}"
    );
    let checks = [("reason", "path_invalid")];
    assert!(
        metric(&after, "tessera_checks_total", &checks)
            >= metric(&before, "tessera_checks_total", &checks) + 3.0,
        "{after}"
    );
    assert!(after.contains(&format!("# HELP {refused}")), "{after}");
}

#[tokio::test]
async fn a_refused_path_is_logged_cut_short_escaped_and_without_its_query() {
    let server = ServeProcess::start(&[]).await;
    let serving = eventually(std::time::Duration::from_secs(20), || async {
        health_of(&server.grpc_url, "").await == ServingStatus::Serving
    })
    .await;
    assert!(serving, "the server never became ready");
    let query_secret = "tsk_in_the_query_string";
    let long_tail = "a".repeat(4096);
    let path = format!("/api/v1/orders/%2e%2e/\r\nforged line/{long_tail}?key={query_secret}");
    let envoy_call = EnvoyCall::get(&path);
    AuthorizationClient::connect(server.grpc_url.clone())
        .await
        .expect("envoy client connects")
        .check(envoy_call.into_request())
        .await
        .expect("check answers");

    let (_, log) = server.terminate().await;
    let refused: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("gateway request path refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{log:#?}");
    let line = refused[0];
    assert!(line.contains("control_character"), "{line}");
    assert!(line.len() < 1024, "an unbounded log line: {line}");
    assert!(!line.contains(query_secret), "{line}");
    assert!(
        !log.iter().any(|line| line.starts_with("forged line")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains(&long_tail)),
        "{log:#?}"
    );
}

#[tokio::test]
async fn usage_labels_carry_the_matched_rule_and_a_standard_method_or_other() {
    let app = app_with(|settings| {
        settings.envoy_unmatched = EnvoyUnmatched::Authenticate;
        settings.usage_flush_interval_ms = 50;
    })
    .await;
    let mut request = new_token(TENANT, "alice", &["orders:read", "catalog:read"]);
    request.rate_limit_per_minute = 100_000;
    let (token, secret) = app.token(request).await;

    let calls = [
        ("X-MINTED-1", "/whoami"),
        ("X-MINTED-2", "/whoami"),
        ("FROB", "/internal/8c1f"),
        ("frob", "/internal/9d2e"),
        ("get", "/api/v1/orders/../orders/17"),
        ("GET", "//api/v1/orders/18"),
    ];
    for (method, path) in calls {
        allowed(&call(&app, EnvoyCall::get(path).method(method).bearer(&secret)).await);
    }

    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let usage = loop {
        let usage = app
            .admin_client()
            .await
            .list_usage(app.admin(proto::ListUsageRequest {
                token_id: token.id.clone(),
                ..Default::default()
            }))
            .await
            .expect("usage")
            .into_inner();
        if usage.total_calls >= 6 || tokio::time::Instant::now() > give_up {
            break usage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut labels: Vec<(String, i64)> = usage
        .top_endpoints
        .iter()
        .map(|endpoint| (endpoint.endpoint.clone(), endpoint.calls))
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        vec![
            ("GET /api/v1/orders/*".to_owned(), 2),
            ("OTHER *".to_owned(), 2),
            ("OTHER /whoami".to_owned(), 2),
        ]
    );
}

/// `examples/envoy/`: what the README tells operators to run.
mod example {
    use std::path::PathBuf;

    use serde_norway::Value;
    use tessera::config::{Config, Settings};
    use tessera::domain::fields::Tenant;
    use tessera::domain::permission::Permission;
    use tessera::grpc::envoy::EnvoyAuthorizationApi;
    use tonic::server::NamedService;

    use super::*;

    fn example(file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples/envoy")
            .join(file)
    }

    fn bootstrap() -> Value {
        let text =
            std::fs::read_to_string(example("envoy.yaml")).expect("examples/envoy/envoy.yaml");
        serde_norway::from_str(&text).expect("the bootstrap is YAML")
    }

    fn http_connection_manager(bootstrap: &Value) -> &Value {
        &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    }

    fn text<'a>(value: &'a Value, what: &str) -> &'a str {
        value
            .as_str()
            .unwrap_or_else(|| panic!("{what} is not text: {value:?}"))
    }

    #[test]
    fn the_example_bootstrap_sends_every_request_to_tessera_over_grpc_v3_failing_closed() {
        let bootstrap = bootstrap();
        let manager = http_connection_manager(&bootstrap);
        let filters = manager["http_filters"].as_sequence().expect("http_filters");
        assert_eq!(
            text(&filters[0]["name"], "first filter"),
            "envoy.filters.http.ext_authz"
        );
        assert_eq!(
            text(&filters.last().expect("a filter")["name"], "last filter"),
            "envoy.filters.http.router"
        );
        let ext_authz = &filters[0]["typed_config"];
        assert_eq!(
            text(&ext_authz["@type"], "@type"),
            "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
        );
        assert_eq!(
            text(&ext_authz["transport_api_version"], "api version"),
            "V3"
        );
        assert_eq!(ext_authz["failure_mode_allow"].as_bool(), Some(false));

        let cluster_name = text(
            &ext_authz["grpc_service"]["envoy_grpc"]["cluster_name"],
            "ext_authz cluster",
        );
        let clusters = bootstrap["static_resources"]["clusters"]
            .as_sequence()
            .expect("clusters");
        let cluster = clusters
            .iter()
            .find(|cluster| cluster["name"].as_str() == Some(cluster_name))
            .unwrap_or_else(|| panic!("no cluster named {cluster_name}"));
        let protocol = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(
            protocol["explicit_http_config"]["http2_protocol_options"].is_mapping(),
            "gRPC needs HTTP/2 to the Tessera cluster"
        );
        let port = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
            ["socket_address"]["port_value"];
        assert_eq!(
            port.as_u64(),
            Some(u64::from(Settings::default().listen.port()))
        );
    }

    #[test]
    fn the_example_bootstrap_has_envoy_resolve_paths_too_as_defence_in_depth() {
        let bootstrap = bootstrap();
        let manager = http_connection_manager(&bootstrap);
        assert_eq!(manager["normalize_path"].as_bool(), Some(true));
        assert_eq!(manager["merge_slashes"].as_bool(), Some(true));
        assert_eq!(
            text(
                &manager["path_with_escaped_slashes_action"],
                "path_with_escaped_slashes_action"
            ),
            "REJECT_REQUEST"
        );
    }

    #[test]
    fn tessera_serves_the_service_that_ext_authz_v3_calls() {
        type EnvoyServer =
            envoy_types::ext_authz::v3::pb::AuthorizationServer<EnvoyAuthorizationApi>;
        assert_eq!(
            <EnvoyServer as NamedService>::NAME,
            "envoy.service.auth.v3.Authorization"
        );
    }

    #[test]
    fn every_example_route_names_a_valid_tenant_and_permission_or_opts_out() {
        let bootstrap = bootstrap();
        let routes =
            http_connection_manager(&bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
                .as_sequence()
                .expect("routes");
        for route in routes {
            let per_route = &route["typed_per_filter_config"]["envoy.filters.http.ext_authz"];
            if per_route["disabled"].as_bool() == Some(true) {
                continue;
            }
            let extensions = &per_route["check_settings"]["context_extensions"];
            let tenant = text(&extensions["tenant"], "tenant");
            assert!(Tenant::parse(tenant).is_ok(), "tenant {tenant}");
            if let Some(permission) = extensions["permission"].as_str() {
                assert!(
                    Permission::parse(permission).is_ok(),
                    "permission {permission}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_example_settings_load_and_their_rules_decide_a_routed_request() {
        let loaded = Settings::load(Some(&example("tessera.toml"))).expect("the example loads");
        let envoy = Config::parse(loaded.clone())
            .expect("the example is valid")
            .envoy;
        let target = RequestTarget::parse("/api/v1/orders/7").expect("a target");
        assert_eq!(
            envoy
                .rules
                .find("GET", &target)
                .and_then(|rule| rule.permission())
                .map(ToString::to_string)
                .as_deref(),
            Some("orders:read")
        );

        let app = app_with(|settings| {
            settings.envoy_rules = loaded.envoy_rules.clone();
            settings.envoy_unmatched = loaded.envoy_unmatched;
        })
        .await;
        let (_, secret) = token(&app, &["orders:read"]).await;
        allowed(&call(&app, EnvoyCall::get("/api/v1/orders/7").bearer(&secret)).await);
        let write = EnvoyCall::get("/api/v1/orders")
            .method("POST")
            .bearer(&secret);
        denied(
            &call(&app, write).await,
            403,
            Code::PermissionDenied,
            "permission_denied",
        );
        let unlisted = call(&app, EnvoyCall::get("/internal").bearer(&secret)).await;
        denied(&unlisted, 403, Code::PermissionDenied, "permission_denied");
    }
}
