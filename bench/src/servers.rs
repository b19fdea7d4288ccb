//! The servers a bench run measures: child `tessera serve` processes of the server binary
//! ([`ServerBinary`]), each with a fresh database, seeded with one principal and one token
//! through the admin API. A server's ports are read from the port file it writes
//! (`tessera serve --port-file`, `tessera::app::PortFile`), not from its log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::RngExt;
use rand::distr::Alphanumeric;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tessera::app::PortFile;
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tessera::proto::{CreateTokenRequest, UpsertPrincipalRequest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A start covers migrations on a fresh database; Postgres may take a few seconds.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The seeded token's limit: far above anything two cores can send, so rate limiting never
/// shapes a throughput run.
pub const UNLIMITED_PER_MINUTE: u32 = 4_000_000_000;
const PRINCIPAL_ID: &str = "bench";
/// How often a starting server's port file is looked for.
const PORT_FILE_POLL: Duration = Duration::from_millis(20);
/// Server log lines shown before the rest are only counted: an overloaded server may warn on
/// every call, and printing each would load the machine being measured.
const RELAYED_LINES: u64 = 10;

/// The fresh databases of one bench run: SQLite files in a temporary directory, or databases
/// created on a Postgres server and dropped by [`Databases::remove`].
pub enum Databases {
    Sqlite {
        directory: tempfile::TempDir,
    },
    Postgres {
        /// A URL of the server, used to create and drop the bench's databases.
        server_url: String,
        created: Vec<String>,
    },
}

impl Databases {
    /// SQLite by default; `postgres://…` creates the databases on that server.
    pub fn new(postgres_server_url: Option<&str>) -> anyhow::Result<Self> {
        match postgres_server_url {
            None => Ok(Self::Sqlite {
                directory: tempfile::tempdir().context("cannot create a temporary directory")?,
            }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres {
                    server_url: url.to_owned(),
                    created: Vec::new(),
                })
            }
            Some(_) => bail!("--database-url must be a postgres:// URL (SQLite is the default)"),
        }
    }

    /// A new, empty database for the server named `label`; returns its URL.
    pub async fn create(&mut self, label: &str) -> anyhow::Result<String> {
        match self {
            Self::Sqlite { directory } => {
                let path = directory.path().join(format!("{label}.db"));
                Ok(format!("sqlite://{}", path.display()))
            }
            Self::Postgres {
                server_url,
                created,
            } => {
                let name = format!(
                    "tessera_bench_{}_{}",
                    ulid::Ulid::new().to_string().to_lowercase(),
                    label.replace('-', "_")
                );
                execute_on_server(server_url, &format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("cannot create database {name}"))?;
                created.push(name.clone());
                let mut url = url::Url::parse(server_url).context("invalid --database-url")?;
                url.set_path(&name);
                Ok(url.to_string())
            }
        }
    }

    /// Drops what [`Databases::create`] made; failures are reported, not returned, since this
    /// runs while cleaning up after success and failure alike.
    pub async fn remove(self) {
        let Self::Postgres {
            server_url,
            created,
        } = self
        else {
            return;
        };
        for name in created {
            // FORCE: a killed server's connections may not be gone yet.
            let dropped = execute_on_server(
                &server_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await;
            if let Err(error) = dropped {
                eprintln!("warning: could not drop database {name}: {error:#}");
            }
        }
    }
}

async fn execute_on_server(server_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect(server_url)
        .await
        .context("cannot connect to the Postgres server")?;
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await?;
    connection.close().await?;
    Ok(())
}

/// The `tessera` binary the bench starts as its servers.
#[derive(Debug, Clone)]
pub struct ServerBinary(PathBuf);

impl ServerBinary {
    /// `--server-binary` when given, else the workspace's release build: `release/tessera` in
    /// the target directory this executable was built in (`target/release/tessera` beside
    /// `target/release/tessera-bench`; `cargo build --release` at the workspace root builds
    /// both).
    pub fn resolve(given: Option<PathBuf>) -> anyhow::Result<Self> {
        let path = match given {
            Some(path) => path,
            None => default_server_binary()?,
        };
        if !path.is_file() {
            bail!(
                "no server binary at {}: build it with `cargo build --release` at the workspace \
                 root, or name one with --server-binary",
                path.display()
            );
        }
        eprintln!("server binary {}", path.display());
        Ok(Self(path))
    }
}

fn default_server_binary() -> anyhow::Result<PathBuf> {
    let executable = std::env::current_exe().context("cannot find this executable")?;
    release_server_beside(&executable)
        .context("this executable is not in a cargo target directory; use --server-binary")
}

/// `<target>/release/tessera` for an executable at `<target>/<profile>/tessera-bench`.
fn release_server_beside(executable: &Path) -> Option<PathBuf> {
    let target_directory = executable.parent()?.parent()?;
    Some(
        target_directory
            .join("release")
            .join(format!("tessera{}", std::env::consts::EXE_SUFFIX)),
    )
}

/// `--server`: a gRPC URL with an http or https scheme.
pub fn server_url(text: &str) -> Result<String, String> {
    let endpoint = Endpoint::from_shared(text.to_owned()).map_err(|error| error.to_string())?;
    match endpoint.uri().scheme_str() {
        Some("http" | "https") => Ok(text.to_owned()),
        _ => Err("expected a URL such as http://127.0.0.1:50051".to_owned()),
    }
}

/// How a spawned server differs from the default settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    On,
    /// `TESSERA_CACHE_CAPACITY=0`: every Check reads the store.
    Off,
}

