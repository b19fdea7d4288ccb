//! The two load shapes: a closed loop (each worker sends its next call when the previous one
//! answers) and an open loop (calls leave on a fixed schedule whatever the answers, and latency
//! counts from the scheduled time, so a stalled server cannot hide its stall).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::probe::{Probe, Problem};

/// Longest latency the histograms hold exactly (larger values are clamped to it).
const HIGHEST_TRACKABLE_MICROS: u64 = 60_000_000;
/// How long a run waits, after its end, for calls still in flight; after that they count as
/// failed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// An open-loop call without an answer after this long counts as failed.
pub const OPEN_LOOP_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Open-loop calls in flight beyond which the schedule skips sends (counted as failed) instead
/// of piling up tasks without bound.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 20_000;

/// How long a run warms up, then measures.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub duration: Duration,
}

/// Everything measured in one run.
#[derive(Debug)]
pub struct Tally {
    /// Latency of every answered call, in microseconds.
    pub latencies: Histogram<u64>,
    /// Calls answered as the scenario expects.
    pub good: u64,
    /// Calls answered, but not as expected (e.g. a denied Check).
    pub unexpected: u64,
    /// Calls without an answer: gRPC errors, transport failures, timeouts, skipped sends.
    pub failed: u64,
    /// The first problem seen, to show what went wrong.
    pub first_problem: Option<String>,
    /// Open loop only: how late each call started, in microseconds after its scheduled time
    /// (the generator's own delay: the schedule thread's wake-up and the hand-over to a task).
    /// It is part of the call's latency.
    pub send_lags: Option<Histogram<u64>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latencies: new_histogram(),
            good: 0,
            unexpected: 0,
            failed: 0,
            first_problem: None,
            send_lags: None,
        }
    }

    fn with_send_lags() -> Self {
        Self {
            send_lags: Some(new_histogram()),
            ..Self::new()
        }
    }

    /// Answered calls per second over `measured`.
    pub fn throughput(&self, measured: Duration) -> f64 {
        (self.good + self.unexpected) as f64 / measured.as_secs_f64()
    }

    fn record(&mut self, outcome: Result<(), Problem>, latency: Duration) {
        let micros = micros(latency);
        match outcome {
            Ok(()) => {
                self.good += 1;
                self.latencies.saturating_record(micros);
            }
            Err(Problem::Unexpected(description)) => {
                self.unexpected += 1;
                self.latencies.saturating_record(micros);
                self.first_problem.get_or_insert(description);
            }
            Err(Problem::Failed(description)) => self.fail(1, description),
        }
    }

    fn record_send_lag(&mut self, lag: Duration) {
        if let Some(send_lags) = &mut self.send_lags {
            send_lags.saturating_record(micros(lag));
        }
    }

    fn fail(&mut self, count: u64, description: String) {
        self.failed += count;
        self.first_problem.get_or_insert(description);
    }

    fn merge(&mut self, other: Tally) {
        self.latencies
            .add(&other.latencies)
            .expect("histograms share their bounds");
        self.good += other.good;
        self.unexpected += other.unexpected;
        self.failed += other.failed;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_MICROS, 3)
        .expect("constant histogram bounds are valid")
}

pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `concurrency` workers, worker `i` on `channels[i % len]`, each sending its next call as soon
/// as the previous one answers. Calls that start during the warm-up are not recorded.
pub async fn closed_loop(
    probe: &Probe,
    channels: &[Channel],
    concurrency: usize,
    timing: Timing,
) -> Tally {
    debug_assert!(!channels.is_empty() && concurrency > 0);
    let measure_from = Instant::now() + timing.warmup;
    let end = measure_from + timing.duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let mut client = Grpc::new(channels[worker % channels.len()].clone());
        let probe = probe.clone();
        workers.spawn(async move {
            let mut tally = Tally::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let outcome = probe.call(&mut client).await;
                if sent >= measure_from {
                    tally.record(outcome, sent.elapsed());
                }
            }
            tally
        });
    }

    let mut total = Tally::new();
    let drain_deadline = tokio::time::Instant::from_std(end + DRAIN_TIMEOUT);
    while let Ok(Some(joined)) = tokio::time::timeout_at(drain_deadline, workers.join_next()).await
    {
        match joined {
            Ok(tally) => total.merge(tally),
            Err(error) => total.fail(1, format!("worker failed: {error}")),
        }
    }
    let stuck = workers.len();
    if stuck > 0 {
        total.fail(
            stuck as u64,
            format!("{stuck} workers still waiting for an answer after the run"),
        );
    }
    total
}

