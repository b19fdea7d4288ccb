//! Sessions of the console and the portal: cookies, the signed-in user of a request, CSRF, and
//! the routes that start and end a session (console sign-in and sign-out, the portal's one-time
//! URL and sign-out).

use std::net::IpAddr;

use axum::Form;
use axum::Router;
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Backend, CONSOLE_PATH, Console, PORTAL_ENTER_PATH, PORTAL_PATH, page};
use crate::admin::Actor;
use crate::domain::admin_key::{AdminRole, TenantScope};
use crate::domain::fields::{PrincipalId, Tenant};
use crate::domain::session::{self, CONSOLE_ABSOLUTE_TTL, Session, SessionId, SessionKind};
use crate::grpc::auth::InProcessActor;
use crate::http::Peer;

/// The console's sign-in form.
pub const SIGN_IN_PATH: &str = "/console/sign-in";
/// Ends the console session.
pub const SIGN_OUT_PATH: &str = "/console/sign-out";
/// Ends the portal session.
pub const PORTAL_SIGN_OUT_PATH: &str = "/portal/sign-out";
/// Longest name an operator may give at sign-in (the audit log's actor).
const MAX_OPERATOR_NAME_CHARS: usize = 64;

/// The two surfaces' cookies: each its own, so signing out of one leaves the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Console,
    Portal,
    /// The sign-in form's own token (a double-submit CSRF check before there is a session).
    SignIn,
}

impl Surface {
    /// The cookie's name: `__Host-` needs `Secure`, which a browser only keeps under TLS
    /// (http://localhost aside), so plain HTTP uses the bare name.
    pub fn cookie_name(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Self::Console, true) => "__Host-tessera-console",
            (Self::Console, false) => "tessera-console",
            (Self::Portal, true) => "__Host-tessera-portal",
            (Self::Portal, false) => "tessera-portal",
            (Self::SignIn, true) => "__Host-tessera-sign-in",
            (Self::SignIn, false) => "tessera-sign-in",
        }
    }
}

/// A `Set-Cookie` for `value`, living `max_age_seconds` (0: delete it).
pub fn set_cookie(surface: Surface, tls: bool, value: &str, max_age_seconds: i64) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}{secure}",
        surface.cookie_name(tls)
    );
    // The value is alphanumeric (session::new_secret) or empty.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of this surface's cookie in the request, if any.
fn cookie(headers: &HeaderMap, surface: Surface, tls: bool) -> Option<&str> {
    let name = surface.cookie_name(tls);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Constant-time equality of a submitted CSRF token with the expected one.
fn same_token(submitted: &str, expected: &str) -> bool {
    submitted.len() == expected.len() && bool::from(submitted.as_bytes().ct_eq(expected.as_bytes()))
}

/// The session of a request's cookie on `surface`, if it is live; refreshes its idle expiry.
async fn live_session(
    backend: &Backend,
    headers: &HeaderMap,
    surface: Surface,
    tls: bool,
) -> Result<Option<(Session, SecretString)>, Response> {
    let Some(presented) = cookie(headers, surface, tls) else {
        return Ok(None);
    };
    let Some(hash) = session::presented_hash(presented) else {
        return Ok(None);
    };
    let found = backend.store.find_session(&hash).await.map_err(|error| {
        tracing::warn!(%error, "console session lookup failed");
        page::unavailable("The session store cannot be reached; try again in a moment.")
    })?;
    let now = Utc::now();
    let Some(found) = found.filter(|found| found.is_live(now)) else {
        return Ok(None);
    };
    let kind_matches = matches!(
        (&found.kind, surface),
        (SessionKind::Console { .. }, Surface::Console)
            | (SessionKind::Portal { .. }, Surface::Portal)
    );
    if !kind_matches {
        return Ok(None);
    }
    if found.touch_due(now) {
        // Off the request's path; a lost touch only makes the idle expiry come a minute early.
        let store = backend.store.clone();
        let id = found.id.clone();
        tokio::spawn(async move {
            if let Err(error) = store.touch_session(&id, now).await {
                tracing::warn!(%error, session_id = %id, "cannot record a console session's use");
            }
        });
    }
    Ok(Some((found, SecretString::from(presented.to_owned()))))
}

/// An operator signed in to the console: its session, the actor its admin key makes (checked
/// again on this request), and the session's CSRF token for the page's forms.
pub struct ConsoleUser {
    pub session: Session,
    pub actor: Actor,
    pub csrf: String,
}

impl ConsoleUser {
    /// A TokenAdminService request acting as this operator.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        in_process(&self.actor, message)
    }
}

