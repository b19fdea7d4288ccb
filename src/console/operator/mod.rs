//! The operator console's pages (`/console/`): tenants, principals, roles, tokens, usage, API
//! status, admin keys, webhooks and the audit log, each a call of TokenAdminService as the
//! signed-in operator (src/console/session.rs).
//!
//! Every page takes `?tenant=` (empty: the default tenant), carried by the nav's links and
//! the forms' hidden `tenant` field; the RPCs check the key's tenant scope.

mod directory;
mod settings;
mod tokens;
mod usage;

use crate::console::page::column_heads;
use axum::Router;
use axum::extract::Query;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Layout};
use super::session::{ConsoleUser, SIGN_OUT_PATH};
use super::{CONSOLE_PATH, Console};
use crate::admin::rights::Right;

/// The console's sections, in the nav's order: (path, label).
pub const SECTIONS: &[(&str, &str)] = &[
    ("/console/", "Overview"),
    ("/console/tenants", "Tenants"),
    ("/console/principals", "Principals"),
    ("/console/roles", "Roles"),
    ("/console/tokens", "Tokens"),
    ("/console/usage", "Usage"),
    ("/console/status", "API status"),
    ("/console/admin-keys", "Admin keys"),
    ("/console/webhooks", "Webhooks"),
    ("/console/audit", "Audit log"),
];

/// A page's answer: the page, or a refusal page.
type Page = Result<Response, Response>;

pub fn routes() -> Router<Console> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent(CONSOLE_PATH) }),
        )
        .route(CONSOLE_PATH, get(overview))
        .route("/console/tenants", get(tenants))
        .merge(directory::routes())
        .merge(tokens::routes())
        .merge(usage::routes())
        .merge(settings::routes())
}

/// The `?tenant=` every page takes.
#[derive(Debug, Default, Deserialize)]
pub struct TenantQuery {
    #[serde(default)]
    pub tenant: String,
}

/// `path` with the tenant's query (none for the default tenant).
pub fn href(path: &str, tenant: &str) -> String {
    href_with(path, tenant, &[])
}

/// A console form's hidden fields: the session's CSRF token and the tenant the page is in.
pub fn hidden_fields(user: &ConsoleUser, tenant: &str) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(user.csrf);
        input type="hidden" name="tenant" value=(tenant);
    }
}

/// A one-button form that posts to `action` (a destructive action: revoke, delete).
pub fn post_button(action: &str, user: &ConsoleUser, tenant: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (hidden_fields(user, tenant))
            button.danger type="submit" { (label) }
        }
    }
}

/// A link to a list's next page (`label`, e.g. "Next page"), when there is one.
pub fn next_page(path: &str, tenant: &str, page_token: &str, label: &str) -> Markup {
    html! {
        @if !page_token.is_empty() {
            p.pager { a href=(href_with(path, tenant, &[("page_token", page_token)])) { (label) } }
        }
    }
}

/// `path` with the tenant and more query pairs (empty values left out).
pub fn href_with(path: &str, tenant: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in std::iter::once(&("tenant", tenant)).chain(pairs) {
        if !value.is_empty() {
            query.append_pair(key, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_owned()
    }
}

/// A console page around `body`, with `current` marked in the nav and `tenant` kept in its
/// links.
pub fn layout(user: &ConsoleUser, title: &str, current: &str, body: Markup) -> Markup {
    layout_in(user, title, current, "", body)
}

/// [`layout`] for a page of `tenant`.
pub fn layout_in(
    user: &ConsoleUser,
    title: &str,
    current: &str,
    tenant: &str,
    body: Markup,
) -> Markup {
    let links: Vec<String> = SECTIONS
        .iter()
        .map(|(path, _)| href(path, tenant))
        .collect();
    let body = html! {
        p.hint {
            "Tenant: " strong { (tenant_label(tenant)) } " · "
            a href=(href("/console/tenants", tenant)) { "Change tenant" }
        }
        (body)
    };
    Layout {
        title,
        assets: "/console/assets",
        product: "Tessera console",
        nav: SECTIONS
            .iter()
            .zip(&links)
            .map(|((path, label), link)| (link.as_str(), *label, *path == current))
            .collect(),
        who: Some(&user.actor.name),
        sign_out: Some((SIGN_OUT_PATH, &user.csrf)),
        theme: None,
        logo: None,
    }
    .render(body)
}

/// How a page names a tenant: the empty string is the default tenant.
pub fn tenant_label(tenant: &str) -> &str {
    if tenant.is_empty() {
        "default tenant"
    } else {
        tenant
    }
}

/// May this operator's role do what `right` allows (write buttons are shown only then).
pub fn may(user: &ConsoleUser, right: Right) -> bool {
    right.held_by(user.actor.role)
}

/// A protobuf time as the pages show it; "—" for none.
pub fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|at| DateTime::<Utc>::from_timestamp(at.seconds, at.nanos.max(0) as u32))
        .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

pub use super::page::lines;

/// A form's optional whole number: blank is None.
pub fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, page::Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| page::Problem::field(field, "must be a whole number"))
}

/// The page a refused GET call shows.
pub fn refused(status: tonic::Status) -> Response {
    page::status_page(&status)
}

/// A form page re-rendered with the refusal, with the refusal's HTTP status.
pub fn refused_form(code: Option<tonic::Code>, markup: Markup) -> Response {
    let status = code.map_or(hyper::StatusCode::BAD_REQUEST, page::http_status);
    (status, markup).into_response()
}

async fn overview(user: ConsoleUser, Query(query): Query<TenantQuery>) -> Response {
    let tenants = if user.actor.tenants.is_all() {
        "every tenant".to_owned()
    } else {
        user.actor.tenants.names().join(", ")
    };
    let body = html! {
        h1 { "Overview" }
        p { "Signed in as " strong { (user.actor.name) } " with admin key " code { (user.actor.admin_key) } "." }
        p { "Role: " strong { (user.actor.role.as_str()) } "; tenants: " (tenants) "." }
        ul {
            @for (path, label) in &SECTIONS[1..] {
                li { a href=(href(path, &query.tenant)) { (label) } }
            }
        }
    };
    layout_in(&user, "Overview", CONSOLE_PATH, &query.tenant, body).into_response()
}

/// The key's tenants to pick from; a key of every tenant types a name.
async fn tenants(user: ConsoleUser, Query(query): Query<TenantQuery>) -> Response {
    let body = html! {
        h1 { "Tenants" }
        @if user.actor.tenants.is_all() {
            p { "This admin key may act in every tenant. Type the tenant to work in (leave it empty for the default tenant)." }
            form.inline method="get" action=(CONSOLE_PATH) {
                label for="tenant" { "Tenant" }
                input id="tenant" name="tenant" type="text" value=(query.tenant) autocomplete="off";
                button type="submit" { "Work in this tenant" }
            }
        } @else {
            p { "This admin key may act in these tenants:" }
            table {
                (column_heads(&["Tenant", "Pages"]))
                tbody {
                    @for name in user.actor.tenants.names() {
                        tr {
                            td { (name) @if name == query.tenant { " (current)" } }
                            td {
                                a href=(href("/console/tokens", &name)) { "Tokens" } " · "
                                a href=(href("/console/principals", &name)) { "Principals" } " · "
                                a href=(href("/console/audit", &name)) { "Audit log" }
                            }
                        }
                    }
                }
            }
        }
    };
    layout_in(&user, "Tenants", "/console/tenants", &query.tenant, body).into_response()
}
