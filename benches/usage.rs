//! What usage recording costs Check: `Authorizer::check` on a cached, allowed token with
//! recording off and on, in one run, over one SQLite store. Recording on includes the real
//! background drain and flush (every second, as by default) competing for the same cores.
//!
//! - `one caller`: one Check after another on one thread (the latency of a Check).
//! - `all cores`: one caller per core (2 here) in parallel; the time reported is wall time per
//!   Check, so its inverse is the throughput of the whole machine, drain and flush included.
//!
//! cargo bench --bench usage

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::ExposeSecret;
use tessera::admin::{Actor, Admin, CreateToken, Expiry, UpsertPrincipal};
use tessera::authz::{Authorizer, AuthzSettings};
use tessera::domain::decision::CheckInput;
use tessera::domain::fields::{Description, PrincipalId, Tenant, TokenName};
use tessera::domain::network::IpAllowlist;
use tessera::domain::permission::{Grant, Permission, PermissionQuery};
use tessera::domain::token::TokenPrefix;
use tessera::store::{self, PoolOptions, Store};
use tessera::usage::{Usage, UsageSettings};

const CALLERS: usize = 2;
/// Checks between two yields of a parallel caller.
const YIELD_EVERY: u64 = 64;
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/120.0.6099.130 Safari/537.36";

struct Fixture {
    recording_off: Arc<Authorizer>,
    recording_on: Arc<Authorizer>,
    secret: String,
    usage: Usage,
    _dir: tempfile::TempDir,
}

/// The server's defaults, with a cache that keeps the one token for the whole run.
fn authz_settings() -> AuthzSettings {
    let settings = tessera::config::Settings {
        cache_ttl_ms: 3_600_000,
        ..tessera::config::Settings::default()
    };
    tessera::config::Config::parse(settings)
        .expect("valid settings")
        .authz
}