fn in_process<T>(actor: &Actor, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .extensions_mut()
        .insert(InProcessActor(actor.clone()));
    request
}

impl<S> FromRequestParts<S> for ConsoleUser
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let console = Console::from_ref(state);
        let backend = console.backend()?;
        let tls = console.settings().tls;
        let to_sign_in = || Redirect::to(SIGN_IN_PATH).into_response();
        let Some((session, secret)) =
            live_session(backend, &parts.headers, Surface::Console, tls).await?
        else {
            return Err(to_sign_in());
        };
        let SessionKind::Console { admin_key_hash } = &session.kind else {
            return Err(to_sign_in());
        };
        // The key is checked as a gRPC call's would be: a revoked or expired key ends the
        // session here, on every replica.
        let holder = match backend.api.auth().key_holder_by_hash(admin_key_hash).await {
            Ok(holder) => holder,
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                return Err(to_sign_in());
            }
            Err(status) => return Err(page::status_page(&status)),
        };
        let actor = Actor {
            name: session.actor.clone(),
            admin_key: holder.admin_key,
            role: holder.role,
            tenants: holder.tenants,
        };
        Ok(Self {
            csrf: session::csrf_token(&secret),
            session,
            actor,
        })
    }
}

/// A portal user: the session's tenant and principal, and the actor its calls are made as.
pub struct PortalUser {
    pub session: Session,
    pub tenant: Tenant,
    pub principal_id: PrincipalId,
    pub return_url: String,
    pub actor: Actor,
    pub csrf: String,
}

impl PortalUser {
    /// A TokenAdminService request acting as this portal user: a token manager of the
    /// session's tenant only. The portal's handlers (src/console/portal.rs) keep it to the
    /// principal's own tokens.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        in_process(&self.actor, message)
    }
}

impl<S> FromRequestParts<S> for PortalUser
where
    Console: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let console = Console::from_ref(state);
        let backend = console.backend()?;
        let ended = || {
            page::message_page(
                StatusCode::UNAUTHORIZED,
                "Your session has ended",
                "Open the API tokens page again from the application that sent you here.",
            )
        };
        let Some((session, secret)) = live_session(
            backend,
            &parts.headers,
            Surface::Portal,
            console.settings().tls,
        )
        .await?
        else {
            return Err(ended());
        };
        let SessionKind::Portal {
            tenant,
            principal_id,
            return_url,
        } = session.kind.clone()
        else {
            return Err(ended());
        };
        // A principal disabled (or deleted) since the session opened has no portal: checked on
        // every request, as a console session's admin key is.
        match backend.admin.get_principal(&tenant, &principal_id).await {
            Ok(principal) if !principal.disabled => {}
            Ok(_) | Err(crate::admin::AdminError::NotFound(_)) => return Err(ended()),
            Err(error) => {
                tracing::warn!(%error, "cannot read a portal session's principal");
                return Err(page::unavailable(
                    "Your account cannot be read right now; try again in a moment.",
                ));
            }
        }
        let actor = Actor {
            name: session.actor.clone(),
            admin_key: session.id.to_string(),
            role: AdminRole::TokenManager,
            tenants: TenantScope::Only([tenant.clone()].into_iter().collect()),
        };
        Ok(Self {
            csrf: session::csrf_token(&secret),
            session,
            tenant,
            principal_id,
            return_url,
            actor,
        })
    }
}

/// A form that carries the CSRF token of the page it came from.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A signed-in user's POSTed form, its CSRF token already checked: a handler that takes one
/// cannot forget the check. `U` is [`ConsoleUser`] or [`PortalUser`].
pub struct Posted<U, T> {
    pub user: U,
    pub form: T,
}

/// The CSRF token a user's session expects.
pub trait HasCsrf {
    fn expected_csrf(&self) -> &str;
}

impl HasCsrf for ConsoleUser {
    fn expected_csrf(&self) -> &str {
        &self.csrf
    }
}

impl HasCsrf for PortalUser {
    fn expected_csrf(&self) -> &str {
        &self.csrf
    }
}

