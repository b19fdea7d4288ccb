//! Usage statistics as plain data: what the recorder hands the store in one flush, what the
//! store answers for ListUsage, and the pure rules over them (buckets, rates, the daily series).

use std::net::IpAddr;

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};

use super::decision::DenyReason;
use super::fields::{PrincipalId, Tenant, TokenId};

/// How many recent calls ListUsage shows, and how many of a token's calls one flush keeps.
pub const RECENT_CALLS: usize = 20;
/// How many endpoints ListUsage ranks.
pub const TOP_ENDPOINTS: usize = 10;

/// The start of the UTC minute `time` falls in.
pub fn minute_of(time: DateTime<Utc>) -> DateTime<Utc> {
    // Truncating to whole minutes cannot overflow for any representable instant.
    time.duration_trunc(Duration::minutes(1)).unwrap_or(time)
}

/// The start (midnight UTC) of the day `time` falls in.
pub fn day_of(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(Duration::days(1)).unwrap_or(time)
}

/// A call as the recent-calls list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub token_id: TokenId,
    pub time: DateTime<Utc>,
    pub endpoint: String,
    /// The permission asked for; empty for authenticate-only calls.
    pub permission: String,
    pub outcome: Result<(), DenyReason>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: String,
}

/// The newest use of a token.
#[derive(Debug, Clone, PartialEq)]
pub struct LastUse {
    pub time: DateTime<Utc>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: String,
}

/// Checked calls of one token to one endpoint in one UTC minute.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub endpoint: String,
    pub calls: u64,
    pub allowed: u64,
}

/// The calls Check decided for one token under one rotation, since the last flush.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedCalls {
    pub token_id: TokenId,
    /// The token's `rotated_at` when the calls were checked. The store drops the calls when the
    /// token has been rotated since: rotation clears usage history, also what was still in
    /// flight on some replica.
    pub rotated_at: Option<DateTime<Utc>>,
    /// Sorted by (minute, endpoint), each key once.
    pub minutes: Vec<MinuteCount>,
    /// The newest calls, oldest first, at most [`RECENT_CALLS`].
    pub recent: Vec<CallRecord>,
    pub last_use: LastUse,
}

/// Outcomes reported (ReportUsage) for one token and endpoint on one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportCount {
    pub day: DateTime<Utc>,
    pub endpoint: String,
    pub reports: u64,
    /// Reports whose upstream HTTP status was below 400.
    pub successes: u64,
    /// The sum of the reported durations, in microseconds.
    pub duration_micros: u64,
    /// The latest reported request time: reports all older than the token's last rotation are
    /// dropped with the history the rotation cleared.
    pub latest: DateTime<Utc>,
}

/// The outcomes reported for one token since the last flush.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedCalls {
    pub token_id: TokenId,
    /// Sorted by (day, endpoint), each key once.
    pub days: Vec<ReportCount>,
}

/// The endpoint label a token's calls are counted under once it has used up its distinct
/// endpoints of the day (see [`EndpointBound`]).
pub const OTHER_ENDPOINT: &str = "other";

/// Names one flush. It is drawn when the recorder forms the batch and kept with the batch across
/// retries; the store records it in the flush's own transaction and writes a batch whose id it
/// already holds as a no-op, so a flush whose COMMIT succeeded but whose reply was lost is not
/// counted twice when it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlushId(ulid::Ulid);

impl FlushId {
    /// A fresh id: unique across replicas (a ULID's 80 random bits).
    pub fn new() -> Self {
        Self(ulid::Ulid::new())
    }

    /// Canonical ULID text, as stored.
    pub fn to_text(self) -> String {
        self.0.to_string()
    }
}

impl Default for FlushId {
    /// A fresh id, never a shared constant: two batches built by `Default` are two flushes.
    fn default() -> Self {
        Self::new()
    }
}

/// Most distinct endpoints (besides [`OTHER_ENDPOINT`]) one token accumulates per UTC day in
/// the stored counters; calls to further endpoints are counted as `other`. The store enforces it
/// in the flush's transaction, against what every replica has already written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointBound(usize);

impl EndpointBound {
    pub const DEFAULT: Self = Self(100);

    /// At least one endpoint per day.
    pub fn new(endpoints: usize) -> Option<Self> {
        (endpoints > 0).then_some(Self(endpoints))
    }

    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for EndpointBound {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Everything one flush writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageBatch {
    /// Written once however often the batch is retried.
    pub flush_id: FlushId,
    /// Distinct endpoints per token and day beyond which calls count as `other`.
    pub endpoints_per_day: EndpointBound,
    /// Sorted by (token_id, rotated_at).
    pub checked: Vec<CheckedCalls>,
    /// Sorted by token_id, each token once.
    pub reported: Vec<ReportedCalls>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.checked.is_empty() && self.reported.is_empty()
    }

    /// Checked calls in the batch, for logs and metrics.
    pub fn calls(&self) -> u64 {
        self.checked
            .iter()
            .flat_map(|checked| &checked.minutes)
            .map(|count| count.calls)
            .sum()
    }
}

/// Whose usage to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageScope {
    Token(TokenId),
    /// Every token of an owner, revoked ones included.
    Owner {
        tenant: Tenant,
        owner_id: PrincipalId,
    },
}

/// What ListUsage asks the store.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub scope: UsageScope,
    /// Calls from this instant on count as "the last 24 hours".
    pub recent_since: DateTime<Utc>,
    /// The daily series starts on this day (midnight UTC).
    pub daily_since: DateTime<Utc>,
}

