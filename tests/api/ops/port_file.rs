//! `tessera serve --port-file` / `TESSERA_PORT_FILE`: the bound addresses, written once every
//! listener is bound, each of which answers.

use std::net::SocketAddr;
use std::time::Duration;

use crate::helpers::ops::{ServingStatus, eventually, health_of, scrape};
use crate::helpers::process::{ServeProcess, serve_output};

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
        eventually(Duration::from_secs(20), || async {
            health_of(&grpc_url, "").await == ServingStatus::Serving
        })
        .await,
        "the gRPC port of the port file serves"
    );
    let health_url = format!("http://{}", address_in(&ports, "health"));
    assert_eq!(
        health_of(&health_url, "").await,
        ServingStatus::Serving,
        "the plaintext health port of the port file answers"
    );
    let exposition = scrape(address_in(&ports, "metrics")).await;
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
