//! The real gateways, nginx and Caddy (Debian packages; `.ci/run` installs them), started as
//! child processes on free ports with their own configuration and files in a temporary
//! directory, from the configurations shipped in `examples/` with the addresses rewritten.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The addresses the examples are written with; a test puts its own in their place.
pub const EXAMPLE_TESSERA: &str = "127.0.0.1:8080";
pub const EXAMPLE_UPSTREAM: &str = "127.0.0.1:3000";
pub const EXAMPLE_LISTEN: &str = "8000";

/// A running gateway; killed when dropped.
pub struct Proxy {
    pub address: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    log: &'static str,
}

impl Proxy {
    /// nginx with `examples/nginx/tessera.conf` (an `http {}` include) in front of `upstream`,
    /// asking `tessera` (the HTTP listener).
    pub async fn nginx(tessera: SocketAddr, upstream: SocketAddr) -> Self {
        let address = free_address();
        let dir = tempfile::tempdir().expect("temp dir");
        let site = example("examples/nginx/tessera.conf", tessera, upstream, address);
        let prefix = dir.path().display().to_string();
        // Everything nginx writes goes under the prefix; the workers keep the test user (as root
        // the master would hand them to an account that cannot read the temporary directory).
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n\
             error_log {prefix}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  \
             proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n  \
             uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n  \
             include {prefix}/tessera.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("tessera.conf"), site).expect("site written");
        std::fs::write(dir.path().join("nginx.conf"), main).expect("config written");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts (apt-get install nginx; .ci/run does)");
        Self::ready(address, child, dir, "error.log").await
    }

    /// Caddy with `examples/caddy/Caddyfile` in front of `upstream`, asking `tessera`.
    pub async fn caddy(tessera: SocketAddr, upstream: SocketAddr) -> Self {
        let address = free_address();
        let dir = tempfile::tempdir().expect("temp dir");
        let caddyfile = example("examples/caddy/Caddyfile", tessera, upstream, address);
        std::fs::write(dir.path().join("Caddyfile"), caddyfile).expect("caddyfile written");
        let log = std::fs::File::create(dir.path().join("caddy.log")).expect("log file");
        let child = Command::new("caddy")
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("Caddyfile"))
            .arg("--adapter")
            .arg("caddyfile")
            // Caddy keeps its state under XDG_DATA_HOME / HOME: the temporary directory, not the
            // test user's.
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("caddy starts (apt-get install caddy; .ci/run does)");
        Self::ready(address, child, dir, "caddy.log").await
    }

    async fn ready(
        address: SocketAddr,
        mut child: Child,
        dir: tempfile::TempDir,
        log: &'static str,
    ) -> Self {
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited ({status}): {}", read_log(dir.path(), log));
            }
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Self {
                    address,
                    child,
                    dir,
                    log,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the proxy never listened on {address}: {}",
            read_log(dir.path(), log)
        );
    }

    /// The proxy's own log, for a failing assertion's message.
    pub fn log(&self) -> String {
        read_log(self.dir.path(), self.log)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// An example configuration with the test's addresses in place of the example's.
fn example(path: &str, tessera: SocketAddr, upstream: SocketAddr, listen: SocketAddr) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&file).expect("example readable");
    assert!(
        text.contains(EXAMPLE_TESSERA) && text.contains(EXAMPLE_UPSTREAM),
        "{path} names {EXAMPLE_TESSERA} and {EXAMPLE_UPSTREAM}"
    );
    text.replace(EXAMPLE_TESSERA, &tessera.to_string())
        .replace(EXAMPLE_UPSTREAM, &upstream.to_string())
        .replace(
            &format!("listen {EXAMPLE_LISTEN};"),
            &format!("listen {listen};"),
        )
        .replace(
            &format!(":{EXAMPLE_LISTEN} {{"),
            &format!("http://{listen} {{"),
        )
}

/// A port nobody listens on now (the proxy binds it a moment later).
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("address")
}
