//! The operator console (`/console/`) and the self-service portal (`/portal/`) on the HTTP
//! listener (issue 18): server-rendered HTML (maud), no JavaScript build step, assets embedded
//! in the binary.
//!
//! Everything either page does is a call to TokenAdminService's own implementation, in this
//! process ([`session::ConsoleUser::request`]): the same parsing, rights, tenant scope and audit
//! as over gRPC, with the session's actor in place of an admin key's metadata
//! (`grpc::auth::InProcessActor`).
//!
//! Security (docs/architecture.md, "Console and portal"):
//! - sessions live in the store, known by the SHA-256 of the cookie's secret; they end on
//!   sign-out, after [`IDLE_TIMEOUT`](crate::domain::session::IDLE_TIMEOUT) unused and at their
//!   absolute expiry; a console session also ends when its admin key is revoked or expires;
//! - cookies are `HttpOnly; SameSite=Strict; Path=/`, and `Secure` with the `__Host-` prefix
//!   under TLS (a browser refuses `__Host-` without `Secure`);
//! - every form carries the session's CSRF token ([`session::Posted`] checks it before a
//!   handler runs); sign-in is rate-limited per client IP;
//! - every answer has a strict Content-Security-Policy (no inline script or style),
//!   `frame-ancestors 'none'` (the portal: `TESSERA_PORTAL_FRAME_ANCESTORS`), `no-referrer`
//!   and `no-store`.

// A page's refusal is a whole response (axum's own rejection type), returned on the error
// path only: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod assets;
pub mod chart;
pub mod operator;
pub mod page;
pub mod portal;
pub mod session;
pub mod usage;

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use hyper::header::{self, HeaderValue};

use crate::admin::Admin;
use crate::grpc::admin::TokenAdminApi;
use crate::store::Store;

/// The console's root (binding path).
pub const CONSOLE_PATH: &str = "/console/";
/// The portal's root (binding path).
pub const PORTAL_PATH: &str = "/portal/";
/// Where a portal session's one-time URL leads; its `code` is exchanged for a cookie.
pub const PORTAL_ENTER_PATH: &str = "/portal/enter";

/// The console's settings (`TESSERA_PUBLIC_URL`, `TESSERA_PORTAL_FRAME_ANCESTORS`,
/// `TESSERA_CONSOLE_SIGN_INS_PER_MINUTE`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where browsers reach the listener; None: its own address.
    pub public_url: Option<url::Url>,
    /// Origins that may frame the portal; empty: none.
    pub portal_frame_ancestors: Vec<String>,
    /// Sign-in attempts per client IP per minute.
    pub sign_ins_per_minute: NonZeroU32,
    /// Proxies in front of the listener that append to `X-Forwarded-For`.
    pub trusted_hops: usize,
    /// The listener serves TLS: cookies are `Secure` with the `__Host-` prefix.
    pub tls: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            public_url: None,
            portal_frame_ancestors: Vec::new(),
            sign_ins_per_minute: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            trusted_hops: 0,
            tls: false,
        }
    }
}

/// What the pages call, set once the store is connected (until then every page is 503).
pub struct Backend {
    pub api: Arc<TokenAdminApi>,
    pub admin: Arc<Admin>,
    pub store: Arc<dyn Store>,
}

/// The state every console and portal handler shares.
#[derive(Clone)]
pub struct Console {
    backend: Arc<OnceLock<Backend>>,
    settings: Arc<ConsoleSettings>,
    sign_ins: Arc<crate::http::leaks::ClientLimiter>,
}

impl Console {
    pub fn new(backend: Arc<OnceLock<Backend>>, settings: ConsoleSettings) -> Self {
        Self {
            backend,
            sign_ins: Arc::new(crate::http::leaks::ClientLimiter::new(
                settings.sign_ins_per_minute,
            )),
            settings: Arc::new(settings),
        }
    }

    /// The backend, or a 503 page while the store is not connected yet.
    pub fn backend(&self) -> Result<&Backend, Response> {
        self.backend
            .get()
            .ok_or_else(|| page::unavailable("Tessera is starting; try again in a moment."))
    }

    pub fn settings(&self) -> &ConsoleSettings {
        &self.settings
    }
}

