//! Usage of a token or an owner (ListUsage): the figures, top endpoints, recent calls, where it
//! was last used from, and two charts drawn on the server as SVG (calls per day; the success
//! rate per day), each with a title and a table that reads without the picture.

use crate::console::page::column_heads;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::html;
use serde::Deserialize;

use super::{Page, layout_in, refused, time};
use crate::console::session::ConsoleUser;
use crate::console::{Console, chart, usage};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

pub fn routes() -> Router<Console> {
    Router::new().route("/console/usage", get(usage))
}

#[derive(Debug, Default, Deserialize)]
struct UsageQuery {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    days: String,
}

async fn usage(
    State(console): State<Console>,
    user: ConsoleUser,
    Query(query): Query<UsageQuery>,
) -> Page {
    let backend = console.backend()?;
    let tenant = &query.tenant;
    let form = html! {
        form.inline method="get" action="/console/usage" {
            input type="hidden" name="tenant" value=(tenant);
            label for="token" { "Token id" }
            input id="token" name="token" type="text" value=(query.token);
            label for="owner" { "or owner" }
            input id="owner" name="owner" type="text" value=(query.owner);
            label for="days" { "Days" }
            input id="days" name="days" type="number" min="1" max="90" value=(query.days);
            button.secondary type="submit" { "Show usage" }
        }
    };
    let token = query.token.trim();
    let owner = query.owner.trim();
    if token.is_empty() && owner.is_empty() {
        let body = html! {
            h1 { "Usage" }
            (form)
            p { "Pick a token (by id) or an owner to see its usage." }
        };
        return Ok(layout_in(&user, "Usage", "/console/usage", tenant, body).into_response());
    }
    let days = match super::number::<i32>("days", &query.days) {
        Ok(days) => days.unwrap_or(0),
        Err(problem) => {
            let body = html! { h1 { "Usage" } (problem.render()) (form) };
            let markup = layout_in(&user, "Usage", "/console/usage", tenant, body);
            return Ok(super::refused_form(problem.code, markup));
        }
    };
    let report = backend
        .api
        .list_usage(user.request(proto::ListUsageRequest {
            token_id: token.to_owned(),
            tenant: tenant.clone(),
            owner_id: if token.is_empty() {
                owner.to_owned()
            } else {
                String::new()
            },
            days,
        }))
        .await
        .map_err(refused)?
        .into_inner();
    let subject = if token.is_empty() {
        format!("owner {owner}")
    } else {
        format!("token {token}")
    };
    let body = html! {
        h1 { "Usage of " (subject) }
        (form)
        (usage::stats(&report))
        (usage::last_use(&report))
        (chart::daily_charts(&report.daily))
        (usage::top_endpoints(&report))
        h2 { "Recent calls" }
        @if report.recent_calls.is_empty() { p { "No calls yet." } } @else {
            div.table-scroll {
                table {
                    (column_heads(&["Time", "Endpoint", "Permission", "Outcome", "Client IP", "User agent"]))
                    tbody {
                        @for call in &report.recent_calls {
                            tr {
                                td { (time(call.time.as_ref())) }
                                td { code { (call.endpoint) } }
                                td { (call.permission) }
                                td { (usage::outcome(call)) }
                                td { (call.client_ip) }
                                td { (call.user_agent) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout_in(&user, "Usage", "/console/usage", tenant, body).into_response())
}
