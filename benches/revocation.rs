//! How long a revocation made through one replica takes to be enforced by another: two App
//! instances on one fresh Postgres database, 200 revocations, each timed from the moment the
//! RevokeToken call returned (committed and published) until replica B answers TOKEN_REVOKED for
//! a token it had cached.
//!
//! cargo bench --bench revocation   (Postgres: TESSERA_BENCH_POSTGRES_URL, default the local one)

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tessera::admin::{Actor, CreateToken, Expiry, UpsertPrincipal};
use tessera::app::App;
use tessera::config::{Config, Settings};
use tessera::domain::decision::{CheckInput, DenyReason};
use tessera::domain::fields::{Description, PrincipalId, Tenant, TokenName};
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::Grant;

const ROUNDS: usize = 200;

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

async fn replica(url: &str, dir: &std::path::Path) -> App {
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: url.to_owned().into(),
        admin_key_file: Some(dir.join("tessera-admin.key")),
        log: "warn".to_owned(),
        ..Settings::default()
    };
    let config = Config::parse(settings).expect("valid settings");
    App::build(config).await.expect("replica")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let server = std::env::var("TESSERA_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let name = format!(
        "tessera_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut maintenance = PgConnection::connect(&server)
        .await
        .expect("postgres for the bench");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut maintenance)
        .await
        .expect("create database");
    let base = server
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&server);
    let url = format!("{base}/{name}");
    let dir = tempfile::tempdir().expect("dir");

    let replica_a = replica(&url, dir.path()).await;
    let replica_b = replica(&url, dir.path()).await;
    let admin = replica_a.admin();
    let authorizer_b = replica_b.authorizer();
    let actor = Actor::named("bench");
    let tenant = Tenant::parse("acme").expect("tenant");
    let owner = PrincipalId::parse("alice").expect("owner");
    admin
        .upsert_principal(
            &actor,
            UpsertPrincipal {
                tenant: tenant.clone(),
                id: owner.clone(),
                permissions: vec![Grant::everything()],
                disabled: false,
                rate_limit_per_minute: None,
            },
        )
        .await
        .expect("principal");

    let mut latencies = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let issued = admin
            .create_token(
                &actor,
                CreateToken {
                    tenant: tenant.clone(),
                    owner_id: owner.clone(),
                    name: TokenName::parse("revocation bench").expect("name"),
                    description: Description::parse("").expect("description"),
                    permissions: Vec::new(),
                    roles: Vec::new(),
                    allowed_ips: IpAllowlist::default(),
                    rate_limit_per_minute: u32::MAX,
                    expiry: Expiry::Default,
                    require_signature: false,
                    metadata: Default::default(),
                    credits: None,
                },
            )
            .await
            .expect("token");
        let secret = issued.secret.expose_secret().to_owned();
        let input = || CheckInput {
            tenant: tenant.clone(),
            permissions: Default::default(),
            client_ip: None,
            signature: None,
            now: chrono::Utc::now(),
            endpoint: String::new(),
            user_agent: String::new(),
            cost: 1,
        };
        assert!(
            authorizer_b.check(&secret, &input()).await.is_allowed(),
            "cached on b"
        );
        admin
            .revoke_token(&actor, &issued.token.id)
            .await
            .expect("revoke");
        let revoked_at = Instant::now();
        loop {
            let decision = authorizer_b.check(&secret, &input()).await;
            if decision.outcome == Err(DenyReason::TokenRevoked) {
                latencies.push(revoked_at.elapsed());
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(30),
                "replica b never saw the revocation"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies.sort();
    println!("revocations: {ROUNDS}, replica b polled every 0.2 ms");
    for (label, fraction) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "{label}: {:.2} ms",
            percentile(&latencies, fraction).as_secs_f64() * 1000.0
        );
    }

    drop(replica_a);
    drop(replica_b);
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut maintenance)
        .await
        .expect("drop database");
}
