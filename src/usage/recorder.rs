//! The hot path's side of usage. [`Recorder::record_check`] adds a Check to in-memory
//! aggregates right where it runs: each thread has its own shard (a mutex nobody else takes
//! between flushes), holding per token and rotation the calls per minute and endpoint, a ring of
//! the newest calls whose buffers are reused, and so the last use. No await, no I/O, no queue to
//! drain, and after the first calls of a flush interval no allocation. The flusher
//! (`super::Usage`) swaps every shard out at once with [`Recorder::take_batch`].
//!
//! Bounds: a shard holds at most `capacity / shards` counters between flushes; a call that would
//! need a new one beyond that is dropped and counted (`tessera_usage_events_dropped_total`),
//! calls to counters already held are always counted. The ring of recent calls overwrites its
//! oldest detail when full, and keeps one detail per 100 µs and outcome; details not kept
//! are counted at flush (`tessera_usage_details_dropped_total`). A detail's User-Agent is kept
//! bounded and without control characters (`user_agent::push_stored`).

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use crate::domain::decision::{CheckInput, Credential, DenyReason};
use crate::domain::fields::TokenId;
use crate::domain::usage::{
    CallRecord, CheckedCalls, EndpointBound, FlushId, LastUse, MinuteCount, RECENT_CALLS,
    ReportCount, ReportedCalls, UsageBatch,
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

const MINUTE_MICROS: i64 = 60_000_000;
/// Recent-call details closer together than this (with the same outcome) are kept once.
const DETAIL_RESOLUTION_MICROS: i64 = 100;
const DAY_MICROS: i64 = 24 * 60 * MINUTE_MICROS;

/// Shards per core: threads get shards round-robin, so a few more than threads keeps them apart.
const SHARDS_PER_CORE: usize = 4;

/// A fast non-cryptographic hasher (FxHash's multiply-rotate) for the recorder's own maps,
/// whose keys are credential addresses and endpoint labels from trusted callers: SipHash's
/// flood resistance would cost more than the rest of recording, and each shard's size is
/// bounded anyway.
#[derive(Default)]
struct FastHasher(u64);

const FAST_HASH_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FAST_HASH_SEED);
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut last = [0; 8];
        let rest = chunks.remainder();
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last));
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

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

/// One recent call; its strings keep their buffers from one call to the next.
#[derive(Debug, Default)]
struct RecentSlot {
    time: DateTime<Utc>,
    outcome: Option<Result<(), DenyReason>>,
    client_ip: Option<IpAddr>,
    endpoint: String,
    permission: String,
    user_agent: String,
}

/// A token's calls under one cached credential (so one rotation) in one shard.
struct TokenCalls {
    credential: Arc<Credential>,
    /// Per minute (unix micros, newest last: a call looks at the last one or two), endpoint →
    /// counts, keyed by `String` so a lookup borrows the input's text.
    minutes: Vec<(i64, FastMap<String, Counts>)>,
    /// A ring: `next` is where the next call goes, over the oldest once it is full.
    recent: Vec<RecentSlot>,
    next: usize,
    /// Details not kept: overwritten in the ring, or sampled out (below).
    overwritten: u64,
    /// The `DETAIL_RESOLUTION_MICROS` period and outcome of the newest detail kept. Of the calls
    /// of one period with the same outcome only the first detail is kept: at tens of thousands
    /// of calls a second, twenty details 100 µs apart say as much as twenty from the same
    /// microseconds, and copying every call's detail is most of what recording would cost.
    last_detail: Option<(i64, Result<(), DenyReason>)>,
}

#[derive(Default)]
struct Shard {
    /// Keyed by the credential's address: the entry holds the `Arc`, so the address stays its.
    tokens: FastMap<usize, TokenCalls>,
    /// Token → day (unix micros) → endpoint → sums.
    reports: HashMap<TokenId, HashMap<i64, HashMap<String, ReportSums>>>,
    /// Counters (and tokens) held, against the shard's bound.
    entries: usize,
}

/// A shard alone on its cache lines: threads recording into neighbouring shards must not
/// invalidate each other's lines (false sharing).
#[repr(align(128))]
struct Padded(Mutex<Shard>);