impl<S, U, T> FromRequest<S> for Posted<U, T>
where
    Console: FromRef<S>,
    S: Send + Sync,
    U: FromRequestParts<S, Rejection = Response> + HasCsrf + Send,
    T: CsrfForm + serde::de::DeserializeOwned + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let user = U::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let Form(form) = Form::<T>::from_request(request, state)
            .await
            .map_err(|rejection| {
                // 413 for a body past TESSERA_HTTP_MAX_BODY_BYTES, else 400 or 415.
                page::message_page(
                    rejection.status(),
                    "The form could not be read",
                    &rejection.body_text(),
                )
            })?;
        if !same_token(form.csrf(), user.expected_csrf()) {
            return Err(csrf_refused());
        }
        Ok(Self { user, form })
    }
}

fn csrf_refused() -> Response {
    page::message_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "Go back, reload the page and submit it again.",
    )
}

/// The routes that start and end console sessions.
pub fn console_routes() -> Router<Console> {
    Router::new()
        .route(SIGN_IN_PATH, get(sign_in_form).post(sign_in))
        .route(SIGN_OUT_PATH, post(sign_out))
}

/// The routes that start and end portal sessions.
pub fn portal_routes() -> Router<Console> {
    Router::new()
        .route(PORTAL_ENTER_PATH, get(enter_portal))
        .route(PORTAL_SIGN_OUT_PATH, post(portal_sign_out))
}

async fn sign_in_form(State(console): State<Console>) -> Response {
    let (secret, _) = session::new_secret();
    let token = session::csrf_token(&secret);
    let tls = console.settings().tls;
    let mut response = page::sign_in(&token, None).into_response();
    // The form's token is checked against this cookie (double submit): a page on another
    // origin can neither read it nor set it.
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(Surface::SignIn, tls, secret.expose_secret(), 600),
    );
    response
}

#[derive(Deserialize)]
pub struct SignInForm {
    csrf: String,
    admin_key: SecretString,
    #[serde(default)]
    name: String,
}

async fn sign_in(
    State(console): State<Console>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let backend = match console.backend() {
        Ok(backend) => backend,
        Err(response) => return response,
    };
    let tls = console.settings().tls;
    let expected = cookie(&headers, Surface::SignIn, tls)
        .map(|secret| session::csrf_token(&SecretString::from(secret.to_owned())));
    if !expected.is_some_and(|expected| same_token(&form.csrf, &expected)) {
        return csrf_refused();
    }
    let client: Option<IpAddr> = crate::http::leaks::client_ip(
        &headers,
        peer.map(|peer| peer.0.0.ip()),
        console.settings().trusted_hops,
    );
    if let Err(wait) = console.sign_ins.admit(client) {
        metrics::counter!("tessera_console_sign_ins_total", "outcome" => "rate_limited")
            .increment(1);
        let mut response = page::message_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts",
            "Wait a minute and try again.",
        );
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let name = form.name.trim();
    if name.chars().count() > MAX_OPERATOR_NAME_CHARS || name.chars().any(char::is_control) {
        return page::sign_in(
            &form.csrf,
            Some(&format!(
                "Your name must be at most {MAX_OPERATOR_NAME_CHARS} printable characters."
            )),
        )
        .into_response();
    }
    let holder = match backend
        .api
        .auth()
        .key_holder(form.admin_key.expose_secret().trim())
        .await
    {
        Ok(holder) => holder,
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            metrics::counter!("tessera_console_sign_ins_total", "outcome" => "refused")
                .increment(1);
            return (
                StatusCode::UNAUTHORIZED,
                page::sign_in(&form.csrf, Some("That admin key was not accepted.")),
            )
                .into_response();
        }
        Err(status) => return page::status_page(&status),
    };
    let actor = Actor {
        name: if name.is_empty() {
            format!("console:{}", holder.admin_key)
        } else {
            format!("console:{name}")
        },
        admin_key: holder.admin_key,
        role: holder.role,
        tenants: holder.tenants,
    };
    let secret = match backend.admin.sign_in_console(&actor, holder.hash).await {
        Ok((_, secret)) => secret,
        Err(error) => {
            tracing::warn!(%error, "cannot store a console session");
            return page::unavailable("The session could not be stored; try again in a moment.");
        }
    };
    metrics::counter!("tessera_console_sign_ins_total", "outcome" => "signed_in").increment(1);
    let mut response = Redirect::to(CONSOLE_PATH).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            Surface::Console,
            tls,
            secret.expose_secret(),
            CONSOLE_ABSOLUTE_TTL.num_seconds(),
        ),
    );
    headers.append(header::SET_COOKIE, set_cookie(Surface::SignIn, tls, "", 0));
    response
}

