//! What every gateway integration shares: how a proxied HTTP request becomes Tessera's own
//! `CheckRequest`, and how a [`Decision`] becomes the HTTP answer the gateway relays.
//!
//! Envoy's ext_authz (src/grpc/envoy.rs) and HTTP forward-auth for nginx, Caddy and Traefik
//! (src/http/forward_auth.rs) each only say where a request's parts are ([`GatewayRequest`]);
//! the mapping is this one function, [`to_check_request`]:
//! - path: parsed once into a [`RequestTarget`] (query split off, percent-encoding and dot
//!   segments resolved, repeated slashes merged); a path that cannot be resolved unambiguously is
//!   denied first, as `path_invalid` with HTTP 400, logged and counted in
//!   `tessera_gateway_path_refused_total{reason}`;
//! - permission: the route's `permission` value (empty: authenticate only), else what the first
//!   rule matching the method and the normalized path needs (its `permission`, and all of its
//!   `all_permissions` and one of its `any_permissions`), else the configured default (deny, or
//!   authenticate only);
//! - tenant: the route's `tenant` value (set by the operator, so clients cannot forge it), else
//!   the configured tenant header, else the default tenant;
//! - token: the configured header (default `authorization`), without a `Bearer ` prefix;
//! - client IP: the connection's source address, or the `x-forwarded-for` entry as many hops
//!   from the right as proxies are trusted (never the leftmost unless that is the one);
//! - usage label: the route's `endpoint` value, else the method (a standard one or `OTHER`) and
//!   the matched rule's pattern, never the raw path;
//! - signature: the configured signature and timestamp headers, over [`canonical_http_payload`]
//!   (method, path with query as the client sent them, the body's SHA-256 when bodies are
//!   signed).
//!
//! Route values are Envoy's `context_extensions`, and the query of the forward-auth URL the
//! gateway is configured with.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::authz::Decision;
use crate::domain::decision::DenyReason;
use crate::domain::fields::Tenant;
use crate::domain::http::{HttpMethod, PathError, RequestTarget};
use crate::domain::metadata::MetadataKey;
use crate::domain::network::forwarded_client;
use crate::domain::route::{PermissionRules, Unmatched};
use crate::domain::signature::canonical_http_payload;
use crate::grpc::authorization::{MAX_ENDPOINT_LEN, MAX_USER_AGENT_LEN};
use crate::proto;

/// Headers naming the allowed request's identity, for the gateway to set upstream.
pub const TOKEN_ID_HEADER: &str = "x-tessera-token-id";
pub const OWNER_ID_HEADER: &str = "x-tessera-owner-id";
pub const TENANT_HEADER: &str = "x-tessera-tenant";
/// Every incoming header with this prefix is the gateway's to set, never the client's.
pub const RESERVED_PREFIX: &str = "x-tessera-";
/// The prefix of the headers carrying an allowed token's metadata upstream.
pub const METADATA_HEADER_PREFIX: &str = "x-tessera-meta-";
/// How much of a refused path a log line shows: enough to recognise the trick, bounded however
/// long the client made it.
const LOGGED_PATH_LEN: usize = 64;

/// The header carrying the token unless `TESSERA_ENVOY_TOKEN_HEADER` names another.
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";
/// The header carrying a request's signature unless `TESSERA_ENVOY_SIGNATURE_HEADER` says.
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-tessera-signature";
/// The header carrying the signature's timestamp unless `TESSERA_ENVOY_TIMESTAMP_HEADER` says.
pub const DEFAULT_TIMESTAMP_HEADER: &str = "x-tessera-timestamp";

/// How gateway requests map onto Check: parsed once from the settings (`TESSERA_ENVOY_*`, which
/// serve every gateway).
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Lowercase header carrying the token; a `Bearer ` prefix is stripped.
    pub token_header: String,
    /// Lowercase header naming the tenant when the route sets no `tenant` value.
    pub tenant_header: Option<String>,
    /// How many rightmost `x-forwarded-for` entries were written by trusted proxies; 0 ignores
    /// the header and uses the connection's source address.
    pub trusted_hops: usize,
    pub rules: PermissionRules,
    /// Lowercase header carrying the base64 signature.
    pub signature_header: String,
    /// Lowercase header carrying the signature's unix timestamp.
    pub timestamp_header: String,
    /// Whether the body's hash is part of the signed payload (the gateway must send the body);
    /// otherwise the hash of an empty body stands in.
    pub sign_body: bool,
    /// The metadata keys forwarded upstream (`TESSERA_GATEWAY_METADATA_HEADERS`), none by
    /// default.
    pub metadata_headers: Vec<MetadataHeader>,
}

