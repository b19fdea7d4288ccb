//! The hot path's side of usage. [`Recorder::record_check`] copies what a Check decided into one
//! event and puts it in a bounded lock-free queue: no lock, no await, no I/O, at most one
//! allocation. When the queue is full the oldest event is dropped and counted; Check never
//! waits. A drain task folds the queued events into [`Pending`] aggregates (per token, rotation,
//! minute and endpoint, plus a ring of the newest calls) every few milliseconds; the flusher
//! (`super::Usage`) takes them as one [`UsageBatch`].

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use crossbeam_queue::ArrayQueue;

use crate::domain::decision::{CheckInput, Credential, DenyReason};
use crate::domain::fields::TokenId;
use crate::domain::usage::{
    self, CallRecord, CheckedCalls, LastUse, MinuteCount, RECENT_CALLS, ReportCount, ReportedCalls,
    UsageBatch,
};

/// The real outcome of a request Check let through, as ReportUsage gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub token_id: TokenId,
    pub endpoint: String,
    pub http_status: u16,
    pub duration: std::time::Duration,
    pub time: DateTime<Utc>,
}

impl Report {
    fn is_success(&self) -> bool {
        self.http_status < 400
    }
}

/// One decided Check of an identified token.
pub(super) struct CheckEvent {
    /// Shared with the cache: gives the token id and rotation without a copy.
    credential: Arc<Credential>,
    time: DateTime<Utc>,
    outcome: Result<(), DenyReason>,
    client_ip: Option<IpAddr>,
    /// The endpoint, the permission and the user agent, back to back in one allocation (none
    /// when all three are empty), split at `endpoint_end` and `permission_end`.
    text: String,
    endpoint_end: usize,
    permission_end: usize,
}

impl CheckEvent {
    fn endpoint(&self) -> &str {
        &self.text[..self.endpoint_end]
    }

    fn permission(&self) -> &str {
        &self.text[self.endpoint_end..self.permission_end]
    }

    fn user_agent(&self) -> &str {
        &self.text[self.permission_end..]
    }

    fn to_call(&self) -> CallRecord {
        CallRecord {
            token_id: self.credential.token_id.clone(),
            time: self.time,
            endpoint: self.endpoint().to_owned(),
            permission: self.permission().to_owned(),
            outcome: self.outcome,
            client_ip: self.client_ip,
            user_agent: self.user_agent().to_owned(),
        }
    }
}

pub(super) enum Event {
    Check(CheckEvent),
    Report(Report),
}

/// A permission's text is rarely longer; the buffer grows if it is.
const PERMISSION_CAPACITY: usize = 48;

pub struct Recorder {
    queue: ArrayQueue<Event>,
    /// Events pushed out of the full queue since start.
    dropped: AtomicU64,
}

impl Recorder {
    /// A recorder buffering at most `capacity` events between drains (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records one Check of an identified token. Never blocks.
    pub fn record_check(
        &self,
        input: &CheckInput,
        outcome: Result<(), DenyReason>,
        credential: &Arc<Credential>,
    ) {
        let capacity = input.endpoint.len()
            + input.user_agent.len()
            + input.permission.as_ref().map_or(0, |_| PERMISSION_CAPACITY);
        let mut text = String::with_capacity(capacity);
        text.push_str(&input.endpoint);
        let endpoint_end = text.len();
        if let Some(permission) = &input.permission {
            // Writing to a String cannot fail.
            let _ = write!(text, "{permission}");
        }
        let permission_end = text.len();
        text.push_str(&input.user_agent);
        self.push(Event::Check(CheckEvent {
            credential: credential.clone(),
            time: input.now,
            outcome,
            client_ip: input.client_ip,
            text,
            endpoint_end,
            permission_end,
        }));
    }

    /// Records a reported outcome. Never blocks.
    pub fn record_report(&self, report: Report) {
        self.push(Event::Report(report));
    }

    fn push(&self, event: Event) {
        if self.queue.force_push(event).is_some() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("tessera_usage_events_dropped_total").increment(1);
        }
    }

    /// Events dropped because the buffer was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Moves the queued events into `pending`; returns how many. Stops at what was queued when
    /// it started, so a busy hot path cannot keep it going.
    pub(super) fn drain_into(&self, pending: &mut Pending) -> usize {
        let queued = self.queue.len();
        let mut drained = 0;
        while drained < queued {
            let Some(event) = self.queue.pop() else {
                break;
            };
            pending.add(event);
            drained += 1;
        }
        drained
    }
}

