//! Settings in two steps:
//!
//! 1. [`Settings`] (this file): the raw layered values, defaults, then an optional TOML file,
//!    then `TESSERA_*` environment variables, with the names README documents.
//! 2. [`Config`] (`src/config/parse.rs`): [`Config::parse`] checks them once and turns them into
//!    the types each component takes (serving limits, TLS, the database, pools, the Check path,
//!    admin, Envoy, usage, telemetry); files such as the GeoIP database are opened there, before
//!    anything binds. Past it nothing re-reads or re-checks a raw setting.
//!
//! Secrets (the database URL, which may carry a password, and admin keys) are `SecretString`s,
//! so neither `Debug` nor a log line can print them by accident.

mod parse;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::signature::DEFAULT_WINDOW;
use crate::domain::token::TokenPrefix;
use crate::domain::usage::EndpointBound;
use crate::grpc::envoy;
use crate::store::PoolOptions;
use crate::usage::DEFAULT_HANDLE_LIFETIME;

pub use crate::telemetry::LogFormat;
pub use parse::{
    AdminSettings, BOOTSTRAP_KEY_FILE_NAME, Config, Database, Listeners, ServingSettings,
    SharedStateSettings,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// gRPC address for all services.
    pub listen: SocketAddr,
    /// `sqlite://…` (embedded) or `postgres://…`.
    #[serde(serialize_with = "redact")]
    pub database_url: SecretString,
    /// Admin keys accepted by TokenAdminService, in addition to any created by the bootstrap.
    #[serde(deserialize_with = "comma_separated", serialize_with = "redact_all")]
    pub admin_keys: Vec<SecretString>,
    /// Where the first start writes its bootstrap admin key; default: beside the SQLite file,
    /// or in the working directory for Postgres.
    pub admin_key_file: Option<PathBuf>,
    /// Prefix of issued tokens, before the `_`.
    pub token_prefix: String,
    /// The tenant of every call that names none (an empty `tenant` field, an Envoy request
    /// without a tenant extension or header).
    pub default_tenant: String,
    /// Live (neither revoked nor expired) tokens one owner may hold.
    pub max_tokens_per_owner: u32,
    /// Most connections of the admin/usage pool: admin calls (revocations included), admin-key
    /// lookups, usage flushes and audit writes.
    pub database_max_connections: u32,
    /// Most connections of the Check pool, which serves only Check's cache misses (credential
    /// and API status reads): a flood of misses waits here and cannot take the connections a
    /// revocation needs (a bulkhead). The server opens up to the sum of both.
    pub database_check_max_connections: u32,
    /// How long a request waits for a database connection before the store counts as down.
    pub database_acquire_timeout_ms: u64,
    /// Longest a single statement may run (Postgres `statement_timeout`).
    pub database_statement_timeout_ms: u64,
    /// Most cached token records, counted at 1 KiB each (`authz::cache::NOMINAL_CREDENTIAL_BYTES`)
    /// against `cache_max_bytes`; 0 turns caching off (every Check reads the store).
    pub cache_capacity: u64,
    /// Most bytes the cached token records may weigh, each by an estimate of its size (so a
    /// token with many grants counts for more); unknown tokens have a quarter of it on top.
    pub cache_max_bytes: u64,
    /// How long a cached token record is trusted: the bound on staleness when invalidation fails.
    pub cache_ttl_ms: u64,
    /// How long an unknown token is remembered as unknown.
    pub negative_cache_ttl_ms: u64,
    /// Longest a Check waits for the store on a cache miss.
    pub check_store_timeout_ms: u64,
    /// Requests per minute of tokens whose own limit is 0.
    pub default_rate_limit_per_minute: u32,
    /// Base64 of 32 random bytes: encrypts signing keys at rest. Without it, request signing is
    /// refused (FAILED_PRECONDITION naming this setting).
    #[serde(serialize_with = "redact_optional")]
    pub master_key: Option<SecretString>,
    /// Accepted difference, in seconds, either way between a signature's timestamp and now.
    pub signature_window_seconds: u64,
    /// Most signatures each replica remembers to refuse replays, over all tokens (a token takes
    /// only what it holds); keep it above the signed requests of one (2 × window + 1 s).
    pub replay_cache_capacity: u64,
    /// Most signatures each replica remembers per token, so that no token can push out
    /// another's; keep it above (2 × a token's signed requests per (2 × window + 1 s)): at the
    /// default 4096 and ±300 s window, about 3.4 signed requests a second per token.
    pub replay_token_quota: u64,
    /// Envoy ext_authz: the header carrying the token (a `Bearer ` prefix is stripped).
    pub envoy_token_header: String,
    /// Envoy ext_authz: the header naming the tenant when the route sets no `tenant` context
    /// extension; unset: the default tenant.
    pub envoy_tenant_header: Option<String>,
    /// Envoy ext_authz: how many rightmost `x-forwarded-for` entries were written by proxies you
    /// trust; the client IP is the entry that many from the right. 0: the connection's source
    /// address, and the header is ignored.
    pub envoy_trusted_hops: u32,
    /// Envoy ext_authz: method + path rules giving the permission of requests whose route sets
    /// no `permission` context extension; the first match wins.
    pub envoy_rules: Vec<EnvoyRule>,
    /// Envoy ext_authz: what a request that no rule matches needs: `deny` or `authenticate`.
    pub envoy_unmatched: EnvoyUnmatched,
    /// Envoy ext_authz: the header carrying a request's base64 signature.
    pub envoy_signature_header: String,
    /// Envoy ext_authz: the header carrying the signature's unix timestamp.
    pub envoy_timestamp_header: String,
    /// Envoy ext_authz: the signed payload includes the body's SHA-256 (the filter must send the
    /// body: `with_request_body`); otherwise that of an empty body.
    pub envoy_sign_body: bool,
    /// Every gateway (Envoy ext_authz, forward-auth): the metadata keys of an allowed token
    /// forwarded upstream as `x-tessera-meta-KEY` headers, comma-separated; none by default.
    #[serde(deserialize_with = "comma_separated_strings")]
    pub gateway_metadata_headers: Vec<String>,
    /// Record usage statistics of every Check (write-behind: Check never waits for them).
    pub usage_enabled: bool,
    /// How often recorded usage is written to the database, in one transaction.
    pub usage_flush_interval_ms: u64,
    /// Days minute buckets and recent calls are kept; daily rollups are kept a year.
    pub usage_retention_days: u32,
    /// Lifecycle events are kept this many days (`TESSERA_EVENT_RETENTION_DAYS`).
    pub event_retention_days: u32,
    /// How often each replica looks for tokens due a `token.expiring`/`token.expired` event.
    pub event_expiry_scan_interval_ms: u64,
    /// How often an open WatchEvents stream looks for new events.
    pub event_watch_poll_ms: u64,
    /// At most this many WatchEvents streams per replica.
    pub event_max_watchers: usize,
    /// Most usage counters (token × minute × endpoint) held between two flushes; calls that
    /// would need a new one beyond that are dropped and counted.
    pub usage_buffer_size: usize,
    /// Most distinct endpoints one token accumulates per UTC day in the stored counters; calls
    /// to further endpoints are counted as endpoint `other` (enforced by every replica's flush
    /// against what is stored, so it holds across replicas).
    pub usage_endpoints_per_token_per_day: usize,
    /// ReportUsage also accepts a bare `token_id` without Check's `report_handle` (the old
    /// protocol: anyone reaching the port can report for any token). Off by default.
    pub usage_accept_bare_token_ids: bool,
    /// Check also looks up secrets that are not in Tessera's own format (`<prefix>_…`), by their
    /// SHA-256: for tokens imported with ImportTokens. Off by default, so a foreign secret costs
    /// no lookup where nothing was imported.
    pub accept_imported_tokens: bool,
    /// How long after its Check a report handle is accepted, in seconds; at most the usage
    /// retention.
    pub usage_report_handle_ttl_seconds: u64,
    /// Base64 of at least 32 random bytes: signs Check's report handles; every replica must
    /// have the same. Unset: derived from the master key when that is set, else random per
    /// process (fine for one replica only).
    #[serde(serialize_with = "redact_optional")]
    pub report_handle_key: Option<SecretString>,
    /// A MaxMind-format (GeoIP2 / GeoLite2 City) database, for the location of a token's last
    /// use; unset: no locations.
    pub geoip_database: Option<PathBuf>,
    /// GitHub's secret scanning key list (`{"public_keys": [...]}`, as GitHub publishes it),
    /// re-read when it changes; unset: `POST /secret-scanning/github` is not served.
    pub github_scanning_keys_file: Option<PathBuf>,
    /// `POST /leaked-tokens` requests per client IP (IPv6: per /64) per minute, also the burst.
    pub leak_reports_per_minute: u32,
    /// Log filter in `tracing` EnvFilter syntax.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// HTTP address serving Prometheus `/metrics`.
    pub metrics_listen: SocketAddr,
    /// HTTP address of Tessera's HTTP surface (forward-auth for nginx, Caddy, Traefik at
    /// `/forward-auth`); HTTP/1.1 and h2c, TLS with the gRPC listener's certificate. Unset: off.
    pub http_listen: Option<SocketAddr>,
    /// Largest request body the HTTP listener reads (413 beyond).
    pub http_max_body_bytes: usize,
    /// Largest request head the HTTP listener reads (431 beyond); at least 8192.
    pub http_max_header_bytes: usize,
    /// The address browsers reach the HTTP listener at (`https://tokens.example.com`): the base
    /// of CreatePortalSession's URLs. Unset: `http://` (or `https://` under TLS) and the
    /// listener's own address, right for one machine only.
    pub public_url: Option<String>,
    /// Origins that may show the portal (`/portal/`) in a frame, space-separated
    /// (`https://app.example.com`); empty: none may. The console is never framed.
    pub portal_frame_ancestors: String,
    /// Console sign-in attempts per client IP (IPv6: per /64) per minute, also the burst.
    pub console_sign_ins_per_minute: u32,
    /// A second, plaintext gRPC address serving only `grpc.health.v1`, for probes that cannot
    /// speak TLS (the kubelet's); unset: health is served on `listen` only.
    pub health_listen: Option<SocketAddr>,
    /// OTLP/gRPC collector (`http://collector:4317`) that receives traces; unset: no export.
    pub otlp_endpoint: Option<String>,
    /// After SIGTERM, how long health answers NOT_SERVING while calls are still served, so load
    /// balancers stop sending before the listener closes.
    pub shutdown_delay_ms: u64,
    /// Then, how long in-flight calls may take to finish before the server stops regardless.
    pub drain_timeout_ms: u64,
    /// Longest one call may run before it is answered DEADLINE_EXCEEDED.
    pub request_timeout_ms: u64,
    /// Largest request message accepted; larger ones are refused (OUT_OF_RANGE).
    pub max_request_bytes: usize,
    /// Most calls served at once over all connections; more are refused (RESOURCE_EXHAUSTED)
    /// rather than queued, so an overloaded replica sheds load instead of piling up latency.
    pub max_concurrent_requests: usize,
    /// PEM certificate chain of the gRPC listener; with `tls_key_file`, turns TLS on.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that sign client certificates: presented client certificates are
    /// verified, and TokenAdminService requires one (mTLS) in addition to an admin key.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Refuse every connection without a valid client certificate, not only admin calls.
    pub tls_require_client_cert: bool,
    /// How often the TLS files are checked for changes (SIGHUP reloads them at once too).
    pub tls_reload_interval_ms: u64,
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS): rate limits and the
    /// replay guard are shared by every replica through it. Unset: per replica.
    /// With `redis_cluster`, a comma-separated list of seed nodes.
    #[serde(serialize_with = "redact_optional")]
    pub redis_url: Option<SecretString>,
    /// `redis_url` names the seed nodes of a Redis Cluster.
    pub redis_cluster: bool,
    /// Longest a Check waits for Redis before it decides locally.
    pub redis_timeout_ms: u64,
    /// Prefix of every Redis key, so deployments can share one Redis.
    pub redis_key_prefix: String,
    /// PEM CA certificate that signs the Redis server's certificate (`rediss://`), when it is
    /// not among the system's roots.
    pub redis_ca_file: Option<PathBuf>,
    /// While Redis cannot answer, refuse signed requests (`STORE_UNAVAILABLE`) instead of
    /// checking replays per replica.
    pub replay_fail_closed: bool,
    /// Webhook URLs may point at loopback, link-local and private addresses, at creation and
    /// at delivery (SSRF protection off): for receivers on the same machine or network only.
    pub webhook_allow_private_urls: bool,
    /// The waits before each retry of a failed webhook delivery, comma-separated humantime
    /// durations; after the last, the delivery has failed. Default: about a day of them.
    pub webhook_retry_delays: String,
    /// The longest one webhook delivery attempt may take, connecting included; past it the
    /// attempt failed and is retried (at most 60,000).
    pub webhook_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: SecretString::from("sqlite://tessera.db"),
            admin_keys: Vec::new(),
            admin_key_file: None,
            token_prefix: TokenPrefix::default().to_string(),
            default_tenant: crate::domain::fields::DEFAULT_TENANT.to_owned(),
            max_tokens_per_owner: 64,
            database_max_connections: PoolOptions::DEFAULT.max_connections,
            database_check_max_connections: PoolOptions::DEFAULT.check_max_connections,
            database_acquire_timeout_ms: millis(PoolOptions::DEFAULT.acquire_timeout),
            database_statement_timeout_ms: millis(PoolOptions::DEFAULT.statement_timeout),
            cache_capacity: 1_000_000,
            cache_max_bytes: 1024 * 1024 * 1024,
            cache_ttl_ms: 60_000,
            negative_cache_ttl_ms: 5_000,
            check_store_timeout_ms: millis(PoolOptions::DEFAULT.check_deadline),
            default_rate_limit_per_minute: 60,
            master_key: None,
            signature_window_seconds: DEFAULT_WINDOW.as_secs(),
            replay_cache_capacity: crate::authz::replay::DEFAULT_CAPACITY,
            replay_token_quota: crate::authz::replay::DEFAULT_TOKEN_QUOTA,
            envoy_token_header: envoy::DEFAULT_TOKEN_HEADER.to_owned(),
            envoy_tenant_header: None,
            envoy_trusted_hops: 0,
            envoy_rules: Vec::new(),
            envoy_unmatched: EnvoyUnmatched::Deny,
            envoy_signature_header: envoy::DEFAULT_SIGNATURE_HEADER.to_owned(),
            envoy_timestamp_header: envoy::DEFAULT_TIMESTAMP_HEADER.to_owned(),
            envoy_sign_body: false,
            gateway_metadata_headers: Vec::new(),
            usage_enabled: true,
            usage_flush_interval_ms: 1_000,
            usage_retention_days: 7,
            event_retention_days: 30,
            event_expiry_scan_interval_ms: 60_000,
            event_watch_poll_ms: 250,
            event_max_watchers: 256,
            usage_buffer_size: 65_536,
            usage_endpoints_per_token_per_day: EndpointBound::DEFAULT.get(),
            usage_accept_bare_token_ids: false,
            accept_imported_tokens: false,
            usage_report_handle_ttl_seconds: DEFAULT_HANDLE_LIFETIME.num_seconds().unsigned_abs(),
            report_handle_key: None,
            geoip_database: None,
            github_scanning_keys_file: None,
            leak_reports_per_minute: 10,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            health_listen: None,
            http_listen: None,
            http_max_body_bytes: 64 * 1024,
            http_max_header_bytes: 16 * 1024,
            public_url: None,
            portal_frame_ancestors: String::new(),
            console_sign_ins_per_minute: 10,
            otlp_endpoint: None,
            shutdown_delay_ms: 0,
            drain_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            max_request_bytes: 1024 * 1024,
            max_concurrent_requests: 10_000,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tls_require_client_cert: false,
            tls_reload_interval_ms: 10_000,
            redis_url: None,
            redis_cluster: false,
            redis_timeout_ms: millis(crate::fleet::DEFAULT_COMMAND_TIMEOUT),
            redis_key_prefix: crate::fleet::DEFAULT_KEY_PREFIX.to_owned(),
            redis_ca_file: None,
            replay_fail_closed: false,
            webhook_allow_private_urls: false,
            webhook_retry_delays: "1s, 5s, 30s, 2m, 15m, 1h, 4h, 8h, 10h".to_owned(),
            webhook_timeout_ms: 10_000,
        }
    }
}

