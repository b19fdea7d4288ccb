//! What the fleet's shared limits cost a Check's rate-limit step (`authz::rate_limit`), in
//! process, against the same step with the per-replica limiters a server uses without Redis:
//! a high limit (leased: spent locally) and a limit of 60 a minute (one Lua script on Redis per
//! check); and, printed before the timings, the over-admission of a burst across three
//! replicas (the target is zero).
//!
//! Needs a Redis: TESSERA_BENCH_REDIS_URL, default redis://127.0.0.1:6379 (keys under a prefix
//! of their own).
//!
//! cargo bench --bench fleet

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use tessera::authz::rate_limit::RateLimits;
use tessera::domain::decision::Credential;
use tessera::domain::fields::{PrincipalId, Tenant, TokenId};
use tessera::domain::model::SecretMatch;
use tessera::domain::network::IpAllowlist;
use tessera::fleet::{Fleet, FleetSettings, LimitKey, RedisEndpoint, Verdict};

fn redis_url() -> String {
    std::env::var("TESSERA_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn replica(prefix: &str) -> Fleet {
    let mut settings = FleetSettings::new(RedisEndpoint::Server(SecretString::from(redis_url())));
    settings.key_prefix = prefix.to_owned();
    let fleet = Fleet::connect(settings).await.expect("fleet");
    assert!(
        !fleet.status().degraded,
        "redis at {} does not answer",
        redis_url()
    );
    fleet
}

fn token_key() -> LimitKey {
    LimitKey::token(&TokenId::generate())
}

/// A cached token's credential as the rate-limit step sees it.
fn credential(rate_limit_per_minute: u32) -> Credential {
    Credential {
        token_id: TokenId::generate(),
        tenant: Tenant::parse("acme").expect("tenant"),
        owner_id: PrincipalId::parse("alice").expect("owner"),
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
        rotated_at: None,
        revoked: false,
        suspended: false,
        secret_match: SecretMatch::Current,
        allowed_ips: IpAllowlist::default().into(),
        require_signature: false,
        verifier: None,
        roles: Vec::new().into(),
        owner_enabled: true,
        effective: Vec::new().into(),
        rate_limit_per_minute,
        owner_rate_limit_per_minute: None,
        policy_hold: None,
        metadata: None,
        metered: false,
    }
}

fn per_minute(limit: u32) -> NonZeroU32 {
    NonZeroU32::new(limit).expect("non-zero")
}

/// Three replicas, each with 64 concurrent checks of one key limited to 100 a minute, all at
/// once: how many more than 100 were admitted.
async fn burst_over_admission(prefix: &str) -> u64 {
    let replicas = [
        replica(prefix).await,
        replica(prefix).await,
        replica(prefix).await,
    ];
    // Let each count the others' heartbeats.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let key = token_key();
    let allowed = Arc::new(AtomicU64::new(0));
    let mut checks = tokio::task::JoinSet::new();
    for fleet in &replicas {
        for _ in 0..64 {
            let (fleet, key, allowed) = (fleet.clone(), key.clone(), allowed.clone());
            checks.spawn(async move {
                if let Verdict::Allowed { .. } = fleet.check(&key, per_minute(100)).await {
                    allowed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    while checks.join_next().await.is_some() {}
    allowed.load(Ordering::Relaxed).saturating_sub(100)
}

fn bench_fleet(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("tessera-bench-{}", ulid::Ulid::new());
    let over = runtime.block_on(burst_over_admission(&prefix));
    println!(
        "burst of 3 × 64 checks of a 100/min limit on three replicas: {over} admitted beyond the limit"
    );

    let fleet = runtime.block_on(replica(&prefix));
    let default_limit = per_minute(60);
    let variants = [
        ("local", RateLimits::new(default_limit)),
        (
            "shared",
            RateLimits::new(default_limit).with_fleet(fleet.clone()),
        ),
    ];
    let mut group = c.benchmark_group("rate_limit_step");
    let high = credential(4_000_000_000);
    for (name, limits) in &variants {
        group.bench_function(format!("{name}/high_limit"), |b| {
            b.to_async(&runtime).iter(|| limits.check(&high));
        });
    }
    // A fresh token per check, so every one is a first request that is admitted (a spent
    // token would be refused locally without a trip).
    let low: Vec<Credential> = (0..200_000).map(|_| credential(60)).collect();
    for (name, limits) in &variants {
        let next = AtomicU64::new(0);
        group.bench_function(format!("{name}/60_per_minute"), |b| {
            b.to_async(&runtime).iter(|| {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize % low.len();
                limits.check(&low[index])
            });
        });
    }
    group.finish();
    runtime.block_on(fleet.close());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_fleet
}
criterion_main!(benches);
