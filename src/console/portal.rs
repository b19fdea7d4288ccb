//! The self-service portal's pages (`/portal/`): one principal's tokens, for the platform's own
//! end user, through the session CreatePortalSession opened (src/console/session.rs). Every
//! call is TokenAdminService's as a token manager of the session's tenant, kept here to the
//! principal's own tokens: another principal's token by id is not found.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::header;
use maud::{Markup, html};

use super::page::Layout;
use super::session::{PORTAL_SIGN_OUT_PATH, PortalUser};
use super::{Console, PORTAL_PATH};
use crate::domain::session::PortalBranding;

/// The portal's theme stylesheet: the tenant's accent colour.
pub const THEME_PATH: &str = "/portal/theme.css";

pub fn routes() -> Router<Console> {
    Router::new()
        .route(PORTAL_PATH, get(tokens))
        .route(THEME_PATH, get(theme))
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
    let mut nav = vec![(PORTAL_PATH, "Tokens", current == PORTAL_PATH)];
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

async fn tokens(State(console): State<Console>, user: PortalUser) -> Response {
    let branding = branding(&console, &user).await;
    let body = html! {
        h1 { "API tokens" }
        p { "Tokens of " strong { (user.principal_id) } "." }
    };
    layout(&user, &branding, "API tokens", PORTAL_PATH, body).into_response()
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
