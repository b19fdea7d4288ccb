//! The real `tessera serve` binary as a child process, for what only a process shows: signals,
//! exit codes, what reaches its log.

use std::net::SocketAddr;
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

/// The port file at `path` once the server has written it, as JSON.
async fn port_file(path: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(json) = std::fs::read_to_string(path) {
            return serde_json::from_str(&json).expect("the port file is a JSON object");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no port file at {} within 20 s",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn address_in(ports: &serde_json::Map<String, serde_json::Value>, key: &str) -> SocketAddr {
    ports[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string: {ports:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is an address: {ports:?}"))
}

#[tokio::test]
async fn serve_writes_every_bound_address_to_the_port_file_and_each_answers() {
    let ports_dir = tempfile::tempdir().expect("dir");
    let path = ports_dir.path().join("ports.json");
    let server = ServeProcess::start_with(
        &["--port-file", path.to_str().expect("a UTF-8 path")],
        &[("TESSERA_HEALTH_LISTEN", "127.0.0.1:0")],
    )
    .await;

    let ports = port_file(&path).await;
    let mut keys: Vec<&str> = ports.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["grpc", "health", "metrics"]);
    let grpc = address_in(&ports, "grpc");
    assert_ne!(grpc.port(), 0, "the bound port, not the configured 0");
    assert_eq!(
        format!("http://{grpc}"),
        server.grpc_url,
        "the address the log names"
    );
    let grpc_url = format!("http://{grpc}");
    assert!(
        super::eventually(Duration::from_secs(20), || async {
            super::health_of(&grpc_url, "").await == super::ServingStatus::Serving
        })
        .await,
        "the gRPC port of the port file serves"
    );
    let health_url = format!("http://{}", address_in(&ports, "health"));
    assert_eq!(
        super::health_of(&health_url, "").await,
        super::ServingStatus::Serving,
        "the plaintext health port of the port file answers"
    );
    let exposition = super::scrape(address_in(&ports, "metrics")).await;
    assert!(
        exposition.contains("tessera_health_serving"),
        "the metrics port of the port file serves /metrics"
    );
    let (status, _) = server.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn tessera_port_file_names_the_file_and_health_is_left_out_when_not_listening() {
    let ports_dir = tempfile::tempdir().expect("dir");
    let path = ports_dir.path().join("nested-name.json");
    let server =
        ServeProcess::start(&[("TESSERA_PORT_FILE", path.to_str().expect("a UTF-8 path"))]).await;

    let ports = port_file(&path).await;
    let mut keys: Vec<&str> = ports.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["grpc", "metrics"]);
    assert_eq!(
        format!("http://{}", address_in(&ports, "grpc")),
        server.grpc_url
    );
    let files: Vec<_> = std::fs::read_dir(ports_dir.path())
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(
        files,
        ["nested-name.json"],
        "no temporary file left beside it"
    );
    let (status, _) = server.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_port_file_that_cannot_be_written_fails_the_start() {
    let (code, stderr) =
        serve_output(&[("TESSERA_PORT_FILE", "/nonexistent-directory/ports.json")]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write the port file /nonexistent-directory/ports.json"),
        "{stderr}"
    );
}