/// A running `tessera serve` child, killed when stopped or dropped.
pub struct Server {
    pub label: &'static str,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The metrics listener (`GET /metrics`).
    pub metrics: std::net::SocketAddr,
    child: Child,
    /// The task relaying the server's log; it ends when the server's stderr closes.
    log_relay: JoinHandle<()>,
    log_errors: Arc<LogErrors>,
    /// Holds the server's port file; removed with the server.
    _directory: tempfile::TempDir,
}

/// The ERROR lines of a server's log: how many, and the first.
#[derive(Default)]
pub struct LogErrors {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl LogErrors {
    fn record(&self, line: &str) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| line.to_owned());
    }
}

impl Server {
    /// Starts `tessera serve` on ports the OS picks, reads them from its port file, and waits
    /// until it answers the health check. `TESSERA_*` variables of this process are not passed
    /// on, so the servers run on defaults plus what is set here.
    pub async fn start(
        binary: &ServerBinary,
        label: &'static str,
        database_url: &str,
        admin_key: &str,
        cache: Cache,
        redis_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let directory = tempfile::tempdir().context("cannot create a temporary directory")?;
        let port_file = directory.path().join("ports.json");
        let mut command = Command::new(&binary.0);
        command.arg("serve").arg("--port-file").arg(&port_file);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TESSERA_") {
                command.env_remove(name);
            }
        }
        command
            .env("TESSERA_LISTEN", "127.0.0.1:0")
            // Two servers run at once: neither may take the fixed default metrics port.
            .env("TESSERA_METRICS_LISTEN", "127.0.0.1:0")
            .env("TESSERA_DATABASE_URL", database_url)
            .env("TESSERA_ADMIN_KEYS", admin_key)
            .env("TESSERA_LOG", "warn")
            .env("TESSERA_LOG_FORMAT", "json");
        if cache == Cache::Off {
            command.env("TESSERA_CACHE_CAPACITY", "0");
        }
        if let Some(redis_url) = redis_url {
            // A prefix of its own, so runs never share (or inherit) budgets in one Redis.
            let prefix = format!("tessera-bench-{}", ulid::Ulid::new());
            command
                .env("TESSERA_REDIS_URL", redis_url)
                .env("TESSERA_REDIS_KEY_PREFIX", prefix);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the {label} server ({})", binary.0.display()))?;
        let stderr = child.stderr.take().context("server stderr is not piped")?;
        let log_errors = Arc::new(LogErrors::default());
        let log_relay = tokio::spawn(relay_log(label, stderr, log_errors.clone()));

        let ports = tokio::select! {
            ports = wait_for_port_file(&port_file) => ports?,
            status = child.wait() => {
                bail!("the {label} server exited before serving ({})", describe_exit(status));
            }
            () = tokio::time::sleep(STARTUP_TIMEOUT) => {
                bail!("the {label} server wrote no port file within {STARTUP_TIMEOUT:?}");
            }
        };
        let server = Self {
            label,
            url: format!("http://{}", ports.grpc),
            metrics: ports.metrics,
            child,
            log_relay,
            log_errors,
            _directory: directory,
        };
        wait_until_serving(&server.url)
            .await
            .with_context(|| format!("the {label} server at {} is not serving", server.url))?;
        Ok(server)
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How many ERROR lines the server has logged so far, and the first of them.
    pub fn log_errors(&self) -> (u64, Option<String>) {
        let first = self
            .log_errors
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.log_errors.count.load(Ordering::Relaxed), first)
    }

    /// The sum of counter `name` on the server's metrics listener, over the series whose labels
    /// contain `label` (e.g. `reason="allowed"`; empty: all series). A plain HTTP/1.0 GET: the
    /// bench needs nothing more of HTTP.
    pub async fn counter(&self, name: &str, label: &str) -> anyhow::Result<u64> {
        let mut stream = tokio::net::TcpStream::connect(self.metrics)
            .await
            .context("cannot reach the metrics listener")?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: tessera\r\n\r\n")
            .await?;
        let mut exposition = String::new();
        stream.read_to_string(&mut exposition).await?;
        Ok(counter_in(&exposition, name, label))
    }

    /// Kills the server and waits for it, and for the last of its log, to be gone.
    pub async fn stop(mut self) {
        if let Err(error) = self.child.kill().await {
            eprintln!("warning: could not stop the {} server: {error}", self.label);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.log_relay).await;
    }
}

