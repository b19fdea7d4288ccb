//! Shared limits: the fleet admits what one limiter would, and nearly all of it under demand.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_ten_is_ten_however_many_replicas_serve_the_token() {
    let redis = RedisServer::start();
    for count in [2, 3] {
        let fleets = replicas(|| settings(on(&redis)), count).await;
        let allowed = allowed_in_turn(&fleets, &token_key(), 10, 12).await;
        assert_eq!(
            allowed.iter().sum::<u32>(),
            10,
            "{count} replicas allowed {allowed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_count_down_the_shared_budget_as_one_limiter_does() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 2).await;
    let key = token_key();
    let mut remaining = Vec::new();
    for fleet in fleets.iter().cycle().take(3) {
        match fleet.check(&key, per_minute(3)).await {
            Verdict::Allowed {
                remaining: left,
                reset,
            } => {
                assert!(reset <= Duration::from_secs(60), "{reset:?}");
                remaining.push(left);
            }
            limited => panic!("the burst was refused: {limited:?}"),
        }
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    let Verdict::Limited { reset } = fleets[1].check(&key, per_minute(3)).await else {
        panic!("a fourth request within the burst's minute was allowed");
    };
    assert!(
        (Duration::from_secs(19)..=Duration::from_secs(20)).contains(&reset),
        "one request of 3/min is 20 s of budget: {reset:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hammering_a_low_limit_admit_no_more_than_one_limiter_and_nearly_all_it_would() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 3).await;
    let (key, limit) = (token_key(), per_minute(120));
    let start = Instant::now();
    let until = start + Duration::from_millis(2500);
    let mut clients = JoinSet::new();
    for fleet in &fleets {
        client(&mut clients, fleet, &key, limit, until, None);
    }
    let all = gather(clients).await;
    assert_admitted_as_one_limiter_under_demand(&all, limit, start, until);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_mixed_rates_on_a_high_limit_admit_no_more_than_one_limiter_and_nearly_all_it_would()
 {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 3).await;
    let rate = 500;
    let (key, limit) = (token_key(), per_minute(rate * 60));
    let mut all = Admissions::default();
    let start = Instant::now();
    // The burst first, from one replica, so that what follows measures the steady rate.
    let give_up = start + Duration::from_secs(5);
    while all.check(&fleets[0], &key, limit).await && Instant::now() < give_up {}
    let steady_from = Instant::now();
    let until = steady_from + Duration::from_millis(2500);
    let mut clients = JoinSet::new();
    // Replica 0: two clients as fast as they can go.
    for _ in 0..2 {
        client(&mut clients, &fleets[0], &key, limit, until, None);
    }
    // Replica 1: a steady client, about one check a millisecond.
    let steady_pause = Some(Duration::from_millis(1));
    client(&mut clients, &fleets[1], &key, limit, until, steady_pause);
    // Replica 2: bursts of 2,000 checks, 300 ms apart.
    let (fleet, bursty_key) = (fleets[2].clone(), key.clone());
    clients.spawn(async move {
        let mut admissions = Admissions::default();
        while Instant::now() < until {
            for _ in 0..2_000 {
                admissions.check(&fleet, &bursty_key, limit).await;
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        admissions
    });
    all.merge(gather(clients).await);
    assert_admitted_as_one_limiter_under_demand(&all, limit, start, until);
    let steady = all.count_between(steady_from, until) as f64;
    let steady_most = (until - steady_from).as_secs_f64() * f64::from(rate);
    assert!(
        steady >= 0.9 * steady_most,
        "{steady} admitted at the steady rate of at most {steady_most:.0} ({} refused)",
        all.refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_within_their_limit_are_never_refused_on_any_replica() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 2).await;
    // 100 a second, leased; the two clients together ask for about 80 a second.
    let (key, limit) = (token_key(), per_minute(6_000));
    let until = Instant::now() + Duration::from_secs(2);
    let mut clients = JoinSet::new();
    for fleet in &fleets {
        let pause = Some(Duration::from_millis(25));
        client(&mut clients, fleet, &key, limit, until, pause);
    }
    let all = gather(clients).await;
    assert_eq!(all.refused, 0, "{} allowed", all.times.len());
    assert!(all.times.len() > 100, "{} checks", all.times.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_limit_costs_far_fewer_round_trips_than_checks() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 1).await;
    let (key, limit) = (token_key(), per_minute(600_000));
    let before = script_calls(&redis);
    let checks = 20_000;
    for _ in 0..checks {
        assert!(
            matches!(fleets[0].check(&key, limit).await, Verdict::Allowed { .. }),
            "refused within the burst"
        );
    }
    let trips = script_calls(&redis) - before;
    assert!(
        trips <= checks / 20,
        "{trips} scripts ran for {checks} checks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_limit_applies_within_one_interval_of_the_new_limit() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 2).await;
    let key = token_key();
    for _ in 0..2 {
        assert!(matches!(
            fleets[0].check(&key, per_minute(2)).await,
            Verdict::Allowed { .. }
        ));
    }
    assert!(matches!(
        fleets[0].check(&key, per_minute(2)).await,
        Verdict::Limited { .. }
    ));
    // The whole burst is in use; at 6,000 a minute one request is 10 ms of it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(matches!(
        fleets[1].check(&key, per_minute(6_000)).await,
        Verdict::Allowed { .. }
    ));
}

/// Scripts Redis has run (each a round trip), heartbeats included.
fn script_calls(redis: &RedisServer) -> u64 {
    redis
        .cli(&["info", "commandstats"])
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split(['=', ',']).nth(1)?.parse::<u64>().ok())
        .sum()
}