/// The console's and the portal's routes, with their security headers.
pub fn routes(console: Console) -> Router {
    let frame_ancestors = if console.settings.portal_frame_ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        console.settings.portal_frame_ancestors.join(" ")
    };
    let portal_headers = Arc::new(SecurityHeaders::new(&frame_ancestors));
    let console_headers = Arc::new(SecurityHeaders::new("'none'"));
    let console_routes = operator::routes()
        .merge(session::console_routes())
        .merge(assets::routes("/console/assets"))
        .layer(axum::middleware::from_fn(move |request, next| {
            let headers = console_headers.clone();
            async move { headers.apply(request, next).await }
        }));
    let portal_routes = portal::routes()
        .merge(session::portal_routes())
        .merge(assets::routes("/portal/assets"))
        .layer(axum::middleware::from_fn(move |request, next| {
            let headers = portal_headers.clone();
            async move { headers.apply(request, next).await }
        }));
    console_routes.merge(portal_routes).with_state(console)
}

/// The headers every console and portal answer carries.
struct SecurityHeaders {
    csp: HeaderValue,
    frame_options: Option<HeaderValue>,
}

impl SecurityHeaders {
    fn new(frame_ancestors: &str) -> Self {
        // No inline script or style anywhere: the pages load /assets/ only. Logos may come from
        // any https origin (the portal's branding), and nothing may be fetched or posted
        // elsewhere.
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors {frame_ancestors}"
        );
        Self {
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
            // X-Frame-Options knows no list of origins: sent only when none may frame.
            frame_options: (frame_ancestors == "'none'").then(|| HeaderValue::from_static("DENY")),
        }
    }

    async fn apply(&self, request: Request, next: Next) -> Response {
        let mut response = next.run(request).await;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        if let Some(frame_options) = &self.frame_options {
            headers.insert(header::X_FRAME_OPTIONS, frame_options.clone());
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        // Pages show secrets once and data per session: never kept by a cache or the back
        // button's store. Assets say otherwise for themselves.
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
        response
    }
}

/// Parses `TESSERA_PORTAL_FRAME_ANCESTORS`: origins (`https://app.example.com`, a port
/// allowed) or `'self'`, so that nothing else can be written into the CSP header.
pub fn parse_frame_ancestors(raw: &str) -> Result<Vec<String>, String> {
    raw.split_whitespace()
        .map(|entry| {
            if entry == "'self'" {
                return Ok(entry.to_owned());
            }
            let url = url::Url::parse(entry).map_err(|_| format!("{entry:?} is not an origin"))?;
            let origin = url.origin().ascii_serialization();
            // A host may hold characters the CSP gives meaning to (`;`, `,`): refused.
            let plain = entry.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '/' | '[' | ']')
            });
            let is_origin = plain
                && matches!(url.scheme(), "http" | "https")
                && origin != "null"
                && entry.trim_end_matches('/') == origin;
            if is_origin {
                Ok(origin)
            } else {
                Err(format!(
                    "{entry:?} is not an origin (scheme://host[:port]) or 'self'"
                ))
            }
        })
        .collect()
}

/// Parses `TESSERA_PUBLIC_URL`: an http(s) origin, as browsers reach the listener (the pages
/// link to absolute paths, so the listener cannot sit below a path prefix).
pub fn parse_public_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|error| format!("{raw:?}: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{raw:?} must be an http or https URL"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{raw:?} must be an origin (scheme://host[:port]), with no path, query or fragment"
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ancestors_are_origins_or_self_and_nothing_can_be_injected_into_the_policy() {
        assert_eq!(
            parse_frame_ancestors("https://app.example.com 'self' http://localhost:3000")
                .expect("valid"),
            ["https://app.example.com", "'self'", "http://localhost:3000"]
        );
        assert!(parse_frame_ancestors("").expect("valid").is_empty());
        assert!(parse_frame_ancestors("https://a.example/path").is_err());
        assert!(parse_frame_ancestors("https://a.example;script-src").is_err());
        assert!(parse_frame_ancestors("*").is_err());
        assert!(parse_frame_ancestors("'unsafe-inline'").is_err());
    }

    #[test]
    fn the_public_url_is_an_absolute_http_url_without_query() {
        assert!(parse_public_url("https://tokens.example.com").is_ok());
        assert!(parse_public_url("https://tokens.example.com/").is_ok());
        assert!(parse_public_url("https://tokens.example.com/base/").is_err());
        assert!(parse_public_url("ftp://tokens.example.com").is_err());
        assert!(parse_public_url("https://tokens.example.com/?a=b").is_err());
        assert!(parse_public_url("tokens.example.com").is_err());
    }
}
