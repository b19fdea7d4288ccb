//! The parts of a usage page (ListUsage) the console and the portal share: the figures, the
//! last use and the top endpoints.

use crate::console::page::column_heads;
use maud::{Markup, html};

use super::chart::percent;
use super::page::when;
use crate::proto;

/// A dash in place of an empty text.
pub fn or_dash(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

fn milliseconds(duration: &prost_types::Duration) -> String {
    #[allow(clippy::cast_precision_loss)] // a latency, far below 2^52 ms
    let ms = duration.seconds as f64 * 1000.0 + f64::from(duration.nanos) / 1_000_000.0;
    format!("{ms:.0} ms")
}

fn stat(label: &str, value: &str) -> Markup {
    html! {
        div.stat {
            span.value { (value) }
            span.label { (label) }
        }
    }
}

/// The figures: total calls (first), calls in the last 24 hours, success rate, latency.
pub fn stats(usage: &proto::ListUsageResponse) -> Markup {
    let success = if usage.total_calls == 0 {
        "—".to_owned()
    } else {
        percent(usage.success_rate)
    };
    let latency = usage
        .average_latency
        .as_ref()
        .map_or_else(|| "—".to_owned(), milliseconds);
    html! {
        div.stats {
            (stat("Total calls", &usage.total_calls.to_string()))
            (stat("Calls in the last 24 hours", &usage.calls_last_24h.to_string()))
            (stat("Success rate", &success))
            (stat("Average response time", &latency))
        }
    }
}

/// When and where from the token (or the owner's tokens) was last used.
pub fn last_use(usage: &proto::ListUsageResponse) -> Markup {
    html! {
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
    }
}

/// The endpoints called most, with their calls.
pub fn top_endpoints(usage: &proto::ListUsageResponse) -> Markup {
    html! {
        h2 { "Top endpoints" }
        @if usage.top_endpoints.is_empty() {
            p { "No calls yet." }
        } @else {
            table {
                (column_heads(&["Endpoint", "Calls"]))
                tbody {
                    @for endpoint in &usage.top_endpoints {
                        tr { td { code { (or_dash(&endpoint.endpoint)) } } td { (endpoint.calls) } }
                    }
                }
            }
        }
    }
}

/// A recent call's outcome: "Allowed", or "Denied" with its reason in words.
pub fn outcome(call: &proto::RecentCall) -> String {
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
