//! Usage of a token or an owner (ListUsage): the figures, top endpoints, recent calls, where it
//! was last used from, and two charts drawn on the server as SVG (calls per day; the success
//! rate per day), each with a title and a table that reads without the picture.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Page, layout_in, refused, time};
use crate::console::Console;
use crate::console::session::ConsoleUser;
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
        (figures(&report))
        h2 { "Calls per day" }
        (calls_chart(&report.daily))
        h2 { "Success rate per day" }
        (success_chart(&report.daily))
        h2 { "Top endpoints" }
        @if report.top_endpoints.is_empty() { p { "No calls yet." } } @else {
            table {
                thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Calls" } } }
                tbody { @for endpoint in &report.top_endpoints { tr { td { code { (endpoint.endpoint) } } td { (endpoint.calls) } } } }
            }
        }
        h2 { "Recent calls" }
        @if report.recent_calls.is_empty() { p { "No calls yet." } } @else {
            div.table-scroll {
                table {
                    thead { tr {
                        th scope="col" { "Time" } th scope="col" { "Endpoint" } th scope="col" { "Permission" }
                        th scope="col" { "Outcome" } th scope="col" { "Client IP" } th scope="col" { "User agent" }
                    } }
                    tbody {
                        @for call in &report.recent_calls {
                            tr {
                                td { (time(call.time.as_ref())) }
                                td { code { (call.endpoint) } }
                                td { (call.permission) }
                                td { @if call.allowed { "allowed" } @else { "denied: " (deny_reason(call.reason)) } }
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

fn deny_reason(reason: i32) -> String {
    proto::DenyReason::try_from(reason)
        .map(|reason| {
            reason
                .as_str_name()
                .trim_start_matches("DENY_REASON_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| reason.to_string())
}

fn figures(report: &proto::ListUsageResponse) -> Markup {
    let latency = report
        .average_latency
        .as_ref()
        .map(|latency| {
            format!(
                "{:.1} ms",
                latency.seconds as f64 * 1000.0 + f64::from(latency.nanos) / 1e6
            )
        })
        .unwrap_or_else(|| "—".to_owned());
    let or_dash = |text: &str| {
        if text.is_empty() {
            "—".to_owned()
        } else {
            text.to_owned()
        }
    };
    html! {
        div.stats {
            div.stat { span.value { (report.total_calls) } span.label { "Calls in the period" } }
            div.stat { span.value { (report.calls_last_24h) } span.label { "Calls in the last 24 hours" } }
            div.stat { span.value { (format!("{:.1}%", report.success_rate * 100.0)) } span.label { "Success rate" } }
            div.stat { span.value { (latency) } span.label { "Average latency (reported)" } }
        }
        table {
            caption { "Last use" }
            tbody {
                tr { th scope="row" { "Last used" } td { (time(report.last_used_at.as_ref())) } }
                tr { th scope="row" { "IP" } td { (or_dash(&report.last_used_ip)) } }
                tr { th scope="row" { "Browser" } td { (or_dash(&report.last_used_browser)) } }
                tr { th scope="row" { "Operating system" } td { (or_dash(&report.last_used_os)) } }
                tr { th scope="row" { "Location" } td { (or_dash(&report.last_used_location)) } }
            }
        }
    }
}

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const BOTTOM: f64 = 140.0;

/// One bar chart: a value per day scaled to `max`, each bar titled, with a table of the same
/// figures after it.
fn bar_chart(
    id: &str,
    title: &str,
    bars: &[(String, f64, String)],
    max: f64,
    column: &str,
) -> Markup {
    let slot = WIDTH / bars.len().max(1) as f64;
    let bar_width = (slot * 0.8).max(1.0);
    let max = if max > 0.0 { max } else { 1.0 };
    let title_id = format!("{id}-title");
    html! {
        figure.chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby=(title_id) {
                title id=(title_id) { (title) }
                line.axis x1="0" y1=(BOTTOM) x2=(WIDTH) y2=(BOTTOM) {}
                @for (index, (day, value, label)) in bars.iter().enumerate() {
                    @let height = (value / max * (BOTTOM - 10.0)).max(0.0);
                    rect.bar x=(format!("{:.1}", index as f64 * slot + (slot - bar_width) / 2.0)) y=(format!("{:.1}", BOTTOM - height)) width=(format!("{bar_width:.1}")) height=(format!("{height:.1}")) {
                        title { (day) ": " (label) }
                    }
                }
                @if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
                    text x="0" y=(HEIGHT - 4.0) { (first.0) }
                    text x=(WIDTH) y=(HEIGHT - 4.0) text-anchor="end" { (last.0) }
                }
            }
            figcaption { (title) }
        }
        details {
            summary { "The figures of " (title.to_lowercase()) }
            table {
                thead { tr { th scope="col" { "Day" } th scope="col" { (column) } } }
                tbody { @for (day, _, label) in bars { tr { td { (day) } td { (label) } } } }
            }
        }
    }
}

fn calls_chart(daily: &[proto::DailyUsage]) -> Markup {
    if daily.is_empty() {
        return html! { p { "No calls in the period." } };
    }
    let bars: Vec<_> = daily
        .iter()
        .map(|day| (day.date.clone(), day.calls as f64, day.calls.to_string()))
        .collect();
    let max = bars.iter().map(|bar| bar.1).fold(0.0, f64::max);
    bar_chart("calls-chart", "Calls per day", &bars, max, "Calls")
}

fn success_chart(daily: &[proto::DailyUsage]) -> Markup {
    if daily.is_empty() {
        return html! { p { "No calls in the period." } };
    }
    let bars: Vec<_> = daily
        .iter()
        .map(|day| {
            if day.calls > 0 {
                let rate = day.allowed as f64 / day.calls as f64 * 100.0;
                (day.date.clone(), rate, format!("{rate:.1}%"))
            } else {
                (day.date.clone(), 0.0, "no calls".to_owned())
            }
        })
        .collect();
    bar_chart(
        "success-chart",
        "Success rate per day",
        &bars,
        100.0,
        "Allowed",
    )
}