/// A form with nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfOnly {
    pub csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn sign_out(
    State(console): State<Console>,
    Posted { user, .. }: Posted<ConsoleUser, CsrfOnly>,
) -> Response {
    end_session(&console, &user.session.id, Surface::Console, SIGN_IN_PATH).await
}

async fn portal_sign_out(
    State(console): State<Console>,
    Posted { user, .. }: Posted<PortalUser, CsrfOnly>,
) -> Response {
    let response = end_session(&console, &user.session.id, Surface::Portal, PORTAL_PATH).await;
    if response.status().is_redirection() {
        return page::signed_out(&user.return_url).into_response_with_cookie(set_cookie(
            Surface::Portal,
            console.settings().tls,
            "",
            0,
        ));
    }
    response
}

async fn end_session(console: &Console, id: &SessionId, surface: Surface, to: &str) -> Response {
    let backend = match console.backend() {
        Ok(backend) => backend,
        Err(response) => return response,
    };
    if let Err(error) = backend.store.revoke_session(id, Utc::now()).await {
        tracing::warn!(%error, session_id = %id, "cannot end a console session");
        return page::unavailable("The session could not be ended; try again in a moment.");
    }
    tracing::info!(session_id = %id, surface = ?surface, "session signed out");
    let mut response = Redirect::to(to).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(surface, console.settings().tls, "", 0),
    );
    response
}

/// The one-time URL: its code becomes the session's cookie and is dead from then on. The answer
/// is a page that moves on to /portal/ by itself, not a redirect: the user arrives from the
/// platform's site, and a browser sends a `SameSite=Strict` cookie only on a navigation this
/// site started.
async fn enter_portal(State(console): State<Console>, RawQuery(query): RawQuery) -> Response {
    let backend = match console.backend() {
        Ok(backend) => backend,
        Err(response) => return response,
    };
    let code = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let dead = || {
        metrics::counter!("tessera_portal_entries_total", "outcome" => "refused").increment(1);
        page::message_page(
            StatusCode::UNAUTHORIZED,
            "This link has expired",
            "Links to this page work once, for a short time. Open it again from the application \
             that sent you here.",
        )
    };
    let Some(code_hash) = session::presented_hash(&code) else {
        return dead();
    };
    let (secret, secret_hash) = session::new_secret();
    let now = Utc::now();
    let redeemed = match backend
        .store
        .redeem_session_code(&code_hash, &secret_hash, now)
        .await
    {
        Ok(redeemed) => redeemed,
        Err(error) => {
            tracing::warn!(%error, "cannot redeem a portal code");
            return page::unavailable("The session could not be opened; try again in a moment.");
        }
    };
    let Some(opened) = redeemed else {
        return dead();
    };
    metrics::counter!("tessera_portal_entries_total", "outcome" => "entered").increment(1);
    tracing::info!(session_id = %opened.id, "portal session entered");
    let max_age = (opened.expires_at - now).num_seconds().max(1);
    page::entering().into_response_with_cookie(set_cookie(
        Surface::Portal,
        console.settings().tls,
        secret.expose_secret(),
        max_age,
    ))
}

/// A response with one `Set-Cookie` added.
pub trait WithCookie {
    fn into_response_with_cookie(self, cookie: HeaderValue) -> Response;
}

impl<R: IntoResponse> WithCookie for R {
    fn into_response_with_cookie(self, cookie: HeaderValue) -> Response {
        let mut response = self.into_response();
        response.headers_mut().append(header::SET_COOKIE, cookie);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_with_the_host_prefix_under_tls() {
        let plain = set_cookie(Surface::Console, false, "abc", 60);
        assert_eq!(
            plain.to_str().expect("valid"),
            "tessera-console=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        let tls = set_cookie(Surface::Portal, true, "abc", 60);
        assert_eq!(
            tls.to_str().expect("valid"),
            "__Host-tessera-portal=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
    }

    #[test]
    fn a_surface_reads_only_its_own_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("tessera-portal=p; tessera-console=c"),
        );
        assert_eq!(cookie(&headers, Surface::Console, false), Some("c"));
        assert_eq!(cookie(&headers, Surface::Portal, false), Some("p"));
        assert_eq!(cookie(&headers, Surface::Console, true), None);
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("", "abc"));
    }
}
