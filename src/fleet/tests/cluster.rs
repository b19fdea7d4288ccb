//! A Redis Cluster of three masters: each token's keys in its own slot, spread over the nodes.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::task::JoinSet;

use super::server::RedisCluster;
use super::*;
use crate::domain::signature::SignatureId;
use crate::fleet::ReplayVerdict;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_shares_limits_and_replays_across_replicas() {
    let cluster = RedisCluster::start();
    let endpoint = || {
        settings(RedisEndpoint::Cluster(
            cluster
                .seeds()
                .into_iter()
                .map(SecretString::from)
                .collect(),
        ))
    };
    let fleets = replicas(endpoint, 2).await;

    let tokens: Vec<TokenId> = (0..12).map(|_| TokenId::generate()).collect();
    for token in &tokens {
        let allowed = allowed_in_turn(&fleets, &LimitKey::token(token), 10, 12).await;
        assert_eq!(
            allowed.iter().sum::<u32>(),
            10,
            "token {token}: {allowed:?}"
        );
        let signature = SignatureId([9; 32]);
        let remember = Duration::from_secs(60);
        assert_eq!(
            fleets[0].first_use(token, &signature, remember).await,
            ReplayVerdict::First
        );
        assert_eq!(
            fleets[1].first_use(token, &signature, remember).await,
            ReplayVerdict::Replayed
        );
    }
    let nodes_with_keys = cluster
        .nodes()
        .iter()
        .filter(|node| node.cli(&["dbsize"]).trim() != "0")
        .count();
    assert!(
        nodes_with_keys >= 2,
        "12 tokens' keys all landed on {nodes_with_keys} node"
    );

    // A leased limit, both replicas as fast as they can.
    let (key, limit) = (token_key(), per_minute(6_000));
    let start = Instant::now();
    let until = start + Duration::from_millis(1500);
    let mut clients = JoinSet::new();
    for fleet in &fleets {
        client(&mut clients, fleet, &key, limit, until, None);
    }
    let all = gather(clients).await;
    assert_admitted_as_one_limiter_under_demand(&all, limit, start, until);
}