/// Sums over the retained daily rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub calls: u64,
    pub allowed: u64,
    pub reports: u64,
    pub report_successes: u64,
    pub report_micros: u64,
}

/// Calls on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCount {
    pub date: NaiveDate,
    pub calls: u64,
    pub allowed: u64,
}

/// The store's answer to a [`UsageQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageFigures {
    pub totals: UsageTotals,
    pub calls_since_recent: u64,
    /// Most called first, at most [`TOP_ENDPOINTS`].
    pub top_endpoints: Vec<(String, u64)>,
    /// Newest first, at most [`RECENT_CALLS`].
    pub recent_calls: Vec<CallRecord>,
    /// Days that had calls, from `daily_since`, oldest first.
    pub daily: Vec<DailyCount>,
    pub last_use: Option<LastUse>,
}

/// Figures from reported upstream outcomes; only when there were reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportedFigures {
    pub reports: u64,
    pub success_rate: f64,
    pub average_latency: std::time::Duration,
}

impl UsageFigures {
    /// From reported outcomes when there are any, else the share of allowed Checks; 0 without
    /// calls.
    pub fn success_rate(&self) -> f64 {
        match self.reported() {
            Some(reported) => reported.success_rate,
            None => share(self.totals.allowed, self.totals.calls),
        }
    }

    /// None when nothing was reported: the statistics do not invent a latency.
    pub fn reported(&self) -> Option<ReportedFigures> {
        let totals = &self.totals;
        if totals.reports == 0 {
            return None;
        }
        Some(ReportedFigures {
            reports: totals.reports,
            success_rate: share(totals.report_successes, totals.reports),
            average_latency: std::time::Duration::from_micros(
                totals.report_micros / totals.reports,
            ),
        })
    }

    /// One entry per day from `first` to `last` inclusive, oldest first, zero where there were
    /// no calls.
    pub fn daily_series(&self, first: NaiveDate, last: NaiveDate) -> Vec<DailyCount> {
        first
            .iter_days()
            .take_while(|date| *date <= last)
            .map(|date| {
                self.daily
                    .iter()
                    .find(|count| count.date == date)
                    .copied()
                    .unwrap_or(DailyCount {
                        date,
                        calls: 0,
                        allowed: 0,
                    })
            })
            .collect()
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64
}

const ALLOWED: &str = "allowed";

/// `allowed`, or the deny reason's snake_case name: how an outcome is stored.
pub fn outcome_name(outcome: Result<(), DenyReason>) -> &'static str {
    match outcome {
        Ok(()) => ALLOWED,
        Err(reason) => reason.as_str(),
    }
}

/// The outcome an [`outcome_name`] names; None for a name this version does not know.
pub fn outcome_named(name: &str) -> Option<Result<(), DenyReason>> {
    if name == ALLOWED {
        return Some(Ok(()));
    }
    DenyReason::ALL
        .iter()
        .find(|reason| reason.as_str() == name)
        .map(|reason| Err(*reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn buckets_start_at_the_minute_and_at_midnight_utc() {
        let time = at("2026-03-04T05:06:07.891Z");
        assert_eq!(minute_of(time), at("2026-03-04T05:06:00Z"));
        assert_eq!(day_of(time), at("2026-03-04T00:00:00Z"));
    }

    #[test]
    fn every_outcome_survives_its_stored_name() {
        assert_eq!(outcome_named(outcome_name(Ok(()))), Some(Ok(())));
        for reason in DenyReason::ALL {
            assert_eq!(outcome_named(outcome_name(Err(reason))), Some(Err(reason)));
        }
        assert_eq!(outcome_named("no_such_reason"), None);
    }

    #[test]
    fn without_reports_the_success_rate_is_the_share_of_allowed_checks_and_latency_is_unknown() {
        let figures = UsageFigures {
            totals: UsageTotals {
                calls: 4,
                allowed: 3,
                ..UsageTotals::default()
            },
            ..UsageFigures::default()
        };
        assert_eq!(figures.success_rate(), 0.75);
        assert_eq!(figures.reported(), None);
    }

    #[test]
    fn with_reports_the_success_rate_and_latency_come_from_the_reports() {
        let figures = UsageFigures {
            totals: UsageTotals {
                calls: 10,
                allowed: 10,
                reports: 4,
                report_successes: 1,
                report_micros: 400_000,
            },
            ..UsageFigures::default()
        };
        assert_eq!(figures.success_rate(), 0.25);
        let reported = figures.reported().expect("reports");
        assert_eq!(
            reported.average_latency,
            std::time::Duration::from_millis(100)
        );
    }

    #[test]
    fn no_calls_at_all_is_a_success_rate_of_zero() {
        assert_eq!(UsageFigures::default().success_rate(), 0.0);
    }

    #[test]
    fn the_daily_series_has_every_day_with_zeros_for_quiet_days() {
        let first = NaiveDate::from_ymd_opt(2026, 1, 30).expect("date");
        let last = NaiveDate::from_ymd_opt(2026, 2, 2).expect("date");
        let busy = DailyCount {
            date: NaiveDate::from_ymd_opt(2026, 2, 1).expect("date"),
            calls: 5,
            allowed: 4,
        };
        let figures = UsageFigures {
            daily: vec![busy],
            ..UsageFigures::default()
        };
        let series = figures.daily_series(first, last);
        let calls: Vec<u64> = series.iter().map(|day| day.calls).collect();
        assert_eq!(calls, [0, 0, 5, 0]);
        assert_eq!(series[0].date, first);
        assert_eq!(series[3].date, last);
    }
}
