//! `tessera-bench soak`: a long open loop at a fraction of the measured saturation, with a mix of
//! valid, unknown, malformed, revoked and rate-limited tokens and admin writes all along, judged
//! on its answers, the server's memory and the stability of its p99.
//!
//! - [`mix`]: the seeded tokens and the weighted mix of calls.
//! - [`churn`]: the admin writes and the Checks that verify each one.
//! - [`rss`]: the server's resident memory, sampled.
//! - [`verdict`]: pure classification, windows, verdict and markdown.

mod churn;
mod mix;
mod rss;
mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tonic::client::Grpc;
use tonic::transport::Channel;

use super::load::{self, OPEN_LOOP_CALL_TIMEOUT, ScheduledCall, Timing};
use super::probe::Probe;
use super::servers::{self, AdminClient, Cache, Databases, Server, ServerBinary};
use mix::{Plan, Population, Weights};
use verdict::{Bounds, Evidence, Kind, Outcome, Totals, Window};

/// Unmeasured time before the saturation measurement (its calls still count in the totals).
const SATURATION_WARMUP: Duration = Duration::from_secs(2);
/// Shortest windows a short run is cut into; a run gets at least four windows.
const MIN_WINDOWS: u32 = 4;

/// `tessera-bench soak` flags.
#[derive(Debug, clap::Args)]
pub struct SoakFlags {
    /// How long the open loop runs.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Open-loop rate as a fraction of the measured saturation: the highest rate an open loop
    /// sustained in steps of 10% of the closed loop's throughput.
    #[arg(long, default_value_t = 0.8)]
    load: f64,

    /// Open-loop rate in calls per second, instead of a fraction of a measured saturation
    /// (skips the measurement).
    #[arg(long)]
    rate: Option<u32>,

    /// How long the closed loop measuring saturation runs (after a 2 s warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    saturation: Duration,

    /// How long each open-loop step of the saturation search runs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    step: Duration,

    /// Closed-loop workers measuring saturation.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    saturation_concurrency: u64,

    /// Report windows; a run shorter than four windows is cut into four.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    window: Duration,

    /// Weights of the token kinds in the mix: valid, unknown, malformed, revoked, rate-limited.
    #[arg(
        long,
        default_value = "valid=60,unknown=10,malformed=10,revoked=10,rate-limited=10",
        value_parser = mix::parse_weights
    )]
    mix: Weights,

    /// Admin writes per second (create, update, rotate, revoke of churn tokens, and renames of
    /// the valid tokens under load), each followed by a Check of what it changed.
    #[arg(long, default_value_t = 5.0)]
    admin_rate: f64,

    /// How often the server's RSS is sampled.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    rss_interval: Duration,

    /// Most a window's p99 may be, as a multiple of the median window p99.
    #[arg(long, default_value_t = 3.0)]
    p99_factor: f64,

    /// Most the server's RSS may grow, in MiB, from the end of the first window to the end.
    #[arg(long, default_value_t = 16)]
    rss_growth_mib: u64,

    /// HTTP/2 connections the load shares round-robin.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,

    /// A Postgres server on which to create (and afterwards drop) the server's database
    /// [default: SQLite in a temporary directory].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// Runs the soak; exit 1 on a failed verdict or when it could not run.
