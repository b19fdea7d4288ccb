//! The bar charts of the usage pages (console and portal), drawn on the server as SVG: each
//! with a title, a description a screen reader reads, and each bar's own `<title>`.

use crate::console::page::column_heads;
use maud::{Markup, html};

use crate::proto;

/// One bar: its label (a day), its height and the words a reader hears for it.
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub shown: String,
}

const CHART_WIDTH: f64 = 600.0;
const CHART_HEIGHT: f64 = 160.0;

/// A count as a float, for shares and charts (counts stay far below 2^52).
#[allow(clippy::cast_precision_loss)]
pub fn as_f64(count: i64) -> f64 {
    count as f64
}

/// A share (0 to 1) as a percentage with one decimal.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn number(value: f64) -> String {
    format!("{value:.1}")
}

/// A bar chart as SVG: `role="img"` with its title and description, and each bar's own
/// `<title>` (a tooltip, and what a screen reader reads); `max` is the top of the scale (else
/// the highest bar).
pub fn bar_chart(id: &str, title: &str, summary: &str, bars: &[Bar], max: Option<f64>) -> Markup {
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

/// A bar a day: its calls.
pub fn calls_per_day(daily: &[proto::DailyUsage]) -> Vec<Bar> {
    daily
        .iter()
        .map(|day| Bar {
            label: day.date.clone(),
            value: as_f64(day.calls),
            shown: format!("{} calls", day.calls),
        })
        .collect()
}

/// A bar a day: the share of its calls that were allowed, in percent (0 on a day without calls).
pub fn success_per_day(daily: &[proto::DailyUsage]) -> Vec<Bar> {
    daily
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
        .collect()
}

/// What the calls chart shows, in words: the total and the busiest day.
fn calls_summary(daily: &[proto::DailyUsage]) -> String {
    match daily.iter().max_by_key(|day| day.calls) {
        Some(busiest) if busiest.calls > 0 => format!(
            "{} calls in the last {} days; the most, {}, on {}.",
            daily.iter().map(|day| day.calls).sum::<i64>(),
            daily.len(),
            busiest.calls,
            busiest.date
        ),
        _ => format!("No calls in the last {} days.", daily.len()),
    }
}

/// The two charts of a usage page (calls per day, success rate per day), each under its
/// heading, and the days as a table to read without them.
pub fn daily_charts(daily: &[proto::DailyUsage]) -> Markup {
    html! {
        h2 { "Calls per day" }
        (bar_chart("calls-chart", "Calls per day", &calls_summary(daily), &calls_per_day(daily), None))
        h2 { "Success rate per day" }
        (bar_chart(
            "success-chart",
            "Success rate per day",
            "The share of each day's calls that were allowed, from 0 to 100%.",
            &success_per_day(daily),
            Some(100.0),
        ))
        details {
            summary { "The days as a table" }
            div.table-scroll {
                table {
                    (column_heads(&["Day (UTC)", "Calls", "Allowed", "Denied"]))
                    tbody {
                        @for day in daily {
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
    }
}