pub struct Recorder {
    shards: Box<[Padded]>,
    entries_per_shard: usize,
    /// Calls not aggregated because their shard was full, since start.
    dropped: AtomicU64,
}

thread_local! {
    /// This thread's shard number (modulo the number of shards), assigned on first use.
    static SHARD_NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
}
static NEXT_SHARD_NUMBER: AtomicUsize = AtomicUsize::new(0);

fn shard_number() -> usize {
    SHARD_NUMBER.with(|number| match number.get() {
        Some(assigned) => assigned,
        None => {
            let assigned = NEXT_SHARD_NUMBER.fetch_add(1, Ordering::Relaxed);
            number.set(Some(assigned));
            assigned
        }
    })
}

/// The data behind these locks stays consistent whatever panicked, so a poisoned lock is used
/// as is.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    /// A recorder holding at most about `capacity` counters between flushes (at least one per
    /// shard).
    pub fn new(capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // A power of two, so picking a thread's shard is a mask, not a division.
        let shards = (cores * SHARDS_PER_CORE).next_power_of_two();
        Self {
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(Shard::default())))
                .collect(),
            entries_per_shard: (capacity / shards).max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn shard(&self) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_number() & (self.shards.len() - 1)].0)
    }

    /// Records one Check of an identified token. Never blocks on anything but this thread's
    /// own shard.
    pub fn record_check(
        &self,
        input: &CheckInput,
        outcome: Result<(), DenyReason>,
        credential: &Arc<Credential>,
    ) {
        let mut shard = self.shard();
        let shard = &mut *shard;
        let address = Arc::as_ptr(credential) as usize;
        if !shard.tokens.contains_key(&address) {
            if shard.entries >= self.entries_per_shard {
                self.drop_call();
                return;
            }
            shard.entries += 1;
            let calls = TokenCalls {
                credential: credential.clone(),
                minutes: Vec::with_capacity(1),
                recent: Vec::with_capacity(RECENT_CALLS),
                next: 0,
                overwritten: 0,
                last_detail: None,
            };
            shard.tokens.insert(address, calls);
        }
        let Some(calls) = shard.tokens.get_mut(&address) else {
            return;
        };
        let micros = input.now.timestamp_micros();
        let minute = micros - micros.rem_euclid(MINUTE_MICROS);
        let allowed = u64::from(outcome.is_ok());
        let endpoints = calls.minute(minute);
        if let Some(counts) = endpoints.get_mut(input.endpoint.as_str()) {
            counts.calls += 1;
            counts.allowed += allowed;
        } else {
            if shard.entries >= self.entries_per_shard {
                self.drop_call();
                return;
            }
            shard.entries += 1;
            endpoints.insert(input.endpoint.clone(), Counts { calls: 1, allowed });
        }
        let detail = (micros.div_euclid(DETAIL_RESOLUTION_MICROS), outcome);
        if calls.last_detail == Some(detail) {
            calls.overwritten += 1;
            return;
        }
        calls.last_detail = Some(detail);
        calls.remember(input, outcome);
    }

    fn drop_call(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("tessera_usage_events_dropped_total").increment(1);
    }

    /// Records a reported outcome. Never blocks on anything but this thread's own shard.
    pub fn record_report(&self, report: Report) {
        let mut shard = self.shard();
        let shard = &mut *shard;
        let micros = report.time.timestamp_micros();
        let day = micros - micros.rem_euclid(DAY_MICROS);
        let known = shard
            .reports
            .get(&report.token_id)
            .and_then(|days| days.get(&day))
            .is_some_and(|endpoints| endpoints.contains_key(&report.endpoint));
        if !known {
            if shard.entries >= self.entries_per_shard {
                self.drop_call();
                return;
            }
            shard.entries += 1;
        }
        let sums = shard
            .reports
            .entry(report.token_id.clone())
            .or_default()
            .entry(day)
            .or_default()
            .entry(report.endpoint.clone())
            .or_default();
        sums.reports += 1;
        sums.successes += u64::from(report.is_success());
        let micros = u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX);
        sums.duration_micros = sums.duration_micros.saturating_add(micros);
        sums.latest = sums.latest.max(Some(report.time));
    }

    /// Calls dropped because their shard was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Everything recorded since the last call, sorted as the store wants it; every shard is
    /// swapped for an empty one, holding its lock only for the swap.
    pub fn take_batch(&self) -> UsageBatch {
        let taken: Vec<Shard> = self
            .shards
            .iter()
            .map(|shard| std::mem::take(&mut *lock(&shard.0)))
            .collect();
        let mut checked: HashMap<(TokenId, Option<DateTime<Utc>>), Merged> = HashMap::new();
        let mut reported: HashMap<TokenId, HashMap<(i64, String), ReportSums>> = HashMap::new();
        let mut overwritten = 0;
        for shard in taken {
            for calls in shard.tokens.into_values() {
                overwritten += calls.overwritten;
                let key = (
                    calls.credential.token_id.clone(),
                    calls.credential.rotated_at,
                );
                checked.entry(key).or_default().absorb(calls);
            }
            for (token_id, days) in shard.reports {
                let sums_by_key = reported.entry(token_id).or_default();
                for (day, endpoints) in days {
                    for (endpoint, sums) in endpoints {
                        let merged = sums_by_key.entry((day, endpoint)).or_default();
                        merged.reports += sums.reports;
                        merged.successes += sums.successes;
                        merged.duration_micros =
                            merged.duration_micros.saturating_add(sums.duration_micros);
                        merged.latest = merged.latest.max(sums.latest);
                    }
                }
            }
        }
        if overwritten > 0 {
            metrics::counter!("tessera_usage_details_dropped_total").increment(overwritten);
        }
        let mut batch = UsageBatch {
            // Drawn here, once: the batch keeps it through every retry of its flush.
            flush_id: FlushId::new(),
            endpoints_per_day: EndpointBound::DEFAULT,
            checked: checked
                .into_iter()
                .filter_map(|((token_id, rotated_at), merged)| {
                    merged.into_checked(token_id, rotated_at)
                })
                .collect(),
            reported: reported
                .into_iter()
                .map(|(token_id, sums)| reported_calls(token_id, sums))
                .collect(),
        };
        batch
            .checked
            .sort_by(|a, b| (&a.token_id, a.rotated_at).cmp(&(&b.token_id, b.rotated_at)));
        batch.reported.sort_by(|a, b| a.token_id.cmp(&b.token_id));
        batch
    }
}

