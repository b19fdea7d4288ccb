//! Redis lost, stuck and back: checks answer within the bound, limits fall back to each
//! replica's share, replay checks to the caller's guard, and everything is shared again once
//! Redis answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::*;
use crate::domain::signature::SignatureId;
use crate::fleet::ReplayVerdict;

/// Small against an outage (seconds), large enough that a loaded test machine does not trip
/// it while Redis is up.
const BOUND: Duration = Duration::from_millis(100);
/// What a shared two-core test machine may add to the bound before a call returns.
const SCHEDULING: Duration = Duration::from_millis(150);

fn bounded(redis: &RedisServer) -> FleetSettings {
    let mut settings = settings(on(redis));
    settings.command_timeout = BOUND;
    settings
}

/// Of `checks` checks of a limit of `limit`, how many each replica allows, one replica after
/// the other.
async fn allowed_one_after_the_other(fleets: &[Fleet], limit: u32, checks: u32) -> Vec<u32> {
    let key = token_key();
    let mut allowed = Vec::new();
    for fleet in fleets {
        let mut count = 0;
        for _ in 0..checks {
            if matches!(
                fleet.check(&key, per_minute(limit)).await,
                Verdict::Allowed { .. }
            ) {
                count += 1;
            }
        }
        allowed.push(count);
    }
    allowed
}

/// Checks on both replicas, a low and a high limit, until stopped: the longest call.
fn load(fleets: &[Fleet], stop: &Arc<AtomicBool>) -> JoinSet<Duration> {
    let mut tasks = JoinSet::new();
    for fleet in fleets {
        let (fleet, stop) = (fleet.clone(), stop.clone());
        tasks.spawn(async move {
            let (low, high) = (token_key(), token_key());
            let mut longest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                for (key, limit) in [(&low, 60), (&high, 600_000)] {
                    let started = Instant::now();
                    fleet.check(key, per_minute(limit)).await;
                    longest = longest.max(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            longest
        });
    }
    tasks
}

/// Stops the load and asserts its longest call.
async fn no_check_waited_beyond_the_bound(stop: &AtomicBool, mut tasks: JoinSet<Duration>) {
    stop.store(true, Ordering::Relaxed);
    let mut longest = Duration::ZERO;
    while let Some(task) = tasks.join_next().await {
        longest = longest.max(task.expect("load task"));
    }
    assert!(
        longest <= BOUND + SCHEDULING,
        "a check waited {longest:?} with a bound of {BOUND:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_degrades_limits_to_each_replicas_share_and_they_return_after_a_restart()
 {
    let mut redis = RedisServer::start();
    let fleets = replicas(|| bounded(&redis), 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&fleets, &stop);
    let token = TokenId::generate();
    let signature = SignatureId([3; 32]);
    let remember = Duration::from_secs(60);

    assert_eq!(allowed_one_after_the_other(&fleets, 10, 10).await, [10, 0]);

    redis.kill();
    wait_until(Duration::from_secs(5), "both replicas degraded", || {
        fleets.iter().all(|fleet| fleet.status().degraded)
    })
    .await;
    assert_eq!(
        allowed_one_after_the_other(&fleets, 10, 10).await,
        [5, 5],
        "each replica takes its share: 10 / 2 live replicas"
    );
    assert_eq!(
        fleets[0].first_use(&token, &signature, remember).await,
        ReplayVerdict::Unavailable
    );

    redis.restart();
    wait_until(Duration::from_secs(10), "both replicas recovered", || {
        fleets.iter().all(|fleet| !fleet.status().degraded)
    })
    .await;
    assert_eq!(allowed_one_after_the_other(&fleets, 10, 10).await, [10, 0]);
    assert_eq!(
        fleets[0].first_use(&token, &signature, remember).await,
        ReplayVerdict::First
    );
    assert_eq!(
        fleets[1].first_use(&token, &signature, remember).await,
        ReplayVerdict::Replayed
    );

    no_check_waited_beyond_the_bound(&stop, tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_costs_a_check_no_more_than_the_bound() {
    let redis = RedisServer::start();
    let fleets = replicas(|| bounded(&redis), 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&fleets, &stop);

    redis.pause();
    let token = TokenId::generate();
    for number in 0..20_u8 {
        let started = Instant::now();
        let verdict = fleets[usize::from(number % 2)]
            .first_use(&token, &SignatureId([number; 32]), Duration::from_secs(60))
            .await;
        let took = started.elapsed();
        assert!(took <= BOUND + SCHEDULING, "a replay check waited {took:?}");
        assert_eq!(verdict, ReplayVerdict::Unavailable);
    }
    assert!(fleets.iter().all(|fleet| fleet.status().degraded));

    redis.resume();
    wait_until(Duration::from_secs(10), "both replicas recovered", || {
        fleets.iter().all(|fleet| !fleet.status().degraded)
    })
    .await;
    assert_eq!(allowed_one_after_the_other(&fleets, 10, 10).await, [10, 0]);

    no_check_waited_beyond_the_bound(&stop, tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_started_without_redis_decides_locally_and_joins_when_redis_comes() {
    let mut redis = RedisServer::start();
    redis.kill();
    let fleet = Fleet::connect(bounded(&redis)).await.expect("connect");
    assert!(fleet.status().degraded);
    let key = token_key();
    assert!(matches!(
        fleet.check(&key, per_minute(1)).await,
        Verdict::Allowed { .. }
    ));
    redis.restart();
    wait_until(Duration::from_secs(10), "the fleet recovered", || {
        !fleet.status().degraded
    })
    .await;
    let fresh = token_key();
    assert!(matches!(
        fleet.check(&fresh, per_minute(1)).await,
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        fleet.check(&fresh, per_minute(1)).await,
        Verdict::Limited { .. }
    ));
}