/// A metadata key the gateways forward, with its header name, built once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataHeader {
    key: MetadataKey,
    /// `x-tessera-meta-KEY`: the key's alphabet is a header name's, so it needs no escaping.
    header: String,
}

impl MetadataHeader {
    pub fn new(key: MetadataKey) -> Self {
        let header = format!("{METADATA_HEADER_PREFIX}{key}");
        Self { key, header }
    }

    pub fn header(&self) -> &str {
        &self.header
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            token_header: DEFAULT_TOKEN_HEADER.to_owned(),
            tenant_header: None,
            trusted_hops: 0,
            rules: PermissionRules::default(),
            signature_header: DEFAULT_SIGNATURE_HEADER.to_owned(),
            timestamp_header: DEFAULT_TIMESTAMP_HEADER.to_owned(),
            sign_body: false,
            metadata_headers: Vec::new(),
        }
    }
}

/// Where a gateway's request keeps the parts the mapping reads.
pub trait GatewayRequest {
    /// The original request's method, as sent.
    fn method(&self) -> &str;
    /// The original request target (path and query) as the client sent it.
    fn path(&self) -> &str;
    /// A header's value by lowercase name; repeated headers joined with `,`.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// A value the operator set on the route (`tenant`, `permission`, `endpoint`): never
    /// something the client can write.
    fn route_value(&self, key: &str) -> Option<&str>;
    /// The address of the connection the gateway saw the request on, or that it made itself.
    fn source_ip(&self) -> Option<IpAddr>;
    /// The original request's body, when the gateway sends it.
    fn body(&self) -> &[u8];
}

/// A deny decided from the request alone, before any token lookup.
#[derive(Debug, PartialEq, Eq)]
pub struct EarlyDeny {
    pub reason: DenyReason,
    pub message: &'static str,
    /// Why the path was refused, when that is the reason (`path_invalid`).
    pub refused_path: Option<PathError>,
}

impl EarlyDeny {
    /// Logs a refused path and counts the deny, as every gateway does before answering it.
    pub fn record(&self, raw_path: &str) {
        if let Some(error) = self.refused_path {
            log_refused_path(error, raw_path);
        }
        metrics::counter!("tessera_checks_total", "reason" => self.reason.as_str()).increment(1);
    }
}

/// A refused path, logged without its query (which may carry secrets) and cut short, and
/// counted by refusal.
fn log_refused_path(error: PathError, raw_path: &str) {
    let path_only = raw_path.split('?').next().unwrap_or_default();
    // Debug formatting escapes the control bytes a refused path may hold (no forged log lines).
    tracing::info!(
        reason = error.as_str(),
        path = ?truncate(path_only, LOGGED_PATH_LEN),
        path_len = raw_path.len(),
        "gateway request path refused"
    );
    metrics::counter!("tessera_gateway_path_refused_total", "reason" => error.as_str())
        .increment(1);
}