impl TokenCalls {
    /// The counts of `minute`, found from the newest end (calls arrive nearly in time order).
    fn minute(&mut self, minute: i64) -> &mut FastMap<String, Counts> {
        let position = self
            .minutes
            .iter()
            .rposition(|(held, _)| *held == minute)
            .unwrap_or_else(|| {
                self.minutes.push((minute, FastMap::default()));
                self.minutes.len() - 1
            });
        &mut self.minutes[position].1
    }

    /// Puts the call in the ring, reusing the buffers of the call it replaces.
    fn remember(&mut self, input: &CheckInput, outcome: Result<(), DenyReason>) {
        if self.recent.len() < RECENT_CALLS {
            self.recent.push(RecentSlot::default());
        } else {
            self.overwritten += 1;
        }
        let index = self.next;
        self.next = (self.next + 1) % RECENT_CALLS;
        let Some(slot) = self.recent.get_mut(index) else {
            return;
        };
        slot.time = input.now;
        slot.outcome = Some(outcome);
        slot.client_ip = input.client_ip;
        slot.endpoint.clear();
        slot.endpoint.push_str(&input.endpoint);
        match input.permissions.as_single() {
            // The slot of 20 calls ago usually held the same permission: no copy then.
            Some(permission) if slot.permission == permission => {}
            Some(permission) => {
                slot.permission.clear();
                slot.permission.push_str(permission);
            }
            None => {
                slot.permission.clear();
                // A String's fmt::Write cannot fail.
                let _ = write!(slot.permission, "{}", input.permissions);
            }
        }
        slot.user_agent.clear();
        super::user_agent::push_stored(&mut slot.user_agent, &input.user_agent);
    }
}

