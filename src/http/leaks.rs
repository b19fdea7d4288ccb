//! Leak reports on the HTTP listener (issue 17, point 4), acted on by `Admin::report_leak`
//! (src/admin/leaks.rs) under each token's tenant policy `leak_action`:
//!
//! - `POST /secret-scanning/github`: GitHub's secret scanning partner program. The raw body is
//!   verified against `Github-Public-Key-Identifier` / `Github-Public-Key-Signature` with the
//!   keys of `TESSERA_GITHUB_SCANNING_KEYS_FILE` (GitHub's key-list JSON), re-read when the file
//!   changes (its modification time, length or inode, looked at on each report); only then is the
//!   body parsed and acted on. Answered 200 with `[{token_raw, token_type, label}]` once every
//!   match was acted on. Missing headers or an unknown key id: 401; a signature that does not
//!   verify: 403; nothing done in either case. The route exists only when the file is configured.
//! - `POST /leaked-tokens`: anyone, unauthenticated, `{"tokens": [...], "url": "..."}` with 1 to
//!   100 tokens; rate-limited per client IP (IPv6 per /64) before the body is read; answered 202
//!   at once, before any token is looked up, and acted on in the background (at most
//!   [`MAX_REPORTS_IN_FLIGHT`] reports at a time, 503 beyond): neither the answer nor its timing
//!   tells the reporter whether a token was live.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderValue};
use tokio::sync::Semaphore;

use super::Peer;
use crate::admin::Admin;
use crate::domain::leak::{
    self, GithubKeys, GithubLabel, KeyListError, LeakSource, ReportError, SignatureError,
};
use crate::domain::network::forwarded_client;

/// GitHub's secret scanning reports.
pub const GITHUB_PATH: &str = "/secret-scanning/github";
/// Anyone's reports of leaked tokens.
pub const REPORT_PATH: &str = "/leaked-tokens";

/// The header naming the key GitHub signed with.
const KEY_ID_HEADER: &str = "github-public-key-identifier";
/// The header with the signature: base64 of ASN.1 DER ECDSA P-256 SHA-256 over the raw body.
const SIGNATURE_HEADER: &str = "github-public-key-signature";

/// The largest keys file read (GitHub's list holds a few keys of a few hundred bytes each).
pub const MAX_KEYS_FILE_BYTES: u64 = 1024 * 1024;

/// At most this many `/leaked-tokens` reports acted on at once in the background; beyond,
/// a report is answered 503 (whatever it holds).
pub const MAX_REPORTS_IN_FLIGHT: usize = 16;

/// At most this many client addresses (IPv6: /64 networks) have a rate-limit bucket; the least
/// recently seen lose theirs first.
const MAX_LIMITED_CLIENTS: u64 = 100_000;

/// The settings of both routes (`TESSERA_GITHUB_SCANNING_KEYS_FILE`,
/// `TESSERA_LEAK_REPORTS_PER_MINUTE`, and `TESSERA_ENVOY_TRUSTED_HOPS` for the client IP).
#[derive(Debug, Clone)]
pub struct LeakSettings {
    /// GitHub's key list; None: `/secret-scanning/github` is not served.
    pub github_keys_file: Option<PathBuf>,
    /// `/leaked-tokens` requests per client IP per minute (also the burst).
    pub reports_per_minute: NonZeroU32,
    /// Proxies in front of the listener that append to `X-Forwarded-For`; 0: the peer is the
    /// client.
    pub trusted_hops: usize,
}

/// What the handlers share: the admin side (set once the store is connected; until then every
/// report is answered 503), the keys file and the per-client limiter.
#[derive(Clone)]
pub struct Leaks {
    admin: Arc<OnceLock<Arc<Admin>>>,
    keys: Option<Arc<KeyFile>>,
    limiter: Arc<ClientLimiter>,
    in_flight: Arc<Semaphore>,
    trusted_hops: usize,
}

impl Leaks {
    pub fn new(admin: Arc<OnceLock<Arc<Admin>>>, settings: &LeakSettings) -> Self {
        Self {
            admin,
            keys: settings
                .github_keys_file
                .clone()
                .map(|path| Arc::new(KeyFile::new(path))),
            limiter: Arc::new(ClientLimiter::new(settings.reports_per_minute)),
            in_flight: Arc::new(Semaphore::new(MAX_REPORTS_IN_FLIGHT)),
            trusted_hops: settings.trusted_hops,
        }
    }
}