/// Calls sent at `rate` per second on a fixed schedule, round-robin over `channels`, whatever the
/// answers. Latency runs from each call's scheduled time.
pub async fn open_loop(probe: &Probe, channels: &[Channel], rate: u32, timing: Timing) -> Tally {
    debug_assert!(!channels.is_empty() && rate > 0);
    let tally = Arc::new(Mutex::new(Tally::with_send_lags()));
    let clients: Vec<Grpc<Channel>> = channels.iter().cloned().map(Grpc::new).collect();
    let probe = Arc::new(probe.clone());
    let recorder = tally.clone();
    let outcome = paced(rate, timing, move |call| {
        let mut client = clients[call.index % clients.len()].clone();
        let probe = probe.clone();
        let tally = recorder.clone();
        async move {
            let send_lag = call.due.elapsed();
            let outcome = tokio::time::timeout(OPEN_LOOP_CALL_TIMEOUT, probe.call(&mut client))
                .await
                .unwrap_or_else(|_| Err(Problem::Failed("no answer within 5s".to_owned())));
            if call.measured {
                let latency = call.due.elapsed();
                let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
                tally.record(outcome, latency);
                tally.record_send_lag(send_lag);
            }
        }
    })
    .await;
    let mut tally = std::mem::replace(
        &mut *tally.lock().unwrap_or_else(PoisonError::into_inner),
        Tally::with_send_lags(),
    );
    for (count, description) in outcome.problems() {
        tally.fail(count, description);
    }
    tally
}

/// One call of an open loop, as handed to its launcher.
#[derive(Debug, Clone, Copy)]
pub struct ScheduledCall {
    /// Position in the schedule, from 0.
    pub index: usize,
    /// When the call was due: latency counts from here.
    pub due: Instant,
    /// False during the warm-up.
    pub measured: bool,
}

/// What an open loop could not do, beside the calls themselves.
#[derive(Debug, Default)]
pub struct PacedOutcome {
    /// Measured sends skipped because too many calls were in flight.
    pub skipped: u64,
    /// Calls still without an answer after the drain timeout.
    pub stuck: u64,
    /// The schedule thread panicked.
    pub schedule_failed: Option<String>,
}

impl PacedOutcome {
    /// Each problem with its count, described for a report.
    pub fn problems(&self) -> Vec<(u64, String)> {
        let mut problems = Vec::new();
        if let Some(error) = &self.schedule_failed {
            problems.push((1, format!("the schedule thread failed: {error}")));
        }
        if self.skipped > 0 {
            problems.push((
                self.skipped,
                format!(
                    "{} sends skipped: {OPEN_LOOP_MAX_IN_FLIGHT} calls were in flight",
                    self.skipped
                ),
            ));
        }
        if self.stuck > 0 {
            problems.push((
                self.stuck,
                format!("{} calls still without an answer after the run", self.stuck),
            ));
        }
        problems
    }
}