/// One token's calls under one rotation, gathered from every shard.
#[derive(Default)]
struct Merged {
    counts: HashMap<(i64, String), Counts>,
    recent: Vec<RecentSlot>,
}

impl Merged {
    fn absorb(&mut self, calls: TokenCalls) {
        for (minute, endpoints) in calls.minutes {
            for (endpoint, counts) in endpoints {
                let merged = self.counts.entry((minute, endpoint)).or_default();
                merged.calls += counts.calls;
                merged.allowed += counts.allowed;
            }
        }
        self.recent.extend(calls.recent);
    }

    fn into_checked(
        mut self,
        token_id: TokenId,
        rotated_at: Option<DateTime<Utc>>,
    ) -> Option<CheckedCalls> {
        // Newest last; only the newest RECENT_CALLS are kept.
        self.recent.sort_by_key(|slot| slot.time);
        let keep_from = self.recent.len().saturating_sub(RECENT_CALLS);
        let recent: Vec<CallRecord> = self.recent[keep_from..]
            .iter()
            .filter_map(|slot| {
                Some(CallRecord {
                    token_id: token_id.clone(),
                    time: slot.time,
                    endpoint: slot.endpoint.clone(),
                    permission: slot.permission.clone(),
                    outcome: slot.outcome?,
                    client_ip: slot.client_ip,
                    user_agent: slot.user_agent.clone(),
                })
            })
            .collect();
        let newest = recent.last()?;
        let last_use = LastUse {
            time: newest.time,
            client_ip: newest.client_ip,
            user_agent: newest.user_agent.clone(),
        };
        let mut minutes: Vec<MinuteCount> = self
            .counts
            .into_iter()
            .map(|((minute, endpoint), counts)| MinuteCount {
                minute: DateTime::from_timestamp_micros(minute).unwrap_or_default(),
                endpoint,
                calls: counts.calls,
                allowed: counts.allowed,
            })
            .collect();
        minutes.sort_by(|a, b| (a.minute, &a.endpoint).cmp(&(b.minute, &b.endpoint)));
        Some(CheckedCalls {
            token_id,
            rotated_at,
            minutes,
            recent,
            last_use,
        })
    }
}

