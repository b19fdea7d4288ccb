//! In-process cost of `Authorizer::check` on a cached token, for the allowed path and each deny
//! path, with a cache-off run (every Check reads SQLite) as the naive baseline; and an allowed
//! Check with its gRPC answer built (`check_with_answer`), for a token without metadata and one
//! with 8 entries, in the same run; and a cached token with credits (`allowed_with_credits`, each
//! Check spends one from a lease) beside the plain `allowed`, and Checks needing all of three
//! permissions or any of three (`allowed_all_of_3`, `allowed_any_of_3`).
//!
//! cargo bench --bench authorizer

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::ExposeSecret;
use tessera::admin::{Actor, Admin, CreateToken, Expiry, ImportToken, UpsertPrincipal};
use tessera::authz::{Authorizer, AuthzSettings, CacheSettings};
use tessera::domain::credits::{CreditGrant, MAX_CREDITS};
use tessera::domain::decision::CheckInput;
use tessera::domain::fields::{ApiScope, Description, PrincipalId, Tenant, TokenName};
use tessera::domain::metadata::Metadata;
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::{Grant, Permission, PermissionQuery};
use tessera::domain::policy::TenantPolicy;
use tessera::domain::token::{self, SecretHash, TokenPrefix};
use tessera::store::{self, PoolOptions, Store};

struct Fixture {
    authorizer: Arc<Authorizer>,
    secrets: Secrets,
    _dir: tempfile::TempDir,
}

struct Secrets {
    allowed: String,
    /// Like `allowed`, with 8 metadata entries.
    with_metadata: String,
    fenced: String,
    revoked: String,
    rate_limited: String,
    disabled_owner: String,
    unknown: String,
    /// Tokens of `initech`, whose policy is enforced on existing tokens: one keeps it, one
    /// (created before the policy) breaks `max_lifetime`.
    kept_policy: String,
    broke_policy: String,
    /// The original secret of a token imported by its hash (another system's format).
    imported: String,
    /// A token with plenty of credits (issue 16): each allowed Check spends one.
    metered: String,
}

fn settings(capacity: u64) -> AuthzSettings {
    AuthzSettings {
        prefix: TokenPrefix::default(),
        cache: CacheSettings {
            capacity,
            max_bytes: u64::MAX,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(3600),
        },
        default_rate_limit_per_minute: NonZeroU32::new(60).expect("non-zero"),
        signing: Default::default(),
        accept_imported_tokens: true,
    }
}

fn grants(raw: &[&str]) -> Vec<Grant> {
    raw.iter()
        .map(|g| Grant::parse(g).expect("grant"))
        .collect()
}

fn create(owner: &str, allowed_ips: &[&str], rate_limit: u32) -> CreateToken {
    create_in("acme", owner, allowed_ips, rate_limit)
}

