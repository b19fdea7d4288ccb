//! Hostile input: every field past its bound is refused with INVALID_ARGUMENT naming it (and
//! nothing is written), errors stay short whatever was sent, and oversized gRPC metadata (a
//! 1 MiB `authorization` value, thousands of headers) is refused cleanly while the server keeps
//! answering the next call.

use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest as EnvoyCheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient as EnvoyClient;
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Status};

use crate::helpers::requests::{audit_events, envoy_http_status, envoy_request, violated_fields};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_with, strings, with_key};

const TENANT: &str = "acme";
/// However much a request sends, an error says what is wrong in no more than this.
const MAX_ERROR_LEN: usize = 4096;
/// Far past every bound, well under the 1 MiB message limit.
const HUGE: usize = 100_000;
/// No refusal may take longer than this: a hang fails the test instead of the suite.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// What tonic 0.14 reports for a call on a connection the server's HTTP/2 layer ended. Which one
/// a client sees is a race between reading the server's GOAWAY and its own write failing, so a
/// test may assert only the set: ENHANCE_YOUR_CALM is RESOURCE_EXHAUSTED; COMPRESSION_ERROR,
/// PROTOCOL_ERROR and a broken pipe are INTERNAL; REFUSED_STREAM, a reset connection and a
/// failed reconnect are UNAVAILABLE; an I/O error without an HTTP/2 reason is UNKNOWN; and hyper
/// cancels a request still queued on a connection that closes, which tonic maps to CANCELLED.
/// A code from a service (UNAUTHENTICATED, INVALID_ARGUMENT, …) is not in it: the call must
/// never have reached one.
const CONNECTION_REFUSALS: &[Code] = &[
    Code::ResourceExhausted,
    Code::Internal,
    Code::Unavailable,
    Code::Unknown,
    Code::Cancelled,
];

async fn app() -> TestApp {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.envoy_unmatched = tessera::config::EnvoyUnmatched::Authenticate;
    })
    .await;
    app.principal(TENANT, "alice", &["*"]).await;
    app
}

fn text(len: usize) -> String {
    "x".repeat(len)
}

/// `count` distinct valid grants: `p0:read`, `p1:read`, …
fn grants(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("p{i}:read")).collect()
}

/// `count` distinct valid networks.
fn networks(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect()
}

/// INVALID_ARGUMENT naming exactly `fields`, in a message and details of bounded size.
#[track_caller]
fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, fields: &[&str]) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut named = violated_fields(&status);
    named.sort();
    let mut expected: Vec<String> = strings(fields);
    expected.sort();
    assert_eq!(named, expected, "{}", status.message());
    assert!(
        status.message().len() <= MAX_ERROR_LEN && status.details().len() <= MAX_ERROR_LEN,
        "an error of {} + {} bytes",
        status.message().len(),
        status.details().len()
    );
}

#[tokio::test]
async fn every_oversized_create_field_is_named_in_one_invalid_argument_and_nothing_is_written() {
    let app = app().await;
    let written = audit_events(&app).await;
    let mut client = app.admin_client().await;

    let mut request = new_token(TENANT, "alice", &[]);
    request.tenant = text(129);
    request.owner_id = text(129);
    request.name = text(129);
    request.description = text(1025);
    request.permissions = grants(257);
    request.roles = (0..65).map(|i| format!("role{i}")).collect();
    request.allowed_ips = networks(257);
    assert_invalid(
        client.create_token(app.admin(request)).await,
        &[
            "tenant",
            "owner_id",
            "name",
            "description",
            "permissions",
            "roles",
            "allowed_ips",
        ],
    );

    // One oversized entry in each list, each far beyond its bound.
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.permissions = vec!["orders:read".to_owned(), format!("{}:read", text(HUGE))];
    request.roles = vec![text(HUGE)];
    request.allowed_ips = vec!["10.0.0.0/8".to_owned(), format!("10.0.0.0/8{}", text(HUGE))];
    assert_invalid(
        client.create_token(app.admin(request)).await,
        &["permissions[1]", "roles[0]", "allowed_ips[1]"],
    );
    assert_eq!(audit_events(&app).await, written, "nothing was written");

    // Every bound is exact: at the limit, the same fields are accepted.
    let mut request = new_token(TENANT, "alice", &[]);
    request.name = "é".repeat(128);
    request.description = text(1024);
    request.permissions = grants(256);
    request.allowed_ips = networks(256);
    let created = client
        .create_token(app.admin(request))
        .await
        .expect("at the limits")
        .into_inner();
    let token = created.token.expect("token");
    assert_eq!(token.permissions.len(), 256);
    assert_eq!(token.allowed_ips.len(), 256);
}

