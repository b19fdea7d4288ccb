//! [`Config`]: the raw [`Settings`] checked once and turned into the types the components take.
//!
//! Each part is valid by construction; the app passes the parts down and nothing past this file
//! reads a raw setting again. Every error names the setting at fault (README lists them).

use crate::domain::metadata::MetadataKey;
use crate::gateway::MetadataHeader;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, EnvoyUnmatched, Settings};
use crate::authz::{AuthzSettings, CacheSettings, SigningSettings};
use crate::domain::fields::Tenant;
use crate::domain::report_handle::{KeySource, ReportHandleKey};
use crate::domain::route::{PermissionRule, PermissionRules, Unmatched};
use crate::domain::signature::MasterKey;
use crate::domain::token::{SecretHash, TokenPrefix};
use crate::domain::usage::EndpointBound;
use crate::fleet::{FleetSettings, RedisEndpoint};
use crate::grpc::envoy::EnvoySettings;
use crate::http::HttpSettings;
use crate::http::leaks::LeakSettings;
use crate::store::{self, PoolOptions, Store, StoreError};
use crate::telemetry::TelemetrySettings;
use crate::tls::TlsSettings;
use crate::usage::{GeoIp, ReportSettings, UsageSettings};

/// The bootstrap key's file name, where `TESSERA_ADMIN_KEY_FILE` names none; the CLI reads it
/// from its working directory when given no key (`src/cli/connect.rs`).
pub const BOOTSTRAP_KEY_FILE_NAME: &str = "tessera-admin.key";

/// The server's whole configuration, typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// What an empty tenant means (`TESSERA_DEFAULT_TENANT`).
    pub default_tenant: Tenant,
    pub listeners: Listeners,
    pub serving: ServingSettings,
    /// None: the gRPC listener is plaintext.
    pub tls: Option<TlsSettings>,
    pub database: Database,
    pub pool: PoolOptions,
    /// The Check path: token prefix, cache, rate limits, request signing.
    pub authz: AuthzSettings,
    pub admin: AdminSettings,
    pub envoy: EnvoySettings,
    /// The HTTP listener's limits (it runs when `listeners.http` is set).
    pub http: HttpSettings,
    /// Usage recording and ReportUsage; the GeoIP database is already open.
    pub usage: UsageSettings,
    /// Lifecycle events: retention, expiry notices, WatchEvents streams.
    pub events: crate::events::EventSettings,
    pub telemetry: TelemetrySettings,
    /// State every replica shares on Redis; None: everything is per replica.
    pub shared_state: Option<SharedStateSettings>,
    /// Webhook deliveries: the address rule and the retry schedule.
    pub webhooks: crate::events::delivery::DeliverySettings,
}

/// Redis for the fleet (`TESSERA_REDIS_*`), and what signed requests do when it is lost.
#[derive(Debug, Clone)]
pub struct SharedStateSettings {
    pub fleet: FleetSettings,
    /// Refuse signed requests while Redis cannot answer (`TESSERA_REPLAY_FAIL_CLOSED`).
    pub replay_fail_closed: bool,
}

/// The addresses to bind; port 0 lets the OS pick.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    /// Every gRPC service (`TESSERA_LISTEN`).
    pub grpc: SocketAddr,
    /// Prometheus `/metrics` (`TESSERA_METRICS_LISTEN`).
    pub metrics: SocketAddr,
    /// The plaintext health-only listener (`TESSERA_HEALTH_LISTEN`).
    pub health: Option<SocketAddr>,
    /// The HTTP surface, forward-auth (`TESSERA_HTTP_LISTEN`).
    pub http: Option<SocketAddr>,
}

/// The gRPC server's limits and shutdown deadlines.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub request_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_concurrent_requests: usize,
}

/// TokenAdminService's part: its keys and rules (the token prefix and the master key are the
/// Check path's, in [`AuthzSettings`], and shared with it).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Hashes of `TESSERA_ADMIN_KEYS`; empty: the bootstrap creates a key on a fresh database.
    pub configured_keys: Vec<SecretHash>,
    /// Where the bootstrap key goes: `TESSERA_ADMIN_KEY_FILE`, else beside the SQLite database,
    /// else the working directory.
    pub bootstrap_key_path: PathBuf,
    /// Live tokens one owner may hold.
    pub max_tokens_per_owner: u32,
}

/// `TESSERA_DATABASE_URL`, by backend: the one place its scheme is read.
#[derive(Debug, Clone)]
pub enum Database {
    /// Embedded SQLite (`sqlite://` or `sqlite:`).
    Sqlite {
        /// The URL as given, its options (`?mode=rwc`…) included.
        url: String,
        /// The file the URL names; None for `:memory:` or an empty path.
        path: Option<PathBuf>,
    },
    /// PostgreSQL (`postgres://` or `postgresql://`); the URL may carry a password.
    Postgres { url: SecretString },
}

impl Database {
    pub fn parse(url: &SecretString) -> Result<Self, ConfigError> {
        let raw = url.expose_secret();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres { url: url.clone() });
        }
        let Some(rest) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        else {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_DATABASE_URL",
                reason: "must start with sqlite:// or postgres://".to_owned(),
            });
        };
        let path = rest
            .split('?')
            .next()
            .filter(|path| !path.is_empty() && *path != ":memory:")
            .map(PathBuf::from);
        Ok(Self::Sqlite {
            url: raw.to_owned(),
            path,
        })
    }

    /// Connects to the backend and applies its migrations.
    pub async fn connect(&self, pool: &PoolOptions) -> Result<Arc<dyn Store>, StoreError> {
        match self {
            Self::Sqlite { url, .. } => store::connect_sqlite(url, pool).await,
            Self::Postgres { url } => store::connect_postgres(url.expose_secret(), pool).await,
        }
    }

    /// The default place of the bootstrap key: beside the SQLite file, else the working
    /// directory.
    fn bootstrap_key_path(&self) -> PathBuf {
        let directory = match self {
            Self::Sqlite {
                path: Some(path), ..
            } => path.parent(),
            _ => None,
        };
        match directory {
            Some(directory) if !directory.as_os_str().is_empty() => {
                directory.join(BOOTSTRAP_KEY_FILE_NAME)
            }
            _ => PathBuf::from(BOOTSTRAP_KEY_FILE_NAME),
        }
    }
}