/// The server's port file, once it is there. It is replaced whole, never written in place, so
/// a file that exists is complete.
async fn wait_for_port_file(path: &Path) -> anyhow::Result<PortFile> {
    loop {
        let read = tokio::task::spawn_blocking({
            let path = path.to_owned();
            move || PortFile::read(&path)
        })
        .await?;
        if let Some(ports) =
            read.with_context(|| format!("cannot read the port file {}", path.display()))?
        {
            return Ok(ports);
        }
        tokio::time::sleep(PORT_FILE_POLL).await;
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    }
}

/// Reads the server's log (warnings and errors, as JSON, or plain text such as a startup
/// failure): passes the first [`RELAYED_LINES`] lines to this stderr, counts the rest, and
/// counts ERROR lines in `errors`.
async fn relay_log(label: &'static str, stderr: ChildStderr, errors: Arc<LogErrors>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut relayed = 0_u64;
    let mut not_shown = 0_u64;
    while let Ok(Some(line)) = lines.next_line().await {
        if is_error(&line) {
            errors.record(&line);
        }
        if relayed < RELAYED_LINES {
            eprintln!("[{label} server] {line}");
            relayed += 1;
        } else {
            not_shown += 1;
        }
    }
    if not_shown > 0 {
        eprintln!("[{label} server] {not_shown} more log lines not shown");
    }
}

/// A counter's series in a Prometheus text exposition, summed.
fn counter_in(exposition: &str, name: &str, label: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && line.contains(label)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|count| count as u64)
        .sum()
}

