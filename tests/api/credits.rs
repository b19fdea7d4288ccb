//! Usage credits (issue 16): every allowed Check spends its cost of a metered token's balance,
//! never more than granted however many replicas serve the token (and with Redis configured
//! too), from leases each replica takes from the store; unspent leases come back after their
//! idle lifetime, on a write of the token and at a graceful shutdown, so a restart loses and
//! repeats nothing and a crash loses at most one lease; refills are lazy; AddCredits is an
//! atomic increment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost_types::FieldMask;
use secrecy::SecretString;
use tessera::authz::leases::{LEASE_IDLE, MAX_LEASE};
use tessera::proto;
use tessera::proto::DenyReason;
use tonic::Code;

use crate::backend_tests;
use crate::helpers::redis::RedisServer;
use crate::helpers::requests::{assert_reason, check_request, violated_fields};
use crate::helpers::{Backend, TestApp, new_token, spawn_app_on, spawn_app_with};

const TENANT: &str = "acme";

async fn app_with_alice(backend: Backend) -> TestApp {
    let app = spawn_app_on(backend).await;
    app.principal(TENANT, "alice", &["orders:*"]).await;
    app
}

fn credits(remaining: u64) -> proto::TokenCredits {
    proto::TokenCredits {
        remaining,
        ..Default::default()
    }
}

fn refilled(remaining: u64, amount: u64, every: Duration) -> proto::TokenCredits {
    proto::TokenCredits {
        remaining,
        refill_amount: amount,
        refill_interval: Some(every.try_into().expect("duration")),
        refilled_at: None,
    }
}

/// A token of alice's that may read orders, with `credits`; the token and its secret.
async fn metered(app: &TestApp, credits: proto::TokenCredits) -> (proto::Token, String) {
    let mut request = new_token(TENANT, "alice", &["orders:read"]);
    request.credits = Some(credits);
    // The rate limit is not what these tests are about.
    request.rate_limit_per_minute = 1_000_000;
    app.token(request).await
}

fn costing(secret: &str, cost: Option<u32>) -> proto::CheckRequest {
    proto::CheckRequest {
        cost,
        ..check_request(TENANT, secret, "orders:read")
    }
}

async fn remaining(app: &TestApp, id: &str) -> Option<u64> {
    let token = app
        .admin_client()
        .await
        .get_token(app.admin(proto::GetTokenRequest { id: id.to_owned() }))
        .await
        .expect("token read")
        .into_inner()
        .token
        .expect("token");
    token.credits.map(|credits| credits.remaining)
}

async fn a_check_spends_its_cost_and_too_few_credits_deny_429_spending_nothing(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (token, secret) = metered(&app, credits(5)).await;
    assert_eq!(token.credits.as_ref().map(|c| c.remaining), Some(5));

    let one = app.check(costing(&secret, None)).await;
    assert!(one.allowed, "{one:?}");
    assert_eq!(one.credits_remaining, Some(4), "an unset cost is 1");
    let three = app.check(costing(&secret, Some(3))).await;
    assert!(three.allowed, "{three:?}");
    assert_eq!(three.credits_remaining, Some(1));

    let too_dear = app.check(costing(&secret, Some(2))).await;
    assert!(!too_dear.allowed);
    assert_eq!(too_dear.reason(), DenyReason::CreditsExhausted);
    assert_eq!(too_dear.http_status, 429);
    assert_eq!(too_dear.credits_remaining, Some(1), "nothing was spent");

    let free = app.check(costing(&secret, Some(0))).await;
    assert!(free.allowed, "a cost of 0 is free: {free:?}");
    assert_eq!(free.credits_remaining, Some(1));
    let last = app.check(costing(&secret, Some(1))).await;
    assert!(last.allowed, "the last credit is spendable: {last:?}");
    assert_eq!(last.credits_remaining, Some(0));
    let none_left = app.check(costing(&secret, None)).await;
    assert_eq!(none_left.reason(), DenyReason::CreditsExhausted);
    assert_eq!(remaining(&app, &token.id).await, Some(0));
}

