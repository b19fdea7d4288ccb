//! The real `tessera serve` binary as a child process, for what only a process shows: signals,
//! exit codes, what reaches its log.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The log line `tessera serve` writes once it listens; its `address` field is the gRPC address.
const SERVING_MESSAGE: &str = "serving grpc";
/// Once the process has exited its stderr reaches EOF; the reader must be done by then, or the
/// test fails rather than inspecting a log that lacks its end.
const LOG_END_WITHIN: Duration = Duration::from_secs(10);

pub struct ServeProcess {
    child: Child,
    pub grpc_url: String,
    /// Every line the server wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
    /// Reads stderr into `log` until EOF.
    log_reader: JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Starts `tessera serve` on SQLite in a fresh directory, on ports the OS picks, with JSON
    /// logs, plus `variables`; waits for the line naming its address.
    pub async fn start(variables: &[(&str, &str)]) -> Self {
        Self::start_with(&[], variables).await
    }

    /// Like `start`, with `arguments` after `tessera serve`.
    pub async fn start_with(arguments: &[&str], variables: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        command.arg("serve").args(arguments);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TESSERA_") {
                command.env_remove(name);
            }
        }
        command
            .env("TESSERA_LISTEN", "127.0.0.1:0")
            .env("TESSERA_METRICS_LISTEN", "127.0.0.1:0")
            .env(
                "TESSERA_DATABASE_URL",
                format!("sqlite://{}/tessera.db", dir.path().display()),
            )
            .env("TESSERA_LOG", "info")
            .env("TESSERA_LOG_FORMAT", "json")
            .envs(variables.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("tessera serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_sender, address_receiver) = oneshot::channel();
        let log_reader = tokio::spawn(collect_log(stderr, log.clone(), address_sender));
        let address = tokio::time::timeout(Duration::from_secs(20), address_receiver)
            .await
            .unwrap_or_else(|_| panic!("no serving line; log: {:?}", log.lock().map(|l| l.clone())))
            .expect("the log names the address");
        Self {
            child,
            grpc_url: format!("http://{address}"),
            log,
            log_reader,
            dir,
        }
    }

    /// Sends `signal` (`TERM`, `HUP`, …) to the server.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIG{signal} delivered");
    }

    /// The HTTP listener's address, from the serving line (`http = Some(…)`), when one is on.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        let log = self.log.lock().ok()?;
        log.iter().find_map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).ok()?;
            if record["fields"]["message"] != SERVING_MESSAGE {
                return None;
            }
            let shown = record["fields"]["http"].as_str()?;
            shown.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()
        })
    }

    /// The working directory: the SQLite file and the bootstrap admin key file live here.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// SIGKILL: no drain, no flush, nothing the process could do about it.
    pub async fn kill(mut self) -> Vec<String> {
        self.child.kill().await.expect("killed");
        whole_log(self.log_reader, &self.log).await
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(self) -> (ExitStatus, Vec<String>) {
        let (status, log, _dir) = self.terminate_keeping_dir().await;
        (status, log)
    }

    /// Like `terminate`, handing back the directory so that the database can be read after the
    /// last write.
    pub async fn terminate_keeping_dir(mut self) -> (ExitStatus, Vec<String>, tempfile::TempDir) {
        self.signal("TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within 20 s of SIGTERM")
            .expect("exit status");
        let log = whole_log(self.log_reader, &self.log).await;
        (status, log, self.dir)
    }
}

/// Every line of an exited process's log: waits for the reader to reach stderr's EOF.
async fn whole_log(log_reader: JoinHandle<()>, log: &Mutex<Vec<String>>) -> Vec<String> {
    tokio::time::timeout(LOG_END_WITHIN, log_reader)
        .await
        .expect("the log reader reaches the end of stderr after the exit")
        .expect("the log reader does not panic");
    log.lock().expect("log").clone()
}

/// Runs `tessera serve` with `variables` to its end (for starts that must fail).
pub async fn serve_output(variables: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command.arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TESSERA_") {
            command.env_remove(name);
        }
    }
    let output = command
        .env("TESSERA_LISTEN", "127.0.0.1:0")
        .env("TESSERA_METRICS_LISTEN", "127.0.0.1:0")
        .env(
            "TESSERA_DATABASE_URL",
            format!("sqlite://{}/tessera.db", dir.path().display()),
        )
        .envs(variables.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("a failing start ends at once")
        .expect("output");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn collect_log(
    stderr: tokio::process::ChildStderr,
    log: Arc<Mutex<Vec<String>>>,
    address_sender: oneshot::Sender<String>,
) {
    let mut address_sender = Some(address_sender);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line)
            && record["fields"]["message"] == SERVING_MESSAGE
            && let Some(address) = record["fields"]["address"].as_str()
            && let Some(sender) = address_sender.take()
        {
            let _ = sender.send(address.to_owned());
        }
        if let Ok(mut log) = log.lock() {
            log.push(line);
        }
    }
}