pub(super) fn routes(state: Leaks, max_body_bytes: usize) -> Router {
    let report = move |State(state): State<Leaks>, request: Request| async move {
        public_report(&state, request, max_body_bytes).await
    };
    let mut router = Router::new().route(REPORT_PATH, post(report));
    if state.keys.is_some() {
        let github = move |State(state): State<Leaks>, request: Request| async move {
            github_report(&state, request, max_body_bytes).await
        };
        router = router.route(GITHUB_PATH, post(github));
    }
    router.with_state(state)
}

async fn github_report(state: &Leaks, request: Request, max_body_bytes: usize) -> Response {
    let Some(keys) = &state.keys else {
        return super::plain(StatusCode::NOT_FOUND, "not_found");
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return super::plain(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let (Some(key_id), Some(signature)) = (header(KEY_ID_HEADER), header(SIGNATURE_HEADER)) else {
        return super::plain(StatusCode::UNAUTHORIZED, "signature_missing");
    };
    let keys = match keys.current().await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::error!(%error, "github secret scanning keys unavailable");
            return super::plain(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable");
        }
    };
    if let Err(error) = keys.verify(key_id, signature, &body) {
        // Debug only: anyone can send these, and a warning per request would flood the log.
        tracing::debug!(%error, "github secret scanning report refused");
        return match error {
            SignatureError::UnknownKey => super::plain(StatusCode::UNAUTHORIZED, "unknown_key"),
            SignatureError::Malformed | SignatureError::Invalid => {
                super::plain(StatusCode::FORBIDDEN, "bad_signature")
            }
        };
    }
    let Some(admin) = state.admin.get() else {
        return super::plain(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    };
    let matches = match leak::parse_github_matches(&body) {
        Ok(matches) => matches,
        Err(error) => return invalid(&error),
    };
    let mut labels = Vec::with_capacity(matches.len());
    for found in matches {
        let url = leak::bounded_url(&found.url);
        match admin
            .report_leak(LeakSource::Github, &found.token, url.as_deref())
            .await
        {
            Ok(outcome) => labels.push(GithubLabel {
                label: outcome.github_label(),
                token_raw: found.token,
                token_type: found.token_type,
            }),
            // GitHub sends the report again; what was done already is not done twice.
            Err(error) => {
                tracing::warn!(%error, "github secret scanning report not acted on");
                return super::plain(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
            }
        }
    }
    json(StatusCode::OK, &labels)
}

async fn public_report(state: &Leaks, request: Request, max_body_bytes: usize) -> Response {
    let peer = request.extensions().get::<Peer>().map(|peer| peer.0.ip());
    let client = client_ip(request.headers(), peer, state.trusted_hops);
    if let Err(retry_after) = state.limiter.admit(client) {
        let mut response = super::plain(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::try_from(seconds.max(1).to_string()) {
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, value);
        }
        return response;
    }
    let body = match axum::body::to_bytes(request.into_body(), max_body_bytes).await {
        Ok(body) => body,
        Err(_) => return super::plain(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    };
    let report = match leak::parse_public_report(&body) {
        Ok(report) => report,
        Err(error) => return invalid(&error),
    };
    let Some(admin) = state.admin.get().cloned() else {
        return super::plain(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
    };
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        return super::plain(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    };
    // Acted on after the answer: how long that takes (a lookup, a revocation) must not tell the
    // reporter which tokens were live.
    tokio::spawn(async move {
        let _permit = permit;
        for presented in &report.tokens {
            if let Err(error) = admin
                .report_leak(LeakSource::Report, presented, report.url.as_deref())
                .await
            {
                tracing::warn!(%error, "leaked token report not acted on");
            }
        }
    });
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "status": "accepted" }),
    )
}

/// The client's address: the entry `trusted_hops` from the right of `X-Forwarded-For` (as
/// forward-auth and Envoy read it), else the connection's peer.
pub(crate) fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted_hops: usize,
) -> Option<IpAddr> {
    if trusted_hops > 0 {
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if let Some(client) = forwarded_client(&forwarded.join(","), trusted_hops) {
            return Some(client);
        }
    }
    // Without a usable header the peer is the nearest proxy: its clients share one bucket,
    // never one a client could pick by writing the header.
    peer
}

/// 400 naming the field (`tokens`, `url`) or the shape.
fn invalid(error: &ReportError) -> Response {
    let field = match error {
        ReportError::Field { field, .. } => Some(*field),
        ReportError::Shape(_) => None,
    };
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({
            "error": "invalid_argument",
            "field": field,
            "message": error.to_string(),
        }),
    )
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string(body).unwrap_or_else(|_| "null".to_owned());
    let mut response = (status, Body::from(body)).into_response();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why the keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_KEYS_FILE_BYTES} bytes")]
    TooLarge { path: String },
    #[error("{path}: {source}")]
    Invalid { path: String, source: KeyListError },
}

