//! CreateToken, UpdateToken, ListTokens and RotateToken requests as an admin client sends them,
//! through the server's own parsing (`tessera::grpc::admin::parse_create` / `parse_update`,
//! `Violations::duration`) and the admin layer's expiry resolution.
//!
//! Input: a 24-byte header, then text. The header is a duration (seconds i64 LE, nanos i32 LE)
//! and a timestamp (the same layout), so the extremes of both (i64::MAX, negative nanos, …) are
//! one mutation away; the text's lines are tenant, owner id, name, description, permissions,
//! roles, allowed IPs (lists separated by `,`) and the update mask's paths. Asserts that nothing
//! panics, that every refusal is INVALID_ARGUMENT whose BadRequest names a field, and that every
//! accepted duration can be added to and subtracted from now.
#![no_main]

use chrono::Utc;
use libfuzzer_sys::fuzz_target;
use tessera::admin::{Expiry, resolve_expiry};
use tessera::grpc::admin::{parse_create, parse_update};
use tessera::grpc::convert::Violations;
use tessera::proto;
use tonic_types::StatusExt;

const HEADER_LEN: usize = 24;
const MAX_LIST_LEN: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut header = [0u8; HEADER_LEN];
    let header_len = data.len().min(HEADER_LEN);
    header[..header_len].copy_from_slice(&data[..header_len]);
    let duration = prost_types::Duration {
        seconds: i64::from_le_bytes(header[0..8].try_into().expect("8 bytes")),
        nanos: i32::from_le_bytes(header[8..12].try_into().expect("4 bytes")),
    };
    let timestamp = prost_types::Timestamp {
        seconds: i64::from_le_bytes(header[12..20].try_into().expect("8 bytes")),
        nanos: i32::from_le_bytes(header[20..24].try_into().expect("4 bytes")),
    };
    let text = String::from_utf8_lossy(&data[header_len..]);
    let mut lines = text.lines();
    let mut line = || lines.next().unwrap_or_default().to_owned();
    let (tenant, owner_id, name, description) = (line(), line(), line(), line());
    let (permissions, roles, allowed_ips, paths) =
        (list(&line()), list(&line()), list(&line()), list(&line()));
    let now = Utc::now();

    // The header's duration as every duration field of the API.
    for field in ["ttl", "expiring_within", "unused_for", "grace_period"] {
        let mut violations = Violations::default();
        let parsed = violations.duration(field, Some(duration));
        match violations.finish(parsed) {
            Ok(Some(span)) => {
                assert!(now.checked_add_signed(span).is_some(), "{duration:?}");
                assert!(now.checked_sub_signed(span).is_some(), "{duration:?}");
            }
            Ok(None) => unreachable!("a present duration parses to a value or an error"),
            Err(status) => assert_names_a_field(&status, field),
        }
    }

    for (ttl, expires_at) in [
        (Some(duration), None),
        (None, Some(timestamp)),
        (Some(duration), Some(timestamp)),
    ] {
        let request = proto::CreateTokenRequest {
            tenant: tenant.clone(),
            owner_id: owner_id.clone(),
            name: name.clone(),
            description: description.clone(),
            permissions: permissions.clone(),
            roles: roles.clone(),
            allowed_ips: allowed_ips.clone(),
            ttl,
            expires_at,
            ..Default::default()
        };
        match parse_create(request, &tessera::domain::fields::Tenant::default()) {
            Ok(create) => {
                let _ = resolve_expiry(create.expiry, now);
            }
            Err(status) => assert_names_a_field(&status, ""),
        }
    }

    let request = proto::UpdateTokenRequest {
        id: name.clone(),
        name,
        description,
        permissions,
        roles,
        allowed_ips,
        expires_at: Some(timestamp),
        update_mask: Some(prost_types::FieldMask { paths }),
        ..Default::default()
    };
    match parse_update(request) {
        Ok((_, changes, _)) => {
            if let Some(at) = changes.expires_at {
                let _ = resolve_expiry(Expiry::At(at), now);
            }
        }
        Err(status) => assert_names_a_field(&status, ""),
    }
});

fn list(line: &str) -> Vec<String> {
    line.split(',')
        .filter(|entry| !entry.is_empty())
        .take(MAX_LIST_LEN)
        .map(str::to_owned)
        .collect()
}

/// INVALID_ARGUMENT with at least one field violation, each naming a field (`expected` among
/// them, when given).
fn assert_names_a_field(status: &tonic::Status, expected: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let violations = status
        .get_details_bad_request()
        .map(|bad_request| bad_request.field_violations)
        .unwrap_or_default();
    assert!(!violations.is_empty(), "{status:?}");
    assert!(
        violations
            .iter()
            .all(|violation| !violation.field.is_empty()),
        "{violations:?}"
    );
    if !expected.is_empty() {
        assert!(
            violations
                .iter()
                .any(|violation| violation.field == expected),
            "{violations:?}"
        );
    }
}
