//! The Envoy ext_authz path against Tessera's own Check in the same run, and what verifying a
//! signature adds to a Check. One real server (`App`, SQLite) holds a cached token; every
//! request is allowed (asserted before measuring).
//!
//! - `envoy_vs_check/grpc_*`: a unary call over loopback gRPC with a real client, as a mesh or
//!   a service would make it (client and server share this machine's cores).
//! - `envoy_vs_check/in_process_*`: the same two paths without the network: Tessera's own
//!   parse + decide + response, against Envoy's mapping + the same + Envoy's response.
//! - `signature/*`: HMAC verification alone, and a cached in-process Check of a signing token
//!   with a fresh signature (verify + replay guard) against the same Check unsigned.
//!
//! cargo bench --bench envoy

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Address as EnvoyAddress, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttributeRequest,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use tessera::app::App;
use tessera::authz::replay::ReplayCache;
use tessera::config::{Config, EnvoyRule, Settings};
use tessera::domain::signature::{self, PresentedSignature, ReplayGuard, SignatureId, SigningKey};
use tessera::grpc::authorization::decide;
use tessera::grpc::convert::check_response;
use tessera::grpc::envoy::EnvoyAuthorizationApi;
use tessera::proto;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tonic::Request;
use tonic::transport::Channel;

const TENANT: &str = "acme";
const CLIENT_IP: &str = "192.0.2.1";

struct Fixture {
    settings: Settings,
    app_authorizer: std::sync::Arc<tessera::authz::Authorizer>,
    grpc_url: String,
    secret: String,
    signing_secret: String,
    signing_key: String,
    _dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

fn admin<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {key}").parse().expect("ascii key");
    request.metadata_mut().insert("authorization", value);
    request
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()).into(),
        admin_key_file: Some(dir.path().join("tessera-admin.key")),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        master_key: Some(SecretString::from(STANDARD.encode([7u8; 32]))),
        envoy_rules: vec![EnvoyRule {
            method: "GET".to_owned(),
            path: None,
            prefix: Some("/api/v1/orders/".to_owned()),
            permission: "orders:read".to_owned(),
            ..Default::default()
        }],
        ..Settings::default()
    };
    let config = Config::parse(settings.clone()).expect("valid settings");
    let app = App::build(config).await.expect("app builds");
    let grpc_url = format!("http://{}", app.local_addr());
    let admin_key = std::fs::read_to_string(app.bootstrap_key_path().expect("bootstrap key"))
        .expect("key file")
        .trim()
        .to_owned();
    let app_authorizer = app.authorizer();
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });

    let mut client = TokenAdminServiceClient::connect(grpc_url.clone())
        .await
        .expect("admin client");
    client
        .upsert_principal(admin(
            proto::UpsertPrincipalRequest {
                tenant: TENANT.to_owned(),
                id: "alice".to_owned(),
                permissions: vec!["orders:*".to_owned()],
                ..Default::default()
            },
            &admin_key,
        ))
        .await
        .expect("principal");
    let create = |require_signature: bool| {
        let request = admin(
            proto::CreateTokenRequest {
                tenant: TENANT.to_owned(),
                owner_id: "alice".to_owned(),
                name: "bench".to_owned(),
                permissions: vec!["orders:read".to_owned()],
                rate_limit_per_minute: u32::MAX,
                require_signature,
                ..Default::default()
            },
            &admin_key,
        );
        let mut client = client.clone();
        async move {
            client
                .create_token(request)
                .await
                .expect("token")
                .into_inner()
        }
    };
    let plain = create(false).await;
    let signing = create(true).await;
    Fixture {
        settings,
        app_authorizer,
        grpc_url,
        secret: plain.secret,
        signing_secret: signing.secret,
        signing_key: signing.signing_key,
        _dir: dir,
        _shutdown: shutdown,
    }
}