fn create_in(tenant: &str, owner: &str, allowed_ips: &[&str], rate_limit: u32) -> CreateToken {
    CreateToken {
        tenant: Tenant::parse(tenant).expect("tenant"),
        owner_id: PrincipalId::parse(owner).expect("owner"),
        name: TokenName::parse("bench").expect("name"),
        description: Description::parse("").expect("description"),
        permissions: grants(&["orders:*", "products:read"]),
        roles: Vec::new(),
        allowed_ips: IpAllowlist::parse(
            &allowed_ips
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("ips"),
        rate_limit_per_minute: rate_limit,
        expiry: Expiry::Default,
        require_signature: false,
        metadata: Default::default(),
        credits: None,
    }
}

async fn fixture(capacity: u64) -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let options = PoolOptions {
        check_deadline: Duration::from_secs(5),
        ..PoolOptions::default()
    };
    let store: Arc<dyn Store> = store::connect(&url, &options).await.expect("store");
    let authorizer = Arc::new(Authorizer::new(store.clone(), settings(capacity)));
    let admin = Admin::new(store, TokenPrefix::default(), 64, authorizer.clone());
    let actor = Actor::named("bench");
    for (tenant, owner, disabled) in [
        ("acme", "alice", false),
        ("acme", "mallory", true),
        ("initech", "peter", false),
    ] {
        admin
            .upsert_principal(
                &actor,
                UpsertPrincipal {
                    tenant: Tenant::parse(tenant).expect("tenant"),
                    id: PrincipalId::parse(owner).expect("id"),
                    permissions: grants(&["orders:*", "products:*"]),
                    disabled,
                    rate_limit_per_minute: None,
                },
            )
            .await
            .expect("principal");
    }
    let secret = |issued: tessera::admin::IssuedToken| issued.secret.expose_secret().to_owned();
    let unlimited = u32::MAX;
    let allowed = secret(
        admin
            .create_token(&actor, create("alice", &[], unlimited))
            .await
            .expect("token"),
    );
    let mut with_metadata = create("alice", &[], unlimited);
    let pairs: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("key.{i}"),
                format!("value of entry {i}, about 32 bytes"),
            )
        })
        .collect();
    with_metadata.metadata = Metadata::parse(
        pairs
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    )
    .expect("metadata");
    let with_metadata = secret(
        admin
            .create_token(&actor, with_metadata)
            .await
            .expect("token"),
    );
    let fenced = secret(
        admin
            .create_token(
                &actor,
                create("alice", &["10.0.0.0/8", "2001:db8::/32"], unlimited),
            )
            .await
            .expect("token"),
    );
    let revoked_token = admin
        .create_token(&actor, create("alice", &[], unlimited))
        .await
        .expect("token");
    admin
        .revoke_token(&actor, &revoked_token.token.id)
        .await
        .expect("revoke");
    let revoked = secret(revoked_token);
    let rate_limited = secret(
        admin
            .create_token(&actor, create("alice", &[], 1))
            .await
            .expect("token"),
    );
    let disabled_owner = secret(
        admin
            .create_token(&actor, create("mallory", &[], unlimited))
            .await
            .expect("token"),
    );
    let metered = secret(
        admin
            .create_token(
                &actor,
                CreateToken {
                    credits: Some(CreditGrant::parse(MAX_CREDITS, None).expect("credits")),
                    ..create("alice", &[], unlimited)
                },
            )
            .await
            .expect("token"),
    );
    let unknown = token::generate(&TokenPrefix::default())
        .secret
        .expose_secret()
        .to_owned();
    // Created with a year's lifetime, before the policy allows only 200 days.
    let broke_policy = secret(
        admin
            .create_token(&actor, create_in("initech", "peter", &[], unlimited))
            .await
            .expect("token"),
    );
    let initech = Tenant::parse("initech").expect("tenant");
    admin
        .set_tenant_policy(
            &actor,
            TenantPolicy {
                max_lifetime: Some(chrono::Duration::days(200)),
                enforce_on_existing: true,
                ..TenantPolicy::none(initech.clone())
            },
        )
        .await
        .expect("policy");
    let kept_policy = secret(
        admin
            .create_token(&actor, create_in("initech", "peter", &[], unlimited))
            .await
            .expect("token"),
    );
    let imported = "ghp_0123456789abcdefghijklmnopqrstuvwxyz".to_owned();
    admin
        .import_tokens(
            &actor,
            &Tenant::parse("acme").expect("tenant"),
            vec![ImportToken {
                owner_id: PrincipalId::parse("alice").expect("owner"),
                name: TokenName::parse("imported").expect("name"),
                description: Description::parse("").expect("description"),
                secret_hash: SecretHash::of(&imported),
                permissions: grants(&["orders:*"]),
                roles: Vec::new(),
                allowed_ips: IpAllowlist::default(),
                rate_limit_per_minute: unlimited,
                expires_at: None,
                created_at: None,
                metadata: Default::default(),
            }],
        )
        .await
        .expect("import");
    let _ = ApiScope::all();
    Fixture {
        authorizer,
        secrets: Secrets {
            allowed,
            with_metadata,
            fenced,
            revoked,
            rate_limited,
            disabled_owner,
            unknown,
            kept_policy,
            broke_policy,
            imported,
            metered,
        },
        _dir: dir,
    }
}

fn input(tenant: &str, permission: &str) -> CheckInput {
    CheckInput {
        tenant: Tenant::parse(tenant).expect("tenant"),
        permissions: PermissionQuery::one(Permission::parse(permission).expect("permission")),
        client_ip: Some("192.0.2.1".parse().expect("ip")),
        signature: None,
        now: chrono::Utc::now(),
        endpoint: String::new(),
        user_agent: String::new(),
        cost: 1,
    }
}