async fn a_check_denied_for_another_reason_spends_no_credit(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (token, secret) = metered(&app, credits(3)).await;
    let denied = app
        .check(check_request(TENANT, &secret, "orders:write"))
        .await;
    assert_eq!(denied.reason(), DenyReason::PermissionDenied);
    assert_eq!(
        denied.credits_remaining, None,
        "the balance was not reached"
    );
    assert_eq!(remaining(&app, &token.id).await, Some(3));

    // A token without credits is not metered at all.
    let (_, plain) = app
        .token(new_token(TENANT, "alice", &["orders:read"]))
        .await;
    let unmetered = app.check(costing(&plain, Some(1_000_000))).await;
    assert!(unmetered.allowed, "{unmetered:?}");
    assert_eq!(unmetered.credits_remaining, None);
}

async fn add_credits_adds_and_update_replaces_or_removes_the_credits(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (token, secret) = metered(&app, credits(1)).await;
    assert!(app.check(costing(&secret, None)).await.allowed);
    let mut admin = app.admin_client().await;
    let added = admin
        .add_credits(app.admin(proto::AddCreditsRequest {
            id: token.id.clone(),
            amount: 10,
        }))
        .await
        .expect("credits added")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(added.credits.map(|c| c.remaining), Some(10));
    assert_ne!(added.etag, token.etag, "an addition is a new version");
    let after_add = app.check(costing(&secret, Some(4))).await;
    assert_eq!(after_add.credits_remaining, Some(6));

    let update = |credits: Option<proto::TokenCredits>| proto::UpdateTokenRequest {
        id: token.id.clone(),
        credits,
        update_mask: Some(FieldMask {
            paths: vec!["credits".to_owned()],
        }),
        ..Default::default()
    };
    let replaced = admin
        .update_token(app.admin(update(Some(credits(2)))))
        .await
        .expect("credits replaced")
        .into_inner()
        .token
        .expect("token");
    assert_eq!(replaced.credits.map(|c| c.remaining), Some(2));
    assert_eq!(
        app.check(costing(&secret, None)).await.credits_remaining,
        Some(1)
    );

    admin
        .update_token(app.admin(update(None)))
        .await
        .expect("credits removed");
    assert_eq!(remaining(&app, &token.id).await, None);
    let unmetered = app.check(costing(&secret, Some(50))).await;
    assert!(unmetered.allowed, "{unmetered:?}");
    assert_eq!(unmetered.credits_remaining, None);
    let refused = admin
        .add_credits(app.admin(proto::AddCreditsRequest {
            id: token.id.clone(),
            amount: 1,
        }))
        .await
        .expect_err("nothing to add to");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_reason(&refused, "TOKEN_HAS_NO_CREDITS");
}

