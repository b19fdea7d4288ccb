//! Usage of one of the principal's tokens, or of all of them (ListUsage): the figures, the last
//! use, top endpoints, recent calls, and two bar charts rendered here as SVG (calls per day and
//! success rate per day), each with a title, a description and a table to read without it.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};

use super::{Portal, USAGE_PATH, token_path, when};
use crate::console::PORTAL_PATH;
use crate::console::session::PortalUser;
use crate::console::usage::{self, or_dash};
use crate::console::{Console, chart};
use crate::proto;
use crate::proto::token_admin_service_server::TokenAdminService as _;

/// Days of history the pages show.
const DAYS: i32 = 30;

/// Usage of one of the principal's tokens.
pub async fn token_usage(
    State(console): State<Console>,
    Path(id): Path<String>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let token = portal.own_token(&id).await?;
    let usage = list_usage(
        &portal,
        proto::ListUsageRequest {
            token_id: token.id.clone(),
            days: DAYS,
            ..Default::default()
        },
    )
    .await?;
    let body = html! {
        h1 { "Usage of " (token.name) }
        (figures(&usage, false))
        p { a href=(token_path(&token.id)) { "Back to the token" } }
    };
    Ok(portal.ok("Usage", PORTAL_PATH, body))
}

/// Usage of all of the principal's tokens together.
pub async fn all_usage(
    State(console): State<Console>,
    user: PortalUser,
) -> Result<Response, Response> {
    let portal = Portal::new(&console, user).await?;
    let usage = list_usage(
        &portal,
        proto::ListUsageRequest {
            tenant: portal.tenant(),
            owner_id: portal.principal(),
            days: DAYS,
            ..Default::default()
        },
    )
    .await?;
    let body = html! {
        h1 { "Usage of all your tokens" }
        (figures(&usage, true))
    };
    Ok(portal.ok("Usage", USAGE_PATH, body))
}

/// ListUsage as the portal's user; a refusal is the page that says so.
async fn list_usage(
    portal: &Portal<'_>,
    request: proto::ListUsageRequest,
) -> Result<proto::ListUsageResponse, Response> {
    portal
        .backend
        .api
        .list_usage(portal.user.request(request))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| portal.refused(&status))
}

/// The page's figures, charts and tables; `by_token`: a column naming each recent call's token.
fn figures(usage: &proto::ListUsageResponse, by_token: bool) -> Markup {
    html! {
        (usage::stats(usage))
        (chart::daily_charts(&usage.daily))
        (usage::last_use(usage))
        (usage::top_endpoints(usage))
        h2 { "Recent calls" }
        @if usage.recent_calls.is_empty() {
            p { "No calls yet." }
        } @else {
            div.table-scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Time" }
                            @if by_token { th scope="col" { "Token" } }
                            th scope="col" { "Endpoint" }
                            th scope="col" { "Permission" }
                            th scope="col" { "Outcome" }
                            th scope="col" { "Client IP" }
                        }
                    }
                    tbody {
                        @for call in &usage.recent_calls {
                            tr {
                                td { (when(call.time.as_ref(), "—")) }
                                @if by_token {
                                    td { a href=(token_path(&call.token_id)) { code { (call.token_id) } } }
                                }
                                td { code { (or_dash(&call.endpoint)) } }
                                td { code { (or_dash(&call.permission)) } }
                                td { (usage::outcome(call)) }
                                td { (or_dash(&call.client_ip)) }
                            }
                        }
                    }
                }
            }
        }
    }
}
