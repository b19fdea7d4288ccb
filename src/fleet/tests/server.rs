//! Private Redis servers for the tests: `redis-server` on a free port, no persistence, killed
//! when dropped. A missing `redis-server` fails the test (it never skips).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    /// Listens with TLS only (`--tls-port`).
    tls: bool,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        Self::start_with(&[], false, |_| Vec::new())
    }

    /// TLS only, with this certificate chain and key (PEM); clients need no certificate.
    pub(crate) fn start_tls(cert: &str, key: &str) -> Self {
        Self::start_with(&["--port", "0", "--tls-auth-clients", "no"], true, |dir| {
            let (cert_file, key_file) = (dir.join("redis.crt"), dir.join("redis.key"));
            std::fs::write(&cert_file, cert).expect("write the certificate");
            std::fs::write(&key_file, key).expect("write the key");
            vec![
                "--tls-cert-file".to_owned(),
                cert_file.display().to_string(),
                "--tls-key-file".to_owned(),
                key_file.display().to_string(),
                // Redis wants an authority even when it does not ask clients for certificates.
                "--tls-ca-cert-file".to_owned(),
                cert_file.display().to_string(),
            ]
        })
    }

    fn start_with(extra: &[&str], tls: bool, files: impl Fn(&Path) -> Vec<String>) -> Self {
        let cluster = extra.contains(&"--cluster-enabled");
        // A port found free can be taken by another test before redis binds it: try again.
        for _ in 0..5 {
            let port = free_port(cluster);
            let dir = tempfile::tempdir().expect("temporary directory");
            let mut extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
            extra.extend(files(dir.path()));
            let mut server = Self {
                port,
                dir,
                tls,
                extra,
                child: None,
            };
            server.child = server.spawn();
            if server.child.is_some() {
                return server;
            }
        }
        panic!("redis-server did not start on any free port");
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("reap redis-server");
        }
    }

    /// Starts it again on the same port, empty (nothing was persisted).
    pub(crate) fn restart(&mut self) {
        self.kill();
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Some(child) = self.spawn() {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// SIGSTOP: connections stay open and nothing answers, like a Redis stuck or far away.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// A command through redis-cli, its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Starts redis-server and waits until it answers (a PING, or a TCP connection for TLS);
    /// None if it exited (its port was taken).
    fn spawn(&self) -> Option<Child> {
        let (port_flag, port) = if self.tls {
            ("--tls-port", self.port)
        } else {
            ("--port", self.port)
        };
        let mut child = Command::new("redis-server")
            .arg(port_flag)
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is needed for the fleet tests (Debian: apt-get install redis-server)",
            );
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if child.try_wait().expect("redis-server status").is_some() {
                return None;
            }
            let answers = if self.tls {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                ping(port)
            };
            if answers {
                return Some(child);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Resumed first, in case a test paused it and failed.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three masters holding all 16384 slots, no replicas.
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                    false,
                    |_| Vec::new(),
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli is needed for the cluster test");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let started = Instant::now();
        while !nodes
            .iter()
            .all(|node| node.cli(&["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster did not become ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { nodes }
    }

    pub(crate) fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    pub(crate) fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// A port free now; for a cluster node also its bus port (port + 10000).
fn free_port(with_bus: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if !with_bus {
            return port;
        }
        if port <= 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli is needed for the fleet tests");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
