//! The fleet's replay guard: one first use per signature across replicas, bounded per token.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::*;
use crate::domain::signature::SignatureId;
use crate::fleet::ReplayVerdict;

const REMEMBER: Duration = Duration::from_secs(601);

fn signature(number: u64) -> SignatureId {
    let mut tag = [7u8; 32];
    tag[..8].copy_from_slice(&number.to_le_bytes());
    SignatureId(tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_uses_of_one_signature_on_several_replicas_exactly_one_is_first() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 3).await;
    let token = Arc::new(TokenId::generate());
    let mut uses = JoinSet::new();
    for attempt in 0..30 {
        let (fleet, token) = (fleets[attempt % fleets.len()].clone(), token.clone());
        uses.spawn(async move { fleet.first_use(&token, &signature(1), REMEMBER).await });
    }
    let mut verdicts = Vec::new();
    while let Some(verdict) = uses.join_next().await {
        verdicts.push(verdict.expect("use"));
    }
    let firsts = verdicts
        .iter()
        .filter(|verdict| **verdict == ReplayVerdict::First)
        .count();
    let replays = verdicts
        .iter()
        .filter(|verdict| **verdict == ReplayVerdict::Replayed)
        .count();
    assert_eq!((firsts, replays), (1, 29), "{verdicts:?}");
    assert_eq!(
        fleets[1].first_use(&token, &signature(2), REMEMBER).await,
        ReplayVerdict::First,
        "another signature of the token is new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_is_new_for_each_token_and_forgotten_when_its_time_is_up() {
    let redis = RedisServer::start();
    let fleets = replicas(|| settings(on(&redis)), 2).await;
    let (alice, bob) = (TokenId::generate(), TokenId::generate());
    let short = Duration::from_millis(300);
    assert_eq!(
        fleets[0].first_use(&alice, &signature(1), short).await,
        ReplayVerdict::First
    );
    assert_eq!(
        fleets[1].first_use(&bob, &signature(1), short).await,
        ReplayVerdict::First
    );
    assert_eq!(
        fleets[1].first_use(&alice, &signature(1), short).await,
        ReplayVerdict::Replayed
    );
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    assert_eq!(
        fleets[1].first_use(&alice, &signature(1), short).await,
        ReplayVerdict::First,
        "kept past the time it had to be remembered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_flooding_signatures_forgets_only_its_own_oldest() {
    let redis = RedisServer::start();
    let quota = 16;
    let fleets = replicas(
        || {
            let mut settings = settings(on(&redis));
            settings.replay_token_quota = quota;
            settings
        },
        2,
    )
    .await;
    let (alice, mallory) = (TokenId::generate(), TokenId::generate());
    assert_eq!(
        fleets[0].first_use(&alice, &signature(1), REMEMBER).await,
        ReplayVerdict::First
    );
    for number in 0..200 {
        assert_eq!(
            fleets[1]
                .first_use(&mallory, &signature(number), REMEMBER)
                .await,
            ReplayVerdict::First
        );
    }
    assert_eq!(
        fleets[1].first_use(&alice, &signature(1), REMEMBER).await,
        ReplayVerdict::Replayed,
        "alice's signature was pushed out by mallory's"
    );
    for number in 200 - quota..200 {
        assert_eq!(
            fleets[0]
                .first_use(&mallory, &signature(number), REMEMBER)
                .await,
            ReplayVerdict::Replayed,
            "mallory's newest signature {number} was forgotten"
        );
    }
    let held: u64 = redis
        .cli(&["zcard", &format!("tessera:{{t:{mallory}}}:replay")])
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(held, quota, "one token holds at most its quota");
}
