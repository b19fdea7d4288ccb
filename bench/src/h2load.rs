//! `tessera-bench h2load`: the cached Check against the gRPC health RPC on one server, driven by
//! h2load (Debian's nghttp2-client), whose client costs far less per call than a tonic client:
//! on two shared cores the generator's own cost would otherwise hide the server's. Interleaved
//! pairs (the order flips every round), saturated and at one stream, medians and their ratios —
//! the table of BENCHMARKS.md's "Check at the floor". With `--fail-below` it is CI's smoke
//! check: exit 1 when the saturated ratio falls below it (a gross regression, not the target).
//!
//! h2load sees only HTTP statuses, and a gRPC error is an HTTP 200 with a `grpc-status`
//! trailer: so every run's Checks are counted on the server's own metrics
//! (`tessera_checks_total{reason="allowed"}`), and a run whose count falls short fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use prost::Message;
use tessera::proto::CheckRequest;

use super::load::{self, Timing};
use super::probe::Probe;
use super::servers::{self, Cache, Databases, Server, ServerBinary};

/// Unmeasured calls before each generator run: the connection and the server's buffers warm.
const GENERATOR_WARMUP: Duration = Duration::from_secs(1);

const HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";
const CHECK_PATH: &str = "/tessera.v1.AuthorizationService/Check";

#[derive(Debug, clap::Args)]
pub struct H2loadFlags {
    /// Calls per saturated run (h2load -n).
    #[arg(long, default_value_t = 400_000)]
    saturated_requests: u64,

    /// Connections of a saturated run (h2load -c).
    #[arg(long, default_value_t = 4)]
    connections: u64,

    /// Concurrent streams per connection of a saturated run (h2load -m).
    #[arg(long, default_value_t = 32)]
    streams: u64,

    /// Calls per run at one connection and one stream (mean latency = 1 / rate).
    #[arg(long, default_value_t = 30_000)]
    single_requests: u64,

    /// Interleaved rounds; each runs both RPCs in both modes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,

    /// Exit 1 when the saturated Check/health throughput ratio (median) is below this.
    #[arg(long, value_name = "RATIO")]
    fail_below: Option<f64>,

    /// Measured time of each round's run of this tool's own generator (a tonic client, closed
    /// loop, one connection, one call at a time) on each RPC, for p50 and p99 at concurrency
    /// 1, which h2load does not report; 0s runs none.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    generator_duration: Duration,

    /// The h2load binary.
    #[arg(long, default_value = "h2load")]
    h2load: PathBuf,
}

/// What one h2load run printed that the table needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    requests_per_second: f64,
    mean_latency: Duration,
    /// CPU time per call: the server's (all its threads) and h2load's, from `/proc`.
    cpu: CpuPerCall,
}

/// CPU time per call of the server and of the client, in µs: on two shared cores the saturated
/// throughput is bounded by both, so these say whose cost a ratio is made of.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct CpuPerCall {
    server_micros: f64,
    client_micros: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Health,
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Saturated,
    Single,
}

