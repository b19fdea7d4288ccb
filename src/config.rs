//! Settings: defaults, then an optional TOML file, then `TESSERA_*` environment variables.
//!
//! Secrets (the database URL, which may carry a password, and admin keys) are `SecretString`s,
//! so neither `Debug` nor a log line can print them by accident.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::app::ServingSettings;
use crate::authz::{AuthzSettings, CacheSettings, SigningSettings};
use crate::domain::report_handle::{KeySource, ReportHandleKey};
use crate::domain::route::{PermissionRule, PermissionRules, Unmatched};
use crate::domain::signature::MasterKey;
use crate::domain::token::TokenPrefix;
use crate::domain::usage::EndpointBound;
use crate::grpc::envoy::EnvoySettings;
use crate::store::PoolOptions;
use crate::tls::TlsSettings;
use crate::usage::{GeoIp, ReportSettings, UsageSettings};

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
    /// Record usage statistics of every Check (write-behind: Check never waits for them).
    pub usage_enabled: bool,
    /// How often recorded usage is written to the database, in one transaction.
    pub usage_flush_interval_ms: u64,
    /// Days minute buckets and recent calls are kept; daily rollups are kept a year.
    pub usage_retention_days: u32,
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
    /// Log filter in `tracing` EnvFilter syntax.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// HTTP address serving Prometheus `/metrics`.
    pub metrics_listen: SocketAddr,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: SecretString::from("sqlite://tessera.db"),
            admin_keys: Vec::new(),
            admin_key_file: None,
            token_prefix: TokenPrefix::default().to_string(),
            max_tokens_per_owner: 64,
            database_max_connections: 16,
            database_check_max_connections: 16,
            database_acquire_timeout_ms: 2_000,
            database_statement_timeout_ms: 5_000,
            cache_capacity: 1_000_000,
            cache_max_bytes: 1024 * 1024 * 1024,
            cache_ttl_ms: 60_000,
            negative_cache_ttl_ms: 5_000,
            check_store_timeout_ms: 500,
            default_rate_limit_per_minute: 60,
            master_key: None,
            signature_window_seconds: 300,
            replay_cache_capacity: crate::authz::replay::DEFAULT_CAPACITY,
            replay_token_quota: crate::authz::replay::DEFAULT_TOKEN_QUOTA,
            envoy_token_header: "authorization".to_owned(),
            envoy_tenant_header: None,
            envoy_trusted_hops: 0,
            envoy_rules: Vec::new(),
            envoy_unmatched: EnvoyUnmatched::Deny,
            envoy_signature_header: "x-tessera-signature".to_owned(),
            envoy_timestamp_header: "x-tessera-timestamp".to_owned(),
            envoy_sign_body: false,
            usage_enabled: true,
            usage_flush_interval_ms: 1_000,
            usage_retention_days: 7,
            usage_buffer_size: 65_536,
            usage_endpoints_per_token_per_day: EndpointBound::DEFAULT.get(),
            usage_accept_bare_token_ids: false,
            usage_report_handle_ttl_seconds: 3_600,
            report_handle_key: None,
            geoip_database: None,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            health_listen: None,
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
        }
    }
}