impl Config {
    /// [`Settings::load`] then [`Config::parse`]: what `tessera serve` runs on.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::parse(Settings::load(file)?)
    }

    /// Checks every setting, in a fixed order (the first bad one is the error), and builds the
    /// parts. Opens the GeoIP database, so an unreadable one stops the start before any port is
    /// bound.
    pub fn parse(settings: Settings) -> Result<Self, ConfigError> {
        let prefix = token_prefix(&settings)?;
        let default_tenant = match settings.default_tenant.as_str() {
            "" => Err(crate::domain::fields::InvalidField::Empty),
            raw => Tenant::parse(raw),
        }
        .map_err(|error| ConfigError::Invalid {
            setting: "TESSERA_DEFAULT_TENANT",
            reason: error.to_string(),
        })?;
        crate::telemetry::validate_filter(&settings.log).map_err(|reason| {
            ConfigError::Invalid {
                setting: "TESSERA_LOG",
                reason,
            }
        })?;
        let (listeners, serving) = serving(&settings)?;
        let tls = tls(&settings)?;
        let otlp_endpoint = otlp_endpoint(settings.otlp_endpoint.as_deref())?;
        let signing = signing(&settings)?;
        let envoy = envoy(&settings)?;
        let http = http(&settings, &serving)?;
        let reports = reports(&settings)?;
        let database = Database::parse(&settings.database_url)?;
        let shared_state = shared_state(&settings)?;
        let webhooks = webhook_settings(&settings)?;
        let max_tokens_per_owner = at_least_one(
            "TESSERA_MAX_TOKENS_PER_OWNER",
            settings.max_tokens_per_owner,
        )?;
        if settings.cache_max_bytes == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_CACHE_MAX_BYTES",
                reason: "must be at least 1 (TESSERA_CACHE_CAPACITY=0 turns caching off)"
                    .to_owned(),
            });
        }
        let default_rate_limit_per_minute = NonZeroU32::new(settings.default_rate_limit_per_minute)
            .ok_or(ConfigError::Invalid {
                setting: "TESSERA_DEFAULT_RATE_LIMIT_PER_MINUTE",
                reason: "must be at least 1".to_owned(),
            })?;
        let cache_ttl = at_least_one_ms("TESSERA_CACHE_TTL_MS", settings.cache_ttl_ms)?;
        let negative_cache_ttl = at_least_one_ms(
            "TESSERA_NEGATIVE_CACHE_TTL_MS",
            settings.negative_cache_ttl_ms,
        )?;
        let check_store_timeout = at_least_one_ms(
            "TESSERA_CHECK_STORE_TIMEOUT_MS",
            settings.check_store_timeout_ms,
        )?;
        let acquire_timeout = at_least_one_ms(
            "TESSERA_DATABASE_ACQUIRE_TIMEOUT_MS",
            settings.database_acquire_timeout_ms,
        )?;
        let statement_timeout = at_least_one_ms(
            "TESSERA_DATABASE_STATEMENT_TIMEOUT_MS",
            settings.database_statement_timeout_ms,
        )?;
        let flush_interval = at_least_one_ms(
            "TESSERA_USAGE_FLUSH_INTERVAL_MS",
            settings.usage_flush_interval_ms,
        )?;
        if settings.usage_retention_days == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_USAGE_RETENTION_DAYS",
                reason: "must be at least 1 (the last 24 hours need a day of minutes)".to_owned(),
            });
        }
        let events = crate::events::EventSettings {
            retention: chrono::Duration::days(i64::from(at_least_one(
                "TESSERA_EVENT_RETENTION_DAYS",
                settings.event_retention_days,
            )?)),
            expiry_scan_interval: at_least_one_ms(
                "TESSERA_EVENT_EXPIRY_SCAN_INTERVAL_MS",
                settings.event_expiry_scan_interval_ms,
            )?,
            watch_poll_interval: at_least_one_ms(
                "TESSERA_EVENT_WATCH_POLL_MS",
                settings.event_watch_poll_ms,
            )?,
            max_watchers: at_least_one("TESSERA_EVENT_MAX_WATCHERS", settings.event_max_watchers)?,
        };
        let buffer_size = at_least_one("TESSERA_USAGE_BUFFER_SIZE", settings.usage_buffer_size)?;
        let pool = PoolOptions {
            max_connections: at_least_one(
                "TESSERA_DATABASE_MAX_CONNECTIONS",
                settings.database_max_connections,
            )?,
            check_max_connections: at_least_one(
                "TESSERA_DATABASE_CHECK_MAX_CONNECTIONS",
                settings.database_check_max_connections,
            )?,
            acquire_timeout,
            statement_timeout,
            check_deadline: check_store_timeout,
        };
        if settings
            .admin_keys
            .iter()
            .any(|key| key.expose_secret().len() < 16)
        {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_ADMIN_KEYS",
                reason: "every admin key must be at least 16 characters".to_owned(),
            });
        }
        let geoip = geoip(settings.geoip_database.as_deref())?;
        let endpoints_per_day = EndpointBound::new(settings.usage_endpoints_per_token_per_day)
            .ok_or(ConfigError::Invalid {
                setting: "TESSERA_USAGE_ENDPOINTS_PER_TOKEN_PER_DAY",
                reason: "must be at least 1".to_owned(),
            })?;

        let admin = AdminSettings {
            configured_keys: settings
                .admin_keys
                .iter()
                .map(|key| SecretHash::of(key.expose_secret()))
                .collect(),
            bootstrap_key_path: settings
                .admin_key_file
                .clone()
                .unwrap_or_else(|| database.bootstrap_key_path()),
            max_tokens_per_owner,
        };
        Ok(Self {
            default_tenant,
            listeners,
            serving,
            tls,
            database,
            pool,
            authz: AuthzSettings {
                prefix,
                cache: CacheSettings {
                    capacity: settings.cache_capacity,
                    max_bytes: settings.cache_max_bytes,
                    ttl: cache_ttl,
                    negative_ttl: negative_cache_ttl,
                },
                default_rate_limit_per_minute,
                signing,
                accept_imported_tokens: settings.accept_imported_tokens,
            },
            admin,
            envoy,
            http,
            usage: UsageSettings {
                enabled: settings.usage_enabled,
                flush_interval,
                retention: chrono::Duration::days(i64::from(settings.usage_retention_days)),
                buffer_size,
                endpoints_per_day,
                geoip,
                reports,
            },
            events,
            telemetry: TelemetrySettings {
                log_filter: settings.log,
                log_format: settings.log_format,
                otlp_endpoint,
            },
            shared_state,
            webhooks,
        })
    }
}