fn grants(raw: &[&str]) -> Vec<Grant> {
    raw.iter()
        .map(|g| Grant::parse(g).expect("grant"))
        .collect()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store: Arc<dyn Store> = store::connect(&url, &PoolOptions::default())
        .await
        .expect("store");
    let usage = Usage::start(
        store.clone(),
        UsageSettings {
            enabled: true,
            flush_interval: Duration::from_secs(1),
            retention: chrono::Duration::days(7),
            buffer_size: 65_536,
            endpoints_per_day: Default::default(),
            geoip: None,
            reports: Default::default(),
        },
    );
    let recording_off = Arc::new(Authorizer::new(store.clone(), authz_settings()));
    let recording_on =
        Arc::new(Authorizer::new(store.clone(), authz_settings()).with_usage(usage.hook()));
    let admin = Admin::new(store, TokenPrefix::default(), 64, recording_off.clone());
    let actor = Actor::named("bench");
    let tenant = Tenant::parse("acme").expect("tenant");
    let owner = PrincipalId::parse("alice").expect("owner");
    admin
        .upsert_principal(
            &actor,
            UpsertPrincipal {
                tenant: tenant.clone(),
                id: owner.clone(),
                permissions: grants(&["orders:*"]),
                disabled: false,
                rate_limit_per_minute: None,
            },
        )
        .await
        .expect("principal");
    let issued = admin
        .create_token(
            &actor,
            CreateToken {
                tenant,
                owner_id: owner,
                name: TokenName::parse("bench").expect("name"),
                description: Description::parse("").expect("description"),
                permissions: grants(&["orders:read"]),
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
    Fixture {
        recording_off,
        recording_on,
        secret: issued.secret.expose_secret().to_owned(),
        usage,
        _dir: dir,
    }
}

/// A Check as a service sends it: permission, client IP, endpoint and User-Agent.
fn input() -> CheckInput {
    CheckInput {
        tenant: Tenant::parse("acme").expect("tenant"),
        permissions: PermissionQuery::one(Permission::parse("orders:read").expect("permission")),
        client_ip: Some("192.0.2.1".parse().expect("ip")),
        signature: None,
        now: chrono::Utc::now(),
        endpoint: "GET /api/v1/orders".to_owned(),
        user_agent: USER_AGENT.to_owned(),
        cost: 1,
    }
}

/// `iterations` Checks spread over `CALLERS` parallel tasks; the wall time they took.
async fn parallel_checks(authorizer: &Arc<Authorizer>, secret: &str, iterations: u64) -> Duration {
    let per_caller = iterations.div_ceil(CALLERS as u64);
    let start = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let authorizer = authorizer.clone();
            let secret = secret.to_owned();
            tokio::spawn(async move {
                let input = input();
                for done in 0..per_caller {
                    std::hint::black_box(authorizer.check(&secret, &input).await);
                    // A server's callers wait for the network between requests; without a
                    // pause a cache-hit loop never yields, and the drain task would starve.
                    if done % YIELD_EVERY == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    start.elapsed()
}

fn bench_usage(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CALLERS)
        .enable_all()
        .build()
        .expect("runtime");
    let fixture = runtime.block_on(fixture());
    let secret = fixture.secret.as_str();
    let input = input();
    for authorizer in [&fixture.recording_off, &fixture.recording_on] {
        let decision = runtime.block_on(authorizer.check(secret, &input));
        assert!(decision.is_allowed(), "the bench token must be allowed");
    }

    // The recorder alone, as Check calls it: what recording adds to one Check on one thread.
    let credential = runtime
        .block_on(fixture.recording_off.check(secret, &input))
        .credential
        .expect("identified");
    let recorder = tessera::usage::Recorder::new(65_536);
    c.bench_function("usage/record_check alone", |b| {
        b.iter(|| recorder.record_check(&input, Ok(()), &credential));
    });

    // The report handle Check mints for each allowed call (src/grpc/authorization.rs): one
    // HMAC-SHA256 over ~60 bytes here, into the response's own buffer.
    let handle_key = tessera::domain::report_handle::ReportHandleKey::random();
    c.bench_function("usage/report handle mint", |b| {
        b.iter(|| handle_key.mint(&credential.token_id, &input.endpoint, input.now));
    });

    let mut one_caller = c.benchmark_group("usage/one caller");
    for (name, authorizer) in [
        ("recording off", &fixture.recording_off),
        ("recording on", &fixture.recording_on),
    ] {
        one_caller.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| authorizer.check(secret, &input));
        });
    }
    one_caller.finish();

    let mut all_cores = c.benchmark_group("usage/all cores");
    for (name, authorizer) in [
        ("recording off", &fixture.recording_off),
        ("recording on", &fixture.recording_on),
    ] {
        all_cores.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(parallel_checks(authorizer, secret, iterations))
            });
        });
    }
    all_cores.finish();

    paired_comparison(&runtime, &fixture);

    runtime.block_on(fixture.usage.shutdown());
    assert_eq!(
        fixture.usage.recorder().dropped(),
        0,
        "no usage event may be dropped at this rate"
    );
}

/// Rounds of the paired comparison, and Checks per side per round.
const ROUNDS: usize = 21;
const CHECKS_PER_ROUND: u64 = 200_000;