impl Settings {
    /// Layers defaults, the TOML file (if any) and `TESSERA_*` variables, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Missing keys take `Settings::default()` through `#[serde(default)]`. (A serialized
        // defaults provider would carry the redacted form of the secrets, not their defaults.)
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // TESSERA_CONFIG names the file itself; the client's variables are not server settings.
        let env = Env::prefixed("TESSERA_").ignore(&["config", "server", "admin_key", "actor"]);
        let settings: Settings = figment.merge(env).extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.token_prefix()?;
        crate::telemetry::validate_filter(&self.log).map_err(|reason| ConfigError::Invalid {
            setting: "TESSERA_LOG",
            reason,
        })?;
        self.serving()?;
        self.tls()?;
        self.otlp_endpoint()?;
        self.signing_settings()?;
        self.envoy_settings()?;
        self.report_settings()?;
        let url = self.database_url.expose_secret();
        let known_scheme = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !known_scheme {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_DATABASE_URL",
                reason: "must start with sqlite:// or postgres://".to_owned(),
            });
        }
        if self.max_tokens_per_owner == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_MAX_TOKENS_PER_OWNER",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.cache_max_bytes == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_CACHE_MAX_BYTES",
                reason: "must be at least 1 (TESSERA_CACHE_CAPACITY=0 turns caching off)"
                    .to_owned(),
            });
        }
        if self.default_rate_limit_per_minute == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_DEFAULT_RATE_LIMIT_PER_MINUTE",
                reason: "must be at least 1".to_owned(),
            });
        }
        for (setting, value) in [
            ("TESSERA_CACHE_TTL_MS", self.cache_ttl_ms),
            ("TESSERA_NEGATIVE_CACHE_TTL_MS", self.negative_cache_ttl_ms),
            (
                "TESSERA_CHECK_STORE_TIMEOUT_MS",
                self.check_store_timeout_ms,
            ),
            (
                "TESSERA_DATABASE_ACQUIRE_TIMEOUT_MS",
                self.database_acquire_timeout_ms,
            ),
            (
                "TESSERA_DATABASE_STATEMENT_TIMEOUT_MS",
                self.database_statement_timeout_ms,
            ),
            (
                "TESSERA_USAGE_FLUSH_INTERVAL_MS",
                self.usage_flush_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "must be at least 1 millisecond".to_owned(),
                });
            }
        }
        if self.usage_retention_days == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_USAGE_RETENTION_DAYS",
                reason: "must be at least 1 (the last 24 hours need a day of minutes)".to_owned(),
            });
        }
        if self.usage_buffer_size == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_USAGE_BUFFER_SIZE",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_DATABASE_MAX_CONNECTIONS",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.database_check_max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_DATABASE_CHECK_MAX_CONNECTIONS",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self
            .admin_keys
            .iter()
            .any(|key| key.expose_secret().len() < 16)
        {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_ADMIN_KEYS",
                reason: "every admin key must be at least 16 characters".to_owned(),
            });
        }
        Ok(())
    }

    /// The gRPC server's limits and shutdown deadlines.
    pub fn serving(&self) -> Result<ServingSettings, ConfigError> {
        let at_least_one_ms = |setting: &'static str, value: u64| {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "must be at least 1 millisecond".to_owned(),
                });
            }
            Ok(Duration::from_millis(value))
        };
        let at_least_one = |setting: &'static str, value: usize| {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "must be at least 1".to_owned(),
                });
            }
            Ok(value)
        };
        let listeners = [
            ("TESSERA_METRICS_LISTEN", Some(self.metrics_listen)),
            ("TESSERA_HEALTH_LISTEN", self.health_listen),
        ];
        for (setting, address) in listeners {
            let clashes = |other: SocketAddr| other.port() != 0 && Some(other) == address;
            if clashes(self.listen) {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "must differ from TESSERA_LISTEN".to_owned(),
                });
            }
        }
        if let Some(health) = self.health_listen
            && health.port() != 0
            && health == self.metrics_listen
        {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_HEALTH_LISTEN",
                reason: "must differ from TESSERA_METRICS_LISTEN".to_owned(),
            });
        }
        Ok(ServingSettings {
            shutdown_delay: Duration::from_millis(self.shutdown_delay_ms),
            drain_timeout: at_least_one_ms("TESSERA_DRAIN_TIMEOUT_MS", self.drain_timeout_ms)?,
            request_timeout: at_least_one_ms(
                "TESSERA_REQUEST_TIMEOUT_MS",
                self.request_timeout_ms,
            )?,
            max_request_bytes: at_least_one("TESSERA_MAX_REQUEST_BYTES", self.max_request_bytes)?,
            max_concurrent_requests: at_least_one(
                "TESSERA_MAX_CONCURRENT_REQUESTS",
                self.max_concurrent_requests,
            )?,
        })
    }

    /// TLS for the gRPC listener, when a certificate is configured.
    pub fn tls(&self) -> Result<Option<TlsSettings>, ConfigError> {
        let invalid = |setting: &'static str, reason: &str| ConfigError::Invalid {
            setting,
            reason: reason.to_owned(),
        };
        let (cert_file, key_file) = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            (Some(_), None) => {
                return Err(invalid(
                    "TESSERA_TLS_KEY_FILE",
                    "must be set when TESSERA_TLS_CERT_FILE is",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "TESSERA_TLS_CERT_FILE",
                    "must be set when TESSERA_TLS_KEY_FILE is",
                ));
            }
            (None, None) if self.tls_client_ca_file.is_some() => {
                return Err(invalid(
                    "TESSERA_TLS_CLIENT_CA_FILE",
                    "needs TLS: set TESSERA_TLS_CERT_FILE and TESSERA_TLS_KEY_FILE",
                ));
            }
            (None, None) if self.tls_require_client_cert => {
                return Err(invalid(
                    "TESSERA_TLS_REQUIRE_CLIENT_CERT",
                    "needs TLS and TESSERA_TLS_CLIENT_CA_FILE",
                ));
            }
            (None, None) => return Ok(None),
        };
        if self.tls_require_client_cert && self.tls_client_ca_file.is_none() {
            return Err(invalid(
                "TESSERA_TLS_REQUIRE_CLIENT_CERT",
                "needs TESSERA_TLS_CLIENT_CA_FILE, the CA that signs client certificates",
            ));
        }
        if self.tls_reload_interval_ms == 0 {
            return Err(invalid(
                "TESSERA_TLS_RELOAD_INTERVAL_MS",
                "must be at least 1 millisecond",
            ));
        }
        Ok(Some(TlsSettings {
            cert_file,
            key_file,
            client_ca_file: self.tls_client_ca_file.clone(),
            require_client_cert: self.tls_require_client_cert,
            reload_interval: Duration::from_millis(self.tls_reload_interval_ms),
        }))
    }

    /// The OTLP collector URL, when trace export is configured.
    pub fn otlp_endpoint(&self) -> Result<Option<url::Url>, ConfigError> {
        let Some(endpoint) = self.otlp_endpoint.as_deref().filter(|raw| !raw.is_empty()) else {
            return Ok(None);
        };
        let parsed = url::Url::parse(endpoint)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        match parsed {
            Some(url) => Ok(Some(url)),
            None => Err(ConfigError::Invalid {
                setting: "TESSERA_OTLP_ENDPOINT",
                reason: "must be an http:// or https:// URL, e.g. http://collector:4317".to_owned(),
            }),
        }
    }

    pub fn token_prefix(&self) -> Result<TokenPrefix, ConfigError> {
        TokenPrefix::parse(&self.token_prefix).map_err(|error| ConfigError::Invalid {
            setting: "TESSERA_TOKEN_PREFIX",
            reason: error.to_string(),
        })
    }

    pub fn authz_settings(&self) -> Result<AuthzSettings, ConfigError> {
        Ok(AuthzSettings {
            prefix: self.token_prefix()?,
            cache: CacheSettings {
                capacity: self.cache_capacity,
                max_bytes: self.cache_max_bytes,
                ttl: Duration::from_millis(self.cache_ttl_ms),
                negative_ttl: Duration::from_millis(self.negative_cache_ttl_ms),
            },
            store_timeout: Duration::from_millis(self.check_store_timeout_ms),
            default_rate_limit_per_minute: NonZeroU32::new(self.default_rate_limit_per_minute)
                .ok_or(ConfigError::Invalid {
                    setting: "TESSERA_DEFAULT_RATE_LIMIT_PER_MINUTE",
                    reason: "must be at least 1".to_owned(),
                })?,
            signing: self.signing_settings()?,
        })
    }

    /// The master key, when one is configured.
    pub fn master_key(&self) -> Result<Option<MasterKey>, ConfigError> {
        self.master_key
            .as_ref()
            .map(|encoded| {
                MasterKey::parse(encoded).map_err(|error| ConfigError::Invalid {
                    setting: "TESSERA_MASTER_KEY",
                    reason: format!("{error} (e.g. `openssl rand -base64 32`)"),
                })
            })
            .transpose()
    }

    pub fn signing_settings(&self) -> Result<SigningSettings, ConfigError> {
        if !(1..=86_400).contains(&self.signature_window_seconds) {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_SIGNATURE_WINDOW_SECONDS",
                reason: "must be 1 to 86400 seconds".to_owned(),
            });
        }
        if self.replay_cache_capacity == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_REPLAY_CACHE_CAPACITY",
                reason: "must be at least 1".to_owned(),
            });
        }
        if !(2..=self.replay_cache_capacity).contains(&self.replay_token_quota) {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_REPLAY_TOKEN_QUOTA",
                reason: "must be 2 to TESSERA_REPLAY_CACHE_CAPACITY".to_owned(),
            });
        }
        Ok(SigningSettings {
            master_key: self.master_key()?,
            window: Duration::from_secs(self.signature_window_seconds),
            replay_capacity: self.replay_cache_capacity,
            replay_token_quota: self.replay_token_quota,
        })
    }

    /// How Envoy ext_authz requests map onto Check.
    pub fn envoy_settings(&self) -> Result<EnvoySettings, ConfigError> {
        let mut rules = Vec::with_capacity(self.envoy_rules.len());
        for (index, rule) in self.envoy_rules.iter().enumerate() {
            let parsed = PermissionRule::parse(
                &rule.method,
                rule.path.as_deref(),
                rule.prefix.as_deref(),
                &rule.permission,
            )
            .map_err(|error| ConfigError::Invalid {
                setting: "TESSERA_ENVOY_RULES",
                reason: format!("rule {index}: {error}"),
            })?;
            rules.push(parsed);
        }
        let unmatched = match self.envoy_unmatched {
            EnvoyUnmatched::Deny => Unmatched::Deny,
            EnvoyUnmatched::Authenticate => Unmatched::Authenticate,
        };
        Ok(EnvoySettings {
            token_header: header_name("TESSERA_ENVOY_TOKEN_HEADER", &self.envoy_token_header)?,
            tenant_header: self
                .envoy_tenant_header
                .as_deref()
                .map(|name| header_name("TESSERA_ENVOY_TENANT_HEADER", name))
                .transpose()?,
            trusted_hops: usize::try_from(self.envoy_trusted_hops).unwrap_or(usize::MAX),
            rules: PermissionRules::new(rules, unmatched),
            signature_header: header_name(
                "TESSERA_ENVOY_SIGNATURE_HEADER",
                &self.envoy_signature_header,
            )?,
            timestamp_header: header_name(
                "TESSERA_ENVOY_TIMESTAMP_HEADER",
                &self.envoy_timestamp_header,
            )?,
            sign_body: self.envoy_sign_body,
        })
    }

    /// The usage settings; opens the GeoIP database when one is configured.
    pub fn usage_settings(&self) -> Result<UsageSettings, ConfigError> {
        let geoip = match &self.geoip_database {
            None => None,
            Some(path) => Some(Arc::new(GeoIp::open(path).map_err(|error| {
                ConfigError::Invalid {
                    setting: "TESSERA_GEOIP_DATABASE",
                    reason: format!("cannot read {}: {error}", path.display()),
                }
            })?)),
        };
        Ok(UsageSettings {
            enabled: self.usage_enabled,
            flush_interval: Duration::from_millis(self.usage_flush_interval_ms),
            retention: chrono::Duration::days(i64::from(self.usage_retention_days)),
            buffer_size: self.usage_buffer_size,
            endpoints_per_day: EndpointBound::new(self.usage_endpoints_per_token_per_day).ok_or(
                ConfigError::Invalid {
                    setting: "TESSERA_USAGE_ENDPOINTS_PER_TOKEN_PER_DAY",
                    reason: "must be at least 1".to_owned(),
                },
            )?,
            geoip,
            reports: self.report_settings()?,
        })
    }

    /// ReportUsage's rules and the report handle key: configured, else derived from the master
    /// key, else random per process.
    pub fn report_settings(&self) -> Result<ReportSettings, ConfigError> {
        let retention_seconds = u64::from(self.usage_retention_days) * 86_400;
        if !(1..=retention_seconds).contains(&self.usage_report_handle_ttl_seconds) {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_USAGE_REPORT_HANDLE_TTL_SECONDS",
                reason: "must be at least 1 second and at most the usage retention".to_owned(),
            });
        }
        let (key, key_source) = match (&self.report_handle_key, &self.master_key) {
            (Some(configured), _) => (
                ReportHandleKey::parse(configured).map_err(|error| ConfigError::Invalid {
                    setting: "TESSERA_REPORT_HANDLE_KEY",
                    reason: format!("{error} (e.g. `openssl rand -base64 32`)"),
                })?,
                KeySource::Configured,
            ),
            (None, Some(master_key)) => {
                // Validated as the master key first, so an error names that setting.
                self.master_key()?;
                let derived = ReportHandleKey::derived_from_master_key(master_key).ok_or(
                    ConfigError::Invalid {
                        setting: "TESSERA_MASTER_KEY",
                        reason: "must be base64".to_owned(),
                    },
                )?;
                (derived, KeySource::MasterKey)
            }
            (None, None) => (ReportHandleKey::random(), KeySource::RandomPerProcess),
        };
        Ok(ReportSettings {
            key,
            key_source,
            accept_bare_token_ids: self.usage_accept_bare_token_ids,
            handle_lifetime: chrono::Duration::seconds(
                i64::try_from(self.usage_report_handle_ttl_seconds).unwrap_or(i64::MAX),
            ),
        })
    }

    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_connections: self.database_max_connections,
            check_max_connections: self.database_check_max_connections,
            acquire_timeout: Duration::from_millis(self.database_acquire_timeout_ms),
            statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
        }
    }

    /// Where the bootstrap key goes: the configured file, else beside the SQLite database, else
    /// the working directory.
    pub fn bootstrap_key_path(&self) -> PathBuf {
        const FILE_NAME: &str = "tessera-admin.key";
        if let Some(path) = &self.admin_key_file {
            return path.clone();
        }
        let url = self.database_url.expose_secret();
        let sqlite_path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest))
            .filter(|path| !path.is_empty() && *path != ":memory:");
        match sqlite_path.and_then(|path| Path::new(path).parent()) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(FILE_NAME),
            _ => PathBuf::from(FILE_NAME),
        }
    }
}

