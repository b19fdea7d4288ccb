//! The self-service portal's pages (`/portal/`): one principal's tokens, for the platform's own
//! end user, through the session CreatePortalSession opened (src/console/session.rs). Every
//! call is TokenAdminService's as a token manager of the session's tenant, kept here to the
//! principal's own tokens: the list asks for the principal's tokens only, every page or action
//! by id reads the token first and answers the same 404 as for a missing token unless the
//! principal owns it, a new token is always the principal's, and only permissions and roles
//! within the principal's own are offered and accepted.

mod forms;
mod tokens;
mod usage;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use hyper::{StatusCode, header};
use maud::{Markup, html};

use super::page::{self, Layout, Problem};
pub use super::page::{time_of, when};
use super::session::{PORTAL_SIGN_OUT_PATH, PortalUser};
use super::{Backend, Console, PORTAL_PATH};
use crate::domain::session::PortalBranding;
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

/// The portal's theme stylesheet: the tenant's accent colour.
pub const THEME_PATH: &str = "/portal/theme.css";
/// The new-token form.
pub const NEW_TOKEN_PATH: &str = "/portal/tokens/new";
/// Where the new-token form posts.
pub const TOKENS_PATH: &str = "/portal/tokens";
/// Usage of all of the principal's tokens.
pub const USAGE_PATH: &str = "/portal/usage";

pub fn routes() -> Router<Console> {
    Router::new()
        .route(
            "/portal",
            get(|| async { Redirect::permanent(PORTAL_PATH) }),
        )
        .route(PORTAL_PATH, get(tokens::list))
        .route(NEW_TOKEN_PATH, get(tokens::new_form))
        .route(TOKENS_PATH, axum::routing::post(tokens::create))
        .route("/portal/tokens/{id}", get(tokens::detail))
        .route(
            "/portal/tokens/{id}/edit",
            get(tokens::edit_form).post(tokens::edit),
        )
        .route(
            "/portal/tokens/{id}/rotate",
            get(tokens::rotate_form).post(tokens::rotate),
        )
        .route(
            "/portal/tokens/{id}/revoke",
            get(tokens::revoke_form).post(tokens::revoke),
        )
        .route("/portal/tokens/{id}/usage", get(usage::token_usage))
        .route(USAGE_PATH, get(usage::all_usage))
        .route(THEME_PATH, get(theme))
}

/// A token's page.
pub fn token_path(id: &str) -> String {
    format!("/portal/tokens/{id}")
}

/// The tenant's branding, Tessera's own if it cannot be read (the page still works).
pub async fn branding(console: &Console, user: &PortalUser) -> PortalBranding {
    match console.backend() {
        Ok(backend) => backend
            .admin
            .portal_branding(&user.tenant)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read a tenant's portal branding");
                PortalBranding::default_for(user.tenant.clone())
            }),
        Err(_) => PortalBranding::default_for(user.tenant.clone()),
    }
}

/// A portal page around `body`.
pub fn layout(
    user: &PortalUser,
    branding: &PortalBranding,
    title: &str,
    current: &str,
    body: Markup,
) -> Markup {
    let product = if branding.product_name.is_empty() {
        "API tokens"
    } else {
        branding.product_name.as_str()
    };
    let mut nav = vec![
        (PORTAL_PATH, "Tokens", current == PORTAL_PATH),
        (USAGE_PATH, "Usage", current == USAGE_PATH),
    ];
    if !user.return_url.is_empty() {
        nav.push((user.return_url.as_str(), "Back to the application", false));
    }
    Layout {
        title,
        assets: "/portal/assets",
        product,
        nav,
        who: Some(user.principal_id.as_str()),
        sign_out: Some((PORTAL_SIGN_OUT_PATH, &user.csrf)),
        theme: (!branding.accent_color.is_empty()).then_some(THEME_PATH),
        logo: (!branding.logo_url.is_empty()).then_some(branding.logo_url.as_str()),
    }
    .render(body)
}

/// One request's portal: the backend, the signed-in user and the tenant's branding.
pub struct Portal<'a> {
    pub backend: &'a Backend,
    pub user: PortalUser,
    pub branding: PortalBranding,
}

impl<'a> Portal<'a> {
    pub async fn new(console: &'a Console, user: PortalUser) -> Result<Self, Response> {
        let backend = console.backend()?;
        let branding = branding(console, &user).await;
        Ok(Self {
            backend,
            user,
            branding,
        })
    }

    /// The session's tenant, as a request field.
    pub fn tenant(&self) -> String {
        self.user.tenant.as_str().to_owned()
    }

    /// The session's principal, as a request field.
    pub fn principal(&self) -> String {
        self.user.principal_id.as_str().to_owned()
    }

    /// A page with `status`.
    pub fn page(&self, status: StatusCode, title: &str, current: &str, body: Markup) -> Response {
        (
            status,
            layout(&self.user, &self.branding, title, current, body),
        )
            .into_response()
    }

    /// A 200 page.
    pub fn ok(&self, title: &str, current: &str, body: Markup) -> Response {
        self.page(StatusCode::OK, title, current, body)
    }

    /// A refused call as a page of its own.
    pub fn refused(&self, status: &tonic::Status) -> Response {
        if status.code() == tonic::Code::NotFound {
            return self.not_found();
        }
        let problem = Problem::from_status(status);
        let body = html! {
            h1 { (problem.title()) }
            (problem.render())
            p { a href=(PORTAL_PATH) { "Back to your tokens" } }
        };
        self.page(page::http_status(status.code()), problem.title(), "", body)
    }

    /// The one answer for a token that is missing, malformed, another tenant's or another
    /// principal's: nothing tells them apart.
    pub fn not_found(&self) -> Response {
        let body = html! {
            h1 { "Token not found" }
            p { "There is no such token among yours." }
            p { a href=(PORTAL_PATH) { "Back to your tokens" } }
        };
        self.page(StatusCode::NOT_FOUND, "Token not found", "", body)
    }

    /// The token `id` if the session's principal owns it; else the not-found page.
    pub async fn own_token(&self, id: &str) -> Result<proto::Token, Response> {
        let found = self
            .backend
            .api
            .get_token(
                self.user
                    .request(proto::GetTokenRequest { id: id.to_owned() }),
            )
            .await;
        match found {
            Ok(response) => response
                .into_inner()
                .token
                .filter(|token| {
                    token.owner_id == self.user.principal_id.as_str()
                        && token.tenant == self.user.tenant.as_str()
                })
                .ok_or_else(|| self.not_found()),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                Err(self.not_found())
            }
            Err(status) => Err(self.refused(&status)),
        }
    }
}

/// `:root { --accent: … }` from the tenant's branding (validated `#rrggbb`, so nothing else can
/// be written into the stylesheet); a separate file, as the CSP allows no inline style.
async fn theme(State(console): State<Console>, user: PortalUser) -> Response {
    let branding = branding(&console, &user).await;
    let css = if branding.accent_color.is_empty() {
        String::new()
    } else {
        format!(":root {{ --accent: {}; }}\n", branding.accent_color)
    };
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], css).into_response()
}
