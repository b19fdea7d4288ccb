//! The servers a bench run measures: child processes of this same binary (`tessera serve`), each
//! with a fresh database, seeded with one principal and one token through the admin API.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::RngExt;
use rand::distr::Alphanumeric;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tessera::proto::token_admin_service_client::TokenAdminServiceClient;
use tessera::proto::{CreateTokenRequest, UpsertPrincipalRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;
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
/// The log line `tessera serve` writes once it listens; its `address` field is the bound port.
const SERVING_MESSAGE: &str = "serving grpc";
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
    child: Child,
    /// The task relaying the server's log; it ends when the server's stderr closes.
    log_relay: JoinHandle<()>,
    log_errors: Arc<LogErrors>,
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
    /// Starts `tessera serve` on a port the OS picks, reads the port from its log, and waits
    /// until it answers the health check. `TESSERA_*` variables of this process are not passed
    /// on, so the servers run on defaults plus what is set here.
    pub async fn start(
        label: &'static str,
        database_url: &str,
        admin_key: &str,
        cache: Cache,
    ) -> anyhow::Result<Self> {
        let executable = std::env::current_exe().context("cannot find this executable")?;
        let mut command = Command::new(executable);
        command.arg("serve");
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
            // Warnings, plus the app's few info lines, one of which names the bound address.
            .env("TESSERA_LOG", "warn,tessera::app=info")
            .env("TESSERA_LOG_FORMAT", "json");
        if cache == Cache::Off {
            command.env("TESSERA_CACHE_CAPACITY", "0");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start the {label} server"))?;
        let stderr = child.stderr.take().context("server stderr is not piped")?;
        let (address_sender, address_receiver) = oneshot::channel();
        let log_errors = Arc::new(LogErrors::default());
        let log_relay = tokio::spawn(relay_log(label, stderr, address_sender, log_errors.clone()));

        let address = tokio::select! {
            address = address_receiver => address.ok(),
            status = child.wait() => {
                bail!("the {label} server exited before serving ({})", describe_exit(status));
            }
            () = tokio::time::sleep(STARTUP_TIMEOUT) => None,
        };
        let Some(address) = address else {
            bail!("the {label} server did not report its address within {STARTUP_TIMEOUT:?}");
        };
        let server = Self {
            label,
            url: format!("http://{address}"),
            child,
            log_relay,
            log_errors,
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

    /// Kills the server and waits for it, and for the last of its log, to be gone.
    pub async fn stop(mut self) {
        if let Err(error) = self.child.kill().await {
            eprintln!("warning: could not stop the {} server: {error}", self.label);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.log_relay).await;
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    }
}

/// Reads the server's JSON log: hands over the address of the "serving" line, and passes the
/// first [`RELAYED_LINES`] lines that are not info (warnings, errors, or plain text such as a
/// startup failure) to this stderr; the rest are counted. ERROR lines are also counted in
/// `errors`.
async fn relay_log(
    label: &'static str,
    stderr: ChildStderr,
    address_sender: oneshot::Sender<SocketAddr>,
    errors: Arc<LogErrors>,
) {
    let mut address_sender = Some(address_sender);
    let mut lines = BufReader::new(stderr).lines();
    let mut relayed = 0_u64;
    let mut not_shown = 0_u64;
    while let Ok(Some(line)) = lines.next_line().await {
        if address_sender.is_some()
            && let Some(address) = serving_address(&line)
            && let Some(sender) = address_sender.take()
        {
            let _ = sender.send(address);
            continue;
        }
        if is_info(&line) {
            continue;
        }
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

fn log_fields(line: &str) -> Option<serde_json::Value> {
    let mut record: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(record.get_mut("fields")?.take())
}

fn serving_address(line: &str) -> Option<SocketAddr> {
    let fields = log_fields(line)?;
    if fields.get("message")?.as_str()? != SERVING_MESSAGE {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

/// The app's info lines (store ready, serving) are not worth relaying. A plain search, not a
/// parse: under overload a server may log on every call.
fn is_info(line: &str) -> bool {
    line.contains(r#""level":"INFO""#)
}

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
    fn the_address_is_read_from_the_serving_line_of_the_json_log() {
        let line = r#"{"timestamp":"2026-11-25T10:00:00Z","level":"INFO","fields":{"message":"serving grpc","address":"127.0.0.1:41234"},"target":"tessera::app"}"#;
        assert_eq!(
            serving_address(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 41234)))
        );
        let other = r#"{"level":"INFO","fields":{"message":"store ready, migrations applied"}}"#;
        assert_eq!(serving_address(other), None);
        assert_eq!(serving_address("error: cannot bind"), None);
        assert!(is_info(other));
        assert!(!is_info("error: cannot bind"));
        assert!(!is_info(
            r#"{"level":"WARN","fields":{"message":"store slow"}}"#
        ));
        assert!(is_error(
            r#"{"level":"ERROR","fields":{"message":"flush failed"}}"#
        ));
        assert!(!is_error(other));
    }

    #[test]
    fn admin_keys_are_long_enough_for_the_server() {
        assert!(random_admin_key().len() >= 16);
    }
}