/// `TESSERA_WEBHOOK_ALLOW_PRIVATE_URLS`, `TESSERA_WEBHOOK_RETRY_DELAYS` and
/// `TESSERA_WEBHOOK_TIMEOUT_MS`.
fn webhook_settings(
    settings: &Settings,
) -> Result<crate::events::delivery::DeliverySettings, ConfigError> {
    let retry = crate::domain::webhook::RetrySchedule::parse(&settings.webhook_retry_delays)
        .map_err(|reason| ConfigError::Invalid {
            setting: "TESSERA_WEBHOOK_RETRY_DELAYS",
            reason,
        })?;
    let timeout = at_least_one_ms("TESSERA_WEBHOOK_TIMEOUT_MS", settings.webhook_timeout_ms)?;
    // A claim's lease (`DeliverySettings::lease`, minutes) must outlast any attempt.
    if timeout > Duration::from_secs(60) {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_WEBHOOK_TIMEOUT_MS",
            reason: "must be at most 60000 (one minute)".to_owned(),
        });
    }
    let mut delivery = crate::events::delivery::DeliverySettings::new(
        crate::domain::webhook::AddressRule {
            allow_private: settings.webhook_allow_private_urls,
        },
        retry,
    );
    delivery.timeout = timeout;
    Ok(delivery)
}

/// Redis: the URL (or a cluster's seeds) checked for its scheme here, so a typo names the
/// setting; the fleet itself only connects lazily. The CA file is read now, before anything
/// binds.
fn shared_state(settings: &Settings) -> Result<Option<SharedStateSettings>, ConfigError> {
    let Some(url) = &settings.redis_url else {
        return Ok(None);
    };
    let invalid = |reason: &str| ConfigError::Invalid {
        setting: "TESSERA_REDIS_URL",
        reason: reason.to_owned(),
    };
    let urls: Vec<&str> = url
        .expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(invalid("is empty (unset it to keep state per replica)"));
    }
    // The URL is never repeated in the error: it may carry a password.
    if !urls
        .iter()
        .all(|seed| seed.starts_with("redis://") || seed.starts_with("rediss://"))
    {
        return Err(invalid("must start with redis:// or rediss://"));
    }
    let endpoint = if settings.redis_cluster {
        RedisEndpoint::Cluster(urls.into_iter().map(SecretString::from).collect())
    } else {
        let [single] = urls.as_slice() else {
            return Err(invalid(
                "names several servers; set TESSERA_REDIS_CLUSTER=true for a Redis Cluster's seeds",
            ));
        };
        RedisEndpoint::Server(SecretString::from(*single))
    };
    if settings.redis_key_prefix.is_empty()
        || settings.redis_key_prefix.len() > 64
        || settings.redis_key_prefix.contains(['{', '}'])
    {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_REDIS_KEY_PREFIX",
            reason: "must be 1 to 64 characters without '{' or '}' (cluster hash tags)".to_owned(),
        });
    }
    let tls_root_certificate = match &settings.redis_ca_file {
        None => None,
        Some(path) => Some(std::fs::read(path).map_err(|error| ConfigError::Invalid {
            setting: "TESSERA_REDIS_CA_FILE",
            reason: format!("cannot read {}: {error}", path.display()),
        })?),
    };
    let mut fleet = FleetSettings::new(endpoint);
    fleet.command_timeout = at_least_one_ms("TESSERA_REDIS_TIMEOUT_MS", settings.redis_timeout_ms)?;
    fleet.key_prefix = settings.redis_key_prefix.clone();
    fleet.tls_root_certificate = tls_root_certificate;
    // One limit for the replay guard, local or shared.
    fleet.replay_token_quota = settings.replay_token_quota;
    Ok(Some(SharedStateSettings {
        fleet,
        replay_fail_closed: settings.replay_fail_closed,
    }))
}

/// A count that 0 would make meaningless (a limit, a size, a pool).
fn at_least_one<T: Default + PartialEq>(setting: &'static str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::Invalid {
            setting,
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(value)
}

fn at_least_one_ms(setting: &'static str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            setting,
            reason: "must be at least 1 millisecond".to_owned(),
        });
    }
    Ok(Duration::from_millis(value))
}

fn token_prefix(settings: &Settings) -> Result<TokenPrefix, ConfigError> {
    TokenPrefix::parse(&settings.token_prefix).map_err(|error| ConfigError::Invalid {
        setting: "TESSERA_TOKEN_PREFIX",
        reason: error.to_string(),
    })
}

/// The listeners (no two on one fixed port) and the gRPC server's limits and deadlines.
fn serving(settings: &Settings) -> Result<(Listeners, ServingSettings), ConfigError> {
    let listeners = Listeners {
        grpc: settings.listen,
        metrics: settings.metrics_listen,
        health: settings.health_listen,
        http: settings.http_listen,
    };
    for (setting, address) in [
        ("TESSERA_METRICS_LISTEN", Some(listeners.metrics)),
        ("TESSERA_HEALTH_LISTEN", listeners.health),
        ("TESSERA_HTTP_LISTEN", listeners.http),
    ] {
        if listeners.grpc.port() != 0 && Some(listeners.grpc) == address {
            return Err(ConfigError::Invalid {
                setting,
                reason: "must differ from TESSERA_LISTEN".to_owned(),
            });
        }
    }
    if let Some(health) = listeners.health
        && health.port() != 0
        && health == listeners.metrics
    {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_HEALTH_LISTEN",
            reason: "must differ from TESSERA_METRICS_LISTEN".to_owned(),
        });
    }
    let serving = ServingSettings {
        shutdown_delay: Duration::from_millis(settings.shutdown_delay_ms),
        drain_timeout: at_least_one_ms("TESSERA_DRAIN_TIMEOUT_MS", settings.drain_timeout_ms)?,
        request_timeout: at_least_one_ms(
            "TESSERA_REQUEST_TIMEOUT_MS",
            settings.request_timeout_ms,
        )?,
        max_request_bytes: at_least_one("TESSERA_MAX_REQUEST_BYTES", settings.max_request_bytes)?,
        max_concurrent_requests: at_least_one(
            "TESSERA_MAX_CONCURRENT_REQUESTS",
            settings.max_concurrent_requests,
        )?,
    };
    if let Some(http) = listeners.http
        && http.port() != 0
        && (http == listeners.metrics || Some(http) == listeners.health)
    {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_HTTP_LISTEN",
            reason: "must differ from TESSERA_METRICS_LISTEN and TESSERA_HEALTH_LISTEN".to_owned(),
        });
    }
    Ok((listeners, serving))
}