async fn a_refill_tops_the_balance_up_to_its_amount_after_each_interval(backend: Backend) {
    let app = app_with_alice(backend).await;
    let (token, secret) = metered(&app, refilled(1, 3, Duration::from_secs(1))).await;
    let shown = token.credits.expect("credits");
    assert_eq!(shown.refill_amount, 3);
    assert_eq!(shown.refill_interval.map(|every| every.seconds), Some(1));
    assert!(app.check(costing(&secret, None)).await.allowed);
    assert_eq!(
        app.check(costing(&secret, None)).await.reason(),
        DenyReason::CreditsExhausted
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    // Topped up to 3, not 3 on top: three checks pass, the fourth does not (unless another
    // interval passed in between, which a loaded machine may cause: then it is refilled again).
    let mut allowed = 0;
    let started = std::time::Instant::now();
    while app.check(costing(&secret, None)).await.allowed {
        allowed += 1;
    }
    let intervals = started.elapsed().as_secs() + 1;
    assert!(
        allowed >= 3 && allowed <= 3 * intervals,
        "{allowed} allowed over {intervals} intervals"
    );
}

async fn bad_credits_and_costs_are_refused_naming_the_field_and_nothing_is_written(
    backend: Backend,
) {
    let app = app_with_alice(backend).await;
    let mut admin = app.admin_client().await;
    let cases = [
        (
            refilled(1, 1, Duration::from_millis(500)),
            "credits.refill_interval",
        ),
        (credits(1_000_000_000_000_001), "credits.remaining"),
        (
            refilled(1, 1_000_000_000_000_001, Duration::from_secs(60)),
            "credits.refill_amount",
        ),
        (
            proto::TokenCredits {
                remaining: 1,
                refill_amount: 5,
                ..Default::default()
            },
            "credits.refill_interval",
        ),
    ];
    for (credits, field) in cases {
        let mut request = new_token(TENANT, "alice", &["orders:read"]);
        request.credits = Some(credits);
        let status = admin
            .create_token(app.admin(request))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), vec![field]);
    }
    let listed = admin
        .list_tokens(app.admin(proto::ListTokensRequest {
            tenant: TENANT.to_owned(),
            ..Default::default()
        }))
        .await
        .expect("listed")
        .into_inner();
    assert!(listed.tokens.is_empty(), "{:?}", listed.tokens);

    let (token, secret) = metered(&app, credits(5)).await;
    let status = app
        .authz_client()
        .await
        .check(costing(&secret, Some(1_000_001)))
        .await
        .expect_err("refused");
    assert_eq!(violated_fields(&status), vec!["cost"]);
    let status = admin
        .add_credits(app.admin(proto::AddCreditsRequest {
            id: token.id.clone(),
            amount: 0,
        }))
        .await
        .expect_err("refused");
    assert_eq!(violated_fields(&status), vec!["amount"]);
    assert_eq!(remaining(&app, &token.id).await, Some(5));
}

backend_tests!(
    a_check_spends_its_cost_and_too_few_credits_deny_429_spending_nothing,
    a_check_denied_for_another_reason_spends_no_credit,
    add_credits_adds_and_update_replaces_or_removes_the_credits,
    a_refill_tops_the_balance_up_to_its_amount_after_each_interval,
    bad_credits_and_costs_are_refused_naming_the_field_and_nothing_is_written,
);