/// CPU time this process has had, in nanoseconds: the sum over its threads of the first field
/// of `/proc/self/task/*/schedstat` (Linux). Unlike wall time it does not grow when other
/// processes take the cores, so it measures what a Check costs even on a busy machine.
fn process_cpu_nanos() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The figures the 5% budget is judged on: recording off and on measured back to back, in
/// alternating order, for `ROUNDS` rounds on all cores. For each side: wall time and CPU time
/// (all threads: callers, flush, SQLite) per Check; the cost is the median of the per-round
/// ratios. Pairing cancels the slow drifts of a shared machine that separate criterion runs
/// pick up; CPU time also ignores other processes taking the cores.
fn paired_comparison(runtime: &tokio::runtime::Runtime, fixture: &Fixture) {
    let secret = fixture.secret.as_str();
    let one_caller = |authorizer: &Arc<Authorizer>| {
        let start = Instant::now();
        runtime.block_on(async {
            let input = input();
            for _ in 0..CHECKS_PER_ROUND {
                std::hint::black_box(authorizer.check(secret, &input).await);
            }
        });
        start.elapsed()
    };
    let all_cores = |authorizer: &Arc<Authorizer>| {
        runtime.block_on(parallel_checks(authorizer, secret, CHECKS_PER_ROUND))
    };
    paired("one caller", fixture, &one_caller);
    paired("all cores", fixture, &all_cores);
    let servers = runtime.block_on(GrpcServers::start());
    let over_grpc = |authorizer: &Arc<Authorizer>| {
        let url = if Arc::ptr_eq(authorizer, &fixture.recording_on) {
            &servers.recording_on
        } else {
            &servers.recording_off
        };
        runtime.block_on(grpc_checks(
            url,
            &servers.secrets[url],
            GRPC_CHECKS_PER_ROUND,
        ))
    };
    paired_rounds("over gRPC", GRPC_CHECKS_PER_ROUND, fixture, &over_grpc);
    runtime.block_on(servers.stop());
}

/// Checks per side per round through the servers, and the callers and connections making them
/// (as the load generator's closed loop at concurrency 32).
const GRPC_CHECKS_PER_ROUND: u64 = 20_000;
const GRPC_CALLERS: usize = 32;
const GRPC_CONNECTIONS: usize = 4;
const ADMIN_KEY: &str = "tsa_bench_admin_key_0123456789";