/// Whether a Check's usage is recorded: the authorizer holds one of these, which does nothing
/// when usage recording is off.
#[derive(Clone, Default)]
pub struct UsageHook(Option<Arc<Recorder>>);

impl UsageHook {
    pub fn new(recorder: Arc<Recorder>) -> Self {
        Self(Some(recorder))
    }

    /// Records a Check whose token was identified; Checks of no known token have no usage.
    pub fn record(
        &self,
        input: &CheckInput,
        outcome: Result<(), DenyReason>,
        credential: Option<&Arc<Credential>>,
    ) {
        if let (Some(recorder), Some(credential)) = (&self.0, credential) {
            recorder.record_check(input, outcome, credential);
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    calls: u64,
    allowed: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct ReportSums {
    reports: u64,
    successes: u64,
    duration_micros: u64,
    latest: Option<DateTime<Utc>>,
}

/// A token's checked calls under one rotation.
struct TokenCalls {
    rotated_at: Option<DateTime<Utc>>,
    /// Minute (unix micros) → endpoint → counts; nested so a lookup borrows the event's text.
    minutes: HashMap<i64, HashMap<String, Counts>>,
    /// The newest calls, oldest first.
    recent: VecDeque<CheckEvent>,
}

/// Aggregates since the last flush.
#[derive(Default)]
pub(super) struct Pending {
    checked: HashMap<TokenId, Vec<TokenCalls>>,
    /// Token → day (unix micros) → endpoint → sums.
    reported: HashMap<TokenId, HashMap<i64, HashMap<String, ReportSums>>>,
}

impl Pending {
    fn add(&mut self, event: Event) {
        match event {
            Event::Check(check) => self.add_check(check),
            Event::Report(report) => self.add_report(report),
        }
    }

    fn add_check(&mut self, event: CheckEvent) {
        let credential = &event.credential;
        if !self.checked.contains_key(&credential.token_id) {
            self.checked
                .insert(credential.token_id.clone(), Vec::with_capacity(1));
        }
        let Some(rotations) = self.checked.get_mut(&credential.token_id) else {
            return;
        };
        let index = match rotations
            .iter()
            .position(|calls| calls.rotated_at == credential.rotated_at)
        {
            Some(index) => index,
            None => {
                rotations.push(TokenCalls {
                    rotated_at: credential.rotated_at,
                    minutes: HashMap::new(),
                    recent: VecDeque::with_capacity(RECENT_CALLS),
                });
                rotations.len() - 1
            }
        };
        let calls = &mut rotations[index];
        let minute = usage::minute_of(event.time).timestamp_micros();
        let endpoints = calls.minutes.entry(minute).or_default();
        let allowed = u64::from(event.outcome.is_ok());
        if let Some(counts) = endpoints.get_mut(event.endpoint()) {
            counts.calls += 1;
            counts.allowed += allowed;
        } else {
            let counts = Counts { calls: 1, allowed };
            endpoints.insert(event.endpoint().to_owned(), counts);
        }
        if calls.recent.len() == RECENT_CALLS {
            calls.recent.pop_front();
        }
        calls.recent.push_back(event);
    }

    fn add_report(&mut self, report: Report) {
        let day = usage::day_of(report.time).timestamp_micros();
        let endpoints = self
            .reported
            .entry(report.token_id.clone())
            .or_default()
            .entry(day)
            .or_default();
        if !endpoints.contains_key(&report.endpoint) {
            endpoints.insert(report.endpoint.clone(), ReportSums::default());
        }
        let Some(sums) = endpoints.get_mut(&report.endpoint) else {
            return;
        };
        sums.reports += 1;
        sums.successes += u64::from(report.is_success());
        let micros = u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX);
        sums.duration_micros = sums.duration_micros.saturating_add(micros);
        sums.latest = sums.latest.max(Some(report.time));
    }

    /// Everything aggregated so far, sorted as the store wants it; leaves `self` empty.
    pub(super) fn take_batch(&mut self) -> UsageBatch {
        let checked = std::mem::take(&mut self.checked);
        let reported = std::mem::take(&mut self.reported);
        let mut batch = UsageBatch {
            checked: checked
                .into_iter()
                .flat_map(|(token_id, rotations)| {
                    rotations
                        .into_iter()
                        .filter_map(move |calls| checked_calls(token_id.clone(), calls))
                })
                .collect(),
            reported: reported
                .into_iter()
                .map(|(token_id, days)| reported_calls(token_id, days))
                .collect(),
        };
        batch
            .checked
            .sort_by(|a, b| (&a.token_id, a.rotated_at).cmp(&(&b.token_id, b.rotated_at)));
        batch.reported.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        batch
    }
}

fn checked_calls(token_id: TokenId, calls: TokenCalls) -> Option<CheckedCalls> {
    let newest = calls.recent.iter().max_by_key(|event| event.time)?;
    let last_use = LastUse {
        time: newest.time,
        client_ip: newest.client_ip,
        user_agent: newest.user_agent().to_owned(),
    };
    let mut minutes: Vec<MinuteCount> = calls
        .minutes
        .into_iter()
        .flat_map(|(minute, endpoints)| {
            let minute = DateTime::from_timestamp_micros(minute).unwrap_or_default();
            endpoints
                .into_iter()
                .map(move |(endpoint, counts)| MinuteCount {
                    minute,
                    endpoint,
                    calls: counts.calls,
                    allowed: counts.allowed,
                })
        })
        .collect();
    minutes.sort_by(|a, b| (a.minute, &a.endpoint).cmp(&(b.minute, &b.endpoint)));
    Some(CheckedCalls {
        token_id,
        rotated_at: calls.rotated_at,
        minutes,
        recent: calls.recent.iter().map(CheckEvent::to_call).collect(),
        last_use,
    })
}

fn reported_calls(
    token_id: TokenId,
    days: HashMap<i64, HashMap<String, ReportSums>>,
) -> ReportedCalls {
    let mut counts: Vec<ReportCount> = days
        .into_iter()
        .flat_map(|(day, endpoints)| {
            let day = DateTime::from_timestamp_micros(day).unwrap_or_default();
            endpoints
                .into_iter()
                .map(move |(endpoint, sums)| ReportCount {
                    day,
                    endpoint,
                    reports: sums.reports,
                    successes: sums.successes,
                    duration_micros: sums.duration_micros,
                    latest: sums.latest.unwrap_or(day),
                })
        })
        .collect();
    counts.sort_by(|a, b| (a.day, &a.endpoint).cmp(&(b.day, &b.endpoint)));
    ReportedCalls {
        token_id,
        days: counts,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::fields::{PrincipalId, Tenant};
    use crate::domain::model::SecretMatch;
    use crate::domain::network::IpAllowlist;
    use crate::domain::permission::Permission;

    fn credential(rotated_at: Option<DateTime<Utc>>) -> Arc<Credential> {
        Arc::new(Credential {
            token_id: TokenId::parse("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("id"),
            tenant: Tenant::default(),
            owner_id: PrincipalId::parse("alice").expect("id"),
            expires_at: Utc::now() + Duration::days(1),
            rotated_at,
            revoked: false,
            secret_match: SecretMatch::Current,
            allowed_ips: IpAllowlist::default(),
            require_signature: false,
            verifier: None,
            roles: Vec::new(),
            owner_enabled: true,
            effective: Vec::new(),
            rate_limit_per_minute: 0,
            owner_rate_limit_per_minute: None,
        })
    }

    fn input(endpoint: &str, now: DateTime<Utc>) -> CheckInput {
        CheckInput {
            tenant: Tenant::default(),
            permission: Some(Permission::parse("orders:read").expect("permission")),
            client_ip: Some("192.0.2.7".parse().expect("ip")),
            signature: None,
            now,
            endpoint: endpoint.to_owned(),
            user_agent: "curl/8.5.0".to_owned(),
        }
    }

    fn drained(recorder: &Recorder) -> UsageBatch {
        let mut pending = Pending::default();
        recorder.drain_into(&mut pending);
        pending.take_batch()
    }

    #[test]
    fn checks_are_counted_per_minute_and_endpoint_with_the_allowed_share() {
        let recorder = Recorder::new(16);
        let token = credential(None);
        let now = Utc::now();
        recorder.record_check(&input("GET /a", now), Ok(()), &token);
        recorder.record_check(&input("GET /a", now), Err(DenyReason::RateLimited), &token);
        recorder.record_check(&input("GET /b", now), Ok(()), &token);
        let batch = drained(&recorder);
        assert_eq!(batch.checked.len(), 1);
        let checked = &batch.checked[0];
        let counts: Vec<(&str, u64, u64)> = checked
            .minutes
            .iter()
            .map(|count| (count.endpoint.as_str(), count.calls, count.allowed))
            .collect();
        assert_eq!(counts, [("GET /a", 2, 1), ("GET /b", 1, 1)]);
        assert_eq!(batch.calls(), 3);
    }

    #[test]
    fn a_recent_call_keeps_endpoint_permission_and_user_agent_apart() {
        let recorder = Recorder::new(16);
        recorder.record_check(&input("GET /a", Utc::now()), Ok(()), &credential(None));
        let batch = drained(&recorder);
        let call = &batch.checked[0].recent[0];
        assert_eq!(call.endpoint, "GET /a");
        assert_eq!(call.permission, "orders:read");
        assert_eq!(call.user_agent, "curl/8.5.0");
        assert_eq!(batch.checked[0].last_use.user_agent, "curl/8.5.0");
    }

    #[test]
    fn only_the_newest_calls_are_kept_as_recent() {
        let recorder = Recorder::new(100);
        let token = credential(None);
        let start = Utc::now();
        for second in 0..30 {
            let endpoint = format!("GET /{second}");
            recorder.record_check(
                &input(&endpoint, start + Duration::seconds(second)),
                Ok(()),
                &token,
            );
        }
        let batch = drained(&recorder);
        let recent = &batch.checked[0].recent;
        assert_eq!(recent.len(), RECENT_CALLS);
        assert_eq!(
            recent.last().map(|call| call.endpoint.as_str()),
            Some("GET /29")
        );
        assert_eq!(batch.calls(), 30);
    }

    #[test]
    fn calls_under_two_rotations_stay_apart() {
        let recorder = Recorder::new(16);
        let now = Utc::now();
        recorder.record_check(&input("GET /a", now), Ok(()), &credential(None));
        recorder.record_check(&input("GET /a", now), Ok(()), &credential(Some(now)));
        let batch = drained(&recorder);
        let rotations: Vec<Option<DateTime<Utc>>> = batch
            .checked
            .iter()
            .map(|checked| checked.rotated_at)
            .collect();
        assert_eq!(rotations, [None, Some(now)]);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_event_and_counts_it() {
        let recorder = Recorder::new(2);
        let token = credential(None);
        let now = Utc::now();
        for endpoint in ["GET /1", "GET /2", "GET /3"] {
            recorder.record_check(&input(endpoint, now), Ok(()), &token);
        }
        assert_eq!(recorder.dropped(), 1);
        let batch = drained(&recorder);
        let endpoints: Vec<&str> = batch.checked[0]
            .recent
            .iter()
            .map(|call| call.endpoint.as_str())
            .collect();
        assert_eq!(endpoints, ["GET /2", "GET /3"]);
    }

    #[test]
    fn reports_sum_per_day_and_endpoint() {
        let recorder = Recorder::new(16);
        let token_id = credential(None).token_id.clone();
        let now = Utc::now();
        for (status, millis) in [(200, 10), (503, 30)] {
            recorder.record_report(Report {
                token_id: token_id.clone(),
                endpoint: "GET /a".to_owned(),
                http_status: status,
                duration: std::time::Duration::from_millis(millis),
                time: now,
            });
        }
        let batch = drained(&recorder);
        let count = &batch.reported[0].days[0];
        assert_eq!((count.reports, count.successes), (2, 1));
        assert_eq!(count.duration_micros, 40_000);
        assert_eq!(count.latest, now);
    }

    #[test]
    fn a_hook_without_a_recorder_records_nothing_and_a_check_of_no_token_is_not_usage() {
        let recorder = Arc::new(Recorder::new(4));
        UsageHook::default().record(
            &input("GET /a", Utc::now()),
            Ok(()),
            Some(&credential(None)),
        );
        UsageHook::new(recorder.clone()).record(
            &input("GET /a", Utc::now()),
            Err(DenyReason::TokenUnknown),
            None,
        );
        assert!(drained(&recorder).is_empty());
    }
}
