//! Browser sessions of the console (`/console/`) and the self-service portal (`/portal/`), and a
//! tenant's portal branding (issue 18).
//!
//! A session is known by the SHA-256 of its cookie's secret; a portal session starts as the
//! SHA-256 of a one-time code (the URL CreatePortalSession returns), exchanged once for a
//! cookie. Secrets and codes exist only in the value handed to the browser.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use rand::RngExt;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::fields::{PrincipalId, Tenant};
use crate::domain::token::SecretHash;

const SESSION_ID_PREFIX: &str = "cs_";
/// Random characters of a session secret or a portal code: 43 alphanumerics, about 256 bits.
const SECRET_LEN: usize = 43;

/// A portal session lasts at most this long (CreatePortalSession's `ttl`).
pub const MAX_PORTAL_TTL: Duration = Duration::hours(1);
/// And at least this long.
pub const MIN_PORTAL_TTL: Duration = Duration::minutes(1);
/// An operator's console session ends this long after sign-in, however busy.
pub const CONSOLE_ABSOLUTE_TTL: Duration = Duration::hours(12);
/// A session unused for this long has ended (console and portal alike).
pub const IDLE_TIMEOUT: Duration = Duration::minutes(30);
/// `last_seen_at` is written at most this often per session: the idle expiry is this coarse.
pub const TOUCH_EVERY: Duration = Duration::minutes(1);
/// Longest `return_url`, and longest branding `logo_url`.
pub const MAX_URL_LEN: usize = 2048;
/// Longest branding product name, in characters.
pub const MAX_PRODUCT_NAME_CHARS: usize = 64;

/// A session's id: `cs_` and a ULID. It names the session in logs and audit entries and is
/// never a credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        Self(format!("{SESSION_ID_PREFIX}{}", ulid::Ulid::new()))
    }

    /// An id read back from the store, which only holds ids made by `generate`.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh random secret (a cookie's value or a portal code) with its hash, which is all the
/// store keeps.
pub fn new_secret() -> (SecretString, SecretHash) {
    let secret: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(SECRET_LEN)
        .map(char::from)
        .collect();
    let hash = SecretHash::of(&secret);
    (SecretString::from(secret), hash)
}

/// The hash a presented cookie value or code is looked up by; `None` for anything that is not
/// the shape [`new_secret`] makes, which costs no store call.
pub fn presented_hash(presented: &str) -> Option<SecretHash> {
    (presented.len() == SECRET_LEN && presented.bytes().all(|byte| byte.is_ascii_alphanumeric()))
        .then(|| SecretHash::of(presented))
}

/// The CSRF token of a session: derived from its secret, so it needs no storage, is different
/// for every session, and cannot be computed by anyone who does not hold the cookie.
pub fn csrf_token(secret: &SecretString) -> String {
    SecretHash::of(&format!("tessera-csrf:{}", secret.expose_secret())).to_hex()
}

/// Which surface a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionKind {
    /// An operator signed in with an admin key: the SHA-256 of that key, checked again on
    /// every request, so revoking the key ends the session.
    Console { admin_key_hash: SecretHash },
    /// A platform's end user, acting on one principal's tokens.
    Portal {
        tenant: Tenant,
        principal_id: PrincipalId,
        /// The portal's "back" link; may be empty.
        return_url: String,
    },
}

impl SessionKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Console { .. } => "console",
            Self::Portal { .. } => "portal",
        }
    }
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub kind: SessionKind,
    /// The name audit entries give (`console:adk_…`, `portal:alice`).
    pub actor: String,
    /// A console session's cookie secret hash (it is signed in at once).
    pub secret_hash: Option<SecretHash>,
    /// A portal session's one-time code hash (exchanged for a cookie later).
    pub code_hash: Option<SecretHash>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub kind: SessionKind,
    pub actor: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    /// Whether the session may still be used at `now`: not revoked, before its absolute expiry
    /// and not idle for [`IDLE_TIMEOUT`].
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.expires_at && now < self.last_seen_at + IDLE_TIMEOUT
    }

    /// Whether `last_seen_at` is old enough to be written again.
    pub fn touch_due(&self, now: DateTime<Utc>) -> bool {
        now >= self.last_seen_at + TOUCH_EVERY
    }
}

/// Why a portal field is refused; the text is what the caller reads (INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPortal {
    #[error("must be between 1 minute and 1 hour")]
    Ttl,
    #[error("must be an absolute http or https URL of at most {MAX_URL_LEN} bytes")]
    ReturnUrl,
    #[error("must be an absolute https URL of at most {MAX_URL_LEN} bytes")]
    LogoUrl,
    #[error("must be 1 to {MAX_PRODUCT_NAME_CHARS} printable characters")]
    ProductName,
    #[error("must be #rrggbb (six hex digits)")]
    AccentColor,
}

/// A return URL: empty, or an absolute http(s) URL (a `javascript:` link would run in the
/// portal's origin).
pub fn parse_return_url(raw: &str) -> Result<String, InvalidPortal> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    absolute_url(raw, &["http", "https"]).ok_or(InvalidPortal::ReturnUrl)
}