/// A gateway's request as Tessera's own CheckRequest, or the deny that needs no token lookup.
pub fn to_check_request(
    settings: &GatewaySettings,
    request: &impl GatewayRequest,
) -> Result<proto::CheckRequest, EarlyDeny> {
    let method = request.method();
    let path = request.path();
    // Before anything else: whatever the route or the token, the upstream would resolve this
    // path to a resource no rule can be sure of.
    let target = RequestTarget::parse(path).map_err(|error| EarlyDeny {
        reason: DenyReason::PathInvalid,
        message: DenyReason::PathInvalid.message(),
        refused_path: Some(error),
    })?;
    let matched_rule = settings.rules.find(method, &target);

    // A rule may need several permissions (all of some, any of others); a route's own
    // `permission` value names one and replaces the rule.
    let (mut all_permissions, mut any_permissions) = (Vec::new(), Vec::new());
    let permission = match (request.route_value("permission"), matched_rule) {
        (Some(permission), _) => permission.to_owned(),
        (None, Some(rule)) => {
            let (all, any) = rule.also_needed();
            all_permissions = all.iter().map(ToString::to_string).collect();
            any_permissions = any.iter().map(ToString::to_string).collect();
            rule.permission()
                .map(ToString::to_string)
                .unwrap_or_default()
        }
        (None, None) => match settings.rules.unmatched() {
            Unmatched::Authenticate => String::new(),
            // Not exposed through any rule: denied whatever the token.
            Unmatched::Deny => {
                return Err(EarlyDeny {
                    reason: DenyReason::PermissionDenied,
                    message: "no permission rule covers this request",
                    refused_path: None,
                });
            }
        },
    };

    let tenant = match request.route_value("tenant") {
        Some(tenant) => tenant.to_owned(),
        None => {
            let from_header = settings
                .tenant_header
                .as_deref()
                .and_then(|name| request.header(name));
            match from_header {
                // A name no tenant can have is the client's doing, not a malformed call.
                Some(tenant) if Tenant::parse(&tenant).is_err() => {
                    return Err(EarlyDeny {
                        reason: DenyReason::TenantMismatch,
                        message: DenyReason::TenantMismatch.message(),
                        refused_path: None,
                    });
                }
                Some(tenant) => tenant.into_owned(),
                None => String::new(),
            }
        }
    };

    let token = request
        .header(&settings.token_header)
        .map(|value| strip_bearer(&value).to_owned())
        .unwrap_or_default();

    let client_ip = if settings.trusted_hops > 0 {
        request
            .header("x-forwarded-for")
            .and_then(|header| forwarded_client(&header, settings.trusted_hops))
    } else {
        request.source_ip()
    };

    let endpoint = match (request.route_value("endpoint"), matched_rule) {
        (Some(endpoint), _) => endpoint.to_owned(),
        (None, Some(rule)) => rule.label(method),
        (None, None) => format!("{} *", HttpMethod::of(method).as_str()),
    };

    let signature = request
        .header(&settings.signature_header)
        .filter(|signature| !signature.is_empty())
        .map(|signature| {
            let timestamp = request
                .header(&settings.timestamp_header)
                .and_then(|timestamp| timestamp.trim().parse::<i64>().ok())
                // A missing or garbled timestamp signs nothing the client could have meant.
                .unwrap_or(0);
            let body: &[u8] = if settings.sign_body {
                request.body()
            } else {
                &[]
            };
            proto::Signature {
                timestamp,
                signature: signature.into_owned(),
                payload: canonical_http_payload(method, path, body),
            }
        });

    Ok(proto::CheckRequest {
        token,
        tenant,
        permission,
        client_ip: client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        user_agent: truncate(
            request.header("user-agent").as_deref().unwrap_or_default(),
            MAX_USER_AGENT_LEN,
        ),
        endpoint: truncate(&endpoint, MAX_ENDPOINT_LEN),
        signature,
        all_permissions,
        any_permissions,
        // What the matched rule says a request costs a token with credits; else one credit.
        cost: matched_rule.and_then(|rule| rule.cost()),
    })
}

