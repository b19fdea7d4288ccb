//! Plain HTTP for the gateway tests: a raw HTTP/1.1 client (the request target goes on the wire
//! byte for byte, dot segments and encoded slashes included) and an upstream that echoes what
//! reached it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP answer: status, headers (names lowercase, in order) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("json body: {}", self.body))
    }
}

/// Sends `method target` with `headers` to `address` on a fresh connection and reads the answer.
pub async fn send(
    address: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(request.as_bytes()).await.expect("sends");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("reads");
    parse_answer(&raw)
}

/// A POST of `body` (its `content-length` set) with `headers` to `address` on a fresh connection.
pub async fn post(
    address: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(&bytes).await.expect("sends");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("reads");
    parse_answer(&raw)
}

/// A GET with a bearer token (none when `token` is empty) and extra headers.
pub async fn get(
    address: SocketAddr,
    target: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> HttpAnswer {
    let bearer = format!("Bearer {token}");
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if !token.is_empty() {
        headers.push(("authorization", &bearer));
    }
    send(address, "GET", target, &headers).await
}

fn parse_answer(raw: &[u8]) -> HttpAnswer {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let body = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    HttpAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|window| window == b"\r\n") {
        let size_line = String::from_utf8_lossy(&body[..end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
    out
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub target: String,
    /// Every value of every header, by lowercase name.
    pub headers: BTreeMap<String, Vec<String>>,
}

/// The API behind the gateway: answers 200 to everything with what it received as JSON
/// (`target`, `headers`), and remembers each request.
pub struct Upstream {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let seen = seen.clone();
                            async move { Ok::<_, Infallible>(echo(&seen, &request)) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            address,
            seen,
            _server: server,
        }
    }

    /// Every request that reached the upstream so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether any request whose target contains `needle` reached the upstream.
    pub fn reached(&self, needle: &str) -> bool {
        self.seen().iter().any(|seen| seen.target.contains(needle))
    }
}

fn echo(
    seen: &Mutex<Vec<Seen>>,
    request: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let record = Seen {
        target: request
            .uri()
            .path_and_query()
            .map(|target| target.as_str().to_owned())
            .unwrap_or_default(),
        headers,
    };
    let body = serde_json::json!({ "target": record.target, "headers": record.headers });
    seen.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(record);
    let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