fn absolute_url(raw: &str, schemes: &[&str]) -> Option<String> {
    if raw.len() > MAX_URL_LEN {
        return None;
    }
    let url = url::Url::parse(raw).ok()?;
    (schemes.contains(&url.scheme()) && url.host().is_some()).then(|| url.to_string())
}

/// How a tenant's portal looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalBranding {
    pub tenant: Tenant,
    /// Empty: "API tokens".
    pub product_name: String,
    /// Empty: no logo; else an absolute https URL.
    pub logo_url: String,
    /// Empty: Tessera's own; else `#rrggbb`, lowercase.
    pub accent_color: String,
    pub updated_at: Option<DateTime<Utc>>,
}

impl PortalBranding {
    /// Tessera's own look, for a tenant that set none.
    pub fn default_for(tenant: Tenant) -> Self {
        Self {
            tenant,
            product_name: String::new(),
            logo_url: String::new(),
            accent_color: String::new(),
            updated_at: None,
        }
    }

    /// The branding's fields checked, each error with its field name.
    pub fn parse(
        tenant: Tenant,
        product_name: &str,
        logo_url: &str,
        accent_color: &str,
    ) -> Result<Self, Vec<(&'static str, InvalidPortal)>> {
        let mut errors = Vec::new();
        let product_name = product_name.trim();
        if product_name.chars().count() > MAX_PRODUCT_NAME_CHARS
            || product_name.chars().any(char::is_control)
        {
            errors.push(("product_name", InvalidPortal::ProductName));
        }
        let logo = if logo_url.is_empty() {
            Some(String::new())
        } else {
            absolute_url(logo_url, &["https"])
        };
        if logo.is_none() {
            errors.push(("logo_url", InvalidPortal::LogoUrl));
        }
        let accent = accent_color.to_ascii_lowercase();
        let accent_valid = accent.is_empty()
            || (accent.len() == 7
                && accent.starts_with('#')
                && accent[1..].bytes().all(|byte| byte.is_ascii_hexdigit()));
        if !accent_valid {
            errors.push(("accent_color", InvalidPortal::AccentColor));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            tenant,
            product_name: product_name.to_owned(),
            logo_url: logo.unwrap_or_default(),
            accent_color: accent,
            updated_at: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant::parse("acme").expect("valid")
    }

    #[test]
    fn a_secret_is_found_again_by_its_hash_and_anything_else_costs_no_lookup() {
        let (secret, hash) = new_secret();
        assert_eq!(presented_hash(secret.expose_secret()), Some(hash));
        assert_eq!(presented_hash(""), None);
        assert_eq!(presented_hash(&"a".repeat(SECRET_LEN + 1)), None);
        assert_eq!(
            presented_hash(&format!("{}!", "a".repeat(SECRET_LEN - 1))),
            None
        );
    }

    #[test]
    fn each_session_has_its_own_csrf_token() {
        let (one, _) = new_secret();
        let (two, _) = new_secret();
        assert_ne!(csrf_token(&one), csrf_token(&two));
        assert_eq!(csrf_token(&one), csrf_token(&one));
        assert!(!csrf_token(&one).contains(one.expose_secret()));
    }

    #[test]
    fn a_session_ends_when_revoked_idle_or_past_its_absolute_expiry() {
        let now = Utc::now();
        let session = Session {
            id: SessionId::generate(),
            kind: SessionKind::Console {
                admin_key_hash: SecretHash::of("k"),
            },
            actor: "console:x".to_owned(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + Duration::hours(1),
            revoked_at: None,
        };
        assert!(session.is_live(now + Duration::minutes(29)));
        assert!(!session.is_live(now + IDLE_TIMEOUT));
        let busy = Session {
            last_seen_at: now + Duration::minutes(59),
            ..session.clone()
        };
        assert!(!busy.is_live(now + Duration::hours(1)));
        let revoked = Session {
            revoked_at: Some(now),
            ..session
        };
        assert!(!revoked.is_live(now));
    }

    #[test]
    fn a_return_url_must_be_absolute_http_and_never_a_script() {
        assert_eq!(parse_return_url("").expect("valid"), "");
        assert!(parse_return_url("https://app.example.com/settings").is_ok());
        assert_eq!(
            parse_return_url("javascript:alert(1)"),
            Err(InvalidPortal::ReturnUrl)
        );
        assert_eq!(parse_return_url("/relative"), Err(InvalidPortal::ReturnUrl));
        let long = format!("https://a.example/{}", "x".repeat(MAX_URL_LEN));
        assert_eq!(parse_return_url(&long), Err(InvalidPortal::ReturnUrl));
    }

    #[test]
    fn branding_names_each_bad_field_and_keeps_good_ones() {
        let branding = PortalBranding::parse(
            tenant(),
            " Acme ",
            "https://acme.example/logo.png",
            "#AA00ff",
        )
        .expect("valid");
        assert_eq!(branding.product_name, "Acme");
        assert_eq!(branding.accent_color, "#aa00ff");
        let errors = PortalBranding::parse(
            tenant(),
            &"n".repeat(65),
            "http://acme.example/logo.png",
            "red",
        )
        .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|(field, _)| *field).collect();
        assert_eq!(fields, ["product_name", "logo_url", "accent_color"]);
    }
}
