//! The port file: the addresses a started server bound, as a small JSON object, for a process
//! that starts `tessera serve --port-file PATH` on port 0 (the load generator in `bench/`, the
//! tests) and must learn the ports without reading the log.
//!
//! ```json
//! {"grpc":"127.0.0.1:41234","metrics":"127.0.0.1:41235","health":"127.0.0.1:41236"}
//! ```
//!
//! `health` is there only when a plaintext health listener is configured. The file is written
//! once every listener is bound (before the store is reached: health still says NOT_SERVING),
//! replaced whole (a reader never sees half of it), and left in place when the server exits.

use std::io;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A port file's mode: addresses are no secret.
const MODE: u32 = 0o644;

/// The bound addresses of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortFile {
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
}

impl PortFile {
    /// Writes the file at `path`, replacing what was there.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut json = serde_json::to_vec(self).map_err(io::Error::other)?;
        json.push(b'\n');
        super::atomic_file::replace(path, &json, MODE)
    }

    /// Reads the file at `path`: `None` while it does not exist yet.
    pub fn read(path: &Path) -> io::Result<Option<Self>> {
        let json = match std::fs::read(path) {
            Ok(json) => json,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_port_file_reads_back_and_names_health_only_when_there_is_one() {
        let directory = tempfile::tempdir().expect("dir");
        let path = directory.path().join("ports.json");
        let without_health = PortFile {
            grpc: SocketAddr::from(([127, 0, 0, 1], 41234)),
            metrics: SocketAddr::from(([127, 0, 0, 1], 41235)),
            health: None,
            http: None,
        };
        without_health.write(&path).expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"grpc\":\"127.0.0.1:41234\",\"metrics\":\"127.0.0.1:41235\"}\n"
        );
        assert_eq!(PortFile::read(&path).expect("read"), Some(without_health));

        let with_health = PortFile {
            health: Some(SocketAddr::from(([127, 0, 0, 1], 41236))),
            ..without_health
        };
        with_health.write(&path).expect("replaced");
        assert_eq!(PortFile::read(&path).expect("read"), Some(with_health));
    }

    #[test]
    fn a_missing_port_file_is_not_yet_there_and_a_garbled_one_is_an_error() {
        let directory = tempfile::tempdir().expect("dir");
        let path = directory.path().join("ports.json");
        assert_eq!(PortFile::read(&path).expect("no error"), None);
        std::fs::write(&path, "serving grpc on 127.0.0.1:1").expect("garbage");
        let error = PortFile::read(&path).expect_err("not JSON");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