pub async fn run(flags: SoakFlags, server_binary: Option<PathBuf>) -> ExitCode {
    match soak(&flags, server_binary).await {
        Ok(Report { text, passed }) => {
            println!("{text}");
            if !passed {
                eprintln!("\n!!! soak verdict: FAIL");
                ExitCode::FAILURE
            } else {
                eprintln!("\nsoak verdict: pass");
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The rendered report and the verdict it shows, decided from the findings, not from the text.
struct Report {
    text: String,
    passed: bool,
}

/// A soak passes when it judged something and every finding passed.
fn passed(findings: &[verdict::Finding]) -> bool {
    !findings.is_empty() && findings.iter().all(|finding| finding.passed)
}

async fn soak(flags: &SoakFlags, server_binary: Option<PathBuf>) -> anyhow::Result<Report> {
    if !(flags.load > 0.0 && flags.load <= 2.0) {
        bail!("--load is a fraction of saturation, above 0 and at most 2");
    }
    if !(flags.admin_rate > 0.0 && flags.admin_rate <= 1000.0) {
        bail!("--admin-rate must be above 0 and at most 1000 per second");
    }
    if flags.duration < Duration::from_secs(4) || flags.window.is_zero() {
        bail!("--duration must be at least 4s and --window above 0");
    }
    let binary = ServerBinary::resolve(server_binary)?;
    let mut databases = Databases::new(flags.database_url.as_deref())?;
    let mut server = None;
    let outcome = super::interruptible(drive(flags, &binary, &mut databases, &mut server)).await;
    if let Some(server) = server {
        server.stop().await;
    }
    databases.remove().await;
    outcome
}

/// Starts and seeds the server (in `slot`, so the caller stops it whatever happens), measures
/// saturation, runs the soak, and renders the report.
async fn drive(
    flags: &SoakFlags,
    binary: &ServerBinary,
    databases: &mut Databases,
    slot: &mut Option<Server>,
) -> anyhow::Result<Report> {
    let mut seeded = Seeded::start(flags, binary, databases, slot, "search").await?;
    let mut totals = first_calls(&seeded.plan, &seeded.channels[0]).await?;
    let mut search_unintended = 0;
    let saturation = match flags.rate {
        Some(_) => None,
        None => {
            let concurrency = usize::try_from(flags.saturation_concurrency).unwrap_or(1);
            let (closed, closed_totals) = saturate(
                &seeded.plan,
                &seeded.channels,
                concurrency,
                flags.saturation,
            )
            .await;
            eprintln!(
                "closed loop: {closed:.0} calls/s with {concurrency} workers ({} unintended)",
                closed_totals.unintended()
            );
            totals.merge(closed_totals);
            let search = search(&seeded.plan, &seeded.channels, closed, flags.step).await;
            // The search's last step overloads its server on purpose, and the allocator keeps
            // the pages that queue took, so RSS after it could hide a leak of about 100 MiB:
            // the soak runs on a fresh server (and database), seeded alike. What the search's
            // server answered still counts as unintended or not; its rate-limited tokens are
            // not the soak's, so their allowed calls are judged by the search (`Step`).
            search_unintended = totals.unintended();
            if let Some(searched) = slot.take() {
                searched.stop().await;
            }
            seeded = Seeded::start(flags, binary, databases, slot, "soak").await?;
            totals = first_calls(&seeded.plan, &seeded.channels[0]).await?;
            Some(Saturation {
                closed,
                concurrency,
                steps: search.steps,
            })
        }
    };
    let Seeded {
        pid,
        admin,
        population,
        plan,
        channels,
        limits_start,
    } = seeded;
    let rate = match (flags.rate, &saturation) {
        (Some(rate), _) => rate,
        (None, Some(saturation)) => {
            let Some(sustained) = saturation.sustained() else {
                bail!(
                    "no open-loop step was sustained, down to {} calls/s",
                    saturation.steps.first().map_or(0, |step| step.0)
                );
            };
            (f64::from(sustained) * flags.load).round() as u32
        }
        (None, None) => unreachable!("saturation is measured without --rate"),
    };
    if rate == 0 {
        bail!("the rate is 0 calls/s");
    }

    if saturation.is_some() {
        // The fresh server's caches, connections and SQLite pages are cold, and a cold server
        // at 80% of a warm one's saturation queues for its first minute (the 19:00 run in
        // BENCHMARKS.md): one step at the soak's rate first, not judged, like the search's.
        let warmup = open_loop(&plan, &channels, rate, flags.step, flags.step, 1).await;
        eprintln!(
            "warm-up on the soak's server at {rate} calls/s for {:?}: {} unintended (not judged)",
            flags.step,
            warmup.totals.unintended()
        );
    }
    let windows = window_count(flags.duration, flags.window);
    let window = flags.duration / windows;
    eprintln!(
        "open loop at {rate} calls/s for {:?} ({windows} windows of {window:?}), admin writes \
         at {}/s",
        flags.duration, flags.admin_rate
    );
    let start = Instant::now();
    let (samples, sampler) = rss::sample(pid, flags.rss_interval, start);
    let (stop_churn, stop) = oneshot::channel();
    let churn = tokio::spawn(churn::run(
        admin,
        channels[0].clone(),
        population.valid_ids.clone(),
        flags.admin_rate,
        stop,
    ));
    let record = open_loop(&plan, &channels, rate, flags.duration, window, windows).await;
    let _ = stop_churn.send(());
    let churn = churn.await.context("the admin writes task failed")?;
    let elapsed_since_first_limited_call = limits_start.elapsed();
    // One last sample after the run, so the last window has its end.
    tokio::time::sleep(flags.rss_interval).await;
    sampler.abort();

    let (server_errors, first_server_error) = slot.as_ref().map_or((0, None), Server::log_errors);
    let samples = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let windows = record.windows(window, &samples);
    totals.merge(record.totals);
    let evidence = Evidence {
        unintended_checks: totals.unintended() + search_unintended,
        unintended_admin: churn.unintended(),
        admin_writes: churn.writes,
        rate_limited_allowed: totals.kinds[Kind::RateLimited.index()].allowed,
        rate_limited_ceiling: verdict::rate_limit_ceiling(
            population.limited_tokens(),
            mix::LIMITED_PER_MINUTE,
            elapsed_since_first_limited_call,
        ),
        server_errors,
    };
    let bounds = Bounds {
        p99_factor: flags.p99_factor,
        rss_growth_kib: flags.rss_growth_mib * 1024,
    };
    let findings = verdict::judge(&windows, &evidence, &bounds);
    let passed = passed(&findings);
    let text = render(
        flags,
        &Run {
            rate,
            saturation,
            population,
            windows,
            totals,
            churn,
            findings,
            first_server_error,
        },
    );
    Ok(Report { text, passed })
}

/// A started, seeded server and what drives it.
struct Seeded {
    pid: u32,
    admin: AdminClient,
    population: Population,
    plan: Arc<Plan>,
    channels: Vec<Channel>,
    /// When its rate-limited tokens were first presented (the ceiling counts from here).
    limits_start: Instant,
}

impl Seeded {
    /// Starts a server on a fresh database (in `slot`, so the caller stops it whatever
    /// happens) and seeds it.
    async fn start(
        flags: &SoakFlags,
        binary: &ServerBinary,
        databases: &mut Databases,
        slot: &mut Option<Server>,
        label: &'static str,
    ) -> anyhow::Result<Self> {
        let admin_key = servers::random_admin_key();
        let database_url = databases.create(label).await?;
        let server = slot.insert(
            Server::start(binary, label, &database_url, &admin_key, Cache::On, None).await?,
        );
        let pid = server.pid().context("the server has no process id")?;
        let url = server.url.clone();
        eprintln!("{label} server at {url} (pid {pid})");
        let mut admin = servers::admin_client(&url, &admin_key).await?;
        let population = mix::seed(&mut admin).await?;
        let plan = Plan::new(&population, flags.mix)?;
        let connections = usize::try_from(flags.connections).unwrap_or(1);
        let channels = super::open_channels(&url, connections).await?;
        Ok(Self {
            pid,
            admin,
            population,
            plan,
            channels,
            limits_start: Instant::now(),
        })
    }
}

/// Everything a soak found, for its report.
struct Run {
    rate: u32,
    saturation: Option<Saturation>,
    population: Population,
    windows: Vec<Window>,
    totals: Totals,
    churn: churn::Churn,
    findings: Vec<verdict::Finding>,
    first_server_error: Option<String>,
}

fn window_count(duration: Duration, window: Duration) -> u32 {
    let whole = (duration.as_secs_f64() / window.as_secs_f64()).round() as u32;
    whole.max(MIN_WINDOWS)
}

/// One call of each kind before any load: a server answering a kind wrongly stops the soak at
/// once rather than after ten minutes. The answers count in the totals.
async fn first_calls(plan: &Plan, channel: &Channel) -> anyhow::Result<Totals> {
    let mut client = Grpc::new(channel.clone());
    let mut totals = Totals::default();
    for (kind, probe) in plan.one_of_each() {
        let outcome = ask(probe, &mut client).await;
        if !totals.record(*kind, &outcome) {
            bail!("the first {} token was answered {outcome:?}", kind.name());
        }
    }
    Ok(totals)
}

async fn ask(probe: &Probe, client: &mut Grpc<Channel>) -> Outcome {
    match tokio::time::timeout(OPEN_LOOP_CALL_TIMEOUT, probe.answer(client)).await {
        Ok(Ok(answer)) => {
            let (allowed, reason) = answer.decision();
            Outcome::Answered { allowed, reason }
        }
        Ok(Err(error)) => Outcome::Failed(error),
        Err(_) => Outcome::Failed(format!("no answer within {OPEN_LOOP_CALL_TIMEOUT:?}")),
    }
}

/// A closed loop over the mix: `concurrency` workers each sending their next call as soon as the
/// previous one answers. Returns answered calls per second after the warm-up, and every call's
/// classification.
async fn saturate(
    plan: &Arc<Plan>,
    channels: &[Channel],
    concurrency: usize,
    duration: Duration,
) -> (f64, Totals) {
    let measure_from = Instant::now() + SATURATION_WARMUP;
    let end = measure_from + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let mut client = Grpc::new(channels[worker % channels.len()].clone());
        let plan = plan.clone();
        workers.spawn(async move {
            let mut totals = Totals::default();
            let mut measured = 0_u64;
            let mut call = worker;
            while Instant::now() < end {
                let sent = Instant::now();
                let (kind, probe) = plan.get(call);
                let outcome = ask(probe, &mut client).await;
                measured +=
                    u64::from(sent >= measure_from && matches!(outcome, Outcome::Answered { .. }));
                totals.record(*kind, &outcome);
                call += concurrency;
            }
            (measured, totals)
        });
    }
    let mut answered = 0;
    let mut totals = Totals::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((measured, worker_totals)) => {
                answered += measured;
                totals.merge(worker_totals);
            }
            Err(error) => totals.record_problem(1, format!("saturation worker failed: {error}")),
        }
    }
    (answered as f64 / duration.as_secs_f64(), totals)
}

/// Open-loop steps of the saturation search, as fractions of the closed loop's throughput.
const STEPS: [f64; 7] = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
/// Pause after a step, so a queue it left behind drains before the next.
const STEP_SETTLE: Duration = Duration::from_secs(2);

/// What saturation was measured to be.
struct Saturation {
    /// Answered calls per second of the closed loop over the mix.
    closed: f64,
    concurrency: usize,
    /// Each open-loop step: its rate, whether it was sustained, its p50 and p99 (µs).
    steps: Vec<(u32, bool, u64, u64)>,
}

impl Saturation {
    /// The highest open-loop rate sustained: the saturation the soak's fraction applies to.
    fn sustained(&self) -> Option<u32> {
        self.steps
            .iter()
            .filter(|step| step.1)
            .map(|step| step.0)
            .max()
    }
}

struct Search {
    steps: Vec<(u32, bool, u64, u64)>,
}

/// The closed loop overstates what an open loop can sustain: the open loop's generator costs
/// more per call (a task per call, a schedule thread) and shares the two cores with the server.
/// So the open loop itself is run in short steps of rising rate, up to the first step it does
/// not sustain.
async fn search(plan: &Arc<Plan>, channels: &[Channel], closed: f64, step: Duration) -> Search {
    let mut search = Search { steps: Vec::new() };
    for fraction in STEPS {
        let rate = (closed * fraction).round().max(1.0) as u32;
        let record = open_loop(plan, channels, rate, step, step, 1).await;
        let figures = &record.windows(step, &[])[0];
        let held = verdict::sustained(figures);
        eprintln!(
            "open-loop step {rate} calls/s: {} (p50 {} µs, p99 {} µs, {} unintended)",
            if held { "sustained" } else { "not sustained" },
            figures.p50_us,
            figures.p99_us,
            figures.unintended
        );
        search
            .steps
            .push((rate, held, figures.p50_us, figures.p99_us));
        tokio::time::sleep(STEP_SETTLE).await;
        if !held {
            break;
        }
    }
    search
}

/// What the open loop recorded, per window and in total.
struct Record {
    start: Instant,
    window: Duration,
    latencies: Vec<Histogram<u64>>,
    answered: Vec<u64>,
    unintended: Vec<u64>,
    totals: Totals,
    /// Windows whose progress line is printed; printed when a later window's first call is
    /// recorded, so a long run shows it is alive.
    shown: usize,
    /// Print progress lines (not for the saturation search's one-window steps).
    progress: bool,
}

impl Record {
    fn new(window: Duration, windows: u32) -> Self {
        let count = usize::try_from(windows).unwrap_or(1);
        Self {
            start: Instant::now(),
            window,
            latencies: (0..count).map(|_| load::new_histogram()).collect(),
            answered: vec![0; count],
            unintended: vec![0; count],
            totals: Totals::default(),
            shown: 0,
            progress: count > 1,
        }
    }

    /// Counts a call in the window of its scheduled time.
    fn record(&mut self, kind: Kind, call: ScheduledCall, outcome: &Outcome) {
        let offset = call.due.saturating_duration_since(self.start);
        let index = ((offset.as_secs_f64() / self.window.as_secs_f64()) as usize)
            .min(self.answered.len() - 1);
        if self.progress && index > self.shown {
            let shown = self.shown;
            eprintln!(
                "window {}: {} answered, p99 {} µs, {} unintended (calls still in flight not yet \
                 counted)",
                shown + 1,
                self.answered[shown],
                self.latencies[shown].value_at_quantile(0.99),
                self.unintended[shown]
            );
            self.shown = index;
        }
        let intended = self.totals.record(kind, outcome);
        self.unintended[index] += u64::from(!intended);
        if matches!(outcome, Outcome::Answered { .. }) {
            self.answered[index] += 1;
            self.latencies[index].saturating_record(load::micros(call.due.elapsed()));
        }
    }

    fn windows(&self, window: Duration, samples: &[(Duration, u64)]) -> Vec<Window> {
        (0..self.answered.len())
            .map(|index| {
                let begin = window * u32::try_from(index).unwrap_or(u32::MAX);
                let end = begin + window;
                // The last window ends with the run: take the sample after its drain too.
                let sampled_until = if index + 1 == self.answered.len() {
                    end + window
                } else {
                    end
                };
                let latencies = &self.latencies[index];
                Window {
                    end_seconds: end.as_secs_f64(),
                    length_seconds: window.as_secs_f64(),
                    answered: self.answered[index],
                    unintended: self.unintended[index],
                    p50_us: latencies.value_at_quantile(0.50),
                    p99_us: latencies.value_at_quantile(0.99),
                    max_us: latencies.max(),
                    rss_kib: rss::at_end_of(samples, begin, sampled_until),
                }
            })
            .collect()
    }
}

/// Calls at `rate` per second over the mix for `duration`, each recorded in its window.
async fn open_loop(
    plan: &Arc<Plan>,
    channels: &[Channel],
    rate: u32,
    duration: Duration,
    window: Duration,
    windows: u32,
) -> Record {
    let record = Arc::new(Mutex::new(Record::new(window, windows)));
    let clients: Vec<Grpc<Channel>> = channels.iter().cloned().map(Grpc::new).collect();
    let plan = plan.clone();
    let recorder = record.clone();
    let timing = Timing {
        warmup: Duration::ZERO,
        duration,
    };
    let outcome = load::paced(rate, timing, move |call| {
        let mut client = clients[call.index % clients.len()].clone();
        let (kind, probe) = plan.get(call.index).clone();
        let record = recorder.clone();
        async move {
            let outcome = ask(&probe, &mut client).await;
            record
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(kind, call, &outcome);
        }
    })
    .await;
    let mut record = std::mem::replace(
        &mut *record.lock().unwrap_or_else(PoisonError::into_inner),
        Record::new(window, windows),
    );
    let last = record.unintended.len() - 1;
    for (count, description) in outcome.problems() {
        record.unintended[last] += count;
        record.totals.record_problem(count, description);
    }
    record
}

fn render(flags: &SoakFlags, run: &Run) -> String {
    let store = if flags.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let tokens: Vec<String> = Kind::ALL
        .iter()
        .map(|kind| {
            format!(
                "{} {}",
                run.population.secrets[kind.index()].len(),
                kind.name()
            )
        })
        .collect();
    let weights: Vec<String> = Kind::ALL
        .iter()
        .map(|kind| format!("{} {}%", kind.name(), weight_percent(flags.mix, *kind)))
        .collect();
    let mut text = format!(
        "Open loop at {} calls/s{} for {:?}, {store} store, cache on; mix: {}; tokens: {} \
         (rate-limited at {}/min); admin writes at {}/s: {} succeeded.\n\n",
        run.rate,
        flags.rate.map_or_else(
            || format!(
                " ({:.0}% of the highest sustained rate)",
                flags.load * 100.0
            ),
            |_| String::new()
        ),
        flags.duration,
        weights.join(", "),
        tokens.join(", "),
        mix::LIMITED_PER_MINUTE,
        flags.admin_rate,
        run.churn.writes,
    );
    if let Some(saturation) = &run.saturation {
        let steps: Vec<String> = saturation
            .steps
            .iter()
            .map(|&(rate, held, p50, p99)| {
                format!(
                    "{rate}/s {} (p50 {p50} µs, p99 {p99} µs)",
                    if held { "held" } else { "NOT held" }
                )
            })
            .collect();
        text.push_str(&format!(
            "Saturation, measured on a server of its own: the closed loop over the mix \
             answered {:.0} calls/s with {} workers; open-loop steps of {:?}: {}. The soak ran \
             on a fresh server, seeded alike.\n\n",
            saturation.closed,
            saturation.concurrency,
            flags.step,
            steps.join(", ")
        ));
    }
    text.push_str(&format!(
        "{} Checks answered by the soak's server (its first calls and the open loop).\n\n",
        run.totals.answered()
    ));
    text.push_str(&verdict::markdown(&run.windows, &run.totals, &run.findings));
    if let Some(line) = &run.first_server_error {
        text.push_str(&format!("\nThe server's first ERROR line: `{line}`\n"));
    }
    let mut examples = run.totals.examples.clone();
    examples.merge(run.churn.examples.clone());
    if examples.total() > 0 {
        text.push_str("\nUnintended, by description:\n");
        for (description, count) in &examples.counts {
            text.push_str(&format!("- {count} × {description}\n"));
        }
        if examples.other > 0 {
            text.push_str(&format!("- {} × other descriptions\n", examples.other));
        }
    }
    text
}

fn weight_percent(weights: Weights, kind: Kind) -> u32 {
    let total: u32 = weights.0.iter().sum();
    (weights.0[kind.index()] * 100 + total / 2) / total.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(passed: bool) -> verdict::Finding {
        verdict::Finding {
            name: "a finding",
            measured: String::new(),
            passed,
        }
    }

    #[test]
    fn a_soak_passes_only_when_every_finding_passed() {
        assert!(passed(&[finding(true), finding(true)]));
        assert!(!passed(&[finding(true), finding(false)]));
        assert!(!passed(&[finding(false)]));
    }

    #[test]
    fn a_soak_that_judged_nothing_does_not_pass() {
        assert!(!passed(&[]));
    }
}