/// Two real servers (`App`, as `tessera serve` runs it) over SQLite, one with usage recording
/// off: the whole gRPC Check, where recording's share is what a deployment sees.
struct GrpcServers {
    recording_off: String,
    recording_on: String,
    secrets: std::collections::HashMap<String, String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl GrpcServers {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mut servers = Self {
            recording_off: String::new(),
            recording_on: String::new(),
            secrets: std::collections::HashMap::new(),
            stops: Vec::new(),
            tasks: Vec::new(),
            _dir: dir,
        };
        for recording in [false, true] {
            let database = servers._dir.path().join(format!("grpc-{recording}.db"));
            let settings = tessera::config::Settings {
                listen: "127.0.0.1:0".parse().expect("address"),
                metrics_listen: "127.0.0.1:0".parse().expect("address"),
                database_url: format!("sqlite://{}", database.display()).into(),
                admin_keys: vec![ADMIN_KEY.to_owned().into()],
                usage_enabled: recording,
                cache_ttl_ms: 3_600_000,
                log: "warn".to_owned(),
                ..tessera::config::Settings::default()
            };
            let config = tessera::config::Config::parse(settings).expect("valid settings");
            let app = tessera::app::App::build(config).await.expect("server");
            let url = format!("http://{}", app.local_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            servers.tasks.push(tokio::spawn(async move {
                let _ = app
                    .run_until_stopped(async {
                        let _ = stopped.await;
                    })
                    .await;
            }));
            servers.stops.push(stop);
            let secret = seed(&url).await;
            servers.secrets.insert(url.clone(), secret);
            if recording {
                servers.recording_on = url;
            } else {
                servers.recording_off = url;
            }
        }
        servers
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn with_admin_key<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {ADMIN_KEY}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// A principal and an unlimited token; the token's secret.
async fn seed(url: &str) -> String {
    use tessera::proto;
    let mut admin =
        proto::token_admin_service_client::TokenAdminServiceClient::connect(url.to_owned())
            .await
            .expect("admin client");
    admin
        .upsert_principal(with_admin_key(proto::UpsertPrincipalRequest {
            tenant: "acme".to_owned(),
            id: "alice".to_owned(),
            permissions: vec!["orders:*".to_owned()],
            ..Default::default()
        }))
        .await
        .expect("principal");
    admin
        .create_token(with_admin_key(proto::CreateTokenRequest {
            tenant: "acme".to_owned(),
            owner_id: "alice".to_owned(),
            name: "bench".to_owned(),
            permissions: vec!["orders:read".to_owned()],
            rate_limit_per_minute: u32::MAX,
            ..Default::default()
        }))
        .await
        .expect("token")
        .into_inner()
        .secret
}

/// `checks` gRPC Checks by `GRPC_CALLERS` callers over `GRPC_CONNECTIONS` connections; the
/// wall time they took.
async fn grpc_checks(url: &str, secret: &str, checks: u64) -> Duration {
    use tessera::proto;
    let mut channels = Vec::with_capacity(GRPC_CONNECTIONS);
    for _ in 0..GRPC_CONNECTIONS {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .expect("url")
            .connect()
            .await
            .expect("connection");
        channels.push(channel);
    }
    let per_caller = checks.div_ceil(GRPC_CALLERS as u64);
    let start = Instant::now();
    let callers: Vec<_> = (0..GRPC_CALLERS)
        .map(|caller| {
            let mut client = proto::authorization_service_client::AuthorizationServiceClient::new(
                channels[caller % GRPC_CONNECTIONS].clone(),
            );
            let request = proto::CheckRequest {
                token: secret.to_owned(),
                tenant: "acme".to_owned(),
                permission: "orders:read".to_owned(),
                client_ip: "192.0.2.1".to_owned(),
                user_agent: USER_AGENT.to_owned(),
                endpoint: "GET /api/v1/orders".to_owned(),
                signature: None,
                ..Default::default()
            };
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    let answer = client.check(request.clone()).await.expect("check");
                    assert!(answer.get_ref().allowed, "the bench token must be allowed");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    start.elapsed()
}

/// Runs `run` (which makes `CHECKS_PER_ROUND` Checks) with recording off and on, alternating,
/// and prints the medians.
fn paired(mode: &str, fixture: &Fixture, run: &dyn Fn(&Arc<Authorizer>) -> Duration) {
    paired_rounds(mode, CHECKS_PER_ROUND, fixture, run);
}

/// `paired` with `checks` Checks per run.
fn paired_rounds(
    mode: &str,
    checks: u64,
    fixture: &Fixture,
    run: &dyn Fn(&Arc<Authorizer>) -> Duration,
) {
    let mut wall_ratios = Vec::with_capacity(ROUNDS);
    let mut cpu_ratios = Vec::with_capacity(ROUNDS);
    let mut off_cpu = Vec::with_capacity(ROUNDS);
    let mut on_cpu = Vec::with_capacity(ROUNDS);
    let per_check = |nanos: f64| nanos / checks as f64;
    let measure = |authorizer: &Arc<Authorizer>| {
        let cpu_before = process_cpu_nanos();
        let elapsed = run(authorizer);
        let cpu = process_cpu_nanos().saturating_sub(cpu_before);
        (
            per_check(elapsed.as_secs_f64() * 1e9),
            per_check(cpu as f64),
        )
    };
    for round in 0..ROUNDS {
        let ((off_wall, off_cpu_ns), (on_wall, on_cpu_ns)) = if round % 2 == 0 {
            let off = measure(&fixture.recording_off);
            (off, measure(&fixture.recording_on))
        } else {
            let on = measure(&fixture.recording_on);
            (measure(&fixture.recording_off), on)
        };
        wall_ratios.push(on_wall / off_wall);
        cpu_ratios.push(on_cpu_ns / off_cpu_ns);
        off_cpu.push(off_cpu_ns);
        on_cpu.push(on_cpu_ns);
    }
    println!(
        "usage/paired {mode}, {ROUNDS} rounds of {checks} Checks per side: CPU per \
         Check off {:.0} ns, on {:.0} ns (medians); cost in CPU {:+.1}%, in wall time {:+.1}% \
         (medians of per-round ratios)",
        median(&mut off_cpu),
        median(&mut on_cpu),
        (median(&mut cpu_ratios) - 1.0) * 100.0,
        (median(&mut wall_ratios) - 1.0) * 100.0,
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench_usage
}
criterion_main!(benches);