/// Checks of `secret` from `workers` concurrent clients on each replica until each has seen
/// `CREDITS_EXHAUSTED` `enough` times in a row; how many were allowed in all.
async fn hammer(fleet: &[&TestApp], secret: &str, workers: usize, enough: u32) -> u64 {
    let allowed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for app in fleet {
        for _ in 0..workers {
            let mut client = app.authz_client().await;
            let secret = secret.to_owned();
            let allowed = allowed.clone();
            tasks.push(tokio::spawn(async move {
                let mut denied_in_a_row = 0;
                while denied_in_a_row < enough {
                    let response = client
                        .check(costing(&secret, None))
                        .await
                        .expect("check answers")
                        .into_inner();
                    if response.allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                        denied_in_a_row = 0;
                    } else {
                        assert_eq!(
                            response.reason(),
                            DenyReason::CreditsExhausted,
                            "{response:?}"
                        );
                        denied_in_a_row += 1;
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("worker");
    }
    allowed.load(Ordering::Relaxed)
}

/// Two replicas on one Postgres (with `settings`), alice in it.
async fn two_replicas(customize: impl FnOnce(&mut tessera::config::Settings)) -> Vec<TestApp> {
    let first = spawn_app_with(Backend::Postgres, customize).await;
    first.principal(TENANT, "alice", &["orders:*"]).await;
    let second = first.spawn_replica().await;
    vec![first, second]
}

/// Both replicas hammer the token while an admin adds credits on one of them: every credit
/// granted is spent, none twice, none stranded.
async fn exactly_the_granted_credits_are_allowed_across(fleet: &[TestApp]) {
    let (token, secret) = metered(&fleet[0], credits(300)).await;
    let adder = {
        let app_admin = fleet[1].admin_client().await;
        let request = fleet[1].admin(proto::AddCreditsRequest {
            id: token.id.clone(),
            amount: 100,
        });
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut admin = app_admin;
            admin.add_credits(request).await.expect("credits added");
        })
    };
    let replicas: Vec<&TestApp> = fleet.iter().collect();
    let mut allowed = hammer(&replicas, &secret, 4, 3).await;
    adder.await.expect("adder");
    // The addition may have landed after every worker had stopped, and a replica's lease may
    // have been given back after the other's workers stopped: once every lease is back (their
    // idle lifetime), spend what is left.
    tokio::time::sleep(LEASE_IDLE * 3).await;
    allowed += hammer(&replicas, &secret, 2, 2).await;
    assert_eq!(allowed, 400, "300 granted and 100 added");
    assert_eq!(remaining(&fleet[0], &token.id).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_allow_exactly_the_credits_granted_between_them() {
    let fleet = two_replicas(|_| {}).await;
    exactly_the_granted_credits_are_allowed_across(&fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_allow_exactly_the_credits_granted_between_them() {
    let redis = RedisServer::start();
    let url = redis.url();
    let fleet = two_replicas(move |settings| {
        settings.redis_url = Some(SecretString::from(url));
        settings.redis_timeout_ms = 1_000;
    })
    .await;
    assert!(fleet[0].authorizer.shared_state().is_some(), "on Redis");
    exactly_the_granted_credits_are_allowed_across(&fleet).await;
}

#[tokio::test]
async fn a_restart_neither_loses_nor_repeats_a_spent_credit() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut app = app_with_alice(backend).await;
        let (token, secret) = metered(&app, credits(5)).await;
        for _ in 0..3 {
            assert!(app.check(costing(&secret, None)).await.allowed);
        }
        app.stop().await;
        let restarted = app.spawn_replica().await;
        assert_eq!(
            remaining(&restarted, &token.id).await,
            Some(2),
            "{backend:?}"
        );
        let replicas = [&restarted];
        assert_eq!(hammer(&replicas, &secret, 1, 1).await, 2, "{backend:?}");
    }
}

/// Spends five credits of 2,000 on `app`: the first exactly, the next from a lease.
/// The stored balance after them.
async fn five_checks_leasing(app: &TestApp, secret: &str, id: &str) -> u64 {
    for _ in 0..5 {
        assert!(app.check(costing(secret, None)).await.allowed);
    }
    let stored = remaining(app, id).await.expect("credits");
    let spent = 5;
    assert!(
        stored < 2_000 - spent && 2_000 - spent - stored < MAX_LEASE,
        "a lease of fewer than {MAX_LEASE} is out: {stored} stored after {spent} spent"
    );
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_leased_by_one_replica_are_spendable_from_the_other_after_the_lease_lifetime() {
    let fleet = two_replicas(|_| {}).await;
    let (token, secret) = metered(&fleet[0], credits(2_000)).await;
    five_checks_leasing(&fleet[0], &secret, &token.id).await;
    tokio::time::sleep(LEASE_IDLE * 3).await;
    assert_eq!(
        remaining(&fleet[1], &token.id).await,
        Some(1_995),
        "the idle lease came back whole"
    );
    assert_eq!(hammer(&[&fleet[1]], &secret, 2, 2).await, 1_995);
    assert_eq!(remaining(&fleet[0], &token.id).await, Some(0));
}

#[tokio::test]
async fn a_graceful_restart_gives_back_the_leased_credits() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut app = app_with_alice(backend).await;
        let (token, secret) = metered(&app, credits(2_000)).await;
        five_checks_leasing(&app, &secret, &token.id).await;
        app.stop().await;
        let restarted = app.spawn_replica().await;
        assert_eq!(
            remaining(&restarted, &token.id).await,
            Some(1_995),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_crash_loses_at_most_the_unspent_lease_and_never_repeats_a_spent_credit() {
    let mut app = app_with_alice(Backend::Postgres).await;
    let (token, secret) = metered(&app, credits(2_000)).await;
    let stored = five_checks_leasing(&app, &secret, &token.id).await;
    app.crash().await;
    let restarted = app.spawn_replica().await;
    assert_eq!(
        remaining(&restarted, &token.id).await,
        Some(stored),
        "the lease is lost, fewer than {MAX_LEASE}; the spent credits stay spent"
    );
    assert_eq!(hammer(&[&restarted], &secret, 1, 1).await, stored);
}
