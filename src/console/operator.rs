//! The operator console's pages (`/console/`): tenants, principals, roles, tokens, usage, API
//! status, admin keys, webhooks and the audit log, each a call of TokenAdminService as the
//! signed-in operator (src/console/session.rs).

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::page::Layout;
use super::session::{ConsoleUser, SIGN_OUT_PATH};
use super::{CONSOLE_PATH, Console};

/// The console's sections, in the nav's order: (path, label).
pub const SECTIONS: &[(&str, &str)] = &[("/console/", "Overview")];

pub fn routes() -> Router<Console> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent(CONSOLE_PATH) }),
        )
        .route(CONSOLE_PATH, get(overview))
}

/// A console page around `body`, with `current` marked in the nav.
pub fn layout(user: &ConsoleUser, title: &str, current: &str, body: Markup) -> Markup {
    Layout {
        title,
        assets: "/console/assets",
        product: "Tessera console",
        nav: SECTIONS
            .iter()
            .map(|(path, label)| (*path, *label, *path == current))
            .collect(),
        who: Some(&user.actor.name),
        sign_out: Some((SIGN_OUT_PATH, &user.csrf)),
        theme: None,
        logo: None,
    }
    .render(body)
}

async fn overview(user: ConsoleUser) -> Response {
    let tenants = if user.actor.tenants.is_all() {
        "every tenant".to_owned()
    } else {
        user.actor.tenants.names().join(", ")
    };
    let body = html! {
        h1 { "Overview" }
        p { "Signed in as " strong { (user.actor.name) } " with admin key " code { (user.actor.admin_key) } "." }
        p { "Role: " strong { (user.actor.role.as_str()) } "; tenants: " (tenants) "." }
    };
    layout(&user, "Overview", CONSOLE_PATH, body).into_response()
}