/// The HTTP listener's limits: its own sizes, the gRPC listener's timeout, concurrency and drain.
fn http(settings: &Settings, serving: &ServingSettings) -> Result<HttpSettings, ConfigError> {
    // hyper's smallest read buffer; a request head must fit in it.
    const MIN_HEADER_BYTES: usize = 8192;
    if settings.http_max_header_bytes < MIN_HEADER_BYTES {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_HTTP_MAX_HEADER_BYTES",
            reason: format!("must be at least {MIN_HEADER_BYTES}"),
        });
    }
    Ok(HttpSettings {
        max_body_bytes: at_least_one("TESSERA_HTTP_MAX_BODY_BYTES", settings.http_max_body_bytes)?,
        max_header_bytes: settings.http_max_header_bytes,
        request_timeout: serving.request_timeout,
        max_concurrent_requests: serving.max_concurrent_requests,
        drain_timeout: serving.drain_timeout,
        leaks: leaks(settings)?,
        console: console(settings)?,
    })
}

/// The console and portal: who may frame the portal, the sign-in limit, cookies' `Secure`.
fn console(settings: &Settings) -> Result<crate::console::ConsoleSettings, ConfigError> {
    let portal_frame_ancestors = crate::console::parse_frame_ancestors(
        &settings.portal_frame_ancestors,
    )
    .map_err(|reason| ConfigError::Invalid {
        setting: "TESSERA_PORTAL_FRAME_ANCESTORS",
        reason,
    })?;
    let public_url =
        match &settings.public_url {
            Some(raw) => Some(crate::console::parse_public_url(raw).map_err(|reason| {
                ConfigError::Invalid {
                    setting: "TESSERA_PUBLIC_URL",
                    reason,
                }
            })?),
            None => None,
        };
    Ok(crate::console::ConsoleSettings {
        public_url,
        portal_frame_ancestors,
        sign_ins_per_minute: NonZeroU32::new(settings.console_sign_ins_per_minute).ok_or(
            ConfigError::Invalid {
                setting: "TESSERA_CONSOLE_SIGN_INS_PER_MINUTE",
                reason: "must be at least 1".to_owned(),
            },
        )?,
        trusted_hops: usize::try_from(settings.envoy_trusted_hops).unwrap_or(usize::MAX),
        tls: settings.tls_cert_file.is_some(),
    })
}

/// The leak report routes: the keys file read once here (a bad one fails the start, naming the
/// setting; later changes are re-read by the route), the rate limit, the client IP's hops.
fn leaks(settings: &Settings) -> Result<LeakSettings, ConfigError> {
    if let Some(path) = &settings.github_scanning_keys_file {
        crate::http::leaks::load_keys(path).map_err(|error| ConfigError::Invalid {
            setting: "TESSERA_GITHUB_SCANNING_KEYS_FILE",
            reason: error.to_string(),
        })?;
    }
    Ok(LeakSettings {
        github_keys_file: settings.github_scanning_keys_file.clone(),
        reports_per_minute: NonZeroU32::new(settings.leak_reports_per_minute).ok_or(
            ConfigError::Invalid {
                setting: "TESSERA_LEAK_REPORTS_PER_MINUTE",
                reason: "must be at least 1".to_owned(),
            },
        )?,
        trusted_hops: usize::try_from(settings.envoy_trusted_hops).unwrap_or(usize::MAX),
    })
}

/// TLS for the gRPC listener, when a certificate is configured. The files are read by
/// `Tls::load` (`src/tls.rs`), which names the setting of a bad one.
fn tls(settings: &Settings) -> Result<Option<TlsSettings>, ConfigError> {
    let invalid = |setting: &'static str, reason: &str| ConfigError::Invalid {
        setting,
        reason: reason.to_owned(),
    };
    let (cert_file, key_file) = match (&settings.tls_cert_file, &settings.tls_key_file) {
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
        (None, None) if settings.tls_client_ca_file.is_some() => {
            return Err(invalid(
                "TESSERA_TLS_CLIENT_CA_FILE",
                "needs TLS: set TESSERA_TLS_CERT_FILE and TESSERA_TLS_KEY_FILE",
            ));
        }
        (None, None) if settings.tls_require_client_cert => {
            return Err(invalid(
                "TESSERA_TLS_REQUIRE_CLIENT_CERT",
                "needs TLS and TESSERA_TLS_CLIENT_CA_FILE",
            ));
        }
        (None, None) => return Ok(None),
    };
    if settings.tls_require_client_cert && settings.tls_client_ca_file.is_none() {
        return Err(invalid(
            "TESSERA_TLS_REQUIRE_CLIENT_CERT",
            "needs TESSERA_TLS_CLIENT_CA_FILE, the CA that signs client certificates",
        ));
    }
    if settings.tls_reload_interval_ms == 0 {
        return Err(invalid(
            "TESSERA_TLS_RELOAD_INTERVAL_MS",
            "must be at least 1 millisecond",
        ));
    }
    Ok(Some(TlsSettings {
        cert_file,
        key_file,
        client_ca_file: settings.tls_client_ca_file.clone(),
        require_client_cert: settings.tls_require_client_cert,
        reload_interval: Duration::from_millis(settings.tls_reload_interval_ms),
    }))
}

/// The OTLP collector URL; unset and empty both mean no export.
fn otlp_endpoint(raw: Option<&str>) -> Result<Option<url::Url>, ConfigError> {
    let Some(endpoint) = raw.filter(|raw| !raw.is_empty()) else {
        return Ok(None);
    };
    url::Url::parse(endpoint)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .map(Some)
        .ok_or(ConfigError::Invalid {
            setting: "TESSERA_OTLP_ENDPOINT",
            reason: "must be an http:// or https:// URL, e.g. http://collector:4317".to_owned(),
        })
}