pub async fn run(flags: H2loadFlags, server_binary: Option<PathBuf>) -> ExitCode {
    match measure(&flags, server_binary).await {
        Ok(table) => {
            println!("{}", table.to_markdown());
            match flags.fail_below {
                Some(floor) if table.saturated_ratio() < floor => {
                    eprintln!(
                        "!!! saturated Check/health ratio {:.2} is below {floor:.2}",
                        table.saturated_ratio()
                    );
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(flags: &H2loadFlags, server_binary: Option<PathBuf>) -> anyhow::Result<Table> {
    let binary = ServerBinary::resolve(server_binary)?;
    let mut databases = Databases::new(None)?;
    let database_url = databases.create("h2load").await?;
    let admin_key = servers::random_admin_key();
    let server = Server::start(
        &binary,
        "h2load",
        &database_url,
        &admin_key,
        Cache::On,
        None,
    )
    .await?;
    let outcome = async {
        let token = servers::seed(&server.url, &admin_key).await?;
        let bodies = tempfile::tempdir().context("cannot create a temporary directory")?;
        let health = bodies.path().join("health.bin");
        let check = bodies.path().join("check.bin");
        std::fs::write(&health, grpc_frame(&[]))?;
        std::fs::write(&check, grpc_frame(&check_request(&token).encode_to_vec()))?;
        let mut table = Table::default();
        for round in 0..flags.rounds {
            let mut order = [Rpc::Health, Rpc::Check];
            if round % 2 == 1 {
                order.reverse();
            }
            for load in [Load::Saturated, Load::Single] {
                for rpc in order {
                    let body = if rpc == Rpc::Check { &check } else { &health };
                    let allowed_before = allowed_checks(&server).await?;
                    let pid = server.pid().context("the server has exited")?.to_string();
                    let server_before = cpu_times(&pid)?;
                    let mut run = h2load(flags, &server.url, rpc, load, body).await?;
                    let server_after = cpu_times(&pid)?;
                    let sent = requests(flags, load);
                    run.cpu.server_micros =
                        (server_after.own - server_before.own).as_secs_f64() * 1e6 / sent as f64;
                    if rpc == Rpc::Check {
                        let allowed = allowed_checks(&server).await? - allowed_before;
                        if allowed != sent {
                            bail!("{sent} Checks sent, {allowed} answered allowed");
                        }
                    }
                    eprintln!(
                        "round {}: {rpc:?} {load:?}: {:.0} req/s, mean {:?}, CPU per call: \
                         server {:.2} µs, h2load {:.2} µs",
                        round + 1,
                        run.requests_per_second,
                        run.mean_latency,
                        run.cpu.server_micros,
                        run.cpu.client_micros,
                    );
                    table.push(rpc, load, run);
                }
            }
            if !flags.generator_duration.is_zero() {
                for rpc in order {
                    let probe = match rpc {
                        Rpc::Health => Probe::health(),
                        Rpc::Check => Probe::check_request(&check_request(&token)),
                    };
                    let latencies = generator(flags, &server.url, &probe).await?;
                    eprintln!(
                        "round {}: {rpc:?} generator c=1: p50 {:.0} µs, p99 {:.0} µs",
                        round + 1,
                        latencies.p50,
                        latencies.p99
                    );
                    table.generator.push((rpc, latencies));
                }
            }
        }
        Ok(table)
    }
    .await;
    server.stop().await;
    databases.remove().await;
    outcome
}

/// The median of `values` (NaN for none).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Latency quantiles of one generator run, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quantiles {
    p50: f64,
    p99: f64,
}

/// This tool's own closed loop at concurrency 1 on one connection; every answer must be the
/// expected one (a served health check, an allowed Check).
async fn generator(flags: &H2loadFlags, url: &str, probe: &Probe) -> anyhow::Result<Quantiles> {
    let channel = servers::connect(url).await?;
    let timing = Timing {
        warmup: GENERATOR_WARMUP,
        duration: flags.generator_duration,
    };
    let tally = load::closed_loop(probe, &[channel], 1, timing).await;
    if tally.unexpected + tally.failed > 0 {
        bail!(
            "{} unexpected answers and {} failed calls in the generator's run: {}",
            tally.unexpected,
            tally.failed,
            tally.first_problem.unwrap_or_default()
        );
    }
    Ok(Quantiles {
        p50: tally.latencies.value_at_quantile(0.5) as f64,
        p99: tally.latencies.value_at_quantile(0.99) as f64,
    })
}

/// The Check the issue measures: a cached allowed token with an endpoint, an IP and a user agent.
fn check_request(token: &str) -> CheckRequest {
    CheckRequest {
        token: token.to_owned(),
        permission: "orders:read".to_owned(),
        client_ip: "10.0.0.1".to_owned(),
        user_agent: "orders-service/1.4 (h2load)".to_owned(),
        endpoint: "GET /v1/orders".to_owned(),
        ..CheckRequest::default()
    }
}

/// A gRPC length-prefixed message: uncompressed flag, big-endian length, the message.
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).expect("a small message");
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

fn requests(flags: &H2loadFlags, load: Load) -> u64 {
    match load {
        Load::Saturated => flags.saturated_requests,
        Load::Single => flags.single_requests,
    }
}

async fn h2load(
    flags: &H2loadFlags,
    url: &str,
    rpc: Rpc,
    load: Load,
    body: &Path,
) -> anyhow::Result<Run> {
    let (connections, streams) = match load {
        Load::Saturated => (flags.connections, flags.streams),
        Load::Single => (1, 1),
    };
    let path = if rpc == Rpc::Check {
        CHECK_PATH
    } else {
        HEALTH_PATH
    };
    let requests = requests(flags, load);
    let before = cpu_times("self")?;
    let output = tokio::process::Command::new(&flags.h2load)
        .args(["-n", &requests.to_string()])
        .args(["-c", &connections.to_string()])
        .args(["-m", &streams.to_string()])
        .args(["-t", "1"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(body)
        .arg(format!("{url}{path}"))
        .output()
        .await
        .with_context(|| {
            format!(
                "cannot run {} (Debian: apt-get install nghttp2-client)",
                flags.h2load.display()
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("h2load failed ({}): {text}", output.status);
    }
    if let Some(traffic) = text.lines().find(|line| line.starts_with("traffic:")) {
        eprintln!("{rpc:?} {load:?} {traffic}");
    }
    let mut run = parse_h2load(&text, requests)
        .with_context(|| format!("unexpected h2load output:\n{text}"))?;
    // h2load is the only child this tool waits for while the server runs, so the growth of
    // this process's waited-for children's time is h2load's.
    let after = cpu_times("self")?;
    run.cpu.client_micros =
        (after.children - before.children).as_secs_f64() * 1e6 / requests as f64;
    Ok(run)
}

/// A process's CPU time (user + system, all threads) and that of its waited-for children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    own: Duration,
    children: Duration,
}

/// Of `process` (a pid, or `self`), from `/proc/<process>/stat` (Linux).
fn cpu_times(process: &str) -> anyhow::Result<CpuTimes> {
    let path = format!("/proc/{process}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat(&stat).with_context(|| format!("unexpected {path}: {stat}"))
}

/// `utime stime cutime cstime`: fields 14 to 17 of `proc_pid_stat(5)`, counted from the
/// closing parenthesis of the command name (which may itself hold spaces and parentheses).
fn parse_stat(stat: &str) -> anyhow::Result<CpuTimes> {
    // USER_HZ, which `/proc` counts in, is 100 on every Linux architecture this runs on.
    const TICK: Duration = Duration::from_millis(10);
    let (_, after_name) = stat.rsplit_once(')').context("no command name")?;
    // After the name: state (field 3), then fields 4 onwards.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> anyhow::Result<u32> {
        let text = fields.get(number - 3).context("too few fields")?;
        Ok(text.parse()?)
    };
    Ok(CpuTimes {
        own: TICK * (field(14)? + field(15)?),
        children: TICK * (field(16)? + field(17)?),
    })
}

/// Reads `finished in …, N req/s`, the succeeded count and the mean of `time for request`.
fn parse_h2load(text: &str, expected: u64) -> anyhow::Result<Run> {
    let requests_per_second = text
        .lines()
        .find_map(|line| line.strip_prefix("finished in "))
        .and_then(|rest| rest.split(", ").nth(1))
        .and_then(|rate| rate.strip_suffix(" req/s"))
        .context("no request rate")?
        .parse::<f64>()?;
    let succeeded = text
        .lines()
        .find_map(|line| line.strip_prefix("requests: "))
        .and_then(|rest| rest.split(", ").find(|part| part.ends_with(" succeeded")))
        .and_then(|part| part.strip_suffix(" succeeded"))
        .context("no succeeded count")?
        .parse::<u64>()?;
    if succeeded != expected {
        bail!("{succeeded} of {expected} requests succeeded");
    }
    let mean = text
        .lines()
        .find_map(|line| line.strip_prefix("time for request:"))
        .and_then(|rest| rest.split_whitespace().nth(2))
        .context("no mean request time")?;
    Ok(Run {
        requests_per_second,
        mean_latency: parse_h2load_duration(mean)?,
        cpu: CpuPerCall::default(),
    })
}

/// h2load's durations: `812us`, `1.20ms`, `2.01s`.
fn parse_h2load_duration(text: &str) -> anyhow::Result<Duration> {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 1e-6)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else {
        bail!("no unit in {text:?}");
    };
    Ok(Duration::from_secs_f64(number.parse::<f64>()? * scale))
}

/// `tessera_checks_total{reason="allowed"}`: how many Checks the server allowed so far.
async fn allowed_checks(server: &Server) -> anyhow::Result<u64> {
    server
        .counter("tessera_checks_total", r#"reason="allowed""#)
        .await
}

/// The runs of each pair, and their medians.
#[derive(Debug, Default)]
struct Table {
    runs: Vec<(Rpc, Load, Run)>,
    generator: Vec<(Rpc, Quantiles)>,
}

impl Table {
    fn push(&mut self, rpc: Rpc, load: Load, run: Run) {
        self.runs.push((rpc, load, run));
    }

    fn median(&self, rpc: Rpc, load: Load, figure: impl Fn(&Run) -> f64) -> f64 {
        let mut values: Vec<f64> = self
            .runs
            .iter()
            .filter(|(r, l, _)| *r == rpc && *l == load)
            .map(|(_, _, run)| figure(run))
            .collect();
        median(&mut values)
    }

    fn rate(&self, rpc: Rpc, load: Load) -> f64 {
        self.median(rpc, load, |run| run.requests_per_second)
    }

    fn mean_micros(&self, rpc: Rpc, load: Load) -> f64 {
        self.median(rpc, load, |run| run.mean_latency.as_secs_f64() * 1e6)
    }

    /// The median of a generator quantile.
    fn generator_median(&self, rpc: Rpc, quantile: impl Fn(&Quantiles) -> f64) -> f64 {
        let mut values: Vec<f64> = self
            .generator
            .iter()
            .filter(|(r, _)| *r == rpc)
            .map(|(_, quantiles)| quantile(quantiles))
            .collect();
        median(&mut values)
    }

    fn generator_rows(&self) -> String {
        if self.generator.is_empty() {
            return String::new();
        }
        let row = |name: &str, quantile: fn(&Quantiles) -> f64, target: &str| {
            let check = self.generator_median(Rpc::Check, quantile);
            let health = self.generator_median(Rpc::Health, quantile);
            format!(
                "\n| tessera-bench, 1 connection, c=1: {name} | {check:.0} µs | {health:.0} µs | {:.2}x | {target} |",
                check / health
            )
        };
        row("p50", |q| q.p50, "") + &row("p99", |q| q.p99, "≤ 1.25x")
    }

    fn server_cpu(&self, rpc: Rpc) -> f64 {
        self.median(rpc, Load::Saturated, |run| run.cpu.server_micros)
    }

    fn client_cpu(&self, rpc: Rpc) -> f64 {
        self.median(rpc, Load::Saturated, |run| run.cpu.client_micros)
    }

    fn saturated_ratio(&self) -> f64 {
        self.rate(Rpc::Check, Load::Saturated) / self.rate(Rpc::Health, Load::Saturated)
    }

    fn to_markdown(&self) -> String {
        let single_ratio = self.mean_micros(Rpc::Check, Load::Single)
            / self.mean_micros(Rpc::Health, Load::Single);
        format!(
            "| h2load, medians of {rounds} interleaved rounds | Check | health | ratio | target |\n\
             |---|---|---|---|---|\n\
             | saturated: throughput | {cs:.0}/s | {hs:.0}/s | {sat:.2}x | ≥ 0.90x |\n\
             | 1 connection, 1 stream: mean latency | {cl:.1} µs | {hl:.1} µs | {single_ratio:.2}x | ≤ 1.05x |\n\
             | saturated: server CPU per call | {csc:.2} µs | {hsc:.2} µs | {server_ratio:.2}x | |\n\
             | saturated: h2load CPU per call | {ccc:.2} µs | {hcc:.2} µs | {client_ratio:.2}x | |{generator}",
            generator = self.generator_rows(),
            rounds = self.runs.len() / 4,
            csc = self.server_cpu(Rpc::Check),
            hsc = self.server_cpu(Rpc::Health),
            server_ratio = self.server_cpu(Rpc::Check) / self.server_cpu(Rpc::Health),
            ccc = self.client_cpu(Rpc::Check),
            hcc = self.client_cpu(Rpc::Health),
            client_ratio = self.client_cpu(Rpc::Check) / self.client_cpu(Rpc::Health),
            cs = self.rate(Rpc::Check, Load::Saturated),
            hs = self.rate(Rpc::Health, Load::Saturated),
            sat = self.saturated_ratio(),
            cl = self.mean_micros(Rpc::Check, Load::Single),
            hl = self.mean_micros(Rpc::Health, Load::Single),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
starting benchmark...
finished in 2.81s, 142310.09 req/s, 5.43MB/s
requests: 400000 total, 400000 started, 400000 done, 400000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 400000 2xx, 0 3xx, 0 4xx, 0 5xx
                     min         max         mean         sd        +/- sd
time for request:      102us      4.12ms       812us       201us    70.12%
";

    #[test]
    fn the_rate_and_the_mean_latency_are_read_from_h2loads_report() {
        let run = parse_h2load(OUTPUT, 400_000).expect("parsed");
        assert_eq!(run.requests_per_second, 142_310.09);
        assert_eq!(run.mean_latency, Duration::from_micros(812));
    }

    #[test]
    fn a_run_with_failed_requests_is_not_a_figure() {
        let failed = OUTPUT.replace("400000 succeeded, 0 failed", "399990 succeeded, 10 failed");
        let error = parse_h2load(&failed, 400_000).expect_err("failed requests");
        assert!(format!("{error}").contains("399990 of 400000"), "{error}");
    }

    #[test]
    fn h2load_durations_carry_their_unit() {
        assert_eq!(
            parse_h2load_duration("812us").expect("µs"),
            Duration::from_micros(812)
        );
        assert_eq!(
            parse_h2load_duration("1.5ms").expect("ms"),
            Duration::from_micros(1500)
        );
        assert_eq!(
            parse_h2load_duration("2s").expect("s"),
            Duration::from_secs(2)
        );
        assert!(parse_h2load_duration("12").is_err());
    }

    #[test]
    fn cpu_times_are_read_after_the_command_name_even_when_it_holds_parentheses() {
        let stat = "4242 (tessera (x) y) S 1 4242 4242 0 -1 4194304 900 0 0 0 \
                    250 50 7 3 20 0 3 0 100 1000 200";
        let times = parse_stat(stat).expect("parsed");
        assert_eq!(times.own, Duration::from_secs(3));
        assert_eq!(times.children, Duration::from_millis(100));
        assert!(parse_stat("4242 (short) S 1 2").is_err());
    }

    #[test]
    fn check_bodies_are_framed_as_grpc_messages() {
        let frame = grpc_frame(&[1, 2, 3]);
        assert_eq!(frame, vec![0, 0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(grpc_frame(&[]), vec![0, 0, 0, 0, 0]);
    }
}
