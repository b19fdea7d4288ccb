//! The usage half of the store contract, on both backends: flushes written once, endpoint
//! bounds, reads, pruning and the count of tokens needing attention.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tessera::domain::model::Token;
use tessera::domain::usage::{
    CheckedCalls, EndpointBound, LastUse, MinuteCount, OTHER_ENDPOINT, ReportCount, ReportedCalls,
    UsageBatch, UsageFigures, UsageQuery, UsageScope, day_of, minute_of,
};
use tessera::store::{Store, TokensNeedingAttention, UsageCutoffs};

use super::{audit, create, create_for, new_token, now, owner};

/// `calls` checks of each endpoint by `token` in the current minute.
fn checked_batch(token: &Token, endpoints: &[String], calls: u64) -> UsageBatch {
    checked_batch_at(token, endpoints, calls, now())
}

/// `calls` checks of each endpoint by `token` in the minute of `at`, last used at `at`.
fn checked_batch_at(
    token: &Token,
    endpoints: &[String],
    calls: u64,
    at: DateTime<Utc>,
) -> UsageBatch {
    UsageBatch {
        checked: vec![CheckedCalls {
            token_id: token.id.clone(),
            rotated_at: None,
            minutes: endpoints
                .iter()
                .map(|endpoint| MinuteCount {
                    minute: minute_of(at),
                    endpoint: endpoint.clone(),
                    calls,
                    allowed: calls,
                })
                .collect(),
            recent: Vec::new(),
            last_use: LastUse {
                time: at,
                client_ip: None,
                user_agent: String::new(),
            },
        }],
        ..UsageBatch::default()
    }
}

async fn usage_of(store: &Arc<dyn Store>, token: &Token) -> UsageFigures {
    let at = now();
    store
        .read_usage(&UsageQuery {
            scope: UsageScope::Token(token.id.clone()),
            recent_since: at - Duration::hours(24),
            daily_since: day_of(at),
        })
        .await
        .expect("usage read")
}

fn endpoints(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix} /{n:04}")).collect()
}

pub(super) async fn a_usage_flush_written_twice_is_counted_once(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let token = create_for(&store, &owner).await;
    let mut batch = checked_batch(&token, &["GET /orders".to_owned()], 3);
    batch.reported = vec![ReportedCalls {
        token_id: token.id.clone(),
        days: vec![ReportCount {
            day: day_of(now()),
            endpoint: "GET /orders".to_owned(),
            reports: 2,
            successes: 1,
            duration_micros: 5_000,
            latest: now(),
        }],
    }];

    // The retry of a flush whose COMMIT went through but whose reply was lost.
    store.write_usage(&batch).await.expect("first write");
    store.write_usage(&batch).await.expect("retried write");

    let figures = usage_of(&store, &token).await;
    assert_eq!(figures.totals.calls, 3);
    assert_eq!(figures.calls_since_recent, 3);
    assert_eq!(figures.totals.reports, 2);

    // Another flush (another id) with the same content does add.
    let next = UsageBatch {
        flush_id: Default::default(),
        ..batch
    };
    store.write_usage(&next).await.expect("next flush");
    assert_eq!(usage_of(&store, &token).await.totals.calls, 6);
}

pub(super) async fn a_tokens_distinct_endpoints_per_day_stop_at_the_bound_and_the_rest_count_as_other(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let token = create_for(&store, &owner).await;
    let bound = EndpointBound::new(4).expect("bound");
    let mut first = checked_batch(&token, &endpoints("GET", 1000), 1);
    first.endpoints_per_day = bound;
    store.write_usage(&first).await.expect("first flush");

    let figures = usage_of(&store, &token).await;
    assert_eq!(figures.totals.calls, 1000, "every call is still counted");
    let mut top = figures.top_endpoints.clone();
    top.sort();
    let mut expected: Vec<(String, u64)> = endpoints("GET", 4)
        .into_iter()
        .map(|endpoint| (endpoint, 1))
        .collect();
    expected.push((OTHER_ENDPOINT.to_owned(), 996));
    expected.sort();
    assert_eq!(top, expected, "four endpoints of their own, then `other`");

    // A later flush (another replica's, say) adds to the endpoints held and to `other` only.
    let mut held_and_new = endpoints("GET", 2);
    held_and_new.extend(endpoints("POST", 50));
    let mut second = checked_batch(&token, &held_and_new, 1);
    second.endpoints_per_day = bound;
    store.write_usage(&second).await.expect("second flush");

    let figures = usage_of(&store, &token).await;
    assert_eq!(figures.totals.calls, 1052);
    assert_eq!(
        figures.top_endpoints.len(),
        5,
        "{:?}",
        figures.top_endpoints
    );
    assert_eq!(
        figures.top_endpoints[0],
        (OTHER_ENDPOINT.to_owned(), 1046),
        "{:?}",
        figures.top_endpoints
    );
}