/// A plain search, not a parse: under overload a server may log on every call.
fn is_error(line: &str) -> bool {
    line.contains(r#""level":"ERROR""#)
}

async fn wait_until_serving(url: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    let mut last_problem = String::from("no attempt");
    while tokio::time::Instant::now() < deadline {
        match health_status(url).await {
            Ok(status) if status == ServingStatus::Serving as i32 => return Ok(()),
            Ok(status) => last_problem = format!("health status {status}"),
            Err(error) => last_problem = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no SERVING health answer within {STARTUP_TIMEOUT:?} (last: {last_problem})")
}

async fn health_status(url: &str) -> anyhow::Result<i32> {
    let mut client = HealthClient::new(connect(url).await?);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status)
}

/// One HTTP/2 connection to `url` (Nagle off: every call is a small write).
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid server URL {url}"))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// A random admin key for the spawned servers (they require at least 16 characters).
pub fn random_admin_key() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Adds the admin key to every call of an [`AdminClient`].
#[derive(Clone)]
pub struct AdminKey(MetadataValue<Ascii>);

impl Interceptor for AdminKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type AdminClient = TokenAdminServiceClient<InterceptedService<Channel, AdminKey>>;

/// A TokenAdminService client of the server at `url`, sending `admin_key`.
pub async fn admin_client(url: &str, admin_key: &str) -> anyhow::Result<AdminClient> {
    let bearer: MetadataValue<Ascii> = format!("Bearer {admin_key}")
        .parse()
        .context("admin key is not valid metadata")?;
    let channel = connect(url).await?;
    Ok(TokenAdminServiceClient::with_interceptor(
        channel,
        AdminKey(bearer),
    ))
}

/// Creates principal `bench` with `*` and a token for `orders:*` without a practical rate limit;
/// returns the token's secret.
pub async fn seed(url: &str, admin_key: &str) -> anyhow::Result<String> {
    let mut admin = admin_client(url, admin_key).await?;
    admin
        .upsert_principal(UpsertPrincipalRequest {
            id: PRINCIPAL_ID.to_owned(),
            permissions: vec!["*".to_owned()],
            ..UpsertPrincipalRequest::default()
        })
        .await
        .context("cannot create the bench principal")?;
    let created = admin
        .create_token(CreateTokenRequest {
            owner_id: PRINCIPAL_ID.to_owned(),
            name: "bench".to_owned(),
            permissions: vec!["orders:*".to_owned()],
            rate_limit_per_minute: UNLIMITED_PER_MINUTE,
            ..CreateTokenRequest::default()
        })
        .await
        .context("cannot create the bench token")?;
    Ok(created.into_inner().secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_of_the_json_log_are_told_from_the_others() {
        assert!(is_error(
            r#"{"level":"ERROR","fields":{"message":"flush failed"}}"#
        ));
        assert!(!is_error(
            r#"{"level":"WARN","fields":{"message":"store slow"}}"#
        ));
        assert!(!is_error(
            r#"{"level":"INFO","fields":{"message":"store ready, migrations applied"}}"#
        ));
        assert!(!is_error("error: cannot bind"));
    }

    #[test]
    fn a_counter_is_summed_over_the_series_with_the_label() {
        let exposition = "\
# TYPE tessera_checks_total counter
tessera_checks_total{reason=\"allowed\"} 1200
tessera_checks_total{reason=\"token_unknown\"} 7
tessera_checks_total_other 5
tessera_store_credential_lookups_total 3
";
        assert_eq!(
            counter_in(exposition, "tessera_checks_total", r#"reason="allowed""#),
            1200
        );
        assert_eq!(counter_in(exposition, "tessera_checks_total", ""), 1207);
        assert_eq!(
            counter_in(exposition, "tessera_store_credential_lookups_total", ""),
            3
        );
    }

    #[tokio::test]
    async fn the_ports_are_read_from_the_port_file_once_it_is_written() {
        let directory = tempfile::tempdir().expect("dir");
        let path = directory.path().join("ports.json");
        let written = PortFile {
            grpc: "127.0.0.1:41234".parse().expect("address"),
            metrics: "127.0.0.1:41235".parse().expect("address"),
            health: None,
            http: None,
        };
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { wait_for_port_file(&path).await }
        });
        tokio::time::sleep(PORT_FILE_POLL * 3).await;
        assert!(!waiting.is_finished(), "no port file yet: still waiting");
        written.write(&path).expect("port file written");
        let read = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("read soon after it is written")
            .expect("task")
            .expect("port file read");
        assert_eq!(read, written);
    }

    #[tokio::test]
    async fn a_port_file_that_is_not_one_stops_the_wait() {
        let directory = tempfile::tempdir().expect("dir");
        let path = directory.path().join("ports.json");
        std::fs::write(&path, "serving grpc on 127.0.0.1:41234").expect("written");
        let error = wait_for_port_file(&path)
            .await
            .expect_err("not a port file");
        assert!(format!("{error:#}").contains("cannot read the port file"));
    }

    #[test]
    fn a_missing_server_binary_is_named_with_how_to_build_one() {
        let directory = tempfile::tempdir().expect("dir");
        let missing = directory.path().join("tessera");
        let error = ServerBinary::resolve(Some(missing.clone())).expect_err("no such binary");
        let message = format!("{error:#}");
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("cargo build --release"), "{message}");
    }

    #[test]
    fn the_default_server_binary_is_the_release_build_of_the_same_target_directory() {
        let suffix = std::env::consts::EXE_SUFFIX;
        assert_eq!(
            release_server_beside(Path::new("/src/target/release/tessera-bench")),
            Some(PathBuf::from(format!(
                "/src/target/release/tessera{suffix}"
            )))
        );
        assert_eq!(
            release_server_beside(Path::new("/src/target/debug/tessera-bench")),
            Some(PathBuf::from(format!(
                "/src/target/release/tessera{suffix}"
            ))),
            "a debug load generator still starts the release server"
        );
        assert_eq!(release_server_beside(Path::new("tessera-bench")), None);
    }

    #[test]
    fn server_urls_need_an_http_scheme() {
        assert!(server_url("http://127.0.0.1:50051").is_ok());
        assert!(server_url("https://tessera.internal").is_ok());
        assert!(server_url("127.0.0.1:50051").is_err());
    }

    #[test]
    fn admin_keys_are_long_enough_for_the_server() {
        assert!(random_admin_key().len() >= 16);
    }
}