impl Settings {
    /// Layers defaults, the TOML file (if any) and `TESSERA_*` variables. Nothing is checked
    /// here: [`Config::parse`] (or [`Config::load`], both steps) turns the result into the
    /// typed parts, or names the first bad setting.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Missing keys take `Settings::default()` through `#[serde(default)]`. (A serialized
        // defaults provider would carry the redacted form of the secrets, not their defaults.)
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // TESSERA_CONFIG names the file itself and TESSERA_PORT_FILE is a flag of `tessera serve`;
        // the client's variables are not server settings.
        let env = Env::prefixed("TESSERA_").ignore(&[
            "config",
            "port_file",
            "server",
            "admin_key",
            "actor",
            "ca_cert",
            "client_cert",
            "client_key",
        ]);
        Ok(figment.merge(env).extract().map_err(Box::new)?)
    }
}

/// A default given as a `Duration` where the setting counts milliseconds.
fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn comma_separated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error> {
    Ok(comma_separated_strings(deserializer)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

/// A list given as one comma-separated string (an environment variable) or as a list (a
/// file); items trimmed, empty ones dropped.
fn comma_separated_strings<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Joined(String),
        Many(Vec<String>),
    }
    let raw = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Joined(joined) => joined.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(many) => many,
    };
    Ok(raw
        .into_iter()
        .map(|key| key.trim().to_owned())
        .filter(|key| !key.is_empty())
        .collect())
}