fn reported_calls(token_id: TokenId, sums: HashMap<(i64, String), ReportSums>) -> ReportedCalls {
    let mut days: Vec<ReportCount> = sums
        .into_iter()
        .map(|((day, endpoint), sums)| {
            let day = DateTime::from_timestamp_micros(day).unwrap_or_default();
            ReportCount {
                day,
                endpoint,
                reports: sums.reports,
                successes: sums.successes,
                duration_micros: sums.duration_micros,
                latest: sums.latest.unwrap_or(day),
            }
        })
        .collect();
    days.sort_by(|a, b| (a.day, &a.endpoint).cmp(&(b.day, &b.endpoint)));
    ReportedCalls { token_id, days }
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

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::fields::Tenant;
    use crate::domain::fixtures;
    use crate::domain::permission::{Permission, PermissionQuery};

    fn credential(rotated_at: Option<DateTime<Utc>>) -> Arc<Credential> {
        Arc::new(Credential {
            token_id: TokenId::parse("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV").expect("id"),
            tenant: Tenant::default(),
            rotated_at,
            ..fixtures::credential()
        })
    }

    fn input(endpoint: &str, now: DateTime<Utc>) -> CheckInput {
        CheckInput {
            tenant: Tenant::default(),
            permissions: PermissionQuery::one(
                Permission::parse("orders:read").expect("permission"),
            ),
            client_ip: Some("192.0.2.7".parse().expect("ip")),
            signature: None,
            now,
            endpoint: endpoint.to_owned(),
            user_agent: "curl/8.5.0".to_owned(),
            cost: 1,
        }
    }

    fn drained(recorder: &Recorder) -> UsageBatch {
        recorder.take_batch()
    }

    fn roomy() -> Recorder {
        Recorder::new(1_000_000)
    }

    #[test]
    fn checks_are_counted_per_minute_and_endpoint_with_the_allowed_share() {
        let recorder = roomy();
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
        let recorder = roomy();
        recorder.record_check(&input("GET /a", Utc::now()), Ok(()), &credential(None));
        let batch = drained(&recorder);
        let call = &batch.checked[0].recent[0];
        assert_eq!(call.endpoint, "GET /a");
        assert_eq!(call.permission, "orders:read");
        assert_eq!(call.user_agent, "curl/8.5.0");
        assert_eq!(batch.checked[0].last_use.user_agent, "curl/8.5.0");
    }

    #[test]
    fn a_recent_calls_user_agent_is_kept_bounded_and_without_control_characters() {
        let recorder = roomy();
        let mut long = input("GET /a", Utc::now());
        long.user_agent = format!("Mozilla/5.0\n{}", "x".repeat(1000));
        recorder.record_check(&long, Ok(()), &credential(None));
        let batch = drained(&recorder);
        let kept = &batch.checked[0].recent[0].user_agent;
        assert_eq!(kept.len(), super::super::user_agent::MAX_STORED_LEN);
        assert!(kept.starts_with("Mozilla/5.0 xxx"), "{kept}");
        assert_eq!(&batch.checked[0].last_use.user_agent, kept);
    }

    #[test]
    fn only_the_newest_calls_are_kept_as_recent() {
        let recorder = roomy();
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
        let recorder = roomy();
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
    fn a_full_shard_drops_calls_needing_a_new_counter_and_counts_them() {
        let shards = Recorder::new(1).shards.len();
        // Room for the token and one endpoint counter per shard.
        let recorder = Recorder::new(2 * shards);
        let token = credential(None);
        let now = Utc::now();
        for endpoint in ["GET /1", "GET /1", "GET /2"] {
            recorder.record_check(&input(endpoint, now), Ok(()), &token);
        }
        assert_eq!(recorder.dropped(), 1);
        let batch = drained(&recorder);
        let counts: Vec<(&str, u64)> = batch.checked[0]
            .minutes
            .iter()
            .map(|count| (count.endpoint.as_str(), count.calls))
            .collect();
        assert_eq!(counts, [("GET /1", 2)]);
    }

    #[test]
    fn taking_a_batch_empties_the_recorder() {
        let recorder = roomy();
        recorder.record_check(&input("GET /a", Utc::now()), Ok(()), &credential(None));
        assert_eq!(drained(&recorder).calls(), 1);
        assert!(drained(&recorder).is_empty());
    }

    #[test]
    fn calls_from_many_threads_are_all_counted() {
        let recorder = Arc::new(roomy());
        let token = credential(None);
        let now = Utc::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let recorder = recorder.clone();
                let token = token.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        recorder.record_check(&input("GET /a", now), Ok(()), &token);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        let batch = drained(&recorder);
        assert_eq!(batch.checked.len(), 1, "one token, merged over shards");
        assert_eq!(batch.calls(), 4000);
        assert!(!batch.checked[0].recent.is_empty());
    }

    #[test]
    fn of_calls_at_the_same_moment_with_one_outcome_one_detail_is_kept_and_all_are_counted() {
        let recorder = roomy();
        let token = credential(None);
        let now = Utc::now();
        for _ in 0..5 {
            recorder.record_check(&input("GET /a", now), Ok(()), &token);
        }
        recorder.record_check(&input("GET /a", now), Err(DenyReason::RateLimited), &token);
        recorder.record_check(
            &input("GET /a", now + Duration::milliseconds(1)),
            Ok(()),
            &token,
        );
        let batch = drained(&recorder);
        assert_eq!(batch.calls(), 7);
        let outcomes: Vec<Result<(), DenyReason>> = batch.checked[0]
            .recent
            .iter()
            .map(|call| call.outcome)
            .collect();
        assert_eq!(outcomes, [Ok(()), Err(DenyReason::RateLimited), Ok(())]);
    }

    #[test]
    fn reports_sum_per_day_and_endpoint() {
        let recorder = roomy();
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
        let recorder = Arc::new(roomy());
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