/// Runs `launch(call)` as its own task for every call due at `rate` per second over the warm-up
/// and the duration, then waits (at most [`DRAIN_TIMEOUT`]) for the calls still in flight. The
/// schedule is kept by a thread that sleeps with the OS timer (tokio's timer wheel has
/// millisecond ticks, far coarser than the gaps between calls). Each launched future must end by
/// itself (bound it with a timeout).
pub async fn paced<F, Fut>(rate: u32, timing: Timing, launch: F) -> PacedOutcome
where
    F: FnMut(ScheduledCall) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let state = Arc::new(OpenLoopState {
        in_flight: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    // Stops the schedule if this future is dropped (Ctrl-C) before it ends.
    let _stop_on_drop = StopOnDrop(state.clone());
    let runtime = tokio::runtime::Handle::current();
    let schedule_state = state.clone();
    let schedule = Schedule {
        start: Instant::now(),
        rate,
        timing,
    };
    let schedule = tokio::task::spawn_blocking(move || {
        keep_schedule(&schedule_state, &runtime, schedule, launch)
    });
    let mut outcome = PacedOutcome::default();
    match schedule.await {
        Ok(skipped) => outcome.skipped = skipped,
        Err(error) => outcome.schedule_failed = Some(error.to_string()),
    }
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while state.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    outcome.stuck = state.in_flight.load(Ordering::Acquire) as u64;
    outcome
}

struct OpenLoopState {
    in_flight: AtomicUsize,
    stop: AtomicBool,
}

struct StopOnDrop(Arc<OpenLoopState>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

/// Counts a launched call as in flight until its task ends, however it ends.
struct InFlight(Arc<OpenLoopState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: u32,
    timing: Timing,
}

impl Schedule {
    fn total_calls(&self) -> u64 {
        let total_nanos = (self.timing.warmup + self.timing.duration).as_nanos();
        u64::try_from(total_nanos * u128::from(self.rate) / 1_000_000_000).unwrap_or(u64::MAX)
    }

    /// When call number `index` is due.
    fn due(&self, index: u64) -> Instant {
        let offset_nanos = u128::from(index) * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(offset_nanos).unwrap_or(u64::MAX))
    }
}

/// Runs on its own thread: sleeps until each call is due and launches it as a task. Returns the
/// measured sends it skipped.
fn keep_schedule<F, Fut>(
    state: &Arc<OpenLoopState>,
    runtime: &tokio::runtime::Handle,
    schedule: Schedule,
    mut launch: F,
) -> u64
where
    F: FnMut(ScheduledCall) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let measure_from = schedule.start + schedule.timing.warmup;
    let mut skipped = 0_u64;
    for index in 0..schedule.total_calls() {
        if state.stop.load(Ordering::Acquire) {
            break;
        }
        let due = schedule.due(index);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let measured = due >= measure_from;
        if state.in_flight.load(Ordering::Acquire) >= OPEN_LOOP_MAX_IN_FLIGHT {
            skipped += u64::from(measured);
            continue;
        }
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(state.clone());
        let call = launch(ScheduledCall {
            index: usize::try_from(index).unwrap_or(usize::MAX),
            due,
            measured,
        });
        runtime.spawn(async move {
            call.await;
            drop(guard);
        });
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_calls_evenly_over_warmup_and_duration() {
        let start = Instant::now();
        let schedule = Schedule {
            start,
            rate: 4_000,
            timing: Timing {
                warmup: Duration::from_secs(1),
                duration: Duration::from_secs(2),
            },
        };
        assert_eq!(schedule.total_calls(), 12_000);
        assert_eq!(schedule.due(0), start);
        assert_eq!(schedule.due(1), start + Duration::from_micros(250));
        assert_eq!(schedule.due(4_000), start + Duration::from_secs(1));
    }

    #[test]
    fn unexpected_answers_count_in_latency_but_failures_do_not() {
        let mut tally = Tally::new();
        tally.record(Ok(()), Duration::from_micros(100));
        tally.record(
            Err(Problem::Unexpected("denied".to_owned())),
            Duration::from_micros(200),
        );
        tally.record(
            Err(Problem::Failed("unavailable".to_owned())),
            Duration::from_micros(300),
        );
        assert_eq!((tally.good, tally.unexpected, tally.failed), (1, 1, 1));
        assert_eq!(tally.latencies.len(), 2);
        assert_eq!(tally.first_problem.as_deref(), Some("denied"));
        assert!((tally.throughput(Duration::from_secs(2)) - 1.0).abs() < f64::EPSILON);
    }
}