#[tokio::test]
async fn oversized_update_fields_and_a_flood_of_mask_paths_are_refused_naming_the_field() {
    let app = app().await;
    let (token, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let mut client = app.admin_client().await;
    let update = |paths: Vec<String>| proto::UpdateTokenRequest {
        id: token.id.clone(),
        name: text(129),
        description: text(1025),
        permissions: grants(257),
        allowed_ips: vec![text(HUGE)],
        update_mask: Some(prost_types::FieldMask { paths }),
        ..Default::default()
    };
    let mask = strings(&["name", "description", "permissions", "allowed_ips"]);
    assert_invalid(
        client.update_token(app.admin(update(mask))).await,
        &["name", "description", "permissions", "allowed_ips[0]"],
    );

    let flood = (0..10_000).map(|i| format!("no_such_path_{i}")).collect();
    assert_invalid(
        client.update_token(app.admin(update(flood))).await,
        &["update_mask"],
    );
    assert_invalid(
        client
            .update_token(app.admin(update(vec![text(HUGE)])))
            .await,
        &["update_mask"],
    );

    let unchanged = client
        .get_token(app.admin(proto::GetTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("get")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(unchanged.name, token.name);
    assert_eq!(unchanged.permissions, token.permissions);

    // The mask's bound is exact: every updatable path once (10) and 32 `metadata.KEY` paths are
    // accepted, one more is not, with every field valid so that the count is the only reason.
    let every_path = || {
        let mut paths = strings(&[
            "name",
            "description",
            "permissions",
            "roles",
            "allowed_ips",
            "rate_limit_per_minute",
            "expires_at",
            "require_signature",
            "metadata",
            "credits",
        ]);
        paths.extend((0..32).map(|i| format!("metadata.k{i}")));
        paths
    };
    let valid_update = |paths: Vec<String>| proto::UpdateTokenRequest {
        id: token.id.clone(),
        name: "renamed".to_owned(),
        description: "every field at once".to_owned(),
        permissions: strings(&["orders:read"]),
        allowed_ips: strings(&["10.0.0.0/8"]),
        rate_limit_per_minute: 60,
        expires_at: Some(prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 24 * 3600,
            nanos: 0,
        }),
        credits: Some(proto::TokenCredits {
            remaining: 10,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
        ..Default::default()
    };
    let mut ten = every_path();
    ten.push("name".to_owned());
    assert_invalid(
        client.update_token(app.admin(valid_update(ten))).await,
        &["update_mask"],
    );
    let updated = client
        .update_token(app.admin(valid_update(every_path())))
        .await
        .expect("42 paths, each once")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.rate_limit_per_minute, 60);
}

#[tokio::test]
async fn a_permission_a_cidr_and_the_roles_at_their_bound_are_accepted_and_one_past_is_refused() {
    let app = app().await;
    let mut client = app.admin_client().await;
    let roles: Vec<String> = (0..65).map(|i| format!("role{i}")).collect();
    // Past the bound a permission, an entry and the list are refused naming each.
    let permission_of = |len: usize| format!("orders:{}", text(len - "orders:".len()));
    // The longest IP or CIDR text, 49 characters; parsing trims whitespace, so with spaces
    // after it the same network is 64 (the bound) or 65 characters long.
    let cidr = "2001:0db8:0000:0000:0000:0000:192.168.100.200/128";
    assert_eq!(cidr.len(), 49);
    let padded = |len: usize| format!("{cidr}{}", " ".repeat(len - cidr.len()));

    let mut request = new_token(TENANT, "alice", &[]);
    request.permissions = vec!["orders:read".to_owned(), permission_of(129)];
    request.allowed_ips = vec![cidr.to_owned(), padded(65)];
    request.roles = roles.clone();
    assert_invalid(
        client.create_token(app.admin(request)).await,
        &["permissions[1]", "allowed_ips[1]", "roles"],
    );

    // At the bound they are accepted; the 64 roles exist, or the create would fail for that.
    for role in &roles[..64] {
        client
            .upsert_role(app.admin(proto::UpsertRoleRequest {
                tenant: TENANT.to_owned(),
                name: role.clone(),
                permissions: strings(&["orders:read"]),
            }))
            .await
            .expect("role written");
    }
    let mut request = new_token(TENANT, "alice", &[]);
    request.permissions = vec![permission_of(128)];
    request.allowed_ips = vec![cidr.to_owned(), padded(64)];
    request.roles = roles[..64].to_vec();
    let token = client
        .create_token(app.admin(request))
        .await
        .expect("at the bounds")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(token.permissions, vec![permission_of(128)]);
    assert_eq!(token.roles.len(), 64);
    assert_eq!(
        token.allowed_ips.len(),
        1,
        "the padded entry is the same network: {:?}",
        token.allowed_ips
    );
}

#[tokio::test]
async fn oversized_principal_role_and_api_status_fields_are_refused_naming_the_field() {
    let app = app().await;
    let written = audit_events(&app).await;
    let mut client = app.admin_client().await;
    assert_invalid(
        client
            .upsert_principal(app.admin(proto::UpsertPrincipalRequest {
                tenant: text(129),
                id: text(HUGE),
                permissions: grants(257),
                ..Default::default()
            }))
            .await,
        &["tenant", "id", "permissions"],
    );
    assert_invalid(
        client
            .upsert_principal(app.admin(proto::UpsertPrincipalRequest {
                tenant: TENANT.to_owned(),
                id: "bob".to_owned(),
                permissions: vec![format!("orders:{}", text(HUGE))],
                ..Default::default()
            }))
            .await,
        &["permissions[0]"],
    );
    assert_invalid(
        client
            .upsert_role(app.admin(proto::UpsertRoleRequest {
                tenant: TENANT.to_owned(),
                name: text(129),
                permissions: grants(257),
            }))
            .await,
        &["name", "permissions"],
    );
    assert_invalid(
        client
            .set_api_status(app.admin(proto::SetApiStatusRequest {
                tenant: text(129),
                online: false,
                message: text(1025),
            }))
            .await,
        &["tenant", "message"],
    );
    assert_invalid(
        client
            .list_usage(app.admin(proto::ListUsageRequest {
                tenant: TENANT.to_owned(),
                owner_id: text(HUGE),
                ..Default::default()
            }))
            .await,
        &["owner_id"],
    );
    assert_invalid(
        client
            .list_tokens(app.admin(proto::ListTokensRequest {
                tenant: TENANT.to_owned(),
                page_token: text(HUGE),
                ..Default::default()
            }))
            .await,
        &["page_token"],
    );
    assert_eq!(audit_events(&app).await, written, "nothing was written");
}

#[tokio::test]
async fn an_actor_header_past_its_bound_is_refused_naming_the_header() {
    let app = app().await;
    let mut request = app.admin(proto::UpsertPrincipalRequest {
        tenant: TENANT.to_owned(),
        id: "bob".to_owned(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-tessera-actor", text(129).parse().expect("ascii"));
    let refused = app.admin_client().await.upsert_principal(request).await;
    assert_invalid(refused, &["x-tessera-actor"]);
}

#[tokio::test]
async fn oversized_check_fields_are_invalid_and_an_oversized_token_is_only_malformed() {
    let app = app().await;
    let mut client = app.authz_client().await;
    assert_invalid(
        client
            .check(proto::CheckRequest {
                token: "tsk_x".to_owned(),
                tenant: text(129),
                permission: format!("orders:{}", text(129)),
                client_ip: text(HUGE),
                user_agent: text(1025),
                endpoint: text(257),
                ..Default::default()
            })
            .await,
        &[
            "tenant",
            "permission",
            "client_ip",
            "user_agent",
            "endpoint",
        ],
    );
    assert_invalid(
        client
            .report_usage(proto::ReportUsageRequest {
                token_id: text(HUGE),
                endpoint: text(257),
                http_status: 200,
                duration: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1,
                }),
                // Version byte first, so only the length bound refuses it before any MAC.
                report_handle: vec![1; HUGE],
                ..Default::default()
            })
            .await,
        &["token_id", "endpoint", "report_handle"],
    );

    // A huge token (and signature) is the client's bad data: a deny, not an error, decided
    // without asking the store.
    let lookups_before = app.store_lookups();
    let answer = client
        .check(proto::CheckRequest {
            token: format!("tsk_{}", text(512 * 1024)),
            tenant: TENANT.to_owned(),
            signature: Some(proto::Signature {
                timestamp: 0,
                signature: text(HUGE),
                payload: vec![b'x'; HUGE],
            }),
            ..Default::default()
        })
        .await
        .expect("a decision")
        .into_inner();
    assert!(!answer.allowed);
    assert_eq!(answer.reason(), DenyReason::TokenMalformed);
    assert!(answer.message.len() <= MAX_ERROR_LEN);
    assert_eq!(
        app.store_lookups(),
        lookups_before,
        "the store was not queried"
    );
}

/// A real admin call and a real Check, each answered: the server is still serving.
async fn assert_still_answering(app: &TestApp) {
    let (_, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let answer = app
        .check(proto::CheckRequest {
            token: secret,
            tenant: TENANT.to_owned(),
            permission: "orders:read".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(answer.allowed, "{answer:?}");
}

/// Sends `metadata` on an admin call and on a Check over one channel; both must be refused
/// within [`ANSWER_WITHIN`], and the same channel, and a new one, must keep working.
async fn refused_with_metadata(app: &TestApp, metadata: &[(String, String)]) -> Vec<Status> {
    let channel = tonic::transport::Channel::from_shared(app.grpc_url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let attach = |request: &mut tonic::metadata::MetadataMap| {
        for (name, value) in metadata {
            let name = MetadataKey::from_bytes(name.as_bytes()).expect("header name");
            let value: MetadataValue<_> = value.parse().expect("ascii value");
            request.append(name, value);
        }
    };
    let mut admin_request = tonic::Request::new(proto::ListRolesRequest::default());
    attach(admin_request.metadata_mut());
    let mut check_request = tonic::Request::new(proto::CheckRequest::default());
    attach(check_request.metadata_mut());

    let mut admin =
        proto::token_admin_service_client::TokenAdminServiceClient::new(channel.clone());
    let mut authz =
        proto::authorization_service_client::AuthorizationServiceClient::new(channel.clone());
    let admin_answer = tokio::time::timeout(ANSWER_WITHIN, admin.list_roles(admin_request))
        .await
        .expect("an admin answer, not a hang");
    let check_answer = tokio::time::timeout(ANSWER_WITHIN, authz.check(check_request))
        .await
        .expect("a check answer, not a hang");
    let refusals = vec![
        admin_answer.expect_err("the admin call is refused"),
        check_answer.expect_err("the check is refused"),
    ];

    // The channel that carried the hostile call still works, and so does the server.
    admin
        .list_roles(with_key(proto::ListRolesRequest::default(), &app.admin_key))
        .await
        .expect("the same channel keeps working");
    assert_still_answering(app).await;
    refusals
}

#[tokio::test]
async fn a_one_mebibyte_authorization_header_is_refused_cleanly_and_the_server_keeps_answering() {
    let app = app().await;
    let bearer = format!("Bearer {}", text(1024 * 1024));
    let refusals = refused_with_metadata(&app, &[("authorization".to_owned(), bearer)]).await;
    // The server's HTTP/2 layer ends the connection (GOAWAY ENHANCE_YOUR_CALM: too many
    // CONTINUATION frames) before any service sees the call.
    assert_refused_by_the_connection(&refusals);
}

#[track_caller]
fn assert_refused_by_the_connection(refusals: &[Status]) {
    for status in refusals {
        assert!(CONNECTION_REFUSALS.contains(&status.code()), "{status:?}");
        assert!(status.message().len() <= MAX_ERROR_LEN, "{status:?}");
    }
}

#[tokio::test]
async fn ten_thousand_headers_are_refused_cleanly_and_the_server_keeps_answering() {
    let app = app().await;
    let headers: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("x-hostile-{i}"), "v".to_owned()))
        .collect();
    let refusals = refused_with_metadata(&app, &headers).await;
    // The header list passes the server's HTTP/2 limit: it ends the connection (GOAWAY
    // COMPRESSION_ERROR) before any service sees the call.
    assert_refused_by_the_connection(&refusals);
}

#[tokio::test]
async fn oversized_envoy_requests_are_denied_or_refused_and_the_server_keeps_answering() {
    let app = app().await;
    let mut envoy = EnvoyClient::connect(app.grpc_url.clone())
        .await
        .expect("connects");
    let mut ask = async |request: EnvoyCheckRequest| {
        tokio::time::timeout(ANSWER_WITHIN, envoy.check(request))
            .await
            .expect("an answer, not a hang")
            .map(tonic::Response::into_inner)
    };
    let bearer = |token: String| ("authorization".to_owned(), format!("Bearer {token}"));

    let huge_token = ask(envoy_request(TENANT, "/", vec![bearer(text(512 * 1024))]))
        .await
        .expect("a decision");
    assert_eq!(envoy_http_status(&huge_token), 401, "{huge_token:?}");

    let many: Vec<(String, String)> = (0..20_000)
        .map(|i| (format!("x-hostile-{i}"), "v".to_owned()))
        .chain([bearer("tsk_short".to_owned())])
        .collect();
    let many_headers = ask(envoy_request(TENANT, "/", many))
        .await
        .expect("a decision");
    assert_eq!(envoy_http_status(&many_headers), 401, "{many_headers:?}");

    // A tenant no tenant can have, set by the route (the operator's mistake): named, briefly.
    let odd_tenant = ask(envoy_request(
        &text(HUGE),
        "/",
        vec![bearer("tsk_short".to_owned())],
    ))
    .await;
    assert_invalid(odd_tenant, &["tenant"]);

    // Past the message limit: refused as OUT_OF_RANGE before anything is parsed.
    let too_large = ask(envoy_request(
        TENANT,
        "/",
        vec![bearer(text(2 * 1024 * 1024))],
    ))
    .await
    .expect_err("over the message limit");
    assert_eq!(too_large.code(), Code::OutOfRange, "{too_large:?}");

    assert_still_answering(&app).await;
}

/// Durations at and near the ends of i64 seconds, which chrono's `now + duration` would answer
/// with a panic, and one just past the 100-year bound.
fn extreme_durations() -> Vec<prost_types::Duration> {
    let just_past_bound = (100 * 365 + 25) * 86_400 + 1;
    [
        (i64::MAX, 999_999_999),
        (i64::MAX / 1000, 0),
        (9_000_000_000_000, 0),
        (just_past_bound, 0),
        (i64::MIN, -999_999_999),
        (0, -1),
        (0, i32::MAX),
        (-1, i32::MAX),
    ]
    .into_iter()
    .map(|(seconds, nanos)| prost_types::Duration { seconds, nanos })
    .collect()
}

#[tokio::test]
async fn durations_near_chronos_limits_are_invalid_naming_the_field_and_never_a_panic() {
    let app = app().await;
    let (token, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let written = audit_events(&app).await;
    let mut client = app.admin_client().await;

    for duration in extreme_durations() {
        let mut create = new_token(TENANT, "alice", &["orders:read"]);
        create.ttl = Some(duration);
        assert_invalid(client.create_token(app.admin(create)).await, &["ttl"]);

        let list = proto::ListTokensRequest {
            tenant: TENANT.to_owned(),
            expiring_within: Some(duration),
            unused_for: Some(duration),
            ..Default::default()
        };
        assert_invalid(
            client.list_tokens(app.admin(list)).await,
            &["expiring_within", "unused_for"],
        );

        let rotate = proto::RotateTokenRequest {
            id: token.id.clone(),
            grace_period: Some(duration),
        };
        let refused = client.rotate_token(app.admin(rotate)).await;
        assert_invalid(refused, &["grace_period"]);
    }
    let far_future = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    };
    let mut create = new_token(TENANT, "alice", &["orders:read"]);
    create.expires_at = Some(far_future);
    assert_invalid(
        client.create_token(app.admin(create)).await,
        &["expires_at"],
    );

    assert_eq!(audit_events(&app).await, written, "nothing was written");
    assert_still_answering(&app).await;
}
