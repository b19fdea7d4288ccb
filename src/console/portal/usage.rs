//! Usage of one of the principal's tokens, or of all of them (ListUsage): the figures, the last
//! use, top endpoints, recent calls, and two bar charts rendered here as SVG (calls per day and
//! success rate per day), each with a title, a description and a table to read without it.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::{Markup, html};

use super::{Portal, USAGE_PATH, token_path, when};
use crate::console::Console;
use crate::console::PORTAL_PATH;
use crate::console::session::PortalUser;
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
    let usage = portal
        .backend
        .api
        .list_usage(portal.user.request(proto::ListUsageRequest {
            token_id: token.id.clone(),
            days: DAYS,
            ..Default::default()
        }))
        .await
        .map_err(|status| portal.refused(&status))?
        .into_inner();
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
    let usage = portal
        .backend
        .api
        .list_usage(portal.user.request(proto::ListUsageRequest {
            tenant: portal.tenant(),
            owner_id: portal.principal(),
            days: DAYS,
            ..Default::default()
        }))
        .await
        .map_err(|status| portal.refused(&status))?
        .into_inner();
    let body = html! {
        h1 { "Usage of all your tokens" }
        (figures(&usage, true))
    };
    Ok(portal.ok("Usage", USAGE_PATH, body))
}

fn stat(label: &str, value: &str) -> Markup {
    html! {
        div.stat {
            span.value { (value) }
            span.label { (label) }
        }
    }
}