/// The master key, when one is configured.
fn master_key(settings: &Settings) -> Result<Option<MasterKey>, ConfigError> {
    settings
        .master_key
        .as_ref()
        .map(|encoded| {
            MasterKey::parse(encoded).map_err(|error| ConfigError::Invalid {
                setting: "TESSERA_MASTER_KEY",
                reason: format!("{error} (e.g. `openssl rand -base64 32`)"),
            })
        })
        .transpose()
}

fn signing(settings: &Settings) -> Result<SigningSettings, ConfigError> {
    if !(1..=86_400).contains(&settings.signature_window_seconds) {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_SIGNATURE_WINDOW_SECONDS",
            reason: "must be 1 to 86400 seconds".to_owned(),
        });
    }
    if settings.replay_cache_capacity == 0 {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_REPLAY_CACHE_CAPACITY",
            reason: "must be at least 1".to_owned(),
        });
    }
    if !(2..=settings.replay_cache_capacity).contains(&settings.replay_token_quota) {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_REPLAY_TOKEN_QUOTA",
            reason: "must be 2 to TESSERA_REPLAY_CACHE_CAPACITY".to_owned(),
        });
    }
    Ok(SigningSettings {
        master_key: master_key(settings)?,
        window: Duration::from_secs(settings.signature_window_seconds),
        replay_capacity: settings.replay_cache_capacity,
        replay_token_quota: settings.replay_token_quota,
    })
}

