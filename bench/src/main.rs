//! `tessera-bench`: a load generator that drives real `tessera serve` processes over gRPC and
//! compares cached Check with the no-op floor (the gRPC health check) on the same server and
//! transport, and with a cache-off server, all in one run. It is not part of the server: it
//! starts the server binary it is given (`--server-binary`, by default the workspace's release
//! build, `target/release/tessera`), or drives a running server (`--server`).
//!
//! - [`servers`]: the child `tessera serve` processes, their fresh databases, the seed data.
//! - [`probe`]: one call, its request encoded once and its answer checked.
//! - [`load`]: the closed loop and the open loop.
//! - [`report`]: medians over interleaved rounds, ratios to the floor, table and JSON.
//! - [`flood`]: `tessera-bench flood`, distinct unknown tokens under load beside valid traffic.
//! - [`h2load`]: `tessera-bench h2load`, Check against health driven by h2load, the ratio table
//!   and CI's smoke check.
//! - [`soak`]: `tessera-bench soak`, a long run at a fraction of saturation with a mix of tokens
//!   and admin writes, judged on its answers, memory and p99.

mod flood;
mod h2load;
mod load;
mod probe;
mod report;
mod servers;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;
use tonic::client::Grpc;
use tonic::transport::Channel;

use load::Timing;
use probe::{Probe, Problem};
use report::{Measurement, Mode, Report, Scenario};
use servers::{Cache, Databases, Server, ServerBinary};

/// The client IP every measured Check carries.
const CHECK_CLIENT_IP: &str = "10.0.0.1";
/// Pause between runs, so one run's connections are closed before the next starts.
const SETTLE: Duration = Duration::from_millis(200);

#[derive(Debug, Parser)]
#[command(
    name = "tessera-bench",
    version,
    about = "Load-test Tessera servers over gRPC: cached Check against the no-op floor and a \
             cache-off server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// The `tessera` binary to start as the servers [default: target/release/tessera of the
    /// target directory this tessera-bench was built in; `cargo build --release` at the
    /// workspace root builds both].
    #[arg(long, global = true, value_name = "PATH")]
    server_binary: Option<PathBuf>,

    #[command(flatten)]
    flags: Flags,

    #[command(subcommand)]
    command: Option<BenchCommand>,
}

/// The comparison's flags.
#[derive(Debug, clap::Args)]
struct Flags {
    /// Scenarios, comma-separated: noop (grpc health check, the floor), check (cached Check),
    /// check-cache-off (Check on a server this tool starts with its cache turned off),
    /// check-shared-limits (Check on a server whose limits are shared on --redis-url).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "noop,check,check-cache-off"
    )]
    scenarios: Vec<Scenario>,

    /// Closed-loop concurrency levels, comma-separated; 0 runs no closed loop.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,

    /// Open-loop rates in calls per second, comma-separated; 0 runs no open loop. Above a
    /// server's capacity its queue grows for the whole run (the cache-off server on SQLite
    /// saturates at a few thousand per second on two cores).
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    rate: Vec<u32>,

    /// Measured time of each run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,

    /// Unmeasured time before each run's measurement.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,

    /// Run the whole set of scenarios and modes N times, interleaved (order reversed every
    /// other round), and report medians and median ratios.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    interleave: u32,

    /// HTTP/2 connections per run, shared round-robin by the workers; the closed loop never
    /// uses more connections than workers. The default small pool is how a sidecar proxy with
    /// a few workers calls; noop and check always use the same.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,

    /// A Postgres server on which to create (and afterwards drop) the servers' databases,
    /// e.g. postgres://postgres@127.0.0.1:5432/postgres [default: SQLite in a temporary
    /// directory].
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// The Redis of the check-shared-limits server (its keys get a prefix of their own).
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,

    /// Drive the running server at this gRPC URL (e.g. http://127.0.0.1:50051) instead of
    /// starting servers.
    #[arg(long, value_name = "URL", value_parser = servers::server_url)]
    server: Option<String>,

    /// With --server: the token to Check on that server (without it only noop runs).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,

    /// The permission every Check asks for (the seeded token holds orders:*; with --server, the
    /// token must hold it).
    #[arg(long, default_value = "orders:read")]
    permission: String,

    /// Print the settings and results as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