fn own_request(secret: &str) -> proto::CheckRequest {
    proto::CheckRequest {
        token: secret.to_owned(),
        tenant: TENANT.to_owned(),
        permission: "orders:read".to_owned(),
        client_ip: CLIENT_IP.to_owned(),
        user_agent: "bench/1.0".to_owned(),
        endpoint: "GET /api/v1/orders/*".to_owned(),
        signature: None,
        ..Default::default()
    }
}

/// The own request with a browser's User-Agent, padded so it encodes to at least the size of the
/// Envoy request: the same work for the transport, different work for Tessera.
fn own_request_sized_like(secret: &str, envoy: &CheckRequest) -> proto::CheckRequest {
    use prost::Message;
    let mut request = own_request(secret);
    request.user_agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                          Chrome/131.0.0.0 Safari/537.36"
        .to_owned();
    while request.encoded_len() < envoy.encoded_len() {
        request.user_agent.push(' ');
    }
    request
}

/// What Envoy sends for `GET /api/v1/orders/42` with typical headers.
fn envoy_request(secret: &str) -> CheckRequest {
    let headers = [
        ("authorization", format!("Bearer {secret}")),
        ("user-agent", "bench/1.0".to_owned()),
        ("accept", "application/json".to_owned()),
        (":authority", "acme.api.example.com".to_owned()),
        (
            "x-request-id",
            "0d3c5e8a-4d1c-4f6f-9a43-3a1e2b7f9c10".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: CLIENT_IP.to_owned(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: "/api/v1/orders/42".to_owned(),
                    host: "acme.api.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("tenant".to_owned(), TENANT.to_owned())].into(),
            ..Default::default()
        }),
    }
}

fn envoy_allowed(response: &envoy_types::ext_authz::v3::pb::CheckResponse) -> bool {
    matches!(response.http_response, Some(HttpResponse::OkResponse(_)))
}