pub(super) async fn pruning_forgets_flush_ids_older_than_the_retention(store: Arc<dyn Store>) {
    let owner = owner(&store, "acme", "alice").await;
    let token = create_for(&store, &owner).await;
    let batch = checked_batch(&token, &["GET /orders".to_owned()], 1);
    store.write_usage(&batch).await.expect("written");
    let in_the_future = now() + Duration::minutes(1);
    let cutoffs = UsageCutoffs {
        minutes_before: in_the_future,
        days_before: now() - Duration::days(400),
    };
    let deleted = store.prune_usage(&cutoffs, 1000).await.expect("pruned");
    // The minute row and the flush id.
    assert_eq!(deleted, 2);
    // Its id forgotten, the same batch would now be written again.
    store.write_usage(&batch).await.expect("written again");
    assert_eq!(usage_of(&store, &token).await.totals.calls, 2);
}

pub(super) async fn pruning_deletes_minutes_beyond_the_retention_window_in_small_batches(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let token = create_for(&store, &owner).await;
    let now = now();
    for minutes_ago in [8 * 24 * 60, 8 * 24 * 60 + 1, 8 * 24 * 60 + 2, 60] {
        let at = now - Duration::minutes(minutes_ago);
        let batch = checked_batch_at(&token, &["GET /old".to_owned()], 1, at);
        store.write_usage(&batch).await.expect("usage written");
    }
    let cutoffs = UsageCutoffs {
        minutes_before: now - Duration::days(7),
        days_before: now - Duration::days(366),
    };

    let mut rounds = Vec::new();
    loop {
        let deleted = store.prune_usage(&cutoffs, 1).await.expect("pruned");
        rounds.push(deleted);
        if deleted == 0 {
            break;
        }
    }

    assert_eq!(rounds, [1, 1, 1, 0], "one old minute row per round");
    let all_minutes = store
        .read_usage(&UsageQuery {
            scope: UsageScope::Token(token.id.clone()),
            recent_since: now - Duration::days(30),
            daily_since: now - Duration::days(30),
        })
        .await
        .expect("read");
    assert_eq!(all_minutes.calls_since_recent, 1, "the recent minute stays");
    assert_eq!(all_minutes.totals.calls, 4, "daily rollups stay a year");
}

pub(super) async fn the_tokens_needing_attention_are_the_live_ones_expiring_soon_or_unused(
    store: Arc<dyn Store>,
) {
    let owner = owner(&store, "acme", "alice").await;
    let now = now();
    let used = create_for(&store, &owner).await;
    let used_now = checked_batch_at(&used, &["GET /orders".to_owned()], 1, now);
    store.write_usage(&used_now).await.expect("usage written");
    let mut expiring = new_token(&owner, now);
    expiring.token.expires_at = now + Duration::days(3);
    create(&store, &expiring).await;
    // Neither a revoked nor an expired token needs attention, however unused or close to expiry.
    let mut revoked = new_token(&owner, now);
    revoked.token.expires_at = now + Duration::days(3);
    let revoked = create(&store, &revoked).await;
    store
        .revoke_token(&revoked.id, now, &audit("token.revoke", "acme"))
        .await
        .expect("revoked");
    let mut expired = new_token(&owner, now - Duration::days(2));
    expired.token.expires_at = now - Duration::hours(1);
    create(&store, &expired).await;

    let counts = store
        .count_tokens_needing_attention(now, now + Duration::days(7), now - Duration::hours(1))
        .await
        .expect("counted");

    assert_eq!(
        counts,
        TokensNeedingAttention {
            expiring: 1,
            unused: 1,
        }
    );
}
