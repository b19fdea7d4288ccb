//! HTTP forward-auth against gRPC Check on the same server, and what Tessera adds behind nginx,
//! all in one run. One real server (`App`, SQLite) with the HTTP listener holds a cached token;
//! every measured request is allowed (asserted before measuring).
//!
//! Modes, each a sequential client at concurrency 1 over one kept-alive connection, interleaved
//! in rounds so machine noise falls on all alike:
//! - `grpc_check`: `tessera.v1.AuthorizationService/Check` with a tonic client;
//! - `forward_auth`: `GET /forward-auth?tenant=acme` with `X-Forwarded-Method`/`-Uri`, as
//!   Traefik and Caddy send it;
//! - `nginx_upstream`: a client → nginx → upstream (an echo of "ok"), no auth;
//! - `nginx_tessera_upstream`: the same through `examples/nginx/tessera.conf` (auth_request).
//!
//! Needs nginx on PATH. `cargo bench --bench gateways` (TESSERA_BENCH_ROUNDS, _PER_ROUND).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use tessera::app::App;
use tessera::config::{Config, EnvoyRule, Settings};
use tessera::proto;
use tessera::proto::authorization_service_client::AuthorizationServiceClient;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Request;

const TENANT: &str = "acme";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn admin<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {key}").parse().expect("ascii key");
    request.metadata_mut().insert("authorization", value);
    request
}