/// A Check needing every one of `all` and one of `any` (CheckRequest.all_permissions and
/// any_permissions).
fn input_of_several(tenant: &str, all: &[&str], any: &[&str]) -> CheckInput {
    let parse = |names: &[&str]| -> Vec<Permission> {
        names
            .iter()
            .map(|name| Permission::parse(name).expect("permission"))
            .collect()
    };
    CheckInput {
        permissions: PermissionQuery::new(None, parse(all), parse(any)).expect("query"),
        ..input(tenant, "orders:read")
    }
}

fn bench_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let cached = runtime.block_on(fixture(100_000));
    let uncached = runtime.block_on(fixture(0));
    let secrets = &cached.secrets;
    let malformed = "tsk_thisisnotavalidtokenatallnotevenclose";

    let cases: Vec<(&str, &str, CheckInput)> = vec![
        ("allowed", &secrets.allowed, input("acme", "orders:read")),
        (
            "allowed_with_credits",
            &secrets.metered,
            input("acme", "orders:read"),
        ),
        (
            "allowed_all_of_3",
            &secrets.allowed,
            input_of_several("acme", &["orders:read", "orders:write", "orders:list"], &[]),
        ),
        (
            "allowed_any_of_3",
            &secrets.allowed,
            input_of_several("acme", &[], &["billing:read", "admin:read", "orders:read"]),
        ),
        (
            "permission_denied",
            &secrets.allowed,
            input("acme", "billing:read"),
        ),
        (
            "tenant_mismatch",
            &secrets.allowed,
            input("globex", "orders:read"),
        ),
        (
            "ip_not_allowed",
            &secrets.fenced,
            input("acme", "orders:read"),
        ),
        (
            "token_revoked",
            &secrets.revoked,
            input("acme", "orders:read"),
        ),
        (
            "owner_disabled",
            &secrets.disabled_owner,
            input("acme", "orders:read"),
        ),
        (
            "rate_limited",
            &secrets.rate_limited,
            input("acme", "orders:read"),
        ),
        (
            "token_unknown",
            &secrets.unknown,
            input("acme", "orders:read"),
        ),
        ("token_malformed", malformed, input("acme", "orders:read")),
        (
            "allowed_under_enforced_policy",
            &secrets.kept_policy,
            input("initech", "orders:read"),
        ),
        (
            "policy_violation",
            &secrets.broke_policy,
            input("initech", "orders:read"),
        ),
        (
            "allowed_imported_secret",
            &secrets.imported,
            input("acme", "orders:read"),
        ),
    ];
    let mut group = c.benchmark_group("check_cached");
    for (name, secret, check) in &cases {
        // Warm the cache (and spend the rate-limited token's one request).
        runtime.block_on(cached.authorizer.check(secret, check));
        group.bench_function(*name, |b| {
            b.to_async(&runtime)
                .iter(|| cached.authorizer.check(secret, check));
        });
    }
    group.finish();

    // The gRPC answer is where metadata is copied out of the cache: measured with it.
    let mut answered = c.benchmark_group("check_with_answer");
    let allowed = input("acme", "orders:read");
    for (name, secret) in [
        ("plain", &secrets.allowed),
        ("metadata_8", &secrets.with_metadata),
    ] {
        let decision = runtime.block_on(cached.authorizer.check(secret, &allowed));
        assert_eq!(
            decision.metadata().map_or(0, |m| m.len()),
            if name == "plain" { 0 } else { 8 }
        );
        answered.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let decision = cached.authorizer.check(secret, &allowed).await;
                tessera::grpc::convert::check_response(&decision)
            });
        });
    }
    answered.finish();

    let mut baseline = c.benchmark_group("check_cache_off");
    let allowed = input("acme", "orders:read");
    baseline.bench_function("allowed", |b| {
        b.to_async(&runtime).iter(|| {
            uncached
                .authorizer
                .check(&uncached.secrets.allowed, &allowed)
        });
    });
    baseline.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_check
}
criterion_main!(benches);