/// What `tessera-bench` runs instead of its comparison.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Run a server for a long time (default 10 minutes) at a fraction of its measured
    /// saturation, with valid, unknown, malformed, revoked and rate-limited tokens and admin
    /// writes; judge the answers, the server's RSS and the p99 per window; exit 1 on a failed
    /// verdict. Prints markdown for BENCHMARKS.md.
    Soak(soak::SoakFlags),
    /// Drive one server with h2load (nghttp2-client): cached Check against the health RPC,
    /// saturated and at one stream, in interleaved rounds; prints the ratio table. With
    /// --fail-below, exit 1 when the saturated ratio is below it (CI's smoke check).
    H2load(h2load::H2loadFlags),
    /// Present distinct unknown well-formed tokens (default 100,000, each twice) beside valid
    /// traffic: exit 1 when the flood costs the store more than one lookup per token or raises
    /// the valid Checks' p99 beyond --max-p99-ratio of their p99 alone.
    Flood(flood::FloodFlags),
}

#[tokio::main]
async fn main() -> ExitCode {
    run(Cli::parse()).await
}

/// Runs the bench; fails (exit 1) when any call failed or was answered unexpectedly.
async fn run(cli: Cli) -> ExitCode {
    let Cli {
        server_binary,
        flags,
        command,
    } = cli;
    match command {
        Some(BenchCommand::Soak(soak_flags)) => return soak::run(soak_flags, server_binary).await,
        Some(BenchCommand::H2load(h2load_flags)) => {
            return h2load::run(h2load_flags, server_binary).await;
        }
        Some(BenchCommand::Flood(flood_flags)) => {
            return flood::run(flood_flags, server_binary).await;
        }
        None => {}
    }
    let report = match bench(&flags, server_binary).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if flags.json {
        let output = JsonOutput {
            settings: Settings::of(&flags),
            report: &report,
        };
        match serde_json::to_string_pretty(&output) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("error: cannot encode the results: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{}", report.to_text());
    }
    let problems = report.problems();
    if problems > 0 {
        let first = report
            .runs
            .iter()
            .find_map(|run| run.first_problem.as_deref())
            .unwrap_or("?");
        eprintln!(
            "\n!!! {problems} calls failed or were answered unexpectedly: the rows marked !! are \
             not valid figures (first: {first})"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    settings: Settings,
    #[serde(flatten)]
    report: &'a Report,
}

#[derive(Serialize)]
struct Settings {
    /// `sqlite`, `postgres` or `external`.
    servers: &'static str,
    duration_ms: u128,
    warmup_ms: u128,
    interleave: u32,
    connections: u64,
    version: &'static str,
}

impl Settings {
    fn of(flags: &Flags) -> Self {
        let servers = match (&flags.server, &flags.database_url) {
            (Some(_), _) => "external",
            (None, Some(_)) => "postgres",
            (None, None) => "sqlite",
        };
        Self {
            servers,
            duration_ms: flags.duration.as_millis(),
            warmup_ms: flags.warmup.as_millis(),
            interleave: flags.interleave,
            connections: flags.connections,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// What a scenario calls, and where.
struct Target {
    scenario: Scenario,
    url: String,
    probe: Probe,
}

async fn bench(flags: &Flags, server_binary: Option<PathBuf>) -> anyhow::Result<Report> {
    let modes = modes(flags)?;
    if flags.scenarios.is_empty() {
        bail!("--scenarios selects nothing");
    }
    if let Some(url) = &flags.server {
        if flags.database_url.is_some() {
            bail!("--database-url is for the servers the bench starts; not with --server");
        }
        if server_binary.is_some() {
            bail!("--server-binary is for the servers the bench starts; not with --server");
        }
        let targets = external_targets(flags, url)?;
        let runs = interruptible(measure(flags, &modes, &targets)).await?;
        return Ok(Report::new(runs, &modes, &flags.scenarios));
    }
    if flags.token.is_some() {
        bail!("--token is for an existing server, named with --server");
    }

    let binary = ServerBinary::resolve(server_binary)?;
    let mut databases = Databases::new(flags.database_url.as_deref())?;
    let mut servers = Vec::new();
    let outcome = interruptible(async {
        let targets = start_servers(flags, &binary, &mut databases, &mut servers).await?;
        measure(flags, &modes, &targets).await
    })
    .await;
    for server in servers {
        server.stop().await;
    }
    databases.remove().await;
    Ok(Report::new(outcome?, &modes, &flags.scenarios))
}

/// Ctrl-C ends `work` (dropping it) so the caller can still clean up.
async fn interruptible<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    }
}

fn modes(flags: &Flags) -> anyhow::Result<Vec<Mode>> {
    let closed = flags
        .concurrency
        .iter()
        .filter(|&&concurrency| concurrency > 0)
        .map(|&concurrency| Mode::Closed { concurrency });
    let open = flags
        .rate
        .iter()
        .filter(|&&rate| rate > 0)
        .map(|&rate| Mode::Open { rate });
    let modes: Vec<Mode> = closed.chain(open).collect();
    if modes.is_empty() {
        bail!("nothing to run: --concurrency and --rate are both 0");
    }
    Ok(modes)
}

fn external_targets(flags: &Flags, url: &str) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for &scenario in &flags.scenarios {
        let probe = match (scenario, &flags.token) {
            (Scenario::Noop, _) => Probe::health(),
            (Scenario::Check, Some(token)) => {
                Probe::check(token, &flags.permission, CHECK_CLIENT_IP)
            }
            (Scenario::Check, None) => {
                eprintln!("note: check skipped: it needs --token");
                continue;
            }
            (Scenario::CheckCacheOff | Scenario::CheckSharedLimits, _) => {
                eprintln!(
                    "note: {} skipped: it needs a server the bench starts",
                    scenario.name()
                );
                continue;
            }
        };
        targets.push(Target {
            scenario,
            url: url.to_owned(),
            probe,
        });
    }
    if targets.is_empty() {
        bail!("no scenario can run against --server {url}");
    }
    Ok(targets)
}

/// Starts the servers the selected scenarios need (in `servers`, so the caller stops them even
/// when a later step fails), seeds each, and names what each scenario calls.
async fn start_servers(
    flags: &Flags,
    binary: &ServerBinary,
    databases: &mut Databases,
    servers: &mut Vec<Server>,
) -> anyhow::Result<Vec<Target>> {
    let admin_key = servers::random_admin_key();
    let mut targets = Vec::new();
    let needs_cache_on = flags
        .scenarios
        .iter()
        .any(|scenario| matches!(scenario, Scenario::Noop | Scenario::Check));
    let mut cache_on_token = None;
    if needs_cache_on {
        let database_url = databases.create("cache-on").await?;
        let server = Server::start(
            binary,
            "cache-on",
            &database_url,
            &admin_key,
            Cache::On,
            None,
        )
        .await?;
        cache_on_token = Some(servers::seed(&server.url, &admin_key).await?);
        eprintln!("cache-on server at {}", server.url);
        servers.push(server);
    }
    let mut cache_off_token = None;
    if flags.scenarios.contains(&Scenario::CheckCacheOff) {
        let database_url = databases.create("cache-off").await?;
        let server = Server::start(
            binary,
            "cache-off",
            &database_url,
            &admin_key,
            Cache::Off,
            None,
        )
        .await?;
        cache_off_token = Some(servers::seed(&server.url, &admin_key).await?);
        eprintln!("cache-off server at {}", server.url);
        servers.push(server);
    }
    let mut shared_token = None;
    if flags.scenarios.contains(&Scenario::CheckSharedLimits) {
        let database_url = databases.create("shared-limits").await?;
        let server = Server::start(
            binary,
            "shared-limits",
            &database_url,
            &admin_key,
            Cache::On,
            Some(&flags.redis_url),
        )
        .await?;
        shared_token = Some(servers::seed(&server.url, &admin_key).await?);
        eprintln!("shared-limits server at {}", server.url);
        servers.push(server);
    }
    for &scenario in &flags.scenarios {
        let (label, token) = match scenario {
            Scenario::Noop => ("cache-on", None),
            Scenario::Check => ("cache-on", cache_on_token.as_deref()),
            Scenario::CheckCacheOff => ("cache-off", cache_off_token.as_deref()),
            Scenario::CheckSharedLimits => ("shared-limits", shared_token.as_deref()),
        };
        let server = servers
            .iter()
            .find(|server| server.label == label)
            .context("the scenario's server was not started")?;
        let probe = match token {
            None => Probe::health(),
            Some(token) => Probe::check(token, &flags.permission, CHECK_CLIENT_IP),
        };
        targets.push(Target {
            scenario,
            url: server.url.clone(),
            probe,
        });
    }
    Ok(targets)
}

/// Every round runs every mode; within a mode the scenarios run back to back, in reverse order
/// every other round so neither side of a comparison always goes first.
async fn measure(
    flags: &Flags,
    modes: &[Mode],
    targets: &[Target],
) -> anyhow::Result<Vec<Measurement>> {
    for target in targets {
        first_call(target).await?;
    }
    let timing = Timing {
        warmup: flags.warmup,
        duration: flags.duration,
    };
    let rounds = usize::try_from(flags.interleave).unwrap_or(1);
    let per_run = timing.warmup + timing.duration + SETTLE;
    let total_runs = rounds * modes.len() * targets.len();
    eprintln!(
        "{total_runs} runs of {:?} + {:?} warm-up, about {:.0}s",
        timing.duration,
        timing.warmup,
        per_run.as_secs_f64() * total_runs as f64
    );
    let mut runs = Vec::with_capacity(total_runs);
    for round in 1..=rounds {
        for &mode in modes {
            let mut order: Vec<&Target> = targets.iter().collect();
            if round % 2 == 0 {
                order.reverse();
            }
            for target in order {
                let connections = connections_for(flags.connections, mode);
                let channels = open_channels(&target.url, connections).await?;
                let tally = match mode {
                    Mode::Closed { concurrency } => {
                        load::closed_loop(&target.probe, &channels, concurrency, timing).await
                    }
                    Mode::Open { rate } => {
                        load::open_loop(&target.probe, &channels, rate, timing).await
                    }
                };
                drop(channels);
                let measurement =
                    Measurement::new(round, target.scenario, mode, &tally, timing.duration);
                eprintln!("{}", measurement.progress_line());
                runs.push(measurement);
                tokio::time::sleep(SETTLE).await;
            }
        }
    }
    Ok(runs)
}

/// One call before any run: a token that is denied, or a server that is not serving, stops the
/// bench at once rather than after minutes of failed runs.
async fn first_call(target: &Target) -> anyhow::Result<()> {
    let mut client = Grpc::new(servers::connect(&target.url).await?);
    match target.probe.call(&mut client).await {
        Ok(()) => Ok(()),
        Err(Problem::Unexpected(answer) | Problem::Failed(answer)) => bail!(
            "{} against {}: first call answered {answer}",
            target.scenario.name(),
            target.url
        ),
    }
}

/// `--connections`, but never more connections than closed-loop workers.
fn connections_for(configured: u64, mode: Mode) -> usize {
    let configured = usize::try_from(configured).unwrap_or(usize::MAX);
    match mode {
        Mode::Closed { concurrency } => configured.min(concurrency),
        Mode::Open { .. } => configured,
    }
}

async fn open_channels(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(servers::connect(url).await?);
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// tessera-bench reads no `TESSERA_*` variable: its help must not make one look like a
    /// setting of its own.
    #[test]
    fn the_help_names_no_environment_variable_the_tool_ignores() {
        let mut command = Cli::command();
        let mut help = command.render_long_help().to_string();
        for subcommand in command.get_subcommands_mut() {
            help.push_str(&subcommand.render_long_help().to_string());
        }
        assert!(!help.contains("TESSERA_"), "{help}");
    }
}
