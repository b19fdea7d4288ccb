//! Watching and steering a server: its health and metrics, polling for a condition, a table lock
//! that keeps an admin call in flight, a gateway that is down until opened, and a server of its
//! own (`Served`) for the lifecycle tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub use tonic_health::pb::health_check_response::ServingStatus;

/// The health status the server reports for `service` ("" = the whole server).
pub async fn health_of(url: &str, service: &str) -> ServingStatus {
    let channel = Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("health client connects");
    health_on(channel, service).await
}

pub async fn health_on(channel: Channel, service: &str) -> ServingStatus {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status;
    ServingStatus::try_from(status).expect("a known status")
}

/// `GET /metrics`, over plain HTTP/1.1: the body.
pub async fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.expect("metrics connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n")
        .await
        .expect("request written");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// The sum of every series of `name` whose labels include all of `labels`; 0 when none.
pub fn metric(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A transaction holding an exclusive lock on a table, so that writes to it wait: a way to keep
/// an admin call (every mutation writes `audit_events`) in flight for as long as a test needs.
pub struct TableLock {
    connection: PgConnection,
}

impl TableLock {
    pub async fn hold(database_url: &str, table: &'static str) -> Self {
        let mut connection = PgConnection::connect(database_url)
            .await
            .expect("lock connection");
        sqlx::query("BEGIN")
            .execute(&mut connection)
            .await
            .expect("begin");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut connection)
        .await
        .expect("lock");
        Self { connection }
    }

    pub async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.connection)
            .await
            .expect("rollback");
    }
}

/// A TCP forwarder to `target` that drops every connection until opened: a database that is
/// down, then comes up, without touching the real server.
pub struct Gateway {
    pub address: SocketAddr,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn closed(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let address = listener.local_addr().expect("gateway address");
        let open = Arc::new(AtomicBool::new(false));
        let is_open = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            address,
            open,
            task,
        }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Settings for a server of its own on `database`, on ports the OS picks, with its bootstrap
/// key written into `dir`.
pub fn settings_on(
    database: &crate::helpers::TestDatabase,
    dir: &std::path::Path,
) -> tessera::config::Settings {
    tessera::config::Settings {
        listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: "127.0.0.1:0".parse().expect("address"),
        database_url: database.url().to_owned().into(),
        admin_key_file: Some(dir.join("tessera-admin.key")),
        ..tessera::config::Settings::default()
    }
}

/// A built app serving on its own task until `stop` is sent.
pub struct Served {
    pub grpc_url: String,
    pub admin_key: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<Result<(), tessera::app::AppError>>,
}

impl Served {
    pub async fn start(settings: tessera::config::Settings) -> Self {
        let config = tessera::config::Config::parse(settings).expect("valid settings");
        let app = tessera::app::App::build(config).await.expect("app builds");
        let grpc_url = format!("http://{}", app.local_addr());
        let admin_key = std::fs::read_to_string(app.bootstrap_key_path().expect("bootstrap key"))
            .expect("key file")
            .trim()
            .to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            grpc_url,
            admin_key,
            stop: Some(stop),
            server,
        }
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
