//! Lifecycle events (issue 17, points 1 and 3): written by the change that causes them, streamed
//! by WatchEvents from a cursor, scoped by the admin key; expiry notices once per token and
//! expiry across replicas; retention; both backends through the real server.

use std::time::Duration;

use prost_types::FieldMask;
use tessera::proto;
use tessera::proto::DenyReason;
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

use crate::backend_tests;
use crate::helpers::requests::{assert_reason, check_request};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on, spawn_app_with, with_key};

const TENANT: &str = "acme";
/// Long enough for any event under test to arrive on a loaded machine; never a speed claim.
const PATIENCE: Duration = Duration::from_secs(20);

async fn app_with_owner(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

async fn watch(
    app: &TestApp,
    request: proto::WatchEventsRequest,
) -> Streaming<proto::WatchEventsResponse> {
    app.admin_client()
        .await
        .watch_events(app.admin(request))
        .await
        .expect("watch opened")
        .into_inner()
}

fn tenant_watch() -> proto::WatchEventsRequest {
    proto::WatchEventsRequest {
        tenant: TENANT.to_owned(),
        ..Default::default()
    }
}

/// The next event of the stream, failing the test if none arrives in `PATIENCE`.
async fn next_event(stream: &mut Streaming<proto::WatchEventsResponse>) -> proto::Event {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("an event arrived in time")
        .expect("the stream is open")
        .expect("the stream item is an event")
        .event
        .expect("the response holds an event")
}

async fn next_events(
    stream: &mut Streaming<proto::WatchEventsResponse>,
    count: usize,
) -> Vec<proto::Event> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(next_event(stream).await);
    }
    events
}

fn types(events: &[proto::Event]) -> Vec<&str> {
    events.iter().map(|event| event.r#type.as_str()).collect()
}

/// A member of an event's data object, by path (`token.id`).
fn member<'a>(event: &'a proto::Event, path: &str) -> Option<&'a prost_types::value::Kind> {
    use prost_types::value::Kind;
    let mut fields = &event.data.as_ref()?.fields;
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let kind = fields.get(name)?.kind.as_ref()?;
        if names.peek().is_none() {
            return Some(kind);
        }
        match kind {
            Kind::StructValue(inner) => fields = &inner.fields,
            _ => return None,
        }
    }
    None
}

fn text<'a>(event: &'a proto::Event, path: &str) -> &'a str {
    match member(event, path) {
        Some(prost_types::value::Kind::StringValue(text)) => text,
        other => panic!("{path} of {} is not text: {other:?}", event.r#type),
    }
}

async fn every_change_writes_its_event_and_watch_events_streams_them_in_commit_order(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(&app, tenant_watch()).await;
    let mut admin = app.admin_client().await;

    let (token, secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    admin
        .update_token(app.admin(proto::UpdateTokenRequest {
            id: token.id.clone(),
            name: "renamed".to_owned(),
            update_mask: Some(FieldMask {
                paths: vec!["name".to_owned()],
            }),
            ..Default::default()
        }))
        .await
        .expect("updated");
    admin
        .suspend_token(app.admin(proto::SuspendTokenRequest {
            id: token.id.clone(),
            reason: "review".to_owned(),
        }))
        .await
        .expect("suspended");
    admin
        .resume_token(app.admin(proto::ResumeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("resumed");
    let rotated = admin
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("rotated")
        .into_inner();
    admin
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: token.id.clone(),
        }))
        .await
        .expect("revoked");
    app.principal(TENANT, "alice", &["orders:*", "billing:read"])
        .await;
    app.take_offline(TENANT, "maintenance").await;

    let events = next_events(&mut stream, 8).await;
    assert_eq!(
        types(&events),
        [
            "token.created",
            "token.updated",
            "token.suspended",
            "token.resumed",
            "token.rotated",
            "token.revoked",
            "principal.updated",
            "api_status.changed",
        ]
    );
    for event in &events[..6] {
        assert_eq!(event.token_id, token.id);
        assert_eq!(text(event, "token.id"), token.id);
        assert_eq!(event.tenant, TENANT);
        assert!(event.id.starts_with("evt_"), "{}", event.id);
    }
    assert_eq!(text(&events[1], "token.name"), "renamed");
    assert_eq!(text(&events[2], "token.state"), "TOKEN_STATE_SUSPENDED");
    assert_eq!(text(&events[5], "token.state"), "TOKEN_STATE_REVOKED");
    assert_eq!(text(&events[6], "principal.id"), "alice");
    assert_eq!(events[7].tenant, TENANT);
    // Each snapshot is the resource as its change left it, never a secret.
    let everything = format!("{events:?}");
    assert!(
        !everything.contains(&secret),
        "the first secret is in an event"
    );
    assert!(
        !everything.contains(&rotated.secret),
        "the new secret is in an event"
    );
}