/// Reads and parses the keys file (once at start, by `Config::parse`, and on each change).
pub fn load_keys(path: &std::path::Path) -> Result<GithubKeys, KeysFileError> {
    let shown = path.display().to_string();
    let read = |source| KeysFileError::Read {
        path: shown.clone(),
        source,
    };
    let length = std::fs::metadata(path).map_err(read)?.len();
    if length > MAX_KEYS_FILE_BYTES {
        return Err(KeysFileError::TooLarge { path: shown });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    GithubKeys::parse(&bytes).map_err(|source| KeysFileError::Invalid {
        path: shown,
        source,
    })
}

/// The keys file and the keys last read from it, with the file's stamp then.
struct KeyFile {
    path: PathBuf,
    loaded: tokio::sync::Mutex<Option<(Stamp, Arc<GithubKeys>)>>,
}

/// What tells a changed file: a replacement (rename) changes the inode, an edit the
/// modification time or, within one tick of it, most likely the length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

impl Stamp {
    fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            modified: metadata.modified().ok(),
            length: metadata.len(),
            inode,
        }
    }
}

impl KeyFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            loaded: tokio::sync::Mutex::new(None),
        }
    }

    /// The keys, re-read when the file changed since the last read. A file that cannot be read
    /// or parsed is an error each time (the keys of before are not kept: a rotation that removes
    /// a key must take effect), tried again on the next report.
    async fn current(&self) -> Result<Arc<GithubKeys>, KeysFileError> {
        let shown = || self.path.display().to_string();
        let metadata =
            tokio::fs::metadata(&self.path)
                .await
                .map_err(|source| KeysFileError::Read {
                    path: shown(),
                    source,
                })?;
        let stamp = Stamp::of(&metadata);
        let mut loaded = self.loaded.lock().await;
        if let Some((seen, keys)) = loaded.as_ref()
            && *seen == stamp
        {
            return Ok(keys.clone());
        }
        let path = self.path.clone();
        let keys = tokio::task::spawn_blocking(move || load_keys(&path))
            .await
            .map_err(|error| KeysFileError::Read {
                path: shown(),
                source: std::io::Error::other(error),
            })?;
        let keys = match keys {
            Ok(keys) => Arc::new(keys),
            Err(error) => {
                *loaded = None;
                return Err(error);
            }
        };
        tracing::info!(keys = keys.len(), "github secret scanning keys loaded");
        *loaded = Some((stamp, keys.clone()));
        Ok(keys)
    }
}

/// A token bucket per client (IPv6: per /64, which one subscriber usually holds whole), in a
/// bounded cache.
pub(crate) struct ClientLimiter {
    buckets: moka::sync::Cache<IpAddr, Arc<DefaultDirectRateLimiter>>,
    quota: Quota,
}

impl ClientLimiter {
    pub(crate) fn new(per_minute: NonZeroU32) -> Self {
        Self {
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_LIMITED_CLIENTS)
                // A bucket idle this long is full again anyway.
                .time_to_idle(Duration::from_secs(120))
                .build(),
            quota: Quota::per_minute(per_minute),
        }
    }

    /// Admits one request of `client`, or says how long until it would be admitted.
    pub(crate) fn admit(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let key = client.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), bucket_key);
        let bucket = self
            .buckets
            .get_with(key, || Arc::new(RateLimiter::direct(self.quota)));
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The bucket of an address: itself for IPv4, its /64 for IPv6.
fn bucket_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(network))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_bucket_per_64_and_ipv4_ones_have_their_own() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(bucket_key(a), bucket_key(b));
        assert_ne!(bucket_key(a), bucket_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            bucket_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn a_client_past_its_quota_is_told_when_to_come_back_and_others_are_not_affected() {
        let limiter = ClientLimiter::new(NonZeroU32::new(2).expect("nonzero"));
        let one = Some("192.0.2.1".parse().expect("ip"));
        let two = Some("192.0.2.2".parse().expect("ip"));
        assert!(limiter.admit(one).is_ok());
        assert!(limiter.admit(one).is_ok());
        let wait = limiter.admit(one).expect_err("limited");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(limiter.admit(two).is_ok());
    }

    #[test]
    fn the_client_ip_comes_from_trusted_hops_of_x_forwarded_for_else_the_peer() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        let peer = Some("10.0.0.1".parse().expect("ip"));
        assert_eq!(
            client_ip(&headers, peer, 2),
            Some("203.0.113.9".parse().expect("ip"))
        );
        assert_eq!(client_ip(&headers, peer, 0), peer, "no trusted proxies");
        assert_eq!(client_ip(&headers, peer, 5), peer, "too few entries");
    }
}