/// An HTTP/1.1 connection kept alive across requests; answers must carry `content-length`.
struct KeepAlive {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl KeepAlive {
    async fn connect(address: SocketAddr) -> Self {
        let stream = TcpStream::connect(address).await.expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` (a whole HTTP/1.1 request) and returns the answer's status.
    async fn round_trip(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.expect("sends");
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let read = self.stream.read(&mut chunk).await.expect("reads");
            assert!(read > 0, "connection closed");
            self.buffer.extend_from_slice(&chunk[..read]);
            let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("length"));
            if self.buffer.len() >= end + 4 + length {
                return head[9..12].parse().expect("status");
            }
        }
    }
}

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("address")
}

/// nginx with the example (auth) server and a plain proxy server, both before `upstream`.
fn nginx(
    dir: &std::path::Path,
    tessera: SocketAddr,
    upstream: SocketAddr,
) -> (std::process::Child, SocketAddr, SocketAddr) {
    let with_auth = free_address();
    let plain = free_address();
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nginx/tessera.conf"),
    )
    .expect("example")
    .replace("127.0.0.1:8080", &tessera.to_string())
    .replace("127.0.0.1:3000", &upstream.to_string())
    .replace("listen 8000;", &format!("listen {with_auth};"));
    let prefix = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n\
         error_log {prefix}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
         access_log off;\nkeepalive_requests 1000000;\nclient_body_temp_path {prefix}/body;\nproxy_temp_path {prefix}/proxy;\n\
         fastcgi_temp_path {prefix}/fastcgi;\nuwsgi_temp_path {prefix}/uwsgi;\n\
         scgi_temp_path {prefix}/scgi;\n{example}\n\
         server {{ listen {plain}; location / {{ proxy_pass http://api; }} }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).expect("config");
    let child = std::process::Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&path)
        .arg("-e")
        .arg(dir.join("error.log"))
        .spawn()
        .expect("nginx on PATH");
    (child, with_auth, plain)
}

async fn wait_for(address: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(address).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {address}");
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_number("TESSERA_BENCH_ROUNDS", 10);
    let per_round = env_number("TESSERA_BENCH_PER_ROUND", 2000);
    let dir = tempfile::tempdir().expect("dir");
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        http_listen: Some("127.0.0.1:0".parse().expect("address")),
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()).into(),
        admin_key_file: Some(dir.path().join("tessera-admin.key")),
        envoy_trusted_hops: 1,
        envoy_rules: vec![EnvoyRule {
            method: "GET".to_owned(),
            path: None,
            prefix: Some("/api/v1/orders/".to_owned()),
            permission: "orders:read".to_owned(),
            ..Default::default()
        }],
        ..Settings::default()
    };
    let app = App::build(Config::parse(settings).expect("valid"))
        .await
        .expect("builds");
    let grpc_url = format!("http://{}", app.local_addr());
    let http = app.http_addr().expect("http listener");
    let key = std::fs::read_to_string(app.bootstrap_key_path().expect("bootstrap key"))
        .expect("key")
        .trim()
        .to_owned();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));

    let mut admin_client = TokenAdminServiceClient::connect(grpc_url.clone())
        .await
        .expect("admin");
    admin_client
        .upsert_principal(admin(
            proto::UpsertPrincipalRequest {
                tenant: TENANT.to_owned(),
                id: "bench".to_owned(),
                permissions: vec!["orders:read".to_owned()],
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect("principal");
    let secret = admin_client
        .create_token(admin(
            proto::CreateTokenRequest {
                tenant: TENANT.to_owned(),
                owner_id: "bench".to_owned(),
                name: "bench".to_owned(),
                permissions: vec!["orders:read".to_owned()],
                rate_limit_per_minute: 1_000_000_000,
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect("token")
        .into_inner()
        .secret;

    let upstream = upstream().await;
    let (mut nginx, with_auth, plain) = nginx(dir.path(), http, upstream);
    wait_for(with_auth).await;
    wait_for(plain).await;

    let mut grpc = AuthorizationServiceClient::connect(grpc_url)
        .await
        .expect("authz");
    let check = proto::CheckRequest {
        token: secret.clone(),
        tenant: TENANT.to_owned(),
        permission: "orders:read".to_owned(),
        endpoint: "GET /api/v1/orders/*".to_owned(),
        client_ip: "203.0.113.9".to_owned(),
        ..Default::default()
    };
    let forward_auth = format!(
        "GET /forward-auth?tenant={TENANT} HTTP/1.1\r\nhost: tessera\r\n\
         authorization: Bearer {secret}\r\nx-forwarded-method: GET\r\n\
         x-forwarded-uri: /api/v1/orders/7\r\nx-forwarded-for: 203.0.113.9\r\n\r\n"
    );
    let through = format!(
        "GET /api/v1/orders/7 HTTP/1.1\r\nhost: api\r\nauthorization: Bearer {secret}\r\n\r\n"
    );
    let mut direct_http = KeepAlive::connect(http).await;
    let mut nginx_auth = KeepAlive::connect(with_auth).await;
    let mut nginx_plain = KeepAlive::connect(plain).await;

    // Warm up and prove every mode is allowed.
    for _ in 0..200 {
        let answer = grpc.check(check.clone()).await.expect("check").into_inner();
        assert!(answer.allowed, "{answer:?}");
        assert_eq!(direct_http.round_trip(forward_auth.as_bytes()).await, 200);
        assert_eq!(nginx_auth.round_trip(through.as_bytes()).await, 200);
        assert_eq!(nginx_plain.round_trip(through.as_bytes()).await, 200);
    }

    let names = [
        "grpc_check",
        "forward_auth",
        "nginx_upstream",
        "nginx_tessera_upstream",
    ];
    let mut samples: Vec<Vec<Duration>> = (0..names.len())
        .map(|_| Vec::with_capacity(rounds * per_round))
        .collect();
    for _ in 0..rounds {
        for (mode, sample) in samples.iter_mut().enumerate() {
            for _ in 0..per_round {
                let started = Instant::now();
                match mode {
                    0 => {
                        let answer = grpc.check(check.clone()).await.expect("check");
                        assert!(answer.get_ref().allowed);
                    }
                    1 => assert_eq!(direct_http.round_trip(forward_auth.as_bytes()).await, 200),
                    2 => assert_eq!(nginx_plain.round_trip(through.as_bytes()).await, 200),
                    _ => assert_eq!(nginx_auth.round_trip(through.as_bytes()).await, 200),
                }
                sample.push(started.elapsed());
            }
        }
    }
    let _ = nginx.kill();
    let _ = nginx.wait();

    println!("{rounds} rounds x {per_round} requests per mode, concurrency 1, interleaved");
    println!(
        "{:<24} {:>10} {:>10} {:>10}",
        "mode", "p50 µs", "p99 µs", "mean µs"
    );
    let mut summary = Vec::new();
    for (name, sample) in names.iter().zip(samples.iter_mut()) {
        sample.sort();
        let mean = sample.iter().sum::<Duration>() / u32::try_from(sample.len()).expect("len");
        let (p50, p99) = (percentile(sample, 0.5), percentile(sample, 0.99));
        println!(
            "{name:<24} {:>10.1} {:>10.1} {:>10.1}",
            micros(p50),
            micros(p99),
            micros(mean)
        );
        summary.push((p50, p99));
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "forward_auth / grpc_check: p50 {:.2}x, p99 {:.2}x",
        ratio(summary[1].0, summary[0].0),
        ratio(summary[1].1, summary[0].1)
    );
    println!(
        "nginx added by Tessera: p50 +{:.1} µs ({:.2}x), p99 +{:.1} µs ({:.2}x)",
        micros(summary[3].0) - micros(summary[2].0),
        ratio(summary[3].0, summary[2].0),
        micros(summary[3].1) - micros(summary[2].1),
        ratio(summary[3].1, summary[2].1)
    );
}