/// A count as a float, for shares and charts (counts stay far below 2^52).
#[allow(clippy::cast_precision_loss)]
fn as_f64(count: i64) -> f64 {
    count as f64
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn milliseconds(duration: &prost_types::Duration) -> String {
    #[allow(clippy::cast_precision_loss)] // a latency, far below 2^52 ms
    let ms = duration.seconds as f64 * 1000.0 + f64::from(duration.nanos) / 1_000_000.0;
    format!("{ms:.0} ms")
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

fn outcome(call: &proto::RecentCall) -> String {
    if call.allowed {
        return "Allowed".to_owned();
    }
    let reason = proto::DenyReason::try_from(call.reason)
        .map(|reason| {
            reason
                .as_str_name()
                .trim_start_matches("DENY_REASON_")
                .replace('_', " ")
                .to_lowercase()
        })
        .unwrap_or_default();
    if reason.is_empty() {
        "Denied".to_owned()
    } else {
        format!("Denied ({reason})")
    }
}

/// The page's figures, charts and tables; `by_token`: a column naming each recent call's token.
fn figures(usage: &proto::ListUsageResponse, by_token: bool) -> Markup {
    let success = if usage.total_calls == 0 {
        "—".to_owned()
    } else {
        percent(usage.success_rate)
    };
    let latency = usage
        .average_latency
        .as_ref()
        .map_or_else(|| "—".to_owned(), milliseconds);
    let calls: Vec<Bar> = usage
        .daily
        .iter()
        .map(|day| Bar {
            label: day.date.clone(),
            value: as_f64(day.calls),
            shown: format!("{} calls", day.calls),
        })
        .collect();
    let rates: Vec<Bar> = usage
        .daily
        .iter()
        .map(|day| {
            let share = if day.calls == 0 {
                0.0
            } else {
                as_f64(day.allowed) / as_f64(day.calls)
            };
            Bar {
                label: day.date.clone(),
                value: share * 100.0,
                shown: if day.calls == 0 {
                    "no calls".to_owned()
                } else {
                    format!("{} allowed", percent(share))
                },
            }
        })
        .collect();
    let busiest = usage.daily.iter().max_by_key(|day| day.calls);
    let calls_summary = match busiest {
        Some(day) if day.calls > 0 => format!(
            "{} calls in the last {} days; the most, {}, on {}.",
            usage.daily.iter().map(|day| day.calls).sum::<i64>(),
            usage.daily.len(),
            day.calls,
            day.date
        ),
        _ => format!("No calls in the last {} days.", usage.daily.len()),
    };
    html! {
        div.stats {
            (stat("Total calls", &usage.total_calls.to_string()))
            (stat("Calls in the last 24 hours", &usage.calls_last_24h.to_string()))
            (stat("Success rate", &success))
            (stat("Average response time", &latency))
        }
        h2 { "Calls per day" }
        (bar_chart("calls-chart", "Calls per day", &calls_summary, &calls, None))
        h2 { "Success rate per day" }
        (bar_chart(
            "success-chart",
            "Share of allowed calls per day",
            "The share of each day's calls that were allowed, from 0 to 100%.",
            &rates,
            Some(100.0),
        ))
        details {
            summary { "The days as a table" }
            div.table-scroll {
                table {
                    thead {
                        tr {
                            th scope="col" { "Day (UTC)" }
                            th scope="col" { "Calls" }
                            th scope="col" { "Allowed" }
                            th scope="col" { "Denied" }
                        }
                    }
                    tbody {
                        @for day in &usage.daily {
                            tr {
                                td { (day.date) }
                                td { (day.calls) }
                                td { (day.allowed) }
                                td { (day.denied) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Last use" }
        table {
            tbody {
                tr { th scope="row" { "When" } td { (when(usage.last_used_at.as_ref(), "Never")) } }
                tr { th scope="row" { "IP address" } td { (or_dash(&usage.last_used_ip)) } }
                tr { th scope="row" { "Browser" } td { (or_dash(&usage.last_used_browser)) } }
                tr { th scope="row" { "Operating system" } td { (or_dash(&usage.last_used_os)) } }
                tr { th scope="row" { "Location" } td { (or_dash(&usage.last_used_location)) } }
            }
        }
        h2 { "Top endpoints" }
        @if usage.top_endpoints.is_empty() {
            p { "No calls yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Calls" } } }
                tbody {
                    @for endpoint in &usage.top_endpoints {
                        tr { td { code { (or_dash(&endpoint.endpoint)) } } td { (endpoint.calls) } }
                    }
                }
            }
        }
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
                                td { (outcome(call)) }
                                td { (or_dash(&call.client_ip)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One bar: its label (a day), its height and the words a reader hears for it.
struct Bar {
    label: String,
    value: f64,
    shown: String,
}

const CHART_WIDTH: f64 = 600.0;
const CHART_HEIGHT: f64 = 160.0;

fn number(value: f64) -> String {
    format!("{value:.1}")
}

/// A bar chart as SVG: `role="img"` with its title and description, and each bar's own
/// `<title>` (a tooltip, and what a screen reader reads); `max` is the top of the scale (else
/// the highest bar).
fn bar_chart(id: &str, title: &str, summary: &str, bars: &[Bar], max: Option<f64>) -> Markup {
    let top = max
        .unwrap_or_else(|| bars.iter().map(|bar| bar.value).fold(0.0, f64::max))
        .max(1.0);
    let slot = CHART_WIDTH / as_f64(i64::try_from(bars.len().max(1)).unwrap_or(1));
    let width = (slot * 0.8).max(1.0);
    let first = bars
        .first()
        .map(|bar| bar.label.as_str())
        .unwrap_or_default();
    let last = bars
        .last()
        .map(|bar| bar.label.as_str())
        .unwrap_or_default();
    let scale_top = if max.is_some() {
        format!("{top:.0}%")
    } else {
        format!("{top:.0}")
    };
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 600 190" role="img"
                aria-labelledby={ (id) "-title " (id) "-desc" } {
                title id={ (id) "-title" } { (title) }
                desc id={ (id) "-desc" } { (summary) }
                text x="0" y="12" { (scale_top) }
                line.axis x1="0" y1=(number(CHART_HEIGHT + 15.0)) x2=(number(CHART_WIDTH)) y2=(number(CHART_HEIGHT + 15.0)) {}
                @for (index, bar) in bars.iter().enumerate() {
                    @let height = (bar.value / top * CHART_HEIGHT).clamp(0.0, CHART_HEIGHT);
                    @let x = as_f64(i64::try_from(index).unwrap_or(0)) * slot + (slot - width) / 2.0;
                    rect.bar x=(number(x)) y=(number(CHART_HEIGHT + 15.0 - height))
                        width=(number(width)) height=(number(height)) {
                        title { (bar.label) ": " (bar.shown) }
                    }
                }
                text x="0" y="188" { (first) }
                text x="600" y="188" text-anchor="end" { (last) }
            }
            figcaption { (title) " (UTC days)" }
        }
    }
}