async fn a_change_that_fails_writes_no_event(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(&app, tenant_watch()).await;
    let refused = app
        .admin_client()
        .await
        .create_token(app.admin(new_token(TENANT, "nobody", &["orders:read"])))
        .await
        .expect_err("no such owner");
    assert_eq!(refused.code(), Code::NotFound);
    let (token, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;

    let first = next_event(&mut stream).await;
    assert_eq!(first.r#type, "token.created");
    assert_eq!(
        first.token_id, token.id,
        "the refused create wrote an event"
    );
}

async fn a_watch_resumes_after_its_cursor_without_gaps_or_repeats(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(&app, tenant_watch()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (token, _) = app
            .token(new_token(TENANT, "alice", &["orders:read"]))
            .await;
        ids.push(token.id);
    }
    let seen = next_events(&mut stream, 3).await;
    drop(stream);

    let mut resumed = watch(
        &app,
        proto::WatchEventsRequest {
            after_event_id: seen[0].id.clone(),
            ..tenant_watch()
        },
    )
    .await;
    let (fourth, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let replayed = next_events(&mut resumed, 3).await;

    let token_ids: Vec<&str> = replayed
        .iter()
        .map(|event| event.token_id.as_str())
        .collect();
    assert_eq!(
        token_ids,
        [ids[1].as_str(), ids[2].as_str(), fourth.id.as_str()]
    );
    assert_eq!(replayed[0].id, seen[1].id);
}

async fn a_watch_filters_by_event_type(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(
        &app,
        proto::WatchEventsRequest {
            event_types: vec!["token.revoked".to_owned()],
            ..tenant_watch()
        },
    )
    .await;
    let (kept, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let (revoked, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    app.admin_client()
        .await
        .revoke_token(app.admin(proto::RevokeTokenRequest {
            id: revoked.id.clone(),
        }))
        .await
        .expect("revoked");

    let only = next_event(&mut stream).await;
    assert_eq!(only.r#type, "token.revoked");
    assert_eq!(only.token_id, revoked.id);
    assert_ne!(only.token_id, kept.id);
}

async fn a_watch_sees_only_the_admin_keys_tenants(backend: Backend) {
    let app = app_with_owner(backend).await;
    app.principal("globex", "bob", &["orders:*"]).await;
    let scoped = app
        .admin_client()
        .await
        .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
            name: "acme viewer".to_owned(),
            tenants: vec![TENANT.to_owned()],
            role: proto::AdminRole::Viewer.into(),
            ..Default::default()
        }))
        .await
        .expect("key created")
        .into_inner()
        .secret;
    let mut client = app.admin_client().await;
    let mut everything = client
        .watch_events(with_key(
            proto::WatchEventsRequest {
                all_tenants: true,
                ..Default::default()
            },
            &scoped,
        ))
        .await
        .expect("watch of the key's tenants")
        .into_inner();
    let other_tenant = client
        .watch_events(with_key(
            proto::WatchEventsRequest {
                tenant: "globex".to_owned(),
                ..Default::default()
            },
            &scoped,
        ))
        .await
        .expect_err("another tenant");

    app.token(new_token("globex", "bob", &["orders:read"]))
        .await;
    let (mine, _) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;

    assert_eq!(other_tenant.code(), Code::PermissionDenied);
    assert_reason(&other_tenant, "TENANT_NOT_IN_SCOPE");
    let first = next_event(&mut everything).await;
    assert_eq!(first.tenant, TENANT, "the key saw another tenant's event");
    assert_eq!(first.token_id, mine.id);
}

async fn a_watch_ends_unauthenticated_once_its_admin_key_is_revoked(backend: Backend) {
    let app = app_with_owner(backend).await;
    let created = app
        .admin_client()
        .await
        .create_admin_key(app.admin(proto::CreateAdminKeyRequest {
            name: "watcher".to_owned(),
            tenants: vec![TENANT.to_owned()],
            role: proto::AdminRole::Viewer.into(),
            ..Default::default()
        }))
        .await
        .expect("key created")
        .into_inner();
    let mut stream = app
        .admin_client()
        .await
        .watch_events(with_key(tenant_watch(), &created.secret))
        .await
        .expect("watch opened")
        .into_inner();
    app.admin_client()
        .await
        .revoke_admin_key(app.admin(proto::RevokeAdminKeyRequest {
            id: created.admin_key.expect("key").id,
        }))
        .await
        .expect("key revoked");

    let ended = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream ended in time");
    match ended {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unauthenticated),
        other => panic!("the stream went on after its key was revoked: {other:?}"),
    }
}

async fn a_cursor_that_names_no_kept_event_is_out_of_range_and_a_malformed_one_invalid(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let mut client = app.admin_client().await;
    let unknown = client
        .watch_events(app.admin(proto::WatchEventsRequest {
            after_event_id: "evt_01J00000000000000000000000".to_owned(),
            ..tenant_watch()
        }))
        .await
        .expect_err("no such event");
    let malformed = client
        .watch_events(app.admin(proto::WatchEventsRequest {
            after_event_id: "tok_nope".to_owned(),
            event_types: vec!["token.exploded".to_owned()],
            ..tenant_watch()
        }))
        .await
        .expect_err("malformed");

    assert_eq!(unknown.code(), Code::OutOfRange);
    assert_reason(&unknown, "EVENT_CURSOR_EXPIRED");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(
        crate::helpers::requests::violated_fields(&malformed),
        ["event_types[0]", "after_event_id"]
    );
}

async fn events_past_the_retention_are_pruned_and_their_cursor_is_then_out_of_range(
    backend: Backend,
) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(&app, tenant_watch()).await;
    app.token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let created = next_event(&mut stream).await;

    let pruned = app
        .store
        .prune_events(chrono::Utc::now() + chrono::Duration::seconds(1), 100)
        .await
        .expect("pruned");
    let after_pruned = app
        .admin_client()
        .await
        .watch_events(app.admin(proto::WatchEventsRequest {
            after_event_id: created.id.clone(),
            ..tenant_watch()
        }))
        .await
        .expect_err("the cursor's event is gone");

    // The owner's `principal.updated` and the token's `token.created`.
    assert_eq!(pruned, 2);
    assert_eq!(after_pruned.code(), Code::OutOfRange);
}

async fn a_retired_secret_presented_is_a_token_leaked_event(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(&app, tenant_watch()).await;
    let (token, old_secret) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    app.admin_client()
        .await
        .rotate_token(app.admin(proto::RotateTokenRequest {
            id: token.id.clone(),
            ..Default::default()
        }))
        .await
        .expect("rotated without grace");
    let answer = app
        .check(check_request(TENANT, &old_secret, "orders:read"))
        .await;

    let events = next_events(&mut stream, 3).await;
    assert_eq!(answer.reason(), DenyReason::TokenRevoked);
    assert_eq!(
        types(&events),
        ["token.created", "token.rotated", "token.leaked"]
    );
    assert_eq!(events[2].token_id, token.id);
    assert_eq!(text(&events[2], "leak.source"), "retired_secret");
}

async fn credits_low_is_sent_once_per_refill_period(backend: Backend) {
    let app = app_with_owner(backend).await;
    let mut stream = watch(
        &app,
        proto::WatchEventsRequest {
            event_types: vec!["credits.low".to_owned()],
            ..tenant_watch()
        },
    )
    .await;
    let metered = proto::CreateTokenRequest {
        credits: Some(proto::TokenCredits {
            remaining: 12,
            refill_amount: 100,
            refill_interval: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        }),
        ..new_token(TENANT, "alice", &["orders:read"])
    };
    let (token, secret) = app.token(metered).await;
    for _ in 0..8 {
        let answer = app
            .check(check_request(TENANT, &secret, "orders:read"))
            .await;
        assert!(answer.allowed, "{answer:?}");
    }

    let low = next_event(&mut stream).await;
    assert_eq!(low.token_id, token.id);
    // No second one in this period: the next event of the stream is the one from a later
    // refill period, and there is none; a revocation's event is not of this type either, so
    // the stream stays quiet past it.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
    assert!(quiet.is_err(), "a second credits.low arrived: {quiet:?}");
}

backend_tests!(
    every_change_writes_its_event_and_watch_events_streams_them_in_commit_order,
    a_change_that_fails_writes_no_event,
    a_watch_resumes_after_its_cursor_without_gaps_or_repeats,
    a_watch_filters_by_event_type,
    a_watch_sees_only_the_admin_keys_tenants,
    a_watch_ends_unauthenticated_once_its_admin_key_is_revoked,
    a_cursor_that_names_no_kept_event_is_out_of_range_and_a_malformed_one_invalid,
    events_past_the_retention_are_pruned_and_their_cursor_is_then_out_of_range,
    a_retired_secret_presented_is_a_token_leaked_event,
    credits_low_is_sent_once_per_refill_period,
);

/// Two replicas scanning for expiries on one Postgres announce each token's expiry once: the
/// one-day notice at creation (it expires within a day) and `token.expired` once it passed.
#[tokio::test]
async fn expiring_and_expired_tokens_are_announced_once_each_across_two_replicas() {
    let fast_scan = |settings: &mut tessera::config::Settings| {
        settings.event_expiry_scan_interval_ms = 50;
    };
    let app = spawn_app_with(Backend::Postgres, fast_scan).await;
    let replica = app.spawn_replica_with(fast_scan).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    let mut stream = watch(
        &app,
        proto::WatchEventsRequest {
            event_types: vec!["token.expiring".to_owned(), "token.expired".to_owned()],
            ..tenant_watch()
        },
    )
    .await;
    let (token, _) = app
        .token(proto::CreateTokenRequest {
            ttl: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            ..new_token(TENANT, "alice", &["orders:read"])
        })
        .await;

    let expiring = next_event(&mut stream).await;
    let expired = next_event(&mut stream).await;
    // Both replicas scan 20 times a second; a duplicate would arrive well within this.
    let quiet = tokio::time::timeout(Duration::from_secs(2), stream.next()).await;

    assert_eq!(expiring.r#type, "token.expiring");
    assert_eq!(text(&expiring, "expiry.notice"), "1d");
    assert_eq!(expired.r#type, "token.expired");
    assert_eq!(expired.token_id, token.id);
    assert!(quiet.is_err(), "a notice was sent twice: {quiet:?}");
    drop(replica);
}

/// A stream open at shutdown ends, so it does not hold the drain to its deadline (set here far
/// beyond the test's patience).
#[tokio::test]
async fn an_open_watch_ends_when_the_server_shuts_down() {
    let mut app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.drain_timeout_ms = 120_000;
    })
    .await;
    let mut stream = watch(&app, tenant_watch()).await;
    tokio::time::timeout(PATIENCE, app.stop())
        .await
        .expect("the server stopped before its drain deadline");
    let ended = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("the stream ended in time");
    assert!(
        !matches!(ended, Some(Ok(_))),
        "an event instead of the end: {ended:?}"
    );
}