/// What the gateway answers, whatever its wire format.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Let the request through with the identity headers set upstream; the rate-limit headers
    /// go to the client.
    Allow {
        identity: [(&'static str, String); 3],
        rate_limit: Vec<(&'static str, String)>,
        /// `x-tessera-meta-KEY` and the token's value for each forwarded key, empty when it has
        /// none: always sent, so a gateway that copies the header replaces a client's copy even
        /// then (Caddy 2.6 would copy a missing one as its literal placeholder).
        metadata: Vec<(String, String)>,
    },
    Deny(Denial),
}

/// A deny as the client sees it: the reason's HTTP status, headers and a small JSON body.
#[derive(Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub status: u16,
    /// `content-type`, the challenge or `retry-after` the status calls for, `x-ratelimit-*`.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Denial {
    pub fn new(reason: DenyReason, message: &str, rate_limit: Vec<(&'static str, String)>) -> Self {
        let status = reason.http_status();
        let mut headers = vec![("content-type", "application/json".to_owned())];
        match status {
            401 => {
                let challenge = if reason == DenyReason::TokenMissing {
                    "Bearer"
                } else {
                    "Bearer error=\"invalid_token\""
                };
                headers.push(("www-authenticate", challenge.to_owned()));
            }
            429 => {
                let retry_after = rate_limit
                    .iter()
                    .find(|(name, _)| *name == RATE_LIMIT_RESET)
                    .and_then(|(_, value)| value.parse::<u32>().ok())
                    .unwrap_or(1)
                    .max(1);
                headers.push(("retry-after", retry_after.to_string()));
            }
            _ => {}
        }
        headers.extend(rate_limit);
        let body = serde_json::json!({ "error": reason.as_str(), "message": message });
        Self {
            reason,
            status,
            headers,
            body: body.to_string(),
        }
    }
}

const RATE_LIMIT_RESET: &str = "x-ratelimit-reset";

/// The answer to a decision taken by the Check path; an allowed one carries the token's
/// values of the `forwarded` metadata keys.
pub fn answer(decision: &Decision, forwarded: &[MetadataHeader]) -> Answer {
    let rate_limit = decision
        .rate_limit
        .map(|status| {
            vec![
                ("x-ratelimit-limit", status.limit.to_string()),
                ("x-ratelimit-remaining", status.remaining.to_string()),
                (RATE_LIMIT_RESET, status.reset_seconds.to_string()),
            ]
        })
        .unwrap_or_default();
    let (Ok(()), Some(credential)) = (decision.outcome, decision.credential.as_deref()) else {
        let reason = decision.outcome.err().unwrap_or(DenyReason::TokenUnknown);
        return Answer::Deny(Denial::new(reason, &decision.message, rate_limit));
    };
    Answer::Allow {
        identity: [
            (TOKEN_ID_HEADER, credential.token_id.as_str().to_owned()),
            (OWNER_ID_HEADER, credential.owner_id.as_str().to_owned()),
            (TENANT_HEADER, credential.tenant.as_str().to_owned()),
        ],
        rate_limit,
        metadata: forwarded
            .iter()
            .map(|wanted| {
                let value = credential
                    .metadata
                    .as_ref()
                    .and_then(|metadata| metadata.get(wanted.key.as_str()))
                    .unwrap_or_default();
                (wanted.header.clone(), value.to_owned())
            })
            .collect(),
    }
}

/// Whether `name` is one of the headers only the gateway may set (`x-tessera-*`).
pub fn is_reserved(name: &str) -> bool {
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// `Bearer abc` → `abc` (scheme case-insensitive); any other value as it is.
pub fn strip_bearer(value: &str) -> &str {
    let trimmed = value.trim();
    match trimmed.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => trimmed[7..].trim_start(),
        _ => trimmed,
    }
}

/// At most `max` bytes, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_stripped_case_insensitively_and_other_values_kept() {
        assert_eq!(strip_bearer("Bearer tsk_abc"), "tsk_abc");
        assert_eq!(strip_bearer("bearer   tsk_abc "), "tsk_abc");
        assert_eq!(strip_bearer("tsk_abc"), "tsk_abc");
        assert_eq!(strip_bearer("Basic dXNlcg=="), "Basic dXNlcg==");
        assert_eq!(strip_bearer("Bearer"), "Bearer");
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abcdef", 4), "abcd");
    }

    #[test]
    fn a_rate_limited_denial_says_when_to_retry_and_never_less_than_a_second() {
        let later = Denial::new(
            DenyReason::RateLimited,
            "slow down",
            vec![(RATE_LIMIT_RESET, "17".to_owned())],
        );
        assert_eq!(later.status, 429);
        assert!(later.headers.contains(&("retry-after", "17".to_owned())));
        let now = Denial::new(
            DenyReason::RateLimited,
            "slow down",
            vec![(RATE_LIMIT_RESET, "0".to_owned())],
        );
        assert!(now.headers.contains(&("retry-after", "1".to_owned())));
    }

    #[test]
    fn a_missing_token_is_challenged_without_an_error_and_a_bad_one_with_invalid_token() {
        let challenge = |reason| {
            Denial::new(reason, "", Vec::new())
                .headers
                .into_iter()
                .find(|(name, _)| *name == "www-authenticate")
                .map(|(_, value)| value)
        };
        assert_eq!(
            challenge(DenyReason::TokenMissing).as_deref(),
            Some("Bearer")
        );
        assert_eq!(
            challenge(DenyReason::TokenRevoked).as_deref(),
            Some("Bearer error=\"invalid_token\"")
        );
        assert_eq!(challenge(DenyReason::PermissionDenied), None);
    }
}