/// One Envoy permission rule as written in the settings:
/// `{ method = "GET", prefix = "/api/v1/orders/", permission = "orders:read" }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct EnvoyRule {
    /// An HTTP method; empty or `*` for any.
    #[serde(default)]
    pub method: String,
    /// Exact path (without the query string), compared with the request's normalized path
    /// (src/domain/http.rs), so written normalized. Give this or `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix, written normalized like `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// What a match needs; empty: authentication only (unless the lists below say more).
    #[serde(default)]
    pub permission: String,
    /// Every one of these is needed too, as Check's `all_permissions` (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all_permissions: Vec<String>,
    /// At least one of these is needed, as Check's `any_permissions` (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_permissions: Vec<String>,
    /// Credits a matching request spends from a token with credits, as Check's `cost` (0 to
    /// 1,000,000); unset: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u32>,
}

/// What an Envoy request that no rule matches needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvoyUnmatched {
    /// 403, whatever the token: only routes covered by a rule are exposed.
    Deny,
    /// Any valid token, as a Check with an empty permission.
    Authenticate,
}

fn redact_optional<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => serializer.serialize_str("[redacted]"),
        None => serializer.serialize_none(),
    }
}

fn redact<S: serde::Serializer>(_: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("[redacted]")
}

fn redact_all<S: serde::Serializer>(
    keys: &[SecretString],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(keys.iter().map(|_| "[redacted]"))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::domain::route::Unmatched;

    #[test]
    fn debug_and_serialized_settings_never_contain_the_master_key() {
        let master_key = "c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=";
        let settings = Settings {
            master_key: Some(SecretString::from(master_key)),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains(master_key));
        let serialized = serde_json::to_string(&settings).expect("serializes");
        assert!(!serialized.contains(master_key));
    }

    #[test]
    fn debug_and_serialized_settings_never_contain_the_report_handle_key() {
        let key = "c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=";
        let settings = Settings {
            report_handle_key: Some(SecretString::from(key)),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains(key));
        let serialized = serde_json::to_string(&settings).expect("serializes");
        assert!(!serialized.contains(key));
        let config = Config::parse(settings).expect("valid");
        assert!(!format!("{:?}", config.usage.reports).contains(key));
        assert!(!format!("{config:?}").contains(key));
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment's own (large) error type"
    )]
    fn envoy_rules_and_headers_are_parsed_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TESSERA_ENVOY_RULES",
                r#"[{method="GET", prefix="/api/v1/orders/", permission="orders:read"}, {path="/health"}]"#,
            );
            jail.set_env("TESSERA_ENVOY_UNMATCHED", "authenticate");
            jail.set_env("TESSERA_ENVOY_TOKEN_HEADER", "X-Api-Key");
            jail.set_env("TESSERA_ENVOY_TRUSTED_HOPS", "2");
            jail.set_env("TESSERA_GATEWAY_METADATA_HEADERS", "plan, region");
            jail.set_env("TESSERA_DATABASE_URL", "sqlite://tessera.db");
            let envoy = Config::load(None).expect("loads").envoy;
            assert_eq!(envoy.metadata_headers.len(), 2);
            assert_eq!(envoy.token_header, "x-api-key");
            assert_eq!(envoy.trusted_hops, 2);
            assert_eq!(envoy.rules.unmatched(), Unmatched::Authenticate);
            let target = |path| crate::domain::http::RequestTarget::parse(path).expect("target");
            let rule = envoy
                .rules
                .find("GET", &target("/api/v1/orders/7"))
                .expect("rule");
            assert_eq!(rule.label("GET"), "GET /api/v1/orders/*");
            assert!(envoy.rules.find("POST", &target("/health")).is_some());
            Ok(())
        });
    }

    #[test]
    fn debug_output_of_settings_never_contains_secrets() {
        let settings = Settings {
            database_url: SecretString::from("postgres://tessera:hunter2hunter2@db/tessera"),
            admin_keys: vec![SecretString::from("super-secret-admin-key")],
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains("super-secret-admin-key"));
        let parsed = format!("{:?}", Config::parse(settings).expect("valid"));
        assert!(!parsed.contains("hunter2"), "{parsed}");
        assert!(!parsed.contains("super-secret-admin-key"), "{parsed}");
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment's own (large) error type"
    )]
    fn operations_settings_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESSERA_METRICS_LISTEN", "0.0.0.0:9100");
            jail.set_env("TESSERA_HEALTH_LISTEN", "0.0.0.0:50052");
            jail.set_env("TESSERA_DRAIN_TIMEOUT_MS", "2500");
            let settings = Settings::load(None).expect("valid without a database url: the default");
            assert_eq!(
                settings.database_url.expose_secret(),
                Settings::default().database_url.expose_secret()
            );
            assert_eq!(settings.metrics_listen.port(), 9100);
            assert_eq!(
                settings.health_listen.map(|address| address.port()),
                Some(50052)
            );
            assert_eq!(settings.drain_timeout_ms, 2500);
            let config = Config::parse(settings).expect("valid");
            assert_eq!(config.listeners.metrics.port(), 9100);
            assert_eq!(config.serving.drain_timeout.as_millis(), 2500);
            Ok(())
        });
    }
}
