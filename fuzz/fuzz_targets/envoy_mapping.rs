//! Envoy's ext_authz CheckRequest, decoded with prost from the fuzz bytes as the server decodes
//! it off the wire, mapped by the same function the Envoy service runs, then parsed at the edge
//! as Tessera's own Check parses its requests.
//!
//! Asserts, under several settings: the mapping is deterministic; a deny decided without a lookup
//! is only a path the request-target parser refuses, "no rule covers this" (when configured to
//! deny) or a tenant header no tenant can have; every mapped request's path parses; rules are
//! found on the normalized path; the usage label is the matched rule's or `<method> *` with the
//! method from the closed set; the route's `context_extensions` win; the permission a rule
//! picks is a valid one; the client address is the connection's when no hop is trusted; a
//! signature signs exactly method, path and body hash; and, whenever the operator's
//! `context_extensions` are valid, nothing a client sends makes the mapped request a malformed
//! call (INVALID_ARGUMENT instead of a decision).
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tessera::domain::decision::DenyReason;
use tessera::domain::fields::Tenant;
use tessera::domain::http::{HttpMethod, RequestTarget};
use tessera::domain::permission::Permission;
use tessera::domain::route::{PermissionRule, PermissionRules, Unmatched};
use tessera::domain::signature::canonical_http_payload;
use tessera::grpc::authorization::parse_check;
use tessera::grpc::envoy::{EnvoySettings, map_check_request};

static SETTINGS: LazyLock<Vec<EnvoySettings>> = LazyLock::new(|| {
    let rule = |method: &str, path: Option<&str>, prefix: Option<&str>, permission: &str| {
        PermissionRule::parse(method, path, prefix, permission).expect("rule")
    };
    let rules = |unmatched| {
        PermissionRules::new(
            vec![
                rule("GET", Some("/api/v1/orders"), None, "orders:list"),
                rule("get", None, Some("/api/v1/orders/"), "orders:read"),
                rule("POST", None, Some("/api/v1/orders"), "orders:write"),
                rule("*", None, Some("/health"), ""),
                rule("", None, Some("/api/"), "fn:Api_Use"),
            ],
            unmatched,
        )
    };
    vec![
        EnvoySettings::default(),
        EnvoySettings {
            rules: rules(Unmatched::Deny),
            tenant_header: Some("x-tenant".to_owned()),
            ..EnvoySettings::default()
        },
        EnvoySettings {
            rules: rules(Unmatched::Authenticate),
            tenant_header: Some("x-tenant".to_owned()),
            token_header: "x-api-key".to_owned(),
            trusted_hops: 2,
            sign_body: true,
            ..EnvoySettings::default()
        },
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CheckRequest::decode(data) else {
        return;
    };
    for settings in SETTINGS.iter() {
        check_mapping(settings, &request);
    }
});

fn check_mapping(settings: &EnvoySettings, request: &CheckRequest) {
    let attributes = request.attributes.as_ref();
    let extension = |key: &str| attributes.and_then(|a| a.context_extensions.get(key));
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let method = http.map_or("", |h| h.method.as_str());
    let path = http.map_or("", |h| h.path.as_str());

    let mapped = map_check_request(settings, request);
    assert_eq!(
        mapped,
        map_check_request(settings, request),
        "not deterministic"
    );
    let target = RequestTarget::parse(path);
    let mapped = match mapped {
        Ok(mapped) => mapped,
        Err(deny) => {
            match deny.reason {
                DenyReason::PathInvalid => {
                    assert!(deny.refused_path.is_some());
                    assert_eq!(target.err(), deny.refused_path);
                }
                DenyReason::PermissionDenied => {
                    let resolved = target.expect("a path refused as invalid is never matched");
                    assert!(extension("permission").is_none());
                    assert!(settings.rules.find(method, &resolved).is_none());
                    assert_eq!(settings.rules.unmatched(), Unmatched::Deny);
                }
                DenyReason::TenantMismatch => {
                    assert!(extension("tenant").is_none());
                    assert!(settings.tenant_header.is_some());
                }
                other => panic!("early deny for {other:?}"),
            }
            return;
        }
    };
    let resolved = target.expect("a mapped request has a resolvable path");
    let rule = settings.rules.find(method, &resolved);
    if extension("endpoint").is_none() {
        let label = rule.map_or_else(
            || format!("{} *", HttpMethod::of(method).as_str()),
            |rule| rule.label(method),
        );
        assert_eq!(mapped.endpoint, label);
        let label_method = label.split(' ').next().unwrap_or_default();
        assert_eq!(HttpMethod::of(label_method).as_str(), label_method);
    }

    match extension("permission") {
        Some(permission) => assert_eq!(&mapped.permission, permission),
        None => {
            if !mapped.permission.is_empty() {
                let rule = rule.expect("a rule chose it");
                assert_eq!(
                    rule.permission().map(Permission::as_str),
                    Some(mapped.permission.as_str())
                );
            }
        }
    }
    match extension("tenant") {
        Some(tenant) => assert_eq!(&mapped.tenant, tenant),
        None => assert!(Tenant::parse(&mapped.tenant).is_ok(), "{:?}", mapped.tenant),
    }

    assert_eq!(
        mapped.token.trim(),
        mapped.token,
        "the token keeps surrounding space"
    );

    if !mapped.client_ip.is_empty() {
        let ip: IpAddr = mapped.client_ip.parse().expect("an address");
        if settings.trusted_hops == 0 {
            let source = attributes
                .and_then(|a| a.source.as_ref())
                .and_then(|peer| peer.address.as_ref())
                .and_then(|address| address.address.as_ref());
            let Some(Address::SocketAddress(socket)) = source else {
                panic!("a client address without a source address");
            };
            assert_eq!(socket.address.parse::<IpAddr>().ok(), Some(ip));
        }
    }

    if let Some(signature) = &mapped.signature {
        assert!(!signature.signature.is_empty());
        let body: &[u8] = match http {
            Some(h) if settings.sign_body && !h.raw_body.is_empty() => &h.raw_body,
            Some(h) if settings.sign_body => h.body.as_bytes(),
            _ => &[],
        };
        assert_eq!(
            signature.payload,
            canonical_http_payload(method, path, body)
        );
    }

    let operator_set_valid_extensions = extension("tenant")
        .is_none_or(|t| Tenant::parse(t).is_ok())
        && extension("permission").is_none_or(|p| p.is_empty() || Permission::parse(p).is_ok());
    let mut edge = mapped.clone();
    let parsed = parse_check(&mut edge, &tessera::domain::fields::Tenant::default());
    if operator_set_valid_extensions {
        let input = parsed.unwrap_or_else(|status| {
            panic!("client input made a malformed call: {}", status.message())
        });
        let required: Vec<&str> = input
            .permissions
            .required()
            .map(Permission::as_str)
            .collect();
        let expected: Vec<&str> = Some(mapped.permission.as_str())
            .filter(|permission| !permission.is_empty())
            .into_iter()
            .collect();
        assert_eq!(required, expected);
        assert_eq!(
            input.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            mapped.client_ip
        );
    }
}
