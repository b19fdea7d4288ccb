//! The fleet against real Redis servers (`server`): several `Fleet` handles in one process act
//! as replicas. What is tested is what the fleet promises — one limiter's worth of admissions
//! however the replicas share the traffic, one first use per signature, checks bounded and
//! answered through an outage — not how it is done.

mod cluster;
mod endpoint;
mod limits;
mod outage;
mod replay;
mod server;
mod tls;

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::task::JoinSet;

use super::{Fleet, FleetSettings, LimitKey, RedisEndpoint, Verdict};
use crate::domain::fields::TokenId;
use server::RedisServer;

/// Settings for the tests of the guarantees: a bound generous enough that a loaded test machine
/// does not degrade them (the bound itself is tested in `outage`); heartbeats often, so
/// replicas see each other quickly.
fn settings(endpoint: RedisEndpoint) -> FleetSettings {
    let mut settings = FleetSettings::new(endpoint);
    settings.command_timeout = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_secs(1);
    settings.heartbeat_interval = Duration::from_millis(100);
    settings.probe_interval = Duration::from_millis(100);
    settings
}

fn on(redis: &RedisServer) -> RedisEndpoint {
    RedisEndpoint::Server(SecretString::from(redis.url()))
}

/// `count` replicas, each counting all of them live.
async fn replicas(settings: impl Fn() -> FleetSettings, count: u32) -> Vec<Fleet> {
    let mut fleets = Vec::new();
    for _ in 0..count {
        fleets.push(Fleet::connect(settings()).await.expect("connect"));
    }
    wait_until(
        Duration::from_secs(10),
        "every replica sees the others",
        || {
            fleets.iter().all(|fleet| {
                let status = fleet.status();
                !status.degraded && status.live_replicas == count
            })
        },
    )
    .await;
    fleets
}

async fn wait_until(limit: Duration, what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn per_minute(limit: u32) -> NonZeroU32 {
    NonZeroU32::new(limit).expect("a limit above zero")
}

fn token_key() -> LimitKey {
    LimitKey::token(&TokenId::generate())
}

/// Of `rounds` checks of `key` on each replica in turn, how many each allowed.
async fn allowed_in_turn(fleets: &[Fleet], key: &LimitKey, limit: u32, rounds: u32) -> Vec<u32> {
    let mut allowed = vec![0; fleets.len()];
    for _ in 0..rounds {
        for (replica, fleet) in fleets.iter().enumerate() {
            if matches!(
                fleet.check(key, per_minute(limit)).await,
                Verdict::Allowed { .. }
            ) {
                allowed[replica] += 1;
            }
        }
    }
    allowed
}

/// Allowed checks as measured around the calls.
#[derive(Debug, Default)]
struct Admissions {
    /// When each allowed call returned.
    times: Vec<Instant>,
    /// The longest allowed call: a real admission lies at most this long before its time here.
    slack: Duration,
    refused: u64,
}

impl Admissions {
    async fn check(&mut self, fleet: &Fleet, key: &LimitKey, limit: NonZeroU32) -> bool {
        let before = Instant::now();
        let verdict = fleet.check(key, limit).await;
        let after = Instant::now();
        match verdict {
            Verdict::Allowed { .. } => {
                self.times.push(after);
                self.slack = self.slack.max(after - before);
                true
            }
            Verdict::Limited { .. } => {
                self.refused += 1;
                false
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.times.extend(other.times);
        self.slack = self.slack.max(other.slack);
        self.refused += other.refused;
    }

    fn count_between(&self, start: Instant, end: Instant) -> usize {
        self.times
            .iter()
            .filter(|time| (start..=end).contains(*time))
            .count()
    }
}

/// One client of `fleet` checking `key` until `until`: with no `pause`, as fast as it can
/// (yielding between checks, so the replicas' own tasks run); else one check per `pause`.
fn client(
    clients: &mut JoinSet<Admissions>,
    fleet: &Fleet,
    key: &LimitKey,
    limit: NonZeroU32,
    until: Instant,
    pause: Option<Duration>,
) {
    let (fleet, key) = (fleet.clone(), key.clone());
    clients.spawn(async move {
        let mut admissions = Admissions::default();
        while Instant::now() < until {
            admissions.check(&fleet, &key, limit).await;
            match pause {
                Some(pause) => tokio::time::sleep(pause).await,
                None => tokio::task::yield_now().await,
            }
        }
        admissions
    });
}

/// Every client's admissions together.
async fn gather(mut clients: JoinSet<Admissions>) -> Admissions {
    let mut all = Admissions::default();
    while let Some(admissions) = clients.join_next().await {
        all.merge(admissions.expect("client task"));
    }
    all
}

/// Panics unless one GCRA of `per_minute` (burst `per_minute`) could have admitted every one
/// of `times`, each of which may trail its real admission by up to `slack`. Checked as a
/// virtual scheduler, which is the same as checking every window: in any interval of length
/// w at most `per_minute + w ÷ (60 s / per_minute)` admissions.
fn assert_one_limiter_could_admit(times: &[Instant], per_minute: u32, slack: Duration) {
    let mut times = times.to_vec();
    times.sort();
    let Some(&first) = times.first() else {
        return;
    };
    let interval = 60.0 / f64::from(per_minute);
    let budget = 60.0 + slack.as_secs_f64();
    let mut theoretical_arrival = 0.0_f64;
    for (index, time) in times.iter().enumerate() {
        let at = (*time - first).as_secs_f64();
        theoretical_arrival = theoretical_arrival.max(at) + interval;
        let in_use = theoretical_arrival - at;
        assert!(
            in_use <= budget + 1e-9,
            "admission {index} of {} at {at:.6} s is more than one limiter of {per_minute}/min \
             admits ({in_use:.4} s of its 60 s burst in use, slack {slack:?})",
            times.len()
        );
    }
}

/// The longest a measured admission may trail the real one before the window test loses its
/// meaning (a lease of the leased limits tested is far larger than the units this adds).
const MAX_SLACK: Duration = Duration::from_millis(250);

/// What the fleet promises under demand beyond the limit from `start` to `until`: never more
/// than one limiter would admit, and at least 90% of the most it could.
fn assert_admitted_as_one_limiter_under_demand(
    all: &Admissions,
    limit: NonZeroU32,
    start: Instant,
    until: Instant,
) {
    assert!(all.slack < MAX_SLACK, "calls took up to {:?}", all.slack);
    assert_one_limiter_could_admit(&all.times, limit.get(), all.slack);
    let most = most_one_limiter_admits(limit.get(), start, until);
    assert!(
        all.times.len() as f64 >= 0.9 * most,
        "{} admitted of at most {most:.0} ({} refused)",
        all.times.len(),
        all.refused
    );
    assert!(all.refused > 0, "the demand never exceeded the limit");
}

/// The most one GCRA of `per_minute` admits between `start` and `end` under unbroken demand.
fn most_one_limiter_admits(per_minute: u32, start: Instant, end: Instant) -> f64 {
    f64::from(per_minute) + (end - start).as_secs_f64() * f64::from(per_minute) / 60.0
}
