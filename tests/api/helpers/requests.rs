//! What many test files send and read back: Check and Envoy requests, a client's signature, the
//! details of a refusal, the size of the audit log, a Check polled until it gives a reason.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use envoy_types::ext_authz::v3::pb::{
    CheckRequest as EnvoyCheckRequest, CheckResponse as EnvoyCheckResponse, HttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttributeRequest,
};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Status;
use tonic_types::StatusExt;

use super::TestApp;

/// A Check of `secret` for `permission` in `tenant`; set the other fields inline.
pub fn check_request(tenant: &str, secret: &str, permission: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        token: secret.to_owned(),
        tenant: tenant.to_owned(),
        permission: permission.to_owned(),
        ..Default::default()
    }
}

/// `base64(HMAC-SHA256(key, timestamp + "\n" + payload))`, as a client computes it.
pub fn sign(key: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(format!("{timestamp}\n").as_bytes());
    mac.update(payload);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A client's signature of `payload` at `timestamp` with `key`, as a Check carries it.
pub fn signature(key: &str, timestamp: i64, payload: &str) -> proto::Signature {
    proto::Signature {
        timestamp,
        signature: sign(key, timestamp, payload.as_bytes()),
        payload: payload.as_bytes().to_vec(),
    }
}

/// What Envoy sends for `GET path` with `headers`, on a route whose context names `tenant`.
pub fn envoy_request<Name: Into<String>, Value: Into<String>>(
    tenant: &str,
    path: &str,
    headers: impl IntoIterator<Item = (Name, Value)>,
) -> EnvoyCheckRequest {
    EnvoyCheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: path.to_owned(),
                    headers: headers
                        .into_iter()
                        .map(|(name, value)| (name.into(), value.into()))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("tenant".to_owned(), tenant.to_owned())].into(),
            ..Default::default()
        }),
    }
}

/// The HTTP status an Envoy answer tells Envoy to give: 200 for OK, else the denial's.
pub fn envoy_http_status(response: &EnvoyCheckResponse) -> i32 {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(denied)) => {
            denied.status.as_ref().map_or(0, |status| status.code)
        }
        other => panic!("no http answer: {other:?}"),
    }
}

/// The field names of the BadRequest violations in a status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|violation| violation.field)
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `status` carries Tessera's `google.rpc.ErrorInfo` (domain `tessera.dev`) with
/// `reason`, as docs/api.md's error model has every status of the server.
#[track_caller]
pub fn assert_reason(status: &Status, reason: &str) {
    let info = status
        .get_details_error_info()
        .map(|info| (info.domain, info.reason));
    assert_eq!(
        info,
        Some(("tessera.dev".to_owned(), reason.to_owned())),
        "{status:?}"
    );
}

/// How many admin mutations the audit log holds: a count that moves exactly when one is written.
pub async fn audit_events(app: &TestApp) -> usize {
    all_audit_events(app).await.len()
}

/// The first page of the audit log, as the server's own (all-tenant) key reads it.
pub async fn all_audit_events(app: &TestApp) -> Vec<proto::AuditEvent> {
    app.admin_client()
        .await
        .list_audit_events(app.admin(proto::ListAuditEventsRequest::default()))
        .await
        .expect("audit")
        .into_inner()
        .events
}

/// Polls until `check` gives `reason`, failing after a generous deadline; returns how long it took.
pub async fn wait_for_reason(
    app: &TestApp,
    check: proto::CheckRequest,
    reason: DenyReason,
) -> Duration {
    let started = Instant::now();
    loop {
        let response = app.check(check.clone()).await;
        if response.reason() == reason {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {:?} instead of {reason:?}",
            response.reason()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