/// A client's signature of `timestamp + "\n" + payload`.
fn sign(key: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(format!("{timestamp}\n").as_bytes());
    mac.update(payload);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Accepts every signature: HMAC cost alone.
struct NoReplays;

impl ReplayGuard for NoReplays {
    fn window(&self) -> Duration {
        signature::DEFAULT_WINDOW
    }

    fn first_use(&self, _: SignatureId, _: Duration) -> bool {
        true
    }
}

fn bench_envoy(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fixture = runtime.block_on(fixture());
    let authorizer = fixture.app_authorizer.clone();
    let envoy_api = EnvoyAuthorizationApi::new(
        authorizer.clone(),
        Config::parse(fixture.settings.clone())
            .expect("valid settings")
            .envoy,
    );
    let (mut own_client, mut envoy_client) = runtime.block_on(async {
        let channel = Channel::from_shared(fixture.grpc_url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connects");
        (
            AuthorizationServiceClient::new(channel.clone()),
            AuthorizationClient::new(channel),
        )
    });
    let own = own_request(&fixture.secret);
    let envoy = envoy_request(&fixture.secret);

    // Every measured call must be an allow of a cached token.
    runtime.block_on(async {
        let decision = decide(&authorizer, own.clone()).await.expect("decides");
        assert!(decision.is_allowed(), "{:?}", decision.outcome);
        let response = envoy_api
            .check(Request::new(envoy.clone()))
            .await
            .expect("answers")
            .into_inner();
        assert!(envoy_allowed(&response), "{response:?}");
        let response = own_client.check(own.clone()).await.expect("answers");
        assert!(response.get_ref().allowed);
        let response = envoy_client.check(envoy.clone()).await.expect("answers");
        assert!(envoy_allowed(response.get_ref()));
    });

    let mut group = c.benchmark_group("envoy_vs_check");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("grpc_own_check", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = own_client.clone();
            let request = own.clone();
            async move { client.check(request).await.expect("answers") }
        })
    });
    group.bench_function("grpc_envoy_check", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = envoy_client.clone();
            let request = envoy.clone();
            async move { client.check(request).await.expect("answers") }
        })
    });
    group.bench_function("in_process_own_check", |b| {
        b.to_async(&runtime).iter(|| async {
            let decision = decide(&authorizer, own.clone()).await.expect("decides");
            check_response(&decision)
        })
    });
    group.bench_function("in_process_envoy_check", |b| {
        b.to_async(&runtime).iter(|| async {
            envoy_api
                .check(Request::new(envoy.clone()))
                .await
                .expect("answers")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("signature");
    let key = SigningKey::generate();
    let verifier = key.verifier();
    let now = chrono::Utc::now();
    let payload =
        b"GET\n/api/v1/orders/42\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let presented = PresentedSignature::parse(
        now.timestamp(),
        &signature::sign(&key, now.timestamp(), payload),
        payload.to_vec(),
    );
    group.bench_function("verify_hmac", |b| {
        b.iter(|| signature::verify(Some(&verifier), &presented, now, &NoReplays))
    });
    let replay_cache = ReplayCache::default();
    let replay_token = tessera::domain::fields::TokenId::generate();
    let replay_guard = replay_cache.of(&replay_token);
    let replay_counter = AtomicU64::new(0);
    group.bench_function("replay_guard_first_use", |b| {
        b.iter_batched(
            || {
                let mut id = [0u8; 32];
                id[..8]
                    .copy_from_slice(&replay_counter.fetch_add(1, Ordering::Relaxed).to_le_bytes());
                SignatureId(id)
            },
            |id| assert!(replay_guard.first_use(id, Duration::from_secs(300))),
            BatchSize::SmallInput,
        )
    });

    let unsigned = own_request(&fixture.secret);
    group.bench_function("check_unsigned", |b| {
        b.to_async(&runtime).iter_batched(
            || unsigned.clone(),
            |request| async {
                let decision = decide(&authorizer, request).await.expect("decides");
                assert!(decision.is_allowed());
            },
            BatchSize::SmallInput,
        )
    });
    // Each measured Check carries a fresh signature (made in the untimed setup), since the
    // replay guard refuses a second use.
    let counter = AtomicU64::new(0);
    let signing_key = fixture.signing_key.clone();
    let signing_secret = fixture.signing_secret.clone();
    let fresh_signed = || {
        let timestamp = chrono::Utc::now().timestamp();
        let payload = format!(
            "GET\n/api/v1/orders/{}\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            counter.fetch_add(1, Ordering::Relaxed)
        );
        let mut request = own_request(&signing_secret);
        request.signature = Some(proto::Signature {
            timestamp,
            signature: sign(&signing_key, timestamp, payload.as_bytes()),
            payload: payload.into_bytes(),
        });
        request
    };
    runtime.block_on(async {
        let decision = decide(&authorizer, fresh_signed()).await.expect("decides");
        assert!(decision.is_allowed(), "{:?}", decision.outcome);
    });
    group.bench_function("check_signed", |b| {
        b.to_async(&runtime).iter_batched(
            fresh_signed,
            |request| async {
                let decision = decide(&authorizer, request).await.expect("decides");
                assert!(decision.is_allowed());
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // Criterion runs one benchmark after another, so background load that comes and goes lands
    // on one side. These pairs alternate the two sides in short rounds and compare medians.
    //
    // Envoy's request is bigger than a compact own Check (its headers and attributes), and h2
    // writes a message of 256 bytes or more with one more syscall; so the own Check is measured
    // twice: compact, and with a browser's User-Agent, which makes it as big as Envoy's.
    let sized = own_request_sized_like(&fixture.secret, &envoy);
    for (label, own_side) in [("compact", &own), ("same size", &sized)] {
        let pairs = runtime.block_on(paired(
            30,
            1000,
            || {
                let mut client = own_client.clone();
                let request = own_side.clone();
                async move {
                    client.check(request).await.expect("answers");
                }
            },
            || {
                let mut client = envoy_client.clone();
                let request = envoy.clone();
                async move {
                    client.check(request).await.expect("answers");
                }
            },
        ));
        report(&format!("grpc: own Check ({label}) vs Envoy Check"), &pairs);
    }
    external_client(&fixture.grpc_url, &own, &envoy);
    let unsigned_vs_signed = runtime.block_on(paired_prepared(
        30,
        20_000,
        || unsigned.clone(),
        &fresh_signed,
        |request| {
            let authorizer = authorizer.clone();
            async move {
                let decision = decide(&authorizer, request).await.expect("decides");
                assert!(decision.is_allowed());
            }
        },
    ));
    report("in process: unsigned vs signed Check", &unsigned_vs_signed);
}

/// With `h2load` (Debian's nghttp2-client) on the PATH: both Checks from a client in another
/// process, built on nghttp2 like Envoy's own HTTP/2 codec, at one call in flight; the server's
/// CPU time per call is read from this process. Five interleaved rounds each.
fn external_client(url: &str, own: &proto::CheckRequest, envoy: &CheckRequest) {
    use prost::Message;
    let frame = |bytes: Vec<u8>| {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
        framed.extend_from_slice(&bytes);
        framed
    };
    let dir = tempfile::tempdir().expect("dir");
    let sides = [
        (
            "own Check",
            "/tessera.v1.AuthorizationService/Check",
            dir.path().join("own.bin"),
            frame(own.encode_to_vec()),
        ),
        (
            "Envoy Check",
            "/envoy.service.auth.v3.Authorization/Check",
            dir.path().join("envoy.bin"),
            frame(envoy.encode_to_vec()),
        ),
    ];
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for _round in 0..5 {
        for (index, (_, path, body_file, body)) in sides.iter().enumerate() {
            std::fs::write(body_file, body).expect("body file");
            let cpu_start = process_cpu();
            let run = std::process::Command::new("h2load")
                .args(["-n", "10000", "-c", "1", "-m", "1", "-H"])
                .args(["content-type: application/grpc", "-H", "te: trailers", "-d"])
                .arg(body_file)
                .arg(format!("{url}{path}"))
                .output();
            let Ok(output) = run else {
                println!("external client: h2load is not installed (apt install nghttp2-client)");
                return;
            };
            let server_cpu = process_cpu().saturating_sub(cpu_start).as_secs_f64() * 1e6 / 1e4;
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(stdout.contains("10000 succeeded"), "{stdout}");
            // "time for request:  min  max  mean  sd  +/- sd"
            let mean = stdout
                .lines()
                .find(|line| line.trim_start().starts_with("time for request:"))
                .and_then(|line| line.split_whitespace().nth(5))
                .and_then(parse_h2load_duration)
                .expect("h2load's mean time for request");
            results[index].0.push(mean);
            results[index].1.push(server_cpu);
        }
    }
    let median = |values: &[f64]| quartiles(values.to_vec())[1];
    let (own_mean, envoy_mean) = (median(&results[0].0), median(&results[1].0));
    let (own_cpu, envoy_cpu) = (median(&results[0].1), median(&results[1].1));
    println!(
        "external client (h2load, 1 in flight): own Check {own_mean:.1} µs vs Envoy Check \
         {envoy_mean:.1} µs mean latency, ratio {:.3}; server CPU {own_cpu:.1} vs {envoy_cpu:.1} \
         µs per call, ratio {:.3} (medians of 5 interleaved rounds of 10,000 calls)",
        envoy_mean / own_mean,
        envoy_cpu / own_cpu,
    );
}

/// `73us` / `1.20ms` → microseconds.
fn parse_h2load_duration(text: &str) -> Option<f64> {
    if let Some(micros) = text.strip_suffix("us") {
        return micros.parse().ok();
    }
    if let Some(millis) = text.strip_suffix("ms") {
        return millis.parse::<f64>().ok().map(|millis| millis * 1e3);
    }
    text.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .map(|seconds| seconds * 1e6)
}

/// Per-call times of each side over `rounds` rounds of `calls` calls, alternating sides.
async fn paired<A, B, FA, FB>(rounds: usize, calls: usize, a: A, b: B) -> Pairs
where
    A: Fn() -> FA,
    B: Fn() -> FB,
    FA: Future<Output = ()>,
    FB: Future<Output = ()>,
{
    let mut pairs = Pairs::with_capacity(rounds);
    for round in 0..rounds {
        // Alternate which side goes first, so neither always follows the other.
        for side in [round % 2, 1 - round % 2] {
            let (start, cpu_start) = (Instant::now(), process_cpu());
            for _ in 0..calls {
                if side == 0 { a().await } else { b().await }
            }
            pairs.record(side, calls, start, cpu_start);
        }
    }
    pairs
}

/// Like [`paired`] for one operation on two kinds of input, each prepared before its timed run.
async fn paired_prepared<I, PA, PB, Op, F>(
    rounds: usize,
    calls: usize,
    prepare_a: PA,
    prepare_b: PB,
    operation: Op,
) -> Pairs
where
    PA: Fn() -> I,
    PB: Fn() -> I,
    Op: Fn(I) -> F,
    F: Future<Output = ()>,
{
    let mut pairs = Pairs::with_capacity(rounds);
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            let inputs: Vec<I> = (0..calls)
                .map(|_| if side == 0 { prepare_a() } else { prepare_b() })
                .collect();
            let (start, cpu_start) = (Instant::now(), process_cpu());
            for input in inputs {
                operation(input).await;
            }
            pairs.record(side, calls, start, cpu_start);
        }
    }
    pairs
}

/// Per-call times of two sides, round by round: `a[i]` and `b[i]` ran back to back. Wall time,
/// and CPU time of the whole process (client and server both run here), which background load
/// on a shared machine inflates far less than wall time.
struct Pairs {
    a: Vec<Duration>,
    b: Vec<Duration>,
    a_cpu: Vec<Duration>,
    b_cpu: Vec<Duration>,
}

impl Pairs {
    fn with_capacity(rounds: usize) -> Self {
        Self {
            a: Vec::with_capacity(rounds),
            b: Vec::with_capacity(rounds),
            a_cpu: Vec::with_capacity(rounds),
            b_cpu: Vec::with_capacity(rounds),
        }
    }

    fn record(&mut self, side: usize, calls: usize, start: Instant, cpu_start: Duration) {
        let calls = u32::try_from(calls).expect("calls");
        let wall = start.elapsed() / calls;
        let cpu = process_cpu().saturating_sub(cpu_start) / calls;
        if side == 0 {
            self.a.push(wall);
            self.a_cpu.push(cpu);
        } else {
            self.b.push(wall);
            self.b_cpu.push(cpu);
        }
    }
}

/// CPU time of every thread of this process so far (Linux: the sum of each thread's
/// `schedstat` run time, in nanoseconds); zero elsewhere.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn quartiles(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let at = |quarter: usize| values[(values.len() - 1) * quarter / 4];
    [at(1), at(2), at(3)]
}

/// Medians of each side, and the median (with quartiles) of the per-round ratio b / a, which
/// background load that comes and goes cannot tilt towards one side; for wall and CPU time.
fn report(what: &str, pairs: &Pairs) {
    for (kind, a, b) in [
        ("wall", &pairs.a, &pairs.b),
        ("cpu", &pairs.a_cpu, &pairs.b_cpu),
    ] {
        let micros = |times: &[Duration]| {
            quartiles(times.iter().map(|time| time.as_secs_f64() * 1e6).collect())[1]
        };
        let ratios = quartiles(
            a.iter()
                .zip(b)
                .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64().max(f64::MIN_POSITIVE))
                .collect(),
        );
        let (a_median, b_median) = (micros(a), micros(b));
        println!(
            "paired {what} [{kind}]: {a_median:.2} µs vs {b_median:.2} µs per call (medians of \
             {} rounds); ratio {:.3} (quartiles {:.3}..{:.3}), added {:.2} µs",
            a.len(),
            ratios[1],
            ratios[0],
            ratios[2],
            b_median - a_median,
        );
    }
}

criterion_group!(benches, bench_envoy);
criterion_main!(benches);
