//! Settings: defaults, then an optional TOML file, then `TESSERA_*` environment variables.
//!
//! Secrets (the database URL, which may carry a password, and admin keys) are `SecretString`s,
//! so neither `Debug` nor a log line can print them by accident.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::authz::{AuthzSettings, CacheSettings, SigningSettings};
use crate::domain::route::{PermissionRule, PermissionRules, Unmatched};
use crate::domain::signature::MasterKey;
use crate::domain::token::TokenPrefix;
use crate::grpc::envoy::EnvoySettings;
use crate::store::PoolOptions;

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
    /// Most connections the server opens to the database.
    pub database_max_connections: u32,
    /// How long a request waits for a database connection before the store counts as down.
    pub database_acquire_timeout_ms: u64,
    /// Longest a single statement may run (Postgres `statement_timeout`).
    pub database_statement_timeout_ms: u64,
    /// Most cached token records; 0 turns caching off (every Check reads the store).
    pub cache_capacity: u64,
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
    /// Most signatures each replica remembers to refuse replays; keep it above (signed requests
    /// per second × 2 × window).
    pub replay_cache_capacity: u64,
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
    /// Log filter in `tracing` EnvFilter syntax.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
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
            database_acquire_timeout_ms: 2_000,
            database_statement_timeout_ms: 5_000,
            cache_capacity: 1_000_000,
            cache_ttl_ms: 60_000,
            negative_cache_ttl_ms: 5_000,
            check_store_timeout_ms: 500,
            default_rate_limit_per_minute: 60,
            master_key: None,
            signature_window_seconds: 300,
            replay_cache_capacity: crate::authz::replay::DEFAULT_CAPACITY,
            envoy_token_header: "authorization".to_owned(),
            envoy_tenant_header: None,
            envoy_trusted_hops: 0,
            envoy_rules: Vec::new(),
            envoy_unmatched: EnvoyUnmatched::Deny,
            envoy_signature_header: "x-tessera-signature".to_owned(),
            envoy_timestamp_header: "x-tessera-timestamp".to_owned(),
            envoy_sign_body: false,
            log: "info".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

impl Settings {
    /// Layers defaults, the TOML file (if any) and `TESSERA_*` variables, then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
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
        self.signing_settings()?;
        self.envoy_settings()?;
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
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "must be at least 1 millisecond".to_owned(),
                });
            }
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::Invalid {
                setting: "TESSERA_DATABASE_MAX_CONNECTIONS",
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
        Ok(SigningSettings {
            master_key: self.master_key()?,
            window: Duration::from_secs(self.signature_window_seconds),
            replay_capacity: self.replay_cache_capacity,
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

    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_connections: self.database_max_connections,
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
    /// Exact path (without the query string). Give this or `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix.
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
    fn a_master_key_that_is_not_32_bytes_is_rejected_naming_the_setting() {
        let settings = Settings {
            master_key: Some(SecretString::from("dG9vIHNob3J0")),
            ..Settings::default()
        };
        let error = settings.validate().expect_err("16 bytes are too few");
        assert!(error.to_string().contains("TESSERA_MASTER_KEY"));
    }

    #[test]
    // figment's Jail closure returns figment's own (large) error type.
    #[allow(clippy::result_large_err)]
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
            let rule = envoy.rules.find("GET", "/api/v1/orders/7").expect("rule");
            assert_eq!(rule.label("GET"), "GET /api/v1/orders/*");
            assert!(envoy.rules.find("POST", "/health").is_some());
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
}
