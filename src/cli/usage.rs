//! `tessera usage TOKEN_ID` and `tessera usage --owner ID [--tenant T]`: the figures as a table
//! and the calls per day as a small bar chart; `--json` gives the whole answer.

use clap::ArgGroup;
use tessera::proto;

use super::connect::admin_client;
use super::error::{CliError, answer};
use super::record::{Field, Record};
use super::{ClientArgs, Report, table};

/// Width of the longest bar of the chart, in characters.
const CHART_WIDTH: usize = 40;

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("whose").required(true).args(["token_id", "owner"])))]
pub struct UsageArgs {
    /// One token's usage (`tok_…`).
    token_id: Option<String>,

    /// All tokens of this owner instead.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,

    /// The owner's tenant [default: the server's default tenant].
    #[arg(long, requires = "owner")]
    tenant: Option<String>,

    /// Days in the daily series, 1 to 366 [default: 30].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=366))]
    days: Option<i32>,
}

pub(super) async fn run(args: &ClientArgs, usage: UsageArgs) -> Result<Report, CliError> {
    let mut client = admin_client(args).await?;
    let request = proto::ListUsageRequest {
        token_id: usage.token_id.unwrap_or_default(),
        tenant: usage.tenant.unwrap_or_default(),
        owner_id: usage.owner.unwrap_or_default(),
        days: usage.days.unwrap_or(0),
    };
    let token_id = request.token_id.clone();
    let response = answer("ListUsage", client.list_usage(request).await)?;
    let mut record = Record::from(&response);
    // One token's view shows its credits too (a metered token's balance, as read now).
    if !token_id.is_empty() {
        let read = proto::GetTokenRequest { id: token_id };
        let token = answer("GetToken", client.get_token(read).await)?.token;
        let credits = token.and_then(|token| token.credits);
        record = record.with(
            "credits",
            Field::Message(credits.as_ref().map(Record::from)),
        );
    }
    let mut human = table::document(&record.clone().without("daily"));
    human.push_str("\n\ncalls per day (UTC):\n");
    human.push_str(&chart(&response.daily));
    Ok(Report::new(record.to_json(), human))
}

/// One line per day: the date, a bar scaled to the busiest day, and the count.
fn chart(daily: &[proto::DailyUsage]) -> String {
    let busiest = daily.iter().map(|day| day.calls).max().unwrap_or(0).max(1);
    let lines: Vec<String> = daily
        .iter()
        .map(|day| {
            let calls = day.calls.max(0);
            // A day with any calls shows at least a sliver.
            let width = usize::try_from(calls * CHART_WIDTH as i64 / busiest)
                .unwrap_or(0)
                .max(usize::from(calls > 0));
            format!("{} │{} {calls}", day.date, "█".repeat(width))
        })
        .collect();
    if lines.is_empty() {
        return "(none)".to_owned();
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, calls: i64) -> proto::DailyUsage {
        proto::DailyUsage {
            date: date.to_owned(),
            calls,
            allowed: calls,
            denied: 0,
        }
    }

    #[test]
    fn the_busiest_day_gets_the_full_bar_and_a_quiet_day_none() {
        let text = chart(&[
            day("2026-01-01", 0),
            day("2026-01-02", 10),
            day("2026-01-03", 1),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2026-01-01 │ 0");
        assert_eq!(
            lines[1],
            format!("2026-01-02 │{} 10", "█".repeat(CHART_WIDTH))
        );
        assert_eq!(lines[2], "2026-01-03 │████ 1");
    }

    #[test]
    fn a_day_with_few_calls_among_many_still_shows_a_sliver() {
        let text = chart(&[day("2026-01-01", 1000), day("2026-01-02", 1)]);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|line| line.contains("│█ 1")),
            "{text}"
        );
    }
}