fn comma_separated<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error> {
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
        .map(SecretString::from)
        .collect())
}

/// One Envoy permission rule as written in the settings:
/// `{ method = "GET", prefix = "/api/v1/orders/", permission = "orders:read" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
    /// What a match needs; empty: authentication only.
    #[serde(default)]
    pub permission: String,
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

/// An HTTP header name, lowercase as Envoy hands headers over.
fn header_name(setting: &'static str, raw: &str) -> Result<String, ConfigError> {
    let name = raw.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(ConfigError::Invalid {
            setting,
            reason: "must be an HTTP header name (letters, digits, '-', '_')".to_owned(),
        });
    }
    Ok(name)
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
    use super::*;

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
        assert!(!format!("{:?}", settings.report_settings()).contains(key));
    }

    #[test]
    fn the_report_handle_key_is_configured_else_derived_from_the_master_key_else_random() {
        let key = "c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=";
        let source = |settings: Settings| settings.report_settings().expect("valid").key_source;
        assert_eq!(source(Settings::default()), KeySource::RandomPerProcess);
        let with_master = Settings {
            master_key: Some(SecretString::from(key)),
            ..Settings::default()
        };
        assert_eq!(source(with_master.clone()), KeySource::MasterKey);
        let configured = Settings {
            report_handle_key: Some(SecretString::from(key)),
            ..with_master
        };
        assert_eq!(source(configured), KeySource::Configured);
        let short = Settings {
            report_handle_key: Some(SecretString::from("dG9vIHNob3J0")),
            ..Settings::default()
        };
        let error = short.validate().expect_err("too short").to_string();
        assert!(error.contains("TESSERA_REPORT_HANDLE_KEY"), "{error}");
    }

    #[test]
    fn a_master_key_that_is_not_32_bytes_is_rejected_naming_the_setting() {
        let settings = Settings {
            master_key: Some(SecretString::from("dG9vIHNob3J0")),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("16 bytes are too few");
        assert!(error.to_string().contains("TESSERA_MASTER_KEY"));
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail closure returns figment's own (large) error type"
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
            jail.set_env("TESSERA_DATABASE_URL", "sqlite://tessera.db");
            let settings = Settings::load(None).expect("loads");
            let envoy = settings.envoy_settings().expect("valid");
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
    fn a_bad_envoy_rule_is_rejected_naming_the_setting_and_the_rule() {
        let settings = Settings {
            envoy_rules: vec![EnvoyRule {
                method: "GET".to_owned(),
                path: Some("orders".to_owned()),
                prefix: None,
                permission: String::new(),
            }],
            ..Settings::default()
        };
        let error = settings.validate().expect_err("not a path");
        assert!(error.to_string().contains("TESSERA_ENVOY_RULES"));
        assert!(error.to_string().contains("rule 0"));
    }

    #[test]
    fn a_signature_window_of_zero_is_rejected_naming_the_setting() {
        let settings = Settings {
            signature_window_seconds: 0,
            ..Settings::default()
        };
        let error = settings.validate().expect_err("zero window");
        assert!(
            error
                .to_string()
                .contains("TESSERA_SIGNATURE_WINDOW_SECONDS")
        );
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
    }

    #[test]
    fn the_bootstrap_key_goes_beside_the_sqlite_file() {
        let settings = Settings {
            database_url: SecretString::from("sqlite:///var/lib/tessera/tessera.db?mode=rwc"),
            ..Settings::default()
        };
        assert_eq!(
            settings.bootstrap_key_path(),
            PathBuf::from("/var/lib/tessera/tessera-admin.key")
        );
        assert_eq!(
            Settings::default().bootstrap_key_path(),
            PathBuf::from("tessera-admin.key")
        );
    }

    #[test]
    fn an_unknown_database_scheme_is_rejected_naming_the_setting() {
        let settings = Settings {
            database_url: SecretString::from("mysql://db"),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("mysql is not supported");
        assert!(error.to_string().contains("TESSERA_DATABASE_URL"));
    }

    #[test]
    fn a_bad_token_prefix_is_rejected_naming_the_setting() {
        let settings = Settings {
            token_prefix: "Not Valid".to_owned(),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("prefix");
        assert!(error.to_string().contains("TESSERA_TOKEN_PREFIX"));
    }

    // ops tests start
    #[test]
    fn a_tls_key_without_a_certificate_is_rejected_naming_the_missing_setting() {
        let settings = Settings {
            tls_key_file: Some(PathBuf::from("/etc/tessera/tls.key")),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("half a TLS configuration");
        assert!(
            error.to_string().contains("TESSERA_TLS_CERT_FILE"),
            "{error}"
        );
    }

    #[test]
    fn a_client_ca_without_tls_is_rejected_naming_the_setting() {
        let settings = Settings {
            tls_client_ca_file: Some(PathBuf::from("/etc/tessera/ca.crt")),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("mTLS needs TLS");
        assert!(
            error.to_string().contains("TESSERA_TLS_CLIENT_CA_FILE"),
            "{error}"
        );
    }

    #[test]
    fn requiring_client_certificates_needs_a_client_ca() {
        let settings = Settings {
            tls_cert_file: Some(PathBuf::from("/etc/tessera/tls.crt")),
            tls_key_file: Some(PathBuf::from("/etc/tessera/tls.key")),
            tls_require_client_cert: true,
            ..Settings::default()
        };
        let error = settings.validate().expect_err("no CA to verify against");
        assert!(
            error
                .to_string()
                .contains("TESSERA_TLS_REQUIRE_CLIENT_CERT"),
            "{error}"
        );
    }

    #[test]
    fn the_metrics_listener_cannot_share_the_grpc_address() {
        let settings = Settings {
            metrics_listen: Settings::default().listen,
            ..Settings::default()
        };
        let error = settings.validate().expect_err("one port, two servers");
        assert!(
            error.to_string().contains("TESSERA_METRICS_LISTEN"),
            "{error}"
        );
    }

    #[test]
    fn zero_limits_and_deadlines_are_rejected_naming_the_setting() {
        let cases = [
            (
                "TESSERA_MAX_CONCURRENT_REQUESTS",
                Settings {
                    max_concurrent_requests: 0,
                    ..Settings::default()
                },
            ),
            (
                "TESSERA_MAX_REQUEST_BYTES",
                Settings {
                    max_request_bytes: 0,
                    ..Settings::default()
                },
            ),
            (
                "TESSERA_REQUEST_TIMEOUT_MS",
                Settings {
                    request_timeout_ms: 0,
                    ..Settings::default()
                },
            ),
            (
                "TESSERA_DRAIN_TIMEOUT_MS",
                Settings {
                    drain_timeout_ms: 0,
                    ..Settings::default()
                },
            ),
        ];
        for (setting, settings) in cases {
            let error = settings.validate().expect_err(setting);
            assert!(error.to_string().contains(setting), "{error}");
        }
    }

    #[test]
    fn an_otlp_endpoint_must_be_an_http_url() {
        let mut settings = Settings {
            otlp_endpoint: Some("collector:4317".to_owned()),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("no scheme");
        assert!(
            error.to_string().contains("TESSERA_OTLP_ENDPOINT"),
            "{error}"
        );
        settings.otlp_endpoint = Some("http://collector:4317".to_owned());
        assert!(settings.validate().is_ok());
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail closure returns figment's own (large) error type"
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
            Ok(())
        });
    }
    // ops tests end
}