/// How Envoy ext_authz requests map onto Check.
fn envoy(settings: &Settings) -> Result<EnvoySettings, ConfigError> {
    let mut rules = Vec::with_capacity(settings.envoy_rules.len());
    for (index, rule) in settings.envoy_rules.iter().enumerate() {
        let parsed = PermissionRule::parse(
            &rule.method,
            rule.path.as_deref(),
            rule.prefix.as_deref(),
            &rule.permission,
        )
        .and_then(|parsed| parsed.needing(&rule.all_permissions, &rule.any_permissions))
        .and_then(|parsed| parsed.costing(rule.cost))
        .map_err(|error| ConfigError::Invalid {
            setting: "TESSERA_ENVOY_RULES",
            reason: format!("rule {index}: {error}"),
        })?;
        rules.push(parsed);
    }
    let unmatched = match settings.envoy_unmatched {
        EnvoyUnmatched::Deny => Unmatched::Deny,
        EnvoyUnmatched::Authenticate => Unmatched::Authenticate,
    };
    Ok(EnvoySettings {
        token_header: header_name("TESSERA_ENVOY_TOKEN_HEADER", &settings.envoy_token_header)?,
        tenant_header: settings
            .envoy_tenant_header
            .as_deref()
            .map(|name| header_name("TESSERA_ENVOY_TENANT_HEADER", name))
            .transpose()?,
        trusted_hops: usize::try_from(settings.envoy_trusted_hops).unwrap_or(usize::MAX),
        rules: PermissionRules::new(rules, unmatched),
        signature_header: header_name(
            "TESSERA_ENVOY_SIGNATURE_HEADER",
            &settings.envoy_signature_header,
        )?,
        timestamp_header: header_name(
            "TESSERA_ENVOY_TIMESTAMP_HEADER",
            &settings.envoy_timestamp_header,
        )?,
        sign_body: settings.envoy_sign_body,
        metadata_headers: settings
            .gateway_metadata_headers
            .iter()
            .map(|key| {
                MetadataKey::parse(key)
                    .map(MetadataHeader::new)
                    .map_err(|error| ConfigError::Invalid {
                        setting: "TESSERA_GATEWAY_METADATA_HEADERS",
                        reason: format!("{key:.64}: {error}"),
                    })
            })
            .collect::<Result<_, _>>()?,
    })
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

/// ReportUsage's rules and the report handle key: configured, else derived from the master key,
/// else random per process.
fn reports(settings: &Settings) -> Result<ReportSettings, ConfigError> {
    let retention_seconds = u64::from(settings.usage_retention_days) * 86_400;
    if !(1..=retention_seconds).contains(&settings.usage_report_handle_ttl_seconds) {
        return Err(ConfigError::Invalid {
            setting: "TESSERA_USAGE_REPORT_HANDLE_TTL_SECONDS",
            reason: "must be at least 1 second and at most the usage retention".to_owned(),
        });
    }
    let (key, key_source) = match (&settings.report_handle_key, &settings.master_key) {
        (Some(configured), _) => (
            ReportHandleKey::parse(configured).map_err(|error| ConfigError::Invalid {
                setting: "TESSERA_REPORT_HANDLE_KEY",
                reason: format!("{error} (e.g. `openssl rand -base64 32`)"),
            })?,
            KeySource::Configured,
        ),
        (None, Some(master_key)) => {
            // Validated as the master key first, so an error names that setting.
            self::master_key(settings)?;
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
        accept_bare_token_ids: settings.usage_accept_bare_token_ids,
        handle_lifetime: chrono::Duration::seconds(
            i64::try_from(settings.usage_report_handle_ttl_seconds).unwrap_or(i64::MAX),
        ),
    })
}

/// Opens the GeoIP database, when one is configured.
fn geoip(path: Option<&Path>) -> Result<Option<Arc<GeoIp>>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let opened = GeoIp::open(path).map_err(|error| ConfigError::Invalid {
        setting: "TESSERA_GEOIP_DATABASE",
        reason: format!("cannot read {}: {error}", path.display()),
    })?;
    Ok(Some(Arc::new(opened)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvoyRule;
    use crate::telemetry::LogFormat;

    fn parse(settings: Settings) -> Config {
        Config::parse(settings).expect("valid settings")
    }

    /// The error `settings` are refused with, as text.
    fn refusal(settings: Settings) -> String {
        Config::parse(settings)
            .map(drop)
            .expect_err("invalid settings")
            .to_string()
    }

    #[test]
    fn the_default_settings_parse_to_each_components_own_defaults() {
        let config = parse(Settings::default());
        let pool = PoolOptions::default();
        assert_eq!(config.pool.max_connections, pool.max_connections);
        assert_eq!(
            config.pool.check_max_connections,
            pool.check_max_connections
        );
        assert_eq!(config.pool.acquire_timeout, pool.acquire_timeout);
        assert_eq!(config.pool.statement_timeout, pool.statement_timeout);
        let envoy = EnvoySettings::default();
        assert_eq!(config.envoy.token_header, envoy.token_header);
        assert_eq!(config.envoy.signature_header, envoy.signature_header);
        assert_eq!(config.envoy.timestamp_header, envoy.timestamp_header);
        assert_eq!(config.envoy.tenant_header, envoy.tenant_header);
        assert_eq!(config.envoy.trusted_hops, envoy.trusted_hops);
        assert_eq!(config.envoy.sign_body, envoy.sign_body);
        let signing = SigningSettings::default();
        assert_eq!(config.authz.signing.window, signing.window);
        assert_eq!(
            config.authz.signing.replay_capacity,
            signing.replay_capacity
        );
        assert_eq!(
            config.authz.signing.replay_token_quota,
            signing.replay_token_quota
        );
        assert!(config.authz.signing.master_key.is_none());
        assert_eq!(
            config.usage.reports.handle_lifetime,
            ReportSettings::default().handle_lifetime
        );
        assert_eq!(config.usage.endpoints_per_day, EndpointBound::DEFAULT);
        assert_eq!(config.authz.prefix, TokenPrefix::default());
    }

    #[test]
    fn serving_limits_deadlines_and_listeners_are_typed() {
        let config = parse(Settings {
            listen: "127.0.0.1:7000".parse().expect("address"),
            metrics_listen: "127.0.0.1:7001".parse().expect("address"),
            health_listen: Some("127.0.0.1:7002".parse().expect("address")),
            shutdown_delay_ms: 1_500,
            drain_timeout_ms: 2_500,
            request_timeout_ms: 3_500,
            max_request_bytes: 4_096,
            max_concurrent_requests: 8,
            ..Settings::default()
        });
        assert_eq!(config.listeners.grpc.port(), 7000);
        assert_eq!(config.listeners.metrics.port(), 7001);
        assert_eq!(config.listeners.health.map(|a| a.port()), Some(7002));
        assert_eq!(config.serving.shutdown_delay, Duration::from_millis(1_500));
        assert_eq!(config.serving.drain_timeout, Duration::from_millis(2_500));
        assert_eq!(config.serving.request_timeout, Duration::from_millis(3_500));
        assert_eq!(config.serving.max_request_bytes, 4_096);
        assert_eq!(config.serving.max_concurrent_requests, 8);
    }

    #[test]
    fn tls_is_off_without_files_and_typed_with_them() {
        assert!(parse(Settings::default()).tls.is_none());
        let tls = parse(Settings {
            tls_cert_file: Some(PathBuf::from("/etc/tessera/tls.crt")),
            tls_key_file: Some(PathBuf::from("/etc/tessera/tls.key")),
            tls_client_ca_file: Some(PathBuf::from("/etc/tessera/ca.crt")),
            tls_require_client_cert: true,
            tls_reload_interval_ms: 250,
            ..Settings::default()
        })
        .tls
        .expect("tls on");
        assert_eq!(tls.cert_file, PathBuf::from("/etc/tessera/tls.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/tessera/tls.key"));
        assert!(tls.admin_requires_client_cert());
        assert!(tls.require_client_cert);
        assert_eq!(tls.reload_interval, Duration::from_millis(250));
    }

    #[test]
    fn cache_rate_limit_and_pool_settings_are_typed() {
        let config = parse(Settings {
            cache_capacity: 10,
            cache_max_bytes: 20_000,
            cache_ttl_ms: 30,
            negative_cache_ttl_ms: 40,
            check_store_timeout_ms: 50,
            default_rate_limit_per_minute: 60,
            database_max_connections: 3,
            database_check_max_connections: 4,
            database_acquire_timeout_ms: 70,
            database_statement_timeout_ms: 80,
            ..Settings::default()
        });
        assert_eq!(config.authz.cache.capacity, 10);
        assert_eq!(config.authz.cache.max_bytes, 20_000);
        assert_eq!(config.authz.cache.ttl, Duration::from_millis(30));
        assert_eq!(config.authz.cache.negative_ttl, Duration::from_millis(40));
        assert_eq!(config.pool.check_deadline, Duration::from_millis(50));
        assert_eq!(config.authz.default_rate_limit_per_minute.get(), 60);
        assert_eq!(config.pool.max_connections, 3);
        assert_eq!(config.pool.check_max_connections, 4);
        assert_eq!(config.pool.acquire_timeout, Duration::from_millis(70));
        assert_eq!(config.pool.statement_timeout, Duration::from_millis(80));
    }

    #[test]
    fn usage_settings_are_typed() {
        let config = parse(Settings {
            usage_enabled: false,
            usage_flush_interval_ms: 250,
            usage_retention_days: 3,
            usage_buffer_size: 9,
            usage_endpoints_per_token_per_day: 5,
            usage_accept_bare_token_ids: true,
            usage_report_handle_ttl_seconds: 60,
            ..Settings::default()
        });
        assert!(!config.usage.enabled);
        assert_eq!(config.usage.flush_interval, Duration::from_millis(250));
        assert_eq!(config.usage.retention, chrono::Duration::days(3));
        assert_eq!(config.usage.buffer_size, 9);
        assert_eq!(config.usage.endpoints_per_day.get(), 5);
        assert!(config.usage.geoip.is_none());
        assert!(config.usage.reports.accept_bare_token_ids);
        assert_eq!(
            config.usage.reports.handle_lifetime,
            chrono::Duration::seconds(60)
        );
    }

    #[test]
    fn admin_keys_are_kept_as_hashes_with_the_owner_limit() {
        let key = "an-admin-key-of-sixteen-or-more";
        let config = parse(Settings {
            admin_keys: vec![SecretString::from(key)],
            max_tokens_per_owner: 3,
            ..Settings::default()
        });
        assert_eq!(config.admin.configured_keys.len(), 1);
        assert_eq!(
            config.admin.configured_keys[0].0,
            SecretHash::of(key).0,
            "the hash of the configured key"
        );
        assert_eq!(config.admin.max_tokens_per_owner, 3);
    }

    #[test]
    fn the_database_url_becomes_sqlite_with_its_file_or_postgres() {
        let database = |url: &str| Database::parse(&SecretString::from(url)).expect(url);
        let Database::Sqlite { url, path } = database("sqlite:///var/lib/tessera/t.db?mode=rwc")
        else {
            panic!("sqlite");
        };
        assert_eq!(url, "sqlite:///var/lib/tessera/t.db?mode=rwc");
        assert_eq!(path, Some(PathBuf::from("/var/lib/tessera/t.db")));
        assert!(matches!(
            database("sqlite:tessera.db"),
            Database::Sqlite { path: Some(path), .. } if path == Path::new("tessera.db")
        ));
        assert!(matches!(
            database("sqlite::memory:"),
            Database::Sqlite { path: None, .. }
        ));
        for url in ["postgres://db/tessera", "postgresql://db/tessera"] {
            let Database::Postgres { url: parsed } = database(url) else {
                panic!("{url} is postgres");
            };
            assert_eq!(parsed.expose_secret(), url);
        }
    }

    #[test]
    fn an_unknown_database_scheme_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            database_url: SecretString::from("mysql://db"),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_DATABASE_URL"), "{error}");
    }

    #[test]
    fn the_bootstrap_key_goes_beside_the_sqlite_file() {
        let config = parse(Settings {
            database_url: SecretString::from("sqlite:///var/lib/tessera/tessera.db?mode=rwc"),
            ..Settings::default()
        });
        assert_eq!(
            config.admin.bootstrap_key_path,
            PathBuf::from("/var/lib/tessera/tessera-admin.key")
        );
        assert_eq!(
            parse(Settings::default()).admin.bootstrap_key_path,
            PathBuf::from("tessera-admin.key")
        );
    }

    #[test]
    fn the_bootstrap_key_goes_where_configured_else_into_the_working_directory_for_postgres() {
        let configured = parse(Settings {
            admin_key_file: Some(PathBuf::from("/run/keys/admin.key")),
            ..Settings::default()
        });
        assert_eq!(
            configured.admin.bootstrap_key_path,
            PathBuf::from("/run/keys/admin.key")
        );
        let postgres = parse(Settings {
            database_url: SecretString::from("postgres://db/tessera"),
            ..Settings::default()
        });
        assert_eq!(
            postgres.admin.bootstrap_key_path,
            PathBuf::from("tessera-admin.key")
        );
        let in_memory = parse(Settings {
            database_url: SecretString::from("sqlite::memory:"),
            ..Settings::default()
        });
        assert_eq!(
            in_memory.admin.bootstrap_key_path,
            PathBuf::from("tessera-admin.key")
        );
    }

    #[test]
    fn an_empty_otlp_endpoint_exports_no_spans() {
        let telemetry = parse(Settings {
            otlp_endpoint: Some(String::new()),
            ..Settings::default()
        })
        .telemetry;
        assert!(telemetry.otlp_endpoint.is_none());
        assert!(!telemetry.exports_spans());
        assert!(!parse(Settings::default()).telemetry.exports_spans());
    }

    #[test]
    fn an_otlp_endpoint_must_be_an_http_url() {
        let error = refusal(Settings {
            otlp_endpoint: Some("collector:4317".to_owned()),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_OTLP_ENDPOINT"), "{error}");
        let telemetry = parse(Settings {
            otlp_endpoint: Some("http://collector:4317".to_owned()),
            log: "tessera=debug".to_owned(),
            log_format: LogFormat::Json,
            ..Settings::default()
        })
        .telemetry;
        assert!(telemetry.exports_spans());
        assert_eq!(
            telemetry.otlp_endpoint.map(|url| url.to_string()),
            Some("http://collector:4317/".to_owned())
        );
        assert_eq!(telemetry.log_filter, "tessera=debug");
        assert_eq!(telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn an_invalid_log_filter_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            log: "tessera=loudest".to_owned(),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_LOG"), "{error}");
    }

    #[test]
    fn the_report_handle_key_is_configured_else_derived_from_the_master_key_else_random() {
        let key = "c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=";
        let source = |settings: Settings| parse(settings).usage.reports.key_source;
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
        let error = refusal(short);
        assert!(error.contains("TESSERA_REPORT_HANDLE_KEY"), "{error}");
    }

    #[test]
    fn a_master_key_that_is_not_32_bytes_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            master_key: Some(SecretString::from("dG9vIHNob3J0")),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_MASTER_KEY"), "{error}");
    }

    #[test]
    fn a_valid_master_key_opens_signing_keys() {
        let config = parse(Settings {
            master_key: Some(SecretString::from(
                "c2l4dGVlbi1ieXRlcy1vZi1rZXkhc2l4dGVlbi1ieXQ=",
            )),
            signature_window_seconds: 30,
            ..Settings::default()
        });
        assert!(config.authz.signing.master_key.is_some());
        assert_eq!(config.authz.signing.window, Duration::from_secs(30));
    }

    #[test]
    fn a_bad_envoy_rule_is_rejected_naming_the_setting_and_the_rule() {
        let error = refusal(Settings {
            envoy_rules: vec![EnvoyRule {
                method: "GET".to_owned(),
                path: Some("orders".to_owned()),
                prefix: None,
                permission: String::new(),
                ..Default::default()
            }],
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_ENVOY_RULES"), "{error}");
        assert!(error.contains("rule 0"), "{error}");
    }

    #[test]
    fn a_bad_envoy_header_name_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            envoy_tenant_header: Some("x tenant".to_owned()),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_ENVOY_TENANT_HEADER"), "{error}");
    }

    #[test]
    fn gateway_metadata_headers_are_none_by_default_and_a_bad_key_names_the_setting() {
        assert!(parse(Settings::default()).envoy.metadata_headers.is_empty());
        let chosen = parse(Settings {
            gateway_metadata_headers: vec!["plan".to_owned(), "customer.id".to_owned()],
            ..Settings::default()
        });
        let headers: Vec<&str> = chosen
            .envoy
            .metadata_headers
            .iter()
            .map(crate::gateway::MetadataHeader::header)
            .collect();
        assert_eq!(
            headers,
            ["x-tessera-meta-plan", "x-tessera-meta-customer.id"]
        );
        let error = refusal(Settings {
            gateway_metadata_headers: vec!["Plan".to_owned()],
            ..Settings::default()
        });
        assert!(
            error.contains("TESSERA_GATEWAY_METADATA_HEADERS"),
            "{error}"
        );
    }

    #[test]
    fn the_http_listener_is_off_by_default_and_its_limits_are_typed() {
        let config = parse(Settings::default());
        assert_eq!(config.listeners.http, None);
        let config = parse(Settings {
            http_listen: Some("127.0.0.1:7080".parse().expect("address")),
            http_max_body_bytes: 1024,
            ..Settings::default()
        });
        assert_eq!(config.listeners.http.map(|a| a.port()), Some(7080));
        assert_eq!(config.http.max_body_bytes, 1024);
        assert_eq!(config.http.request_timeout, config.serving.request_timeout);
        let small_heads = refusal(Settings {
            http_max_header_bytes: 4096,
            ..Settings::default()
        });
        assert!(
            small_heads.contains("TESSERA_HTTP_MAX_HEADER_BYTES"),
            "{small_heads}"
        );
        let shared = refusal(Settings {
            http_listen: Some(Settings::default().metrics_listen),
            ..Settings::default()
        });
        assert!(shared.contains("TESSERA_HTTP_LISTEN"), "{shared}");
    }

    #[test]
    fn a_signature_window_of_zero_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            signature_window_seconds: 0,
            ..Settings::default()
        });
        assert!(
            error.contains("TESSERA_SIGNATURE_WINDOW_SECONDS"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_token_prefix_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            token_prefix: "Not Valid".to_owned(),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_TOKEN_PREFIX"), "{error}");
    }

    #[test]
    fn a_tls_key_without_a_certificate_is_rejected_naming_the_missing_setting() {
        let error = refusal(Settings {
            tls_key_file: Some(PathBuf::from("/etc/tessera/tls.key")),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_TLS_CERT_FILE"), "{error}");
    }

    #[test]
    fn a_client_ca_without_tls_is_rejected_naming_the_setting() {
        let error = refusal(Settings {
            tls_client_ca_file: Some(PathBuf::from("/etc/tessera/ca.crt")),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_TLS_CLIENT_CA_FILE"), "{error}");
    }

    #[test]
    fn requiring_client_certificates_needs_a_client_ca() {
        let error = refusal(Settings {
            tls_cert_file: Some(PathBuf::from("/etc/tessera/tls.crt")),
            tls_key_file: Some(PathBuf::from("/etc/tessera/tls.key")),
            tls_require_client_cert: true,
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_TLS_REQUIRE_CLIENT_CERT"), "{error}");
    }

    #[test]
    fn the_metrics_listener_cannot_share_the_grpc_address() {
        let error = refusal(Settings {
            metrics_listen: Settings::default().listen,
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_METRICS_LISTEN"), "{error}");
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
            (
                "TESSERA_DATABASE_CHECK_MAX_CONNECTIONS",
                Settings {
                    database_check_max_connections: 0,
                    ..Settings::default()
                },
            ),
            (
                "TESSERA_CACHE_TTL_MS",
                Settings {
                    cache_ttl_ms: 0,
                    ..Settings::default()
                },
            ),
            (
                "TESSERA_USAGE_ENDPOINTS_PER_TOKEN_PER_DAY",
                Settings {
                    usage_endpoints_per_token_per_day: 0,
                    ..Settings::default()
                },
            ),
        ];
        for (setting, settings) in cases {
            let error = refusal(settings);
            assert!(error.contains(setting), "{error}");
        }
    }

    #[test]
    fn an_unreadable_geoip_database_is_refused_naming_the_setting_and_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("not-a-database.mmdb");
        std::fs::write(&file, b"hello").expect("file");
        let error = refusal(Settings {
            geoip_database: Some(file.clone()),
            ..Settings::default()
        });
        assert!(error.contains("TESSERA_GEOIP_DATABASE"), "{error}");
        assert!(error.contains(&file.display().to_string()), "{error}");
    }

    #[test]
    fn a_redis_url_of_another_scheme_is_refused_naming_the_setting_without_its_password() {
        let message = refusal(Settings {
            redis_url: Some(SecretString::from("http://user:hunter2hunter2@redis:6379")),
            ..Settings::default()
        });
        assert!(message.contains("TESSERA_REDIS_URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn several_redis_servers_need_the_cluster_setting() {
        let seeds = "redis://10.0.0.1:6379,redis://10.0.0.2:6379";
        let message = refusal(Settings {
            redis_url: Some(SecretString::from(seeds)),
            ..Settings::default()
        });
        assert!(message.contains("TESSERA_REDIS_CLUSTER"), "{message}");
        let config = parse(Settings {
            redis_url: Some(SecretString::from(seeds)),
            redis_cluster: true,
            ..Settings::default()
        });
        let shared = config.shared_state.expect("shared state");
        assert!(
            matches!(shared.fleet.endpoint, RedisEndpoint::Cluster(ref nodes) if nodes.len() == 2)
        );
    }

    #[test]
    fn without_a_redis_url_state_stays_per_replica_and_with_one_the_bound_is_typed() {
        assert!(parse(Settings::default()).shared_state.is_none());
        let config = parse(Settings {
            redis_url: Some(SecretString::from("rediss://:pw@redis.internal:6380/0")),
            redis_timeout_ms: 3,
            replay_fail_closed: true,
            ..Settings::default()
        });
        let shared = config.shared_state.expect("shared state");
        assert_eq!(shared.fleet.command_timeout, Duration::from_millis(3));
        assert!(shared.replay_fail_closed);
        assert!(!format!("{shared:?}").contains(":pw@"));
    }

    #[test]
    fn the_webhook_settings_default_to_the_day_of_retries_and_refuse_private_urls() {
        let config = parse(Settings::default());
        assert_eq!(
            config.webhooks.retry,
            crate::domain::webhook::RetrySchedule::default()
        );
        assert!(!config.webhooks.rule.allow_private);
        let refused = Config::parse(Settings {
            webhook_retry_delays: "1s, soon".to_owned(),
            ..Settings::default()
        })
        .expect_err("refused");
        assert!(
            refused.to_string().contains("TESSERA_WEBHOOK_RETRY_DELAYS"),
            "{refused}"
        );
    }
}
